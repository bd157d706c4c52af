"""Ctrl-C while torch is being imported is held back and delivered after the import; one a library
swallowed or turned into another error still ends the loading step as a KeyboardInterrupt.

Each case runs in a fresh interpreter, so the SIGINT handler under test never touches pytest's.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent("""
        import os, signal, sys, time, types
        from bigcode_cli import interrupts
        interrupts.install()
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_a_ctrl_c_during_the_torch_import_waits_for_the_import_to_finish():
    done = _run("""
        fake = types.ModuleType("torch")
        fake.__spec__ = types.SimpleNamespace(_initializing=True)
        sys.modules["torch"] = fake          # torch, half imported
        os.kill(os.getpid(), signal.SIGINT)  # not raised while the import runs
        time.sleep(0.3)
        print("import went on", flush=True)
        fake.__spec__._initializing = False  # the import is done: now the interrupt arrives
        try:
            time.sleep(5)
        except KeyboardInterrupt:
            print("interrupted after the import", flush=True)
            sys.exit(130)
        print("the interrupt was lost")
    """)
    assert done.stdout.splitlines() == ["import went on", "interrupted after the import"], done.stderr
    assert done.returncode == 130


def test_a_ctrl_c_elsewhere_raises_at_once():
    done = _run("""
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    assert done.returncode == 130, done.stderr


def test_a_swallowed_or_mangled_ctrl_c_still_ends_the_step():
    done = _run("""
        outcomes = []
        for mangle in (False, True):
            try:
                with interrupts.surfacing():
                    try:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(5)
                    except KeyboardInterrupt:
                        if mangle:
                            raise ImportError("cannot load module more than once per process")
                        # swallowed, as a library's "Exception ignored in ..." does
                outcomes.append("the step went on")
            except KeyboardInterrupt:
                outcomes.append("interrupt")
        print(outcomes)
        with interrupts.surfacing():
            pass  # no Ctrl-C: nothing raised
        try:
            with interrupts.surfacing():
                raise ImportError("a real error")
        except ImportError as exc:
            print(exc)
    """)
    assert done.stdout.splitlines() == ["['interrupt', 'interrupt']", "a real error"], done.stderr
