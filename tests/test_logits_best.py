"""The C kernel's argmax of each logits row (Runner.step_best): greedy decoding chooses by it instead of reading the
logits back, so it must be exactly NumPy's argmax (sampling.best_ids): the first NaN if a row has one, else the
first of equal largest values, whatever stretches the LM head's chunks cut the row into."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from checkpoints import save_checkpoint
from kernel_builds import params as build_params

from bigcode_cli.kernels import build as kernel_build
from bigcode_cli.model import engine
from bigcode_cli.model.runner import RowTokens

pytestmark = pytest.mark.skipif(kernel_build.find_compiler() is None, reason="no C compiler to build the kernel")


def _crafted() -> list[np.ndarray]:
    """Rows where a careless argmax goes wrong: ties, NaNs, signed zeros, infinities, lengths around a vector's 16."""
    rng = np.random.default_rng(5)
    rows = []
    for n in (1, 2, 15, 16, 17, 31, 33, 100, 1000):
        plain = rng.standard_normal(n).astype(np.float32)
        rows.append(plain)
        tied = np.round(plain).astype(np.float32)  # many equal largest values
        rows.append(tied)
        rows.append(np.zeros(n, np.float32))
        signed = np.where(rng.random(n) < 0.5, np.float32(-0.0), np.float32(0.0)).astype(np.float32)
        rows.append(signed)  # -0 then +0: not larger
        rows.append(np.full(n, -np.inf, np.float32))
        for at in {0, n // 2, n - 1}:
            with_nan = plain.copy()
            with_nan[at] = np.nan
            rows.append(with_nan)
            two_nans = with_nan.copy()
            two_nans[n - 1] = np.nan
            rows.append(two_nans)
            largest = plain.copy()
            largest[at] = np.inf
            rows.append(largest)
            late_tie = tied.copy()
            late_tie[at] = tied.max()
            rows.append(late_tie)
    return rows


def test_the_kernels_argmax_is_numpys_in_any_stretches():
    from bigcode_cli.kernels.cpu_decode import kernel_argmax

    for row in _crafted():
        expected = int(np.argmax(row))
        for pieces in sorted({1, 2, 3, 5, 7, len(row)}):
            if pieces <= len(row):
                assert kernel_argmax(torch.from_numpy(row), pieces) == expected, (row, pieces)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("best")
    # a vocabulary of 1,000: the LM head's rows fall into several chunks, each with a stretch of every row
    return {"mqa": save_checkpoint(root / "mqa", n_layer=2, vocab_size=1000),
            "mha": save_checkpoint(root / "mha", n_layer=2, multi_query=False, vocab_size=1000),
            "heads-of-64": save_checkpoint(root / "mqa64", n_layer=2, n_embd=128, n_head=2, vocab_size=1000),
            # larger weights: greedy choices that change from token to token (the others' repeat one token)
            "varied": save_checkpoint(root / "varied", n_layer=2, vocab_size=1000, initializer_range=0.5)}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "int4"])
@pytest.mark.parametrize("case", ["mqa", "mha", "heads-of-64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_steps_argmax_is_that_of_its_logits(checkpoints, case, dtype, threads):
    from bigcode_cli.generation.sampling import best_ids

    runner = engine.load(checkpoints[case], "causal-lm", dtype=dtype, device="cpu")
    if runner.decode_path != "kernel":
        pytest.skip(f"the kernel does not decode here: {runner.decode_reason}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for last_only in (False, True):
                caches = []
                for prompt in ([5, 17, 33], [8, 61], [2, 44, 9, 70, 11]):
                    cache = runner.new_cache(1, 16)
                    runner(torch.tensor([prompt]), cache=cache)
                    caches.append(cache)
                rows = [RowTokens(caches[0], [12]), RowTokens(caches[1], [40, 3, 88]), RowTokens(caches[2], [51])]
                logits, best = runner.step_best(rows, last_only=last_only)
                assert best is not None and best.dtype == torch.int64
                assert best.shape == (logits.shape[0],)
                assert torch.equal(best, best_ids(logits))
    finally:
        torch.set_num_threads(before)


def _greedy_runs(runner) -> list[list[list[int]]]:
    """Greedy generations down every path that chooses by a step's argmax: alone (one sample, and two from one
    prefill), speculating, and in a batch whose second prompt is fed as a row of the step (a cached prefix and a
    few new tokens): each run's samples' tokens."""
    from bigcode_cli.generation.batch import Batch
    from bigcode_cli.generation.loop import Decoding, generate
    from bigcode_cli.generation.prompt_cache import PromptCache
    from bigcode_cli.generation.sampling import SamplingParams

    greedy = SamplingParams(temperature=0)
    prompt = [5, 17, 33, 8, 61, 2]
    runs = []
    for speculate, n in (("off", 1), ("off", 2), ("ngram", 1)):
        made = generate(runner, None, prompt, max_new_tokens=12, params=greedy, ignore_eos=True, speculate=speculate,
                        num_samples=n)
        runs.append([sample.token_ids for sample in made.samples])
    cache = PromptCache(runner, max_bytes=1 << 20)
    first = list(range(10, 30))  # a whole block of the prompt cache, then a prompt that adds 2 tokens to it
    for ids in (first, first + [40, 41]):
        batch = Batch(runner)
        decodings = [Decoding(runner, None, ids, max_new_tokens=8, params=greedy, ignore_eos=True, prompt_cache=cache),
                     Decoding(runner, None, prompt, max_new_tokens=8, params=greedy, ignore_eos=True)]
        for decoding in decodings:
            batch.add(decoding)
        while batch.members:
            for done in batch.advance(lambda member, exc: pytest.fail(str(exc))):
                done.finish()
        runs.append([decoding.samples[0].token_ids for decoding in decodings])
    return runs


def test_greedy_generation_is_the_same_with_and_without_the_steps_argmax(checkpoints, monkeypatch):
    runner = engine.load(checkpoints["varied"], "causal-lm", dtype="float32", device="cpu")
    chosen = _greedy_runs(runner)
    with monkeypatch.context() as patch:
        patch.setattr(type(runner), "step_best", lambda self, rows, last_only=False: (self.step(rows, last_only), None))
        read_back = _greedy_runs(runner)
    assert chosen == read_back
    assert all(len(tokens) in (8, 12) for run in chosen for tokens in run)
    assert len({token for run in chosen for tokens in run for token in tokens}) > 10  # choices that could go wrong


@pytest.mark.parametrize("build", build_params())
def test_every_build_finds_numpys_argmax(checkpoints, tmp_path, monkeypatch, build):
    """The other builds (the scalar rule where there is no AVX-512): crafted rows, and a step's logits."""
    from kernel_builds import use_build

    from bigcode_cli.generation.sampling import best_ids
    from bigcode_cli.kernels.cpu_decode import kernel_argmax

    use_build(build, tmp_path, monkeypatch)
    for row in _crafted():
        for pieces in sorted({1, min(3, len(row)), len(row)}):
            assert kernel_argmax(torch.from_numpy(row), pieces) == int(np.argmax(row)), (row, pieces)
    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="int8", device="cpu")
    assert runner.decode_path == "kernel"
    with torch.inference_mode():
        cache = runner.new_cache(1, 16)
        runner(torch.tensor([[5, 17, 33]]), cache=cache)
        logits, best = runner.step_best([RowTokens(cache, [12, 40])])
    assert torch.equal(best, best_ids(logits))
