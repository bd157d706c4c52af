"""Reading input records for `classify` and `tag`: a whole file, or a stream as lines, JSON Lines or
NUL-separated (file arguments, Parquet included, are dispatched by pipelines.inputs).

Records are read lazily and handed out in bounded chunks, so a pipeline of any length runs in
bounded memory. A record that cannot be used (bad JSON, no text, binary data) is still a record:
it carries an `error` and its line number, and the commands report it without stopping.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bigcode_cli.choices import INPUT_FORMATS
from bigcode_cli.errors import InputError
from bigcode_cli.text.textfile import NotTextError, check_unicode, decode_utf8

_PEEK_BYTES = 1 << 16


@dataclass
class Record:
    """One input snippet (or the reason it is unusable), with where it came from."""

    index: int  # 0-based position in the input: results are written in this order
    id: Any  # the JSON `id`, the file path, or the 1-based line / record number
    text: str | None
    line: int  # 1-based line (lines, jsonl) or record number (nul); 0 for whole files
    source: str = "<stdin>"
    kind: str = "line"  # how it was read: "line", "json", "nul", "row" (Parquet) or "file"
    fields: dict[str, Any] = field(default_factory=dict)  # the JSON object's fields other than text
    error: str | None = None
    ending: str = ""  # a line's own terminator as read ("\n", "\r\n"; at the end of the input "\r" or "")
    blank: bool = False  # a blank line kept in place (read_stream's keep_blank): text to print back, not a record

    def where(self) -> str:
        """Where the record is, for messages: `<stdin> line 3`, `<stdin> record 2`, `a.py`."""
        if self.kind == "file":
            return self.source
        unit = {"nul": "record", "row": "row"}.get(self.kind, "line")
        return f"{self.source} {unit} {self.line}"


def _decode(data: bytes) -> str | None:
    """The record's text, or None when its bytes are not text (the one rule: text.textfile.decode_utf8)."""
    try:
        return decode_utf8(data)
    except NotTextError:
        return None


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _check_strings(value: Any) -> None:
    """InputError when a string anywhere in a JSON value (keys included) is not valid Unicode."""
    if isinstance(value, str):
        check_unicode(value, "has a string that")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def detect_format(head: bytes) -> str:
    """Guess the stdin format from its first bytes: NUL anywhere -> nul; a first line that is a JSON
    object (or, cut off by the peek, starts like one: `{"`) -> jsonl; else lines (code often starts with `{`)."""
    if b"\0" in head:
        return "nul"
    lines = head.split(b"\n")
    for number, raw in enumerate(lines):
        if not raw.strip():
            continue
        if number == len(lines) - 1:  # the peek may have cut this line short
            return "jsonl" if raw.lstrip().startswith(b'{"') else "lines"
        try:
            return "jsonl" if isinstance(json.loads(raw), dict) else "lines"
        except (ValueError, UnicodeDecodeError):
            return "lines"
    return "lines"


def _line_records(stream: IO[bytes], source: str, start: int, first: int = 1,
                  keep_blank: bool = False) -> Iterator[Record]:
    """One record per line; a blank line is none (it separates nothing, as in JSON Lines), or with `keep_blank` a
    `blank` Record holding it (for --redact, which prints the input back)."""
    index = start
    for number, raw in enumerate(stream, first):
        ending = next((end for end in (b"\r\n", b"\n", b"\r") if raw.endswith(end)), b"")  # \r alone: the input's end
        raw = raw[: len(raw) - len(ending)]
        text = _decode(raw)
        if text is not None and not text.strip():
            if not keep_blank:
                continue
            record = Record(index, number, text, number, source, blank=True)
        elif text is None:
            record = Record(index, number, None, number, source, error="binary data (not UTF-8 text)")
        else:
            record = Record(index, number, text, number, source)
        record.ending = ending.decode()
        index += 1
        yield record


@dataclass(frozen=True)
class Columns:
    """Which field of a JSON Lines record or column of a Parquet file holds the text, and which the id."""

    text: str = "text"
    id: str = "id"


def parse_json_record(raw: bytes, index: int, number: int, source: str, columns: Columns = Columns()) -> Record:
    """One JSON Lines record: an object with a string `text`; `id` defaults to the line number."""
    text = _decode(raw)
    if text is None:
        return Record(index, number, None, number, source, "json", error="binary data (not UTF-8 text)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Record(index, number, None, number, source, "json", error=f"bad JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(data, dict):
        return Record(index, number, None, number, source, "json", error="a JSON Lines record must be an object")
    if _ESCAPED_SURROGATE.search(text):  # the only way a record of UTF-8 bytes gets a lone surrogate
        try:
            _check_strings(data)
        except InputError as exc:
            return Record(index, number, None, number, source, "json", error=f"the record {exc}")
    record_id = data.get(columns.id, number)
    value = data.pop(columns.text, None)
    if not isinstance(value, str):
        problem = f"has no \"{columns.text}\" field" if value is None else f"has a \"{columns.text}\" that is not a string"
        return Record(index, record_id, None, number, source, "json", data, error=f"the record {problem}")
    if not value.strip():
        return Record(index, record_id, None, number, source, "json", data, error="empty text: nothing to read")
    return Record(index, record_id, value, number, source, "json", data)


def _jsonl_records(stream: IO[bytes], source: str, start: int, columns: Columns, first: int = 1) -> Iterator[Record]:
    index = start
    for number, raw in enumerate(stream, first):
        if not raw.strip():
            continue  # blank lines separate nothing in JSON Lines
        yield parse_json_record(raw.strip(), index, number, source, columns)
        index += 1


def _nul_records(stream: IO[bytes], source: str, start: int, first: int = 1, block: int = 1 << 16) -> Iterator[Record]:
    read = getattr(stream, "read1", stream.read)  # read1 returns what has arrived instead of waiting for a full block
    number = first - 1

    def record(raw: bytes) -> Record:
        text = _decode(raw)
        index = start + number - first
        if text is None:
            return Record(index, number, None, number, source, "nul", error="binary data (not UTF-8 text)")
        if not text.strip():
            return Record(index, number, None, number, source, "nul", error="empty record: nothing to read")
        return Record(index, number, text, number, source, "nul")

    pending = b""
    while data := read(block):
        *complete, pending = (pending + data).split(b"\0")
        for raw in complete:
            number += 1
            yield record(raw)
    if pending:  # the last record may end without a NUL
        number += 1
        yield record(pending)


def read_stream(stream: IO[bytes], input_format: str = "auto", source: str = "<stdin>",
                start: int = 0, columns: Columns = Columns(), first: int = 1, keep_blank: bool = False) -> Iterator[Record]:
    """Records from a binary stream in `input_format` (auto peeks at the first 64 KiB); the first one is
    line / record number `first` (a piece of a file read on its own starts further in). `keep_blank`: blank
    lines of lines input come as `blank` Records in their place."""
    if input_format not in INPUT_FORMATS:
        raise InputError(f"unknown input format {input_format!r}; choose {', '.join(INPUT_FORMATS)}")
    if input_format == "auto":
        peek = getattr(stream, "peek", None)
        head = peek(_PEEK_BYTES)[:_PEEK_BYTES] if peek is not None else b""
        input_format = detect_format(head)
    if input_format == "nul":
        return _nul_records(stream, source, start, first)
    if input_format == "jsonl":
        return _jsonl_records(stream, source, start, columns, first)
    return _line_records(stream, source, start, first, keep_blank)


def file_record(path: str, index: int, name: str | None = None) -> Record:
    """A whole file as one record (id and source: `name`, default `path`), or the reason it cannot be read."""
    name = name or path
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        return Record(index, name, None, 0, name, "file", error="is a directory, not a file")
    except FileNotFoundError:
        return Record(index, name, None, 0, name, "file", error="no such file")
    except OSError as exc:
        return Record(index, name, None, 0, name, "file", error=exc.strerror or str(exc))
    text = _decode(data)
    if text is None:
        return Record(index, name, None, 0, name, "file", error="binary file (not UTF-8 text)")
    if not text.strip():
        return Record(index, name, None, 0, name, "file", error="empty file: nothing to read")
    return Record(index, name, text, 0, name, "file")


def chunks(records: Iterable[Record], first: int, largest: int) -> Iterator[list[Record]]:
    """Lists of consecutive records, `first` long at first and doubling up to `largest`.

    Small first chunks make the first results appear quickly; the bound keeps memory flat.
    """
    size = max(1, first)
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
            size = min(size * 2, max(largest, first))
    if chunk:
        yield chunk
