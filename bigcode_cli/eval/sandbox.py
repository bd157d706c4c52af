"""Running model-written programs: each in a fresh temporary directory, through the launcher (confine.py)
in its own process group, with limits, a scrubbed environment and whatever confinement this machine allows.

What is contained where (the README's "Evaluation" section says the same to users):
- namespaces (root with CAP_SYS_ADMIN, as in CI and most containers; or an unprivileged user namespace,
  as on most laptops): no network (a new network namespace with only a loopback that is down), a new PID
  namespace (the program cannot see or signal anything outside, and every process it leaves behind is
  killed when it ends), the whole file system read-only except the temporary directory.
- root: the program also runs as an unprivileged uid (65534 minus the job slot), so RLIMIT_NPROC applies
  and nothing owned by root (home included) is writable even without namespaces.
- neither: only the limits and the process group; the program can read and write what the user can,
  reach the network, and a process that starts its own session outlives the run. bigcode says so.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bigcode_cli.eval.confine import SETUP_FAILED, TIMED_OUT

LAUNCHER = Path(__file__).with_name("confine.py")
NOBODY = 65534
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"  # where interpreters are looked for first, and the programs' PATH
RESULTS = ("passed", "failed", "timed out", "error")


@dataclass(frozen=True)
class Limits:
    """What one program may use: wall-clock and CPU seconds, bytes of address space and of any file, processes."""

    timeout_s: float = 10.0
    cpu_s: int | None = None  # None: the wall-clock limit, rounded up (per process)
    address_space: int = 4 << 30
    file_size: int = 64 << 20
    processes: int = 128


@dataclass(frozen=True)
class Outcome:
    """How one program ended: a member of RESULTS, its wall-clock seconds, and the end of its output."""

    result: str
    seconds: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        """Whether the program exited 0 in time."""
        return self.result == "passed"


@dataclass(frozen=True)
class Containment:
    """What the sandbox could set up on this machine (probed once)."""

    namespaces: bool
    user_namespace: bool
    unprivileged_uid: bool

    def describe(self) -> dict[str, object]:
        """The facts the results record."""
        return {"network_namespace": self.namespaces, "pid_namespace": self.namespaces,
                "read_only_file_system": self.namespaces, "user_namespace": self.user_namespace,
                "unprivileged_uid": self.unprivileged_uid, "not_contained": self.not_contained()}

    def not_contained(self) -> list[str]:
        """What a program can still do here, in words (empty when fully confined)."""
        gaps = []
        if not self.namespaces:
            gaps.append("no network namespace: programs can reach the network")
            gaps.append("no PID namespace: a program that starts its own session can outlive the run")
            if self.unprivileged_uid:
                gaps.append("no mount namespace: world-writable directories such as /tmp are writable")
            else:
                gaps.append("no mount namespace and no other user: programs can change your files")
        return gaps


def _jobs_uid(slot: int) -> int | None:
    """The uid a program of this job slot runs as: none when bigcode is not root (it cannot change uid)."""
    return NOBODY - slot if os.geteuid() == 0 else None


def _environment(extra_path: list[str] | None = None) -> dict[str, str]:
    """All a program gets: a PATH to the interpreters, a UTF-8 locale. No tokens, no keys, no HOME of the user."""
    path = ":".join(dict.fromkeys([*(extra_path or []), *SYSTEM_PATH.split(":")]))
    return {"PATH": path, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def _spec(workdir: str, commands: list[list[str]], limits: Limits, *, namespaces: bool, uid: int | None,
          env: dict[str, str]) -> dict[str, object]:
    return {"cwd": workdir, "commands": commands, "timeout_s": limits.timeout_s, "namespaces": namespaces,
            "user_namespace": namespaces and os.geteuid() != 0, "uid": uid,
            "env": {**env, "HOME": workdir, "TMPDIR": workdir},
            "limits": {"cpu_s": limits.cpu_s or math.ceil(limits.timeout_s), "address_space": limits.address_space,
                       "file_size": limits.file_size, "processes": limits.processes}}


def _launch(spec: dict[str, object], *flags: str, output=subprocess.DEVNULL, wait_s: float) -> int:
    """Start the launcher in its own process group and wait; past wait_s end the whole group. (The launcher
    itself ends everything it started before it exits, so after a normal exit there is nothing to kill.)"""
    argv = [sys.executable, "-I", "-S", str(LAUNCHER), *flags, json.dumps(spec)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output, cwd=spec["cwd"],
                            env=_environment(), start_new_session=True, close_fds=True)
    try:
        return proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the launcher kills its init, then exits
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return TIMED_OUT


@functools.lru_cache(maxsize=None)
def probe() -> Containment:
    """Try the confinement steps once on this machine and remember which held."""
    workdir = tempfile.mkdtemp(prefix="bigcode-eval-probe-")
    try:
        spec = _spec(workdir, [["true"]], Limits(timeout_s=10), namespaces=True, uid=_jobs_uid(0),
                     env=_environment())
        with tempfile.TemporaryFile() as out:
            argv = [sys.executable, "-I", "-S", str(LAUNCHER), "--probe", json.dumps(spec)]
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL, cwd=workdir,
                           env=_environment(), timeout=30, check=False)
            out.seek(0)
            try:
                works = json.loads(out.read() or b"{}")
            except ValueError:
                works = {}
    except (OSError, subprocess.SubprocessError):
        works = {}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    namespaces = bool(works.get("namespaces"))
    return Containment(namespaces, namespaces and os.geteuid() != 0, bool(works.get("drop_uid")))


class Sandbox:
    """Runs programs one per call, confined as far as `probe()` found possible."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.containment = probe()

    def run(self, files: dict[str, str], commands: list[list[str]], *, slot: int = 0,
            extra_path: list[str] | None = None) -> Outcome:
        """Write `files` into a fresh directory, run `commands` there in turn, remove the directory."""
        started = time.perf_counter()
        workdir = tempfile.mkdtemp(prefix="bigcode-eval-")
        try:
            for name, text in files.items():
                Path(workdir, name).write_text(text, encoding="utf-8")
            uid = _jobs_uid(slot) if self.containment.unprivileged_uid else None
            spec = _spec(workdir, commands, self.limits, namespaces=self.containment.namespaces, uid=uid,
                         env=_environment(extra_path))
            with tempfile.TemporaryFile() as output:
                code = _launch(spec, output=output, wait_s=self.limits.timeout_s + 10)
                output.seek(0, os.SEEK_END)
                output.seek(max(output.tell() - 2000, 0))
                detail = output.read().decode("utf-8", "replace").strip()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.perf_counter() - started
        if code == 0:
            return Outcome("passed", seconds, detail)
        if code == TIMED_OUT:
            return Outcome("timed out", seconds, detail)
        if code == SETUP_FAILED and "confine:" in detail:
            return Outcome("error", seconds, detail)
        return Outcome("failed", seconds, detail)
