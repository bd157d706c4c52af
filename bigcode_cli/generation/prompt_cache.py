"""PromptCache: one prefix cache for every request of a worker, so that a prompt starting like any earlier
request (its prompt and the tokens generated after it) is prefilled only after the longest shared prefix.

GPTBigCode's positions are learned absolute embeddings added at the input, so the keys and values of a
position depend on every token before it: only an exact token prefix can be reused, at the same
positions (shifting cached keys, llama.cpp's `--cache-reuse`, would be wrong here).

Entries are finished requests' caches, copied down to the positions they hold, keyed by (partition,
tokens). The index is a hash chain over fixed-size blocks of BLOCK tokens: block k of a sequence is
keyed by the hash of its partition and all its tokens up to the end of block k, so the longest cached
prefix is found with one dict look-up per block of the new prompt, and an entry leaves the index by
deleting its own keys (no tree to rebalance or split on eviction). The block only finds candidates: how
much is reused is counted token by token against the entry's real tokens, so a hash collision can cost a
match, never correctness. Entries are evicted least recently used first, so the bytes held never exceed
`max_bytes`. Partitions never share: a request sees only entries of its own partition (its API key,
its `cache_salt`), so timings cannot tell one user another's prompts.

A request `claim`s a one-row cache holding the longest cached prefix, and `release`s it when it ends;
everything goes through the runner's Cache protocol. Where the request extends that entry by all but a few of
its positions (an editor's next keystroke: the same window, its end typed again) the entry's own cache is
handed over instead of copied: the request's release puts the longer prefix back. Copying it was most of what
a keystroke cost the engine thread with eight editors (a fresh 5 MB cache written page by page, ~5 ms, while
every other editor's step waited). Caches are made with room to spare (whole ROOM positions), so that the
next keystroke's slightly longer prompt still fits. Not thread-safe: one owner at a time (the
generation worker of `bigcode serve`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Iterator, Sequence

if TYPE_CHECKING:
    from bigcode_cli.model.runner import Runner

# tokens per index block: small enough that a prompt's last partial block costs little to prefill again,
# large enough that the index of a long prompt stays a few hundred keys
BLOCK = 16
# an entry is handed over (not copied) to a request that has at most TAKE_SLACK tokens of its own left to feed and
# drops at most TAKE_SLACK of the entry's positions, or 1/TAKE_SHARE of those it shares where that is more: what an
# editor's next keystroke drops is its last completion, not accepted (PromptCache._takes). With 16 positions
# alone, 17% of the keystrokes of eight editors asking 16 tokens each were copies (the completion and the
# retokenized end of a word were 17 or 18 positions), each 5 MB at 1,640 positions of the 116m shape, written
# to fresh pages while every other editor's step waited.
TAKE_SLACK = BLOCK
TAKE_SHARE = 8
# caches are made for a whole number of these positions (at most the model's context): room for the next
# keystroke's prompt, so that it can take the cache over
ROOM = 64
DEFAULT_CACHE_RAM_MIB = 256
MIB = 1024 * 1024


@dataclass(eq=False)
class _Entry:
    partition: Hashable
    ids: tuple[int, ...]  # the tokens at positions 0 .. cache.length - 1
    cache: Any  # a one-row Cache holding exactly those positions
    nbytes: int
    keys: list[tuple[Hashable, int, int]] = field(default_factory=list)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _block_keys(partition: Hashable, ids: Sequence[int]) -> Iterator[tuple[Hashable, int, int]]:
    """The index key of each full block of `ids`: (partition, block number, hash of every token so far)."""
    chained = hash(partition)
    for k in range(len(ids) // BLOCK):
        chained = hash((chained, tuple(ids[k * BLOCK : (k + 1) * BLOCK])))
        yield partition, k, chained


class PromptCache:
    """Finished requests' key/value caches, indexed by token prefix, at most `max_bytes` in all."""

    def __init__(self, runner: Runner, max_bytes: int = DEFAULT_CACHE_RAM_MIB * MIB) -> None:
        self.runner = runner
        self.max_bytes = max(0, max_bytes)
        self.bytes = 0  # held by the entries now
        self._entries: OrderedDict[_Entry, None] = OrderedDict()  # least recently used first
        self._index: dict[tuple[Hashable, int, int], dict[_Entry, None]] = {}
        self.enabled = self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def partition(self, name: Hashable) -> CachePartition:
        """The view of this cache that requests of partition `name` use (what generation takes)."""
        return CachePartition(self, name)

    def claim(self, ids: Sequence[int], capacity: int, partition: Hashable = "") -> Any:
        """A new one-row cache for a prompt of `ids` with room for `capacity` positions; its `.length`
        positions already hold the first `.length` ids (always fewer than all of them, so the caller
        prefills at least one token and gets its logits)."""
        if not self.enabled or not ids:
            return self.runner.new_cache(1, capacity)
        entry, shared = self._longest(partition, ids)
        shared = min(shared, len(ids) - 1)
        if entry is None or shared <= 0:
            return self._new_cache(capacity)
        if self._takes(entry, shared, len(ids), capacity):
            self._remove(entry)  # this request's release puts it back, longer
            entry.cache.truncate(shared)
            return entry.cache
        cache = self._new_cache(capacity)
        cache.load_prefix(entry.cache, shared)
        self._entries.move_to_end(entry)
        return cache

    def release(self, cache: Any, ids: Sequence[int], partition: Hashable = "") -> None:
        """Keep what a claimed cache holds for later requests; `ids` are the tokens at its `.length` positions."""
        if not self.enabled or cache is None:
            return
        held = tuple(ids[: cache.length])
        if len(held) < BLOCK:
            return  # too short to be found again
        entry, shared = self._longest(partition, held)
        if entry is not None and shared == len(held):  # an entry already holds all of it
            self._entries.move_to_end(entry)
            return
        copy = cache.kept_prefix(len(held))
        entry = _Entry(partition, held, copy, copy.nbytes)
        if entry.nbytes > self.max_bytes:
            return  # larger than the whole cache: the shorter prefixes it holds stay
        entry.keys = list(_block_keys(partition, held))
        # entries that are a prefix of this one are no longer needed: each is among those sharing the first block,
        # and is compared once (comparing it under every block key it shares cost the engine thread tens of
        # milliseconds per finished request with eight editors' windows cached)
        for other in list(self._index.get(entry.keys[0], ())):
            if len(other.ids) <= len(held) and held[: len(other.ids)] == other.ids:
                self._remove(other)
        for key in entry.keys:
            self._index.setdefault(key, {})[entry] = None
        self._entries[entry] = None
        self.bytes += entry.nbytes
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    def clear(self) -> None:
        """Forget every cached prefix (and free the memory)."""
        self._entries.clear()
        self._index.clear()
        self.bytes = 0

    @staticmethod
    def _takes(entry: _Entry, shared: int, prompt: int, capacity: int) -> bool:
        """Whether a request of `prompt` ids sharing `shared` of `entry`'s takes the entry over: it drops at most
        TAKE_SLACK of the entry's positions or 1/TAKE_SHARE of the shared ones (a request that wants the dropped
        ones later feeds them again), has at most TAKE_SLACK of its own left to feed (it gives the entry back a
        step later, not after a long prefill others with the same prefix would wait out without it), keeps at
        least a block (what it gives back is kept) and fits in the entry's cache."""
        return (len(entry.ids) - shared <= max(TAKE_SLACK, shared // TAKE_SHARE) and prompt - shared <= TAKE_SLACK
                and shared >= BLOCK and entry.cache.capacity >= capacity)

    def _new_cache(self, capacity: int) -> Any:
        """A one-row cache of at least `capacity` positions, rounded up to whole ROOMs within the context."""
        roomy = (capacity + ROOM - 1) // ROOM * ROOM
        return self.runner.new_cache(1, max(capacity, min(roomy, self.runner.context_length)))

    def _longest(self, partition: Hashable, ids: Sequence[int]) -> tuple[_Entry | None, int]:
        """The entry of `partition` sharing the longest prefix with `ids` (at least one block), and its length."""
        candidates: dict[_Entry, None] = {}
        for key in _block_keys(partition, ids):
            found = self._index.get(key)
            if not found:
                break
            candidates = found
        best, shared = None, 0
        for entry in candidates:
            n = common_prefix_length(entry.ids, ids)
            if n > shared:
                best, shared = entry, n
        return best, shared

    def _remove(self, entry: _Entry) -> None:
        del self._entries[entry]
        self.bytes -= entry.nbytes
        for key in entry.keys:
            bucket = self._index.get(key)
            if bucket is not None:
                bucket.pop(entry, None)
                if not bucket:
                    del self._index[key]


class CachePartition:
    """A PromptCache as one partition's requests see it: they reuse only what this partition released."""

    def __init__(self, cache: PromptCache, name: Hashable) -> None:
        self.cache = cache
        self.name = name

    def claim(self, ids: Sequence[int], capacity: int) -> Any:
        """PromptCache.claim within this partition."""
        return self.cache.claim(ids, capacity, self.name)

    def release(self, cache: Any, ids: Sequence[int]) -> None:
        """PromptCache.release within this partition."""
        self.cache.release(cache, ids, self.name)
