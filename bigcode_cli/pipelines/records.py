"""Reading input records for `classify` and `tag`: files, or stdin as lines, JSON Lines or NUL-separated.

Records are read lazily and handed out in bounded chunks, so a pipeline of any length runs in
bounded memory. A record that cannot be used (bad JSON, no text, binary data) is still a record:
it carries an `error` and its line number, and the commands report it without stopping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bigcode_cli.errors import InputError
from bigcode_cli.text.textfile import NotTextError, decode_utf8

INPUT_FORMATS = ("auto", "lines", "jsonl", "nul")
_PEEK_BYTES = 1 << 16


@dataclass
class Record:
    """One input snippet (or the reason it is unusable), with where it came from."""

    index: int  # 0-based position in the input: results are written in this order
    id: Any  # the JSON `id`, the file path, or the 1-based line / record number
    text: str | None
    line: int  # 1-based line (lines, jsonl) or record number (nul); 0 for whole files
    source: str = "<stdin>"
    kind: str = "line"  # how it was read: "line", "json", "nul" or "file"
    fields: dict[str, Any] = field(default_factory=dict)  # the JSON object's fields other than text
    error: str | None = None

    def where(self) -> str:
        """Where the record is, for messages: `<stdin> line 3`, `<stdin> record 2`, `a.py`."""
        if self.kind == "file":
            return self.source
        return f"{self.source} {'record' if self.kind == 'nul' else 'line'} {self.line}"


def _decode(data: bytes) -> str | None:
    """The record's text, or None when its bytes are not text (the one rule: text.textfile.decode_utf8)."""
    try:
        return decode_utf8(data)
    except NotTextError:
        return None


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


def _line_records(stream: IO[bytes], source: str, start: int) -> Iterator[Record]:
    for number, raw in enumerate(stream, 1):
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        text = _decode(raw)
        index = start + number - 1
        if text is None:
            yield Record(index, number, None, number, source, error="binary data (not UTF-8 text)")
        elif not text.strip():
            yield Record(index, number, None, number, source, error="empty line: nothing to read")
        else:
            yield Record(index, number, text, number, source)


def parse_json_record(raw: bytes, index: int, number: int, source: str) -> Record:
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
    record_id = data.get("id", number)
    value = data.pop("text", None)
    if not isinstance(value, str):
        problem = "has no \"text\" field" if value is None else "has a \"text\" that is not a string"
        return Record(index, record_id, None, number, source, "json", data, error=f"the record {problem}")
    if not value.strip():
        return Record(index, record_id, None, number, source, "json", data, error="empty text: nothing to read")
    return Record(index, record_id, value, number, source, "json", data)


def _jsonl_records(stream: IO[bytes], source: str, start: int) -> Iterator[Record]:
    index = start
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue  # blank lines separate nothing in JSON Lines
        yield parse_json_record(raw.strip(), index, number, source)
        index += 1


def _nul_records(stream: IO[bytes], source: str, start: int, block: int = 1 << 16) -> Iterator[Record]:
    read = getattr(stream, "read1", stream.read)  # read1 returns what has arrived instead of waiting for a full block
    number = 0

    def record(raw: bytes) -> Record:
        text = _decode(raw)
        index = start + number - 1
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
                start: int = 0) -> Iterator[Record]:
    """Records from a binary stream in `input_format` (auto peeks at the first 64 KiB)."""
    if input_format not in INPUT_FORMATS:
        raise InputError(f"unknown input format {input_format!r}; choose {', '.join(INPUT_FORMATS)}")
    if input_format == "auto":
        peek = getattr(stream, "peek", None)
        head = peek(_PEEK_BYTES)[:_PEEK_BYTES] if peek is not None else b""
        input_format = detect_format(head)
    if input_format == "nul":
        return _nul_records(stream, source, start)
    if input_format == "jsonl":
        return _jsonl_records(stream, source, start)
    return _line_records(stream, source, start)


def _file_record(path: str, index: int) -> Record:
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        return Record(index, path, None, 0, path, "file", error="is a directory, not a file")
    except FileNotFoundError:
        return Record(index, path, None, 0, path, "file", error="no such file")
    except OSError as exc:
        return Record(index, path, None, 0, path, "file", error=exc.strerror or str(exc))
    text = _decode(data)
    if text is None:
        return Record(index, path, None, 0, path, "file", error="binary file (not UTF-8 text)")
    if not text.strip():
        return Record(index, path, None, 0, path, "file", error="empty file: nothing to read")
    return Record(index, path, text, 0, path, "file")


def read_records(sources: Iterable[str], stdin: IO[bytes], input_format: str = "auto") -> Iterator[Record]:
    """Records in input order: each file argument is one record (id = its path), `-` or none reads stdin."""
    sources = list(sources) or ["-"]
    index = 0
    for source in sources:
        if source == "-":
            for record in read_stream(stdin, input_format, start=index):
                index += 1
                yield record
        else:
            yield _file_record(source, index)
            index += 1


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
