"""Tiny classification / tagging checkpoints (weights written by transformers, a tiny BPE tokenizer) and
helpers to drive the CLI with bytes on stdin."""

from __future__ import annotations

import io
import sys
from pathlib import Path


from checkpoints import save_checkpoint
from tokenizer_files import STARCODER_SPECIALS, save_tokenizer

VOCAB = 400  # the tiny tokenizer has 360 tokens


def model_dir(directory: Path, task: str, labels: list[str], **kwargs) -> Path:
    """A complete checkpoint directory: config + weights from transformers, tokenizer files, pad id 0."""
    id2label = dict(enumerate(labels))
    save_checkpoint(directory, task, vocab_size=VOCAB, num_labels=len(labels), id2label=id2label,
                    label2id={v: k for k, v in id2label.items()}, **kwargs)
    save_tokenizer(directory, STARCODER_SPECIALS)
    return directory


def feed_stdin(monkeypatch, data: bytes) -> None:
    """Make `data` the process's stdin (a real buffered reader, so format detection can peek)."""
    buffer = io.BufferedReader(io.BytesIO(data))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(buffer, encoding="utf-8"))


def hf_model(directory: Path, task: str):
    """transformers' own model for the checkpoint, in eval mode."""
    from transformers import GPTBigCodeForSequenceClassification, GPTBigCodeForTokenClassification

    cls = GPTBigCodeForSequenceClassification if task == "sequence-classification" else GPTBigCodeForTokenClassification
    return cls.from_pretrained(str(directory), attn_implementation="eager").eval()


SNIPPETS = [
    "def fibonacci(n):",
    "x = 1",
    "for i in range(10):\n    print(i, fibonacci(i))",
    "int main(void) { printf(\"hello, world\\n\"); return 0; }",
    "return a + b;",
    "class Stack:\n    def __init__(self):\n        self.items = []",
    "// héllo wörld 日本語",
    "pass",
    "function add(a, b) {\n    return a + b;\n}",
]


