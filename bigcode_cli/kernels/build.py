"""Compiling the project's C kernels (bigcode_cli/kernels/*.c) for this machine, once, and loading them.

Nothing is compiled at install time: the first run that wants a kernel builds it with the system's C
compiler (about a second) for this CPU's instruction set and caches the library under
`paths.kernels_dir()`, keyed by the source, the compiler and the CPU. Without a compiler, or with
BIGCODE_CPU_KERNEL=0, `load_kernel` returns None and callers stay on their PyTorch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from bigcode_cli.paths import kernels_dir

SOURCE_DIR = Path(__file__).resolve().parent
_PORTABLE = ["-O3", "-std=gnu11", "-shared", "-fPIC", "-pthread"]
_loaded: dict[str, ctypes.CDLL | None] = {}
_problems: dict[str, str] = {}


def kernel_disabled() -> bool:
    """BIGCODE_CPU_KERNEL=0 keeps every computation in PyTorch."""
    return os.environ.get("BIGCODE_CPU_KERNEL", "1").strip().lower() in ("0", "false", "no", "off")


def find_compiler() -> str | None:
    """$CC, else the compiler Python was built with, else cc, gcc or clang on PATH."""
    candidates = [os.environ.get("CC", ""), (sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc", "clang"]
    for name in candidates:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def _cpu_features() -> str | None:
    """This CPU's feature list, or None where it cannot be read (then no -march=native build is made)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return None


def _flag_sets() -> list[list[str]]:
    # -march=native code must never be loaded on another CPU sharing the cache directory, so it is only
    # built where the cache key can carry the CPU's features; the portable build is the fallback
    native = [["-march=native", *_PORTABLE]] if _cpu_features() is not None else []
    return [*native, _PORTABLE]


def _library_suffix() -> str:
    return ".dylib" if platform.system() == "Darwin" else ".so"


def _compile(source: Path, target: Path, compiler: str) -> str | None:
    """Build `source` into `target` atomically; the compiler's complaint when every flag set fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    complaint = "no output"
    for flags in _flag_sets():
        fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=_library_suffix(), dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([compiler, *flags, "-o", tmp, str(source), "-lm"], capture_output=True, text=True,
                                  timeout=120)
            if done.returncode == 0:
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)
                return None
            complaint = (done.stderr.strip().splitlines() or ["exit status %d" % done.returncode])[-1]
        except (OSError, subprocess.SubprocessError) as exc:
            complaint = str(exc)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return complaint


def load_kernel(name: str) -> ctypes.CDLL | None:
    """The compiled library of kernels/<name>.c, built on first use; None when it cannot be had here."""
    if kernel_disabled():
        return None
    if name in _loaded:
        return _loaded[name]
    library = None
    try:
        library = _build_and_open(name)
    except OSError as exc:  # an unreadable source or cache directory, or a library that fails to load
        _problems[name] = str(exc)
    _loaded[name] = library
    return library


def kernel_problem(name: str) -> str | None:
    """Why `load_kernel(name)` returned None, if it did."""
    if kernel_disabled():
        return "turned off by BIGCODE_CPU_KERNEL=0"
    return _problems.get(name)


def _build_and_open(name: str) -> ctypes.CDLL | None:
    source = SOURCE_DIR / f"{name}.c"
    compiler = find_compiler()
    if compiler is None:
        _problems[name] = "no C compiler found (set CC)"
        return None
    key = hashlib.sha256()
    signature = _cpu_features() or platform.machine()
    headers = [h.read_bytes() for h in sorted(SOURCE_DIR.glob("*.h"))]  # included by the sources
    for part in (source.read_bytes(), *headers, compiler.encode(), repr(_flag_sets()).encode(), signature.encode()):
        key.update(part)
    target = kernels_dir() / f"{name}-{key.hexdigest()[:16]}{_library_suffix()}"
    if target.exists():
        try:
            return ctypes.CDLL(str(target))
        except OSError:  # damaged since it was cached (a truncated copy, a full disk): build it again
            target.unlink()
    complaint = _compile(source, target, compiler)
    if complaint is not None:
        _problems[name] = f"{Path(compiler).name} failed: {complaint}"
        return None
    return ctypes.CDLL(str(target))
