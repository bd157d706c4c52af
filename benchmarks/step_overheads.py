"""What a speculating step costs, and two host-side costs around every step, measured in this process.

    python benchmarks/step_overheads.py                                   # the bundled model, float32 and bfloat16
    python benchmarks/step_overheads.py --model 116m --dtype int8 --context 1600

1. The verify step: one row fed k new tokens (its last chosen token and k - 1 drafted ones) in one
   `Runner.step`, relative to a one-token step, for k = 1 2 3 4 6 8 9, in process CPU seconds (one thread:
   steadier than wall time on a shared machine), every row with `--context` cached positions; each timed
   step is rolled back (`Cache.truncate`), so every repetition is the same step. Rounds interleave the k
   (A B A B), medians. This is the curve the draft length trades against (README "Speculation").
2. Choosing greedy tokens: torch's CPU argmax against the NumPy one `sampling.best_ids` uses, for 1, 8 and
   9 rows of the model's vocabulary.
3. A finished request's cache given to the prompt cache: a copy of it (`Cache.copy_prefix`) against keeping
   the cache itself (`Cache.kept_prefix`), for a cache of `--context` positions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

KS = [1, 2, 3, 4, 6, 8, 9]


def _median_ms(work, repeats: int, clock=time.perf_counter) -> float:
    times = []
    for _ in range(repeats):
        began = clock()
        work()
        times.append(clock() - began)
    return round(statistics.median(times) * 1000, 4)


def step_curve(runner, context: int, vocab: int, rounds: int, steps: int) -> dict[int, float]:
    """Median CPU milliseconds of a one-row step of k new tokens, for each k in KS."""
    from bigcode_cli.model.runner import RowTokens

    cache = runner.new_cache(1, context + max(KS) + 1)
    runner(torch.tensor([[(7 * i + 3) % (vocab - 10) + 5 for i in range(context)]]), cache=cache)

    def step(k: int) -> None:
        runner.step([RowTokens(cache, [(11 * j + 5) % (vocab - 10) + 5 for j in range(k)])])
        cache.truncate(context)

    for k in KS:
        step(k)  # warm-up: the workspace grows to each size once
    runs: dict[int, list[float]] = {k: [] for k in KS}
    for _ in range(rounds):
        for k in KS:
            runs[k].append(_median_ms(lambda k=k: step(k), steps, time.process_time))
    return {k: statistics.median(v) for k, v in runs.items()}


def argmax_costs(vocab: int, repeats: int) -> dict[str, float]:
    """Microseconds of torch's CPU argmax and of sampling.best_ids, for a few rows of `vocab` logits."""
    from bigcode_cli.generation.sampling import best_ids

    out = {}
    for rows in (1, 8, 9):
        scores = torch.randn(rows, vocab)
        out[f"torch_{rows}_rows_us"] = round(1000 * _median_ms(lambda: scores.argmax(dim=-1).tolist(), repeats), 1)
        out[f"best_ids_{rows}_rows_us"] = round(1000 * _median_ms(lambda: best_ids(scores).tolist(), repeats), 1)
    return out


def keep_costs(runner, context: int, repeats: int) -> dict[str, float]:
    """Milliseconds to give a finished request's cache to the prompt cache: copied, or kept."""
    def finished():
        cache = runner.new_cache(1, context + 16)
        cache.length = context
        return cache

    copy_ms, keep_ms = [], []
    for _ in range(repeats):  # interleaved
        cache = finished()
        copy_ms.append(_median_ms(lambda: cache.copy_prefix(context), 1))
        cache = finished()
        keep_ms.append(_median_ms(lambda: cache.kept_prefix(context), 1))
    return {"copy_prefix_ms": statistics.median(copy_ms), "kept_prefix_ms": statistics.median(keep_ms),
            "cache_mb": round(finished().nbytes / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["bundled", "116m", "1.1b"], default="bundled")
    parser.add_argument("--dtype", action="append", choices=["float32", "bfloat16", "int8", "int4"],
                        help="repeatable; default float32 and bfloat16")
    parser.add_argument("--context", type=int, default=450, help="positions already cached (default 450)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per k and round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bigcode_cli.model import engine

    if args.model == "bundled":
        from bigcode_cli import paths
        from bigcode_cli.store.resolution import BUNDLED_MODELS

        path = paths.bundled_dir() / BUNDLED_MODELS["causal-lm"]
    else:
        from quant_speed import checkpoint

        path = checkpoint(args.model)
    report = {"model": args.model, "context": args.context, "cpu": _cpu(), "threads": 1,
              "load_before": os.getloadavg()[0], "dtypes": {}}
    with torch.inference_mode():
        for dtype in args.dtype or ["float32", "bfloat16"]:
            runner = engine.load(path, "causal-lm", attn="sdpa", device="cpu", dtype=dtype)
            if runner.decode_path != "kernel":
                raise SystemExit(f"{dtype}: the C kernel does not run here ({runner.decode_summary})")
            curve = step_curve(runner, args.context, runner.config.vocab_size, args.rounds, args.steps)
            report["dtypes"][dtype] = {"one_token_ms": curve[1],
                                       "vs_one_token": {k: round(ms / curve[1], 2) for k, ms in curve.items()},
                                       **keep_costs(runner, args.context, 11)}
        report["argmax"] = argmax_costs(runner.config.vocab_size, 200)
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


def _cpu() -> str:
    from server_process import cpu_name

    return cpu_name()


if __name__ == "__main__":
    main()
