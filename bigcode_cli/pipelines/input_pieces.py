"""Cutting input files into pieces of about N records that can be read on their own, anywhere.

So that a Ray job spreads even one large file over all its workers, the driver scans each file once
for record boundaries (newlines, NULs; Parquet row groups from the footer), without parsing, and each
piece is then read where it is scored by the same rules as the whole file (pipelines.records), its
line / record / row numbers counted from where it starts.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from bigcode_cli.pipelines.inputs import is_parquet, read_file_records, splits_into_records
from bigcode_cli.pipelines.records import Columns, Record, read_stream

_SCAN_BYTES = 1 << 20


def _separator_pieces(path: str, name: str, input_format: str, per_piece: int) -> list[dict[str, Any]]:
    # a piece starts after every `per_piece`-th separator; `first` is its first line / record number
    separator = b"\0" if input_format == "nul" else b"\n"
    pieces = []
    start = seen = 0
    offset = 0
    with open(path, "rb") as f:
        while data := f.read(_SCAN_BYTES):
            at = data.find(separator)
            while at >= 0:
                seen += 1
                if seen % per_piece == 0:
                    end = offset + at + 1
                    pieces.append({"offset": start, "length": end - start, "first": seen - per_piece + 1})
                    start = end
                at = data.find(separator, at + 1)
            offset += len(data)
    if offset > start or not pieces:
        pieces.append({"offset": start, "length": offset - start, "first": (seen // per_piece) * per_piece + 1})
    return [dict(p, path=path, name=name, format=input_format) for p in pieces]


def _parquet_pieces(path: str, name: str, columns: Columns) -> list[dict[str, Any]]:
    from bigcode_cli.pipelines.parquet import pyarrow_module

    pa = pyarrow_module()
    try:
        parquet = pa.parquet.ParquetFile(path)
        metadata = parquet.metadata
        if columns.text not in parquet.schema_arrow.names:
            raise ValueError(columns.text)
    except (OSError, ValueError, pa.ArrowException):
        return [{"path": path, "name": name, "format": "parquet", "group": None, "first": 1}]  # read whole: its error
    pieces, first = [], 1
    for group in range(metadata.num_row_groups):
        pieces.append({"path": path, "name": name, "format": "parquet", "group": group, "first": first})
        first += metadata.row_group(group).num_rows
    return pieces or [{"path": path, "name": name, "format": "parquet", "group": None, "first": 1}]


def file_pieces(path: str, name: str, input_format: str, per_piece: int,
                columns: Columns = Columns()) -> list[dict[str, Any]]:
    """The pieces of one file argument (`path` to open, `name` to call it by): one for a whole-file record or an
    unreadable file, one per Parquet row group, else one per `per_piece` lines / NUL-separated records."""
    if not splits_into_records(name, input_format):
        return [{"path": path, "name": name, "format": "file", "first": 0}]
    if is_parquet(name):
        return _parquet_pieces(path, name, columns)
    try:
        return _separator_pieces(path, name, input_format, per_piece)
    except OSError:
        return [{"path": path, "name": name, "format": "file", "first": 0}]  # reading it gives its error record


def read_piece(piece: dict[str, Any], columns: Columns = Columns()) -> Iterator[Record]:
    """The records of one piece, numbered as in the whole file."""
    kind, path, name = piece["format"], piece["path"], piece["name"]
    if kind == "file":
        yield from read_file_records(path, "auto", 0, columns, name=name)
        return
    if kind == "parquet":
        if piece["group"] is None:
            yield from read_file_records(path, "auto", 0, columns, name=name)
            return
        from bigcode_cli.pipelines.parquet import pyarrow_module, row_record

        table = pyarrow_module().parquet.ParquetFile(path).read_row_group(piece["group"])
        for i, row in enumerate(table.to_pylist()):
            yield row_record(row, i, piece["first"] + i, name, columns)
        return
    with open(path, "rb") as f:
        f.seek(piece["offset"])
        data = f.read(piece["length"])
    yield from read_stream(io.BufferedReader(io.BytesIO(data)), kind, name, 0, columns, piece["first"])
