"""Context from other files (llama.cpp's `input_extra`) as token ids placed before the FIM prompt.

Each chunk becomes `<file_sep>filename\\ntext`, StarCoder's separator between the files of one
repository in its training data (plain text where the vocabulary has no `<file_sep>`). They go first
in the prompt, so a chunk list that does not change between requests stays in the prompt cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from bigcode_cli.generation.completion import MAX_CHARS_PER_TOKEN

if TYPE_CHECKING:
    from bigcode_cli.text.tokenizer import Tokenizer

FILE_SEPARATOR = "<file_sep>"


def extra_context_ids(tokenizer: Tokenizer, chunks: Sequence[tuple[str, str]], budget: int) -> list[int]:
    """The ids of the chunks that fit `budget` tokens, keeping the last ones (the most recent) whole.

    Chunks are tokenized from the last one back and only while they can still fit: a chunk with more characters
    than the budget left could cover is not tokenized at all (megabytes of context cost nothing)."""
    if not chunks or budget <= 0:
        return []
    separator = tokenizer.token_to_id(FILE_SEPARATOR)
    lead = [separator] if separator is not None else tokenizer.encode("\n")
    kept: list[list[int]] = []
    used = 0
    for filename, text in reversed(chunks):
        if not text and not filename:
            continue
        body = f"{filename}\n{text}" if filename else text
        if len(body) > (budget - used - len(lead)) * MAX_CHARS_PER_TOKEN:
            break  # more tokens than are left, whatever they turn out to be
        piece = lead + tokenizer.encode(body)
        if used + len(piece) > budget:
            break
        kept.append(piece)
        used += len(piece)
    return [i for piece in reversed(kept) for i in piece]
