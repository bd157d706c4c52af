"""`bigcode tag`: token classification of code (secrets, personal data...), for shell pipelines."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from bigcode_cli import choices
from bigcode_cli.cli.commands.option_groups import model_group, with_options
from bigcode_cli.cli.commands.options import choice_enum
from bigcode_cli.cli.commands.pipeline import (
    PIPELINE,
    PipelineIO,
    json_line,
    pipeline,
    tsv_cell,
)
from bigcode_cli.cli.commands.scale_out import SCALE_OUT, ScaleOut, output_file, run_on_ray
from bigcode_cli.terminal.model_choice import ModelChoice
from bigcode_cli.terminal.console import colour_wanted, stdout_console
from bigcode_cli.terminal.safe_text import for_stream, is_terminal, json_for_stream, safe_text
from bigcode_cli.pipelines.records import Record
from bigcode_cli.pipelines.results import TOKEN, tagging_record

STYLES = ("black on red", "black on green", "black on yellow", "black on cyan", "black on magenta",
          "white on blue", "black on bright_red", "black on bright_green")


Aggregate = choice_enum("Aggregate", choices.AGGREGATES)


AggregateOpt = Annotated[Aggregate, typer.Option(
    "--aggregate", help="none: one span per tagged token, with the model's own label (B-KEY, I-KEY); "
                        "word: merge B-/I- pieces into one span per entity (KEY) and grow spans to whole words.")]
RedactOpt = Annotated[bool, typer.Option(
    "--redact", help="Print the input back, in its own format, with each span replaced by `<LABEL>`.")]
LabelsOpt = Annotated[Optional[list[str]], typer.Option(
    "--labels", "-l", show_default=False, help="Only these labels (repeat, or separate with commas).")]


@with_options
def tag(
    aggregate: AggregateOpt = Aggregate.word,
    redact: RedactOpt = False,
    labels: LabelsOpt = None,
    io: PipelineIO = PIPELINE,
    choice: ModelChoice = model_group("token-classification"),
    scale: ScaleOut = SCALE_OUT,
) -> None:
    """Tag spans of code with a token-classification model (default: the bundled secrets tagger).

    Reads FILES (one record each) or stdin: one snippet per line, JSON Lines ({"id": ..., "text": ...})
    or NUL-separated (-0). In a pipe, writes JSON Lines {"id", "spans": [{"label", "start", "end",
    "text", "score"}]} with character offsets into the original text; on a terminal, the code with
    the spans highlighted. --redact prints the input with every span replaced by `<LABEL>`. .parquet FILES
    hold one record per row; --output FILE writes the records there (.parquet: Parquet); --ray runs the job
    on a Ray cluster.
    """
    chosen = io.output
    wanted = [part.strip() for value in (labels or []) for part in value.split(",") if part.strip()]
    options = {"aggregate": aggregate.value, "wanted": wanted}
    if redact and (scale.ray or scale.output or io.format_given):
        from bigcode_cli.errors import UsageError

        raise UsageError("--redact prints the input back on stdout, in its own format; it does not go with --ray, "
                         "--output or --format")
    if scale.ray:
        run_on_ray(io=io, choice=choice, scale=scale, task=TOKEN, results=options)
        return
    from bigcode_cli.pipelines.results import Results
    from bigcode_cli.pipelines.tagging import entity_types

    sink = output_file(scale)
    with pipeline(io, TOKEN, choice, offsets=True, columns=scale.columns, sink=sink) as run:
        results = Results.for_task(run.loaded.runner.config, TOKEN, model_name=run.loaded.name, **options)
        styles = {kind: STYLES[i % len(STYLES)] for i, kind in enumerate(entity_types(results.labels))}
        if chosen == "table" and not redact and sink is None:
            _print_legend(styles, results.wanted)
        for chunk in run.chunks(keep_blank=redact):
            if redact:  # every line in its place, blank ones too
                sys.stdout.write("".join(_redacted(record, results.spans(record, scored) if scored is not None else [])
                                         for record, scored in chunk))
                continue
            rows = [(record, results.spans(record, scored), scored.encoded.truncation()) for record, scored in chunk]
            if sink is not None:
                sink.write([tagging_record(*row) for row in rows])
            elif chosen == "jsonl":
                sys.stdout.write(json_for_stream("".join(json_line(tagging_record(*row)) for row in rows), sys.stdout))
            elif chosen == "tsv":
                sys.stdout.write(for_stream("".join(_tsv_lines(*row) for row in rows), sys.stdout))
            else:
                for row in rows:
                    _print_highlighted(*row, styles)


def _tsv_lines(record: Record, spans: list, truncation: dict | None) -> str:
    return "".join(f"{tsv_cell(record.id)}\t{span.label}\t{span.start}\t{span.end}\t{tsv_cell(span.text)}\t"
                   f"{span.score:.4f}\n" for span in spans)


def _redacted(record: Record, spans: list) -> str:
    """The record as it was read, with its spans replaced, made safe for stdout (for_stream)."""
    from bigcode_cli.pipelines.tagging import redact

    text = redact(record.text, spans)
    if record.kind == "json":
        return for_stream(json_line({**record.fields, "text": text}), sys.stdout)
    if record.kind == "nul":
        return for_stream(text + "\0", sys.stdout)
    if record.kind == "file":
        return for_stream(text, sys.stdout)
    # the line's own ending in a pipe ("\r\n" stays, a last line without one gets none); a terminal is shown a
    # plain newline, where the \r would be escaped as text
    ending = "\n" if record.ending and is_terminal(sys.stdout) else record.ending
    return for_stream(text, sys.stdout) + ending


def _print_legend(styles: dict[str, str], wanted: list[str]) -> None:
    from rich.text import Text

    legend = Text("labels: ")
    for kind, style in styles.items():
        if not wanted or kind in wanted:
            legend.append(f" {safe_text(kind)} ", style=style)
            legend.append(" ")
    stdout_console().print(legend)


def _print_highlighted(record: Record, spans: list, truncation: dict | None, styles: dict[str, str]) -> None:
    from rich.rule import Rule
    from rich.text import Text

    from bigcode_cli.pipelines.tagging import split_label

    console = stdout_console()
    marked = not colour_wanted(sys.stdout)  # without colour a span is shown as [LABEL: text]
    note = f" (truncated {truncation['side']})" if truncation else ""
    console.print(Rule(Text(f"{safe_text(str(record.id))}{note}"), align="left", style="dim"))
    code, text, at = record.text.rstrip("\n"), Text(), 0
    for span in spans:  # piece by piece: made safe, a piece can grow, so offsets are not styled after
        if span.start >= len(code):
            break
        text.append(safe_text(code[at:span.start]))
        kind = split_label(span.label)[1]
        if marked:
            text.append(f"[{safe_text(span.label)}: {safe_text(code[span.start:span.end])}]")
        else:
            text.append(safe_text(code[span.start:span.end]), style=styles.get(kind, "reverse"))
        at = min(span.end, len(code))
    text.append(safe_text(code[at:]))
    console.print(text)
