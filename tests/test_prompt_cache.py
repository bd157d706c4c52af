"""The prompt cache changes how much is prefilled, never what is generated: greedy tokens with it equal
those of a fresh prefill (itself checked against transformers in test_generation), through typing,
jumps to another prompt, copies of a shared prefix and several samples. It reuses the longest prefix of
any earlier request, never across partitions, and holds at most its bytes, dropping the least recently used."""

from __future__ import annotations

import pytest

from bigcode_cli.generation.loop import generate
from bigcode_cli.generation.prompt_cache import BLOCK, TAKE_SHARE, TAKE_SLACK, PromptCache, common_prefix_length
from bigcode_cli.generation.sampling import SamplingParams
from bigcode_cli.store.loader import open_model

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def model():
    return open_model(None, "causal-lm")


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0
    long = list(range(300))
    for cut in (0, 1, 63, 64, 65, 128, 200, 299):  # the first, a middle and the last id differing, a tuple and a list
        other = long[:cut] + [-1] + long[cut + 1 :]
        assert common_prefix_length(tuple(long), other) == cut
    assert common_prefix_length(tuple(long), long[:130]) == 130


def test_cached_generation_equals_fresh_generation(model):
    runner, tokenizer = model.runner, model.tokenizer
    base = tokenizer.encode("import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        return f.")
    other = tokenizer.encode("class Stack:\n    def __init__(self):\n        self.items = []\n")
    prompts = [
        base,
        base + tokenizer.encode("read"),  # one more word typed
        base,  # the same prompt again: everything but the last token reused
        other,  # another file: a new slot
        base[:20] + tokenizer.encode(" # changed"),  # shares a short prefix with base: copied into a slot
        base + tokenizer.encode("readlines"),
    ]
    cache = PromptCache(runner)
    for ids in prompts:
        fresh = generate(runner, tokenizer, ids, max_new_tokens=12, params=GREEDY)
        cached = generate(runner, tokenizer, ids, max_new_tokens=12, params=GREEDY, prompt_cache=cache)
        assert [s.token_ids for s in cached.samples] == [s.token_ids for s in fresh.samples]
        assert cached.prompt_tokens == len(ids) and 0 <= cached.cached_tokens < len(ids)
    assert len(cache) <= len(prompts) - 1  # the repeated prompt is held once


def test_reuse_counts_and_several_samples(model):
    runner, tokenizer = model.runner, model.tokenizer
    ids = tokenizer.encode("def fib(n):\n    if n < 2:\n        return n\n    return ")
    cache = PromptCache(runner)
    first = generate(runner, tokenizer, ids, max_new_tokens=6, params=GREEDY, prompt_cache=cache)
    assert first.cached_tokens == 0
    typed = ids + tokenizer.encode("fib")
    second = generate(runner, tokenizer, typed, max_new_tokens=6, params=GREEDY, prompt_cache=cache)
    assert second.cached_tokens >= len(ids) - 1
    seeded = SamplingParams(temperature=0.8, seed=3)
    fresh = generate(runner, tokenizer, typed, max_new_tokens=6, params=seeded, num_samples=3)
    cached = generate(runner, tokenizer, typed, max_new_tokens=6, params=seeded, num_samples=3, prompt_cache=cache)
    assert cached.cached_tokens == len(typed) - 1
    assert [s.token_ids for s in cached.samples] == [s.token_ids for s in fresh.samples]


def _release(runner, cache, ids, partition=""):
    """Hand `cache` a finished request that held `ids` (prefilled for real, so the keys are the model's)."""
    import torch

    with torch.inference_mode():
        held = cache.claim(ids + [0], len(ids) + 1, partition)
        runner(torch.tensor([ids[held.length :]]), cache=held, last_only=True)
        cache.release(held, ids, partition)


def _claimed(cache, ids, partition=""):
    """How many of `ids` a request would find cached; it then ends at once, as a request does (releasing what it
    claimed: an entry it extends was handed to it, not copied)."""
    import torch

    with torch.inference_mode():
        held = cache.claim(ids, len(ids) + 4, partition)
        cache.release(held, ids[: held.length], partition)
        return held.length


def _prompt(tokenizer, text: str, blocks: int = 3) -> list[int]:
    ids = tokenizer.encode(text * 40)
    return ids[: blocks * BLOCK + 5]


def test_longest_prefix_of_any_earlier_request(model):
    runner, tokenizer = model.runner, model.tokenizer
    cache = PromptCache(runner)
    a = _prompt(tokenizer, "def alpha(x):\n    return x + 1\n")
    b = a[: BLOCK + 3] + _prompt(tokenizer, "class Beta:\n    pass\n")
    _release(runner, cache, a)
    _release(runner, cache, b)
    assert len(cache) == 2
    assert _claimed(cache, a + [7, 8]) == len(a)  # all of a, from the first request
    assert _claimed(cache, b[:-2] + [9]) == len(b) - 2  # b's prefix, from the second
    assert _claimed(cache, b[: BLOCK + 3] + [1, 2]) == BLOCK + 3  # shared by both: the same positions
    assert _claimed(cache, [5] + a) == 0  # nothing starts like it


def test_partitions_never_share(model):
    runner, tokenizer = model.runner, model.tokenizer
    cache = PromptCache(runner)
    ids = _prompt(tokenizer, "SECRET = 'hunter2'\n")
    _release(runner, cache, ids, partition=("key-a", ""))
    assert _claimed(cache, ids + [1], ("key-a", "")) == len(ids)
    assert _claimed(cache, ids + [1], ("key-b", "")) == 0
    assert _claimed(cache, ids + [1], ("key-a", "salt")) == 0
    assert _claimed(cache, ids + [1], "") == 0
    view = cache.partition(("key-a", ""))
    import torch

    with torch.inference_mode():
        assert view.claim(ids + [1], len(ids) + 2).length == len(ids)


def test_bytes_never_exceed_the_bound_and_the_least_recently_used_goes_first(model):
    runner, tokenizer = model.runner, model.tokenizer
    first, second, third = (_prompt(tokenizer, text) for text in ("import os\n", "import sys\n", "x = [1, 2]\n"))
    assert len(first) == len(second) == len(third)
    probe = PromptCache(runner)
    _release(runner, probe, first)
    one = probe.bytes
    assert one > 0
    cache = PromptCache(runner, max_bytes=2 * one + one // 2)  # room for two entries, not three
    _release(runner, cache, first)
    _release(runner, cache, second)
    assert _claimed(cache, first + [1]) == len(first)  # first is now more recently used than second
    _release(runner, cache, third)
    assert len(cache) == 2 and cache.bytes == 2 * one <= cache.max_bytes
    assert _claimed(cache, second + [1]) == 0  # the least recently used was dropped
    assert _claimed(cache, first + [1]) == len(first)
    assert _claimed(cache, third + [1]) == len(third)
    tiny = PromptCache(runner, max_bytes=one - 1)  # an entry larger than the whole bound is not kept
    _release(runner, tiny, first)
    assert len(tiny) == 0 and tiny.bytes == 0
    off = PromptCache(runner, max_bytes=0)
    _release(runner, off, first)
    assert len(off) == 0 and _claimed(off, first + [1]) == 0


def test_a_request_too_large_for_the_cache_leaves_its_cached_prefix_alone(model):
    runner, tokenizer = model.runner, model.tokenizer
    short = _prompt(tokenizer, "def gamma(items):\n    return sorted(items)\n")
    longer = short + _prompt(tokenizer, "print(gamma([3, 1, 2]))\n", blocks=6)
    probe = PromptCache(runner)
    _release(runner, probe, short)
    cache = PromptCache(runner, max_bytes=probe.bytes + probe.bytes // 2)  # room for `short`, not for `longer`
    _release(runner, cache, short)
    _release(runner, cache, longer)  # a long conversation going on past the cache's size
    assert len(cache) == 1 and cache.bytes == probe.bytes
    assert _claimed(cache, longer) == len(short)  # the prefix is still there to reuse


def test_the_transformers_engine_reuses_through_the_same_protocol():
    reference = open_model(None, "causal-lm", engine="transformers")
    runner, tokenizer = reference.runner, reference.tokenizer
    ids = tokenizer.encode("def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n" * 2)
    cache = PromptCache(runner)
    generate(runner, tokenizer, ids, max_new_tokens=4, params=GREEDY, prompt_cache=cache)
    assert len(cache) == 1 and cache.bytes > 0
    typed = ids + tokenizer.encode("print(fib(10))")
    fresh = generate(runner, tokenizer, typed, max_new_tokens=8, params=GREEDY)
    cached = generate(runner, tokenizer, typed, max_new_tokens=8, params=GREEDY, prompt_cache=cache)
    assert cached.cached_tokens >= len(ids) - 1
    assert [s.token_ids for s in cached.samples] == [s.token_ids for s in fresh.samples]


def test_a_finished_cache_is_kept_whole_when_it_is_its_own_and_nearly_full(model):
    """kept_prefix: the cache itself (no 10 MB copy per request of an editor-sized window) when nothing else
    shares its memory and little lies past what it holds; a copy otherwise. The positions are the same."""
    import torch

    runner = model.runner
    ids = list(range(5, 45))
    with torch.inference_mode():
        snug = runner.new_cache(1, len(ids) + 16)
        runner(torch.tensor([ids]), cache=snug)
        kept = snug.kept_prefix(len(ids) - 3)
        assert kept is snug and kept.length == len(ids) - 3
        roomy = runner.new_cache(1, len(ids) + 500)
        runner(torch.tensor([ids]), cache=roomy)
        copied = roomy.kept_prefix(len(ids))
        assert copied is not roomy and copied.nbytes < roomy.nbytes
        rows = roomy.split(2)
        assert all(row.kept_prefix(len(ids)) is not row for row in rows)
        for a, b in zip(copied.layers, snug.layers):
            assert torch.equal(a[:, : len(ids) - 3], b[:, : len(ids) - 3])


def test_an_entry_that_a_later_one_extends_is_dropped_and_only_that_one(model):
    runner, tokenizer = model.runner, model.tokenizer
    cache = PromptCache(runner)
    a = _prompt(tokenizer, "def alpha(x):\n    return x + 1\n")
    sibling = a[: BLOCK + 3] + _prompt(tokenizer, "class Beta:\n    pass\n")  # shares a's first block only
    _release(runner, cache, a)
    _release(runner, cache, sibling)
    _release(runner, cache, a + [7, 8, 9])  # a typed on: a is a prefix of it
    assert len(cache) == 2  # the extension and the sibling
    assert _claimed(cache, a + [7, 8, 9, 10]) == len(a) + 3
    assert _claimed(cache, sibling + [4]) == len(sibling)


def test_a_keystroke_takes_the_entry_it_extends_over_and_puts_it_back_longer(model):
    """An editor's next request shares all but the last few positions of its last one: the entry's own memory
    is handed over (no copy), the greedy tokens are those of a fresh prefill, and the cache holds one entry
    per window, not one per keystroke."""
    runner, tokenizer = model.runner, model.tokenizer
    text = "import json\n\n\ndef load(path):\n    with open(path) as f:\n        data = json.load(f)\n    return "
    cache = PromptCache(runner)
    first = generate(runner, tokenizer, tokenizer.encode(text), max_new_tokens=6, params=GREEDY, prompt_cache=cache)
    assert len(cache) == 1
    (entry,) = cache._entries
    memory = entry.cache.layers[0].data_ptr()
    for typed in ("d", "da", "dat", "data"):
        ids = tokenizer.encode(text + typed)
        fresh = generate(runner, tokenizer, ids, max_new_tokens=6, params=GREEDY)
        cached = generate(runner, tokenizer, ids, max_new_tokens=6, params=GREEDY, prompt_cache=cache)
        assert [s.token_ids for s in cached.samples] == [s.token_ids for s in fresh.samples]
        assert cached.cached_tokens >= len(ids) - 3
        assert len(cache) == 1  # the longer prefix replaced the one it extended
        (entry,) = cache._entries
        assert entry.cache.layers[0].data_ptr() == memory  # the same memory all along: handed over, never copied
    assert first.cached_tokens == 0


@pytest.mark.parametrize("blocks, copy_drop, take_drop",
                         [(4, BLOCK + 5, 2), (24, TAKE_SLACK + 40, TAKE_SLACK + 10), (24, "edge + 1", "edge")])
def test_a_request_dropping_too_much_of_an_entry_copies_it_and_one_dropping_little_takes_it_over(
        model, blocks, copy_drop, take_drop):
    """A request that would drop more of an entry than its slack copies it and leaves it whole; one that drops
    little takes it over. The slack grows with what is shared (an editor's unaccepted completion past a long
    window): the second case drops more than TAKE_SLACK and is handed the entry all the same; the third drops
    exactly as much as the slack allows, then one more."""
    runner, tokenizer = model.runner, model.tokenizer
    cache = PromptCache(runner)
    ids = _prompt(tokenizer, "value = compute(first, second)\n", blocks=blocks)
    slack = lambda drop: max(TAKE_SLACK, (len(ids) - drop) // TAKE_SHARE)  # noqa: E731 - what _takes allows
    if take_drop == "edge":
        take_drop = max(drop for drop in range(len(ids)) if drop <= slack(drop))
        copy_drop = take_drop + 1
    assert copy_drop > slack(copy_drop) and take_drop <= slack(take_drop)
    _release(runner, cache, ids)
    (entry,) = cache._entries
    import torch

    with torch.inference_mode():
        early = ids[: len(ids) - copy_drop] + [3]
        held = cache.claim(early, len(early) + 4)
        assert held.length == len(early) - 1 and held is not entry.cache
        assert cache._entries == {entry: None} and entry.cache.length == len(ids)  # still whole, still there
        late = ids[: len(ids) - take_drop] + [3]
        taken = cache.claim(late, len(late) + 4)
        assert taken is entry.cache and taken.length == len(ids) - take_drop and len(cache) == 0 and cache.bytes == 0
        cache.release(taken, late[: taken.length])
    assert len(cache) == 1 and _claimed(cache, late + [1]) == len(late) - 1
