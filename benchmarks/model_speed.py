"""Prefill and decode speed: the native engine against transformers' own generate(), same checkpoint, same run.

    python benchmarks/model_speed.py                       # both shapes, fp32 and bf16, prompts 128 and 1024
    python benchmarks/model_speed.py --shape tiny --dtype float32 --prompt 128 --rounds 5

Two random checkpoints are written once with transformers' save_pretrained (under
$BIGCODE_BENCH_DIR, default /tmp/bigcode-bench): `116m`, tiny_starcoder's shape (n_embd 768, 12 layers,
12 heads, vocab 49152, multi-query) and `tiny` (n_embd 256, 4 layers, 4 heads, vocab 8192).
Batch 1, greedy, a fixed number of new tokens (EOS disabled on both sides).

Decode rate = (N - 1) / (time(N new tokens) - time(1 new token)), measured the same way for both:
    native        bigcode_cli.generation.loop.generate() (what `bigcode complete` runs)
    transformers  model.generate() of transformers' GPTBigCodeForCausalLM (attn sdpa)
Prefill = time of one forward over the prompt (native sdpa vs transformers sdpa).
Runs are interleaved (A B A B ...) because this machine's memory bandwidth drifts; medians are reported.
The measuring itself lives in bigcode_cli.bench (shared with `bigcode bench`); a decode rate is null
when noise swamps every round (t(N) <= t(1)).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from bigcode_cli.bench import (
    decode_rate,
    generate_seconds,
    interleave,
    prefill_seconds,
    reference_generate_seconds,
    reference_prefill_seconds,
)

SHAPES = {
    "116m": dict(n_embd=768, n_layer=12, n_head=12, vocab_size=49152),
    "tiny": dict(n_embd=256, n_layer=4, n_head=4, vocab_size=8192),
}


def checkpoint(shape: str) -> Path:
    """The random checkpoint of a shape, written once by transformers."""
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    root = Path(os.environ.get("BIGCODE_BENCH_DIR", "/tmp/bigcode-bench"))
    path = root / shape
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        config = GPTBigCodeConfig(n_positions=2048, multi_query=True, **SHAPES[shape])
        GPTBigCodeForCausalLM(config).save_pretrained(str(path))
    return path


def measure(shape: str, dtype: str, prompt_len: int, new_tokens: int, rounds: int) -> dict:
    """Interleaved decode and prefill timings of both engines for one setting."""
    from bigcode_cli.model import engine

    path = checkpoint(shape)
    native = engine.load(path, "causal-lm", attn="sdpa", dtype=dtype)
    reference = engine.load(path, "causal-lm", engine="transformers", attn="sdpa", dtype=dtype).model
    prompt = [(i * 7919) % (SHAPES[shape]["vocab_size"] - 100) + 50 for i in range(prompt_len)]
    generate_seconds(native, None, prompt, 4)
    reference_generate_seconds(reference, prompt, 4)  # warm-up both
    tasks = {
        "native": lambda: {"tok_s": decode_rate(lambda n: generate_seconds(native, None, prompt, n), new_tokens)},
        "transformers": lambda: {"tok_s": decode_rate(lambda n: reference_generate_seconds(reference, prompt, n),
                                                      new_tokens)},
        "native_prefill": lambda: {"s": prefill_seconds(native, prompt)},
        "transformers_prefill": lambda: {"s": reference_prefill_seconds(reference, prompt)},
    }
    med = interleave(tasks, rounds)
    native_tok_s, hf_tok_s = med["native"]["tok_s"], med["transformers"]["tok_s"]
    native_prefill_s, hf_prefill_s = med["native_prefill"]["s"], med["transformers_prefill"]["s"]
    return {
        "shape": shape, "dtype": dtype, "prompt": prompt_len, "new_tokens": new_tokens, "rounds": rounds,
        "native_tok_s": _round(native_tok_s, 1), "transformers_tok_s": _round(hf_tok_s, 1),
        "decode_ratio": _round(native_tok_s / hf_tok_s if native_tok_s and hf_tok_s else None, 2),
        "native_prefill_s": round(native_prefill_s, 4),
        "transformers_prefill_s": round(hf_prefill_s, 4),
        "prefill_ratio": round(hf_prefill_s / native_prefill_s, 2),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "all"], default="all")
    parser.add_argument("--prompt", type=int, choices=[128, 1024, 0], default=0, help="0 = both")
    parser.add_argument("--new-tokens", type=int, default=0, help="default: 64 for 116m, 200 for tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    dtypes = ["float32", "bfloat16"] if args.dtype == "all" else [args.dtype]
    prompts = [128, 1024] if args.prompt == 0 else [args.prompt]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    for shape in shapes:
        for dtype in dtypes:
            for prompt_len in prompts:
                new_tokens = args.new_tokens or (64 if shape == "116m" else 200)
                print(json.dumps(measure(shape, dtype, prompt_len, new_tokens, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
