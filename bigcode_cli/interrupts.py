"""Ctrl-C (and SIGTERM) that neither torch's import nor any library can lose or turn into a crash.

A SIGINT in the middle of `import torch` is not safe to raise: cut short inside torch's C++ start-up,
the process aborts (exit -6) or dies by the signal with nothing said (-2), and elsewhere in the import
the KeyboardInterrupt is swallowed ("Exception ignored in ...") or comes back as an ImportError
("cannot load module more than once per process"). So the CLI's SIGINT handler, installed first thing,
holds a Ctrl-C back while torch is being imported and delivers it the moment the import is done
(within 20 ms); everywhere else it raises KeyboardInterrupt as Python's own handler does. `surfacing`
makes sure a Ctrl-C during a library-heavy step (loading a model) ends that step as a
KeyboardInterrupt, whatever a library did with it on the way. SIGTERM takes the same path, but ends the
process (SystemExit 130) rather than the current step: without a handler it would kill the process on the
spot, leaving an --in-place edit's temporary file behind.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HELD_BACK_WHILE_IMPORTING = ("torch",)  # top-level packages whose import must not be cut short

_received = 0
_held_back = False


def install() -> None:
    """Handle Ctrl-C and SIGTERM from now on (main thread only; a handler someone else installed is left alone)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigint)


def received() -> int:
    """How many Ctrl-C this process has had since `install` (a held-back one counts again when delivered)."""
    return _received


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _received
    _received += 1
    if _importing():
        _deliver_after_import(signum)
        return
    if signum == signal.SIGTERM:
        # the process is asked to end, not the current step (the REPL survives a KeyboardInterrupt): unwind
        # everything (temporary files go, as for Ctrl-C) and exit 130, as an interrupted command does
        raise SystemExit(130)
    raise KeyboardInterrupt


def _importing() -> bool:
    """Whether one of HELD_BACK_WHILE_IMPORTING is being imported right now."""
    for name in HELD_BACK_WHILE_IMPORTING:
        spec = getattr(sys.modules.get(name), "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False):
            return True
    return False


def _deliver_after_import(signum: int) -> None:
    """Simulate the signal again, from a watcher thread, as soon as the import has finished."""
    global _held_back
    if _held_back:
        return
    _held_back = True

    def watch() -> None:
        global _held_back
        while _importing():
            time.sleep(0.02)
        _held_back = False
        _thread.interrupt_main(signum)

    threading.Thread(target=watch, name="bigcode-held-interrupt", daemon=True).start()


@contextmanager
def surfacing() -> Iterator[None]:
    """Run a library-heavy step; a Ctrl-C during it leaves it as a KeyboardInterrupt, whatever the libraries did."""
    before = _received
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception:
        if _received != before:  # the error is the interrupt's doing
            raise KeyboardInterrupt from None
        raise
    if _received != before and not _held_back:  # swallowed on the way
        raise KeyboardInterrupt
