"""Train the byte-level BPE tokenizer of the bundled models on the corpus's train split.

Command (from the repository root, after scripts/bundled/corpus.py)::

    /work/venv/bin/python scripts/bundled/tokenizer.py

Trains on a seeded sample of the train split (by default 24 MB of Python plus up to 1 MB of each
other language), vocabulary 8192, with StarCoder's 19 special tokens at ids 0..18 in StarCoder's
order. Pre-tokenization is GPT-2's byte-level regex split (no prefix space; unlike StarCoder,
digits are not split one by one, because transformers 5's GPT2TokenizerFast would drop that
step and disagree with ``tokenizers``); the decoder is byte-level, so decode(encode(text)) == text for any
text. Writes ``bigcode_cli/bundled/bigcode-tiny/{tokenizer.json, tokenizer_config.json,
special_tokens_map.json}`` and then checks that the files load with ``tokenizers`` and with
``transformers.AutoTokenizer`` and round-trip every held-out file exactly; it prints the
compression (bytes per token) on held-out files per language.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "data" / "corpus"
OUT = REPO / "bigcode_cli" / "bundled" / "bigcode-tiny"

SPECIAL_TOKENS = [
    "<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<filename>",
    "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>",
    "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<empty_output>", "<commit_before>",
    "<commit_msg>", "<commit_after>", "<reponame>",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_manifest() -> list[dict]:
    """Records of data/corpus/manifest.jsonl."""
    with open(CORPUS / "manifest.jsonl") as f:
        return [json.loads(line) for line in f]


def sample_files(records: list[dict], python_bytes: int, other_bytes: int, seed: int) -> list[str]:
    """Seeded sample of train-split paths: python_bytes of Python, other_bytes per other language."""
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["split"] == "train":
            by_lang[r["lang"]].append(r)
    rng = random.Random(seed)
    chosen = []
    for lang in sorted(by_lang):
        files = by_lang[lang]
        rng.shuffle(files)
        budget = python_bytes if lang == "python" else other_bytes
        total = 0
        for r in files:
            if total >= budget:
                break
            chosen.append(r["path"])
            total += r["bytes"]
    return chosen


def build_tokenizer():
    """An untrained byte-level BPE tokenizer with StarCoder's pre-tokenizer and decoder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE())
    # No Digits split (StarCoder has one): transformers 5's GPT2TokenizerFast rebuilds its own
    # plain ByteLevel pre-tokenizer, and both libraries must produce the same ids.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train(paths: list[str], vocab_size: int):
    """Train the BPE on the given corpus files."""
    from tokenizers import pre_tokenizers, trainers

    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def texts():
        for p in paths:
            yield (CORPUS / p).read_text(encoding="utf-8")

    tok.train_from_iterator(texts(), trainer=trainer, length=len(paths))
    return tok


def save(tok, out: Path, model_max_length: int) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json like StarCoder's."""
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    eot = SPECIAL_TOKENS[0]
    config = {
        "add_prefix_space": False,
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": eot,
        "additional_special_tokens": SPECIAL_TOKENS,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "tokenizer_class": "GPT2TokenizerFast",
        "vocab_size": tok.get_vocab_size(),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": eot, "eos_token": eot, "unk_token": eot,
               "additional_special_tokens": SPECIAL_TOKENS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def check(out: Path, records: list[dict]) -> None:
    """Load with tokenizers and transformers; round-trip held-out files; print bytes/token."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(out))
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i or hf.convert_tokens_to_ids(s) != i:
            raise SystemExit(f"special token {s!r} is not at id {i}")
    if hf.eos_token_id != 0 or hf.bos_token_id != 0:
        raise SystemExit("eos/bos must be id 0")
    tricky = "\tdef f(x):\n\t\treturn 'héllo wörld ✓ 🐍'  \n\n  # trailing   \r\n12345 0x1F\n"
    samples = [tricky] + [(CORPUS / r["path"]).read_text(encoding="utf-8")
                          for r in records if r["split"] == "heldout"]
    encs = tok.encode_batch(samples, add_special_tokens=False)
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    langs = ["tricky"] + [r["lang"] for r in records if r["split"] == "heldout"]
    for text, enc, lang in zip(samples, encs, langs):
        if tok.decode(enc.ids, skip_special_tokens=False) != text:
            raise SystemExit(f"tokenizers round trip failed ({lang}): {text[:80]!r}")
        stats[lang][0] += len(text.encode("utf-8"))
        stats[lang][1] += len(enc.ids)
    # transformers must agree with tokenizers (checked on a subset: it is slower).
    for text, enc in list(zip(samples, encs))[:300]:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        if ids != enc.ids or hf.decode(ids, clean_up_tokenization_spaces=False) != text:
            raise SystemExit(f"transformers disagrees on: {text[:80]!r}")
    if hf.decode(hf("x = 1")["input_ids"]) != "x = 1":
        raise SystemExit("transformers default decode does not round-trip")
    log(f"round trip OK on {len(samples)} texts; held-out bytes/token:")
    for lang, (b, t) in sorted(stats.items()):
        log(f"  {lang:12} {b / t:5.2f}  ({b} bytes, {t} tokens)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--python-mb", type=float, default=24.0)
    parser.add_argument("--other-mb", type=float, default=1.0)
    parser.add_argument("--model-max-length", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check-only", action="store_true")
    args = parser.parse_args()
    records = read_manifest()
    if not args.check_only:
        paths = sample_files(records, int(args.python_mb * 1e6), int(args.other_mb * 1e6),
                             args.seed)
        log(f"training on {len(paths)} files")
        tok = train(paths, args.vocab_size)
        save(tok, args.out, args.model_max_length)
        log(f"wrote {args.out}")
    check(args.out, records)


if __name__ == "__main__":
    main()
