"""Speed measurement: load time, prefill and decode rate of engine/backend combinations, side by side.

Behind `bigcode bench` and `benchmarks/model_speed.py`. The machines are noisy, so every setting
is measured once per round, the settings interleaved (A B A B ...), and medians reported; speed is
always read as a ratio against another setting of the same run.

Decode rate = (N - 1) / (time(N new tokens) - time(1 new token)): the difference removes the
prefill and the first token, whatever each engine does before its loop. Greedy, EOS ignored, so
every run makes exactly N tokens.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

import torch

from bigcode_cli.errors import BackendError, InputError

if TYPE_CHECKING:
    from bigcode_cli.model.runner import Runner
    from bigcode_cli.store.loader import LoadedModel
    from bigcode_cli.text.tokenizer import Tokenizer

K = TypeVar("K")

# The prompt material: real code, repeated and cut to the asked length.
CODE_SAMPLE = '''import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Inventory:
    """Items in stock, keyed by SKU, with their counts and unit prices."""

    counts: dict[str, int] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)

    def add(self, sku: str, count: int, price: float) -> None:
        if count < 0:
            raise ValueError(f"negative count for {sku}: {count}")
        self.counts[sku] = self.counts.get(sku, 0) + count
        self.prices[sku] = price

    def remove(self, sku: str, count: int) -> int:
        left = self.counts.get(sku, 0) - count
        if left < 0:
            raise KeyError(f"only {self.counts.get(sku, 0)} of {sku} in stock")
        self.counts[sku] = left
        return left

    def value(self) -> float:
        return sum(self.prices[sku] * n for sku, n in self.counts.items())

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"counts": self.counts, "prices": self.prices}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "Inventory":
        data = json.loads(path.read_text())
        return cls(counts=data["counts"], prices=data["prices"])


def binary_search(items: list[int], target: int) -> int:
    lo, hi = 0, len(items) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if items[mid] == target:
            return mid
        if items[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


if __name__ == "__main__":
    stock = Inventory()
    stock.add("apple", 10, 0.5)
    stock.add("pear", 4, 0.75)
    print(stock.value(), binary_search(sorted(stock.counts.values()), 4))
'''


def benchmark_prompt(tokenizer: Tokenizer, length: int) -> list[int]:
    """`length` ids of real code: the built-in sample, repeated and cut to length."""
    ids = tokenizer.encode(CODE_SAMPLE)
    if not ids:
        raise InputError("the tokenizer turns the benchmark's code sample into no tokens")
    repeats = -(-length // len(ids))
    return (ids * repeats)[:length]


def _seconds(device: torch.device, work: Callable[[], object]) -> float:
    """Wall time of `work` under inference mode, on finished work: queued GPU work is waited for at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode():
        work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def generate_seconds(runner: Runner, tokenizer: Tokenizer | None, prompt: Sequence[int], new_tokens: int,
                     batch: int = 1) -> float:
    """Wall time of the generation service (greedy, EOS ignored) making exactly `new_tokens` tokens after `prompt`.

    With a tokenizer the text is decoded as `bigcode complete` does it; without one, only the model loop runs.
    batch > 1 decodes that many samples of the prompt in one batch (one prefill, then batch rows per step).
    """
    from bigcode_cli.generation.loop import generate
    from bigcode_cli.generation.sampling import SamplingParams

    return _seconds(runner.device, lambda: generate(runner, tokenizer, prompt, max_new_tokens=new_tokens,
                                                    params=SamplingParams(temperature=0), num_samples=batch,
                                                    ignore_eos=True))


def timed_decode_rate(runner: Runner, prompt: Sequence[int], new_tokens: int) -> float | None:
    """Tokens/s of the decode steps alone, timed inside one greedy generation: (N - 1) / decode time.

    The prefill is not in it at all (as llama-bench's `-n N -d P` times N steps after a P-token context),
    so a long prompt's prefill cannot add its own noise, unlike `decode_rate`'s t(N) - t(1). None below N = 2.
    """
    from bigcode_cli.generation.loop import generate
    from bigcode_cli.generation.sampling import SamplingParams

    if new_tokens < 2:
        return None
    with torch.inference_mode():
        result = generate(runner, None, prompt, max_new_tokens=new_tokens, params=SamplingParams(temperature=0),
                          ignore_eos=True)
    return (new_tokens - 1) / result.decode_s if result.decode_s > 0 else None


def reference_generate_seconds(model: Any, prompt: Sequence[int], new_tokens: int, batch: int = 1) -> float:
    """Wall time of transformers' own model.generate() making exactly `new_tokens` greedy tokens.

    batch > 1 runs that many copies of the prompt as one batch.
    """
    ids = torch.tensor([list(prompt)] * batch, device=model.device)
    return _seconds(model.device, lambda: model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=False, eos_token_id=None, pad_token_id=0))


def prefill_seconds(runner: Runner, prompt: Sequence[int]) -> float:
    """Wall time of one forward over `prompt` into a fresh cache, logits of the last position only."""
    ids = torch.tensor([list(prompt)], device=runner.device)
    return _seconds(runner.device, lambda: runner(ids, cache=runner.new_cache(1, len(prompt) + 1), last_only=True))


def reference_prefill_seconds(model: Any, prompt: Sequence[int]) -> float:
    """Wall time of one forward of a transformers model over `prompt`, as its generate() does it."""
    ids = torch.tensor([list(prompt)], device=model.device)
    return _seconds(model.device, lambda: model(ids, use_cache=True, logits_to_keep=1))


def decode_rate(seconds: Callable[[int], float], new_tokens: int) -> float | None:
    """Tokens/s after the first: (N - 1) / (t(N) - t(1)).

    None when there is nothing to time: N < 2, or noise larger than the N - 1 steps (t(N) <= t(1)).
    """
    if new_tokens < 2:
        return None
    one = seconds(1)
    full = seconds(new_tokens)
    return (new_tokens - 1) / (full - one) if full > one else None


def interleave(tasks: Mapping[K, Callable[[], Mapping[str, float | None]]], rounds: int,
               on_task: Callable[[int, K], None] | None = None) -> dict[K, dict[str, float | None]]:
    """Run every task once per round, in order, round after round; the median of each measurement.

    A task returns named measurements (None = not measured this time); it may return nothing
    at all, e.g. once it knows it cannot run. on_task(round, key) is called before each run.
    """
    runs: dict[K, dict[str, list[float]]] = {key: {} for key in tasks}
    for round_index in range(rounds):
        for key, task in tasks.items():
            if on_task is not None:
                on_task(round_index, key)
            for name, value in task().items():
                values = runs[key].setdefault(name, [])
                if value is not None:
                    values.append(value)
    return {key: {name: statistics.median(v) if v else None for name, v in named.items()}
            for key, named in runs.items()}


@dataclass(frozen=True)
class Combo:
    """One engine with one attention backend, as asked for (attn may be `auto`)."""

    engine: str
    attn: str

    @property
    def label(self) -> str:
        """engine/attn, as progress and notes name it."""
        return f"{self.engine}/{self.attn}"


@dataclass
class ComboResult:
    """The medians of one combination, or why it was skipped."""

    combo: Combo
    backend: str | None = None  # the backend actually run (`auto` resolved)
    device: str | None = None
    dtype: str | None = None
    decode_by: str | None = None  # what ran the decode steps: "kernel" (our C kernel) or "torch"
    decode_reason: str | None = None  # why not the kernel, when "torch"
    decode_summary: str | None = None  # the two in words: "C kernel", "PyTorch (reason)"
    load_s: float | None = None
    prefill_s: float | None = None
    prefill_tok_s: float | None = None
    decode_tok_s: float | None = None
    ratio: float | None = None  # decode rate over the first measured combination's
    skipped: str | None = None


@dataclass
class BenchReport:
    """What `bench` measured: the settings and one result per combination, in the order asked."""

    model: str
    prompt_tokens: int
    new_tokens: int
    rounds: int
    results: list[ComboResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Opener = Callable[..., "LoadedModel"]


class _ComboRun:
    """One round of one combination: load it, warm it up, time prefill and decode, free it."""

    def __init__(self, combo: Combo, open_model: Opener, model: str | None, *, device: str, dtype: str,
                 offline: bool, prompt_tokens: int, new_tokens: int) -> None:
        self.combo = combo
        self.open_model = open_model
        self.model = model
        self.device = device
        self.dtype = dtype
        self.offline = offline
        self.prompt_tokens = prompt_tokens
        self.new_tokens = new_tokens
        self.error: BackendError | None = None
        self.seen: dict[str, str | None] = {}  # name, backend, device, dtype, decode path of the last load
        self.prompt: list[int] = []

    def __call__(self) -> dict[str, float | None]:
        if self.error is not None:
            return {}
        started = time.perf_counter()
        try:
            loaded = self.open_model(self.model, "causal-lm", engine=self.combo.engine, attn=self.combo.attn,
                                     device=self.device, dtype=self.dtype, offline=self.offline)
        except BackendError as exc:  # this machine cannot run the combination (flash without CUDA, ...)
            self.error = exc
            return {}
        load_s = time.perf_counter() - started
        try:
            return self._measure(loaded, load_s)
        finally:
            device = loaded.runner.device
            del loaded
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def _measure(self, loaded: LoadedModel, load_s: float) -> dict[str, float | None]:
        runner = loaded.runner
        self.seen = {"name": loaded.name, "backend": runner.backend, "device": str(runner.device),
                     "dtype": runner.dtype_name,
                     "decode_by": runner.decode_path,
                     "decode_reason": runner.decode_reason if runner.decode_path != "kernel" else None,
                     "decode_summary": runner.decode_summary}
        room = runner.context_length - self.new_tokens
        if room < 1:
            raise InputError(f"--new-tokens {self.new_tokens} leaves no room for a prompt in {loaded.name}'s "
                             f"context of {runner.context_length} positions; ask for fewer")
        self.prompt = benchmark_prompt(loaded.tokenizer, min(self.prompt_tokens, room))
        tokenizer = loaded.tokenizer
        generate_seconds(runner, tokenizer, self.prompt, min(4, self.new_tokens))  # warm-up, untimed
        prefill_s = prefill_seconds(runner, self.prompt)
        rate = decode_rate(lambda n: generate_seconds(runner, tokenizer, self.prompt, n), self.new_tokens)
        return {"load_s": load_s, "prefill_s": prefill_s, "decode_tok_s": rate}


def run_bench(model: str | None, combos: Sequence[Combo], *, device: str = "auto", dtype: str = "auto",
              offline: bool = False, prompt_tokens: int = 128, new_tokens: int = 64, rounds: int = 3,
              on_task: Callable[[int, Combo], None] | None = None, open_model: Opener | None = None) -> BenchReport:
    """Measure every combination `rounds` times, interleaved, reloading the model each time; medians.

    One model is resident at a time. A combination this machine cannot run (a BackendError when
    loading it) is skipped with the reason; when none can run, that error is raised.
    """
    if rounds < 1:
        raise InputError(f"--rounds must be at least 1, got {rounds}")
    if prompt_tokens < 1 or new_tokens < 1:
        raise InputError(f"--prompt-tokens and --new-tokens must be at least 1, got {prompt_tokens} and {new_tokens}")
    if not combos:
        raise InputError("nothing to measure: give at least one engine and one attention backend")
    if open_model is None:
        from bigcode_cli.store.loader import open_model
    from bigcode_cli.model.runtime import resolve_device

    resolve_device(device)  # a missing device is everyone's problem, not a reason to skip one combination
    runs = {combo: _ComboRun(combo, open_model, model, device=device, dtype=dtype, offline=offline,
                             prompt_tokens=prompt_tokens, new_tokens=new_tokens) for combo in dict.fromkeys(combos)}
    medians = interleave(runs, rounds, on_task)
    measured = [run for run in runs.values() if run.error is None]
    if not measured:
        raise next(iter(runs.values())).error  # type: ignore[misc]
    first = measured[0]
    report = BenchReport(first.seen["name"], len(first.prompt), new_tokens, rounds)
    if len(first.prompt) < prompt_tokens:
        report.notes.append(f"prompt cut to {len(first.prompt)} tokens: the context must also hold "
                            f"{new_tokens} new tokens")
    base = medians[first.combo].get("decode_tok_s")
    if new_tokens < 2:
        report.notes.append("no decode rate: --new-tokens 1 makes no decode step to time; ask for 2 or more")
    for combo, run in runs.items():
        if run.error is not None:
            report.results.append(ComboResult(combo, skipped=str(run.error)))
            continue
        got = medians[combo]
        prefill_s, rate = got["prefill_s"], got["decode_tok_s"]
        report.results.append(ComboResult(
            combo, backend=run.seen["backend"], device=run.seen["device"], dtype=run.seen["dtype"],
            decode_by=run.seen["decode_by"], decode_reason=run.seen["decode_reason"],
            decode_summary=run.seen["decode_summary"], load_s=got["load_s"], prefill_s=prefill_s,
            prefill_tok_s=len(run.prompt) / prefill_s if prefill_s else None, decode_tok_s=rate,
            ratio=rate / base if rate is not None and base else None,
        ))
        if rate is None and new_tokens >= 2:
            report.notes.append(_no_rate_note(combo.label, new_tokens, rounds))
    if base is None and new_tokens >= 2 and any(r.decode_tok_s is not None for r in report.results):
        report.notes.append(f"no ratio: it divides by the decode rate of the first row, {first.combo.label}, "
                            "which has none")
    return report


def _no_rate_note(label: str, new_tokens: int, rounds: int) -> str:
    """Why a combination shows no decode rate: noise outweighed its decode steps in every round."""
    every = "every round" if rounds > 1 else "the one round"
    return (f"no decode rate for {label}: in {every}, making {new_tokens} tokens took no longer than making 1 "
            f"(timing noise larger than {new_tokens - 1} decode steps); ask for more --new-tokens or --rounds")
