"""`bigcode finetune classify|tag`: train a classification or tagging head and save it as a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bigcode_cli.choices import MAX_SEED
from bigcode_cli.cli.commands.option_groups import OptionGroup, option, with_options
from bigcode_cli.cli.commands.options import Device, DeviceOpt, OfflineOpt, complete_model
from bigcode_cli.terminal.console import print_notice, stderr_console

finetune_app = typer.Typer(
    name="finetune",
    help="Train a sequence-classification (classify) or token-classification (tag) head on a base model.",
    no_args_is_help=True,
)

TrainOpt = Annotated[Path, typer.Option("--train", help="Training data, JSON Lines.", show_default=False)]
EvalOpt = Annotated[Optional[Path], typer.Option(
    "--eval", help="Held-out data, JSON Lines: evaluated every epoch, used for early stopping.", show_default=False)]
BaseOpt = Annotated[Optional[str], typer.Option(
    "--base", help="Model to start from (default: the bundled bigcode-tiny language model).", show_default=False,
    autocompletion=complete_model)]
NameOpt = Annotated[Optional[str], typer.Option(
    "--name", help="Save the result into the model cache under this name.", show_default=False)]
OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", help="Save the result into this directory instead (or as well, with --name).", show_default=False)]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training data.")]
LrOpt = Annotated[Optional[float], typer.Option(
    "--lr", min=0.0, show_default=False, help="AdamW learning rate (default: 2e-3 head only, 5e-4 with --unfreeze).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Examples per step.")]
UnfreezeOpt = Annotated[int, typer.Option("--unfreeze", min=0, help="Also train the top N transformer blocks.")]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", min=1, help="Tokens kept per example (the rest is cut).")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Random seed (head initialisation, shuffling).")]
PatienceOpt = Annotated[int, typer.Option("--patience", min=1, help="Stop after this many evaluations without improvement.")]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", min=0, help="Evaluate every N steps (0: once per epoch).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing model of that name or a non-empty --out.")]


def _run(task: str, **kwargs: Any) -> None:
    from bigcode_cli.finetune.training import FinetuneOptions, finetune

    options = FinetuneOptions(task=task, **kwargs)
    on_terminal = getattr(sys.stderr, "isatty", lambda: False)()
    if on_terminal:
        result = _with_progress_bar(options, finetune)
    else:
        result = finetune(options, _report_plain)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    print_notice(f"trained {len(result.labels)} labels in {result.steps} steps ({result.seconds:.1f}s)"
                 + (f"; best eval: {shown}" if shown else "") + f"; saved {result.name or result.path}")
    sys.stdout.write(f"{result.path}\n")


def _metrics_text(event: Any) -> str:
    text = " ".join(f"{k}={v:.4f}" for k, v in event.metrics.items())
    return f"step {event.step}/{event.total}: {text}{' (best)' if event.best else ''}"


def _report_plain(event: Any) -> None:
    """Without a terminal: one line per evaluation and early stop, no bar."""
    if event.kind == "eval":
        print_notice(_metrics_text(event))
    elif event.kind == "stop":
        print_notice(f"early stop at step {event.step}: {event.message}")


def _with_progress_bar(options: Any, finetune: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        task = bar.add_task("train", total=None, loss="")

        def on_event(event: Any) -> None:
            if event.kind == "start":
                bar.update(task, total=event.total)
            elif event.kind == "step":
                bar.update(task, completed=event.step, loss=f"loss {event.loss:.4f}")
            elif event.kind == "eval":
                bar.console.print(f"[yellow]note:[/] {_metrics_text(event)}", markup=True, highlight=False)
            elif event.kind == "stop":
                bar.console.print(f"[yellow]note:[/] early stop at step {event.step}: {event.message}", highlight=False)

        return finetune(options, on_event)


def _training_options(*, eval_path: Any, device: Device, **values: Any) -> dict[str, Any]:
    return {"eval": eval_path, "device": device.value, **values}


TRAINING = OptionGroup(
    (
        option("train", TrainOpt),
        option("eval_path", EvalOpt, None),
        option("base", BaseOpt, None),
        option("name", NameOpt, None),
        option("out", OutOpt, None),
        option("epochs", EpochsOpt, 3),
        option("lr", LrOpt, None),
        option("batch_size", BatchOpt, 16),
        option("unfreeze", UnfreezeOpt, 0),
        option("max_length", MaxLengthOpt, 256),
        option("seed", SeedOpt, 0),
        option("device", DeviceOpt, Device.auto),
        option("patience", PatienceOpt, 2),
        option("eval_every", EvalEveryOpt, 0),
        option("offline", OfflineOpt, False),
        option("force", ForceOpt, False),
    ),
    _training_options,
)


@finetune_app.command("classify")
@with_options
def finetune_classify(training: dict[str, Any] = TRAINING) -> None:
    """Train a sequence classifier from {"text", "label"} records ({"text", "labels": [...]} for multi-label).

    Prints the checkpoint's path; use it with `bigcode classify -m NAME`.
    """
    _run("classify", **training)


@finetune_app.command("tag")
@with_options
def finetune_tag(training: dict[str, Any] = TRAINING) -> None:
    """Train a token tagger from {"text", "spans": [{"start", "end", "label"}]} records (character offsets).

    Spans become B-/I-/O token labels. Prints the checkpoint's path; use it with `bigcode tag -m NAME`.
    """
    _run("tag", **training)
