"""End-to-end wall time of `bigcode complete` against the same completion through transformers' generate().

    python benchmarks/complete_e2e.py [--model bigcode-tiny] [--file examples/fib.py] [--rounds 5]

Each round runs, as fresh processes, interleaved:
  bigcode     `bigcode complete FILE --json -t 0 --no-block --max-new-tokens N` (its own timings: load,
              prefill, decode; start-up = wall time minus those)
  transformers  a script that imports transformers, loads AutoTokenizer + GPTBigCodeForCausalLM from the
              same checkpoint directory and calls generate() greedily on the exact prompt bigcode used
              (the `prompt` field of its --json output), with the same stop tokens, for as many new
              tokens as bigcode produced (bigcode's completion cleaning may end a sample early).
Medians over rounds are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HF_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from transformers import AutoTokenizer, GPTBigCodeForCausalLM
t1 = time.perf_counter()
path, prompt, new_tokens, stops = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(path)
model = GPTBigCodeForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
t2 = time.perf_counter()
ids = tokenizer(prompt, return_tensors="pt").input_ids
with torch.inference_mode():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                         eos_token_id=stops, pad_token_id=stops[0])
t3 = time.perf_counter()
text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "generate_s": t3 - t2, "prompt_tokens": ids.shape[1],
                  "new_tokens": int(out.shape[1] - ids.shape[1]), "text": text}))
"""


def run_bigcode(model: str, file: str, new_tokens: int) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bigcode_cli", "complete", file, "-m", model, "--json", "-t", "0",
                           "--no-block", "--max-new-tokens", str(new_tokens)], capture_output=True, text=True,
                          check=True)
    wall = time.perf_counter() - started
    record = json.loads(proc.stdout.splitlines()[0])
    t = record["timings"]
    return {"wall_s": wall, "startup_s": wall - t["load_s"] - t["prefill_s"] - t["decode_s"], "load_s": t["load_s"],
            "prefill_s": t["prefill_s"], "decode_s": t["decode_s"], "new_tokens": record["new_tokens"],
            "prompt_tokens": record["prompt_tokens"], "prompt": record["prompt"], "text": record["text"]}


def run_transformers(path: Path, prompt: str, new_tokens: int, stops: list[int]) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", HF_SCRIPT, str(path), prompt, str(new_tokens), json.dumps(stops)],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    record = json.loads(proc.stdout.splitlines()[-1])
    record["wall_s"] = wall
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bigcode-tiny")
    parser.add_argument("--file", default="examples/fib.py")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from bigcode_cli import store
    from bigcode_cli.text.tokenizer import Tokenizer

    path = store.resolve(args.model).path
    stops = sorted(Tokenizer.from_dir(path).stop_ids)
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(run_bigcode(args.model, args.file, args.new_tokens))
        # the same amount of work: as many new tokens as bigcode produced before its cleaning ended the sample
        theirs.append(run_transformers(path, ours[-1]["prompt"], max(ours[-1]["new_tokens"], 1), stops))
    med = lambda rows, key: round(statistics.median(r[key] for r in rows), 3)  # noqa: E731
    report = {
        "model": args.model, "file": args.file, "rounds": args.rounds,
        "prompt_tokens": ours[0]["prompt_tokens"], "new_tokens": ours[0]["new_tokens"],
        "transformers_new_tokens": theirs[0]["new_tokens"],
        "bigcode": {k: med(ours, k) for k in ("wall_s", "startup_s", "load_s", "prefill_s", "decode_s")},
        "transformers": {k: med(theirs, k) for k in ("wall_s", "import_s", "load_s", "generate_s")},
    }
    report["wall_ratio"] = round(report["transformers"]["wall_s"] / report["bigcode"]["wall_s"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
