"""The cost curve of one decode step over many rows: time of a step of R rows relative to one row.

    python benchmarks/batch_step.py --shape 116m                          # every dtype, R = 1 2 4 8 16 32
    python benchmarks/batch_step.py --shape 1.1b --dtype int8 --rounds 2
    python benchmarks/batch_step.py --shape 116m --llama                  # beside llama-batched-bench
    python benchmarks/batch_step.py --threads 1 --clock cpu               # CPU seconds of one thread

Ours: `Runner.step` (the C kernel's bigcode_decode_rows) with R rows of one new token each, every row with
its own cache holding a P-token prompt (default 128); each timed step is put back (the caches' lengths
reset) so every repetition is the same step. A round runs every (dtype, R) once, A B A B ...; per setting
the median over rounds of the median step of `--steps` steps. llama.cpp (`--llama`, needs
/work/shared/anchors/build_llama.sh's build in $LLAMA_ANCHOR): `llama-batched-bench -t 2 -npp P -ntg N
-npl 1,2,...` (as many threads as ours) on the same weights (GGUF f32, bf16, q8_0, q4_0), its decode time per step (T_TG / TG) for
each number of parallel sequences; it runs inside the same rounds, after ours for each dtype, so both see
the same machine (A B A B), and its numbers are medians over the rounds too.

Shapes and checkpoints are quant_speed.py's (random weights under $BIGCODE_BENCH_DIR). The machine is shared
and noisy: read the ratios, not the absolute numbers. With `--threads 1 --clock cpu` a step is timed in
the process's CPU seconds, which other processes on a busy machine disturb less than wall time (with more
threads the pool's waiting workers would count too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from quant_speed import LLAMA, LLAMA_TYPES, SHAPES, checkpoint, gguf, prompt_ids
from server_process import cpu_name

from bigcode_cli.bench import interleave
from bigcode_cli.model.runner import RowTokens

ROWS = [1, 2, 4, 8, 16, 32]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def step_seconds(runner, caches: list, steps: int, clock=time.perf_counter) -> float:
    """The median time of `steps` identical steps of len(caches) rows, one new token each."""
    start = caches[0].length
    rows = [RowTokens(cache, [50 + i]) for i, cache in enumerate(caches)]
    times = []
    with torch.inference_mode():
        for _ in range(steps):
            began = clock()
            runner.step(rows, last_only=True)
            times.append(clock() - began)
            for cache in caches:
                cache.length = start
    return statistics.median(times)


def measure(shape: str, dtypes: list[str], rows: list[int], prompt_len: int, steps: int, rounds: int,
            clock=time.perf_counter, llama_new_tokens: int = 0) -> tuple[dict, dict]:
    """Median step seconds of ours for each (dtype, R), and of llama-batched-bench's for each (dtype, R) when
    llama_new_tokens > 0; all measured interleaved, round after round."""
    from bigcode_cli.model import engine

    path = checkpoint(shape)
    tasks = {}
    for dtype in dtypes:
        runner = engine.load(path, "causal-lm", attn="sdpa", device="cpu", dtype=dtype)
        if runner.decode_path != "kernel":
            raise SystemExit(f"{dtype}: the C kernel does not run here ({runner.decode_summary})")
        cache = runner.new_cache(1, prompt_len + 1)
        with torch.inference_mode():
            runner(torch.tensor([prompt_ids(shape, prompt_len)]), cache=cache)
        caches = cache.split(max(rows))
        step_seconds(runner, caches, 2)  # warm-up: buffers, threads
        for r in rows:
            tasks[(dtype, r)] = (lambda run, c: lambda: {"s": step_seconds(run, c, steps, clock)})(runner, caches[:r])
        if llama_new_tokens:
            gguf(shape, dtype)  # converted before the rounds start
            tasks[("llama", dtype)] = (lambda d: lambda: {str(r): s for r, s in llama_steps(
                shape, d, rows, prompt_len, llama_new_tokens, torch.get_num_threads()).items()})(dtype)
    med = interleave(tasks, rounds)
    ours_s = {key: m["s"] for key, m in med.items() if key[0] != "llama"}
    theirs = {(key[1], int(r)): s for key, m in med.items() if key[0] == "llama" for r, s in m.items()}
    return ours_s, theirs


def llama_steps(shape: str, dtype: str, rows: list[int], prompt_len: int, new_tokens: int,
                threads: int = 2) -> dict[int, float]:
    """llama-batched-bench's decode seconds per step for each number of parallel sequences."""
    done = subprocess.run([str(LLAMA / "bin" / "llama-batched-bench"), "-m", str(gguf(shape, dtype)), "-t", str(threads),
                           "-c", str((prompt_len + new_tokens) * max(rows) + 64), "-npp", str(prompt_len), "-ntg",
                           str(new_tokens), "-npl", ",".join(map(str, rows))],
                          capture_output=True, text=True, check=True)
    # its table: | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
    per_step = {}
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[2].isdigit() and cells[1].isdigit():
            per_step[int(cells[2])] = float(cells[6]) / int(cells[1])
    if not per_step:
        raise SystemExit(f"no table in llama-batched-bench's output:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="116m")
    parser.add_argument("--dtype", action="append", choices=list(LLAMA_TYPES), help="repeatable; default: all four")
    parser.add_argument("--rows", type=int, action="append", help=f"repeatable; default: {ROWS}")
    parser.add_argument("--prompt", type=int, default=128, help="positions already in each row's cache")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="threads of a step (default: torch's)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall", help="cpu: process CPU seconds")
    parser.add_argument("--llama", action="store_true", help="also llama-batched-bench (llama.cpp built first)")
    parser.add_argument("--llama-steps", type=int, default=32, help="decode steps of each llama-batched-bench run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = args.dtype or list(LLAMA_TYPES)
    rows = sorted(set(args.rows or ROWS))
    print(f"{cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; load average "
          f"{os.getloadavg()[0]:.2f} (1 min) at the start", file=sys.stderr)
    times, theirs = measure(args.shape, dtypes, rows, args.prompt, args.steps, args.rounds, CLOCKS[args.clock],
                            args.llama_steps if args.llama else 0)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end", file=sys.stderr)
    for dtype in dtypes:
        for r in rows:
            t = times[(dtype, r)]
            row = {"shape": args.shape, "dtype": dtype, "rows": r, "clock": args.clock, "step_ms": round(t * 1e3, 2),
                   "vs_1_row": round(t / times[(dtype, rows[0])], 2), "tok_s": round(r / t, 1)}
            if (dtype, r) in theirs:
                mine = theirs[(dtype, r)]
                row.update({"llama": LLAMA_TYPES[dtype], "llama_step_ms": round(mine * 1e3, 2),
                            "llama_vs_1_row": round(mine / theirs[(dtype, rows[0])], 2),
                            "llama_tok_s": round(r / mine, 1)})
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
