"""Turning --device and --dtype into torch objects this machine can run."""

from __future__ import annotations

import torch

from bigcode_cli.errors import BackendError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# weight-only block quantization of a causal LM's matrices (model/quantize.py); they compute in float32
QUANTIZED_DTYPES = ("int8", "int4")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is cuda, then mps, then cpu; asking for a device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BackendError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BackendError("--device mps: Apple's Metal backend is not available here; use --device cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise BackendError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def resolve_dtype(name: str, stored: torch.dtype, device: torch.device) -> torch.dtype:
    """`auto` keeps the checkpoint's dtype, except half precision on a CPU, which computes in float32."""
    if name == "auto":
        if device.type == "cpu" and stored in (torch.float16, torch.bfloat16):
            return torch.float32
        return stored if stored in DTYPES.values() else torch.float32
    if name not in DTYPES:
        raise BackendError(f"unknown dtype {name!r}; choose auto, float32, bfloat16, float16, int8 or int4")
    dtype = DTYPES[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise BackendError("--dtype float16 is too slow and inexact on a CPU; use bfloat16 or float32")
    return dtype
