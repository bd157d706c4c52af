"""What pausing Python's garbage collector during start-up saves (bigcode_cli.collector): wall time of
`bigcode complete FILE` as a fresh process, and the collector's own work in it, with the pause (as the console
script runs) and without it (`pause_for_startup` made a no-op before the CLI starts, nothing else changed).

    python benchmarks/startup_gc.py [--file examples/fib.py] [--rounds 9]

The timed runs alternate (A B A B ...) and count nothing; medians over rounds are printed as JSON. After them, one
more run of each counts the collections and their milliseconds with a gc callback installed before anything is
imported (a callback costs time at every collection, so it stays out of the timed runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

RUN = r"""
import gc, json, sys, time
counts = {"collections": 0, "gc_ms": 0.0}
began = {}
def count(phase, info):
    if phase == "start":
        began["t"] = time.perf_counter()
    else:
        counts["collections"] += 1
        counts["gc_ms"] += (time.perf_counter() - began["t"]) * 1000
if sys.argv[3] == "count":
    gc.callbacks.append(count)
if sys.argv[1] == "collecting":
    import bigcode_cli.collector
    bigcode_cli.collector.pause_for_startup = lambda *args, **kwargs: None
import atexit
atexit.register(lambda: print("GC " + json.dumps(counts), file=sys.stderr))
from bigcode_cli.cli.entry import main
sys.argv = ["bigcode", "complete", sys.argv[2]]
main()
"""


def run(mode: str, file: str, count: bool = False) -> dict:
    """One `bigcode complete FILE`: its wall seconds, or (count) the collections it made and their milliseconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN, mode, file, "count" if count else "time"], capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1"}, check=True)
    wall = time.perf_counter() - started
    if not count:
        return {"wall_s": wall}
    line = next(line for line in done.stderr.splitlines() if line.startswith("GC "))
    return json.loads(line[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default="examples/fib.py")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"paused": [], "collecting": []}
    run("paused", args.file)  # warm-up: the kernel built, files in the page cache
    for _ in range(args.rounds):
        for mode in runs:  # interleaved
            runs[mode].append(run(mode, args.file))
    result = {mode: {"wall_s": round(statistics.median(r["wall_s"] for r in rs), 3), **run(mode, args.file, count=True)}
              for mode, rs in runs.items()}
    result["wall_ratio_paused_over_collecting"] = round(result["paused"]["wall_s"] / result["collecting"]["wall_s"], 3)
    print(json.dumps({"file": args.file, "rounds": args.rounds, **result}, indent=2))


if __name__ == "__main__":
    main()
