"""How long `bigcode --help`, `bigcode complete --help` and a shell completion take, wall clock.

Each is a fresh `python -m bigcode_cli`, as a shell runs it; the runs are interleaved and the median
is reported, next to a bare `python -c pass` measured in the same rounds (the interpreter's own
start-up, which no CLI can beat).

    python benchmarks/cli_latency.py --rounds 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": ([sys.executable, "-c", "pass"], {}),
    "bigcode --help": ([sys.executable, "-m", "bigcode_cli", "--help"], {}),
    "bigcode complete --help": ([sys.executable, "-m", "bigcode_cli", "complete", "--help"], {}),
    "completion of `bigcode complete --attn `": (
        [sys.executable, "-m", "bigcode_cli"],
        {"_BIGCODE_COMPLETE": "complete_bash", "COMP_WORDS": "bigcode complete --attn ", "COMP_CWORD": "3"},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    timings: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, (command, env) in CASES.items():  # interleaved: A B C D A B C D ...
            started = time.perf_counter()
            subprocess.run(command, env={**os.environ, **env}, capture_output=True, check=True)
            timings[name].append(time.perf_counter() - started)
    base = statistics.median(timings["python -c pass"])
    print(f"{'command':44} {'median ms':>10} {'over python':>12}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:44} {median * 1000:10.0f} {(median - base) * 1000:+11.0f}")


if __name__ == "__main__":
    main()
