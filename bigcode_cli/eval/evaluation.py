"""The evaluation loop: completions for each problem (made one problem at a time), their programs run in the
sandbox by `jobs` workers meanwhile, one record per sample; and the summary that ends in pass@k."""

from __future__ import annotations

import functools
import queue
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from bigcode_cli.eval.executors import executor
from bigcode_cli.eval.passk import mean_pass_at_k, reported_ks
from bigcode_cli.eval.problem import Problem
from bigcode_cli.eval.sandbox import RESULTS, Outcome, Sandbox

# generate(problem, how_many) -> that many completions of the problem
Generate = Callable[[Problem, int], list[str]]
OnRecord = Callable[[dict[str, Any]], None]


@functools.lru_cache(maxsize=None)
def _resolved(language: str) -> tuple[list[list[str]], list[str]]:
    return executor(language).resolve()


def check_toolchains(problems: Sequence[Problem]) -> None:
    """Fail before any work when a language of the problems cannot be run here (ToolchainError)."""
    for language in dict.fromkeys(p.language for p in problems):
        _resolved(language)


def execute(problem: Problem, completion: str, sandbox: Sandbox, slot: int = 0) -> Outcome:
    """Run the problem's program with this completion and its tests in the sandbox."""
    commands, path = _resolved(problem.language)
    return sandbox.run({executor(problem.language).source: problem.program(completion)}, commands, slot=slot,
                       extra_path=path)


def _record(problem: Problem, completion: str, outcome: Outcome | None) -> dict[str, Any]:
    record: dict[str, Any] = {"task_id": problem.task_id, "completion": completion}
    exact = problem.exact_match(completion)
    if exact is not None:
        record["exact_match"] = exact
    if outcome is not None:
        record.update(passed=outcome.passed, result=outcome.result, time=round(outcome.seconds, 3))
    return record


def evaluate(problems: Sequence[Problem], samples: int | dict[str, int], generate: Generate, *,
             sandbox: Sandbox | None, jobs: int = 1, done: dict[str, int] | None = None,
             on_record: OnRecord | None = None) -> list[dict[str, Any]]:
    """Make `samples` completions per problem (fewer the `done` ones), run each (unless sandbox is None),
    and return the new records; `on_record` sees each as it is finished (in this thread)."""
    done = done or {}
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(jobs):
        slots.put(slot)
    records: list[dict[str, Any]] = []

    def finish(record: dict[str, Any]) -> None:
        records.append(record)
        if on_record is not None:
            on_record(record)

    def run_one(problem: Problem, completion: str) -> dict[str, Any]:
        slot = slots.get()
        try:
            return _record(problem, completion, execute(problem, completion, sandbox, slot))  # type: ignore[arg-type]
        finally:
            slots.put(slot)

    pending: set[Future] = set()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            for problem in problems:
                wanted = samples if isinstance(samples, int) else samples.get(problem.task_id, 0)
                missing = wanted - done.get(problem.task_id, 0)
                if missing <= 0:
                    continue
                for completion in generate(problem, missing):
                    if sandbox is None:
                        finish(_record(problem, completion, None))
                    else:
                        pending.add(pool.submit(run_one, problem, completion))
                finished, pending = wait(pending, timeout=0, return_when=FIRST_COMPLETED) if pending else (set(), set())
                for future in finished:
                    finish(future.result())
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    finish(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return records


def summarize(task: str, problems: Sequence[Problem], records: Sequence[dict[str, Any]],
              sandbox: Sandbox | None) -> dict[str, Any]:
    """Counts of each result, exact match (infill tasks), what the sandbox contained, then pass@k."""
    wanted = {p.task_id for p in problems}
    mine = [r for r in records if r["task_id"] in wanted]
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in mine:
        by_task[record["task_id"]].append(record)
    summary: dict[str, Any] = {"task": task, "problems": len(by_task), "samples": len(mine)}
    executed = sandbox is not None
    if executed:
        counts = Counter(r.get("result") for r in mine)
        summary.update({result: counts.get(result, 0) for result in RESULTS})
    exact = [r["exact_match"] for r in mine if "exact_match" in r]
    if exact:
        summary["exact_match"] = sum(exact) / len(exact)
    if executed:
        summary["sandbox"] = sandbox.containment.describe()
        scores = [(len(rs), sum(bool(r.get("passed")) for r in rs)) for rs in by_task.values()]
        summary["pass@k"] = {f"pass@{k}": mean_pass_at_k(scores, k) for k in reported_ks([n for n, _ in scores])}
    return summary
