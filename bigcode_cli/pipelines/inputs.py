"""The records of the command line's inputs: a file argument is one record, except a `.parquet` file (one
record per row, pipelines.parquet) or any file when the input format is given explicitly (split like
stdin, pipelines.records); `-` or no argument reads stdin."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO

from bigcode_cli.pipelines.parquet import read_parquet_records
from bigcode_cli.pipelines.records import Columns, Record, file_record, read_stream


def _split_file_records(path: str, input_format: str, start: int, columns: Columns, name: str,
                        keep_blank: bool = False) -> Iterator[Record]:
    """The records of one file read like stdin (Parquet by its suffix); an unreadable file is one error record."""
    if is_parquet(name):
        yield from read_parquet_records(path, start, columns, name)
        return
    try:
        stream = open(path, "rb")
    except OSError:
        yield file_record(path, start, name)  # the same error record a whole-file read gives
        return
    with stream:
        yield from read_stream(stream, input_format, name, start, columns, keep_blank=keep_blank)


def is_parquet(path: str) -> bool:
    """Whether a file argument is read as a Parquet table (by its suffix)."""
    return path.lower().endswith(".parquet")


def splits_into_records(path: str, input_format: str) -> bool:
    """Whether a file argument holds many records (Parquet, or an explicit --input-format) or is one."""
    return is_parquet(path) or input_format != "auto"


def read_file_records(path: str, input_format: str, start: int, columns: Columns = Columns(),
                      name: str | None = None, keep_blank: bool = False) -> Iterator[Record]:
    """The records of one file argument, numbered from `start`; `name` (default: `path`) is what they call it."""
    name = name or path
    if splits_into_records(name, input_format):
        return _split_file_records(path, input_format, start, columns, name, keep_blank)
    return iter([file_record(path, start, name)])


def read_records(sources: Iterable[str], stdin: IO[bytes], input_format: str = "auto",
                 columns: Columns = Columns(), keep_blank: bool = False) -> Iterator[Record]:
    """Records in input order: a file argument is one record (id = its path) unless it splits into many
    (`.parquet`, or an explicit input format); `-` or none reads stdin. `keep_blank`: read_stream's."""
    sources = list(sources) or ["-"]
    index = 0
    for source in sources:
        stream = (read_stream(stdin, input_format, start=index, columns=columns, keep_blank=keep_blank)
                  if source == "-" else read_file_records(source, input_format, index, columns, keep_blank=keep_blank))
        for record in stream:
            index += 1
            yield record


