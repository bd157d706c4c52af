"""generation/batch.py: generations advanced together make the tokens they make alone (greedy, and sampled with
their own seeds), join and leave between steps, and a long prompt's prefill is cut into chunks between the
others' steps instead of stalling them."""

from __future__ import annotations

import pytest
from checkpoints import save_lm_with_tokenizer

from bigcode_cli.generation.batch import Batch
from bigcode_cli.generation.loop import Decoding
from bigcode_cli.generation.sampling import SamplingParams
from bigcode_cli.model import engine
from bigcode_cli.text.tokenizer import Tokenizer

GREEDY = SamplingParams(temperature=0)
PROMPTS = ["def add(a, b):\n", "class Stack:\n    def push(self, x):\n", "import os\n" * 6, "x"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = save_lm_with_tokenizer(tmp_path_factory.mktemp("lm") / "ckpt", n_positions=512)
    return engine.load(path, "causal-lm"), Tokenizer.from_dir(path)


def decoding(loaded, prompt: str, params: SamplingParams = GREEDY, **kwargs) -> Decoding:
    runner, tokenizer = loaded
    return Decoding(runner, tokenizer, tokenizer.encode(prompt), max_new_tokens=kwargs.pop("max_new_tokens", 40),
                    params=params, ignore_eos=True, **kwargs)


def run(runner, joins: list[tuple[int, Decoding]], chunk: int = 8, limit: int = 1000) -> None:
    """Advance a batch until every generation finished; (n, d): d joins before advance number n."""
    batch, pending, advances = Batch(runner, prefill_chunk=chunk), sorted(joins, key=lambda j: j[0]), 0
    while (pending or len(batch)) and advances < limit:
        while pending and pending[0][0] <= advances:
            batch.add(pending.pop(0)[1])
        for finished in batch.advance(on_error=lambda d, exc: (_ for _ in ()).throw(exc)):
            finished.finish()
        advances += 1
    assert advances < limit


def tokens(d: Decoding) -> list[list[int]]:
    return [s.token_ids for s in d.samples]


def test_together_equals_alone_for_greedy_and_seeded_samples(loaded):
    runner, _ = loaded

    def make() -> list[Decoding]:
        return [decoding(loaded, PROMPTS[0]), decoding(loaded, PROMPTS[1], SamplingParams(temperature=1.0, seed=3)),
                decoding(loaded, PROMPTS[2], num_samples=2), decoding(loaded, PROMPTS[3], max_new_tokens=7)]

    alone = make()
    for d in alone:
        run(runner, [(0, d)])
    together = make()
    run(runner, [(0, together[0]), (3, together[1]), (3, together[2]), (10, together[3])])  # joining mid-run
    assert [tokens(d) for d in together] == [tokens(d) for d in alone]
    assert [len(s.token_ids) for d in together for s in d.samples] == [40, 40, 40, 40, 7]
    # the sampled one drew from its own generator: a second seed makes other tokens
    other = decoding(loaded, PROMPTS[1], SamplingParams(temperature=1.0, seed=4))
    run(runner, [(0, other)])
    assert tokens(other) != tokens(together[1])


def test_a_long_prefill_is_cut_into_chunks_between_the_others_steps(loaded):
    runner, tokenizer = loaded
    running, joining = decoding(loaded, PROMPTS[0]), decoding(loaded, "def f():\n    return 1\n" * 8)
    prompt_tokens = len(tokenizer.encode("def f():\n    return 1\n" * 8))
    batch = Batch(runner, prefill_chunk=16)
    batch.add(running)
    batch.advance(on_error=pytest.fail)
    batch.add(joining)
    steps = 0
    while joining.prefilling:
        before = len(running.samples[0].token_ids)
        batch.advance(on_error=pytest.fail)
        assert len(running.samples[0].token_ids) == before + 1  # the running one made a token every advance
        steps += 1
    assert steps == -(-prompt_tokens // 16)


def test_a_stopped_generation_leaves_at_the_next_step_and_keeps_its_tokens(loaded):
    runner, _ = loaded
    stop = []
    leaving, staying = decoding(loaded, PROMPTS[0], should_stop=lambda: bool(stop)), decoding(loaded, PROMPTS[1])
    batch = Batch(runner)
    batch.add(leaving)
    batch.add(staying)
    for _ in range(3):
        assert batch.advance(on_error=pytest.fail) == []
    stop.append(True)
    assert batch.advance(on_error=pytest.fail) == [leaving]
    generation = leaving.finish()
    assert generation.interrupted and len(generation.samples[0].token_ids) == 4 and len(batch) == 1


class CountingRunner:
    """A runner that counts the forwards of its own (prefill) it is asked for; steps pass through."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.forwards = 0

    def __call__(self, *args, **kwargs):
        self.forwards += 1
        return self.runner(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.runner, name)


@pytest.mark.parametrize("speculate", ["off", "ngram"])  # speculating: drafts only in a step of its own
def test_a_keystroke_prefill_is_one_more_row_of_the_step_and_makes_the_tokens_it_makes_alone(loaded, speculate):
    from bigcode_cli.generation.prompt_cache import PromptCache

    runner, tokenizer = loaded
    base = tokenizer.encode("import os\n" * 12)
    typed = base + tokenizer.encode("x = 1")  # what an editor sends after a keystroke: the cached prompt and a bit

    def keystroke(counting: CountingRunner) -> Decoding:
        cache = PromptCache(runner)
        Decoding(runner, tokenizer, base, max_new_tokens=1, params=GREEDY, prompt_cache=cache).run()  # the window
        return Decoding(counting, tokenizer, typed, max_new_tokens=12, params=GREEDY, ignore_eos=True,
                        prompt_cache=cache, speculate=speculate)

    alone_runner = CountingRunner(runner)
    alone = keystroke(alone_runner)
    alone.run()
    crowd_runner = CountingRunner(runner)
    joining, running = keystroke(crowd_runner), decoding(loaded, "import os\n" * 8, speculate=speculate)
    batch = Batch(crowd_runner)
    batch.add(running)
    batch.advance(on_error=pytest.fail)  # the running one's prefill (a forward of its own: nothing cached)
    batch.add(joining)
    before = (crowd_runner.forwards, len(running.samples[0].token_ids))
    batch.advance(on_error=pytest.fail)
    assert joining.result.cached_tokens == len(base) and 0 < len(typed) - len(base) <= 16
    assert crowd_runner.forwards == before[0]  # no pass over the weights of its own ...
    made = len(running.samples[0].token_ids) - before[1]
    assert joining.decoding and (made == 1 if speculate == "off" else made >= 1)  # ... a row of the others' step
    assert alone_runner.forwards == 0
    run(crowd_runner, [(0, joining)])
    assert tokens(joining) == tokens(alone)


def test_speculating_generations_draft_only_in_steps_they_have_to_themselves(loaded):
    """A drafted token costs a crowded step about what it costs a lone one and gains tokens for one row of many
    (batch.py): while two speculating generations decode together each row carries its one token; the one left
    alone drafts again. Each makes the tokens it makes alone."""
    runner, _ = loaded
    repeating = "x = [1, 2, 3]\n" * 6  # text an n-gram drafter continues
    counts: list[list[int]] = []

    class Spy:
        def __getattr__(self, name: str):
            return getattr(runner, name)

        def step_best(self, rows, last_only=False):
            counts.append([len(row.tokens) for row in rows])
            return runner.step_best(rows, last_only)

    def make(max_new_tokens: int) -> Decoding:
        return decoding(loaded, repeating, speculate="ngram", max_new_tokens=max_new_tokens)

    alone = [make(12), make(48)]
    for d in alone:
        d.run()
    assert alone[1].result.draft_tokens > 0  # alone, it drafts
    together = [make(12), make(48)]
    run(Spy(), [(0, together[0]), (0, together[1])], chunk=256)
    shared = [c for c in counts if len(c) == 2]
    assert shared and all(c == [1, 1] for c in shared)
    assert any(max(c) > 1 for c in counts if len(c) == 1)  # the longer one, left alone, drafts again
    assert [tokens(d) for d in together] == [tokens(d) for d in alone]
