"""Writing output records to files atomically: one file (`--output FILE`, `.parquet` or JSON Lines) or a
directory of part files (`--ray --output DIR`).

Everything is written under a temporary name next to the target and renamed into place only when the
job has finished, so an error or Ctrl-C never leaves a half-written output behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bigcode_cli.choices import OUTPUT_FORMATS
from bigcode_cli.errors import InputError
from bigcode_cli.pipelines.results import json_line
PART_RECORDS = 100_000  # records per part file


def _umask() -> int:
    """The process's file-creation mask (Linux says it in /proc; elsewhere set and put back, on this thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_mode(path: Path, kind: int = stat.S_IFREG) -> int:
    """The permission bits of an output file (or, with `kind` S_IFDIR, directory): what a new one gets under the
    umask (mkstemp's and mkdtemp's are private, 0600 and 0700), and no more than the one of that kind it
    replaces had, so a private file stays private."""
    mode = (0o777 if kind == stat.S_IFDIR else 0o666) & ~_umask()
    try:
        replaced = os.stat(path, follow_symlinks=False)
    except OSError:
        return mode
    return mode & replaced.st_mode if stat.S_IFMT(replaced.st_mode) == kind else mode


def format_of(path: str | Path) -> str:
    """The format a file name asks for: parquet for `.parquet`, else JSON Lines."""
    return "parquet" if str(path).lower().endswith(".parquet") else "jsonl"


class _RecordFile:
    """One output file being written under a temporary name."""

    def __init__(self, path: Path, fmt: str, tables: Any = None, most: int = 0o666) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise InputError(f"unknown output format {fmt!r}; choose {', '.join(OUTPUT_FORMATS)}")
        self.path, self.fmt = path, fmt
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self.temp = Path(name)
        self.handle = os.fdopen(fd, "wb")
        try:
            os.fchmod(fd, output_mode(path) & most)
        except OSError:
            pass  # a file system without modes: the file keeps what it got
        self.parquet: Any = None
        self.tables = tables
        if fmt == "parquet" and tables is None:
            from bigcode_cli.pipelines.parquet import TableMaker

            self.tables = TableMaker()  # one schema for every part of a job: pass theirs

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.fmt == "jsonl":
            self.handle.write("".join(json_line(row) for row in rows).encode("utf-8"))
            return
        table = self.tables.table(rows)
        if self.parquet is None:
            self.parquet = self.tables.pa.parquet.ParquetWriter(self.handle, table.schema)
        self.parquet.write_table(table)

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        elif self.fmt == "parquet" and self.tables is not None:  # no records at all: still a valid, empty file
            from bigcode_cli.pipelines.parquet import result_types

            pa = self.tables.pa
            schema = self.tables.schema or pa.schema([("id", pa.string()), ("truncated", result_types(pa)["truncated"])])
            pa.parquet.write_table(pa.Table.from_pylist([], schema=schema), self.handle)
        self.handle.close()

    def discard(self) -> None:
        try:
            if self.parquet is not None:
                self.parquet.close()  # before its file, or pyarrow complains when it is collected
            self.handle.close()
        except (OSError, ValueError):
            pass  # what is being thrown away cannot be broken further
        finally:
            self.temp.unlink(missing_ok=True)


class OutputFile:
    """`--output FILE`: records appended chunk by chunk, the file appearing complete at `commit()`."""

    def __init__(self, path: str | Path, fmt: str | None = None) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(f"--output {path}: is a directory; give a file name")
        if not self.path.parent.is_dir():
            raise InputError(f"--output {path}: the directory {self.path.parent} does not exist")
        self.file = _RecordFile(self.path, fmt or format_of(self.path))

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append output records."""
        self.file.write(rows)

    def commit(self) -> None:
        """Finish the file and move it into place."""
        self.file.close()
        os.replace(self.file.temp, self.path)

    def discard(self) -> None:
        """Drop what was written (on an error or Ctrl-C)."""
        self.file.discard()


class PartFiles:
    """`--output DIR`: part-00000.jsonl, part-00001.jsonl, ... of at most PART_RECORDS records each, written into a
    temporary directory that becomes DIR at `commit()`. DIR must not exist yet, or be empty."""

    def __init__(self, directory: str | Path, fmt: str, part_records: int = PART_RECORDS) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise InputError(f"unknown output format {fmt!r}; choose {', '.join(OUTPUT_FORMATS)}")
        self.directory = Path(directory)
        if self.directory.exists() and (not self.directory.is_dir() or any(self.directory.iterdir())):
            raise InputError(f"--output {directory}: already exists and is not an empty directory")
        parent = self.directory.absolute().parent
        if not parent.is_dir():
            raise InputError(f"--output {directory}: the directory {parent} does not exist")
        self.fmt, self.part_records = fmt, part_records
        self.mode = output_mode(self.directory, stat.S_IFDIR)  # no more than an empty directory it replaces had
        self.temp = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.", suffix=".tmp", dir=parent))
        self.parts: list[Path] = []
        self.current: _RecordFile | None = None
        self.in_current = 0
        self.tables: Any = None
        if fmt == "parquet":
            from bigcode_cli.pipelines.parquet import TableMaker

            self.tables = TableMaker()

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append output records, starting a new part file every `part_records` records."""
        rows = list(rows)
        while rows:
            if self.current is None or self.in_current >= self.part_records:
                self._finish_part()
                name = f"part-{len(self.parts):05d}.{self.fmt}"
                self.current = _RecordFile(self.temp / name, self.fmt, self.tables, most=self.mode & 0o666)
                self.parts.append(self.temp / name)
                self.in_current = 0
            room = self.part_records - self.in_current
            self.current.write(rows[:room])
            self.in_current += len(rows[:room])
            rows = rows[room:]

    def _finish_part(self) -> None:
        if self.current is not None:
            self.current.close()
            os.replace(self.current.temp, self.current.path)
            self.current = None

    def commit(self) -> list[Path]:
        """Finish the last part and move the directory into place; returns the part files."""
        self._finish_part()  # no records at all: an empty directory
        if self.directory.is_dir():
            self.directory.rmdir()  # empty, checked at the start
        os.chmod(self.temp, self.mode)  # mkdtemp's is private (0700) while the parts are written
        os.replace(self.temp, self.directory)
        return [self.directory / p.name for p in self.parts]

    def discard(self) -> None:
        """Drop everything written so far."""
        if self.current is not None:
            self.current.discard()
        shutil.rmtree(self.temp, ignore_errors=True)
