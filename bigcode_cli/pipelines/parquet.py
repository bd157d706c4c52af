"""Parquet in and out: rows of a table as input records, output records as a table (pyarrow).

A row is one record: its text column (default `text`) is the snippet, its id column (default `id`,
else the 1-based row number) the id, the other columns pass through like a JSON record's fields.
Output records keep fixed Arrow types for the result columns (`scores` a map, `spans` a list of
structs), so every part file of a job has one schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bigcode_cli.errors import InputError
from bigcode_cli.pipelines.records import Columns, Record

if TYPE_CHECKING:
    import pyarrow as pa

_READ_ROWS = 4096  # rows decoded at a time: memory stays bounded whatever the file's size
INSTALL_HINT = "Parquet needs pyarrow: pip install 'bigcode-cli[ray]' (or pip install pyarrow)"


def pyarrow_module():
    """pyarrow with its Parquet module, or an InputError saying what to install."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return pyarrow


def _file_error(path: str, index: int, message: str) -> Record:
    return Record(index, path, None, 0, path, "file", error=message)


def row_record(row: dict[str, Any], index: int, number: int, source: str, columns: Columns) -> Record:
    """One table row (column -> value) as a record, by the same rules as a JSON Lines record."""
    fields = dict(row)
    record_id = fields.get(columns.id)
    record_id = number if record_id is None else record_id
    value = fields.pop(columns.text, None)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8") if b"\0" not in value else None
        except UnicodeDecodeError:
            value = None
        if value is None:
            return Record(index, record_id, None, number, source, "row", fields, error="binary data (not UTF-8 text)")
    if not isinstance(value, str):
        problem = "is null" if value is None else "is not a string"
        return Record(index, record_id, None, number, source, "row", fields, error=f"the {columns.text!r} value {problem}")
    if not value.strip():
        return Record(index, record_id, None, number, source, "row", fields, error="empty text: nothing to read")
    return Record(index, record_id, value, number, source, "row", fields)


def read_parquet_records(path: str, start: int, columns: Columns = Columns(), name: str | None = None) -> Iterator[Record]:
    """The rows of a Parquet file as records numbered from `start`; an unreadable file is one error record.
    `name` (default: `path`) is what the records call the file."""
    pa = pyarrow_module()
    source, path = name or path, path
    try:
        table = pa.parquet.ParquetFile(path)
    except FileNotFoundError:
        yield _file_error(source, start, "no such file")
        return
    except IsADirectoryError:
        yield _file_error(source, start, "is a directory, not a file")
        return
    except (OSError, pa.ArrowException) as exc:
        yield _file_error(source, start, f"not a readable Parquet file ({str(exc).splitlines()[0]})")
        return
    names = table.schema_arrow.names
    if columns.text not in names:
        yield _file_error(source, start, f"no column {columns.text!r} (columns: {', '.join(names)}); "
                                       "choose the text column with --text-column")
        return
    index, number = start, 0
    for batch in table.iter_batches(batch_size=_READ_ROWS):
        for row in batch.to_pylist():
            number += 1
            yield row_record(row, index, number, source, columns)
            index += 1


def result_types(pa: Any) -> dict[str, Any]:
    """The Arrow type of each result column the commands write."""
    span = pa.struct([("label", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("text", pa.string()),
                      ("score", pa.float64())])
    return {
        "label": pa.string(),
        "score": pa.float64(),
        "scores": pa.map_(pa.string(), pa.float64()),
        "labels": pa.list_(pa.string()),
        "spans": pa.list_(span),
        "truncated": pa.struct([("side", pa.string()), ("tokens", pa.int64()), ("kept", pa.int64())]),
    }


class TableMaker:
    """Output records -> Arrow tables of one schema: result columns typed, the others inferred from the first rows."""

    def __init__(self) -> None:
        self.pa = pyarrow_module()
        self.schema: pa.Schema | None = None

    def _schema(self, rows: list[dict[str, Any]]) -> pa.Schema:
        pa = self.pa
        known = result_types(pa)
        names = list(dict.fromkeys(key for row in rows for key in row))
        if "truncated" not in names:
            names.append("truncated")  # a later record may be cut to fit even when none of the first was
        others = [n for n in names if n not in known]
        inferred = pa.Table.from_pylist([{n: row.get(n) for n in others} for row in rows]).schema if others else None
        fields = []
        for name in names:
            kind = known.get(name) or inferred.field(name).type
            fields.append(pa.field(name, pa.string() if pa.types.is_null(kind) else kind))
        return pa.schema(fields)

    def table(self, rows: list[dict[str, Any]]) -> pa.Table:
        """One table of `rows`; a column the first rows did not have, or a value of another type, is an InputError."""
        pa = self.pa
        if self.schema is None:
            self.schema = self._schema(rows)
        extra = {key for row in rows for key in row} - set(self.schema.names)
        if extra:
            raise InputError(f"Parquet output needs one set of columns, but a later record has {', '.join(sorted(extra))}; "
                             "write JSON Lines instead")
        try:
            return pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputError(f"cannot write these records as Parquet ({str(exc).splitlines()[0]}); "
                             "write JSON Lines instead") from None
