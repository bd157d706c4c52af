"""PromptCache: the keys and values of recent prompts, so that a prompt starting like one of them is
prefilled only after the longest common prefix (what llama.cpp's `cache_prompt` does).

An editor sends a request at every pause in typing, and consecutive requests share most of their
prompt. The cache holds a few one-row KV caches (slots), each with the token ids whose keys and values
it holds. `claim(ids)` hands out the slot sharing the longest prefix with `ids`, cut back to that
prefix; generation writes the rest of the prompt and the tokens it feeds back after it, and
`release(cache, ids)` returns the slot with what it now holds. Not thread-safe: one owner at a time
(the generation worker of `bigcode serve`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from bigcode_cli.model.gpt_bigcode import KVCache

if TYPE_CHECKING:
    from bigcode_cli.model.runner import Runner


@dataclass
class _Slot:
    cache: KVCache
    ids: list[int]  # the tokens at positions 0 .. cache.length - 1


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptCache:
    """Up to `slots` one-row KV caches of recent prompts, most recently used last."""

    def __init__(self, runner: Runner, slots: int = 2) -> None:
        self.runner = runner
        self.slots = max(1, slots)
        self._free: list[_Slot] = []  # most recently used last
        probe = runner.new_cache(1, 1)
        # only our own merged cache can be cut back to a prefix; other engines prefill every prompt
        self.enabled = isinstance(probe, KVCache)

    def __len__(self) -> int:
        return len(self._free)

    def claim(self, ids: Sequence[int], capacity: int) -> Any:
        """A one-row cache for a prompt of `ids` with room for `capacity` positions; its `.length`
        positions already hold the first `.length` ids (always fewer than all of them, so the caller
        prefills at least one token and gets its logits)."""
        if not self.enabled or not ids:
            return self.runner.new_cache(1, capacity)
        capacity = max(capacity, self.runner.context_length)
        best, shared = None, 0
        for slot in self._free:
            n = common_prefix_length(slot.ids, ids)
            if n > shared:
                best, shared = slot, n
        shared = min(shared, len(ids) - 1)
        if best is not None and 2 * shared >= len(best.ids) and best.cache.capacity >= capacity:
            # mostly the same prompt (the user typed a character): reuse that slot in place
            self._free.remove(best)
            best.cache.length = shared
            return best.cache
        # a different prompt: take a new or the least recently used slot, keep `best` for later,
        # and copy the shared prefix over (a copy costs far less than prefilling it)
        target = self._take_other(capacity, keep=best)
        target.length = 0
        if best is not None and shared > 0:
            for into, source in zip(target.layers, best.cache.layers):
                into[:, :shared].copy_(source[:, :shared])
            target.length = shared
        return target

    def release(self, cache: Any, ids: Sequence[int]) -> None:
        """Give a claimed cache back; `ids` are the tokens its `.length` positions now hold."""
        if not self.enabled or not isinstance(cache, KVCache) or cache.layers[0].shape[0] != 1:
            return
        held = list(ids[: cache.length])
        cache.length = len(held)
        self._free.append(_Slot(cache, held))
        while len(self._free) > self.slots:
            self._free.pop(0)

    def clear(self) -> None:
        """Forget every cached prompt (and free the memory)."""
        self._free.clear()

    def _take_other(self, capacity: int, keep: _Slot | None) -> KVCache:
        if len(self._free) >= self.slots:
            for slot in self._free:  # least recently used first
                if slot is not keep and slot.cache.capacity >= capacity:
                    self._free.remove(slot)
                    return slot.cache
        with torch.inference_mode():
            return self.runner.new_cache(1, capacity)
