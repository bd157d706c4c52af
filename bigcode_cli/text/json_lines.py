"""JSON Lines files the user gives us (fine-tuning data, samples, problems): one object per line, errors by line."""

from __future__ import annotations

import json
from typing import Any

from bigcode_cli.errors import InputError
from bigcode_cli.text.textfile import read_text


def json_objects(path: str, *, complete_lines_only: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of the file at `path` (`-` for stdin), read by the one rule
    for what is text; a line that is not a JSON object is an InputError naming it. `complete_lines_only` skips a
    last line without its newline (a file another process was cut off while writing)."""
    lines = read_text(path).split("\n")
    if complete_lines_only or not lines[-1].strip():
        lines = lines[:-1]  # "" after the last newline, or the unfinished line
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {number}: bad JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path} line {number}: not a JSON object")
        found.append((number, record))
    return found
