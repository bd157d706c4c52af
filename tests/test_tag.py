"""`bigcode tag`: token logits equal transformers' GPTBigCodeForTokenClassification in mixed-length batches,
spans are exact slices of the original text, B-/I-/word aggregation, redaction, label filters."""

import json
from pathlib import Path

import pytest
import torch
from task_models import SNIPPETS, feed_stdin, hf_model, model_dir

from bigcode_cli.cli import app as cli
from bigcode_cli.pipelines.batching import Batcher
from bigcode_cli.model.engine import load
from bigcode_cli.pipelines.tagging import Span, bio_labels, redact, spans_from_tokens, split_label, token_predictions, token_tags
from bigcode_cli.text.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = bio_labels(["KEY", "EMAIL"])


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> Path:
    return model_dir(tmp_path_factory.mktemp("tag") / "ckpt", "token-classification", LABELS, n_positions=96)


def test_encode_with_offsets_matches_encode(tagger):
    tokenizer = Tokenizer.from_dir(tagger)
    for text in SNIPPETS:
        ids, offsets = tokenizer.encode_with_offsets(text)
        assert ids == tokenizer.encode(text) and len(offsets) == len(ids)
        assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
        assert all(a <= b for a, b in offsets)


@pytest.mark.parametrize("engine", ["native", "transformers"])
def test_batched_token_logits_equal_transformers(tagger, engine):
    runner = load(tagger, "token-classification", engine=engine, attn="eager", device="cpu")
    tokenizer = Tokenizer.from_dir(tagger)
    results = Batcher(runner, tokenizer, batch_size=4, offsets=True).run(SNIPPETS)
    reference = hf_model(tagger, "token-classification")
    with torch.no_grad():
        for text, scored in zip(SNIPPETS, results):
            want = reference(torch.tensor([tokenizer.encode(text)])).logits[0]
            assert scored.logits.shape == want.shape
            assert (scored.logits - want).abs().max().item() <= 1e-4
            assert [p[0] for p in token_predictions(scored.logits, LABELS)] == [LABELS[i] for i in want.argmax(-1)]


def run_cli(monkeypatch, capsys, args, stdin: bytes = b""):
    feed_stdin(monkeypatch, stdin)
    code = cli.run(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("aggregate", ["none", "word"])
def test_every_span_is_a_slice_of_the_original(tagger, monkeypatch, capsys, aggregate):
    texts = SNIPPETS + ["mail  me@example.com\tor key=sk-ABCdef123 — naïve 日本語 😀 end", " leading and trailing  "]
    data = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)).encode()
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--aggregate", aggregate, "-b", "3"], data)
    assert (code, err) == (0, "")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == list(range(len(texts)))
    total = 0
    for record, text in zip(records, texts):
        assert list(record) == ["id", "spans"]
        for span in record["spans"]:
            assert list(span) == ["label", "start", "end", "text", "score"]
            assert span["text"] == text[span["start"]:span["end"]] and span["text"].strip() == span["text"]
            # none: the model's own label per token; word: the merged entity's type
            assert span["label"] in (LABELS[1:] if aggregate == "none" else ["KEY", "EMAIL"])
            assert 0 < span["score"] <= 1
            total += 1
        starts = [s["start"] for s in record["spans"]]
        assert starts == sorted(starts)
        assert all(a["end"] <= b["start"] for a, b in zip(record["spans"], record["spans"][1:]))
    assert total > 0  # a random tagger tags plenty


def test_word_aggregation_merges_pieces_and_whole_words():
    text = 'key = "sk-abc123" mail bob@x.io'
    pieces = ["key", " =", ' "', "sk", "-", "abc", "123", '"', " mail", " b", "ob", "@", "x", ".", "io"]
    offsets, at = [], 0
    for piece in pieces:
        offsets.append((at, at + len(piece)))
        at += len(piece)
    assert at == len(text)
    labels = ["O", "O", "O", "B-KEY", "I-KEY", "I-KEY", "B-KEY", "O", "O", "O", "B-EMAIL", "I-EMAIL", "I-EMAIL",
              "I-EMAIL", "I-EMAIL"]
    predictions = [(label, 0.9) for label in labels]
    word = spans_from_tokens(text, offsets, predictions, "word")
    # "123" is labelled B-KEY but continues the word "abc123": one KEY; "ob" grows to the whole word "bob"
    assert [(s.label, s.text) for s in word] == [("KEY", "sk-abc123"), ("EMAIL", "bob@x.io")]
    none = spans_from_tokens(text, offsets, predictions, "none")
    assert [s.text for s in none] == ["sk", "-", "abc", "123", "ob", "@", "x", ".", "io"]
    assert [s.label for s in none] == [label for label in labels if label != "O"]  # the model's own labels
    assert all(s.text == text[s.start:s.end] for s in word + none)


BUNDLED_TAGGER = Path(__file__).resolve().parent.parent / "bigcode_cli" / "bundled" / "bigcode-tiny-secrets"
SECRETS = ['smtp_login("alice@example.com", password="hunter2-Xq9", host="192.168.1.20")',
           'api_key = "sk-live-4f9aB72cQ1"  # ask bob@corp.io, server 10.0.0.7']


def test_aggregate_none_gives_what_transformers_pipeline_gives(monkeypatch, capsys):
    from transformers import AutoTokenizer, GPTBigCodeForTokenClassification, pipeline

    data = "".join(line + "\n" for line in SECRETS).encode()
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(BUNDLED_TAGGER), "--aggregate", "none",
                                                   "--dtype", "float32", "--attn", "eager"], data)
    assert (code, err) == (0, "")
    model = GPTBigCodeForTokenClassification.from_pretrained(str(BUNDLED_TAGGER), dtype=torch.float32,
                                                             attn_implementation="eager")
    reference = pipeline("token-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(str(BUNDLED_TAGGER)),
                         aggregation_strategy="none", device="cpu")
    seen = set()
    for line, text in zip(out.splitlines(), SECRETS):
        want = []
        for entity in reference(text):
            start, end = entity["start"], entity["end"]
            while start < end and text[start].isspace():  # our spans leave out a token's leading space
                start += 1
            if start < end:
                want.append((entity["entity"], start, end, float(entity["score"])))
        got = [(s["label"], s["start"], s["end"], s["score"]) for s in json.loads(line)["spans"]]
        assert [g[:3] for g in got] == [w[:3] for w in want]
        assert [g[3] for g in got] == pytest.approx([w[3] for w in want], abs=1e-4)
        seen.update(g[0] for g in got)
    assert {"B-EMAIL", "I-EMAIL", "B-IP_ADDRESS", "I-IP_ADDRESS"} <= seen  # the check above compared real labels


def test_leading_space_is_not_part_of_a_span():
    text = "pw hunter2"
    spans = spans_from_tokens(text, [(0, 2), (2, 9), (9, 10)], [("O", 1.0), ("B-PASSWORD", 0.8), ("I-PASSWORD", 0.6)])
    assert spans == [Span("PASSWORD", 3, 10, "hunter2", pytest.approx(0.7))]


def test_labels_split_and_bio():
    assert split_label("B-KEY") == ("B", "KEY") and split_label("I-KEY") == ("I", "KEY")
    assert split_label("KEY") == ("I", "KEY") and split_label("O") == ("", "O")
    assert LABELS == ["O", "B-KEY", "I-KEY", "B-EMAIL", "I-EMAIL"]


def test_training_tags_round_trip_to_the_gold_spans(tagger):
    tokenizer = Tokenizer.from_dir(tagger)
    text = 'user = "bob"\nemail = "me@example.com"  # key: sk-ABC123def\n'
    gold = [{"start": text.index("me@"), "end": text.index("me@") + 14, "label": "EMAIL"},
            {"start": text.index("sk-"), "end": text.index("sk-") + 12, "label": "KEY"}]
    ids, offsets = tokenizer.encode_with_offsets(text)
    tags = token_tags(offsets, gold, text)
    assert tags.count("B-EMAIL") == 1 and tags.count("B-KEY") == 1
    spans = spans_from_tokens(text, offsets, [(t, 1.0) for t in tags], "word")
    assert [(s.label, s.start, s.end) for s in spans] == [(g["label"], g["start"], g["end"]) for g in gold]


def test_redact_labels_filter_and_formats(tagger, monkeypatch, capsys):
    lines = b'x = "hunter2"\nprint(fibonacci(10))\n'
    code, out, _ = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger)], lines)
    records = [json.loads(line) for line in out.splitlines()]
    originals = lines.decode().splitlines()
    expected = "".join(redact(t, [Span(**s) for s in r["spans"]]) + "\n" for r, t in zip(records, originals))
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--redact"], lines)
    assert (code, out, err) == (0, expected, "")
    assert "<" in out
    # JSON Lines input comes back as JSON Lines, other fields kept
    code, out, _ = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--redact"],
                           b'{"id": 7, "text": "x = \\"hunter2\\"", "repo": "r"}\n')
    assert json.loads(out) == {"id": 7, "repo": "r", "text": expected.splitlines()[0]}
    # --labels keeps only the named types
    for wanted in ("KEY", "EMAIL"):
        code, out, _ = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--labels", wanted], lines)
        kept = [json.loads(line) for line in out.splitlines()]
        assert [[s for s in r["spans"] if s["label"] == wanted] for r in records] == [r["spans"] for r in kept]
    code, out, _ = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--labels", "email,key"], lines)
    assert [r["spans"] for r in map(json.loads, out.splitlines())] == [r["spans"] for r in records]  # any case
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--labels", "PHONE"], lines)
    assert code == 2 and out == ""  # a bad option value
    assert "--labels PHONE: model" in err and "tags only KEY, EMAIL" in " ".join(err.split())
    # TSV: one line per span
    code, out, _ = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--format", "tsv"], lines)
    first = records[0]["spans"][0]
    assert out.splitlines()[0] == f"1\t{first['label']}\t{first['start']}\t{first['end']}\t{first['text']}\t{first['score']:.4f}"


def test_redact_on_stdin_prints_every_line_back_with_its_own_ending(tagger, monkeypatch, capsys):
    # blank lines stay in their place (they were error records: dropped from the output, exit 1), CRLF stays
    # CRLF and a last line without an ending gets none: only the spans change
    lines = [b'x = "hunter2"\r\n', b"\r\n", b"  \n", b"print(fibonacci(10))\n", b"\n", b'key = "abc123"']
    data = b"".join(lines)
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger)], data)
    assert code == 0, err
    spans = {r["id"]: [Span(**s) for s in r["spans"]] for r in map(json.loads, out.splitlines())}
    assert sorted(spans) == [1, 4, 6]  # the blank lines are no records
    expected = "".join(redact(line.decode().rstrip("\r\n"), spans.get(number, [])) + line.decode()[len(line.decode().rstrip("\r\n")):]
                       for number, line in enumerate(lines, 1))
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--redact"], data)
    assert (code, err) == (0, "")
    assert out == expected and out.count("\r\n") == 2 and not out.endswith("\n")


def test_the_table_without_colour_marks_each_span(tagger, monkeypatch, capsys):
    # highlighting is the table's only way to show a span: without colour (NO_COLOR, a pipe) they were invisible
    lines = b'x = "hunter2"\nprint(fibonacci(10))\n'
    code, out, _ = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger)], lines)
    spans = [s for r in map(json.loads, out.splitlines()) for s in r["spans"]]
    assert spans
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # stdout as a terminal: colour unless NO_COLOR
    monkeypatch.setenv("TERM", "xterm-256color")
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--format", "table"], lines)
    assert code == 0, err
    assert "\x1b[" in out and not any(f"[{s['label']}: " in out for s in spans)  # highlighted
    monkeypatch.setenv("NO_COLOR", "1")
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--format", "table"], lines)
    assert code == 0, err
    assert all(f"[{s['label']}: {s['text']}]" in out for s in spans), out
    assert "\x1b[" not in out
    kind = spans[0]["label"].split("-")[-1]
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--format", "table", "--labels",
                                                   kind.lower()], lines)
    assert code == 0 and f" {kind} " in out.splitlines()[0], out  # the legend names the label, whatever its case


def test_truncated_tagging_keeps_offsets_into_the_original(tagger, monkeypatch, capsys):
    text = " ".join(f"v{i}" for i in range(150))
    for side in ("left", "right"):
        code, out, _ = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--truncate", side, "--aggregate", "none"],
                               text.encode() + b"\n")
        record = json.loads(out)
        assert record["truncated"]["side"] == side and record["truncated"]["kept"] == 96
        assert all(s["text"] == text[s["start"]:s["end"]] for s in record["spans"])
        ends = [s["end"] for s in record["spans"]]
        assert (min(s["start"] for s in record["spans"]) > 40) if side == "left" else (max(ends) < len(text) - 40)


def test_bad_record_and_error_exit(tagger, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, ["tag", "-m", str(tagger), "--format", "tsv", "--input-format", "lines"],
                             b"a = 1\n\xc3\x28 bad utf-8\nb = 2\n")
    assert code == 1
    assert {line.split("\t")[0] for line in out.splitlines()} <= {"1", "3"}
    assert err.splitlines()[0] == "error: <stdin> line 2: binary data (not UTF-8 text)"


def test_word_aggregation_grows_an_email_span_to_the_whole_address():
    from bigcode_cli.pipelines.tagging import spans_from_tokens

    text = 'send("alice.b@example.com.", x)'
    start = text.index(".com")
    spans = spans_from_tokens(text, [(0, start), (start, start + 4)], [("O", 0.9), ("B-EMAIL", 0.8)])
    assert [(s.label, s.text) for s in spans] == [("EMAIL", "alice.b@example.com")]
    assert text[spans[0].start:spans[0].end] == spans[0].text
