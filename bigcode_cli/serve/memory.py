"""Giving memory back to the system after a large request.

A request of a few MB exists several times over while it is handled (the body's bytes, its text, the
parsed JSON, the validated fields, the tokens), all freed once it is answered. glibc's malloc keeps
freed memory in each thread's arena for later use instead of returning it, so without help a server
that once read large requests stays that large. `malloc_trim(0)` returns the free pages of every
arena; other C libraries (musl, macOS) have no such call and this is a no-op there.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

# a request whose text is at least this long (characters, or token ids) is followed by a trim once idle
LARGE_REQUEST = 256 * 1024
# how long the worker waits for the next request before trimming: the answer's own buffers go first
TRIM_AFTER_IDLE_S = 0.5


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library the process already runs on
    except (OSError, AttributeError):
        return None


def resident_mb(pid: int) -> float:
    """A process's resident memory in MB (VmRSS from Linux's /proc): what serve's memory bounds are measured by."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for process {pid}")


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
