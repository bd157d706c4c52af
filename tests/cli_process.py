"""The CLI as a child process, the way a shell runs it; never left running after the test that started it."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any


def command(*args: Any) -> list[str]:
    """`python -m bigcode_cli ARGS...`, with every argument as text."""
    return [sys.executable, "-m", "bigcode_cli", *map(str, args)]


@contextlib.contextmanager
def running(*args: Any, **popen: Any) -> Iterator[subprocess.Popen]:
    """Start `bigcode ARGS...` (stdout and stderr piped unless given); kill it on the way out if it still runs."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen(command(*args), **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def on_a_terminal(args: list[Any], env: dict[str, str], stdin: bytes | None = None, *, limit_s: float = 120) -> str:
    """Run `bigcode ARGS...` with stdout and stderr on a pseudo-terminal and return all it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command(*args), stdout=follower, stderr=follower, env=env,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    try:
        if stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the other side closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        os.close(leader)
    return b"".join(chunks).decode("utf-8", errors="replace")
