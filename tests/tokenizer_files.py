"""Tiny byte-level BPE tokenizers trained on the spot, saved like real checkpoints, for tokenizer-side tests."""

from __future__ import annotations

import json
from pathlib import Path

STARCODER_SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
SANTACODER_SPECIALS = ["<|endoftext|>", "<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"]

CORPUS = '''\
def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()


for i in range(10):
    print(i, fibonacci(i))

function add(a, b) {
    return a + b;
}
// comments with unicode: héllo wörld, naïve café, 日本語のテキスト, 中文注释, emoji 😀 🎉 🚀
int main(void) { printf("hello, world\\n"); return 0; }
'''


def train_tokenizer(specials: list[str], vocab_size: int = 360):
    """A byte-level BPE trained on CORPUS with `specials` at ids 0..len-1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([CORPUS] * 4, trainer)
    return tokenizer


def save_tokenizer(directory: Path, specials: list[str], *, config: dict | None = None,
                   extra_tokens: list[str] = (), legacy: bool = False) -> Path:
    """Write tokenizer.json (or vocab.json + merges.txt when legacy) and tokenizer_config.json."""
    tokenizer = train_tokenizer(specials)
    if extra_tokens:
        tokenizer.add_tokens(list(extra_tokens))  # added as NON-special, as some checkpoints do
    directory.mkdir(parents=True, exist_ok=True)
    if legacy:
        tokenizer.model.save(str(directory))
        (directory / "config.json").write_text(json.dumps({"model_type": "gpt_bigcode"}))
    else:
        tokenizer.save(str(directory / "tokenizer.json"))
    if config is None:
        config = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory
