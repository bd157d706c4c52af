"""Turning --device and --dtype into torch objects this machine can run."""

from __future__ import annotations

import torch

from bigcode_cli import choices
from bigcode_cli.choices import DEVICE_CHOICES, DEVICES, DTYPE_CHOICES, listed
from bigcode_cli.errors import BackendError

# --dtype name -> torch dtype, one per entry of bigcode_cli.choices.DTYPES
DTYPES: dict[str, torch.dtype] = {name: getattr(torch, torch_name) for name, torch_name in choices.DTYPES.items()}


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
    if name not in DEVICES:
        raise BackendError(f"unknown device {name!r}; choose {listed(DEVICE_CHOICES)}")
    return torch.device(name)


# /proc/cpuinfo flags of x86 CPUs whose matrix units multiply bfloat16 in hardware (AVX-512 BF16, AMX)
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_multiplies_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 natively; elsewhere (AVX2 only, ARM, no /proc) bf16 is emulated."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in _BF16_FLAGS)
    except OSError:
        pass
    return False


def resolve_dtype(name: str, stored: torch.dtype, device: torch.device) -> torch.dtype:
    """`auto` keeps the checkpoint's dtype, except half precision on a CPU: a bfloat16 checkpoint computes in
    bfloat16 where the CPU multiplies bf16 natively (twice the fp32 speed), else in float32 (bf16 emulated in
    software is slower than fp32); a float16 one computes in float32."""
    if name == "auto":
        if device.type == "cpu" and stored == torch.bfloat16:
            return torch.bfloat16 if cpu_multiplies_bf16() else torch.float32
        if device.type == "cpu" and stored == torch.float16:
            return torch.float32
        return stored if stored in DTYPES.values() else torch.float32
    if name not in DTYPES:
        raise BackendError(f"unknown dtype {name!r}; choose {listed(DTYPE_CHOICES)}")
    dtype = DTYPES[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise BackendError("--dtype float16 is too slow and inexact on a CPU; use bfloat16 or float32")
    return dtype
