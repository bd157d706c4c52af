"""What `classify` and `tag` share as commands: their pipeline options, the output format choice,
error records, and the read -> batch -> write loop that flushes after every chunk (`pipeline`).

No torch at import time: the model is opened inside `pipeline`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Optional

import typer

from bigcode_cli import choices
from bigcode_cli.cli.commands.option_groups import OptionGroup, option
from bigcode_cli.cli.commands.options import choice_enum
from bigcode_cli.terminal.console import print_error
from bigcode_cli.errors import InputError
from bigcode_cli.pipelines.records import Columns, Record
from bigcode_cli.pipelines.results import json_line  # noqa: F401  (re-exported for classify and tag)


if TYPE_CHECKING:
    from bigcode_cli.store.loader import LoadedModel
    from bigcode_cli.terminal.model_choice import ModelChoice


OutputFormat = choice_enum("OutputFormat", choices.RESULT_FORMATS)
InputFormat = choice_enum("InputFormat", choices.INPUT_FORMATS)
Truncate = choice_enum("Truncate", choices.TRUNCATE_SIDES)


FilesArg = Annotated[Optional[list[str]], typer.Argument(
    help="Files to read, one record each (id = path), except .parquet files and, with an explicit --input-format, "
         "any file: one record per row / line; '-' or none reads records from stdin.", show_default=False)]
FormatOpt = Annotated[Optional[OutputFormat], typer.Option(
    "--format", help="Output format (default: table on a terminal, JSON Lines otherwise).", show_default=False)]
InputFormatOpt = Annotated[InputFormat, typer.Option(
    "--input-format", help="How stdin (and, when given, each FILE) is split into records; auto: NUL-separated if it holds NUL bytes, "
                           "JSON Lines if it starts with '{', else one snippet per line.")]
NulOpt = Annotated[bool, typer.Option("-0", "--null", help="stdin records are NUL-separated (same as --input-format nul).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Snippets per forward pass.")]
TruncateOpt = Annotated[Truncate, typer.Option(
    "--truncate", help="Which end to cut from a snippet longer than the context (reported in its record).")]


def output_format(chosen: Any) -> str:
    """The format asked for, else a table on a terminal and JSON Lines in a pipe."""
    if chosen is not None:
        return chosen.value
    return "table" if getattr(sys.stdout, "isatty", lambda: False)() else "jsonl"


def stdin_format(input_format: Any, nul: bool) -> str:
    """--input-format, with -0 as a shorthand for nul (the two must not disagree)."""
    if nul and input_format not in (InputFormat.auto, InputFormat.nul):
        raise typer.BadParameter(f"-0 reads NUL-separated records; it contradicts --input-format {input_format.value}",
                                 param_hint="-0")
    return "nul" if nul else input_format.value


def report_bad_record(record: Record, as_json: bool) -> None:
    """One error record on stderr: JSON when the results are JSON Lines, else an `error:` line."""
    if as_json:
        data = {"id": record.id, "source": record.source, "line": record.line or None, "error": record.error}
        sys.stderr.write(json.dumps(data, ensure_ascii=False) + "\n")
        sys.stderr.flush()
    elif getattr(sys.stderr, "isatty", lambda: False)():
        print_error(f"{record.where()}: {record.error}")
    else:  # one unwrapped line per record, whatever its length, for the tools reading it
        sys.stderr.write(f"error: {record.where()}: {record.error}\n")
        sys.stderr.flush()


def tsv_cell(value: Any) -> str:
    """A value as one TSV cell: tabs, newlines and backslashes escaped."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class PipelineIO(NamedTuple):
    """Where records come from and how results go out: FILES, --format, --input-format/-0, --batch-size, --truncate."""

    files: list[str] | None
    output: str  # "jsonl" | "tsv" | "table"
    input_format: str  # "auto" | "lines" | "jsonl" | "nul"
    batch_size: int
    truncate: str  # "left" | "right"
    format_given: bool = False  # --format was on the command line (`output` is not just the default)


def _pipeline_io(*, files: list[str] | None, fmt: Any, batch_size: int, truncate: Any, input_format: Any,
                 nul: bool) -> PipelineIO:
    return PipelineIO(files, output_format(fmt), stdin_format(input_format, nul), batch_size, truncate.value,
                      fmt is not None)


PIPELINE = OptionGroup(
    (
        option("files", FilesArg, None),
        option("fmt", FormatOpt, None),
        option("batch_size", BatchSizeOpt, 32),
        option("truncate", TruncateOpt, Truncate.right),
        option("input_format", InputFormatOpt, InputFormat.auto),
        option("nul", NulOpt, False),
    ),
    _pipeline_io,
)


class PipelineRun:
    """An opened pipeline: the task's model, and its records scored a chunk at a time, in input order."""

    def __init__(self, io: PipelineIO, loaded: LoadedModel, offsets: bool, columns: Columns) -> None:
        from bigcode_cli.pipelines.batching import Batcher

        self.io = io
        self.loaded = loaded
        self.columns = columns
        self.batcher = Batcher(loaded.runner, loaded.tokenizer, batch_size=io.batch_size, truncate=io.truncate,
                               offsets=offsets)
        self.failed = self.total = 0

    def chunks(self, keep_blank: bool = False) -> Iterator[list[tuple[Record, Any]]]:
        """Each chunk's good records with their results; bad ones are reported on stderr as they come. Whatever
        the caller writes for a chunk is flushed before the next one is read. `keep_blank`: blank lines of lines
        input come in their place, as (a `blank` record, None); else they are skipped, as no records."""
        from bigcode_cli.pipelines.batching import stream
        from bigcode_cli.pipelines.inputs import read_records

        records = read_records(self.io.files or [], getattr(sys.stdin, "buffer", None), self.io.input_format,
                               self.columns, keep_blank=keep_blank)
        for chunk in stream(records, self.batcher):
            good = []
            for record, result in chunk:
                if record.blank:
                    good.append((record, None))
                    continue
                self.total += 1
                if result is None:
                    self.failed += 1
                    report_bad_record(record, self.io.output == "jsonl")
                else:
                    good.append((record, result))
            yield good
            sys.stdout.flush()  # results as they come; a reader gone (`| head`) ends the run here, quietly


@contextlib.contextmanager
def pipeline(io: PipelineIO, task: str, choice: ModelChoice, *, offsets: bool, columns: Columns = Columns(),
             sink: Any = None) -> Iterator[PipelineRun]:
    """Open the task's model for the records of `io`; the caller reads `chunks()` and writes each one.

    At the end an InputError (exit 1) says how many records failed. `sink` (an --output file the caller
    writes to) is committed when every record went through and discarded on an error or Ctrl-C.
    """
    try:
        files = io.files
        if (not files or "-" in files) and sys.stdin is None:  # started with stdin closed (`<&-`)
            raise InputError("cannot read standard input (it is closed): give FILES or pipe records in")
        if not files and getattr(sys.stdin, "isatty", lambda: False)():
            raise InputError("no input: pass FILES, or pipe snippets into stdin ('-' reads a terminal anyway)")
        run = PipelineRun(io, choice.open(task), offsets, columns)
        yield run
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    if sink is not None:
        sink.commit()
    if run.failed:
        raise InputError(f"{run.failed} of {run.total} records could not be processed (see the error records above)")
