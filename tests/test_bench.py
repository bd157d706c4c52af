"""`bigcode bench` and its measuring core: JSON Lines shape, skipped combinations, ratios, bad options.

Speed itself is never asserted (DESIGN.md, Performance): the timings that must be exact are faked.
"""

from __future__ import annotations

import contextlib

import json
import subprocess
import sys

import pytest
import torch
from checkpoints import save_lm_with_tokenizer

from bigcode_cli import bench
from bigcode_cli.cli.app import run
from bigcode_cli.terminal.console import stdout_console
from bigcode_cli.generation.loop import generate
from bigcode_cli.generation.sampling import SamplingParams
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.model.step_costs import StepCosts
from bigcode_cli.text.tokenizer import Tokenizer

FAST = ("--rounds", "1", "--new-tokens", "4", "--prompt-tokens", "16")
FIELDS = {"model", "engine", "attn", "backend", "device", "dtype", "decode_by", "decode_reason", "prompt_tokens", "new_tokens", "rounds", "load_s",
          "prefill_ms", "prefill_tok_s", "decode_tok_s", "ratio", "skipped"}
MEASURES = ("load_s", "prefill_ms", "prefill_tok_s", "decode_tok_s", "ratio")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return save_lm_with_tokenizer(tmp_path_factory.mktemp("bench") / "ckpt")  # context of 128


@pytest.fixture
def fake_timings(monkeypatch):
    """Decode steps of 10 ms (native) and 20 ms (transformers), prefills of 4 ms: rates 100 and 50 tok/s."""
    step = {"native": 0.01, "transformers": 0.02}
    monkeypatch.setattr(bench, "generate_seconds", lambda runner, _tok, _prompt, n: step[runner.engine] * n)
    monkeypatch.setattr(bench, "prefill_seconds", lambda _runner, _prompt: 0.004)


def _run(capsys, *args):
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_json_lines_one_object_per_combination_with_flash_skipped_on_cpu(capsys, lm):
    code, out, err = _run(capsys, "bench", "-m", lm, "--attn", "sdpa,flash", "--device", "cpu", *FAST)
    assert code == 0, err
    records = _records(out)  # stdout is not a terminal: JSON Lines without --json
    assert [(r["engine"], r["attn"]) for r in records] == [
        ("native", "sdpa"), ("native", "flash"), ("transformers", "sdpa"), ("transformers", "flash")]
    for r in records:
        assert set(r) == FIELDS
        assert (r["model"], r["prompt_tokens"], r["new_tokens"], r["rounds"]) == (str(lm), 16, 4, 1)
    measured = [r for r in records if r["attn"] == "sdpa"]
    for r in measured:
        assert r["skipped"] is None
        assert (r["backend"], r["device"], r["dtype"]) == ("sdpa", "cpu", "float32")
        assert r["decode_by"] == ("kernel" if r["engine"] == "native" else "torch")
        assert r["load_s"] > 0 and r["prefill_ms"] > 0 and r["prefill_tok_s"] > 0
        assert r["prefill_tok_s"] == pytest.approx(16 / (r["prefill_ms"] / 1000), rel=0.01)
    first, second = (r["decode_tok_s"] for r in measured)
    if first is not None and second is not None:  # None only when noise swamped the 3 timed steps
        assert measured[0]["ratio"] == 1.0
        assert measured[1]["ratio"] == pytest.approx(second / first, rel=0.01, abs=0.002)
    for r in records:
        if r["attn"] == "flash":
            assert "CUDA" in r["skipped"]
            assert all(r[key] is None for key in (*MEASURES, "backend", "device", "dtype"))
    notes = [line for line in err.splitlines() if line.startswith("note: skipped ")]
    assert len(notes) == 2
    assert notes[0].startswith("note: skipped native/flash: ") and "CUDA" in notes[0]
    assert notes[1].startswith("note: skipped transformers/flash: ")
    # a rate (or the ratios) that noise swamped says so, and nothing else is said
    why = [line for line in err.splitlines() if line not in notes]
    assert len(why) == (first is None) + (second is None) + (first is None and second is not None)
    assert all(line.startswith(("note: no decode rate for ", "note: no ratio: ")) for line in why)


def test_ratio_is_decode_rate_over_the_first_row(capsys, lm, fake_timings):
    code, out, err = _run(capsys, "bench", "-m", lm, "--engine", "native,transformers", "--attn", "sdpa,eager",
                          "--json", "--rounds", "2", "--new-tokens", "5", "--prompt-tokens", "16")
    assert code == 0, err
    assert err == ""
    got = [(r["engine"], r["attn"], r["decode_tok_s"], r["ratio"], r["prefill_ms"], r["prefill_tok_s"])
           for r in _records(out)]
    assert got == [
        ("native", "sdpa", 100.0, 1.0, 4.0, 4000.0),
        ("native", "eager", 100.0, 1.0, 4.0, 4000.0),
        ("transformers", "sdpa", 50.0, 0.5, 4.0, 4000.0),
        ("transformers", "eager", 50.0, 0.5, 4.0, 4000.0),
    ]


def test_ratio_counts_from_the_first_row_that_ran(capsys, lm, fake_timings):
    code, out, _ = _run(capsys, "bench", "-m", lm, "--engine", "transformers,native", "--attn", "flash,sdpa", *FAST)
    assert code == 0
    assert [(r["engine"], r["attn"], r["ratio"]) for r in _records(out)] == [
        ("transformers", "flash", None), ("transformers", "sdpa", 1.0), ("native", "flash", None),
        ("native", "sdpa", 2.0)]


def _on_a_terminal(capsys, monkeypatch, *args):
    """Run the CLI in-process as if stdout were a terminal (without colour); exit code and stdout."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    stdout_console.cache_clear()
    try:
        code, out, _ = _run(capsys, *args)
    finally:
        stdout_console.cache_clear()
    return code, out


def test_table_on_a_terminal(capsys, lm, fake_timings, monkeypatch):
    code, out = _on_a_terminal(capsys, monkeypatch, "bench", "-m", lm, "--attn", "sdpa,flash", "--device", "cpu", *FAST)
    assert code == 0
    assert out.splitlines()[0] == f"{lm}: cpu, float32, prompt 16, 4 new tokens, median of 1; native decode steps: C kernel"
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert lines[1] == ["ENGINE", "ATTN", "LOAD", "S", "PREFILL", "MS", "PREFILL", "TOK/S", "DECODE", "TOK/S", "RATIO"]
    assert lines[2][:2] == ["native", "sdpa"] and lines[2][-4:] == ["4.0", "4000", "100.0", "1.00"]
    assert lines[3] == ["native", "flash", "skipped"]
    assert lines[4][:2] == ["transformers", "sdpa"] and lines[4][-4:] == ["4.0", "4000", "50.0", "0.50"]
    assert lines[5] == ["transformers", "flash", "skipped"]


def test_title_and_json_say_why_decode_steps_are_not_in_the_c_kernel(capsys, lm, fake_timings, monkeypatch):
    monkeypatch.setenv("BIGCODE_CPU_KERNEL", "0")
    code, out, _ = _run(capsys, "bench", "-m", lm, "--attn", "sdpa", "--device", "cpu", *FAST)
    assert code == 0
    assert [(r["engine"], r["decode_by"], r["decode_reason"]) for r in _records(out)] == [
        ("native", "torch", "turned off by BIGCODE_CPU_KERNEL=0"),
        ("transformers", "torch", "the transformers engine runs its own code")]
    code, out = _on_a_terminal(capsys, monkeypatch, "bench", "-m", lm, "--attn", "sdpa", "--device", "cpu", *FAST)
    assert out.splitlines()[0].endswith("; native decode steps: PyTorch (turned off by BIGCODE_CPU_KERNEL=0)")


def test_a_missing_decode_rate_and_ratio_say_why(capsys, lm, monkeypatch):
    # transformers' runs are pure noise: 4 tokens take no longer than 1, so it has no rate; native has one
    step = {"native": lambda n: 0.01 * n, "transformers": lambda n: 0.05 - 0.001 * n}
    monkeypatch.setattr(bench, "generate_seconds", lambda runner, _tok, _prompt, n: step[runner.engine](n))
    monkeypatch.setattr(bench, "prefill_seconds", lambda _runner, _prompt: 0.004)
    code, out, err = _run(capsys, "bench", "-m", lm, "--engine", "transformers,native", "--attn", "sdpa", *FAST)
    assert code == 0
    assert [(r["engine"], r["decode_tok_s"], r["ratio"]) for r in _records(out)] == [
        ("transformers", None, None), ("native", 100.0, None)]
    assert " ".join(err.split()) == (
        "note: no decode rate for transformers/sdpa: in the one round, making 4 tokens took no longer than making 1 "
        "(timing noise larger than 3 decode steps); ask for more --new-tokens or --rounds "
        "note: no ratio: it divides by the decode rate of the first row, transformers/sdpa, which has none")


def test_one_new_token_says_there_is_no_decode_step_to_time(capsys, lm, fake_timings):
    code, out, err = _run(capsys, "bench", "-m", lm, "--engine", "native", "--attn", "sdpa", "--rounds", "1",
                          "--new-tokens", "1", "--prompt-tokens", "16")
    assert code == 0 and _records(out)[0]["decode_tok_s"] is None
    assert " ".join(err.split()) == "note: no decode rate: --new-tokens 1 makes no decode step to time; ask for 2 or more"


def test_prompt_is_cut_to_leave_room_for_the_new_tokens(capsys, lm, fake_timings):
    code, out, err = _run(capsys, "bench", "-m", lm, "--engine", "native", "--attn", "eager", "--rounds", "1",
                          "--prompt-tokens", "500", "--new-tokens", "28")
    assert code == 0
    assert [r["prompt_tokens"] for r in _records(out)] == [100]
    assert err == "note: prompt cut to 100 tokens: the context must also hold 28 new tokens\n"


@pytest.mark.parametrize("args, code, words", [
    (("--rounds", "0"), 2, "--rounds"),
    (("--new-tokens", "0"), 2, "--new-tokens"),
    (("--prompt-tokens", "-3"), 2, "--prompt-tokens"),
    (("--engine", "native,vllm"), 2, "'vllm' is not one of native, transformers"),
    (("--attn", ","), 2, "--attn"),
    (("--new-tokens", "128"), 1, "leaves no room for a prompt"),
    (("--attn", "flash"), 1, "--attn flash is unavailable"),
    (("--device", "cuda"), 1, "no CUDA GPU"),
])
def test_bad_options_are_one_line_errors(capsys, lm, args, code, words):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    got, out, err = _run(capsys, "bench", "-m", lm, "--rounds", "1", *args)
    assert got == code
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and words in err


def test_help_imports_no_torch():
    code = ("import sys; from bigcode_cli.cli.app import run; run(['bench', '--help']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'safetensors')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Usage: bigcode bench" in done.stdout
    assert done.stdout.rstrip().endswith("[]")


class _EosRunner:
    """A causal LM that always prefers token 0, the tokenizer's end of text and the config's eos_token_id."""

    device = torch.device("cpu")
    config = GPTBigCodeConfig(eos_token_id=0)
    step_costs = StepCosts()

    def new_cache(self, batch: int, capacity: int) -> None:
        return None

    def decoding(self, rows: int):
        return contextlib.nullcontext()

    def __call__(self, input_ids, attention_mask=None, cache=None, last_only=False):
        logits = torch.zeros(input_ids.shape[0], 1, 360)
        logits[..., 0] = 1.0
        return logits

    def step(self, rows, last_only=False):
        return self(torch.zeros(len(rows), 1, dtype=torch.long))[:, -1]

    def step_best(self, rows, last_only=False):
        return self.step(rows, last_only), None


def test_ignore_eos_makes_every_token_asked_for(lm):
    tokenizer = Tokenizer.from_dir(lm)
    assert 0 in tokenizer.stop_ids
    greedy = SamplingParams(temperature=0)
    assert generate(_EosRunner(), tokenizer, [5, 6], max_new_tokens=6, params=greedy).new_tokens == 0
    made = generate(_EosRunner(), tokenizer, [5, 6], max_new_tokens=6, params=greedy, ignore_eos=True)
    assert made.samples[0].token_ids == [0] * 6 and made.samples[0].stop_reason == "length"
    assert made.samples[0].text == tokenizer.decode([0] * 6)
    # without a tokenizer: token ids only, no text; the config's eos_token_id ends a sample unless ignored
    assert generate(_EosRunner(), None, [5], max_new_tokens=3, params=greedy).samples[0].stop_reason == "eos"
    silent = generate(_EosRunner(), None, [5], max_new_tokens=3, params=greedy, ignore_eos=True)
    assert silent.samples[0].token_ids == [0] * 3 and silent.samples[0].text == ""


def test_benchmark_prompt_repeats_real_code_to_length(lm):
    tokenizer = Tokenizer.from_dir(lm)
    sample = tokenizer.encode(bench.CODE_SAMPLE)
    assert bench.benchmark_prompt(tokenizer, 7) == sample[:7]
    long = bench.benchmark_prompt(tokenizer, 2 * len(sample) + 5)
    assert long == sample + sample + sample[:5]


def test_decode_rate_and_interleaved_medians():
    times = {1: 0.5, 9: 0.9}
    assert bench.decode_rate(times.__getitem__, 9) == pytest.approx(20.0)
    assert bench.decode_rate(lambda n: 1.0, 9) is None  # noise as large as the steps
    assert bench.decode_rate(times.__getitem__, 1) is None
    order: list[str] = []
    values = {"a": iter([3.0, 1.0, 2.0]), "b": iter([None, 5.0, None])}

    def task(key):
        return lambda: (order.append(key), {"x": next(values[key])})[1]

    medians = bench.interleave({"a": task("a"), "b": task("b"), "c": lambda: {}}, 3)
    assert order == ["a", "b"] * 3
    assert medians == {"a": {"x": 2.0}, "b": {"x": 5.0}, "c": {}}


def test_timed_decode_rate_leaves_the_prefill_out(lm):
    from bigcode_cli.model import engine

    runner = engine.load(lm, "causal-lm", device="cpu")

    class SlowPrefill:
        """The runner, with a prefill of 0.5 s and decode steps of 20 ms."""

        def __getattr__(self, name):
            return getattr(runner, name)

        def __call__(self, ids, **kwargs):
            import time

            time.sleep(0.5 if ids.shape[1] > 1 else 0.02)
            return runner(ids, **kwargs)

        def step(self, rows, **kwargs):  # the decode steps
            import time

            time.sleep(0.02)
            return runner.step(rows, **kwargs)

        def step_best(self, rows, **kwargs):
            import time

            time.sleep(0.02)
            return runner.step_best(rows, **kwargs)

    rate = bench.timed_decode_rate(SlowPrefill(), list(range(5, 25)), 6)
    assert 25 < rate <= 50  # 5 steps of >= 20 ms; a prefill in it would give < 10
    assert bench.timed_decode_rate(runner, [5, 6], 1) is None
