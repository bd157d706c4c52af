"""Starting, asking and stopping the servers the serve benchmarks compare: `bigcode serve` and llama.cpp's
llama-server, as processes on loopback ports. One copy of these helpers for every serve benchmark.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from bigcode_cli.serve.memory import resident_mb as rss_mb  # noqa: F401 - the one measure of RSS, for the benchmarks


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict, timeout: float = 600) -> tuple[float, dict]:
    """POST a JSON body: (seconds until the whole answer came, the JSON answer); an HTTP error ends the run."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{url}: HTTP {exc.code}: {exc.read()[:500].decode(errors='replace')}") from None
    return time.perf_counter() - started, reply


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 600) -> None:
    """Until GET /health answers 200; ends the run if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url}: not healthy after {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate a server and wait for it; kill it if it does not end in time."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def print_report(report: dict, out: Path | None) -> None:
    """A benchmark's JSON report on stdout, and into `out` when one is given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")


def cpu_seconds(pid: int) -> float:
    """CPU time process `pid` has used so far, all its threads, user and system (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_name() -> str:
    """The CPU's model name and whether it has AVX-512 and AMX (what the kernels' speed depends on)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    features = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{name} ({', '.join(features) or 'no AVX-512'}), {os.cpu_count()} CPUs"


def start_bigcode(port: int, *options: str, log: IO | int = subprocess.DEVNULL,
                  env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    """`bigcode serve --port PORT OPTIONS...` from this Python: (its URL, the process)."""
    process = subprocess.Popen([sys.executable, "-m", "bigcode_cli", "serve", "--port", str(port), *options],
                               stdout=subprocess.DEVNULL, stderr=log, env=env or dict(os.environ, NO_COLOR="1"))
    return f"http://127.0.0.1:{port}", process


def start_llama_server(binary: Path, model: Path, port: int, context: int, *options: str, threads: int = 2,
                       log: IO | int = subprocess.DEVNULL) -> tuple[str, subprocess.Popen]:
    """llama-server on `model` (GGUF) with `threads` threads and a `context`-token window: (its URL, the process)."""
    process = subprocess.Popen([str(binary), "-m", str(model), "--port", str(port), "--host", "127.0.0.1",
                                "-t", str(threads),
                                "-c", str(context), "-b", str(min(2048, context)), "-ub", str(min(512, context)),
                                *options], stdout=subprocess.DEVNULL, stderr=log)
    return f"http://127.0.0.1:{port}", process


def main() -> None:
    """Print this machine's CPU line as the serve and batch benchmarks report it."""
    import argparse

    argparse.ArgumentParser(description="The CPU line the serve and batch benchmarks report (helpers for them "
                                        "live in this module).").parse_args()
    print(cpu_name())


if __name__ == "__main__":
    main()
