"""The sandbox against hostile completions: each one tries something a program must not do and "passes" its
test only if it got away with it. Each must end failed or timed out, nothing outside the temporary directory
may change, the listener must see no connection, no process may be left, and all in bounded time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from bigcode_cli.eval.evaluation import evaluate, summarize
from bigcode_cli.eval.problem import Problem
from bigcode_cli.eval.sandbox import Limits, Sandbox, probe

# small limits keep the battery fast: a 2 s wall clock, 1 GiB of address space, 1 MiB files, 32 processes
LIMITS = Limits(timeout_s=2.0, cpu_s=4, address_space=1 << 30, file_size=1 << 20, processes=32)
PROBLEM = Problem("hostile/f", "python", "def f():\n", "\nassert f() == 1\n")


def _hostile(marker: str, home_file: Path, outside_file: Path, port: int, victim: int) -> dict[str, str]:
    body = {
        "endless loop": "    while True:\n        pass\n",
        "fork bomb": "    import os\n    while True:\n        os.fork()\n",
        "20 GB": "    block = bytearray(20 * 2**30)\n    return 1\n",
        "10 GB file": "    with open('big', 'wb') as f:\n        for _ in range(10 * 1024):\n"
                      "            f.write(b'x' * 2**20)\n    return 1\n",
        "write home": f"    open({str(home_file)!r}, 'w').write('escaped')\n    return 1\n",
        "write outside": f"    open({str(outside_file)!r}, 'w').write('escaped')\n    return 1\n",
        "tcp": f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
               "    return 1\n",
        "api key": "    import os\n    return 1 if os.environ.get('OPENAI_API_KEY') == 'sk-secret' "
                   "or os.environ.get('HF_TOKEN') else 2\n",
        # inside a PID namespace the parent is its init, which ignores signals from inside: gone or not, look
        "kill parent": "    import os, signal, time\n    parent = os.getppid()\n    os.kill(parent, signal.SIGKILL)\n"
                       "    time.sleep(0.2)\n    return 1 if os.getppid() != parent else 2\n",
        "kill bigcode": f"    import os, signal\n    os.kill({victim}, signal.SIGKILL)\n    return 1\n",
        "background": f"    import subprocess\n    subprocess.Popen(['sleep', '300', '{marker}'], start_new_session=True, "
                      "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n    return 2\n",
    }
    return body


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_hostile_completions_are_contained(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    marker = f"bigcode-eval-{uuid.uuid4().hex}"
    home_file = Path.home() / f".{marker}"
    outside_file = tmp_path / "escaped.txt"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    victim = subprocess.Popen(["sleep", "120"])  # stands for bigcode's own process
    before = sorted(os.listdir(tmp_path))
    hostile = _hostile(marker, home_file, outside_file, listener.getsockname()[1], victim.pid)
    problems = [Problem(f"hostile/{name}", "python", PROBLEM.prompt, PROBLEM.tests) for name in hostile]
    sandbox = Sandbox(LIMITS)
    started = time.monotonic()
    try:
        records = evaluate(problems, 1, lambda problem, n: [hostile[problem.task_id.split("/", 1)[1]]] * n,
                           sandbox=sandbox, jobs=2)
        elapsed = time.monotonic() - started
        results = {r["task_id"]: r["result"] for r in records}
        assert set(results) == {p.task_id for p in problems}
        assert all(result in ("failed", "timed out") for result in results.values()), results
        assert results["hostile/endless loop"] == "timed out"
        assert elapsed < 60
        assert not home_file.exists() and not outside_file.exists()
        assert sorted(os.listdir(tmp_path)) == before
        assert victim.poll() is None, "a program killed a process outside the sandbox"
        assert not _processes_with(marker), "a program left a process behind"
        if sandbox.containment.namespaces:
            with pytest.raises(BlockingIOError):
                listener.accept()
        summary = summarize("hostile", problems, records, sandbox)
        assert summary["passed"] == 0 and summary["pass@k"] == {"pass@1": 0.0}
    finally:
        listener.close()
        victim.kill()
        victim.wait()
        home_file.unlink(missing_ok=True)
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_a_good_program_passes_and_its_directory_is_removed(monkeypatch):
    import tempfile

    base = tempfile.mkdtemp(prefix="bigcode-eval-test-")
    os.chmod(base, 0o755)  # the programs' uid must be able to enter it
    monkeypatch.setattr(tempfile, "tempdir", base)
    try:
        records = evaluate([PROBLEM], 2, lambda problem, n: ["    return 1\n", "    return 2\n"][:n],
                           sandbox=Sandbox(LIMITS), jobs=1)
        assert [r["result"] for r in records] == ["passed", "failed"]
        assert all(r["time"] > 0 for r in records)
        assert os.listdir(base) == []
    finally:
        os.rmdir(base)


def test_the_probe_reports_what_is_contained_here():
    containment = probe()
    described = containment.describe()
    assert described["network_namespace"] == containment.namespaces
    assert bool(described["not_contained"]) == (not containment.namespaces)
    if os.geteuid() == 0:
        assert containment.unprivileged_uid  # root can always drop to another uid
