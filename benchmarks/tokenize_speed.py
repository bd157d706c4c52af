"""How long tokenizing an editor's window takes: `Tokenizer.encode` (tokenizers' encode_batch_fast: ids only, the
GIL released) against tokenizers' plain `encode` (ids and character offsets, the GIL held), on the same backend.

    python benchmarks/tokenize_speed.py [--model bigcode-tiny] [--chars 2000 --chars 6000 --chars 20000] [--rounds 31]

The texts are this project's own source, cut to each length. Every round times both once per length, in
alternating order (A B, then B A); medians over rounds are printed as JSON, with their ratio. The ids are checked
to be the same first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a model name or directory (default: the bundled model)")
    parser.add_argument("--chars", type=int, action="append", help="text lengths (default 2,000, 6,000, 20,000)")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()

    from bigcode_cli import store
    from bigcode_cli.text.tokenizer import Tokenizer

    resolved = store.resolve(args.model or store.default_model("causal-lm"), offline=True, download=False)
    tokenizer = Tokenizer.from_dir(resolved.path)
    backend = tokenizer._backend
    root = Path(__file__).resolve().parents[1] / "bigcode_cli"
    source = "".join(path.read_text() for path in sorted(root.rglob("*.py")))

    def ours(text: str) -> list[int]:
        return tokenizer.encode(text)

    def plain(text: str) -> list[int]:
        return backend.encode(text, add_special_tokens=False).ids

    for chars in args.chars or [2000, 6000, 20000]:
        text = source[:chars]
        if ours(text) != plain(text):
            raise SystemExit(f"different ids for the first {chars} characters")
        times: dict[str, list[float]] = {"encode_ms": [], "plain_encode_ms": []}
        for round_ in range(args.rounds):
            pair = [("encode_ms", ours), ("plain_encode_ms", plain)]
            for name, encode in pair if round_ % 2 == 0 else pair[::-1]:
                started = time.perf_counter()
                encode(text)
                times[name].append((time.perf_counter() - started) * 1000)
        medians = {name: round(statistics.median(values), 3) for name, values in times.items()}
        print(json.dumps({"model": resolved.name, "chars": chars, "tokens": len(ours(text)), **medians,
                          "ratio": round(medians["encode_ms"] / medians["plain_encode_ms"], 3)}))


if __name__ == "__main__":
    main()
