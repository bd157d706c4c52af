"""Python's cyclic garbage collector while the CLI starts: paused until the model's libraries are imported.

Importing torch (and the model code on it) makes about 290,000 objects that live as long as the process, and
the collector walks them again and again while they are made: 370 collections, three of them full, found
about 7,000 small unreachable objects (import-time tuples, closures and frames; no tensor) and cost 420-540 ms
of a 2.7-3.7 s `import torch` on a 2-core AMD EPYC (benchmarks/startup_gc.py). The console script pauses the
collector before it imports anything (`pause_for_startup`); once the model code is imported (`startup_done`,
called by the model loader), everything alive is frozen out of later collections (`gc.freeze`: those modules,
classes and functions are never freed anyway) and collecting resumes for whatever the command makes from then
on. A command that never gets there (`--help`, a remote `eval`, `finetune`) gets the collector back when the
pause's bound runs out, without freezing anything. Only the console script pauses: a program that imports
bigcode_cli as a library keeps its collector as it set it, and its objects are never frozen.
"""

from __future__ import annotations

import gc
import threading

PAUSE_BOUND_S = 30.0  # the longest the collector stays paused when start-up never reports done

_lock = threading.Lock()
_timer: threading.Timer | None = None


def pause_for_startup(bound_s: float = PAUSE_BOUND_S) -> None:
    """Pause the collector (if it runs) until `startup_done()` or for `bound_s` seconds, whichever comes first."""
    global _timer
    with _lock:
        if _timer is not None or not gc.isenabled():
            return
        gc.disable()
        _timer = threading.Timer(bound_s, _resume, kwargs={"freeze": False})
        _timer.daemon = True
        _timer.name = "bigcode-gc-pause"
        _timer.start()


def startup_done() -> None:
    """The long-lived imports are in: freeze what is alive now and resume collecting, if the start-up paused it."""
    _resume(freeze=True)


def _resume(freeze: bool) -> None:
    global _timer
    with _lock:
        if _timer is None:
            return
        _timer.cancel()
        _timer = None
        if freeze:
            gc.freeze()
        gc.enable()
