"""`bigcode finetune`: learnable toy tasks reach high held-out scores in seconds, the checkpoints load in
transformers with the same scores, data errors name their line, early stopping, destinations."""

import json
import random
import string
from pathlib import Path

import pytest
import torch
from task_models import feed_stdin, hf_model, model_dir

from bigcode_cli.cli import app as cli
from bigcode_cli import store
from bigcode_cli.pipelines.batching import Batcher
from bigcode_cli.model.engine import load
from bigcode_cli.errors import InputError, StoreError
from bigcode_cli.finetune.training import FinetuneOptions, finetune
from bigcode_cli.finetune.data import build_examples, classification_metrics
from bigcode_cli.text.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

LANGS = ["c", "javascript", "python"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A random tiny causal LM with a tokenizer: what finetune starts from."""
    return model_dir(tmp_path_factory.mktemp("base") / "lm", "causal-lm", ["a", "b"], n_positions=96)


def snippet(rng: random.Random, lang: str) -> str:
    name = rng.choice(["total", "count", "value", "item", "size", "index", "result", "data"]) + str(rng.randint(0, 99))
    n = rng.randint(0, 999)
    forms = {
        "python": [f"def get_{name}(x):\n    return x + {n}", f"{name} = [x for x in range({n})]",
                   f"if {name} > {n}:\n    print({name})"],
        "c": [f"int get_{name}(int x) {{ return x + {n}; }}", f"int {name} = {n};",
              f"for (int i = 0; i < {n}; i++) {{ {name}++; }}"],
        "javascript": [f"function get_{name}(x) {{ return x + {n}; }}", f"const {name} = {n};",
                       f"let {name} = [];\n{name}.push({n});"],
    }
    return rng.choice(forms[lang])


def write_langid(path: Path, seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        lang = rng.choice(LANGS)
        records.append({"text": snippet(rng, lang), "label": lang})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def secrets_record(rng: random.Random) -> dict:
    text, spans = "", []
    for _ in range(rng.randint(2, 4)):
        name = rng.choice(["x", "total", "count", "name", "items"])
        if rng.random() < 0.5:
            value = "sk-" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(6, 12)))
            prefix = f'{name} = "'
            spans.append({"start": len(text) + len(prefix), "end": len(text) + len(prefix) + len(value), "label": "KEY"})
            text += prefix + value + '"\n'
        else:
            text += f"{name} = {rng.randint(0, 999)}\n"
    return {"text": text, "spans": spans, "kind": "code"}


def write_secrets(path: Path, seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    records = [secrets_record(rng) for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def run_cli(monkeypatch, capsys, args, stdin: bytes = b""):
    feed_stdin(monkeypatch, stdin)
    code = cli.run(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_classifier_learns_the_language_and_loads_in_transformers(base, tmp_path, monkeypatch, capsys):
    write_langid(tmp_path / "train.jsonl", 1, 300)
    write_langid(tmp_path / "eval.jsonl", 2, 100)
    test = write_langid(tmp_path / "test.jsonl", 3, 100)
    out = tmp_path / "langid"
    code, stdout, err = run_cli(monkeypatch, capsys, [
        "finetune", "classify", "--train", str(tmp_path / "train.jsonl"), "--eval", str(tmp_path / "eval.jsonl"),
        "--base", str(base), "--out", str(out), "--unfreeze", "2", "--lr", "0.003", "--epochs", "3"])
    assert code == 0, err
    assert stdout == f"{out}\n"
    assert "macro_f1=" in err and "note: trained 3 labels" in err

    # held-out accuracy, through the classify command
    data = "".join(json.dumps({"id": i, "text": r["text"]}) + "\n" for i, r in enumerate(test)).encode()
    code, stdout, _ = run_cli(monkeypatch, capsys, ["classify", "-m", str(out)], data)
    predicted = [json.loads(line)["label"] for line in stdout.splitlines()]
    accuracy = sum(p == r["label"] for p, r in zip(predicted, test)) / len(test)
    assert code == 0 and accuracy >= 0.9

    # a transformers checkpoint: same config fields and the same scores
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "c", "1": "javascript", "2": "python"}
    assert config["label2id"] == {"c": 0, "javascript": 1, "python": 2}
    assert config["problem_type"] == "single_label_classification"
    assert config["architectures"] == ["GPTBigCodeForSequenceClassification"] and config["pad_token_id"] == 0
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    reference = hf_model(out, "sequence-classification")
    assert reference.config.id2label == {0: "c", 1: "javascript", 2: "python"}
    tokenizer = Tokenizer.from_dir(out)
    texts = [r["text"] for r in test[:12]]
    ours = Batcher(load(out, "sequence-classification", device="cpu"), tokenizer, batch_size=5).run(texts)
    with torch.no_grad():
        for text, scored in zip(texts, ours):
            want = reference(torch.tensor([tokenizer.encode(text)])).logits[0]
            assert (scored.logits - want).abs().max().item() <= 1e-4


def test_tagger_learns_keys_into_the_cache_and_loads_in_transformers(base, tmp_path, monkeypatch, capsys):
    write_secrets(tmp_path / "train.jsonl", 1, 200)
    held_out = write_secrets(tmp_path / "eval.jsonl", 2, 50)
    events = []
    result = finetune(FinetuneOptions("tag", tmp_path / "train.jsonl", tmp_path / "eval.jsonl", base=str(base),
                                      name="toy-secrets", epochs=12, lr=0.01, unfreeze=2, batch_size=16, patience=4),
                      events.append)
    assert result.labels == ["O", "B-KEY", "I-KEY"]
    assert result.metrics["span_f1"] >= 0.6
    assert [e.kind for e in events if e.kind != "step"][0] == "start" and events[-1].kind == "saved"
    resolved = store.resolve("toy-secrets")
    assert resolved.source == "cache" and resolved.path == result.path

    code, stdout, err = run_cli(monkeypatch, capsys, ["tag", "-m", "toy-secrets"],
                                "".join(json.dumps({"text": r["text"]}) + "\n" for r in held_out[:10]).encode())
    assert (code, err) == (0, "")
    for line, record in zip(stdout.splitlines(), held_out):
        for span in json.loads(line)["spans"]:
            assert span["text"] == record["text"][span["start"]:span["end"]]

    reference = hf_model(result.path, "token-classification")
    tokenizer = Tokenizer.from_dir(result.path)
    texts = [r["text"] for r in held_out[:8]]
    ours = Batcher(load(result.path, "token-classification", device="cpu"), tokenizer, batch_size=3, offsets=True).run(texts)
    with torch.no_grad():
        for text, scored in zip(texts, ours):
            want = reference(torch.tensor([tokenizer.encode(text)])).logits[0]
            assert (scored.logits - want).abs().max().item() <= 1e-4


def test_head_only_multi_label(base, tmp_path, monkeypatch, capsys):
    rng = random.Random(0)
    rows = []
    for _ in range(60):
        langs = sorted(rng.sample(LANGS, rng.randint(0, 2)))
        rows.append({"text": "\n".join(snippet(rng, lang) for lang in langs) or "empty", "labels": langs})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = finetune(FinetuneOptions("classify", tmp_path / "train.jsonl", tmp_path / "train.jsonl", base=str(base),
                                      out=tmp_path / "multi", epochs=2))
    assert set(result.metrics) == {"accuracy", "micro_f1"}
    config = json.loads((tmp_path / "multi" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    code, stdout, _ = run_cli(monkeypatch, capsys, ["classify", "-m", str(tmp_path / "multi"), "--threshold", "0"],
                              b"int x = 1;\n")
    assert code == 0 and sorted(json.loads(stdout)["labels"]) == LANGS


def test_early_stopping_keeps_the_best_and_reports_events(base, tmp_path):
    write_langid(tmp_path / "train.jsonl", 1, 40)
    events = []
    finetune(FinetuneOptions("classify", tmp_path / "train.jsonl", tmp_path / "train.jsonl", base=str(base),
                             out=tmp_path / "out", epochs=10, lr=0.0, patience=1, batch_size=8), events.append)
    kinds = [e.kind for e in events if e.kind != "step"]
    assert kinds == ["start", "eval", "eval", "stop", "saved"]
    assert [e.best for e in events if e.kind == "eval"] == [True, False]
    assert max(e.step for e in events) == 10  # two epochs of 5 steps, not ten


@pytest.mark.parametrize("line, message", [
    ('{"text": "x", "label": ', "line 2: bad JSON"),
    ('{"text": "x"}', 'line 2: a classification record needs "label" (or a "labels" list)'),
    ('{"label": "c"}', 'line 2: each record needs a non-empty string "text"'),
    ('{"text": "x", "labels": ["c"]}', 'line 2: mixes "label" and "labels" records; use one kind'),
])
def test_bad_classification_data_names_the_line(base, tmp_path, monkeypatch, capsys, line, message):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "int x;", "label": "c"}\n' + line + "\n")
    code, stdout, err = run_cli(monkeypatch, capsys, ["finetune", "classify", "--train", str(train), "--base", str(base),
                                                      "--out", str(tmp_path / "out")])
    assert code == 1 and stdout == ""
    assert " ".join(err.split()).startswith(f"error: {train} {message}")


def test_bad_tagging_data_and_unknown_eval_labels(base, tmp_path):
    tokenizer = Tokenizer.from_dir(base)
    rows = [(1, {"text": "key = abc", "spans": [{"start": 6, "end": 20, "label": "KEY"}]})]
    with pytest.raises(InputError, match="line 1: each span needs a label and 0 <= start < end <= len"):
        build_examples("tag", rows, Path("t.jsonl"), tokenizer, 64, None)
    rows = [(3, {"text": "key = abc", "spans": [{"start": 6, "end": 9, "label": "B-KEY"}]})]
    with pytest.raises(InputError, match="line 3: span labels are entity types"):
        build_examples("tag", rows, Path("t.jsonl"), tokenizer, 64, None)
    rows = [(4, {"text": "int x;", "label": "go"})]
    with pytest.raises(InputError, match="line 4: label 'go' does not occur in the training data"):
        build_examples("classify", rows, Path("e.jsonl"), tokenizer, 64, ["c", "python"])


def test_the_bundled_data_formats_are_accepted(base):
    """Records exactly as data/langid and data/secrets hold them, extra fields included."""
    tokenizer = Tokenizer.from_dir(base)
    text = "    # Maintainer: Amelie Stewart <amelie@fastmail.fm>\n"
    secrets = [(1, {"text": text, "spans": [{"start": 34, "end": 52, "label": "EMAIL"}], "kind": "code",
                    "lang": "python"}), (2, {"text": "x = 1\n", "spans": [], "kind": "negative", "lang": "python"})]
    examples, labels, _ = build_examples("tag", secrets, Path("s.jsonl"), tokenizer, 256, None)
    assert labels == ["O", "B-EMAIL", "I-EMAIL"] and text[34:52] == "amelie@fastmail.fm"
    tagged = [labels[i] for i in examples[0].target]
    assert tagged.count("B-EMAIL") == 1 and set(tagged) == {"O", "B-EMAIL", "I-EMAIL"}
    assert set(examples[1].target) == {0}
    langid = [(1, {"text": "fn main() {}", "label": "rust"}), (2, {"text": "echo hi", "label": "shell"})]
    examples, labels, multi = build_examples("classify", langid, Path("l.jsonl"), tokenizer, 256, None)
    assert labels == ["rust", "shell"] and not multi and [e.target for e in examples] == [0, 1]


def test_destination_is_checked_before_training(base, tmp_path, monkeypatch, capsys):
    write_langid(tmp_path / "train.jsonl", 1, 10)
    code, _, err = run_cli(monkeypatch, capsys, ["finetune", "classify", "--train", str(tmp_path / "train.jsonl"),
                                                 "--base", str(base)])
    assert code == 2 and "error: say where the model goes: --name NAME (into the cache) or --out DIR" in err
    finetune(FinetuneOptions("classify", tmp_path / "train.jsonl", base=str(base), name="taken", epochs=1))
    with pytest.raises(StoreError, match="taken already exists in the cache"):
        finetune(FinetuneOptions("classify", tmp_path / "train.jsonl", base=str(base), name="taken", epochs=1))
    assert finetune(FinetuneOptions("classify", tmp_path / "train.jsonl", base=str(base), name="taken", epochs=1,
                                    force=True)).path.is_dir()


def test_metrics():
    assert classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], 3, False) == {
        "accuracy": 0.75, "macro_f1": pytest.approx((1 + 2 / 3 + 2 / 3) / 3)}
    assert classification_metrics([[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], 2, True) == {
        "accuracy": 0.5, "micro_f1": pytest.approx(0.8)}
