"""Builds of the C kernel besides this CPU's own (-march=native), for tests that run a step in each: the
compiler flags of each, the CPU feature it needs, and a switch that makes this test's process build and load it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigcode_cli.kernels import build as kernel_build

# name -> (flags, a CPU feature they need)
BUILDS = {
    "portable": ([], None),  # plain vector code: ARM and other CPUs
    "avx2": (["-mavx2", "-mfma", "-mf16c"], "avx2"),  # no AVX-512
    "avx512-without-vnni-bf16": (["-march=x86-64-v4"], "avx512bw"),  # AVX-512 without its dot instructions
}


def cpu_has(feature: str | None) -> bool:
    return feature is None or f" {feature} " in f" {kernel_build._cpu_features() or ''} "


def params() -> list:
    """The builds as pytest parameters, each skipped (at collection) where this CPU cannot run it."""
    return [pytest.param(name, marks=pytest.mark.skipif(not cpu_has(feature), reason=f"this CPU runs no {feature} code"))
            for name, (_, feature) in BUILDS.items()]


def use_build(build: str, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on this test's kernel is `build`, built into `directory` (skipped where this CPU cannot run it)."""
    flags, feature = BUILDS[build]
    if not cpu_has(feature):
        pytest.skip(f"this CPU runs no {feature} code")
    monkeypatch.setenv("BIGCODE_KERNEL_DIR", str(directory))
    monkeypatch.setattr(kernel_build, "_loaded", {})
    monkeypatch.setattr(kernel_build, "_flag_sets", lambda: [[*flags, *kernel_build._PORTABLE]])
