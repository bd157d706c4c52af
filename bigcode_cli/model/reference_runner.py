"""The transformers engine: transformers' own GPTBigCode classes behind the Runner protocol.

The reference for parity checks, and a fallback. Fed positions from the attention mask, like our model.
"""

from __future__ import annotations

import copy
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bigcode_cli.errors import BackendError, CheckpointError
from bigcode_cli.model.attention import resolve_backend
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.model.runner import RunnerBase
from bigcode_cli.model.runtime import resolve_dtype
from bigcode_cli.model.weights import build_model, checkpoint_dtype, load_state_dict
from bigcode_cli.tasks import task as task_row

# our attention backend names -> transformers' attn_implementation
_HF_ATTN = {"eager": "eager", "sdpa": "sdpa", "flash": "flash_attention_2"}


class TransformersCache:
    """transformers' DynamicCache behind the Cache protocol (its batch methods change it in place, as ours do)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    @property
    def capacity(self) -> int:
        return sys.maxsize  # a DynamicCache grows with every call

    def repeat_batch(self, n: int) -> TransformersCache:
        self.cache.batch_repeat_interleave(n)
        return self

    def select(self, rows: torch.Tensor) -> TransformersCache:
        self.cache.batch_select_indices(rows)
        return self

    def split(self, n: int) -> list[TransformersCache]:
        if n == 1:
            return [self]
        return [TransformersCache(copy.deepcopy(self.cache)) for _ in range(n)]

    @property
    def nbytes(self) -> int:
        # the storage, not the view: a cropped layer still holds its whole tensor
        return sum(t.untyped_storage().nbytes() for layer in self.cache.layers
                   for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if t is not None)

    def copy_prefix(self, n: int) -> TransformersCache:
        copied = TransformersCache(copy.deepcopy(self.cache))
        copied._keep(n)
        return copied

    def kept_prefix(self, n: int) -> TransformersCache:
        return self.copy_prefix(n)

    def load_prefix(self, source: TransformersCache, n: int) -> None:  # type: ignore[override]
        self.cache = copy.deepcopy(source.cache)
        self._keep(n)

    def truncate(self, n: int) -> None:
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} positions to {n}")
        self._keep(n)

    def _keep(self, n: int) -> None:
        # crop(-k) drops the last k positions in every transformers version (5.x refuses a positive length)
        if self.length > n:
            self.cache.crop(n - self.length)


def _cache_argument(model: Any) -> str:
    """The name transformers' forward() takes the cache under: `cache` since 5.2x, `past_key_values` before.

    Passed under the other name, the cache is silently swallowed by **kwargs and every step runs as if
    nothing came before it (seen with transformers 5.17).
    """
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class TransformersRunner(RunnerBase):
    """transformers' own GPTBigCode classes, fed positions from the attention mask like our model."""

    def __call__(self, input_ids, attention_mask=None, cache=None, last_only=False):
        T = input_ids.shape[1]
        past = cache.length if cache is not None else 0
        if attention_mask is None:
            positions = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)
        else:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
        kwargs: dict[str, Any] = {"attention_mask": attention_mask, "position_ids": positions}
        if task_row(self.task).generative:
            if cache is not None:
                kwargs.update({_cache_argument(self.model): cache.cache, "use_cache": True})
            else:
                kwargs["use_cache"] = False
            if last_only:
                kwargs["logits_to_keep"] = 1
        return self.model(input_ids, **kwargs).logits

    def new_cache(self, batch: int, capacity: int) -> TransformersCache:
        from transformers import DynamicCache

        return TransformersCache(DynamicCache(config=self.model.config))

    def set_backend(self, name: str) -> None:
        raise BackendError("switching the attention backend of the transformers engine needs a reload")


def load_transformers(path: Path, config: GPTBigCodeConfig, task: str, attn: str, device: torch.device,
                      dtype_name: str) -> TransformersRunner:
    """transformers' class for `task` (the name our task table gives) from the checkpoint at `path`."""
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    row = task_row(task)
    state = load_state_dict(path)  # validates the files and tells us the stored dtype and heads
    if row.head_key not in state and not (row.tied_head and config.tie_word_embeddings):
        build_model(config, task, state, dtype=torch.float32, device=torch.device("meta"), source=str(path))
    dtype = resolve_dtype(dtype_name, checkpoint_dtype(state), device)
    backend = resolve_backend(attn, device, dtype)
    del state
    try:
        model = getattr(transformers, row.model_class).from_pretrained(
            str(path), attn_implementation=_HF_ATTN[backend.name], dtype=dtype, trust_remote_code=False
        )
    except Exception as exc:
        raise CheckpointError(f"transformers could not load {path}: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    reason = "the transformers engine runs its own code" if row.generative else None
    return TransformersRunner(model, config, task, "transformers", backend.name, device, dtype, decode_reason=reason)
