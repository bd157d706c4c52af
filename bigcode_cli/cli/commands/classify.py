"""`bigcode classify`: sequence classification of code snippets, for shell pipelines."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from bigcode_cli.cli.commands.option_groups import model_group, with_options
from bigcode_cli.cli.commands.pipeline import (
    PIPELINE,
    PipelineIO,
    json_line,
    pipeline,
    tsv_cell,
)
from bigcode_cli.cli.commands.scale_out import SCALE_OUT, ScaleOut, output_file, run_on_ray
from bigcode_cli.terminal.model_choice import ModelChoice
from bigcode_cli.terminal.console import stdout_console
from bigcode_cli.terminal.safe_text import for_stream, json_for_stream, safe_text
from bigcode_cli.pipelines.records import Record
from bigcode_cli.pipelines.results import SEQUENCE, classification_record

TopKOpt = Annotated[Optional[int], typer.Option("--top-k", "-k", min=1, show_default=False,
                                                help="Keep only the k best labels in `scores` (default: all).")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", min=0.0, max=1.0,
                                             help="Multi-label models: a label applies at or above this probability.")]


@with_options
def classify(
    top_k: TopKOpt = None,
    threshold: ThresholdOpt = 0.5,
    io: PipelineIO = PIPELINE,
    choice: ModelChoice = model_group("sequence-classification"),
    scale: ScaleOut = SCALE_OUT,
) -> None:
    """Classify code snippets with a sequence-classification model (default: the bundled language identifier).

    Reads FILES (one record each; .parquet files one per row) or stdin: one snippet per line, JSON Lines
    ({"id": ..., "text": ...}, other fields passed through) or NUL-separated (-0). Writes one record per
    input record, in input order: JSON Lines {"id", "label", "score", "scores"} in a pipe (or --output
    FILE, .parquet for Parquet), a table on a terminal. A bad record gets an error record on stderr, the
    others still go through, and the exit code is 1. --ray runs the job on a Ray cluster.
    """
    options = {"top_k": top_k, "threshold": threshold}
    if scale.ray:
        run_on_ray(io=io, choice=choice, scale=scale, task=SEQUENCE, results=options)
        return
    from bigcode_cli.pipelines.results import Results

    chosen = io.output
    sink = output_file(scale)
    with pipeline(io, SEQUENCE, choice, offsets=False, columns=scale.columns, sink=sink) as run:
        results = Results.for_task(run.loaded.runner.config, SEQUENCE, **options)
        for chunk in run.chunks():
            rows = [(record, results.prediction(scored), scored.encoded.truncation()) for record, scored in chunk]
            if sink is not None:
                sink.write([classification_record(*row) for row in rows])
            elif chosen == "jsonl":
                lines = "".join(json_line(classification_record(*row)) for row in rows)
                sys.stdout.write(json_for_stream(lines, sys.stdout))
            elif chosen == "tsv":
                sys.stdout.write(for_stream("".join(_tsv_line(*row) for row in rows), sys.stdout))
            else:
                _print_table(rows)


def _label_text(prediction: Any) -> str:
    if prediction.labels is not None:
        return ",".join(prediction.labels)
    return prediction.label or ""


def _tsv_line(record: Record, prediction: Any, truncation: dict | None) -> str:
    return f"{tsv_cell(record.id)}\t{tsv_cell(_label_text(prediction))}\t{prediction.score:.4f}\n"


def _print_table(rows: list[tuple[Record, Any, dict | None]]) -> None:
    from rich.table import Table

    table = Table("ID", "LABEL", "SCORE", "SCORES", box=None, header_style="bold")
    for record, prediction, truncation in rows:
        others = ", ".join(f"{k} {v:.3f}" for k, v in list(prediction.scores.items())[:4])
        note = f" (truncated {truncation['side']})" if truncation else ""
        table.add_row(safe_text(str(record.id)), safe_text(_label_text(prediction)) + note, f"{prediction.score:.4f}",
                      safe_text(others))
    stdout_console().print(table, markup=False)
