"""The contracts the services program against: a loaded model (`Runner`) and its generation cache (`Cache`).

Both engines implement them: `native` (bigcode_cli.model.native_runner, our model) and `transformers`
(bigcode_cli.model.reference_runner, transformers' own classes, the reference). `bigcode_cli.model.engine.load`
makes one. Services (generation, pipelines, bench) see only these protocols.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, Sequence, runtime_checkable

import torch

from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.model.step_costs import StepCosts


@runtime_checkable
class Cache(Protocol):
    """The key/value cache of one generation, made by `Runner.new_cache` and filled by each runner call.

    `length` counts the positions written so far; a call with T new tokens per row advances it by T.
    `repeat_batch` and `select` change the cache itself and return it: the rows they replace are gone,
    so a caller keeps using the returned object (the same cache) and holds no other view of the old rows.
    """

    @property
    def length(self) -> int:
        """Positions written so far."""
        ...

    @property
    def capacity(self) -> int:
        """Positions it can hold in all (a cache that grows as it is written: sys.maxsize)."""
        ...

    def repeat_batch(self, n: int) -> Cache:
        """Make this one-row cache n identical rows (n samples from one prefill); returns this cache."""
        ...

    def select(self, rows: torch.Tensor) -> Cache:
        """Keep only the given rows, in that order (finished samples dropped); returns this cache."""
        ...

    def split(self, n: int) -> list[Cache]:
        """n one-row caches holding this one-row cache's positions, one per sequence (this cache when n == 1)."""
        ...

    @property
    def nbytes(self) -> int:
        """Bytes of memory the cache's keys and values take."""
        ...

    def copy_prefix(self, n: int) -> Cache:
        """A new one-row cache holding a copy of this one-row cache's first n positions (room for n only)."""
        ...

    def kept_prefix(self, n: int) -> Cache:
        """This one-row cache's first n positions for keeping, by a caller done with the cache: the cache itself,
        truncated to n, where nothing else shares its memory and little of it lies past n; else copy_prefix(n)."""
        ...

    def load_prefix(self, source: Cache, n: int) -> None:
        """Make this one-row cache hold a copy of `source`'s first n positions (a cache of the same runner); its
        length becomes n."""
        ...

    def truncate(self, n: int) -> None:
        """Forget every position from n on (a rejected draft); its length becomes n (n <= length)."""
        ...


class RowTokens(NamedTuple):
    """One sequence's part of a `Runner.step`: its own one-row cache and the 1..k new tokens it gets there."""

    cache: Cache
    tokens: Sequence[int]


@runtime_checkable
class Runner(Protocol):
    """A checkpoint loaded for one task with one engine, ready to run."""

    model: Any  # the nn.Module
    config: GPTBigCodeConfig
    task: str  # a name of bigcode_cli.tasks.TASKS
    engine: str  # a name of bigcode_cli.choices.ENGINES
    backend: str  # the attention backend in use (never "auto")
    device: torch.device
    dtype: torch.dtype
    step_costs: StepCosts  # what its one-row decoding turns of n tokens took (step_costs.record_step files them)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 cache: Cache | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits: causal LM (B, T, V), or (B, 1, V) with last_only; sequence classification (B, L);
        token classification (B, T, L). input_ids (B, T); attention_mask (B, cache.length + T), 1 = real token.
        Only a generative task takes `cache` and `last_only`."""
        ...

    def new_cache(self, batch: int, capacity: int) -> Cache:
        """An empty cache for `batch` sequences of up to `capacity` positions."""
        ...

    def step(self, rows: Sequence[RowTokens], last_only: bool = False) -> torch.Tensor:
        """Logits (sum of the rows' k, V) in float32 of rows of a causal LM, each with its own cache and
        position: row r's k new tokens attend causally to each other and to its cache, which grows by k.
        With last_only (R, V), each row's last token's. In the C kernel a row's logits do not depend on the
        other rows, bit for bit (batch invariance); PyTorch may batch rows that stand at one position."""
        ...

    def step_best(self, rows: Sequence[RowTokens], last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`step`'s logits, and each of their rows' argmax (int64; sampling.best_ids' rule) where the step found it
        on the way for less than a read of the logits afterwards costs (the C kernel: while the LM head's results
        are in cache), else None."""
        ...

    def set_backend(self, name: str) -> None:
        """Switch the attention backend without reloading; BackendError where the engine cannot."""
        ...

    def decoding(self, rows: int) -> contextlib.AbstractContextManager:
        """Settings for the one-token decode steps that follow a prefill, `rows` sequences at a time."""
        ...

    @property
    def dtype_name(self) -> str:
        """What --dtype the model runs as: "int8" / "int4" for quantized weights, else `dtype`'s name
        ("float32"); the one answer every message, record and toolbar shows."""
        ...

    @property
    def decode_path(self) -> str:
        """What runs one-token decode steps: "kernel" (our C kernel) or "torch"."""
        ...

    @property
    def decode_reason(self) -> str | None:
        """Why the C kernel does not run the decode steps (None when it does, or when there are none)."""
        ...

    @property
    def decode_summary(self) -> str:
        """What runs the decode steps, in words: "C kernel" ("C kernel, bf16 on AMX tiles" where they are used),
        or "PyTorch (why not the kernel)"."""
        ...

    @property
    def context_length(self) -> int:
        """The most positions the model can see."""
        ...


@dataclass
class RunnerBase:
    """What both engines' runners hold, and the parts of `Runner` they share."""

    model: Any
    config: GPTBigCodeConfig
    task: str
    engine: str
    backend: str
    device: torch.device
    dtype: torch.dtype
    decode_reason: str | None = None  # see Runner.decode_reason
    quant: str | None = None  # "int8" | "int4" when the matrices hold quantized weights (dtype computes the rest)
    step_costs: StepCosts = field(default_factory=StepCosts)  # see Runner.step_costs

    @property
    def dtype_name(self) -> str:
        """See Runner.dtype_name."""
        return self.quant or str(self.dtype).removeprefix("torch.")

    def decoding(self, rows: int) -> contextlib.AbstractContextManager:
        """No settings of its own (see Runner.decoding)."""
        return contextlib.nullcontext()

    def step(self, rows: Sequence[RowTokens], last_only: bool = False) -> torch.Tensor:
        """One forward per row (see Runner.step): each row computed alone, so alike in any company."""
        outputs = []
        for row in rows:
            ids = torch.tensor([list(row.tokens)], dtype=torch.long, device=self.device)
            outputs.append(self(ids, cache=row.cache, last_only=last_only)[0].float())  # (k | 1, V)
        return torch.cat(outputs)

    def step_best(self, rows: Sequence[RowTokens], last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`step`'s logits; no argmax found on the way (see Runner.step_best)."""
        return self.step(rows, last_only), None

    @property
    def decode_path(self) -> str:
        """PyTorch runs the decode steps (see Runner.decode_path)."""
        return "torch"

    @property
    def decode_summary(self) -> str:
        """See Runner.decode_summary."""
        if self.decode_path == "kernel":
            from bigcode_cli.kernels.decode_support import amx_tiles

            tiles = self.dtype == torch.bfloat16 and self.quant is None and amx_tiles()
            return "C kernel, bf16 on AMX tiles" if tiles else "C kernel"
        return f"PyTorch ({self.decode_reason})" if self.decode_reason else "PyTorch"

    @property
    def context_length(self) -> int:
        """config.n_positions (see Runner.context_length)."""
        return self.config.n_positions
