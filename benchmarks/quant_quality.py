"""Quality of --dtype int8 / int4 on the bundled trained LM: held-out perplexity and greedy continuations.

    python benchmarks/quant_quality.py [--files 40] [--windows 40] [--prompts 20] [--json out.json]

Held-out data: scripts/bundled/evaluate_lm.py reads data/lm/heldout.bin, which is not kept in the repository.
This rebuilds the Python part of that held-out set the way scripts/bundled/corpus.py splits it: a stdlib
file `python/stdlib/<relpath>` is held out when sha1(path) % 10000 < 500, so bigcode-tiny never trained on it.
Files are tokenized with the model's tokenizer, each followed by <|endoftext|>, in sorted path order.

Perplexity is scored two ways over windows of 256 tokens:
- `prefill`: one forward per window (PyTorch; quantized layers dequantized for the matmul);
- `decode`: the window fed one token at a time through the decode kernel (the int8-quantized inputs of
  the kernel's matvecs included), as generation runs.
Continuations: the first 64 tokens of each held-out file as prompt, 32 greedy tokens; matched = tokens equal
to the bf16 model's continuation up to the first difference, and in total.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bigcode_cli.generation.loop import generate
from bigcode_cli.generation.sampling import SamplingParams
from bigcode_cli.store.loader import open_model

CORPUS_ROOT = Path("/root/.pyenv/versions/3.11.7/lib/python3.11")
HELDOUT_PER_10000 = 500  # scripts/bundled/corpus.py
WINDOW = 256


def heldout_files(root: Path, limit: int) -> list[Path]:
    """The stdlib files corpus.py holds out (first `limit` in path order, tests and site-packages skipped)."""
    chosen = []
    for path in sorted(root.rglob("*.py")):
        rel = "python/stdlib/" + path.relative_to(root).as_posix()
        if "site-packages" in rel or "/test" in rel:
            continue
        if int.from_bytes(hashlib.sha1(rel.encode()).digest()[:8], "big") % 10000 < HELDOUT_PER_10000:
            chosen.append(path)
    return chosen[:limit]


def perplexity(runner, ids: torch.Tensor, windows: int, by_steps: bool) -> float:
    """exp(mean next-token loss) over `windows` consecutive windows of the stream."""
    nats, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, min(len(ids) - WINDOW - 1, windows * WINDOW), WINDOW):
            x = ids[start : start + WINDOW + 1].unsqueeze(0)
            if by_steps:
                cache = runner.new_cache(1, WINDOW)
                logits = torch.cat([runner(x[:, :1], cache=cache)] + [runner(x[:, i : i + 1], cache=cache)
                                                                       for i in range(1, WINDOW)], 1)
            else:
                logits = runner(x[:, :-1])
            nats += F.cross_entropy(logits[0].float(), x[0, 1:], reduction="sum").item()
            count += WINDOW
    return math.exp(nats / count)


def continuation(loaded, prompt: list[int], n: int) -> list[int]:
    """n greedy tokens after prompt (EOS ignored)."""
    class NoStop:
        stop_ids: frozenset[int] = frozenset()
        eos_id = loaded.tokenizer.eos_id

        def stream_decoder(self):
            return loaded.tokenizer.stream_decoder()

    result = generate(loaded.runner, NoStop(), prompt, max_new_tokens=n, params=SamplingParams(temperature=0))
    return list(result.samples[0].token_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bigcode-tiny")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dtypes = ["bfloat16", "float32", "int8", "int4"]
    loaded = {d: open_model(args.model, "causal-lm", dtype=d, device="cpu") for d in dtypes}
    tokenizer = loaded["bfloat16"].tokenizer
    files = heldout_files(CORPUS_ROOT, args.files)
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    stream: list[int] = []
    for text in texts:
        stream += tokenizer.encode(text) + [tokenizer.eos_id]
    ids = torch.tensor(stream)
    print(f"{len(files)} held-out stdlib files, {len(ids)} tokens", file=sys.stderr)
    prompts = [tokenizer.encode(t)[:64] for t in texts if len(tokenizer.encode(t)) >= 64][: args.prompts]
    report: dict = {"model": args.model, "heldout_files": len(files), "tokens": len(ids), "dtypes": {}}
    reference = [continuation(loaded["bfloat16"], p, 32) for p in prompts]
    for dtype in dtypes:
        runner = loaded[dtype].runner
        row = {"decode_by": runner.decode_path,
               "ppl_prefill": round(perplexity(runner, ids, args.windows, by_steps=False), 3),
               "ppl_decode": round(perplexity(runner, ids, args.windows, by_steps=True), 3)}
        outs = reference if dtype == "bfloat16" else [continuation(loaded[dtype], p, 32) for p in prompts]
        prefix = [next((i for i, (a, b) in enumerate(zip(o, r)) if a != b), len(r)) for o, r in zip(outs, reference)]
        same = sum(a == b for o, r in zip(outs, reference) for a, b in zip(o, r))
        row.update({"continuations": len(prompts), "identical": sum(p == 32 for p in prefix),
                    "mean_matching_prefix": round(sum(prefix) / max(len(prefix), 1), 1),
                    "tokens_equal": round(same / max(32 * len(prompts), 1), 3)})
        report["dtypes"][dtype] = row
        print(json.dumps({"dtype": dtype, **row}), flush=True)
    base = report["dtypes"]["bfloat16"]
    for dtype in ("int8", "int4"):
        row = report["dtypes"][dtype]
        print(json.dumps({"dtype": dtype, "ppl_prefill_vs_bf16": round(row["ppl_prefill"] / base["ppl_prefill"] - 1, 4),
                          "ppl_decode_vs_bf16": round(row["ppl_decode"] / base["ppl_decode"] - 1, 4)}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
