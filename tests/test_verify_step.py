"""The verify step of speculation: a row fed its last token plus k drafted tokens in one step, then rolled
back (Cache.truncate) to the tokens that were accepted.

What makes greedy speculation exactly lossless: in the C kernel a token is computed the same however many
tokens its step holds, so the logits of a k-token step and the cache after rolling back its rejected
suffix are, bit for bit, those of decoding the accepted tokens one at a time. In PyTorch (no kernel, or
the transformers engine) a k-token forward is a different matrix product than k one-token ones: equal
within float rounding, and the rollback leaves a cache that continues like transformers' own.
"""

from __future__ import annotations

import pytest
import torch
from checkpoints import save_checkpoint
from kernel_builds import params as build_params

from bigcode_cli.kernels import build as kernel_build
from bigcode_cli.model import engine
from bigcode_cli.model.runner import RowTokens

needs_kernel = pytest.mark.skipif(kernel_build.find_compiler() is None, reason="no C compiler to build the kernel")

FP32_TOL = 1e-4
PROMPT = [5, 17, 33, 8, 61, 2, 44, 9, 70]
FED = [12, 40, 3, 88, 51, 19, 7, 66]  # the last chosen token, then 7 drafted ones
ACCEPTED = 3  # of the drafted tokens: the cache keeps the last chosen token and these


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    return {"mqa": save_checkpoint(root / "mqa", n_layer=3, multi_query=True),
            "mha": save_checkpoint(root / "mha", n_layer=3, multi_query=False, n_embd=40),
            # heads 64 wide: bf16 caches (bf16 and, where the kernel multiplies bf16 pairs, int8 and int4) go
            # through the pair path or AMX tiles, whose scores must not depend on the step's other tokens either
            "mqa-heads-of-64": save_checkpoint(root / "mqa64", n_layer=3, multi_query=True, n_embd=128, n_head=2,
                                               initializer_range=0.2)}


def _prefilled(runner, capacity: int = 32):
    cache = runner.new_cache(1, capacity)
    runner(torch.tensor([PROMPT]), cache=cache)
    return cache


def _one_by_one(runner, tokens):
    """The logits (len(tokens), V) and cache of feeding `tokens` one step each after the prompt."""
    cache = _prefilled(runner)
    logits = torch.cat([runner.step([RowTokens(cache, [t])]) for t in tokens])
    return logits, cache


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "int4"])
@pytest.mark.parametrize("case", ["mqa", "mha", "mqa-heads-of-64"])
def test_a_rolled_back_draft_leaves_the_cache_of_the_accepted_tokens_bit_for_bit(checkpoints, case, dtype):
    runner = engine.load(checkpoints[case], "causal-lm", dtype=dtype, device="cpu")
    assert runner.decode_path == "kernel"
    with torch.inference_mode():
        single, expected = _one_by_one(runner, FED[: ACCEPTED + 1])
        cache = _prefilled(runner)
        verified = runner.step([RowTokens(cache, FED)])  # (8, V): one logit row per fed token
        assert verified.shape[0] == len(FED) and cache.length == len(PROMPT) + len(FED)
        cache.truncate(len(PROMPT) + ACCEPTED + 1)
        assert cache.length == expected.length
        # the logits of the accepted positions are those of one-token steps, bit for bit
        assert torch.equal(verified[: ACCEPTED + 1], single)
        end = expected.length
        for ours, theirs in zip(cache.layers, expected.layers):
            assert torch.equal(_bits(ours[:, :end]), _bits(theirs[:, :end]))
        # and decoding goes on from the rolled-back cache as from the other: the rejected keys are overwritten
        after = [FED[ACCEPTED + 1] + 1, 25]
        assert torch.equal(runner.step([RowTokens(cache, after)]), runner.step([RowTokens(expected, after)]))


@pytest.mark.parametrize("kernel", [pytest.param(True, marks=needs_kernel), False])
@pytest.mark.parametrize("case", ["mqa", "mha"])
def test_a_verify_step_equals_transformers_on_the_same_positions(checkpoints, case, kernel, monkeypatch):
    if not kernel:
        monkeypatch.setenv("BIGCODE_CPU_KERNEL", "0")
    runner = engine.load(checkpoints[case], "causal-lm", dtype="float32", device="cpu")
    assert runner.decode_path == ("kernel" if kernel else "torch")
    reference = engine.load(checkpoints[case], "causal-lm", engine="transformers", attn="eager", dtype="float32",
                            device="cpu")
    with torch.inference_mode():
        cache = _prefilled(runner)
        verified = runner.step([RowTokens(cache, FED)])
        cache.truncate(len(PROMPT) + ACCEPTED + 1)
        after = [99 - 3, 21]
        continued = runner.step([RowTokens(cache, after)])
        whole = PROMPT + FED
        kept = PROMPT + FED[: ACCEPTED + 1] + after
        theirs = reference(torch.tensor([whole]))[0, len(PROMPT):].float()
        theirs_after = reference(torch.tensor([kept]))[0, -len(after):].float()
    assert (verified - theirs).abs().max().item() <= FP32_TOL
    assert (continued - theirs_after).abs().max().item() <= FP32_TOL


def test_the_transformers_cache_rolls_back_too(checkpoints):
    reference = engine.load(checkpoints["mqa"], "causal-lm", engine="transformers", attn="eager", dtype="float32",
                            device="cpu")
    with torch.inference_mode():
        cache = _prefilled(reference)
        reference.step([RowTokens(cache, FED)])
        cache.truncate(len(PROMPT) + ACCEPTED + 1)
        assert cache.length == len(PROMPT) + ACCEPTED + 1
        after = [42, 21]
        continued = reference.step([RowTokens(cache, after)])
        fresh = reference(torch.tensor([PROMPT + FED[: ACCEPTED + 1] + after]))[0, -len(after):].float()
    assert (continued - fresh).abs().max().item() <= FP32_TOL


@pytest.mark.parametrize("engine_name", ["native", "transformers"])
def test_a_cache_is_never_truncated_beyond_its_length(checkpoints, engine_name):
    runner = engine.load(checkpoints["mqa"], "causal-lm", engine=engine_name, dtype="float32", device="cpu")
    with torch.inference_mode():
        cache = _prefilled(runner)
    with pytest.raises(ValueError, match="cannot truncate"):
        cache.truncate(len(PROMPT) + 1)
    assert cache.length == len(PROMPT)


@needs_kernel
@pytest.mark.parametrize("build", build_params())
def test_every_build_rolls_back_to_the_one_token_steps_bit_for_bit(checkpoints, tmp_path, monkeypatch, build):
    from kernel_builds import use_build

    use_build(build, tmp_path, monkeypatch)
    for dtype in ("float32", "bfloat16", "int8", "int4"):
        runner = engine.load(checkpoints["mqa"], "causal-lm", dtype=dtype, device="cpu")
        assert runner.decode_path == "kernel"
        with torch.inference_mode():
            single, expected = _one_by_one(runner, FED[: ACCEPTED + 1])
            cache = _prefilled(runner)
            verified = runner.step([RowTokens(cache, FED)])
            cache.truncate(len(PROMPT) + ACCEPTED + 1)
        assert torch.equal(verified[: ACCEPTED + 1], single), dtype
        end = expected.length
        assert all(torch.equal(_bits(a[:, :end]), _bits(b[:, :end])) for a, b in zip(cache.layers, expected.layers))


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_tokens_of_one_sequence_attend_together_as_each_would_alone(tmp_path, dtype):
    """Multi-query attention takes consecutive tokens of one sequence together (their heads share the vector
    lanes, 16 tokens at most with 4 heads): a group that straddles a block of 1,024 cached positions (some of
    its tokens see none of the new block), more tokens than one group holds, and another sequence's row in
    the same step change no token's logits or keys, bit for bit, against one token a step."""
    path = save_checkpoint(tmp_path / "long", n_layer=2, n_head=4, multi_query=True, n_positions=1100)
    runner = engine.load(path, "causal-lm", dtype=dtype, device="cpu")
    assert runner.decode_path == "kernel"
    prompt = [(7 * i + 3) % 90 + 3 for i in range(1020)]
    fed = [(11 * i + 5) % 90 + 3 for i in range(21)]  # positions 1020..1040: across 1,024, two groups and a bit
    other = [9, 4, 61]
    with torch.inference_mode():
        def prefilled(ids):
            cache = runner.new_cache(1, 1056)
            runner(torch.tensor([ids]), cache=cache)
            return cache

        alone = prefilled(prompt)
        single = torch.cat([runner.step([RowTokens(alone, [t])]) for t in fed])
        together, neighbour = prefilled(prompt), prefilled(prompt[:50])
        logits = runner.step([RowTokens(neighbour, other), RowTokens(together, fed)])
        assert torch.equal(logits[len(other):], single)
        assert torch.equal(logits[: len(other)], runner.step([RowTokens(prefilled(prompt[:50]), other)]))
        for ours, theirs in zip(together.layers, alone.layers):
            assert torch.equal(_bits(ours[:, : alone.length]), _bits(theirs[:, : alone.length]))
