"""Compiling the project's C kernels (bigcode_cli/kernels/*.c) for this machine, once, and loading them.

Nothing is compiled at install time: the first run that wants a kernel builds it with the system's C
compiler (about a second) for this CPU's instruction set and caches the library in this user's own
directory, `paths.kernels_dir()` (never in a model cache a team may share), keyed by the source, the
compiler command and its version, the flags and the CPU. A compiled library is code that runs in every
process that loads it, so nothing is compiled into or loaded from a directory anyone else could write or
replace (`_private_directory`), and the library loaded is the very file that was checked, through its
descriptor (`_open_checked`).
Without a compiler, or with BIGCODE_CPU_KERNEL=0, `load_kernel` returns None, `kernel_problem` says why,
and callers stay on their PyTorch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from bigcode_cli.paths import kernels_dir

SOURCE_DIR = Path(__file__).resolve().parent
_PORTABLE = ["-O3", "-std=gnu11", "-shared", "-fPIC", "-pthread"]
_loaded: dict[str, ctypes.CDLL | None] = {}
_problems: dict[str, str] = {}
_versions: dict[tuple[str, ...], str] = {}
_DESCRIPTORS = "/proc/self/fd"  # where a checked library is loaded from: the descriptor it was checked through


def kernel_disabled() -> bool:
    """BIGCODE_CPU_KERNEL=0 keeps every computation in PyTorch."""
    return os.environ.get("BIGCODE_CPU_KERNEL", "1").strip().lower() in ("0", "false", "no", "off")


def find_compiler() -> list[str] | None:
    """The C compiler command: $CC (a command line such as "ccache gcc"), else the compiler Python was built
    with, else cc, gcc or clang on PATH; None when there is none."""
    try:
        explicit = shlex.split(os.environ.get("CC", ""))
    except ValueError:  # unbalanced quotes: not a command we can run
        explicit = []
    built_with = (sysconfig.get_config_var("CC") or "").split()
    candidates = [explicit, built_with[:1], ["cc"], ["gcc"], ["clang"]]
    for command in candidates:
        program = shutil.which(command[0]) if command else None
        if program:
            return [program, *command[1:]]
    return None


def _compiler_version(compiler: list[str]) -> str:
    """`$CC --version` as printed, so that a compiler upgraded in place gets a fresh build."""
    key = tuple(compiler)
    if key not in _versions:
        try:
            done = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=60)
            _versions[key] = done.stdout + done.stderr
        except (OSError, subprocess.SubprocessError) as exc:
            _versions[key] = f"unknown ({exc})"
    return _versions[key]


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


def _fusion_flags(compiler: list[str]) -> list[str]:
    """Flags that make the compiler fuse a multiplication and an addition into one FMA wherever it can.

    GCC's tuning for AMD Zen leaves `sum += a * b` unfused where `sum` is a loop's running total (it "avoids
    FMA chains") and fuses it where the loop is unrolled away, so one dot product compiled into two shapes
    (a token row alone, or in a tile beside another) rounds differently, and a row's logits would depend on
    the rows that share its step. With the limit at 0 GCC fuses everywhere, as it does on other CPUs. Clang
    fuses within each expression whatever the CPU, and takes no such flag; a GCC too old to know it (before
    8) is tried without it (`_compile`)."""
    return ["--param", "avoid-fma-max-bits=0"] if "Free Software Foundation" in _compiler_version(compiler) else []


def _library_suffix() -> str:
    return ".dylib" if platform.system() == "Darwin" else ".so"


def _first_error(stderr: str, returncode: int) -> str:
    """The line of a compiler's complaint that says what went wrong (the first one naming an error)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[0] if lines else f"exit status {returncode}"


def _private_directory(directory: Path) -> tuple[Path, str | None]:
    """The kernel directory (created 0700 when missing, as is any missing directory above it) as its real path,
    and why it cannot hold code we load.

    As ssh checks its files: the directory must be ours and writable by no one else, and every directory
    above it must belong to us or to root and be writable by no one else, so that nobody else can rename
    it away and put their own in its place between a check and a use. A sticky directory above it (/tmp)
    is accepted when it belongs to us or root: in it, no one else can rename or remove what is ours.
    """
    try:
        for missing in [d for d in (*reversed(directory.parents), directory) if not d.exists()]:
            os.makedirs(missing, mode=0o700, exist_ok=True)  # each one 0700, whatever the umask makes of others
        real = Path(os.path.realpath(directory))
        for place in [*reversed(real.parents), real]:
            info = os.lstat(place)
            if not stat.S_ISDIR(info.st_mode):  # realpath saw a directory: someone swapped it since
                return real, f"{place} is not a directory"
            what = f"the kernel directory {real}" if place == real else f"{place} (above the kernel directory {real})"
            problem = _ownership_problem(what, info, above=place != real)
            if problem is not None:
                return real, problem
    except OSError as exc:
        return directory, f"cannot use the kernel directory {directory}: {exc.strerror or exc}"
    return real, None


def _ownership_problem(what: str, info: os.stat_result, *, above: bool = False) -> str | None:
    """Why a file or directory is not safe to take code from: someone other than us (or root, `above` our
    directory) owns it, or others can write it (a sticky directory above ours excepted)."""
    me = os.geteuid()
    if info.st_uid not in ((me, 0) if above else (me,)):
        owners = f"you (uid {me}) or root" if above and me != 0 else f"you (uid {me})"
        return f"{what} belongs to uid {info.st_uid}, not to {owners}: not loading code from it"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (above and info.st_mode & stat.S_ISVTX):
        return f"{what} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}): not loading code from it"
    return None


def _open_checked(path: Path) -> ctypes.CDLL | None:
    """The library at `path` if it is ours and writable by no one else, else None (ENOENT included).

    The file is opened once (not following a symlink), checked through that descriptor, and loaded through
    it (/proc/self/fd/N opens the same inode), so nothing swapped in at `path` after the check is loaded.
    Raises OSError for a library that is ours but fails to load (damaged).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or _ownership_problem(str(path), info) is not None:
            os.close(fd)
            return None
        library = ctypes.CDLL(f"{_DESCRIPTORS}/{fd}")
    except BaseException:
        os.close(fd)
        raise
    # the descriptor stays open: the loader knows a library by the name it was opened by, so a later load
    # through a reused /proc/self/fd/N would be handed this library instead of the file it names
    return library


def _compile(source: Path, target: Path, compiler: list[str]) -> tuple[ctypes.CDLL | None, str | None]:
    """Build `source`, load it, then move it to `target`: (the loaded library, None) or (None, the complaint).

    The compiler writes into a fresh private directory (mkdtemp, 0700) inside the kernel directory; the
    library is loaded from there, by descriptor, before it is renamed into place, so a process that loses
    a race to build (another one renames its own build over `target`, or removes it) still holds a good one.
    """
    complaint = "no output"
    workdir = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    fusion = _fusion_flags(compiler)
    attempts = [variant for flags in _flag_sets() for variant in ([[*flags, *fusion]] if fusion else []) + [flags]]
    try:
        for flags in attempts:
            built = workdir / target.name
            try:
                command = [*compiler, *flags, "-o", str(built), str(source), "-lm"]
                done = subprocess.run(command, capture_output=True, text=True, timeout=300)
                if done.returncode != 0:
                    complaint = _first_error(done.stderr, done.returncode)
                    continue
                os.chmod(built, 0o700)
                library = _open_checked(built)
                if library is None:
                    complaint = f"the compiler left no library of yours at {built}"
                    continue
                os.replace(built, target)
                return library, None
            except (OSError, subprocess.SubprocessError) as exc:
                complaint = str(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return None, complaint


def load_kernel(name: str) -> ctypes.CDLL | None:
    """The compiled library of kernels/<name>.c, built on first use; None when it cannot be had here."""
    if kernel_disabled():
        return None
    if name in _loaded:
        return _loaded[name]
    library = None
    try:
        library = _build_and_open(name)
    except OSError as exc:  # an unreadable source, an unusable cache directory, a library that fails to load
        _problems[name] = str(exc)
    _loaded[name] = library
    return library


def kernel_problem(name: str) -> str | None:
    """Why `load_kernel(name)` returned None, if it did."""
    if kernel_disabled():
        return "turned off by BIGCODE_CPU_KERNEL=0"
    return _problems.get(name)


def cache_key(source: Path, compiler: list[str]) -> str:
    """What a cached library of `source` must have been built from to be reused: source, compiler, flags, CPU."""
    key = hashlib.sha256()
    signature = _cpu_features() or platform.machine()
    headers = [h.read_bytes() for h in sorted(source.parent.glob("*.h"))]  # included by the sources
    for part in (source.read_bytes(), *headers, "\0".join(compiler), _compiler_version(compiler), repr(_flag_sets()),
                 repr(_fusion_flags(compiler)), signature):
        key.update(part if isinstance(part, bytes) else part.encode())
        key.update(b"\0")
    return key.hexdigest()[:16]


def _build_and_open(name: str) -> ctypes.CDLL | None:
    source = SOURCE_DIR / f"{name}.c"
    compiler = find_compiler()
    if compiler is None:
        _problems[name] = "no C compiler found; install gcc or clang, or set CC"
        return None
    if not os.path.isdir(_DESCRIPTORS):
        _problems[name] = f"this system has no {_DESCRIPTORS}, through which a checked library is loaded"
        return None
    directory, problem = _private_directory(kernels_dir())
    if problem is not None:
        _problems[name] = f"{problem} (set BIGCODE_KERNEL_DIR to a directory of your own)"
        return None
    target = directory / f"{name}-{cache_key(source, compiler)}{_library_suffix()}"
    try:
        library = _open_checked(target)
    except OSError:  # damaged since it was cached (a truncated copy, a full disk): build it again
        library = None
    if library is not None:
        return library
    library, complaint = _compile(source, target, compiler)
    if library is None:
        _problems[name] = f"{' '.join([Path(compiler[0]).name, *compiler[1:]])} failed: {complaint}"
    return library
