"""`classify|tag --ray` and the Python API on one local Ray (started once for the module, stopped after):
the Ray path writes exactly the local path's records, a killed worker is retried with every record once,
a model that cannot load fails with the worker's one-line reason, and without Ray `--ray` says what to install."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from task_models import model_dir

from bigcode_cli.cli import app as cli

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from bigcode_cli.pipelines.ray_job import JobSpec, Scorer, run_job  # noqa: E402

LABELS = ["python", "c", "javascript"]
TAGS = ["O", "B-KEY", "I-KEY", "B-EMAIL", "I-EMAIL"]
WORDS = ["def", "return", "x", "(", ")", "{", "}", "int", "main", "print", "for", "in", "range", ":", "=", "+", "1"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for every test here (start-up is paid once), shut down at the end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return model_dir(tmp_path_factory.mktemp("ray_cls") / "ckpt", "sequence-classification", LABELS, n_positions=64)


@pytest.fixture(scope="module")
def tagger(tmp_path_factory) -> Path:
    return model_dir(tmp_path_factory.mktemp("ray_tag") / "ckpt", "token-classification", TAGS, n_positions=64)


def snippet(i: int) -> str:
    """A deterministic snippet of 1-40 words, so batches mix lengths."""
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(1 + (i * 13) % 40))


def write_jsonl(path: Path, n: int, bad_at: int | None = None) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write("{not json\n" if i == bad_at else json.dumps({"id": f"s{i}", "text": snippet(i), "n": i}) + "\n")
    return path


def run_cli(capsys, args):
    code = cli.run(args)
    out, err = capsys.readouterr()
    return code, out, err


def part_records(directory: Path) -> list[dict]:
    records = []
    for part in sorted(directory.iterdir()):
        if part.suffix == ".parquet":
            records += pq.read_table(part).to_pylist()
        else:
            records += [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines()]
    return records


def test_ray_path_writes_the_local_records_with_a_malformed_one(local_ray, classifier, tmp_path, capsys):
    data = write_jsonl(tmp_path / "in.jsonl", 1000, bad_at=500)
    common = ["classify", "-m", str(classifier), "--input-format", "jsonl", str(data)]
    code, out, err = run_cli(capsys, common)
    assert code == 1 and "1 of 1000 records could not be processed" in err
    local = [json.loads(line) for line in out.splitlines()]
    code, out, err = run_cli(capsys, common + ["--ray", "--workers", "2", "--output", str(tmp_path / "out")])
    assert code == 1 and out == "", err
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert json.loads(lines[0]) == {"id": 501, "source": str(data), "line": 501,
                                    "error": "bad JSON (Expecting property name enclosed in double quotes at column 2)"}
    assert any("truncated" in r for r in local)  # some snippets are longer than the 64 positions
    assert lines[-1] == "error: 1 of 1000 records could not be processed (see the error records above)"
    remote = part_records(tmp_path / "out")
    assert len(local) == 999
    assert [r["id"] for r in remote] == [r["id"] for r in local]  # same records, in input order
    assert [r["label"] for r in remote] == [r["label"] for r in local]
    for a, b in zip(remote, local):
        assert list(a) == list(b) and list(a)[:5] == ["id", "n", "label", "score", "scores"]
        assert a.get("truncated") == b.get("truncated")
        assert a["n"] == b["n"] and abs(a["score"] - b["score"]) <= 1e-5
        assert all(abs(a["scores"][k] - b["scores"][k]) <= 1e-5 for k in LABELS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_tag_parquet_in_and_out_on_ray_equals_the_local_parquet(local_ray, tagger, tmp_path, capsys):
    import pyarrow as pa

    texts = [snippet(i) + " user@example.com" for i in range(40)]
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(40)], "code": texts, "repo": ["r"] * 40}),
                   tmp_path / "in.parquet")
    common = ["tag", "-m", str(tagger), str(tmp_path / "in.parquet"), "--text-column", "code", "--id-column", "key"]
    code, _, err = run_cli(capsys, common + ["--output", str(tmp_path / "local.parquet")])
    assert code == 0, err
    code, _, err = run_cli(capsys, common + ["--ray", "--output", str(tmp_path / "out"), "--output-format", "parquet"])
    assert code == 0, err
    local = pq.read_table(tmp_path / "local.parquet")
    remote = [pq.read_table(p) for p in sorted((tmp_path / "out").iterdir())]
    assert [p.name for p in sorted((tmp_path / "out").iterdir())] == ["part-00000.parquet"]
    assert remote[0].schema == local.schema
    assert local.column_names == ["id", "key", "repo", "spans", "truncated"]
    assert local.column("id").to_pylist() == [f"k{i}" for i in range(40)]
    for a, b in zip(remote[0].to_pylist(), local.to_pylist()):
        assert [(s["label"], s["start"], s["end"]) for s in a["spans"]] == [(s["label"], s["start"], s["end"]) for s in b["spans"]]
        assert all(abs(x["score"] - y["score"]) <= 1e-5 for x, y in zip(a["spans"], b["spans"]))


def test_python_api_adds_result_columns(local_ray, classifier):
    from bigcode_cli.pipelines.ray_dataset import classify_dataset

    texts = [snippet(i) for i in range(30)] + [""]
    dataset = ray.data.from_items([{"code": t, "k": i} for i, t in enumerate(texts)])
    rows = classify_dataset(dataset, model=str(classifier), text_column="code").take_all()
    assert [r["k"] for r in sorted(rows, key=lambda r: r["k"])] == list(range(31))
    by_k = {r["k"]: r for r in rows}
    assert by_k[30]["error"] == "empty text: nothing to read" and by_k[30]["label"] is None
    from bigcode_cli.model.engine import load
    from bigcode_cli.pipelines.batching import Batcher
    from bigcode_cli.text.tokenizer import Tokenizer

    want = Batcher(load(classifier, "sequence-classification", device="cpu"), Tokenizer.from_dir(classifier)).run(texts[:30])
    for i, scored in enumerate(want):
        probs = scored.logits.softmax(-1)
        assert by_k[i]["label"] == LABELS[int(probs.argmax())] and by_k[i]["error"] is None
        assert abs(by_k[i]["score"] - probs.max().item()) <= 1e-5
        assert dict(by_k[i]["scores"]).keys() == set(LABELS)


class CrashOnce(Scorer):
    """Dies (the whole worker process) on its first batch, once per test: the marker file remembers."""

    marker = ""

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super().__call__(batch)


def test_a_killed_worker_is_retried_and_every_record_comes_out_once(local_ray, classifier, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    data = write_jsonl(tmp_path / "in.jsonl", 300)
    CrashOnce.marker = str(tmp_path / "crashed")
    written = []
    spec = JobSpec("sequence-classification", str(classifier), input_format="jsonl")
    total, failed = run_job(spec, [str(data)], written.extend, scorer=CrashOnce)
    assert Path(CrashOnce.marker).exists()  # a worker did die
    assert (total, failed) == (300, 0)
    assert [r["id"] for r in written] == [f"s{i}" for i in range(300)]


def test_a_model_that_cannot_load_fails_with_the_workers_reason(local_ray, tmp_path):
    # the real CLI in a subprocess, joining this module's Ray: its whole stderr is the worker's one line
    data = write_jsonl(tmp_path / "in.jsonl", 3)
    missing = tmp_path / "no-such-model"
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, COLUMNS="300")
    done = subprocess.run([sys.executable, "-m", "bigcode_cli", "classify", "-m", str(missing), str(data),
                           "--input-format", "jsonl", "--ray", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: the Ray job failed: worker on ") and str(missing) in done.stderr
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["in.jsonl"]


def test_ray_usage_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, ["classify", "x.jsonl", "--ray"])
    assert code == 2 and err == "error: --ray writes part files: give --output DIR\n"
    code, _, err = run_cli(capsys, ["classify", "x.jsonl", "--workers", "2"])
    assert code == 2 and err == "error: --workers runs the job on Ray: add --ray\n"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = run_cli(capsys, ["classify", "x.jsonl", "--ray", "-o", str(tmp_path / "full")])
    assert code == 1 and err == f"error: --output {tmp_path / 'full'}: already exists and is not an empty directory\n"
    # stdin, alone or among files, cannot be read by a Ray job: one line, nothing written
    stdin_refused = "error: --ray reads FILES (a Ray job cannot read this process's stdin): give the input files\n"
    for args in (["classify", "--ray", "-o", str(tmp_path / "out")],
                 ["classify", "x.jsonl", "-", "--ray", "-o", str(tmp_path / "out")]):
        code, _, err = run_cli(capsys, args)
        assert code == 1 and err == stdin_refused
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("hidden, args, message", [
    ("ray", ["classify", "--ray", "in.jsonl", "-o", "out"],
     "error: --ray needs Ray: pip install 'bigcode-cli[ray]' (Ray Data and pyarrow)"),
    ("pyarrow", ["classify", "in.parquet"],
     "error: Parquet needs pyarrow: pip install 'bigcode-cli[ray]' (or pip install pyarrow)"),
])
def test_without_the_extra_one_line_says_what_to_install(tmp_path, hidden, args, message):
    (tmp_path / "in.jsonl").write_text('{"text": "x = 1"}\n')
    (tmp_path / "in.parquet").write_bytes(b"PAR1")
    code = (f"import sys; sys.modules[{hidden!r}] = None\n"
            "from bigcode_cli.cli.app import run\n"
            f"sys.exit(run({args!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, COLUMNS="200"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == message
