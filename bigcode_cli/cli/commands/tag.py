"""`bigcode tag`: token classification of code (secrets, personal data...), for shell pipelines."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Any, Optional

import typer

from bigcode_cli.cli.commands.option_groups import MODEL, with_options
from bigcode_cli.cli.commands.pipeline import (
    PIPELINE,
    json_line,
    run_pipeline,
    tsv_cell,
)
from bigcode_cli.terminal.console import stdout_console
from bigcode_cli.terminal.safe_text import for_stream, json_for_stream, safe_text
from bigcode_cli.pipelines.records import Record

STYLES = ("black on red", "black on green", "black on yellow", "black on cyan", "black on magenta",
          "white on blue", "black on bright_red", "black on bright_green")


class Aggregate(str, Enum):
    none = "none"
    word = "word"


AggregateOpt = Annotated[Aggregate, typer.Option(
    "--aggregate", help="none: one span per tagged token, with the model's own label (B-KEY, I-KEY); "
                        "word: merge B-/I- pieces into one span per entity (KEY) and grow spans to whole words.")]
RedactOpt = Annotated[bool, typer.Option(
    "--redact", help="Print the input back, in its own format, with each span replaced by `<LABEL>`.")]
LabelsOpt = Annotated[Optional[list[str]], typer.Option(
    "--labels", "-l", show_default=False, help="Only these labels (repeat, or separate with commas).")]


@with_options(io=PIPELINE, choice=MODEL)
def tag(
    aggregate: AggregateOpt = Aggregate.word,
    redact: RedactOpt = False,
    labels: LabelsOpt = None,
    io: Any = None,
    choice: Any = None,
) -> None:
    """Tag spans of code with a token-classification model (default: the bundled secrets tagger).

    Reads FILES (one record each) or stdin: one snippet per line, JSON Lines ({"id": ..., "text": ...})
    or NUL-separated (-0). In a pipe, writes JSON Lines {"id", "spans": [{"label", "start", "end",
    "text", "score"}]} with character offsets into the original text; on a terminal, the code with
    the spans highlighted. --redact prints the input with every span replaced by `<LABEL>`.
    """
    chosen = io.output
    wanted = [part.strip() for value in (labels or []) for part in value.split(",") if part.strip()]
    state: dict[str, Any] = {}

    def before(loaded: Any) -> None:
        from bigcode_cli.pipelines.tagging import entity_types

        state["labels"] = loaded.runner.config.labels()
        known = entity_types(state["labels"])
        unknown = [w for w in wanted if w not in known]
        if unknown:
            from bigcode_cli.errors import InputError

            raise InputError(f"--labels {', '.join(unknown)}: model {loaded.name} tags only {', '.join(known) or 'nothing'}")
        state["styles"] = {kind: STYLES[i % len(STYLES)] for i, kind in enumerate(known)}
        if chosen == "table" and not redact:
            _print_legend(state["styles"], wanted)

    def write_chunk(chunk: list[tuple[Record, Any]], loaded: Any) -> None:
        from bigcode_cli.pipelines.tagging import keep_labels, spans_from_tokens, token_predictions

        rows = []
        for record, scored in chunk:
            predictions = token_predictions(scored.logits, state["labels"])
            spans = spans_from_tokens(record.text, scored.encoded.offsets, predictions, aggregate.value)
            rows.append((record, keep_labels(spans, wanted), scored.encoded.truncation()))
        if redact:
            sys.stdout.write(for_stream("".join(_redacted(record, spans) for record, spans, _ in rows), sys.stdout))
        elif chosen == "jsonl":
            sys.stdout.write(json_for_stream("".join(json_line(_record_json(*row)) for row in rows), sys.stdout))
        elif chosen == "tsv":
            sys.stdout.write(for_stream("".join(_tsv_lines(*row) for row in rows), sys.stdout))
        else:
            for row in rows:
                _print_highlighted(*row, state["styles"])

    run_pipeline(io=io, task="token-classification", choice=choice, offsets=True, write_chunk=write_chunk, before=before)


def _record_json(record: Record, spans: list, truncation: dict | None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": record.id}
    data.update((k, v) for k, v in record.fields.items() if k != "id")
    data["spans"] = [dict(span.to_dict(), score=round(span.score, 6)) for span in spans]
    if truncation is not None:
        data["truncated"] = truncation
    return data


def _tsv_lines(record: Record, spans: list, truncation: dict | None) -> str:
    return "".join(f"{tsv_cell(record.id)}\t{span.label}\t{span.start}\t{span.end}\t{tsv_cell(span.text)}\t"
                   f"{span.score:.4f}\n" for span in spans)


def _redacted(record: Record, spans: list) -> str:
    """The record as it was read, with its spans replaced."""
    from bigcode_cli.pipelines.tagging import redact

    text = redact(record.text, spans)
    if record.kind == "json":
        return json_line({**record.fields, "text": text})
    if record.kind == "nul":
        return text + "\0"
    if record.kind == "file":
        return text
    return text + "\n"


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
    note = f" (truncated {truncation['side']})" if truncation else ""
    console.print(Rule(Text(f"{safe_text(str(record.id))}{note}"), align="left", style="dim"))
    code, text, at = record.text.rstrip("\n"), Text(), 0
    for span in spans:  # piece by piece: made safe, a piece can grow, so offsets are not styled after
        if span.start >= len(code):
            break
        text.append(safe_text(code[at:span.start]))
        text.append(safe_text(code[span.start:span.end]), style=styles.get(split_label(span.label)[1], "reverse"))
        at = min(span.end, len(code))
    text.append(safe_text(code[at:]))
    console.print(text)
