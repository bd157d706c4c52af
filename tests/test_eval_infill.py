"""The fill-in-the-middle tasks built from HumanEval's canonical solutions: the masks (InCoder's
construction, so the published counts), the prompts, exact-match scoring, and execution of the filled program."""

from __future__ import annotations

import json

from bigcode_cli.cli.app import run
from bigcode_cli.eval.humaneval import humaneval_infill_multi, humaneval_infill_single, humaneval_rows


def _by_id(problems):
    return {p.task_id: p for p in problems}


def test_the_task_sizes_are_incoder_s():
    # InCoder (Fried et al. 2022) and the FIM paper report 1033 single-line and 5815 multi-line problems
    assert len(humaneval_infill_single()) == 1033
    assert len(humaneval_infill_multi()) == 5815


def test_single_line_masks_one_solution_line():
    row = humaneval_rows()[2]  # truncate_number: one line of solution
    problem = _by_id(humaneval_infill_single())["HumanEval/2/L0"]
    assert problem.mode == "fim" and problem.lines == 1
    assert problem.prompt == row["prompt"]
    assert problem.middle == "    return number % 1.0\n"
    assert problem.suffix == ""
    assert problem.program(problem.middle) == row["prompt"] + row["canonical_solution"] + problem.tests


def test_multi_line_masks_a_span_and_keeps_the_rest():
    row = humaneval_rows()[0]
    lines = row["canonical_solution"].splitlines(keepends=True)
    problem = _by_id(humaneval_infill_multi())["HumanEval/0/L1-3"]
    assert problem.prompt == row["prompt"] + lines[0]
    assert problem.middle == "".join(lines[1:4])
    assert problem.suffix == "".join(lines[4:])
    assert problem.lines is None
    assert problem.program(problem.middle) == row["prompt"] + row["canonical_solution"] + problem.tests


def test_exact_match_ignores_trailing_whitespace_and_blank_lines_only():
    problem = _by_id(humaneval_infill_single())["HumanEval/2/L0"]
    assert problem.exact_match("    return number % 1.0")
    assert problem.exact_match("    return number % 1.0  \n\n")
    assert not problem.exact_match("return number % 1.0\n")  # indentation is part of the line
    assert not problem.exact_match("    return number % 2.0\n")


def test_a_middle_without_its_newline_still_makes_a_program():
    problem = _by_id(humaneval_infill_multi())["HumanEval/0/L1-3"]
    assert problem.program(problem.middle.rstrip("\n")) == problem.program(problem.middle)


def _score(capsys, tmp_path, task, completions):
    path = tmp_path / "middles.jsonl"
    path.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in completions))
    code = run(["eval", task, "--completions", str(path), "--allow-code-execution", "--jobs", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


IDS = ["HumanEval/0/L0", "HumanEval/0/L2", "HumanEval/2/L0", "HumanEval/4/L1", "HumanEval/7/L0"]


def test_the_masked_lines_score_exact_match_and_pass(capsys, tmp_path):
    problems = _by_id(humaneval_infill_single())
    summary = _score(capsys, tmp_path, "humaneval-infill-single", [(i, problems[i].middle) for i in IDS])
    assert summary["exact_match"] == 1.0 and summary["passed"] == len(IDS)


def test_wrong_middles_score_zero(capsys, tmp_path):
    summary = _score(capsys, tmp_path, "humaneval-infill-single", [(i, "    pass\n") for i in IDS])
    assert summary["exact_match"] == 0.0 and summary["passed"] == 0


def test_a_multi_line_span_scores_like_a_single_one(capsys, tmp_path):
    problems = _by_id(humaneval_infill_multi())
    ids = ["HumanEval/0/L0-4", "HumanEval/2/L0"]
    summary = _score(capsys, tmp_path, "humaneval-infill-multi", [(i, problems[i].middle) for i in ids])
    assert summary["exact_match"] == 1.0 and summary["passed"] == 2
