"""The generation loop and the completion service against transformers' own generate()."""

from __future__ import annotations

import pytest
import torch
from checkpoints import save_lm_with_tokenizer

from bigcode_cli.model import engine
from bigcode_cli.generation.completion import CompletionSettings, build_prompt, complete
from bigcode_cli.generation.loop import generate
from bigcode_cli.generation.sampling import SamplingParams
from bigcode_cli.text.tokenizer import Tokenizer

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("lm") / "ckpt")


@pytest.fixture(scope="module")
def mha_lm(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("mha") / "ckpt", multi_query=False)


def _hf_greedy(path, prompt_ids, max_new_tokens, stop_ids, device):
    from transformers import GPTBigCodeForCausalLM

    model = GPTBigCodeForCausalLM.from_pretrained(str(path)).to(device).eval()
    out = model.generate(torch.tensor([prompt_ids], device=device), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=sorted(stop_ids), pad_token_id=0)
    ids = out[0, len(prompt_ids) :].tolist()
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i]
    return ids


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("which", ["lm", "mha_lm"])
def test_greedy_tokens_equal_transformers_generate(request, which, attn):
    path = request.getfixturevalue(which)
    tokenizer = Tokenizer.from_dir(path)
    runner = engine.load(path, "causal-lm", attn=attn)
    prompt = tokenizer.encode("def fibonacci(n):\n    if n < 2:\n")
    ours = generate(runner, tokenizer, prompt, max_new_tokens=40, params=GREEDY)
    expected = _hf_greedy(path, prompt, 40, tokenizer.stop_ids, runner.device)  # same device as ours
    assert ours.samples[0].token_ids == expected
    assert len(expected) > 5  # the comparison covers a real run, not an immediate EOS


def test_transformers_engine_runs_the_same_loop(lm):
    tokenizer = Tokenizer.from_dir(lm)
    prompt = tokenizer.encode("import os\n")
    native = generate(engine.load(lm, "causal-lm"), tokenizer, prompt, max_new_tokens=25, params=GREEDY)
    reference = generate(engine.load(lm, "causal-lm", engine="transformers"), tokenizer, prompt, max_new_tokens=25,
                         params=GREEDY)
    assert native.samples[0].token_ids == reference.samples[0].token_ids


def test_seeded_sampling_is_reproducible_and_samples_differ(lm):
    tokenizer = Tokenizer.from_dir(lm)
    runner = engine.load(lm, "causal-lm")
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=7)
    prompt = tokenizer.encode("class Stack:\n")
    first = generate(runner, tokenizer, prompt, max_new_tokens=20, params=params, num_samples=3)
    second = generate(runner, tokenizer, prompt, max_new_tokens=20, params=params, num_samples=3)
    assert [s.token_ids for s in first.samples] == [s.token_ids for s in second.samples]
    assert len({tuple(s.token_ids) for s in first.samples}) > 1


def test_batched_samples_equal_single_runs_when_greedy(lm):
    tokenizer = Tokenizer.from_dir(lm)
    runner = engine.load(lm, "causal-lm")
    prompt = tokenizer.encode("def add(a, b):\n")
    one = generate(runner, tokenizer, prompt, max_new_tokens=15, params=GREEDY)
    three = generate(runner, tokenizer, prompt, max_new_tokens=15, params=GREEDY, num_samples=3)
    assert all(s.token_ids == one.samples[0].token_ids for s in three.samples)


def test_streamed_text_equals_final_text_and_stop_strings_are_cut(lm):
    tokenizer = Tokenizer.from_dir(lm)
    runner = engine.load(lm, "causal-lm")
    prompt = tokenizer.encode("for i in range(10):\n")
    free = generate(runner, tokenizer, prompt, max_new_tokens=30, params=GREEDY)
    text = free.samples[0].text
    assert len(text) > 6
    stop = text[3:6]
    pieces: list[str] = []
    stopped = generate(runner, tokenizer, prompt, max_new_tokens=30, params=GREEDY, stops=[stop],
                       on_text=lambda _i, piece: pieces.append(piece))
    sample = stopped.samples[0]
    assert sample.stop_reason == "stop"
    assert sample.text == text[: text.find(stop)]
    assert "".join(pieces) == sample.text


def test_length_stop_reason_and_token_counts(lm):
    tokenizer = Tokenizer.from_dir(lm)
    runner = engine.load(lm, "causal-lm")
    prompt = tokenizer.encode("x = ")
    result = generate(runner, tokenizer, prompt, max_new_tokens=5, params=GREEDY)
    sample = result.samples[0]
    expected = _hf_greedy(lm, prompt, 5, tokenizer.stop_ids, runner.device)
    assert sample.token_ids == expected
    assert sample.stop_reason == ("length" if len(expected) == 5 else "eos")
    assert result.prompt_tokens == len(prompt) and result.new_tokens == len(expected)


def test_eos_stop_reason_at_the_models_own_end_token(lm):
    import dataclasses

    tokenizer = Tokenizer.from_dir(lm)
    runner = engine.load(lm, "causal-lm")
    prompt = tokenizer.encode("x = ")
    ignored = generate(runner, None, prompt, max_new_tokens=4, params=GREEDY, ignore_eos=True)
    greedy = ignored.samples[0].token_ids
    assert len(greedy) == 4 and ignored.samples[0].stop_reason == "length"
    # make the third greedy token the model's end of text: the same run must now stop right before it
    runner.config = dataclasses.replace(runner.config, eos_token_id=greedy[2])
    result = generate(runner, None, prompt, max_new_tokens=4, params=GREEDY)
    assert result.samples[0].token_ids == greedy[: greedy.index(greedy[2])]
    assert result.samples[0].stop_reason == "eos" and result.samples[0].text == ""


def test_ctrl_c_keeps_what_was_generated(lm):
    tokenizer = Tokenizer.from_dir(lm)
    seen: list[str] = []

    def interrupt(_i, piece):
        seen.append(piece)
        if len(seen) == 3:
            raise KeyboardInterrupt

    result = generate(engine.load(lm, "causal-lm"), tokenizer, tokenizer.encode("def f():\n"), max_new_tokens=50,
                      params=SamplingParams(temperature=0.8, seed=1), on_text=interrupt)
    assert result.interrupted
    assert result.samples[0].token_ids


def test_long_prompt_is_truncated_from_the_left_with_a_notice(lm):
    tokenizer = Tokenizer.from_dir(lm)
    notices: list[str] = []
    text = "".join(f"value_{i} = compute({i})\n" for i in range(400))
    prompt = build_prompt(tokenizer, text, "", "continue", context=128, max_new_tokens=16, notice=notices.append)
    assert prompt.truncated and len(prompt.ids) == 128 - 16
    assert prompt.ids == tokenizer.encode(text)[-len(prompt.ids) :]
    assert "longer than the model's 128-token context" in notices[0]


def test_fim_prompt_keeps_lines_nearest_the_cursor(lm):
    tokenizer = Tokenizer.from_dir(lm)
    prefix = "".join(f"a{i} = {i}\n" for i in range(300))
    suffix = "".join(f"b{i} = {i}\n" for i in range(300))
    prompt = build_prompt(tokenizer, prefix, suffix, "fim", context=128, max_new_tokens=16)
    assert prompt.truncated and len(prompt.ids) <= 128 - 16
    assert prefix.endswith(prompt.prefix) and prompt.prefix.startswith("a")
    assert suffix.startswith(prompt.suffix) and prompt.suffix.endswith("\n")
    fim = tokenizer.fim
    assert prompt.ids[0] == fim.prefix and prompt.ids[-1] == fim.middle


def test_whole_run_on_a_full_context_does_not_crash(lm):
    tokenizer = Tokenizer.from_dir(lm)
    runner = engine.load(lm, "causal-lm")
    text = "print('hello')\n" * 200
    settings = CompletionSettings(max_new_tokens=500, sampling=GREEDY, block=False)
    notes: list[str] = []
    result = complete(runner, tokenizer, text, "", "continue", settings, notice=notes.append)
    assert result.generation.prompt_tokens + len(result.generation.samples[0].token_ids) <= 128
    assert len(notes) == 2  # max-new-tokens reduced, prompt truncated


def test_a_prompt_in_the_models_format_keeps_its_end_and_its_control_tokens(lm):
    from bigcode_cli.generation.completion import complete_ids, complete_text

    tokenizer = Tokenizer.from_dir(lm)
    runner = engine.load(lm, "causal-lm")
    settings = CompletionSettings(max_new_tokens=8, sampling=GREEDY, block=False)
    huge = "".join(f"value_{i} = compute({i})\n" for i in range(100_000)) + "<fim_prefix>x = <fim_suffix>\n<fim_middle>"
    result = complete_text(runner, tokenizer, huge, settings)
    # the same prompt ids as tokenizing all 2.6 MB and keeping the end: only the end was tokenized
    whole = tokenizer.encode_with_special_tokens(huge)
    assert result.prompt.truncated and result.prompt.ids == whole[-(128 - 8):]
    assert result.prompt.ids[-1] == tokenizer.fim.middle
    assert result.texts == complete_ids(runner, tokenizer, whole, settings).texts
    short = complete_text(runner, tokenizer, "x = 1\n", settings)
    assert not short.prompt.truncated and short.prompt.ids == tokenizer.encode("x = 1\n")
    empty = complete_text(runner, tokenizer, "", settings)
    assert empty.prompt.ids == [tokenizer.eos_id]


def test_ctrl_c_during_the_prefill_ends_as_interrupted(lm):
    # a Ctrl-C that lands before the first token is chosen is an interruption like any other, not a crash
    runner = engine.load(lm, "causal-lm")
    tokenizer = Tokenizer.from_dir(lm)

    class InterruptedPrefill:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, *args, **kwargs):
            raise KeyboardInterrupt

    result = generate(InterruptedPrefill(runner), tokenizer, tokenizer.encode("def add(a, b):"), max_new_tokens=5,
                      params=GREEDY)
    assert result.interrupted and result.samples[0].token_ids == []
