"""Taking a file lock another bigcode process may hold: say what we are waiting for, and stop waiting after a while.

Writes to the cache (a pull, an import, a removal of one model; a quantized copy) take turns through one
lock file each. A process that finds the lock held says so (through `notice`, when the caller shows
notices) and gives up with a StoreError after WAIT_S seconds instead of waiting silently for ever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bigcode_cli.errors import StoreError

Notice = Callable[[str], None]  # shows one line to the user (the CLI's print_notice)
WAIT_S = 600.0  # long enough for another process to finish copying a big checkpoint, short of "for ever"


@contextmanager
def holding(path: Path, what: str, notice: Notice | None = None) -> Iterator[None]:
    """Hold the lock file `path`, which guards `what` (a model's name); StoreError after WAIT_S seconds of waiting."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if notice is not None:
            notice(f"waiting for another bigcode process that is writing or removing {what} (it holds {path}); "
                   f"giving up after {WAIT_S:.0f} s")
        try:
            lock.acquire(timeout=WAIT_S)
        except Timeout:
            raise StoreError(f"gave up after {WAIT_S:.0f} s waiting for another bigcode process to finish with {what} "
                             f"(it holds {path}); try again once it is done") from None
    try:
        yield
    finally:
        lock.release()
