"""Held-out evaluation of the bundled bigcode-tiny LM: bits per byte, single-line FIM exact match, samples.

    python scripts/bundled/evaluate_lm.py [--model bigcode-tiny] [--fim-cases 200] [--json runs/lm_eval.json]

Uses only files the model never saw (data/lm/heldout_files.jsonl from pretokenize.py):
- perplexity and bits per byte over the held-out token stream (windows of the model's context, no FIM);
- FIM exact match: pick a non-blank line inside a held-out Python function, remove it, infill it
  (PSM prompt, greedy, the `complete` command's cleaning with --lines 1) and compare stripped lines;
- a few completions of held-out code, printed as they come out.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bigcode_cli.generation.completion import CompletionSettings, complete
from bigcode_cli.store.loader import open_model
from bigcode_cli.generation.sampling import SamplingParams

ROOT = Path(__file__).resolve().parents[2]


def bits_per_byte(runner, heldout: np.ndarray, total_bytes: int, total_tokens: int, window: int,
                  max_tokens: int) -> dict:
    """Mean loss over consecutive windows of the held-out stream; bytes/token from the held-out files."""
    nats, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, min(len(heldout), max_tokens) - window - 1, window):
            ids = torch.from_numpy(heldout[start : start + window + 1].astype(np.int64)).unsqueeze(0)
            logits = runner(ids[:, :-1])
            nats += F.cross_entropy(logits[0].float(), ids[0, 1:], reduction="sum").item()
            count += window
    loss = nats / count
    return {"loss_nats_per_token": round(loss, 4), "perplexity": round(math.exp(loss), 2),
            "bytes_per_token": round(total_bytes / total_tokens, 3),
            "bits_per_byte": round(loss / math.log(2) / (total_bytes / total_tokens), 4), "tokens_scored": count}


def fim_cases(files: list[Path], n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """(prefix, removed line, suffix) triples: one non-trivial line from inside a held-out function."""
    cases = []
    candidates = []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except (OSError, UnicodeDecodeError):
            continue
        inside = False
        for i, line in enumerate(lines):
            stripped = line.strip()
            if line.lstrip().startswith("def "):
                inside = True
                continue
            if inside and line.startswith("    ") and len(stripped) >= 8 and not stripped.startswith(("#", '"""', "'''")):
                candidates.append((path, lines, i))
    rng.shuffle(candidates)
    for path, lines, i in candidates[:n]:
        line = lines[i]
        indent = line[: len(line) - len(line.lstrip())]
        prefix = "".join(lines[:i]) + indent
        cases.append((prefix, line.strip(), "".join(lines[i + 1 :])))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bigcode-tiny")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "lm")
    parser.add_argument("--fim-cases", type=int, default=200)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=2_000_000, help="score at most this many held-out tokens (0: skip perplexity)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    loaded = open_model(args.model, "causal-lm", attn="sdpa")
    runner, tokenizer = loaded.runner, loaded.tokenizer
    heldout = np.memmap(args.data / "heldout.bin", dtype=np.uint16, mode="r")
    records = [json.loads(line) for line in (args.data / "heldout_files.jsonl").read_text().splitlines()]
    total_bytes = sum(r["bytes"] for r in records)
    report = {"model": args.model}
    if args.max_tokens:
        report["perplexity"] = bits_per_byte(runner, heldout, total_bytes, len(heldout), 256, args.max_tokens)
        print(json.dumps(report["perplexity"]), flush=True)

    rng = random.Random(args.seed)
    files = [Path(r["path"]) for r in records if r["path"].endswith(".py")]
    files = [f if f.is_absolute() else args.data.parent / "corpus" / f for f in files]
    cases = fim_cases(files, args.fim_cases, rng)
    settings = CompletionSettings(max_new_tokens=48, sampling=SamplingParams(temperature=0), lines=1)
    hits, similarity = 0, 0.0
    for prefix, expected, suffix in cases:
        result = complete(runner, tokenizer, prefix, suffix, "fim", settings)
        got = result.texts[0].strip().split("\n")[0].strip()
        hits += got == expected
        similarity += difflib.SequenceMatcher(None, got, expected).ratio()
    report["fim_single_line"] = {"cases": len(cases), "exact_match": round(hits / max(len(cases), 1), 4),
                                 "edit_similarity": round(similarity / max(len(cases), 1), 4)}
    print(json.dumps(report["fim_single_line"]), flush=True)

    shown = []
    for prefix, expected, suffix in cases[: args.samples]:
        result = complete(runner, tokenizer, prefix, suffix, "fim", settings)
        shown.append({"context": prefix[-160:], "expected": expected, "completion": result.texts[0],
                      "suffix": suffix[:80]})
    report["samples"] = shown
    for item in shown:
        print(json.dumps(item), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
