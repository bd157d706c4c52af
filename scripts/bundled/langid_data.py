"""Build the programming-language identification data set for bigcode-tiny-langid.

Command (from the repository root, after scripts/bundled/corpus.py)::

    /work/venv/bin/python scripts/bundled/langid_data.py

Writes ``data/langid/{train,eval,test}.jsonl`` with records ``{"text": ..., "label": ...}``
and ``data/langid/labels.json`` (the label list, in id order).

Snippets are random contiguous windows of 3..40 lines (at most 1500 characters, cut at a line
boundary) from corpus files, after removing a leading comment block that mentions a copyright or
licence. Files are kept apart between the splits:

- test: files of the corpus's ``heldout`` split only (never seen by the LM either);
- eval: ``train``-split files whose ``sha1("langid-eval:" + path) % 100 < 10``;
- train: the other ``train``-split files.

Classes are balanced (``--train/--eval/--test`` snippets per class; default 2000/200/300).
JavaScript and TypeScript share the label ``javascript``; C and C++ share ``c``. A language is
used only when it has at least 15 held-out files (so SQL, with 6, is left out). Snippets are
de-duplicated within a split and no test or eval text occurs in train. Seeded (``--seed``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "data" / "corpus"
OUT = REPO / "data" / "langid"

LABEL_OF = {"typescript": "javascript"}  # corpus language -> label, where they differ
MIN_HELDOUT_FILES = 15
MIN_LINES, MAX_LINES, MAX_CHARS = 3, 40, 1500

COMMENT_LINE = re.compile(r"^\s*(#|//|/\*|\*|\*/|--|;|=(pod|head|cut|begin|end)|\"\"\"|''')")
LICENSE_WORDS = re.compile(r"copyright|licen[cs]e|spdx|warranty", re.IGNORECASE)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def strip_license_header(text: str) -> str:
    """Drop a leading block of comment lines when it looks like a licence header."""
    lines = text.splitlines(keepends=True)
    i = 0
    if lines and lines[0].startswith("#!"):
        i = 1
    start = i
    in_block = False
    while i < len(lines):
        s = lines[i].strip()
        if in_block:
            if "*/" in s or '"""' in s or "'''" in s:
                in_block = False
            i += 1
            continue
        if not s or COMMENT_LINE.match(lines[i]):
            if (s.startswith("/*") and "*/" not in s[2:]) or \
                    (s[:3] in ('"""', "'''") and s.count(s[:3]) == 1):
                in_block = True
            i += 1
            continue
        break
    if i > start and LICENSE_WORDS.search("".join(lines[start:i])):
        return "".join(lines[:start] + lines[i:])
    return text


def window(lines: list[str], rng: random.Random) -> str | None:
    """A random window of MIN_LINES..MAX_LINES lines, at most MAX_CHARS; None if too empty."""
    n = rng.randint(MIN_LINES, MAX_LINES)
    if len(lines) < MIN_LINES:
        return None
    start = rng.randrange(0, max(1, len(lines) - n + 1))
    out, size = [], 0
    for line in lines[start:start + n]:
        if size + len(line) > MAX_CHARS:
            break
        out.append(line)
        size += len(line)
    if len(out) < MIN_LINES:
        return None
    text = "".join(out).strip("\n")
    # Reject windows with too little code in them (blank runs, lone braces).
    if len(re.sub(r"\s", "", text)) < 40 or sum(1 for l in out if l.strip()) < MIN_LINES:
        return None
    return text


def eval_file(path: str) -> bool:
    """Whether a train-split corpus file goes to the eval side."""
    return int(hashlib.sha1(f"langid-eval:{path}".encode()).hexdigest(), 16) % 100 < 10


def sample(files: list[str], count: int, rng: random.Random, cache: dict[str, list[str]],
           forbidden: set[str]) -> list[str]:
    """count distinct snippets from files (a file chosen uniformly, then a window in it)."""
    out: list[str] = []
    seen = set(forbidden)
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > count * 50:
            raise SystemExit(f"could not draw {count} distinct snippets from {len(files)} files")
        path = rng.choice(files)
        if path not in cache:
            text = strip_license_header((CORPUS / path).read_text(encoding="utf-8"))
            cache[path] = text.splitlines(keepends=True)
        snippet = window(cache[path], rng)
        if snippet is None or snippet in seen:
            continue
        seen.add(snippet)
        out.append(snippet)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(CORPUS / "manifest.jsonl") as f:
        records = [json.loads(line) for line in f]
    files: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        label = LABEL_OF.get(r["lang"], r["lang"])
        side = "test" if r["split"] == "heldout" else ("eval" if eval_file(r["path"]) else "train")
        files[label][side].append(r["path"])
    labels = sorted(l for l, f in files.items() if len(f["test"]) >= MIN_HELDOUT_FILES)
    log(f"labels: {labels} (left out: {sorted(set(files) - set(labels))})")
    rng = random.Random(args.seed)
    splits: dict[str, list[dict]] = {"train": [], "eval": [], "test": []}
    cache: dict[str, list[str]] = {}
    for label in labels:
        train = sample(sorted(files[label]["train"]), args.train, rng, cache, set())
        train_set = set(train)
        for side, count in (("eval", args.eval), ("test", args.test)):
            snippets = sample(sorted(files[label][side]), count, rng, cache, train_set)
            splits[side] += [{"text": s, "label": label} for s in snippets]
        splits["train"] += [{"text": s, "label": label} for s in train]
        log(f"  {label:12} files train/eval/test {len(files[label]['train'])}/"
            f"{len(files[label]['eval'])}/{len(files[label]['test'])}")
    OUT.mkdir(parents=True, exist_ok=True)
    for side, rows in splits.items():
        rng.shuffle(rows)
        with open(OUT / f"{side}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts = Counter(r["label"] for r in rows)
        mean_chars = sum(len(r["text"]) for r in rows) / max(1, len(rows))
        log(f"{side}: {len(rows)} snippets, mean {mean_chars:.0f} chars, per class "
            f"{sorted(set(counts.values()))}")
    (OUT / "labels.json").write_text(json.dumps(labels) + "\n")


if __name__ == "__main__":
    main()
