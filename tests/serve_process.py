"""A real `bigcode serve` subprocess on a loopback port of its own, for the server tests; never left running. Also
what several server tests ask of one: waiting for /health, reading /metrics and streamed events."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

from bigcode_cli.serve.memory import resident_mb


def bound_socket() -> socket.socket:
    """A loopback TCP socket bound to a port of its own and not listening: while it is open nobody else can take
    the port, and a connection to it is refused. Hand it to a server (uvicorn's `sockets=`) or close it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


_ANNOUNCED_PORT = re.compile(r"^serving .* on http://\S+:(\d+) ", re.MULTILINE)


def _limit_open_files(count: int) -> None:
    """In the child before exec: at most `count` file descriptors (a machine whose limit is low)."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


class ServerProcess:
    """`python -m bigcode_cli serve ARGS` with its stderr in a file; stop() ends it (SIGTERM, then SIGKILL).

    The server binds port 0 and the port is read from its first log line: a port chosen here and handed over
    could be taken in between by a client of another test running in parallel."""

    def __init__(self, args: list[str], home: Path, *, env: dict[str, str] | None = None,
                 open_files: int | None = None) -> None:
        self._port: int | None = None
        descriptor, log_name = tempfile.mkstemp(prefix="serve-", suffix=".log", dir=home)
        self.log_path = Path(log_name)
        environment = dict(os.environ, BIGCODE_HOME=str(home), HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1",
                           NO_COLOR="1", **(env or {}))
        environment.pop("BIGCODE_MODEL", None)
        self._log = os.fdopen(descriptor, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bigcode_cli", "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=self._log, env=environment,
            preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files),
        )

    @property
    def port(self) -> int:
        """The port the server listens on, as its first log line says (waits for that line)."""
        deadline = time.monotonic() + 120
        while self._port is None:
            found = _ANNOUNCED_PORT.search(self.log())
            if found:
                self._port = int(found.group(1))
            elif self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            elif time.monotonic() > deadline:
                raise RuntimeError(f"the server never said where it listens:\n{self.log()}")
            else:
                time.sleep(0.05)
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far, all its threads, user and system (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def rss_mb(self) -> float:
        """The server's resident memory now, in MB (Linux /proc)."""
        return resident_mb(self.process.pid)

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        return self.log_path.read_text()

    def health(self) -> tuple[int, dict]:
        """GET /health: status and JSON body."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Wait until /health says ok (the model is loaded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.health()[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready after {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the server, wait for it to end (kill it if it will not) and return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


def start_server(home: Path, args: list[str]) -> Iterator[ServerProcess]:
    """A module fixture's body: a ready server with `args`, stopped when the fixture ends."""
    process = ServerProcess(args, home)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def wait_health(server: ServerProcess, check: Callable[[dict], bool], timeout: float = 30) -> dict:
    """Poll /health until `check(body)` holds (fail after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = server.health()
        if status == 200 and check(body):
            return body
        time.sleep(0.02)
    raise AssertionError(f"/health never got there: {server.health()}")


def stream_events(response: Any) -> Iterator[dict]:
    """The JSON events of a server-sent event stream (an httpx streaming response)."""
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line.removeprefix("data: "))


def metrics(server: ServerProcess, headers: dict[str, str] | None = None) -> dict[str, int]:
    """GET /metrics, checked to be Prometheus text with HELP and TYPE for every sample, as {name: value}."""
    import re

    request = urllib.request.Request(server.url + "/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    values, helped, typed = {}, set(), {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            typed[name] = kind
        else:
            name, value = line.split(" ")
            assert re.fullmatch(r"bigcode_[a-z_]+", name) and name in helped and name in typed, line
            assert name.endswith("_total") == (typed[name] == "counter"), line
            values[name] = int(value)
    return values


def all_together(count: int, work: Callable[[int], Any], timeout: float) -> list[Any]:
    """`work(i)` for i in range(count) on threads released together by one barrier; the results in order.
    Fails if one is still running after `timeout` (plus the barrier's wait) and re-raises the first error."""
    results: list[Any] = [RuntimeError("no result")] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout)
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported below, in the caller's thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2 * timeout)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
