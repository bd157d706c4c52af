"""The one batching service `classify` and `tag` share.

Inside a chunk of records, snippets are tokenized, truncated to the context (left or right, reported
per record), sorted by length, cut into batches padded only to their own longest row (left
padding, so the last real token of every row sits at the end), run under `torch.inference_mode`,
and handed back in input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bigcode_cli.choices import TRUNCATE_SIDES
from bigcode_cli.errors import InputError
from bigcode_cli.pipelines.records import Record, chunks

if TYPE_CHECKING:
    import torch

    from bigcode_cli.model.runner import Runner
    from bigcode_cli.text.tokenizer import Tokenizer



@dataclass
class Encoded:
    """A tokenized snippet, cut to fit the context."""

    ids: list[int]
    offsets: list[tuple[int, int]] | None  # character span of each kept token in the original text
    tokens: int  # tokens before truncation
    truncated: str | None = None  # "left" or "right" when tokens were dropped

    def truncation(self) -> dict[str, int | str] | None:
        """What the output record says about truncation, or None when nothing was dropped."""
        if self.truncated is None:
            return None
        return {"side": self.truncated, "tokens": self.tokens, "kept": len(self.ids)}


@dataclass
class Scored:
    """A snippet and the model's logits for it: (num_labels,) per sequence or (T, num_labels) per token."""

    encoded: Encoded
    logits: torch.Tensor  # float32, on the CPU


class Batcher:
    """Runs a classification runner over lists of texts in length-sorted, dynamically padded batches."""

    def __init__(self, runner: Runner, tokenizer: Tokenizer, *, batch_size: int = 32, truncate: str = "right",
                 offsets: bool = False, max_length: int | None = None) -> None:
        if batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        if truncate not in TRUNCATE_SIDES:
            raise InputError(f"--truncate must be left or right, got {truncate!r}")
        self.runner = runner
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.truncate = truncate
        self.offsets = offsets
        self.max_length = min(max_length or runner.context_length, runner.context_length)
        pad = runner.config.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.pad_id if tokenizer.pad_id is not None else 0)

    def encode(self, text: str) -> Encoded:
        """Token ids (and offsets when asked) of one text, truncated to the context."""
        if self.offsets:
            ids, offsets = self.tokenizer.encode_with_offsets(text)
        else:
            ids, offsets = self.tokenizer.encode(text), None
        total = len(ids)
        if total <= self.max_length:
            return Encoded(ids, offsets, total)
        keep = slice(total - self.max_length, None) if self.truncate == "left" else slice(0, self.max_length)
        return Encoded(ids[keep], offsets[keep] if offsets is not None else None, total, self.truncate)

    def score(self, encoded: list[Encoded]) -> list[torch.Tensor]:
        """Logits for each encoded snippet, in the order given."""
        import torch

        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids), reverse=True)
        out: list[torch.Tensor | None] = [None] * len(encoded)
        with torch.inference_mode():
            for begin in range(0, len(order), self.batch_size):
                rows = order[begin:begin + self.batch_size]
                width = len(encoded[rows[0]].ids)
                ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    n = len(encoded[i].ids)
                    ids[r, width - n:] = torch.tensor(encoded[i].ids, dtype=torch.long)
                    mask[r, width - n:] = 1
                device = self.runner.device
                logits = self.runner(ids.to(device), mask.to(device)).float().cpu()
                for r, i in enumerate(rows):
                    n = len(encoded[i].ids)
                    out[i] = logits[r] if logits.dim() == 2 else logits[r, width - n:]
        return out  # type: ignore[return-value]

    def run(self, texts: list[str]) -> list[Scored]:
        """Encode, batch and score `texts`; results in input order."""
        encoded = [self.encode(text) for text in texts]
        return [Scored(e, logits) for e, logits in zip(encoded, self.score(encoded))]


def stream(records: Iterable[Record], batcher: Batcher, *, first_chunk: int | None = None,
           largest_chunk: int | None = None) -> Iterator[list[tuple[Record, Scored | None]]]:
    """Per chunk of input, every record with its result (None for a record with an error, or a blank one), in
    input order."""
    first = first_chunk or batcher.batch_size
    largest = largest_chunk or max(64 * batcher.batch_size, 1024)
    for chunk in chunks(records, first, largest):
        good = [r for r in chunk if r.error is None and not r.blank]
        encoded = []
        for record in good:
            item = batcher.encode(record.text or "")
            if not item.ids:
                record.error = "the text has no tokens"
            encoded.append(item)
        usable = [(r, e) for r, e in zip(good, encoded) if r.error is None]
        logits = batcher.score([e for _, e in usable]) if usable else []
        results = {r.index: Scored(e, x) for (r, e), x in zip(usable, logits)}
        yield [(r, results.get(r.index)) for r in chunk]
