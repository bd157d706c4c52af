"""Context from other files (llama.cpp's `input_extra`) as token ids placed before the FIM prompt.

Each chunk becomes `<file_sep>filename\\ntext`, StarCoder's separator between the files of one
repository in its training data (plain text where the vocabulary has no `<file_sep>`). They go first
in the prompt, so a chunk list that does not change between requests stays in the prompt cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from bigcode_cli.text.tokenizer import Tokenizer

FILE_SEPARATOR = "<file_sep>"


def extra_context_ids(tokenizer: Tokenizer, chunks: Sequence[tuple[str, str]], budget: int) -> list[int]:
    """The ids of the chunks that fit `budget` tokens, keeping the last ones (the most recent) whole."""
    if not chunks or budget <= 0:
        return []
    separator = tokenizer.token_to_id(FILE_SEPARATOR)
    pieces: list[list[int]] = []
    for filename, text in chunks:
        if not text and not filename:
            continue
        body = tokenizer.encode(f"{filename}\n{text}" if filename else text)
        pieces.append(([separator] if separator is not None else tokenizer.encode("\n")) + body)
    kept: list[list[int]] = []
    used = 0
    for piece in reversed(pieces):
        if used + len(piece) > budget:
            break
        kept.append(piece)
        used += len(piece)
    return [i for piece in reversed(kept) for i in piece]
