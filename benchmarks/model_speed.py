"""Prefill and decode speed: the native engine against transformers' own generate(), same checkpoint, same run.

    python benchmarks/model_speed.py                       # both shapes, fp32 and bf16, prompts 128 and 1024
    python benchmarks/model_speed.py --shape tiny --dtype float32 --prompt 128 --rounds 5

Two random checkpoints are written once with transformers' save_pretrained (under
$BIGCODE_BENCH_DIR, default /tmp/bigcode-bench): `116m`, tiny_starcoder's shape (n_embd 768, 12 layers,
12 heads, vocab 49152, multi-query) and `tiny` (n_embd 256, 4 layers, 4 heads, vocab 8192).
Batch 1, greedy, a fixed number of new tokens (EOS disabled on both sides).

Decode rate = (N - 1) / (time(N new tokens) - time(1 new token)), measured the same way for both:
    native        bigcode_cli.generation.generate() (what `bigcode complete` runs)
    transformers  model.generate() of transformers' GPTBigCodeForCausalLM (attn sdpa)
Prefill = time of one forward over the prompt (native sdpa vs transformers sdpa).
Runs are interleaved (A B A B ...) because this machine's memory bandwidth drifts; medians are reported.
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

SHAPES = {
    "116m": dict(n_embd=768, n_layer=12, n_head=12, vocab_size=49152),
    "tiny": dict(n_embd=256, n_layer=4, n_head=4, vocab_size=8192),
}


class _SilentTokenizer:
    """Just enough tokenizer for generate(): no stop ids, no text (the benchmark measures the model loop)."""

    stop_ids = frozenset()
    eos_id = 0

    def stream_decoder(self):
        class _Decoder:
            def push(self, _token: int) -> str:
                return ""

            def flush(self) -> str:
                return ""

        return _Decoder()


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


def native_generate(runner, prompt: list[int], new_tokens: int) -> float:
    from bigcode_cli.generation import generate
    from bigcode_cli.sampling import SamplingParams

    started = time.perf_counter()
    generate(runner, _SilentTokenizer(), prompt, max_new_tokens=new_tokens, params=SamplingParams(temperature=0))
    return time.perf_counter() - started


def hf_generate(model, prompt: list[int], new_tokens: int) -> float:
    ids = torch.tensor([prompt])
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, eos_token_id=None, pad_token_id=0)
    return time.perf_counter() - started


def native_prefill(runner, prompt: list[int]) -> float:
    ids = torch.tensor([prompt])
    started = time.perf_counter()
    with torch.inference_mode():
        runner(ids, cache=runner.new_cache(1, len(prompt) + 1), last_only=True)
    return time.perf_counter() - started


def hf_prefill(model, prompt: list[int]) -> float:
    ids = torch.tensor([prompt])
    started = time.perf_counter()
    with torch.inference_mode():
        model(ids, use_cache=True, logits_to_keep=1)
    return time.perf_counter() - started


def measure(shape: str, dtype: str, prompt_len: int, new_tokens: int, rounds: int) -> dict:
    """Interleaved decode and prefill timings of both engines for one setting."""
    from bigcode_cli import engine

    path = checkpoint(shape)
    native = engine.load(path, "causal-lm", attn="sdpa", dtype=dtype)
    reference = engine.load(path, "causal-lm", engine="transformers", attn="sdpa", dtype=dtype).model
    prompt = [(i * 7919) % (SHAPES[shape]["vocab_size"] - 100) + 50 for i in range(prompt_len)]
    runs = {"native": [], "transformers": [], "native_prefill": [], "transformers_prefill": []}
    native_generate(native, prompt, 4)
    hf_generate(reference, prompt, 4)  # warm-up both
    for _ in range(rounds):
        for name, gen, model in (("native", native_generate, native), ("transformers", hf_generate, reference)):
            one = gen(model, prompt, 1)
            full = gen(model, prompt, new_tokens)
            runs[name].append((new_tokens - 1) / max(full - one, 1e-9))
        runs["native_prefill"].append(native_prefill(native, prompt))
        runs["transformers_prefill"].append(hf_prefill(reference, prompt))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "shape": shape, "dtype": dtype, "prompt": prompt_len, "new_tokens": new_tokens, "rounds": rounds,
        "native_tok_s": round(med["native"], 1), "transformers_tok_s": round(med["transformers"], 1),
        "decode_ratio": round(med["native"] / med["transformers"], 2),
        "native_prefill_s": round(med["native_prefill"], 4),
        "transformers_prefill_s": round(med["transformers_prefill"], 4),
        "prefill_ratio": round(med["transformers_prefill"] / med["native_prefill"], 2),
    }


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
