"""The sandbox launcher: run as its own script (`python -I -S confine.py SPEC`); bigcode imports only its exit codes.

It is the only code that runs between bigcode and a model-written program. Standard library only, so
it starts fast and trusts nothing on sys.path. SPEC (JSON) says which commands to run in which
directory, with which environment, limits and confinement; bigcode_cli.eval.sandbox writes it.

    launcher (outside)           -- new namespaces (user?, mount, network, PID, IPC, UTS), file system read-only
      └─ init (PID 1 inside)     -- mounts a fresh /proc; runs the commands one after the other
           └─ program            -- rlimits, an unprivileged uid when root, no_new_privs, then exec

The launcher kills init when the wall-clock limit passes; when init ends, the kernel kills every
process left in its PID namespace. Exit codes: the program's own, 124 timed out, 125 setup failed
(a one-line reason on stderr, prefixed "confine:"). `--probe` tries each step and prints what worked.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1
TIMED_OUT, SETUP_FAILED = 124, 125
_FLAG_NAMES = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
               "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


class SetupError(Exception):
    """A confinement step that was asked for and failed."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, kind: str | None, flags: int) -> None:
    encode = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(encode(source), encode(target), encode(kind), flags, None), f"mount {target}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _mounts() -> list[tuple[str, int]]:
    """Every mount point with its per-mount flags, parents before children (/proc/self/mountinfo)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
            flags = 0
            for name in fields[5].split(","):
                flags |= _FLAG_NAMES.get(name, 0)
            found.append((point, flags))
    return sorted(found, key=lambda item: item[0].count("/") if item[0] != "/" else 0)


def _read_only_except(workdir: str) -> None:
    """Make every mount read-only in this (new) mount namespace, then the work directory writable."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for point, flags in _mounts():
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except SetupError:
            # pseudo file systems the container already locked; they hold no files a program may change
            if not point.startswith(("/proc", "/sys", "/dev")):
                raise
    _mount(workdir, workdir, None, MS_BIND)
    _mount(None, workdir, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)


def _enter_namespaces(spec: dict) -> None:
    """New namespaces (a user namespace too when not root), then the read-only file system."""
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if spec["user_namespace"]:
        uid, gid = os.getuid(), os.getgid()
        _unshare(flags | CLONE_NEWUSER)
        # the same ids inside as outside: not root in there, so exec drops the namespace's capabilities
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    else:
        _unshare(flags)
    _read_only_except(spec["cwd"])


def _limit(spec: dict) -> None:
    limits = spec["limits"]
    for name, value in (("RLIMIT_CPU", limits["cpu_s"]), ("RLIMIT_AS", limits["address_space"]),
                        ("RLIMIT_FSIZE", limits["file_size"]), ("RLIMIT_NPROC", limits["processes"]),
                        ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _drop_privileges(spec: dict) -> None:
    uid = spec.get("uid")
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _program(argv: list[str], spec: dict) -> None:
    """In the forked child: limits, identity, then exec. Never returns."""
    try:
        os.chdir(spec["cwd"])
        _limit(spec)
        _drop_privileges(spec)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        path = shutil.which(argv[0], path=spec["env"].get("PATH")) or argv[0]
        os.execve(path, argv, spec["env"])
    except BaseException as exc:  # noqa: BLE001 - a child must never return into the launcher
        os.write(2, f"confine: cannot start {argv[0]}: {exc}\n".encode())
    os._exit(SETUP_FAILED)


def _status(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _init(spec: dict) -> int:
    """PID 1 of the namespace (or a plain child without one): run the commands, stop at the first failure."""
    if spec["namespaces"]:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except SetupError:
            pass  # /proc then shows the host's processes, but the PID namespace still hides them from kill()
    code = 0
    for argv in spec["commands"]:
        child = os.fork()
        if child == 0:
            _program(argv, spec)
        while True:  # reap orphans too: as PID 1 they are ours
            pid, status = os.waitpid(-1, 0)
            if pid == child:
                code = _status(status)
                break
        if code != 0:
            break
    return code


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(spec: dict) -> int:
    """Confine, run the commands under the wall-clock limit, clean up; the exit code as described above."""
    if spec["namespaces"]:
        try:
            _enter_namespaces(spec)
        except (SetupError, OSError) as exc:
            os.write(2, f"confine: {exc}\n".encode())
            return SETUP_FAILED
    if spec.get("uid") is not None:
        os.chown(spec["cwd"], spec["uid"], spec["uid"])
    init = os.fork()
    if init == 0:
        try:
            os.setpgid(0, 0)  # its own group, so the launcher can end everything it started at once
            os._exit(_init(spec))
        except BaseException as exc:  # noqa: BLE001
            os.write(2, f"confine: {exc}\n".encode())
            os._exit(SETUP_FAILED)
    stop = lambda *_: (_kill_group(init), os._exit(TIMED_OUT))  # noqa: E731 - bigcode's own deadline
    signal.signal(signal.SIGTERM, stop)
    deadline = time.monotonic() + spec["timeout_s"]
    code = TIMED_OUT
    while time.monotonic() < deadline:
        pid, status = os.waitpid(init, os.WNOHANG)
        if pid == init:
            code = _status(status)
            break
        time.sleep(0.005)
    _kill_group(init)  # a timeout, or processes a program left behind without a PID namespace
    if code == TIMED_OUT:
        os.waitpid(init, 0)
    return code


def probe(spec: dict) -> dict:
    """Which confinement works here: run `true` under each step in turn and report the steps that held."""
    works = {}
    for name, change in (("namespaces", {"namespaces": True}), ("drop_uid", {"namespaces": False})):
        trial = {**spec, **change, "commands": [["true"]], "timeout_s": 10}
        if name == "drop_uid" and trial.get("uid") is None:
            works[name] = False
            continue
        if name == "namespaces":
            trial["uid"] = None
        child = os.fork()
        if child == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            os._exit(run(trial))
        works[name] = _status(os.waitpid(child, 0)[1]) == 0
    return works


def main() -> int:
    spec = json.loads(sys.argv[-1])
    if "--probe" in sys.argv[1:-1]:
        print(json.dumps(probe(spec)))
        return 0
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
