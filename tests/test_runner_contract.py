"""The Runner and Cache protocols (bigcode_cli.model.runner), held by both engines the same way: the
native runner and KVCache against transformers' own model and DynamicCache, on a checkpoint it saved."""

from __future__ import annotations

import pytest
import torch
from checkpoints import save_checkpoint

from bigcode_cli.model import engine
from bigcode_cli.model.runner import Cache, Runner

FP32_TOL = 1e-4


@pytest.fixture(scope="module", params=[True, False], ids=["mqa", "mha"])
def lm(request, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("lm") / "ckpt", multi_query=request.param)


def _runners(lm):
    return [engine.load(lm, "causal-lm", engine=name, attn="eager", device="cpu") for name in ("native", "transformers")]


def test_both_engines_are_runners_with_caches(lm):
    for runner in _runners(lm):
        assert isinstance(runner, Runner) and runner.dtype_name == "float32"
        cache = runner.new_cache(1, 8)
        assert isinstance(cache, Cache) and cache.length == 0


def test_repeat_batch_and_select_change_the_cache_itself_the_same_way_in_both_engines(lm):
    prompt = torch.tensor([[5, 17, 42, 8, 3]])
    step = torch.tensor([[11], [12], [13]])
    results = []
    with torch.inference_mode():
        for runner in _runners(lm):
            cache = runner.new_cache(1, 8)
            runner(prompt, cache=cache)
            repeated = cache.repeat_batch(3)
            assert repeated is cache and cache.length == 5
            three = runner(step, cache=cache)[:, -1]  # (3, V): each row continues the one prompt
            kept = cache.select(torch.tensor([2, 0]))
            assert kept is cache and cache.length == 6
            two = runner(torch.tensor([[20], [21]]), cache=cache)[:, -1]  # rows: prompt+13, prompt+11
            assert cache.length == 7
            results.append((three, two))
            # the same tokens without a cache: what every row must equal
            alone = [runner(torch.cat([prompt[0], torch.tensor([t, n])]).unsqueeze(0))[0, -1]
                     for t, n in ((13, 20), (11, 21))]
            assert (two - torch.stack(alone)).abs().max().item() <= FP32_TOL
    (native_three, native_two), (ref_three, ref_two) = results
    assert (native_three - ref_three).abs().max().item() <= FP32_TOL
    assert (native_two - ref_two).abs().max().item() <= FP32_TOL
