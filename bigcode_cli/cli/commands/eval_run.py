"""What `bigcode eval` does once its options are parsed: pick the problems, choose where completions come from,
run the evaluation with a progress bar on a terminal, write the samples, print the summary."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from bigcode_cli.terminal.console import print_notice, stderr_console, stdout_console

if TYPE_CHECKING:
    from bigcode_cli.eval.evaluation import Generate
    from bigcode_cli.eval.problem import Problem
    from bigcode_cli.terminal.model_choice import ModelChoice


@dataclass(frozen=True)
class EvalRequest:
    """The options of `bigcode eval`, as plain values."""

    task: str
    dataset: str | None
    completions: str | None
    execute: bool
    output: str | None
    resume: bool
    limit: int | None
    problems: str | None
    num_samples: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int | None
    jobs: int
    timeout: float
    json_out: bool
    server: str | None
    choice: ModelChoice


def _check(request: EvalRequest) -> None:
    from bigcode_cli.errors import UsageError

    if request.completions is not None:
        if request.server is not None:
            raise UsageError("--completions scores a file and --server generates: use one of them")
        if not request.execute:
            raise UsageError("scoring --completions runs them: add --allow-code-execution (each program runs "
                             "in a sandbox)")
        if request.num_samples != 1:
            raise UsageError("with --completions the samples per task come from the file: drop -n")
    if request.resume and request.output is None:
        raise UsageError("--resume goes on with an --output file: add --output FILE.jsonl")


def _completer(request: EvalRequest, problems: list[Problem]) -> Generate:
    """Completions from a running server, or from the model loaded here."""
    from bigcode_cli.cli.commands.generation_run import make_settings
    from bigcode_cli.cli.commands.server_client import server_url

    settings = make_settings(max_new_tokens=request.max_new_tokens, temperature=request.temperature, top_k=0,
                             top_p=request.top_p, repetition_penalty=1.0, seed=request.seed, stop=None,
                             num_samples=1, lines=None, block=False)  # per problem: eval.completer.batches
    url = server_url(request.server)
    if url is not None:
        from bigcode_cli.cli.commands.eval_server import server_completer

        return server_completer(url, settings)
    from bigcode_cli.eval.completer import local_completer

    console = stderr_console()
    with console.status("loading model", spinner="dots") if console.is_terminal else contextlib.nullcontext():
        loaded = request.choice.open("causal-lm")
    if any(p.mode == "fim" for p in problems):
        loaded.tokenizer.require_fim()
    return local_completer(loaded.runner, loaded.tokenizer, settings)


def _from_file(path: str, problems: list[Problem]) -> tuple[list[Problem], dict[str, int], Generate]:
    """The problems a completions file answers, its samples per problem, and generate() reading them back."""
    from bigcode_cli.eval.samples import read_completions

    given = read_completions(path, [p.task_id for p in problems])
    return ([p for p in problems if p.task_id in given], {task: len(texts) for task, texts in given.items()},
            lambda problem, samples: given[problem.task_id][len(given[problem.task_id]) - samples:])


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar of samples on a terminal (stderr); elsewhere nothing."""
    console = stderr_console()
    if not console.is_terminal or total == 0:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("samples"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        bar = progress.add_task("samples", total=total)
        yield lambda: progress.advance(bar)


def run_eval(request: EvalRequest) -> None:
    """Evaluate as asked and print the summary (or, without --allow-code-execution, the samples)."""
    from bigcode_cli.eval.evaluation import check_toolchains, evaluate, summarize
    from bigcode_cli.eval.samples import OutputFile
    from bigcode_cli.eval.sandbox import Limits, Sandbox
    from bigcode_cli.eval.suites import load_problems, pick

    _check(request)
    problems = pick(load_problems(request.task, dataset=request.dataset), ids=request.problems, limit=request.limit)
    sandbox = None
    if request.execute:
        check_toolchains(problems)
        sandbox = Sandbox(Limits(timeout_s=request.timeout))
        gaps = sandbox.containment.not_contained()
        if gaps:
            print_notice("the sandbox is partial here: " + "; ".join(gaps))
    if request.completions is not None:
        problems, samples, generate = _from_file(request.completions, problems)
    else:
        samples = request.num_samples
    if request.completions is None:
        generate = _completer(request, problems)  # the model loads before --output is touched
    output = OutputFile(request.output, resume=request.resume) if request.output else None
    try:
        done = output.done() if output is not None else {}
        wanted = {p.task_id: samples if isinstance(samples, int) else samples[p.task_id] for p in problems}
        total = sum(max(wanted[p.task_id] - done.get(p.task_id, 0), 0) for p in problems)
        with _progress(total) as advance:
            def on_record(record: dict[str, Any]) -> None:
                if output is not None:
                    output.write(record)
                elif sandbox is None:
                    _print_line(json.dumps(record, ensure_ascii=False))
                advance()

            records = evaluate(problems, samples, generate, sandbox=sandbox, jobs=request.jobs, done=done,
                               on_record=on_record)
    finally:
        if output is not None:
            output.close()
    if sandbox is None:
        _how_to_score(request, len(records))
        return
    everything = (output.previous if output is not None else []) + records
    _print_summary(summarize(request.task, problems, everything, sandbox), request.json_out)


def _print_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _how_to_score(request: EvalRequest, count: int) -> None:
    where = request.output or "FILE.jsonl (the lines above)"
    dataset = f" --dataset {request.dataset}" if request.dataset else ""
    print_notice(f"{count} completions generated, none run (that needs --allow-code-execution); score them with: "
                 f"bigcode eval {request.task}{dataset} --completions {where} --allow-code-execution")


def _print_summary(summary: dict[str, Any], json_out: bool) -> None:
    if json_out:
        _print_line(json.dumps(summary))
        return
    from rich.table import Table

    table = Table("", "", box=None, show_header=False, title=f"bigcode eval {summary['task']}")
    for key, value in summary.items():
        if key in ("task", "pass@k", "sandbox"):
            continue
        table.add_row(key, f"{value:.1%}" if isinstance(value, float) else str(value))
    gaps = summary["sandbox"]["not_contained"]
    table.add_row("sandbox", "partial: " + "; ".join(gaps) if gaps else "network, PID and mount namespaces")
    for key, value in summary["pass@k"].items():
        table.add_row(key, f"{value:.2%}", style="bold")
    stdout_console().print(table)
