"""Which model a front end opens and how: the one type behind the CLI's model options and the REPL's
/model, /attn, /device and /dtype. No torch at import time: the model is opened inside `open`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bigcode_cli.store.loader import LoadedModel


@dataclass(frozen=True)
class ModelChoice:
    """--model, --engine, --attn, --device, --dtype and --offline, as plain values."""

    model: str | None = None  # None: the task's default model
    engine: str = "native"
    attn: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    offline: bool = False

    def how(self) -> dict[str, Any]:
        """How to open a model, as keyword arguments of `bigcode_cli.store.loader.open_model`."""
        return {"engine": self.engine, "attn": self.attn, "device": self.device, "dtype": self.dtype,
                "offline": self.offline}

    def open(self, task: str) -> LoadedModel:
        """Load the chosen model for a task."""
        from bigcode_cli.store.loader import open_model

        return open_model(self.model, task, **self.how())
