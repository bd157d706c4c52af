"""Decode speed of --dtype int8 / int4 / bfloat16 / float32 against llama.cpp's q8_0 / q4_0 / bf16 / f32, same run.

    python benchmarks/quant_speed.py --shape 116m                       # P=128 and 1024, every dtype
    python benchmarks/quant_speed.py --shape 1.1b --dtype int8 --prompt 128 --rounds 3
    python benchmarks/quant_speed.py --shape 116m --prefill              # prefill of 1,024 tokens: quantized vs bf16
    python benchmarks/quant_speed.py --shape 1.1b --rss                  # peak RSS of `bigcode generate` per dtype

Shapes (random weights, written once in float32 by transformers with the bundled tokenizer, under
$BIGCODE_BENCH_DIR, default /tmp/bigcode-bench; GGUF copies made there with /work/shared/anchors/to_gguf.py):
`116m` = tiny_starcoder (n_embd 768, 12 layers, 12 heads, vocab 49152, MQA), `1.1b` = SantaCoder (n_embd
2048, 24 layers, 16 heads, vocab 49280, MQA, n_positions 2048; ~4.5 GB).

Ours: decode rate = (N - 1) / (the decode time of one greedy generation of N tokens after a P-token prompt,
timed inside the generation: prefill excluded; `bigcode_cli.bench.timed_decode_rate`). llama.cpp: `llama-bench -m M -t 2 -p 0 -n N -d P` (N decode steps after a
P-token context), its mean tokens/s. Each round runs every setting once, A B A B ...; medians reported.
The machine is shared and noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from bigcode_cli.bench import generate_seconds, interleave, prefill_seconds, timed_decode_rate

SHAPES = {
    "116m": dict(n_embd=768, n_layer=12, n_head=12, vocab_size=49152, n_positions=2048),
    "1.1b": dict(n_embd=2048, n_layer=24, n_head=16, vocab_size=49280, n_positions=2048),
}
LLAMA_TYPES = {"int8": "q8_0", "int4": "q4_0", "bfloat16": "bf16", "float32": "f32"}
ROOT = Path(__file__).resolve().parents[1]
ANCHORS = Path(os.environ.get("BIGCODE_ANCHORS", "/work/shared/anchors"))
LLAMA = Path(os.environ.get("LLAMA_ANCHOR", "/tmp/llama-anchor"))


def bench_dir() -> Path:
    """Where the random checkpoints and their GGUF copies are kept between runs."""
    return Path(os.environ.get("BIGCODE_BENCH_DIR", "/tmp/bigcode-bench"))


def checkpoint(shape: str) -> Path:
    """The random float32 checkpoint of a shape (with a tokenizer, for the GGUF converter), written once."""
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    path = bench_dir() / f"quant-{shape}"
    if not (path / "model.safetensors").exists():
        torch.manual_seed(0)
        config = GPTBigCodeConfig(multi_query=True, **SHAPES[shape])
        model = GPTBigCodeForCausalLM(config)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        del model
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny" / name, tmp / name)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return path


def gguf(shape: str, dtype: str) -> Path:
    """llama.cpp's copy of the checkpoint in the type matching `dtype`, converted once."""
    out = bench_dir() / f"quant-{shape}-{LLAMA_TYPES[dtype]}.gguf"
    if not out.exists():
        tmp = out.with_suffix(".tmp.gguf")
        subprocess.run([sys.executable, str(ANCHORS / "to_gguf.py"), str(checkpoint(shape)), str(tmp), "--type",
                        LLAMA_TYPES[dtype], "--llama", str(LLAMA)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        tmp.rename(out)
    return out


def llama_tok_s(model: Path, prompt_len: int, new_tokens: int) -> float:
    """llama-bench's mean decode tokens/s for `new_tokens` steps after a `prompt_len` context, 2 threads."""
    done = subprocess.run([str(LLAMA / "bin" / "llama-bench"), "-m", str(model), "-t", "2", "-p", "0", "-n",
                           str(new_tokens), "-d", str(prompt_len), "-r", "1", "-o", "json"],
                          capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout)[0]["avg_ts"])


def prompt_ids(shape: str, length: int) -> list[int]:
    """Fixed token ids (a random model reads them as well as any)."""
    return [(i * 7919) % (SHAPES[shape]["vocab_size"] - 100) + 50 for i in range(length)]


def measure_decode(shape: str, dtypes: list[str], prompt_len: int, new_tokens: int, rounds: int,
                   with_llama: bool) -> list[dict]:
    """Interleaved decode rates of ours and llama.cpp for every dtype at one prompt length."""
    from bigcode_cli.model import engine

    path = checkpoint(shape)
    prompt = prompt_ids(shape, prompt_len)
    runners = {dtype: engine.load(path, "causal-lm", attn="sdpa", device="cpu", dtype=dtype) for dtype in dtypes}
    tasks = {}
    for dtype, runner in runners.items():
        generate_seconds(runner, None, prompt, 2)  # warm-up (and the kernel's first build)
        tasks[f"ours {dtype}"] = (lambda r: lambda: {"tok_s": timed_decode_rate(r, prompt, new_tokens)})(runner)
        if with_llama:
            model = gguf(shape, dtype)
            tasks[f"llama {LLAMA_TYPES[dtype]}"] = (lambda m: lambda: {"tok_s": llama_tok_s(m, prompt_len, new_tokens)})(model)
    med = interleave(tasks, rounds)
    rows = []
    for dtype, runner in runners.items():
        ours = med[f"ours {dtype}"]["tok_s"]
        row = {"shape": shape, "prompt": prompt_len, "new_tokens": new_tokens, "rounds": rounds, "dtype": dtype,
               "decode_by": runner.decode_path, "ours_tok_s": round(ours, 1) if ours else None}
        if with_llama:
            theirs = med[f"llama {LLAMA_TYPES[dtype]}"]["tok_s"]
            row.update({"llama": LLAMA_TYPES[dtype], "llama_tok_s": round(theirs, 1),
                        "ratio": round(ours / theirs, 2) if ours else None})
        rows.append(row)
    return rows


def measure_prefill(shape: str, dtypes: list[str], prompt_len: int, rounds: int) -> list[dict]:
    """Interleaved prefill seconds of a `prompt_len` prompt per dtype, as a ratio to bfloat16's."""
    from bigcode_cli.model import engine

    path = checkpoint(shape)
    prompt = prompt_ids(shape, prompt_len)
    runners = {dtype: engine.load(path, "causal-lm", attn="sdpa", device="cpu", dtype=dtype)
               for dtype in dict.fromkeys(["bfloat16", *dtypes])}
    for runner in runners.values():
        prefill_seconds(runner, prompt[:16])
    med = interleave({d: (lambda r: lambda: {"s": prefill_seconds(r, prompt)})(r) for d, r in runners.items()}, rounds)
    base = med["bfloat16"]["s"]
    return [{"shape": shape, "prompt": prompt_len, "rounds": rounds, "dtype": d, "prefill_s": round(m["s"], 3),
             "vs_bfloat16": round(m["s"] / base, 2)} for d, m in med.items()]


def peak_rss(shape: str, dtype: str, home: Path) -> dict:
    """Peak resident memory (GNU time's maximum RSS) of `bigcode generate` with 8 new tokens, in a fresh
    process; with BIGCODE_HOME=home, so an int8/int4 run either quantizes and keeps its copy (the first) or
    maps the kept copy (the next)."""
    bigcode = Path(sys.executable).with_name("bigcode")
    env = {**os.environ, "BIGCODE_HOME": str(home)}
    first = not any(home.glob(f"quantized/*/{dtype}/model.safetensors"))
    done = subprocess.run(["/usr/bin/time", "-v", str(bigcode), "generate", "def parse(text):", "--model",
                           str(checkpoint(shape)), "--device", "cpu", "--dtype", dtype, "--max-new-tokens", "8",
                           "-t", "0"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    kb = next(int(line.split(":")[1]) for line in done.stderr.splitlines() if "Maximum resident set size" in line)
    wall = next(line.split("):", 1)[1].strip() for line in done.stderr.splitlines() if "Elapsed (wall clock)" in line)
    run = "quantizes" if dtype in ("int8", "int4") and first else ("maps kept copy" if dtype in ("int8", "int4") else "")
    # GNU time reports kibibytes; GB here are 10^9 bytes
    return {"shape": shape, "dtype": dtype, "run": run, "peak_rss_gb": round(kb * 1024 / 1e9, 3), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="116m")
    parser.add_argument("--dtype", action="append", choices=list(LLAMA_TYPES), help="repeatable; default: all four")
    parser.add_argument("--prompt", type=int, action="append", help="repeatable; default: 128 and 1024")
    parser.add_argument("--new-tokens", type=int, default=0, help="default: 64 for 116m, 32 for 1.1b")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-llama", action="store_true", help="ours only (no llama.cpp build needed)")
    parser.add_argument("--prefill", action="store_true", help="time prefill instead of decode")
    parser.add_argument("--rss", action="store_true", help="peak RSS of `bigcode generate` (int8/int4 twice)")
    args = parser.parse_args()
    dtypes = args.dtype or list(LLAMA_TYPES)
    prompts = args.prompt or [128, 1024]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    if args.rss:
        home = bench_dir() / "rss-home"
        shutil.rmtree(home, ignore_errors=True)
        for dtype in dtypes:
            for _ in range(2 if dtype in ("int8", "int4") else 1):
                print(json.dumps(peak_rss(args.shape, dtype, home)), flush=True)
        return
    for prompt_len in prompts:
        if args.prefill:
            rows = measure_prefill(args.shape, dtypes, prompt_len, args.rounds)
        else:
            new_tokens = args.new_tokens or (64 if args.shape == "116m" else 32)
            rows = measure_decode(args.shape, dtypes, prompt_len, new_tokens, args.rounds, not args.no_llama)
        for row in rows:
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
