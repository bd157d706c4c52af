"""The compiled decode kernel is code every process loads: where it may come from, and how it fails.

Loads that must start from nothing run in a fresh Python process (this one already holds a library).
Each subprocess is bounded in time and killed if it overruns.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from checkpoints import save_checkpoint

from bigcode_cli.kernels import build as kernel_build
from bigcode_cli.kernels import decode_support
from bigcode_cli.model import engine
from bigcode_cli.paths import kernels_dir

COMPILER = kernel_build.find_compiler()
pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler to build the kernel")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
NOBODY = 65534
SOURCE = kernel_build.SOURCE_DIR / "decode_step.c"
LOAD = textwrap.dedent("""
    import json
    from bigcode_cli.kernels import build
    lib = build.load_kernel("decode_step")
    print(json.dumps({"loaded": lib is not None, "abi": lib.bigcode_decode_abi() if lib else None,
                      "problem": build.kernel_problem("decode_step")}))
""")
# a library that leaves a mark when it is loaded: what someone who can write a shared cache would plant
PLANTED = textwrap.dedent("""
    #include <fcntl.h>
    #include <stdlib.h>
    #include <unistd.h>
    __attribute__((constructor)) static void planted(void) {
        const char *mark = getenv("PLANTED_MARK");
        if (mark) close(open(mark, O_CREAT | O_WRONLY, 0600));
    }
    int bigcode_decode_abi(void) { return %d; }
""" % decode_support.ABI_VERSION)


def _python(code: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def _load_in_fresh_process(**env: str) -> dict:
    import json

    done = _python(LOAD, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _shared_library(directory: Path, name: str, source: str) -> Path:
    c_file, library = directory / f"{name}.c", directory / f"{name}.so"
    c_file.write_text(source)
    subprocess.run([*COMPILER, "-shared", "-fPIC", "-o", str(library), str(c_file)], check=True, timeout=120)
    return library


@pytest.fixture
def fresh_kernel_dir(tmp_path, monkeypatch) -> Path:
    """An empty kernel cache for this test; this process forgets the libraries it loaded."""
    monkeypatch.setenv("BIGCODE_KERNEL_DIR", str(tmp_path / "kernels"))
    monkeypatch.setattr(kernel_build, "_loaded", {})
    monkeypatch.setattr(kernel_build, "_problems", {})
    return tmp_path / "kernels"


def _planted_at_cache_path(tmp_path: Path) -> Path:
    """The planted library, placed where this user's build of the kernel would be looked for."""
    directory = kernels_dir()
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    target = directory / f"decode_step-{kernel_build.cache_key(SOURCE, COMPILER)}.so"
    os.replace(_shared_library(tmp_path, "planted", PLANTED), target)
    return target


def test_kernels_live_in_a_private_directory(fresh_kernel_dir):
    assert _load_in_fresh_process()["loaded"]
    mine = kernels_dir()
    assert mine == fresh_kernel_dir
    assert mine.stat().st_uid == os.geteuid() and (mine.stat().st_mode & 0o777) == 0o700
    (library,) = mine.glob("decode_step-*.so")
    assert library.stat().st_uid == os.geteuid() and not library.stat().st_mode & 0o022


def test_a_shared_bigcode_home_holds_no_code(tmp_path, monkeypatch):
    # the set-up: the first user of a team's cache made a world-writable sticky directory there
    shared = tmp_path / "team-cache"
    (shared / "kernels").mkdir(parents=True)
    shared.chmod(0o2777)
    (shared / "kernels").chmod(0o1777)
    own = tmp_path / "own-cache"
    monkeypatch.delenv("BIGCODE_KERNEL_DIR")
    monkeypatch.setenv("BIGCODE_HOME", str(shared))
    monkeypatch.setenv("XDG_CACHE_HOME", str(own))
    assert _load_in_fresh_process()["loaded"]
    assert kernels_dir() == own / "bigcode" / "kernels"
    assert len(list(kernels_dir().glob("decode_step-*.so"))) == 1
    assert not any(path.is_file() for path in shared.rglob("*"))


def _logging_compiler(tmp_path: Path) -> tuple[Path, Path]:
    """A compiler that records, for each call, the directory it writes into: its owner and mode."""
    log = tmp_path / "compiler.log"
    wrapper = tmp_path / "logging-cc"
    wrapper.write_text('#!/bin/sh\nout=""; prev=""\nfor a in "$@"; do [ "$prev" = -o ] && out="$a"; prev="$a"; done\n'
                       f'[ -n "$out" ] && stat -c "%u %a %n" "$(dirname "$out")" >> {log}\n'
                       f'exec {COMPILER[0]} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


@pytest.mark.parametrize("hostile_mode, hostile_owner", [
    (0o1777, NOBODY),  # sticky, but its owner can rename anything in it: the attack
    (0o777, None),  # ours, but anyone can rename our directory away and put theirs in its place
    (0o775, None),  # the same for a group
])
def test_nothing_is_compiled_into_or_loaded_from_below_a_directory_others_control(
        fresh_kernel_dir, tmp_path, monkeypatch, hostile_mode, hostile_owner):
    if hostile_owner is not None and os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    mine = hostile / "kernels"
    mine.mkdir(mode=0o700)
    # a library of ours where the kernel is looked for: only the directories above it are not safe
    os.replace(_shared_library(tmp_path, "planted", PLANTED),
               mine / f"decode_step-{kernel_build.cache_key(SOURCE, COMPILER)}.so")
    hostile.chmod(hostile_mode)
    if hostile_owner is not None:
        os.chown(hostile, hostile_owner, hostile_owner)
    wrapper, log = _logging_compiler(tmp_path)
    mark = tmp_path / "planted-ran"
    got = _load_in_fresh_process(BIGCODE_KERNEL_DIR=str(mine), CC=str(wrapper), PLANTED_MARK=str(mark))
    assert not got["loaded"] and not mark.exists()
    assert not log.exists()  # never compiled either
    assert got["problem"].startswith(f"{hostile} (above the kernel directory {mine}) ")
    reason = f"belongs to uid {NOBODY}" if hostile_owner else f"is writable by other users (mode {hostile_mode:o})"
    assert reason in got["problem"] and "BIGCODE_KERNEL_DIR" in got["problem"]


def test_the_compiler_writes_only_into_a_fresh_private_directory(fresh_kernel_dir, tmp_path):
    wrapper, log = _logging_compiler(tmp_path)
    assert _load_in_fresh_process(CC=str(wrapper))["loaded"]
    calls = log.read_text().splitlines()
    assert calls
    for call in calls:
        owner, mode, directory = call.split(" ", 2)
        assert int(owner) == os.geteuid() and mode == "700"
        assert Path(directory).parent == fresh_kernel_dir and Path(directory).name.startswith(".build-")
    (library,) = fresh_kernel_dir.iterdir()  # the private build directory is gone
    assert library.name.startswith("decode_step-") and library.suffix == ".so"


@pytest.mark.parametrize("cached", [True, False])
def test_the_library_loaded_is_the_file_checked_even_if_its_path_is_swapped_after_the_check(
        fresh_kernel_dir, tmp_path, cached):
    """Whatever is put at a library's path between its check and its load is not what gets loaded."""
    planted = _shared_library(tmp_path, "planted", PLANTED)
    if cached:
        assert _load_in_fresh_process()["loaded"]
    mark = tmp_path / "planted-ran"
    swap = textwrap.dedent(f"""
        import os, shutil
        from bigcode_cli.kernels import build
        checked = build._ownership_problem
        def check_then_swap(what, info, **kw):
            problem = checked(what, info, **kw)
            if what.endswith(".so"):  # the library's check passed: now put another file at its path
                shutil.copy({str(planted)!r}, what + ".swap")
                os.replace(what + ".swap", what)
            return problem
        build._ownership_problem = check_then_swap
    """)
    done = _python(swap + LOAD, PLANTED_MARK=str(mark))
    assert done.returncode == 0, done.stderr
    assert '"loaded": true' in done.stdout and f'"abi": {decode_support.ABI_VERSION}' in done.stdout
    assert not mark.exists()


@needs_root
def test_a_library_owned_by_someone_else_is_not_loaded_but_replaced(fresh_kernel_dir, tmp_path):
    target = _planted_at_cache_path(tmp_path)
    os.chown(target, NOBODY, NOBODY)
    mark = tmp_path / "planted-ran"
    got = _load_in_fresh_process(PLANTED_MARK=str(mark))
    assert not mark.exists()
    assert got["loaded"] and got["abi"] == decode_support.ABI_VERSION  # our own build took its place
    assert target.stat().st_uid == os.geteuid()


def test_a_library_others_can_write_is_not_loaded_but_replaced(fresh_kernel_dir, tmp_path):
    target = _planted_at_cache_path(tmp_path)
    target.chmod(0o777)
    mark = tmp_path / "planted-ran"
    got = _load_in_fresh_process(PLANTED_MARK=str(mark))
    assert not mark.exists()
    assert got["loaded"] and not target.stat().st_mode & 0o022


@needs_root
def test_a_kernel_directory_owned_by_someone_else_is_refused(fresh_kernel_dir, tmp_path):
    target = _planted_at_cache_path(tmp_path)
    os.chown(target, NOBODY, NOBODY)
    os.chown(target.parent, NOBODY, NOBODY)
    mark = tmp_path / "planted-ran"
    got = _load_in_fresh_process(PLANTED_MARK=str(mark))
    assert not mark.exists() and not got["loaded"]
    assert f"belongs to uid {NOBODY}, not to you" in got["problem"] and "BIGCODE_KERNEL_DIR" in got["problem"]


def test_a_kernel_directory_others_can_write_is_refused(fresh_kernel_dir, tmp_path):
    target = _planted_at_cache_path(tmp_path)
    target.parent.chmod(0o777)
    mark = tmp_path / "planted-ran"
    got = _load_in_fresh_process(PLANTED_MARK=str(mark))
    assert not mark.exists() and not got["loaded"]
    assert "writable by other users (mode 777)" in got["problem"]


def test_a_symlinked_kernel_directory_is_judged_by_where_it_leads(fresh_kernel_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    elsewhere.chmod(0o777)
    kernels_dir().parent.mkdir(exist_ok=True)
    kernels_dir().symlink_to(elsewhere)
    got = _load_in_fresh_process()
    assert not got["loaded"] and f"the kernel directory {elsewhere} is writable by other users" in got["problem"]
    assert not any(elsewhere.iterdir())
    elsewhere.chmod(0o700)  # a link to a private directory of ours is as good as the directory
    assert _load_in_fresh_process()["loaded"] and len(list(elsewhere.glob("decode_step-*.so"))) == 1


def test_the_refusal_reaches_the_runner(fresh_kernel_dir, tmp_path):
    fresh_kernel_dir.mkdir()
    fresh_kernel_dir.chmod(0o777)
    runner = engine.load(save_checkpoint(tmp_path / "lm"), "causal-lm", dtype="float32", device="cpu")
    assert runner.decode_path == "torch"
    assert runner.decode_summary.startswith("PyTorch (the kernel directory ") and "writable by other users" in \
        runner.decode_summary


def test_processes_racing_to_build_all_end_up_on_the_kernel(fresh_kernel_dir):
    racers = [subprocess.Popen([sys.executable, "-c", LOAD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(3)]
    outputs = []
    try:
        for racer in racers:
            outputs.append(racer.communicate(timeout=300))
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait(timeout=30)
    import json

    for (out, err), racer in zip(outputs, racers):
        assert racer.returncode == 0, err
        got = json.loads(out)
        assert got["loaded"] and got["abi"] == decode_support.ABI_VERSION, got
    assert len(list(kernels_dir().iterdir())) == 1  # one library, no private build left behind


def test_a_compiler_command_with_arguments_works(fresh_kernel_dir, monkeypatch):
    monkeypatch.setenv("CC", f"env {COMPILER[0]}")  # a wrapper and its argument, as with CC="ccache gcc"
    assert kernel_build.find_compiler() == [shutil.which("env"), COMPILER[0]]
    lib = kernel_build.load_kernel("decode_step")
    assert lib is not None and lib.bigcode_decode_abi() == decode_support.ABI_VERSION
    assert kernel_build.kernel_problem("decode_step") is None


def test_a_new_compiler_version_gets_its_own_build(fresh_kernel_dir, tmp_path, monkeypatch):
    wrapper = tmp_path / "versioned-cc"
    wrapper.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "versioned-cc $CC_RELEASE"; exit 0; fi\n'
                       f'exec {COMPILER[0]} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CC", str(wrapper))
    for release in ("1.0", "2.0"):
        monkeypatch.setenv("CC_RELEASE", release)
        monkeypatch.setattr(kernel_build, "_versions", {})
        monkeypatch.setattr(kernel_build, "_loaded", {})
        assert kernel_build.load_kernel("decode_step") is not None
    assert len(list(kernels_dir().glob("decode_step-*.so"))) == 2


@pytest.mark.parametrize("version, knows_the_param", [  # whatever the compiler underneath
    ("gcc (GCC) 12.2.0\nCopyright (C) 2022 Free Software Foundation, Inc.", True),
    ("gcc (GCC) 7.5.0\nCopyright (C) 2017 Free Software Foundation, Inc.", False),  # before the param
    ("clang version 17.0.6", True),
])
def test_gcc_is_told_to_fuse_every_multiply_add_where_it_can(fresh_kernel_dir, tmp_path, monkeypatch, version,
                                                            knows_the_param):
    """GCC's Zen tuning would fuse a multiply-add in some loop shapes and not others (a token's logits would
    depend on its step's other rows); a compiler that rejects the flag still builds the kernel without it."""
    calls = tmp_path / "calls"
    wrapper = tmp_path / "cc"
    refuse = "" if knows_the_param else 'case "$*" in *--param*) echo "error: unknown --param" >&2; exit 1;; esac\n'
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then printf "{version}\\n"; exit 0; fi\n'
                       f'echo "$*" >> {calls}\n{refuse}exec {COMPILER[0]} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CC", str(wrapper))
    lib = kernel_build.load_kernel("decode_step")
    assert lib is not None and lib.bigcode_decode_abi() == decode_support.ABI_VERSION
    commands = calls.read_text().splitlines()
    flag = "--param avoid-fma-max-bits=0"
    assert (flag in commands[0]) == ("Free Software Foundation" in version)  # what the compiler was asked first
    if not knows_the_param:  # refused: the library loaded was built by a later command, without it
        assert len(commands) > 1 and flag not in commands[-1]


def test_the_first_error_line_of_a_failing_compiler_is_the_reason(fresh_kernel_dir, tmp_path, monkeypatch):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'decode_step.c: In function f:' >&2\n"
                      "echo 'decode_step.c:1:2: error: something is wrong' >&2\necho '1 error generated.' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    assert kernel_build.load_kernel("decode_step") is None
    assert kernel_build.kernel_problem("decode_step") == "broken-cc failed: decode_step.c:1:2: error: something is wrong"


@pytest.mark.parametrize("source, reason", [
    ("int unrelated(void) { return 0; }\n", "has no bigcode_decode_abi"),
    ("int bigcode_decode_abi(void) { return 1; }\n", f"speaks ABI 1, this version of bigcode-cli needs {decode_support.ABI_VERSION}"),
])
def test_a_library_that_is_not_this_kernel_falls_back_with_the_reason(tmp_path, monkeypatch, source, reason):
    foreign = ctypes.CDLL(str(_shared_library(tmp_path, "foreign", source)))
    monkeypatch.setattr(decode_support, "load_kernel", lambda name: foreign)
    runner = engine.load(save_checkpoint(tmp_path / "lm"), "causal-lm", dtype="float32", device="cpu")
    assert runner.decode_path == "torch" and reason in runner.decode_reason
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        cache = runner.new_cache(1, 4)
        runner(ids[:, :3], cache=cache)
        assert (runner(ids[:, 3:], cache=cache)[:, -1] - runner(ids)[:, -1]).abs().max().item() <= 1e-4


def test_a_step_whose_buffers_cannot_be_had_writes_nothing_and_returns_no_logits(tmp_path):
    path = save_checkpoint(tmp_path / "lm", n_layer=2)
    script = textwrap.dedent(f"""
        import resource, torch
        from bigcode_cli.errors import BackendError
        from bigcode_cli.model import engine
        runner = engine.load({str(path)!r}, "causal-lm", dtype="float32", device="cpu")
        assert runner.decode_path == "kernel"
        ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
        with torch.inference_mode():
            cache = runner.new_cache(1, 6)
            runner(ids[:, :4], cache=cache)
            before = [layer.clone() for layer in cache.layers]
            # a step that needs 4 GiB of buffers in a process allowed 512 MiB more than it has: the kernel
            # reserves its buffers before it reads a weight or writes the cache
            inner = runner.decoder.model.inner
            runner.decoder.model.inner = 2**30
            size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
            limits = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (size + 2**29, limits[1]))
            try:
                runner(ids[:, 4:5], cache=cache)
                print("a step without its buffers returned logits")
            except BackendError as exc:
                print("refused:", exc)
            resource.setrlimit(resource.RLIMIT_AS, limits)
            runner.decoder.model.inner = inner
            # bit for bit: the unwritten positions may hold NaNs
            assert cache.length == 4 and all(torch.equal(a.view(torch.int32), b.view(torch.int32))
                                             for a, b in zip(before, cache.layers))
            step = runner(ids[:, 4:5], cache=cache)[:, -1]
            full = runner(ids[:, :5])[:, -1]
            assert (step - full).abs().max().item() <= 1e-4
    """)
    done = _python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: the C decode kernel ran out of memory"), done.stdout


def test_an_idle_process_uses_no_cpu_after_decoding(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable core: the kernel starts no worker threads to go idle")
    path = save_checkpoint(tmp_path / "lm", n_layer=2, n_positions=256)
    script = textwrap.dedent(f"""
        import os, resource, time, torch
        from bigcode_cli.model import engine
        torch.set_num_threads(2)
        runner = engine.load({str(path)!r}, "causal-lm", dtype="float32", device="cpu")
        assert runner.decode_path == "kernel"
        threads = len(os.listdir("/proc/self/task"))
        with torch.inference_mode():
            cache = runner.new_cache(1, 200)
            runner(torch.tensor([[5, 6, 7]]), cache=cache)
            for _ in range(150):
                runner(torch.tensor([[8]]), cache=cache)
        assert len(os.listdir("/proc/self/task")) > threads  # the kernel's worker is there, now idle
        def cpu():
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.2)  # past every bounded spin (the kernel's 2 ms, OpenMP's own)
        cpu0, wall0 = cpu(), time.monotonic()
        time.sleep(2)
        print((cpu() - cpu0) / (time.monotonic() - wall0))
    """)
    done = _python(script, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 0.1


@pytest.mark.parametrize("disabled, line", [
    (False, "decode       on a CPU: C kernel"),
    (True, "decode       on a CPU: PyTorch (turned off by BIGCODE_CPU_KERNEL=0)"),
])
def test_models_info_says_what_runs_the_decode_steps(capsys, monkeypatch, disabled, line):
    from bigcode_cli.cli.app import run

    if disabled:
        monkeypatch.setenv("BIGCODE_CPU_KERNEL", "0")
    assert run(["models", "info", "bigcode-tiny"]) == 0
    assert line in capsys.readouterr().out.splitlines()
    assert run(["models", "info", "bigcode-tiny", "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["decode"] == line.split(None, 1)[1]


def test_missing_directories_on_the_way_are_made_private_whatever_the_umask(tmp_path, monkeypatch):
    # a umask that leaves new directories group-writable (common with one group per user) must not make the
    # kernel directory's own parents unsafe, so that the next run refuses them
    own = tmp_path / "home" / ".cache"
    monkeypatch.delenv("BIGCODE_KERNEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(own))
    monkeypatch.setattr(kernel_build, "_loaded", {})
    monkeypatch.setattr(kernel_build, "_problems", {})
    before = os.umask(0o002)
    try:
        assert kernel_build.load_kernel("decode_step") is not None, kernel_build.kernel_problem("decode_step")
    finally:
        os.umask(before)
    for directory in (own.parent, own, own / "bigcode", own / "bigcode" / "kernels"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_without_descriptors_to_load_through_no_library_is_loaded(fresh_kernel_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_build, "_DESCRIPTORS", str(tmp_path / "no-proc"))
    assert kernel_build.load_kernel("decode_step") is None
    assert kernel_build.kernel_problem("decode_step") == \
        f"this system has no {tmp_path / 'no-proc'}, through which a checked library is loaded"
    assert not fresh_kernel_dir.exists()  # nothing compiled either
