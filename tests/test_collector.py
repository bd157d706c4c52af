"""The garbage collector's pause while the CLI starts (bigcode_cli.collector), each case in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny"

REPORT = "import gc, json, sys; print(json.dumps({'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count(), " \
         "'torch': 'torch' in sys.modules}))"


def _state(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code + "\n" + REPORT], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_paused_until_the_model_code_is_imported_then_frozen_and_collecting():
    state = _state(f"""
import gc
from bigcode_cli import collector
collector.pause_for_startup()
assert not gc.isenabled()
from bigcode_cli.store.loader import open_model
open_model({str(BUNDLED)!r}, "causal-lm")
""")
    assert state["enabled"] and state["torch"]
    assert state["frozen"] > 100_000  # torch's modules, classes and functions


def test_the_model_loaded_after_the_freeze_is_not_frozen():
    """gc.get_objects() lists only the generations the collector still walks, never the frozen objects."""
    state = _state(f"""
import gc
from bigcode_cli import collector
collector.pause_for_startup()
from bigcode_cli.store.loader import open_model
loaded = open_model({str(BUNDLED)!r}, "causal-lm")
tracked = {{id(o) for o in gc.get_objects()}}
assert gc.get_freeze_count() > 100_000
assert id(loaded) in tracked and id(loaded.runner) in tracked
assert id(collector) not in tracked  # a module imported before the freeze: frozen
""")
    assert state["enabled"]


@pytest.mark.parametrize("start_up", [
    # `bigcode finetune` builds its model itself: the pause ends once its imports are in, before it checks options
    "from pathlib import Path\nfrom bigcode_cli.finetune.training import FinetuneOptions, finetune\n"
    "finetune(FinetuneOptions(task='no-such-task', train=Path('missing.jsonl')))",
    # `bigcode models quantize` loads through quantize_ahead, not open_model
    "from bigcode_cli.store.loader import quantize_ahead\nquantize_ahead('no-such-model', 'int8', offline=True)",
], ids=["finetune", "models-quantize"])
def test_the_other_model_commands_end_the_pause_too(start_up):
    state = _state(f"""
import gc
from bigcode_cli import collector
collector.pause_for_startup()
try:
{textwrap.indent(start_up, "    ")}
except Exception as exc:  # the bad option or the unknown model: after the imports
    print(type(exc).__name__)
""")
    assert state["enabled"] and state["torch"] and state["frozen"] > 100_000


def test_done_from_another_thread_as_serve_loads_on_its_worker():
    state = _state("""
import gc, threading
from bigcode_cli import collector
collector.pause_for_startup()
worker = threading.Thread(target=collector.startup_done)
worker.start()
worker.join(60)
""")
    assert state["enabled"] and state["frozen"] > 0


def test_a_child_forked_during_the_pause_collects():
    state = _state("""
import gc, os, sys
from bigcode_cli import collector
collector.pause_for_startup()
child = os.fork()
if child == 0:
    os._exit(0 if gc.isenabled() else 1)
_, status = os.waitpid(child, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the child's collector stayed paused"
assert not gc.isenabled()  # the parent's pause goes on
collector.startup_done()
""")
    assert state["enabled"] and state["frozen"] > 0


def test_a_program_using_the_library_keeps_its_collector_and_nothing_is_frozen():
    state = _state(f"""
from bigcode_cli.store.loader import open_model
open_model({str(BUNDLED)!r}, "causal-lm")
""")
    assert state == {"enabled": True, "frozen": 0, "torch": True}


def test_a_start_up_that_never_reports_done_gets_the_collector_back_after_the_bound():
    state = _state("""
import gc, time
from bigcode_cli import collector
collector.pause_for_startup(bound_s=0.2)
assert not gc.isenabled()
deadline = time.monotonic() + 60
while not gc.isenabled() and time.monotonic() < deadline:
    time.sleep(0.05)
collector.startup_done()  # too late: the pause already ended, nothing is frozen
""")
    assert state == {"enabled": True, "frozen": 0, "torch": False}


def test_a_collector_turned_off_by_the_program_stays_off():
    state = _state("""
import gc
gc.disable()
from bigcode_cli import collector
collector.pause_for_startup()
collector.startup_done()
""")
    assert state == {"enabled": False, "frozen": 0, "torch": False}


CONSOLE_SCRIPT = """
import atexit, gc, json, sys
atexit.register(lambda: print("GC " + json.dumps({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}),
                              file=sys.stderr))
from bigcode_cli.cli.entry import main
sys.argv = ["bigcode", "complete", "examples/fib.py"]
main()
"""


def test_the_console_script_completes_with_the_collector_back_on():
    done = subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # the completion
    state = json.loads(next(line for line in done.stderr.splitlines() if line.startswith("GC "))[3:])
    assert state["enabled"] and state["frozen"] > 100_000
