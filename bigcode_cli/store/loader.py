"""Opening a model by name for a task: resolve it in the store, load the weights, load the tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from pathlib import Path

from bigcode_cli import collector, interrupts, store
from bigcode_cli.errors import StoreError, TokenizerError
from bigcode_cli.store import quantized
from bigcode_cli.text.tokenizer import Tokenizer

if TYPE_CHECKING:
    from bigcode_cli.model.runner import Runner


class LoadedModel(NamedTuple):
    """A runnable model, its tokenizer, and where it came from."""

    runner: Runner
    tokenizer: Tokenizer
    resolved: store.ResolvedModel

    @property
    def name(self) -> str:
        """The name the user knows the model by."""
        return self.resolved.name


def open_model(name: str | None, task: str, *, engine: str = "native", attn: str = "auto", device: str = "auto",
               dtype: str = "auto", offline: bool = False, download: bool = False) -> LoadedModel:
    """Resolve `name` (None = the task's default), then load weights for `task` and the tokenizer.

    A Ctrl-C while loading always ends it as a KeyboardInterrupt (see `bigcode_cli.interrupts`)."""
    with interrupts.surfacing():
        return _open(name, task, engine=engine, attn=attn, device=device, dtype=dtype, offline=offline,
                     download=download)


def _open(name: str | None, task: str, *, engine: str, attn: str, device: str, dtype: str, offline: bool,
          download: bool) -> LoadedModel:
    from bigcode_cli.model import engine as engines

    collector.startup_done()  # torch and the model code are imported: the console script's pause ends
    resolved = store.resolve(name or store.default_model(task), offline=offline, download=download)
    tokenizer = Tokenizer.from_dir(resolved.path, name=resolved.name)
    check_vocabulary(tokenizer, resolved)
    if engines.quantized_bits(dtype, task, engine=engine, device=device) is not None:
        return LoadedModel(_load_quantized(resolved, dtype, attn, device), tokenizer, resolved)
    runner = engines.load(resolved.path, task, engine=engine, attn=attn, device=device, dtype=dtype)
    return LoadedModel(runner, tokenizer, resolved)


def _load_quantized(resolved: store.ResolvedModel, dtype: str, attn: str, device: str) -> Runner:
    """The kept quantized copy mapped in; else quantize while loading, then keep the copy (best effort)."""
    from bigcode_cli.model import engine as engines

    kept = quantized.find(resolved, dtype)
    runner = engines.load(resolved.path, "causal-lm", attn=attn, device=device, dtype=dtype, quantized_file=kept)
    if kept is None:
        try:
            quantized.save(resolved, dtype, runner.model)
        except StoreError:
            pass  # a read-only or full cache: this run still has its model, the next one quantizes again
    return runner


def quantize_ahead(name: str, dtype: str, *, offline: bool = False) -> tuple[store.ResolvedModel, Path]:
    """`bigcode models quantize`: make (or find) the kept `dtype` copy of a model; its resolution and file."""
    from bigcode_cli.model import engine as engines

    collector.startup_done()  # torch and the model code are imported: the console script's pause ends
    resolved = store.resolve(name, offline=offline)
    kept = quantized.find(resolved, dtype)
    if kept is None:
        runner = engines.load(resolved.path, "causal-lm", device="cpu", dtype=dtype)
        kept = quantized.save(resolved, dtype, runner.model)
    return resolved, kept


def check_vocabulary(tokenizer: Tokenizer, resolved: store.ResolvedModel) -> None:
    """Refuse a tokenizer that can produce ids the model has no embedding for (files of two different models)."""
    from bigcode_cli.model.config import GPTBigCodeConfig

    vocab_size = GPTBigCodeConfig.from_file(resolved.path / "config.json").vocab_size
    if tokenizer.vocab_size > vocab_size:
        raise TokenizerError(
            f"{resolved.name}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary "
            f"(vocab_size in config.json) has {vocab_size}; the tokenizer files belong to another model"
        )
