"""The one place a closed stdout is handled: `| head` ends the program quietly with exit code 0.

While a command runs, `sys.stdout` is a thin guard around the real stream. The first write or
flush that fails with EPIPE points file descriptor 1 at /dev/null (so nothing buffered, and not the
interpreter's final flush, can fail again; the recipe of the Python docs' note on SIGPIPE) and raises
`StdoutClosed`. That is a SystemExit, so it passes through libraries' `except Exception` and their
own broken-pipe handling (which only looks for BrokenPipeError) up to the CLI, which exits 0.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


class StdoutClosed(SystemExit):
    """Whoever read stdout went away: stop, quietly, with exit code 0."""

    def __init__(self) -> None:
        super().__init__(0)


def _silence(stream: TextIO) -> None:
    """Point the stream's file descriptor at /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real descriptor (a test's capture): nothing to silence
        pass


class GuardedStdout:
    """A text stream that turns EPIPE into StdoutClosed; everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream

    def _closed(self) -> StdoutClosed:
        _silence(self.wrapped)
        return StdoutClosed()

    def write(self, text: str) -> int:
        try:
            return self.wrapped.write(text)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            raise self._closed() from None

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            raise self._closed() from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[None]:
    """Guard sys.stdout for the duration; everything written in it is flushed before it ends."""
    original = sys.stdout
    if original is None or isinstance(original, GuardedStdout):
        yield
        return
    guard = GuardedStdout(original)
    sys.stdout = guard  # type: ignore[assignment]
    try:
        yield
        guard.flush()
    finally:
        if sys.stdout is guard:
            sys.stdout = original
