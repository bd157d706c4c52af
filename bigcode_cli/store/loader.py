"""Opening a model by name for a task: resolve it in the store, load the weights, load the tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from bigcode_cli import store
from bigcode_cli.errors import TokenizerError
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
    """Resolve `name` (None = the task's default), then load weights for `task` and the tokenizer."""
    from bigcode_cli.model import engine as engines

    resolved = store.resolve(name or store.default_model(task), offline=offline, download=download)
    tokenizer = Tokenizer.from_dir(resolved.path, name=resolved.name)
    check_vocabulary(tokenizer, resolved)
    runner = engines.load(resolved.path, task, engine=engine, attn=attn, device=device, dtype=dtype)
    return LoadedModel(runner, tokenizer, resolved)


def check_vocabulary(tokenizer: Tokenizer, resolved: store.ResolvedModel) -> None:
    """Refuse a tokenizer that can produce ids the model has no embedding for (files of two different models)."""
    from bigcode_cli.model.config import GPTBigCodeConfig

    vocab_size = GPTBigCodeConfig.from_file(resolved.path / "config.json").vocab_size
    if tokenizer.vocab_size > vocab_size:
        raise TokenizerError(
            f"{resolved.name}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary "
            f"(vocab_size in config.json) has {vocab_size}; the tokenizer files belong to another model"
        )
