"""Training throughput of the bundled LM's shape on this machine: tokens/s for each option, side by side.

    OMP_NUM_THREADS=1 python scripts/bundled/throughput.py --threads 1 --rounds 3 --steps 3

Runs the training step of train_lm.py (the same model, optimizer and loss) on random token ids, for every
variant: float32 vs bfloat16 autocast, eager vs torch.compile, sequence length, batch size. Variants are
interleaved round by round (A B C A B C ...) so that load from other jobs on a shared machine hits each alike;
each round times --steps steps after one untimed step, and the table gives the median tokens/s over rounds
and the ratio to the first variant (the reference: the recipe's old setting, float32 eager 16 x 256).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bigcode_cli.model.attention import BACKENDS
from bigcode_cli.model.gpt_bigcode import GPTBigCodeForCausalLM
from train_lm import make_optimizer, model_config, train_step

# (name, bf16, compile, length, batch); the first is the reference
VARIANTS = [
    ("fp32 eager 16x256", False, False, 256, 16),
    ("bf16 eager 16x256", True, False, 256, 16),
    ("fp32 compile 16x256", False, True, 256, 16),
    ("bf16 compile 16x256", True, True, 256, 16),
    ("bf16 eager 8x512", True, False, 512, 8),
    ("bf16 eager 16x512", True, False, 512, 16),
    ("bf16 compile 8x512", True, True, 512, 8),
    ("fp32 eager 8x512", False, False, 512, 8),
    ("bf16 eager 32x256", True, False, 256, 32),
    ("bf16 eager 8x256", True, False, 256, 8),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--only", nargs="*", default=None, help="names of the variants to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = [v for v in VARIANTS if args.only is None or v[0] in args.only]
    setups = []
    for name, bf16, compiled, length, batch in variants:
        torch.manual_seed(0)
        model = GPTBigCodeForCausalLM(model_config(8192, 512))
        model.init_weights()
        model.set_backend(BACKENDS["sdpa"])
        model.train()
        optimizer = make_optimizer(model, 1e-3)
        step_model = torch.compile(model) if compiled else model
        ids = torch.randint(0, 8192, (batch, length + 1))
        started = time.perf_counter()
        train_step(step_model, optimizer, ids[:, :-1], ids[:, 1:], bf16)  # warm-up (and compilation)
        print(f"{name}: first step {time.perf_counter() - started:.1f} s", flush=True)
        setups.append((name, step_model, optimizer, ids, bf16, []))
    for round_ in range(args.rounds):
        for name, step_model, optimizer, ids, bf16, rates in setups:
            started = time.perf_counter()
            for _ in range(args.steps):
                train_step(step_model, optimizer, ids[:, :-1], ids[:, 1:], bf16)
            rates.append(args.steps * ids[:, 1:].numel() / (time.perf_counter() - started))
        print(f"round {round_ + 1} done", flush=True)
    reference = statistics.median(setups[0][5])
    print(f"| variant | tokens/s (median of {args.rounds}) | vs {setups[0][0]} |")
    print("|---|---|---|")
    for name, *_rest, rates in setups:
        print(f"| {name} | {statistics.median(rates):.0f} | {statistics.median(rates) / reference:.2f}x |")


if __name__ == "__main__":
    main()
