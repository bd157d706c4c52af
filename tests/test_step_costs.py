"""The measured price of a draft: StepCosts from recorded steps, and the draft length it leads to."""

from __future__ import annotations

import pytest
import torch

from bigcode_cli.generation import ngram_draft
from bigcode_cli.generation.ngram_draft import DraftPolicy, best_length
from bigcode_cli.model import step_costs
from bigcode_cli.model.runner import RowTokens
from bigcode_cli.model.step_costs import (
    REFRESH,
    STALE_S,
    TRUSTED,
    StepCosts,
    record_step,
)


def _measured(costs: dict[int, float]) -> StepCosts:
    """StepCosts that saw each count's steps take `costs[n]` seconds (its first step slow, as a cold one is)."""
    measured = StepCosts()
    for tokens, seconds in costs.items():
        measured.record(tokens, 100 * seconds)  # the first step of a count is left out
        for _ in range(TRUSTED):
            measured.record(tokens, seconds)
    return measured


def test_nothing_measured_is_the_given_slope():
    assert StepCosts().relative(4, 0.25) == pytest.approx(1.75)


def test_a_measured_count_is_its_median_relative_to_one_token_and_a_cold_first_step_is_left_out():
    costs = _measured({1: 1.0, 3: 1.2})
    assert costs.relative(1, 0.25) == 1.0
    assert costs.relative(3, 0.25) == pytest.approx(1.2)
    assert costs.relative(2, 0.25) == pytest.approx(1.1)  # between two measured counts
    assert costs.relative(5, 0.25) == pytest.approx(1.4)  # past the last, along the slope measured before it


def test_a_count_is_believed_only_after_trusted_steps():
    costs = _measured({1: 1.0})
    costs.record(2, 9.0)
    costs.record(2, 9.0)  # the first is left out: one measured step of 2 tokens
    assert costs.relative(2, 0.25) == pytest.approx(1.25)


def test_without_one_token_steps_their_cost_is_extrapolated_back():
    costs = _measured({2: 1.1, 4: 1.3})  # 0.1 a token: one token would take 1.0
    assert costs.relative(4, 0.25) == pytest.approx(1.3)
    assert costs.relative(3, 0.25) == pytest.approx(1.2)


def test_costs_never_fall_as_the_count_grows_nor_below_one_token():
    costs = _measured({1: 1.0, 2: 0.9, 4: 1.2, 6: 1.1})  # noise: a 2-token step seemed cheaper than one token
    assert [costs.relative(n, 0.25) for n in (2, 3, 4, 5, 6)] == pytest.approx([1.0, 1.1, 1.2, 1.2, 1.2])


def test_a_count_not_measured_for_a_while_is_forgotten_and_measured_afresh(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(step_costs.time, "monotonic", lambda: clock[0])
    costs = _measured({1: 1.0, 4: 3.0})  # 4 tokens measured dear once (a busy moment)
    for _ in range(2 * REFRESH):  # one-token steps alone do not push it out
        costs.record(1, 1.0)
    assert costs.relative(4, 0.25) == pytest.approx(3.0)
    clock[0] += STALE_S + 1
    for _ in range(REFRESH):  # the medians are updated every REFRESH records
        costs.record(1, 1.0)
    assert costs.relative(4, 0.25) == pytest.approx(1.75)  # back to the prior: a draft of 3 may be tried again
    for _ in range(TRUSTED):
        costs.record(4, 1.1)
    assert costs.relative(4, 0.25) == pytest.approx(1.1)  # the old samples gone, the new ones believed


def test_only_one_row_steps_on_a_cpu_are_recorded():
    class Runner:
        device = torch.device("cpu")
        step_costs = StepCosts()

    class GpuRunner(Runner):
        device = torch.device("cuda")
        step_costs = StepCosts()

    runner, gpu = Runner(), GpuRunner()
    for _ in range(1 + TRUSTED):
        record_step(runner, [RowTokens(None, [1, 2])], began=0.0, sampled=False)
        record_step(runner, [RowTokens(None, [1]), RowTokens(None, [1])], began=0.0, sampled=False)
        record_step(gpu, [RowTokens(None, [1, 2])], began=0.0, sampled=False)
    assert runner.step_costs._curves[False]._medians.keys() == {2}
    assert gpu.step_costs._curves[False]._medians == {}


def test_greedy_and_sampled_turns_are_priced_apart():
    # verifying a sampled draft is dearer (each drafted position's probabilities): a greedy generation after a
    # sampled one must not inherit those prices, nor a sampled one the greedy prices
    costs = StepCosts()
    for sampled, two_tokens in ((False, 1.05), (True, 1.6)):
        for tokens, seconds in ((1, 1.0), (2, two_tokens)):
            for _ in range(1 + TRUSTED):
                costs.record(tokens, seconds, sampled)
    assert costs.relative(2, 0.25) == pytest.approx(1.05)
    assert costs.relative(2, 0.25, sampled=True) == pytest.approx(1.6)
    greedy, sampled = DraftPolicy(costs), DraftPolicy(costs, sampled=True)
    assert greedy.length() > 0 and sampled.length() == 0  # at the prior acceptance of one in two


def test_cheap_steps_draft_longer_and_dear_ones_not_at_all():
    cheap_steps, dear_steps = _measured({1: 1.0, 2: 1.02, 4: 1.06, 9: 1.3}), _measured({1: 1.0, 2: 1.7, 4: 3.1})
    cheap, dear = (lambda n: cheap_steps.relative(n, 0.25)), (lambda n: dear_steps.relative(n, 0.25))
    assert best_length(0.7, cheap) > best_length(0.7, 0.25) > 0
    assert best_length(0.7, dear) == 0
    # a draft must be expected to gain MIN_GAIN: at 5% acceptance a step as cheap as one token does not pay
    assert best_length(0.05, lambda tokens: 1.0) == 0


def test_the_policy_asks_the_runners_measured_costs():
    cheap = _measured({1: 1.0, 2: 1.01, 3: 1.02, 4: 1.03, 9: 1.1})
    measured, assumed = DraftPolicy(cheap), DraftPolicy()
    for policy in (measured, assumed):
        for _ in range(6):
            policy.judged(4, 3)  # drafts mostly accepted
    assert measured.length() > assumed.length() > 0
    assert measured.length() <= ngram_draft.MAX_DRAFT


def test_the_decoding_loops_record_one_row_turns_and_not_prompt_rows_or_crowds(tmp_path):
    """generate() and serve's Batch file each one-row decoding turn under its token count, and neither a
    several-row step (what a draft adds there depends on the others) nor a prompt's rest fed as a row."""
    from checkpoints import save_checkpoint

    from bigcode_cli.generation.batch import Batch
    from bigcode_cli.generation.loop import Decoding, generate
    from bigcode_cli.generation.prompt_cache import PromptCache
    from bigcode_cli.generation.sampling import SamplingParams
    from bigcode_cli.model import engine

    runner = engine.load(save_checkpoint(tmp_path / "lm"), "causal-lm", device="cpu")
    greedy = SamplingParams(temperature=0)
    counted = []
    kinds = []
    runner.step_costs.record = lambda tokens, seconds, sampled: (counted.append(tokens), kinds.append(sampled))
    prompt = [5, 6, 7, 5, 6, 7, 5, 6]  # repeats: drafts of several tokens
    made = generate(runner, None, prompt, max_new_tokens=12, params=greedy, ignore_eos=True, speculate="ngram")
    assert made.draft_tokens > 0 and len(counted) > 0 and max(counted) > 1  # every turn, drafts included
    assert sum(counted) == 12 - 1 + made.draft_tokens - made.draft_accepted  # each turn's tokens: no prefill row
    assert not any(kinds)  # greedy turns, filed as greedy
    kinds.clear()
    generate(runner, None, prompt, max_new_tokens=6, params=SamplingParams(temperature=0.7, seed=1), ignore_eos=True,
             speculate="ngram")
    assert kinds and all(kinds)  # sampled turns, filed as sampled

    counted.clear()
    rows_per_step, tokens_per_row = [], []
    step = runner.step_best  # what the batch's steps call

    def counting_step(rows, **kwargs):
        rows_per_step.append(len(rows))
        tokens_per_row.extend(len(row.tokens) for row in rows)
        return step(rows, **kwargs)

    runner.step_best = counting_step
    batch = Batch(runner)
    for ids in ([9, 10, 11, 12], [13, 14, 15, 16]):
        batch.add(Decoding(runner, None, ids, max_new_tokens=6, params=greedy, ignore_eos=True))
    while batch.members:
        batch.advance(lambda member, exc: pytest.fail(str(exc)))
    assert 2 in rows_per_step  # the two decoded together
    assert counted == [1] * rows_per_step.count(1)  # only the steps one of them had to itself
    counted.clear()
    tokens_per_row.clear()
    cache = PromptCache(runner, max_bytes=1 << 20)
    first = list(range(10, 30))  # 20 tokens: a whole block of the prompt cache
    for prompt in (first, first + [40, 41]):  # the second: the cached prefix, then 2 tokens
        alone = Batch(runner)
        alone.add(Decoding(runner, None, prompt, max_new_tokens=6, params=greedy, ignore_eos=True, prompt_cache=cache))
        while alone.members:
            for done in alone.advance(lambda member, exc: pytest.fail(str(exc))):
                done.finish()  # gives its cache to the prompt cache, as serve's worker does
    assert max(tokens_per_row) > 1  # the second prompt's rest went in as a row of a step
    assert counted == [1] * 10  # each run's 5 decoding turns after the first token; not the prompt's row


@pytest.mark.parametrize("kernel, samples, temperature, priced", [
    ("1", 1, 0.0, "greedy"), ("1", 1, 0.7, "sampled"), ("1", 3, 0.7, None), ("0", 1, 0.0, None)])
def test_which_generations_price_drafts_by_measured_steps(tmp_path, monkeypatch, kernel, samples, temperature, priced):
    """One sample on the C kernel: its own kind's measured prices. Several samples (seeded draws in an order set
    by draft lengths) and the PyTorch path (where draft lengths shape the float rounding) keep the fixed prior,
    so that no text depends on timing."""
    from checkpoints import save_checkpoint

    from bigcode_cli.generation.loop import generate
    from bigcode_cli.generation.sampling import SamplingParams
    from bigcode_cli.model import engine

    monkeypatch.setenv("BIGCODE_CPU_KERNEL", kernel)
    runner = engine.load(save_checkpoint(tmp_path / "lm"), "causal-lm", device="cpu")
    assert runner.decode_path == ("kernel" if kernel == "1" else "torch")
    made = []

    class Recording(DraftPolicy):
        def __init__(self, costs=None, sampled=False):
            super().__init__(costs, sampled)
            made.append((costs, sampled))

    monkeypatch.setattr(ngram_draft, "DraftPolicy", Recording)
    generate(runner, None, [5, 6, 7, 5, 6, 7], max_new_tokens=4, params=SamplingParams(temperature=temperature, seed=3),
             num_samples=samples, ignore_eos=True, speculate="ngram")
    assert len(made) == samples
    for costs, sampled in made:
        assert (costs is runner.step_costs) == (priced is not None)
        if priced:
            assert sampled == (priced == "sampled")
