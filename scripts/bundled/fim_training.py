"""Fill-in-the-middle training examples for the bundled code LM, in exactly the form inference sends.

A piece of source text is cut into prefix / middle / suffix where editors put a cursor:
- "line": the rest of one line, from its first non-blank character (most often) or from a random column,
  through its newline, as `bigcode complete` with a <FILL> on an indented line asks for;
- "block": the same start, through the end of the block it opens (the lines indented deeper than it) or a
  few more lines;
- "random": between two random characters (the SantaCoder objective).
The example is the prompt `bigcode_cli.generation.fim.fim_prompt_ids` builds for that prefix and suffix (PSM
or SPM; its sentinels placed by `fim_prompt_from_ids`, as at inference, so sentinels and the separate encoding
of prefix and suffix match token for token), then the separately encoded middle and <|endoftext|>, the token that ends a completion.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bigcode_cli.generation.fim import fim_prompt_ids
from bigcode_cli.text.tokenizer import Tokenizer

EOS = 0
# How often each kind of middle is chosen, and how often the cursor starts a line's code (else a random column).
KINDS = ("line", "block", "random")
KIND_WEIGHTS = (0.5, 0.25, 0.25)
CODE_START_RATE = 0.7
MAX_BLOCK_LINES = 8


class Cut(NamedTuple):
    """A text split at the cursor and at the end of the text the model is asked for."""

    prefix: str
    middle: str
    suffix: str


def _line_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, end past its newline (or at the end of the text)."""
    spans, start = [], 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        spans.append((start, end))
        start = end
    return spans


def _indent(line: str) -> int:
    """Width of a line's leading whitespace, tabs expanded."""
    expanded = line.expandtabs(8)
    return len(expanded) - len(expanded.lstrip())


def choose_cut(text: str, kind: str, rng: np.random.Generator) -> Cut:
    """Cut `text` around a middle of the given kind ("line", "block" or "random")."""
    if kind == "random":
        a, b = sorted(int(x) for x in rng.integers(0, len(text) + 1, size=2))
        return Cut(text[:a], text[a:b], text[b:])
    spans = _line_spans(text)
    coded = [i for i, (s, e) in enumerate(spans) if text[s:e].strip()]
    if not coded:
        return choose_cut(text, "random", rng)
    first = coded[int(rng.integers(len(coded)))]
    start, end = spans[first]
    line = text[start:end]
    code_at = start + len(line) - len(line.lstrip())
    content_end = start + len(line.rstrip("\r\n"))
    if rng.random() < CODE_START_RATE or content_end <= code_at:
        cursor = code_at
    else:
        cursor = int(rng.integers(code_at, content_end))
    last = first
    if kind == "block":
        level = _indent(line)
        body = first + 1
        while body < len(spans) and (not text[slice(*spans[body])].strip()
                                     or _indent(text[slice(*spans[body])]) > level):
            body += 1
        opened = any(_indent(text[slice(*spans[j])]) > level for j in range(first + 1, body)
                     if text[slice(*spans[j])].strip())
        if opened and body - 1 - first <= 4 * MAX_BLOCK_LINES:
            last = body - 1
        else:
            last = min(len(spans) - 1, first + int(rng.integers(1, MAX_BLOCK_LINES + 1)))
        while last > first and not text[slice(*spans[last])].strip():
            last -= 1  # a block ends at its last line of code
    stop = spans[last][1]
    return Cut(text[:cursor], text[cursor:stop], text[stop:])


def fim_example(tokenizer: Tokenizer, cut: Cut, order: str) -> list[int]:
    """The ids of one training example: the inference prompt for the cut, the middle, <|endoftext|>."""
    return [*fim_prompt_ids(tokenizer, cut.prefix, cut.suffix, order), *tokenizer.encode(cut.middle), EOS]


def fim_piece(tokenizer: Tokenizer, ids: np.ndarray, rng: np.random.Generator) -> list[int]:
    """A tokenized piece of a document rewritten as a FIM example (kind and order drawn at random)."""
    text = tokenizer.decode(ids.tolist())
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
    order = "psm" if rng.random() < 0.5 else "spm"
    return fim_example(tokenizer, choose_cut(text, kind, rng), order)
