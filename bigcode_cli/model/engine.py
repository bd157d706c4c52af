"""Loading a checkpoint for a task with either engine, as a `Runner` (bigcode_cli.model.runner).

`native` runs our model (native_runner); `transformers` runs transformers' own GPTBigCode classes
(reference_runner), the reference for parity checks and a fallback.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bigcode_cli.choices import ENGINES, QUANTIZED_DTYPES, listed
from bigcode_cli.errors import BackendError
from bigcode_cli.model.config import GPTBigCodeConfig
from bigcode_cli.model.native_runner import load_native, load_quantized
from bigcode_cli.model.quantized_loading import check_quantizable
from bigcode_cli.model.reference_runner import load_transformers
from bigcode_cli.model.runner import Runner
from bigcode_cli.model.runtime import resolve_device
from bigcode_cli.model.weights_match import check_weights_match_config
from bigcode_cli.tasks import task as task_row

_LOADERS = {"native": load_native, "transformers": load_transformers}


def load(path: str | Path, task: str, *, engine: str = "native", attn: str = "auto", device: str = "auto",
         dtype: str = "auto", quantized_file: Path | None = None) -> Runner:
    """Load the checkpoint directory `path` for `task` (a name of bigcode_cli.tasks.TASKS) with `engine`.

    `dtype` "int8" / "int4" quantizes the causal LM's matrices while reading them, or maps them from
    `quantized_file` (a kept quantized copy of this checkpoint, see store/quantized.py)."""
    path = Path(path)
    task_row(task)
    if engine not in ENGINES:
        raise BackendError(f"unknown engine {engine!r}; choose {listed(ENGINES)}")
    config = GPTBigCodeConfig.from_file(path / "config.json")
    check_weights_match_config(path, config, task)  # before any engine builds what the config describes
    torch_device = resolve_device(device)
    bits = quantized_bits(dtype, task, engine=engine, device=torch_device)
    with torch.inference_mode(False):
        if bits is not None:
            return load_quantized(path, config, task, attn, torch_device, dtype, bits, quantized_file)
        return _LOADERS[engine](path, config, task, attn, torch_device, dtype)


def quantized_bits(dtype: str, task: str, *, engine: str = "native", device: str | torch.device = "auto") -> int | None:
    """Whether a load is quantized, decided here and nowhere else: the bits of a quantized --dtype (after checking
    that this task, engine and device can hold it; a BackendError names what works), None for a float dtype."""
    if dtype not in QUANTIZED_DTYPES:
        return None
    return check_quantizable(dtype, task, device if isinstance(device, torch.device) else resolve_device(device),
                             engine)
