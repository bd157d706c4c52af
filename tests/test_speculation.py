"""n-gram speculation in the generation loop: lossless at temperature 0, the same distribution when sampling.

Greedy outputs with `speculate="ngram"` must be token for token those without, on the bundled model and on
random checkpoints (MQA and MHA, every dtype, FIM and plain, alone and in a batch of others). On random
weights the n-gram drafts are rarely right, so "forced" tests also draft from an oracle (the non-speculative
output itself, with deliberate mistakes): every verify path then runs, with stops, end-of-text and the token
limit landing inside accepted runs.
"""

from __future__ import annotations

import math

import pytest
import torch
from checkpoints import save_lm_with_tokenizer

from bigcode_cli.generation import ngram_draft
from bigcode_cli.generation.batch import Batch
from bigcode_cli.generation.completion import CompletionSettings, complete
from bigcode_cli.generation.fim import fim_prompt_ids
from bigcode_cli.generation.loop import Decoding
from bigcode_cli.generation.sampling import SamplingParams, penalized_scores, sampling_probs
from bigcode_cli.generation.verification import verify
from bigcode_cli.model import engine
from bigcode_cli.store.loader import open_model
from bigcode_cli.text.tokenizer import Tokenizer

GREEDY = SamplingParams(temperature=0)
FIM_PREFIX = "def total(items):\n    result = 0\n    for item in items:\n        "
FIM_SUFFIX = "\n    return result\n\n\ndef total(items):\n    result = 0\n    for item in items:\n        result += item\n"
BODY = "    def push(self, item):\n        self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()\n"
INIT = "    def __init__(self):\n        self.items = []\n\n"
STACKS = "class Stack:\n" + INIT + BODY + "\n\nclass Queue:\n" + INIT  # the bundled model re-types some of it
PLAIN = "for i in range(10):\n    print(i)\nfor i in range(10):\n    print(i)\nfor i in range(10):\n"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    return {"mqa": save_lm_with_tokenizer(root / "mqa", n_positions=256, n_layer=2),
            "mha": save_lm_with_tokenizer(root / "mha", n_positions=256, n_layer=2, multi_query=False)}


def _run(runner, tokenizer, ids, speculate, max_new_tokens=60, params=GREEDY, stops=(), stop_ids=None, **kwargs):
    d = Decoding(runner, tokenizer, ids, max_new_tokens=max_new_tokens, params=params, stops=stops,
                 speculate=speculate, **kwargs)
    if stop_ids is not None:
        d.stop_ids = frozenset(stop_ids)
    return d.run()


def _same(a, b) -> None:
    assert [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]
    assert [s.text for s in a.samples] == [s.text for s in b.samples]
    assert [s.stop_reason for s in a.samples] == [s.stop_reason for s in b.samples]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "int4"])
def test_the_bundled_model_completes_the_same_with_and_without_speculation(dtype):
    loaded = open_model(None, "causal-lm", dtype=dtype)
    accepted = 0
    for mode, prefix, suffix in [("fim", FIM_PREFIX, FIM_SUFFIX), ("continue", STACKS, "")]:
        off = complete(loaded.runner, loaded.tokenizer, prefix, suffix, mode,
                       CompletionSettings(max_new_tokens=48, sampling=GREEDY, block=False, speculate="off"))
        on = complete(loaded.runner, loaded.tokenizer, prefix, suffix, mode,
                      CompletionSettings(max_new_tokens=48, sampling=GREEDY, block=False, speculate="ngram"))
        _same(on.generation, off.generation)
        assert on.generation.draft_tokens > 0 and off.generation.draft_tokens == 0
        accepted += on.generation.draft_accepted
    assert accepted > 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "int4"])
@pytest.mark.parametrize("case", ["mqa", "mha"])
def test_random_checkpoints_are_lossless_with_ngram_drafts(checkpoints, case, dtype):
    runner = engine.load(checkpoints[case], "causal-lm", dtype=dtype, device="cpu")
    tokenizer = Tokenizer.from_dir(checkpoints[case])
    drafted = 0
    for ids in [tokenizer.encode(PLAIN), fim_prompt_ids(tokenizer, FIM_PREFIX, FIM_SUFFIX, "spm")]:
        off = _run(runner, tokenizer, ids, "off", ignore_eos=True)
        on = _run(runner, tokenizer, ids, "ngram", ignore_eos=True)
        _same(on, off)
        drafted += on.draft_tokens
    assert drafted > 0


class _Oracle:
    """Drafts the tokens a reference run made next, with every `wrong`-th drafted token replaced by another."""

    def __init__(self, prompt: list[int], reference: list[int], wrong: int) -> None:
        self.prompt, self.reference, self.wrong, self.calls = prompt, reference, wrong, 0

    def drafter(self, ids):
        oracle = self

        class Drafter:
            def __init__(self) -> None:
                self.ids = list(ids)

            def copy(self):
                return oracle.drafter(self.ids)

            def extend(self, tokens) -> None:
                self.ids.extend(tokens)

            def draft(self, k: int) -> list[int]:
                made = len(self.ids) - len(oracle.prompt)
                out = list(oracle.reference[made : made + k])
                oracle.calls += 1
                if oracle.wrong and out and oracle.calls % oracle.wrong == 0:
                    at = oracle.calls % len(out)
                    out[at] = (out[at] + 1) % 300 + 3
                return out

        return Drafter()


class _Eager:
    """A DraftPolicy that always drafts the longest draft."""

    probing = False

    def __init__(self, costs=None, sampled=False) -> None:
        pass

    def length(self) -> int:
        return ngram_draft.MAX_DRAFT

    def unused(self) -> None:
        pass

    def judged(self, drafted: int, accepted: int) -> None:
        pass


def _forced(monkeypatch, prompt, reference, wrong):
    oracle = _Oracle(prompt, reference, wrong)
    monkeypatch.setattr(ngram_draft, "NgramDrafter", oracle.drafter)
    monkeypatch.setattr(ngram_draft, "DraftPolicy", _Eager)
    return oracle


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("wrong", [0, 2, 3])
def test_forced_drafts_are_lossless_and_end_where_the_plain_run_ends(monkeypatch, dtype, wrong):
    # the bundled model: its output varies (a random tiny model's soon repeats one token)
    loaded = open_model(None, "causal-lm", dtype=dtype)
    runner, tokenizer = loaded.runner, loaded.tokenizer
    ids = tokenizer.encode(FIM_PREFIX)
    reference = _run(runner, tokenizer, ids, "off", max_new_tokens=80, ignore_eos=True).samples[0].token_ids
    text = tokenizer.decode(reference)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    late = next(t for i, t in enumerate(reference) if i >= 20 and t not in reference[:i])  # as end-of-text
    endings = [dict(max_new_tokens=37, ignore_eos=True),  # the token limit inside an accepted run
               dict(max_new_tokens=80, stops=[stop], ignore_eos=True),  # a stop string inside one
               dict(max_new_tokens=80, stop_ids=[late])]  # end-of-text inside one
    for ending in endings:
        off = _run(runner, tokenizer, ids, "off", **ending)
        oracle = _forced(monkeypatch, ids, reference, wrong)
        on = _run(runner, tokenizer, ids, "ngram", **ending)
        monkeypatch.undo()
        _same(on, off)
        assert on.draft_accepted > 8 and oracle.calls > 0
        if wrong and oracle.calls >= wrong:
            assert on.draft_accepted < on.draft_tokens


def test_the_cache_a_speculating_request_leaves_to_the_prompt_cache_holds_its_tokens(checkpoints, monkeypatch):
    from bigcode_cli.generation.prompt_cache import PromptCache

    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="float32", device="cpu")
    tokenizer = Tokenizer.from_dir(checkpoints["mqa"])
    ids = tokenizer.encode(PLAIN)
    reference = _run(runner, tokenizer, ids, "off", max_new_tokens=40, ignore_eos=True).samples[0].token_ids
    cache = PromptCache(runner)
    _forced(monkeypatch, ids, reference, wrong=3)
    _run(runner, tokenizer, ids, "ngram", max_new_tokens=40, ignore_eos=True, prompt_cache=cache.partition(""))
    monkeypatch.undo()
    # a later request that starts with the prompt and the output reuses all but its last token, and continues alike
    follow = ids + reference
    again = _run(runner, tokenizer, follow, "off", max_new_tokens=10, ignore_eos=True, prompt_cache=cache.partition(""))
    fresh = _run(runner, tokenizer, follow, "off", max_new_tokens=10, ignore_eos=True)
    assert again.cached_tokens == len(follow) - 1  # all it held: prompt + output less the last chosen token
    _same(again, fresh)


def test_speculating_requests_in_a_batch_make_what_they_make_alone(checkpoints):
    runner = engine.load(checkpoints["mha"], "causal-lm", dtype="float32", device="cpu")
    tokenizer = Tokenizer.from_dir(checkpoints["mha"])
    prompts = [PLAIN, FIM_PREFIX + FIM_SUFFIX, "x = 1\n" * 5, "def f():\n"]

    def make(speculate):
        return [Decoding(runner, tokenizer, tokenizer.encode(p), max_new_tokens=40, params=GREEDY, ignore_eos=True,
                         speculate=speculate if i % 2 == 0 else "ngram") for i, p in enumerate(prompts)]

    alone = [d.run() for d in make("off")]
    batch, together = Batch(runner, prefill_chunk=8), make("ngram")
    for d in together:
        batch.add(d)
    for _ in range(400):
        if not len(batch):
            break
        batch.advance(on_error=lambda d, exc: (_ for _ in ()).throw(exc))
    assert not len(batch)
    for d, a in zip(together, alone):
        _same(d.finish(), a)
    assert sum(d.result.draft_accepted for d in together) > 0


def test_seeded_samples_with_speculation_are_reproducible(checkpoints):
    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="float32", device="cpu")
    tokenizer = Tokenizer.from_dir(checkpoints["mqa"])
    params = SamplingParams(temperature=0.7, seed=5)
    ids = tokenizer.encode(PLAIN)
    first = _run(runner, tokenizer, ids, "ngram", params=params, num_samples=3, ignore_eos=True)
    second = _run(runner, tokenizer, ids, "ngram", params=params, num_samples=3, ignore_eos=True)
    _same(first, second)
    other = _run(runner, tokenizer, ids, "ngram", params=SamplingParams(temperature=0.7, seed=6), ignore_eos=True)
    assert other.samples[0].token_ids != first.samples[0].token_ids


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_one_seeded_sample_is_the_same_with_and_without_speculation(dtype):
    """Each token is the draw one-at-a-time decoding makes, from the same random numbers: drafts change nothing."""
    loaded = open_model(None, "causal-lm", dtype=dtype)
    accepted = 0
    for seed, params in enumerate([SamplingParams(temperature=0.2, seed=1), SamplingParams(temperature=0.8, seed=2),
                                   SamplingParams(temperature=0.5, top_k=5, top_p=0.9, repetition_penalty=1.2,
                                                  seed=3)]):
        ids = loaded.tokenizer.encode(STACKS)
        off = _run(loaded.runner, loaded.tokenizer, ids, "off", params=params, max_new_tokens=64)
        on = _run(loaded.runner, loaded.tokenizer, ids, "ngram", params=params, max_new_tokens=64)
        _same(on, off)
        accepted += on.draft_accepted
    assert accepted > 0


# -- the acceptance rule at temperature > 0 ----------------------------------------------------------------


def _chi_square_p(observed: list[int], expected: list[float]) -> float:
    """The p-value of Pearson's chi-square test (classes of expected count < 5 pooled; Wilson-Hilferty)."""
    pooled_o, pooled_e, rest_o, rest_e = [], [], 0, 0.0
    for o, e in zip(observed, expected):
        if e >= 5:
            pooled_o.append(o)
            pooled_e.append(e)
        else:
            rest_o, rest_e = rest_o + o, rest_e + e
    if rest_e > 0:
        pooled_o.append(rest_o)
        pooled_e.append(rest_e)
    stat = sum((o - e) ** 2 / e for o, e in zip(pooled_o, pooled_e) if e > 0)
    k = len(pooled_o) - 1
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def _rule_outputs(rule, logits, draft, seen, params, draws, seed):
    generator = torch.Generator().manual_seed(seed)
    return [rule(logits, draft, seen, params, generator)[0] for _ in range(draws)]


@pytest.fixture(scope="module")
def three_rows(checkpoints):
    """Real logits of a tiny model at two consecutive positions, and the sampling setting to judge them with."""
    runner = engine.load(checkpoints["mqa"], "causal-lm", dtype="float32", device="cpu")
    with torch.inference_mode():
        ids = torch.tensor([[5, 60, 7, 200, 31, 31, 8]])
        logits = runner(ids)[0, -3:].float() * 4  # sharper, so a few tokens carry most of the mass
    params = SamplingParams(temperature=0.9, top_k=40, top_p=0.97, repetition_penalty=1.3)
    return logits, [5, 60, 7, 200, 31], params


def _distribution(logits, seen, params) -> torch.Tensor:
    return sampling_probs(penalized_scores(logits.unsqueeze(0), torch.tensor([seen]), params), params)[0]


def _p_values(rule, three_rows, draws=6000):
    """p-values of the first made token against p1, and of the second (when the first was the drafted x) against
    p2 given x, for a draft [x, y] of a likely and a less likely token."""
    logits, seen, params = three_rows
    p1 = _distribution(logits[0], seen, params)
    x = int(p1.argmax())
    p2 = _distribution(logits[1], seen + [x], params)
    y = int(p2.argsort(descending=True)[2])  # a token the second position rejects often
    made = _rule_outputs(rule, logits, [x, y], seen, params, draws, seed=1)
    first = [m[0] for m in made]
    second = [m[1] for m in made if len(m) > 1]  # the first was the drafted x, accepted
    counts1 = torch.bincount(torch.tensor(first), minlength=p1.numel()).tolist()
    counts2 = torch.bincount(torch.tensor(second), minlength=p2.numel()).tolist()
    return (_chi_square_p(counts1, (p1 * len(first)).tolist()), _chi_square_p(counts2, (p2 * len(second)).tolist()))


def test_the_acceptance_rule_keeps_the_sampling_distribution(three_rows):
    first, second = _p_values(verify, three_rows)
    assert first > 1e-3 and second > 1e-3


def test_the_statistical_test_catches_a_wrong_acceptance_rule(three_rows):
    """Resampling from p without taking the rejected token out over-weights it: the test above must see that."""

    def keeps_the_rejected_token(logits, draft, seen, params, generator):
        made: list[int] = []
        for j in range(len(draft) + 1):
            p = _distribution(logits[j], list(seen) + made, params)
            if j < len(draft) and torch.rand((), generator=generator).item() < p[draft[j]].item():
                made.append(draft[j])
                continue
            made.append(int(p.multinomial(1, generator=generator).item()))  # wrong: x is not removed
            return made, j
        raise AssertionError

    first, second = _p_values(keeps_the_rejected_token, three_rows)
    assert min(first, second) < 1e-6


@pytest.mark.parametrize("engine_name", ["native", "transformers"])
def test_in_pytorch_speculation_gives_the_same_greedy_tokens_here(checkpoints, monkeypatch, engine_name):
    """Without the kernel a k-token forward is another matrix product than k one-token ones: equal up to float
    rounding, so a near-tie could in principle go the other way; on these checkpoints it never does."""
    monkeypatch.setenv("BIGCODE_CPU_KERNEL", "0")
    runner = engine.load(checkpoints["mha"], "causal-lm", engine=engine_name, dtype="float32", device="cpu")
    assert runner.decode_path == "torch"
    tokenizer = Tokenizer.from_dir(checkpoints["mha"])
    ids = tokenizer.encode(PLAIN)
    off = _run(runner, tokenizer, ids, "off", ignore_eos=True)
    on = _run(runner, tokenizer, ids, "ngram", ignore_eos=True)
    _same(on, off)
    assert on.draft_accepted > 0
