"""Datasets on the local path: Parquet files and explicit-format files hold many records (same rules as
stdin), `--output FILE` writes JSON Lines or Parquet atomically; other files stay one record each."""

import json
from pathlib import Path

import pytest
from task_models import SNIPPETS, model_dir

from bigcode_cli.cli import app as cli

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

LABELS = ["python", "c", "javascript"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return model_dir(tmp_path_factory.mktemp("ds_cls") / "ckpt", "sequence-classification", LABELS, n_positions=32)


def run_cli(capsys, args):
    code = cli.run(args)
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_parquet_rows_are_records_like_json_lines(classifier, tmp_path, capsys):
    texts = SNIPPETS[:5]
    pq.write_table(pa.table({"code": texts[:2] + [None] + texts[3:], "key": [10, 11, 12, 13, 14],
                             "repo": ["a", "b", "c", "d", "e"]}), tmp_path / "in.parquet")
    with (tmp_path / "in.jsonl").open("w") as f:
        for i, text in enumerate(texts):
            if i != 2:
                f.write(json.dumps({"code": text, "key": 10 + i, "repo": "abcde"[i]}) + "\n")
    common = ["classify", "-m", str(classifier), "--text-column", "code", "--id-column", "key"]
    code, out, err = run_cli(capsys, common + [str(tmp_path / "in.parquet")])
    assert code == 1
    assert jsonl(err.split("error: ")[0]) == [{"id": 12, "source": str(tmp_path / "in.parquet"), "line": 3,
                                               "error": "the 'code' value is null"}]
    from_parquet = jsonl(out)
    code, out, err = run_cli(capsys, common + ["--input-format", "jsonl", str(tmp_path / "in.jsonl")])
    assert code == 0, err
    assert jsonl(out) == from_parquet  # same records whichever file format they came in
    assert [r["id"] for r in from_parquet] == [10, 11, 13, 14] and from_parquet[0]["repo"] == "a"


def test_files_are_one_record_each_unless_a_format_is_given(classifier, tmp_path, capsys):
    (tmp_path / "a.txt").write_text("x = 1\ny = 2\n")
    code, out, _ = run_cli(capsys, ["classify", "-m", str(classifier), str(tmp_path / "a.txt")])
    assert code == 0 and [r["id"] for r in jsonl(out)] == [str(tmp_path / "a.txt")]
    code, out, _ = run_cli(capsys, ["classify", "-m", str(classifier), "--input-format", "lines",
                                    str(tmp_path / "a.txt"), str(tmp_path / "a.txt")])
    assert code == 0 and [r["id"] for r in jsonl(out)] == [1, 2, 1, 2]
    code, out, err = run_cli(capsys, ["classify", "-m", str(classifier), "--input-format", "lines",
                                      str(tmp_path / "missing.txt")])
    assert code == 1 and "no such file" in err


def test_output_parquet_round_trip(classifier, tmp_path, capsys):
    data = "\n".join(SNIPPETS).encode()
    (tmp_path / "in.txt").write_bytes(data)
    args = ["classify", "-m", str(classifier), "--input-format", "lines", str(tmp_path / "in.txt")]
    code, out, _ = run_cli(capsys, args)
    assert code == 0
    code, out2, err = run_cli(capsys, args + ["--output", str(tmp_path / "out.parquet")])
    assert code == 0 and out2 == "" and err == ""
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("scores").type == pa.map_(pa.string(), pa.float64())
    rows = table.to_pylist()
    for row, want in zip(rows, jsonl(out), strict=True):
        assert dict(row.pop("scores")) == want.pop("scores")
        assert row == {"truncated": None, **want}
    # and the Parquet file reads back in as records
    code, again, _ = run_cli(capsys, ["classify", "-m", str(classifier), str(tmp_path / "out.parquet"),
                                      "--text-column", "label"])
    assert code == 0 and [r["id"] for r in jsonl(again)] == list(range(1, len(rows) + 1))
    code, _, _ = run_cli(capsys, args + ["--output", str(tmp_path / "out.jsonl")])
    assert code == 0 and (tmp_path / "out.jsonl").read_text() == out


def test_no_output_file_is_left_on_an_error(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("x = 1\n")
    code, _, err = run_cli(capsys, ["classify", "-m", str(tmp_path / "no-model"), str(tmp_path / "in.txt"),
                                    "--output", str(tmp_path / "out.parquet")])
    assert code == 1 and err.startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_records_parquet_cannot_hold_are_one_line(classifier, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"text": "x = 1", "meta": 1}\n{"text": "y = 2", "meta": "two"}\n')
    code, _, err = run_cli(capsys, ["classify", "-m", str(classifier), "--input-format", "jsonl", "-b", "1",
                                    str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.parquet")])
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: cannot write these records as Parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_output_files_get_the_umask_s_mode_and_never_more_than_the_file_they_replace(classifier, tmp_path, capsys):
    import os
    import stat

    (tmp_path / "in.txt").write_text("x = 1\n")
    args = ["classify", "-m", str(classifier), str(tmp_path / "in.txt")]
    old = os.umask(0o022)
    try:
        for name in ("new.jsonl", "new.parquet"):
            assert run_cli(capsys, args + ["-o", str(tmp_path / name)])[0] == 0
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name  # mkstemp's own is 0600
        (tmp_path / "private.jsonl").write_text("old\n")
        (tmp_path / "private.jsonl").chmod(0o600)
        (tmp_path / "shared.jsonl").write_text("old\n")
        (tmp_path / "shared.jsonl").chmod(0o664)
        for name, mode in (("private.jsonl", 0o600), ("shared.jsonl", 0o644)):
            assert run_cli(capsys, args + ["-o", str(tmp_path / name)])[0] == 0
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
            assert (tmp_path / name).read_text() != "old\n"
        os.umask(0o077)
        assert run_cli(capsys, args + ["-o", str(tmp_path / "strict.jsonl")])[0] == 0
        assert stat.S_IMODE((tmp_path / "strict.jsonl").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_part_files_directory_gets_the_umask_s_mode(tmp_path):
    import os
    import stat

    from bigcode_cli.pipelines.output_files import PartFiles

    old = os.umask(0o022)
    try:
        parts = PartFiles(tmp_path / "out", "jsonl", part_records=2)
        parts.write([{"id": i} for i in range(3)])
        assert [p.name for p in parts.commit()] == ["part-00000.jsonl", "part-00001.jsonl"]
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()} == {0o644}
    (tmp_path / "private").mkdir(mode=0o700)  # an empty directory of one's own stays one's own
    old = os.umask(0o022)
    try:
        parts = PartFiles(tmp_path / "private", "jsonl")
        parts.write([{"id": 1}])
        parts.commit()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "private").iterdir()} == {0o600}
