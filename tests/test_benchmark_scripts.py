"""Every benchmark script still starts: its imports from bigcode_cli resolve and `--help` works; the C ones
still build (and the quick one runs) against the kernel's headers.

Benchmarks are not run by the suite (they measure; tests check), so without this a refactor can
break a script unnoticed until the next measurement.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from bigcode_cli.kernels import build as kernel_build

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
C_BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.c"))  # AVX2 programs: built with -mavx2 on any x86 CPU


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 5


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_the_script_starts(script):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()


def _avx2_build(source: Path, target: Path) -> subprocess.CompletedProcess:
    compiler = kernel_build.find_compiler()
    if compiler is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("needs a C compiler for x86-64")
    command = [*compiler, "-O3", "-mavx2", "-mfma", "-mf16c", "-pthread", "-I", str(ROOT / "bigcode_cli" / "kernels"),
               str(source), "-o", str(target), "-lm"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("source", C_BENCHMARKS, ids=lambda p: p.name)
def test_the_c_benchmark_builds(source, tmp_path):
    built = _avx2_build(source, tmp_path / source.stem)
    assert built.returncode == 0, built.stderr[-2000:]


def test_the_int8_floor_measures_both_the_instructions_and_the_kernel(tmp_path):
    if not {"avx2", "fma", "f16c"} <= set((kernel_build._cpu_features() or "").split()):
        pytest.skip("this CPU has no AVX2, FMA and F16C to run it")
    program = tmp_path / "int8_rows_floor"
    built = _avx2_build(ROOT / "benchmarks" / "int8_rows_floor.c", program)
    assert built.returncode == 0, built.stderr[-2000:]
    done = subprocess.run([str(program)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and all(" ms" in line for line in lines[1:])
    assert all(float(line.split(":")[1].split()[0]) > 0 for line in lines[1:])  # ns per block and row
