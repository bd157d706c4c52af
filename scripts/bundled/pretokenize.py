"""Tokenize the LM corpus into flat token files for training the bundled code LM.

Command (from the repository root, after corpus.py and tokenizer.py)::

    /work/venv/bin/python scripts/bundled/pretokenize.py

Writes to ``data/lm/``:

- ``train.bin``: numpy uint16, every file of the Python train split plus a seeded sample of each
  other language's train split, weighted towards the languages users complete: ``TRAIN_MB`` below
  (JavaScript, then Java, Go, Rust, C, shell), ``--other-mb`` MB (default 0.5) for the rest; in a
  seeded random file order; each file's tokens are followed by ``<|endoftext|>`` (id 0), nothing before it.
- ``heldout.bin``: the same for the Python held-out files (plus ``--heldout-other-mb`` MB of
  each other language, default 0), in manifest order.
- ``heldout_files.jsonl``: one record per held-out file in ``heldout.bin`` order:
  ``{"path", "lang", "bytes", "start", "end"}`` where ``path`` is relative to data/corpus and
  tokens ``[start, end)`` of heldout.bin are the file (the ``<|endoftext|>`` after it is at
  ``end``); ``bytes`` lets evaluation turn loss into bits per byte.
- ``meta.json``: token counts, bytes, vocabulary size, tokenizer hash.

Read a file with ``numpy.memmap(path, dtype=numpy.uint16, mode="r")``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "data" / "corpus"
OUT = REPO / "data" / "lm"
TOKENIZER = REPO / "bigcode_cli" / "bundled" / "bigcode-tiny" / "tokenizer.json"
EOT_ID = 0
# MB of each language's train split that go into train.bin after all of Python (a language with less takes what
# it has); every other language gets --other-mb.
TRAIN_MB = {"javascript": 8.0, "java": 6.0, "go": 6.0, "rust": 6.0, "c": 6.0, "shell": 2.0}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def choose(records: list[dict], split: str, other_bytes: int, rng: random.Random,
           lang_bytes: dict[str, int] | None = None) -> list[dict]:
    """All Python files of a split plus up to lang_bytes[lang] (default other_bytes) of each other language."""
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["split"] == split:
            by_lang[r["lang"]].append(r)
    chosen = list(by_lang.pop("python", []))
    for lang in sorted(by_lang):
        files = by_lang[lang]
        rng.shuffle(files)
        total, cap = 0, (lang_bytes or {}).get(lang, other_bytes)
        for r in files:
            if total >= cap:
                break
            chosen.append(r)
            total += r["bytes"]
    return chosen


def write_tokens(tok, files: list[dict], path: Path) -> list[dict]:
    """Tokenize files into path (uint16, EOT after each); return per-file token ranges."""
    ranges = []
    pos = 0
    with open(path, "wb") as f:
        for i in range(0, len(files), 256):
            batch = files[i:i + 256]
            texts = [(CORPUS / r["path"]).read_text(encoding="utf-8") for r in batch]
            for r, enc in zip(batch, tok.encode_batch(texts, add_special_tokens=False)):
                ids = np.asarray(enc.ids + [EOT_ID], dtype=np.uint16)
                f.write(ids.tobytes())
                ranges.append({"path": r["path"], "lang": r["lang"], "bytes": r["bytes"],
                               "start": pos, "end": pos + len(ids) - 1})
                pos += len(ids)
    return ranges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other-mb", type=float, default=0.5)
    parser.add_argument("--heldout-other-mb", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    if tok.get_vocab_size() > 65535:
        raise SystemExit("vocabulary does not fit uint16")
    with open(CORPUS / "manifest.jsonl") as f:
        records = [json.loads(line) for line in f]
    rng = random.Random(args.seed)
    train = choose(records, "train", int(args.other_mb * 1e6), rng,
                   {lang: int(mb * 1e6) for lang, mb in TRAIN_MB.items()})
    rng.shuffle(train)
    heldout = choose(records, "heldout", int(args.heldout_other_mb * 1e6), rng)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"vocab_size": tok.get_vocab_size(), "eot_id": EOT_ID, "dtype": "uint16",
            "tokenizer_sha1": hashlib.sha1(TOKENIZER.read_bytes()).hexdigest()}
    for name, files in (("train", train), ("heldout", heldout)):
        ranges = write_tokens(tok, files, OUT / f"{name}.bin")
        n_tokens = ranges[-1]["end"] + 1 if ranges else 0
        by_lang: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for r in ranges:
            s = by_lang[r["lang"]]
            s[0] += 1
            s[1] += r["bytes"]
            s[2] += r["end"] - r["start"] + 1
        meta[name] = {"files": len(ranges), "tokens": n_tokens,
                      "bytes": sum(r["bytes"] for r in ranges),
                      "by_lang": {k: {"files": v[0], "bytes": v[1], "tokens": v[2]}
                                  for k, v in sorted(by_lang.items())}}
        log(f"{name}: {len(ranges)} files, {meta[name]['bytes'] / 1e6:.1f} MB, "
            f"{n_tokens:,} tokens")
        for lang, v in sorted(by_lang.items()):
            log(f"  {lang:12} {v[0]:6} files {v[1] / 1e6:7.2f} MB {v[2]:12,} tokens")
        if name == "heldout":
            with open(OUT / "heldout_files.jsonl", "w") as f:
                for r in ranges:
                    f.write(json.dumps(r) + "\n")
    (OUT / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
