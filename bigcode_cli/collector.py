"""Python's cyclic garbage collector while the CLI starts: paused until the model's libraries are imported.

Importing torch and the model code makes a few hundred thousand objects that live as long as the process, and
the collector walks them again and again while they are made, finding almost nothing to free (README,
"End to end": the counts and what they cost). So the console script pauses the collector before it imports
anything (`pause_for_startup`). Once torch and the model code are in (`startup_done`, called by the model
loader and by finetune, before any weights exist), every object the collector tracks is frozen out of later
collections (`gc.freeze`) and collecting resumes for whatever the command makes from then on. What is frozen
is the imported modules, classes and functions, never freed anyway, the few objects the command made before
loading (its options, its input text), and the import-time cycles no longer reachable (about 7,000 small
tuples, closures and frames, no tensor), which a collection first would free at the price of one full pass
(240-350 ms measured), most of what the pause saves. A command that never gets there (`--help`, `eval`
against a server, `--ray` pipelines) gets the collector back, nothing frozen, when the pause's bound runs out,
and a child forked during the pause gets it back at once. Only the console script pauses: a program that
imports bigcode_cli as a library keeps its collector as it set it, and nothing of it is frozen.
"""

from __future__ import annotations

import gc
import os
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
        timer = threading.Timer(bound_s, _resume, kwargs={"freeze": False})
        timer.daemon = True
        timer.name = "bigcode-gc-pause"
        gc.disable()
        _timer = timer
        timer.start()


def startup_done() -> None:
    """The long-lived imports are in: freeze what is tracked now and resume collecting, if the start-up paused it."""
    _resume(freeze=True)


def _resume(freeze: bool) -> None:
    global _timer
    with _lock:
        if _timer is None:
            return
        try:
            _timer.cancel()
            if freeze:
                gc.freeze()
        finally:
            gc.enable()
            _timer = None


def _after_fork_in_child() -> None:
    """A forked child has no pause timer (threads do not survive fork): it collects from the start."""
    global _timer, _lock
    _lock = threading.Lock()  # the parent may have held it while forking
    if _timer is not None:
        _timer = None
        gc.enable()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
