import math

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from bigcode_cli.errors import InputError
from bigcode_cli.generation.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    best_ids,
    make_generator,
    next_tokens,
)

B, V, T = 4, 97, 12


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(B, V) * 3


@pytest.fixture
def ids():
    torch.manual_seed(1)
    return torch.randint(0, V, (B, T))


@pytest.mark.parametrize("penalty", [0.7, 1.0, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(logits, ids, penalty):
    expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    assert torch.equal(apply_repetition_penalty(logits, ids, penalty), expected)


@pytest.mark.parametrize("temperature", [0.2, 0.7, 1.0, 1.5])
def test_temperature_matches_transformers(logits, ids, temperature):
    expected = TemperatureLogitsWarper(temperature)(ids, logits.clone())
    assert torch.equal(apply_temperature(logits, temperature), expected)


@pytest.mark.parametrize("top_k", [1, 5, 50, V, V + 10])
def test_top_k_matches_transformers(logits, ids, top_k):
    expected = TopKLogitsWarper(top_k)(ids, logits.clone())
    assert torch.equal(apply_top_k(logits, top_k), expected)


@pytest.mark.parametrize("top_p", [0.01, 0.3, 0.9, 0.95, 0.999])
def test_top_p_matches_transformers(logits, ids, top_p):
    for scale in (0.3, 1.0, 4.0):
        scores = logits * scale
        expected = TopPLogitsWarper(top_p)(ids, scores.clone())
        assert torch.equal(apply_top_p(scores, top_p), expected)


def test_top_p_keeps_smallest_set_reaching_p():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda p: torch.isfinite(apply_top_p(scores, p)).sum().item()  # noqa: E731
    assert [kept(p) for p in (0.1, 0.5, 0.6, 0.8, 0.9, 1.0)] == [1, 1, 2, 2, 3, 4]


def test_processors_leave_input_untouched(logits, ids):
    before = logits.clone()
    params = SamplingParams(temperature=0.8, top_k=10, top_p=0.9, repetition_penalty=1.3, seed=0)
    next_tokens(logits, ids, params, make_generator(params))
    assert torch.equal(logits, before)


def test_greedy_is_argmax_after_repetition_penalty(logits, ids):
    assert torch.equal(next_tokens(logits, None, SamplingParams(temperature=0)), logits.argmax(-1))
    params = SamplingParams(temperature=0, repetition_penalty=50.0)
    penalized = RepetitionPenaltyLogitsProcessor(50.0)(ids, logits.clone())
    assert torch.equal(next_tokens(logits, ids, params), penalized.argmax(-1))


def test_seed_makes_sampling_reproducible(logits, ids):
    params = SamplingParams(temperature=1.0, top_p=1.0, seed=123)
    runs = [[next_tokens(logits, ids, params, g).tolist() for _ in range(5)]
            for g in (make_generator(params), make_generator(params))]
    assert runs[0] == runs[1]
    other = make_generator(SamplingParams(temperature=1.0, top_p=1.0, seed=124))
    assert runs[0] != [next_tokens(logits, ids, params, other).tolist() for _ in range(5)]


def test_sampling_respects_filters(logits):
    params = SamplingParams(temperature=1.0, top_k=3, top_p=1.0, seed=0)
    generator = make_generator(params)
    allowed = torch.topk(logits, 3).indices
    for _ in range(20):
        picked = next_tokens(logits, None, params, generator)
        assert all(picked[b] in allowed[b] for b in range(B))


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(2000, 1)
    params = SamplingParams(temperature=1.0, top_p=1.0, seed=0)
    counts = torch.bincount(next_tokens(logits, None, params, make_generator(params)), minlength=3) / 2000
    assert torch.allclose(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.04)


def test_half_precision_logits(logits):
    params = SamplingParams(temperature=0.5, seed=0)
    assert next_tokens(logits.half(), None, params, make_generator(params)).dtype == torch.long


def test_defaults():
    params = SamplingParams()
    assert (params.temperature, params.top_k, params.top_p, params.repetition_penalty, params.seed) == (
        0.2, 0, 0.95, 1.0, None)
    assert not params.greedy and SamplingParams(temperature=0).greedy


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -0.1}, "--temperature must be"),
    ({"temperature": math.nan}, "--temperature must be"),
    ({"temperature": math.inf}, "--temperature must be"),
    ({"top_p": 0.0}, r"--top-p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"--top-p must be in \(0, 1\]"),
    ({"top_p": math.nan}, r"--top-p must be in \(0, 1\]"),
    ({"top_k": -1}, "--top-k must be an integer >= 0"),
    ({"top_k": 2.5}, "--top-k must be an integer >= 0"),
    ({"repetition_penalty": 0.0}, "--repetition-penalty must be"),
    ({"repetition_penalty": -1.0}, "--repetition-penalty must be"),
])
def test_invalid_params(kwargs, message):
    with pytest.raises(InputError, match=message):
        SamplingParams(**kwargs)


# -- parameters at the edges of float32 (issue 20: "probability tensor contains either inf, nan") -----


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-38, 1e-45])
def test_a_temperature_too_small_for_float32_samples_the_best_token(logits, ids, temperature):
    # logits of randn are all distinct, so the limit of softmax(logits / t) as t -> 0 is the argmax
    params = SamplingParams(temperature=temperature, top_p=1.0, seed=0)
    assert torch.equal(next_tokens(logits, None, params, make_generator(params)), logits.argmax(-1))
    assert torch.equal(next_tokens(logits, ids, SamplingParams(temperature=temperature, seed=0)), logits.argmax(-1))


def test_a_tiny_temperature_shares_the_draw_among_tied_best_tokens():
    logits = torch.tensor([[2.0, 5.0, 5.0, -1.0]]).repeat(400, 1)
    params = SamplingParams(temperature=1e-300, top_p=1.0, seed=0)
    counts = torch.bincount(next_tokens(logits, None, params, make_generator(params)), minlength=4)
    assert counts[0] == counts[3] == 0 and counts[1] > 100 and counts[2] > 100


def test_a_huge_temperature_samples_uniformly():
    logits = torch.log(torch.tensor([[0.97, 0.01, 0.01, 0.01]])).repeat(4000, 1)
    params = SamplingParams(temperature=1e300, top_p=1.0, seed=0)
    counts = torch.bincount(next_tokens(logits, None, params, make_generator(params)), minlength=4) / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.04)


@pytest.mark.parametrize("penalty", [1e-308, 5e-324, 1e-40, 1e300])
@pytest.mark.parametrize("temperature", [0.0, 1.0, 1e-300])
def test_extreme_repetition_penalties_keep_every_score_finite(logits, ids, penalty, temperature):
    penalized = apply_repetition_penalty(logits, ids, penalty)
    assert torch.isfinite(penalized).all()
    params = SamplingParams(temperature=temperature, top_p=1.0, repetition_penalty=penalty, seed=0)
    picked = next_tokens(logits, ids, params, make_generator(params))
    if penalty < 1:
        # a penalty below 1 favours what was seen: a seen token with a positive logit wins wherever one exists
        for row in range(B):
            seen = set(ids[row].tolist())
            if any(logits[row, i] > 0 for i in seen):
                assert picked[row].item() in seen
    else:
        assert ((0 <= picked) & (picked < V)).all()


@pytest.mark.parametrize("extreme", [["-t", "1e-300"], ["-t", "5e-324"], ["--repetition-penalty", "1e-308"],
                                     ["-t", "1e-300", "--repetition-penalty", "1e-308"]])
def test_the_cli_generates_with_extreme_settings(capsys, extreme):
    from bigcode_cli.cli.app import run

    args = ["generate", "import os", "--max-new-tokens", "6", "--seed", "1"]
    assert run([*args, "-t", "0"]) == 0
    greedy = capsys.readouterr().out
    code = run([*args, *extreme])
    out, err = capsys.readouterr()
    assert code == 0 and "error" not in err, err
    if "--repetition-penalty" not in extreme:
        assert out == greedy  # a temperature too small for float32 is the greedy choice


def test_best_ids_is_torchs_argmax_ties_and_nan_included():
    scores = torch.randn(9, 300)
    scores[1, 7] = scores[1, 200] = scores[1].max() + 1  # a tie: the first wins
    scores[2, 40] = float("nan")  # a NaN counts as the largest, as in torch.argmax
    scores[3] = float("-inf")
    wide = torch.randn(4, 600)[:, ::2]  # not contiguous
    for rows in (scores, wide, scores.to(torch.bfloat16)):
        assert torch.equal(best_ids(rows), rows.argmax(dim=-1))
