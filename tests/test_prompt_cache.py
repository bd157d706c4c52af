"""The prompt cache changes how much is prefilled, never what is generated: greedy tokens with it equal
those of a fresh prefill (itself checked against transformers in test_generation), through typing,
jumps to another prompt, slot reuse, copies of a shared prefix and several samples."""

from __future__ import annotations

import pytest

from bigcode_cli.generation.loop import generate
from bigcode_cli.generation.prompt_cache import PromptCache, common_prefix_length
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
    cache = PromptCache(runner, slots=2)
    for ids in prompts:
        fresh = generate(runner, tokenizer, ids, max_new_tokens=12, params=GREEDY)
        cached = generate(runner, tokenizer, ids, max_new_tokens=12, params=GREEDY, prompt_cache=cache)
        assert [s.token_ids for s in cached.samples] == [s.token_ids for s in fresh.samples]
        assert cached.prompt_tokens == len(ids) and 0 <= cached.cached_tokens < len(ids)
    assert len(cache) == 2


def test_reuse_counts_and_several_samples(model):
    runner, tokenizer = model.runner, model.tokenizer
    ids = tokenizer.encode("def fib(n):\n    if n < 2:\n        return n\n    return ")
    cache = PromptCache(runner, slots=1)
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
