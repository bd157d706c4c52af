"""`bigcode classify`: scores equal transformers' GPTBigCodeForSequenceClassification in mixed-length
batches, problem types, input formats, error records, order over 10,000 lines, closed pipes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from task_models import SNIPPETS, feed_stdin, hf_model, model_dir

from bigcode_cli.cli import app as cli
from bigcode_cli.pipelines.batching import Batcher
from bigcode_cli.pipelines.classification import MULTI, REGRESSION, SINGLE, predict
from bigcode_cli.model.engine import load
from bigcode_cli.pipelines.records import detect_format, read_stream
from bigcode_cli.text.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["python", "c", "javascript"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return model_dir(tmp_path_factory.mktemp("cls") / "ckpt", "sequence-classification", LABELS, n_positions=32)


@pytest.fixture(scope="module")
def mha_classifier(tmp_path_factory) -> Path:
    return model_dir(tmp_path_factory.mktemp("cls_mha") / "ckpt", "sequence-classification", LABELS,
                     multi_query=False, seed=3)


def reference_logits(directory: Path, texts: list[str], truncate: str = "right") -> torch.Tensor:
    """transformers' logits, one unpadded snippet at a time."""
    model = hf_model(directory, "sequence-classification")
    tokenizer = Tokenizer.from_dir(directory)
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer.encode(text)
            limit = model.config.n_positions
            ids = ids[-limit:] if truncate == "left" else ids[:limit]
            rows.append(model(torch.tensor([ids])).logits[0])
    return torch.stack(rows)


@pytest.mark.parametrize("fixture", ["classifier", "mha_classifier"])
@pytest.mark.parametrize("engine", ["native", "transformers"])
def test_batched_scores_equal_transformers(request, fixture, engine):
    directory = request.getfixturevalue(fixture)
    runner = load(directory, "sequence-classification", engine=engine, attn="eager", device="cpu")
    batcher = Batcher(runner, Tokenizer.from_dir(directory), batch_size=4)
    got = torch.stack([s.logits for s in batcher.run(SNIPPETS)])
    want = reference_logits(directory, SNIPPETS)
    assert (got - want).abs().max().item() <= 1e-4


def test_sdpa_backend_and_batch_size_one_agree(classifier):
    tokenizer = Tokenizer.from_dir(classifier)
    runner = load(classifier, "sequence-classification", attn="sdpa", device="cpu")
    one = torch.stack([s.logits for s in Batcher(runner, tokenizer, batch_size=1).run(SNIPPETS)])
    many = torch.stack([s.logits for s in Batcher(runner, tokenizer, batch_size=32).run(SNIPPETS)])
    assert (one - many).abs().max().item() <= 1e-4
    assert (many - reference_logits(classifier, SNIPPETS)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_is_reported_and_matches_transformers(classifier, side):
    long = " ".join(f"x{i}" for i in range(60))  # far more than 32 tokens
    runner = load(classifier, "sequence-classification", device="cpu")
    batcher = Batcher(runner, Tokenizer.from_dir(classifier), batch_size=8, truncate=side)
    results = batcher.run([long, "x = 1"])
    assert results[0].encoded.truncation() == {"side": side, "tokens": len(Tokenizer.from_dir(classifier).encode(long)),
                                               "kept": 32}
    assert results[1].encoded.truncation() is None
    want = reference_logits(classifier, [long], truncate=side)[0]
    assert (results[0].logits - want).abs().max().item() <= 1e-4


def test_problem_types():
    logits = torch.tensor([2.0, -1.0, 0.5])
    single = predict(logits, LABELS, SINGLE)
    probs = logits.softmax(-1)
    assert single.label == "python" and single.score == pytest.approx(probs[0].item())
    assert list(single.scores) == ["python", "javascript", "c"]
    assert predict(logits, LABELS, SINGLE, top_k=1).scores == {"python": pytest.approx(probs[0].item())}
    multi = predict(logits, LABELS, MULTI, threshold=0.6)
    assert multi.labels == ["python", "javascript"] and multi.label == "python"
    assert multi.scores["c"] == pytest.approx(torch.sigmoid(torch.tensor(-1.0)).item())
    assert predict(logits, LABELS, MULTI, threshold=0.99).labels == []
    value = predict(torch.tensor([3.25]), ["quality"], REGRESSION)
    assert value.label is None and value.score == 3.25 and value.scores == {"quality": 3.25}


def run_cli(monkeypatch, capsys, args, stdin: bytes = b""):
    feed_stdin(monkeypatch, stdin)
    code = cli.run(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_jsonl_output_matches_transformers(classifier, monkeypatch, capsys):
    data = "\n".join(SNIPPETS[:2] + [SNIPPETS[3]]).encode() + b"\n"
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier), "--batch-size", "2"], data)
    assert code == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    want = reference_logits(classifier, SNIPPETS[:2] + [SNIPPETS[3]]).softmax(-1)
    assert [r["id"] for r in records] == [1, 2, 3]
    for record, probs in zip(records, want):
        assert list(record) == ["id", "label", "score", "scores"]
        assert record["label"] == LABELS[int(probs.argmax())]
        assert record["score"] == pytest.approx(probs.max().item(), abs=1e-5)
        assert list(record["scores"].values()) == sorted(record["scores"].values(), reverse=True)
        for label, p in zip(LABELS, probs.tolist()):
            assert record["scores"][label] == pytest.approx(p, abs=1e-5)


def test_cli_tsv_exact_and_top_k(classifier, monkeypatch, capsys):
    runner = load(classifier, "sequence-classification", device="cpu")
    [scored] = Batcher(runner, Tokenizer.from_dir(classifier)).run(["x = 1"])
    best = predict(scored.logits, LABELS, SINGLE)
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier), "--format", "tsv"], b"x = 1\n")
    assert (code, out, err) == (0, f"1\t{best.label}\t{best.score:.4f}\n", "")
    code, out, _ = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier), "-k", "1"],
                           b'{"id": "a", "text": "x = 1"}\n')
    assert json.loads(out) == {"id": "a", "label": best.label, "score": round(best.score, 6),
                               "scores": {best.label: round(best.score, 6)}}


def test_cli_jsonl_input_passthrough_and_bad_records(classifier, monkeypatch, capsys):
    data = (b'{"id": "a", "text": "x = 1", "repo": "r1"}\n'
            b'{"id": "b", "text": \n'
            b'{"id": "c"}\n'
            b'\n'
            b'{"text": "pass", "gold": "python"}\n')
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier)], data)
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == ["a", 5]
    assert records[0]["repo"] == "r1" and records[1]["gold"] == "python"
    errors = err.splitlines()
    assert json.loads(errors[0]) == {"id": 2, "source": "<stdin>", "line": 2,
                                     "error": "bad JSON (Expecting value at column 20)"}
    assert json.loads(errors[1]) == {"id": "c", "source": "<stdin>", "line": 3, "error": 'the record has no "text" field'}
    assert errors[2] == "error: 2 of 4 records could not be processed (see the error records above)"


def test_a_record_with_a_lone_surrogate_is_an_error_record(classifier, monkeypatch, capsys):
    data = (b'{"id": "a", "text": "x = \\ud800"}\n'
            b'{"id": "b\\udc00", "text": "x = 1"}\n'
            b'{"id": "c", "text": "y = \\\\ud800 \\u00e9"}\n')  # an escaped backslash, then a real character
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier)], data)
    assert code == 1 and "internal error" not in err
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["c"]
    errors = err.splitlines()
    assert [json.loads(line)["line"] for line in errors[:2]] == [1, 2]
    assert all("not valid Unicode" in json.loads(line)["error"] for line in errors[:2])
    assert errors[2] == "error: 2 of 3 records could not be processed (see the error records above)"


def test_cli_nul_input_and_files(classifier, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier), "-0", "--format", "tsv"],
                             b"x = 1\nprint(x)\0def f():\n    pass\0")
    assert code == 0 and [line.split("\t")[0] for line in out.splitlines()] == ["1", "2"]
    one = tmp_path / "one.py"
    one.write_text("x = 1\nprint(x)\n")
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier), "--format", "tsv", "--",
                                                   str(one), str(tmp_path / "missing.py")])
    assert code == 1 and out.split("\t")[0] == str(one)
    assert err.splitlines()[0] == f"error: {tmp_path / 'missing.py'}: no such file"


def test_format_detection():
    assert detect_format(b'\n  {"text": "x"}\n') == "jsonl"
    assert detect_format(b"x = 1\n{y}\n") == "lines"
    assert detect_format(b"{ return x; }\n") == "lines" and detect_format(b"{}\n") == "jsonl"
    assert detect_format(b"a\0b\0") == "nul"
    import io

    records = list(read_stream(io.BufferedReader(io.BytesIO(b"a\n\xff\xfe\n\n \r\nb")), "lines"))
    assert [(r.index, r.line, r.text, r.error) for r in records] == [  # blank lines are no records
        (0, 1, "a", None), (1, 2, None, "binary data (not UTF-8 text)"), (2, 5, "b", None)]
    kept = list(read_stream(io.BufferedReader(io.BytesIO(b"a\r\n\n \r\nb")), "lines", keep_blank=True))
    assert [(r.line, r.text, r.blank, r.ending) for r in kept] == [
        (1, "a", False, "\r\n"), (2, "", True, "\n"), (3, " ", True, "\r\n"), (4, "b", False, "")]
    last = list(read_stream(io.BufferedReader(io.BytesIO(b"a\nb\r")), "lines"))
    assert [(r.text, r.ending) for r in last] == [("a", "\n"), ("b", "\r")]  # a \r at the very end is no text


def test_blank_lines_on_stdin_are_no_records(classifier, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier), "--format", "tsv"],
                             b"x = 1\n\nprint(x)\n   \n\n")
    assert (code, err) == (0, "")
    assert [line.split("\t", 1)[0] for line in out.splitlines()] == ["1", "3"]  # ids: their line numbers


def test_ten_thousand_lines_in_order_with_a_bad_line(classifier, monkeypatch, capsys):
    lines = [f"x{i} = {i % 97}".encode() for i in range(10_000)]
    lines[4_999] = b"\xff\xfe binary \x80"
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier), "--format", "tsv",
                                                   "--batch-size", "64"], b"\n".join(lines) + b"\n")
    assert code == 1
    ids = [int(line.split("\t", 1)[0]) for line in out.splitlines()]
    assert ids == [i for i in range(1, 10_001) if i != 5_000]
    assert err.splitlines() == ["error: <stdin> line 5000: binary data (not UTF-8 text)",
                                "error: 1 of 10000 records could not be processed (see the error records above)"]


def test_ten_thousand_jsonl_records(classifier, monkeypatch, capsys):
    data = "".join(json.dumps({"id": f"s{i}", "text": f"y = {i}"}) + "\n" for i in range(10_000)).encode()
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(classifier), "-b", "64"], data)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 10_000
    assert [json.loads(lines[i])["id"] for i in (0, 4_321, 9_999)] == ["s0", "s4321", "s9999"]


def test_a_language_model_checkpoint_is_refused(tmp_path, monkeypatch, capsys):
    lm = model_dir(tmp_path / "lm", "causal-lm", ["LABEL_0", "LABEL_1"])
    code, out, err = run_cli(monkeypatch, capsys, ["classify", "-m", str(lm)], b"x = 1\n")
    assert code == 1 and out == ""
    assert "has no sequence-classification (score) head; make one with `bigcode finetune classify`" in " ".join(err.split())


def test_multi_label_checkpoint(tmp_path, monkeypatch, capsys):
    directory = model_dir(tmp_path / "multi", "sequence-classification", LABELS,
                          problem_type="multi_label_classification")
    code, out, _ = run_cli(monkeypatch, capsys, ["classify", "-m", str(directory), "--threshold", "0.0"], b"x = 1\n")
    record = json.loads(out)
    assert code == 0 and sorted(record["labels"]) == sorted(LABELS) and record["label"] == next(iter(record["scores"]))


def test_closed_pipe_ends_quietly(classifier, tmp_path):
    data = b"".join(f"z = {i}\n".encode() for i in range(5_000))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent), OMP_NUM_THREADS="1")
    producer = subprocess.Popen([sys.executable, "-m", "bigcode_cli", "classify", "-m", str(classifier)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    head = subprocess.Popen(["head", "-1"], stdin=producer.stdout, stdout=subprocess.PIPE)
    producer.stdout.close()
    producer.stdin.write(data)
    producer.stdin.close()
    first = head.communicate(timeout=120)[0]
    err = producer.stderr.read()
    assert producer.wait(timeout=120) == 0
    assert json.loads(first)["id"] == 1
    assert err == b""


def test_no_input_on_a_terminal_is_an_error(classifier, monkeypatch, capsys):
    class Terminal:
        buffer = None

        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    assert cli.run(["classify", "-m", str(classifier)]) == 1
    assert capsys.readouterr().err.startswith("error: no input: pass FILES, or pipe snippets into stdin")
