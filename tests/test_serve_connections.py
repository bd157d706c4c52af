"""`bigcode serve`'s connections under abuse (issue 21): floods of silent and broken connections, request
heads and bodies that never finish, a 4 MB request beside /health. A real server on a loopback port whose
process may open only OPEN_FILES files, as on a machine with a low `ulimit -n`."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from serve_process import ServerProcess  # noqa: E402

OPEN_FILES = 512  # the server's descriptor limit: the flood below is larger
MAX_CONNECTIONS = 32
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(["--parallel", "1", "--max-connections", str(MAX_CONNECTIONS), "--timeout", str(TIMEOUT_S)],
                            tmp_path_factory.mktemp("serve_home"), open_files=OPEN_FILES)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))  # no wait: the flood must not depend on the server accepting
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` (end of file, or a reset) within `within` seconds; what it sent before
    the end is read and dropped."""
    sock.setblocking(True)
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except (socket.timeout, BlockingIOError):
        return False
    return False


def _read_until_closed(sock: socket.socket, within: float) -> bytes:
    """What the server sends on `sock` until it closes it (or `within` seconds pass)."""
    received = b""
    deadline = time.monotonic() + within
    sock.settimeout(within)
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return received


def _head(port: int, body_length: int, path: str = "/completion") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body_length}\r\n\r\n").encode()


def test_a_flood_of_silent_and_broken_connections_locks_no_client_out_and_logs_no_tracebacks(server):
    lines_before = len(server.log().splitlines())
    flood = [_connect(server.port) for _ in range(OPEN_FILES + 200)]
    broken = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            broken.append(sock)
        health = httpx.get(server.url + "/health", timeout=15)
        assert health.status_code == 200
        reply = httpx.post(server.url + "/completion", json={"prompt": "def f(x):", "n_predict": 4, "temperature": 0},
                           timeout=60)
        assert reply.status_code == 200 and reply.json()["tokens_predicted"] >= 1
    finally:
        for sock in flood + broken:
            sock.close()
    log = server.log()
    assert "Traceback" not in log
    added = log.splitlines()[lines_before:]
    assert len(added) <= len(broken) + 5, "\n".join(added[:20])


def test_silent_and_half_sent_connections_are_closed_after_the_timeout(server):
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    half_head = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    half_head.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0")
    kept_alive = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    kept_alive.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200")
    kept_alive.sendall(b"GET /heal")  # the next request's head, never finished
    try:
        for sock in (silent, half_head, kept_alive):
            assert _closed_by_server(sock, within=TIMEOUT_S + 5)
    finally:
        for sock in (silent, half_head, kept_alive):
            sock.close()


@pytest.mark.parametrize("path", ["/completion", "/infill", "/v1/completions", "/generate"])
def test_a_body_sent_too_slowly_gets_408(server, path):
    # every route reads its body within --timeout (/generate once waited for ever: a handful of such connections
    # then held every place)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_head(server.port, 1000, path) + b'{"prompt": ')
        reply = _read_until_closed(sock, within=2 * TIMEOUT_S + 10)  # the idle deadline closes it after the 408
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"did not arrive within" in reply


def test_bodies_that_never_finish_cannot_keep_a_client_out(tmp_path):
    # more connections than --max-connections, each with its request head in and its body still arriving (a
    # --timeout long enough that none is answered 408 meanwhile): a new client closes the oldest of them to get
    # in, as it would an idle one; it used to be turned away at once, and trickled bodies sent again after each
    # 408 kept every client out
    process = ServerProcess(["--parallel", "1", "--max-connections", "4", "--timeout", "60"], tmp_path)
    trickling = []
    try:
        process.wait_ready()
        for _ in range(6):
            sock = socket.create_connection(("127.0.0.1", process.port), timeout=10)
            sock.sendall(_head(process.port, 1000) + b'{"prompt": ')
            trickling.append(sock)
            time.sleep(0.05)  # its head read before the next connects (else the next closes it as idle)
        time.sleep(0.3)
        reply = httpx.post(process.url + "/completion", json={"prompt": "def f(x):", "n_predict": 2,
                                                              "temperature": 0}, timeout=30)
        assert reply.status_code == 200
        assert sum(_closed_by_server(sock, within=0.5) for sock in trickling) == 3  # the three oldest
    finally:
        for sock in trickling:
            sock.close()
        process.stop()
    assert "Traceback" not in process.log()


def test_health_answers_while_a_4_mb_prompt_is_read_and_prepared(server):
    body = json.dumps({"prompt": "x = 1\n" * (4 * 1024 * 1024 // 7 - 10), "n_predict": 1}).encode()
    assert 4_000_000 < len(body) <= 4 * 1024 * 1024  # just under the body limit
    results: list[int] = []

    def send() -> None:
        reply = httpx.post(server.url + "/completion", content=body, headers={"Content-Type": "application/json"},
                           timeout=120)
        results.append(reply.status_code)

    sender = threading.Thread(target=send)
    sender.start()
    slowest = 0.0
    try:
        while sender.is_alive():
            started = time.monotonic()
            assert httpx.get(server.url + "/health", timeout=30).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.02)
    finally:
        sender.join(120)
    assert results == [200]
    assert slowest < 1.0, f"/health took {slowest:.2f} s beside a 4 MB prompt"


def test_a_large_body_is_decoded_and_validated_off_the_event_loop():
    from pydantic import BaseModel, field_validator
    from starlette.requests import Request

    from bigcode_cli.serve.handling import OFF_LOOP_BYTES, ServeConfig, read_request

    threads: list[int] = []

    class Recorded(BaseModel):
        prompt: str

        @field_validator("prompt")
        @classmethod
        def where(cls, value: str) -> str:
            threads.append(threading.get_ident())
            return value

    async def read(size: int) -> str:
        payload = json.dumps({"prompt": "x" * size}).encode()
        messages = [{"type": "http.request", "body": payload, "more_body": False}]

        async def receive():
            return messages.pop(0)

        scope = {"type": "http", "method": "POST", "path": "/completion", "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]}
        parsed = await read_request(Request(scope, receive), Recorded, ServeConfig(model_name="m", body_timeout=5))
        return parsed.prompt

    loop_thread = threading.get_ident()  # asyncio.run runs its loop on this thread
    assert asyncio.run(read(16)) == "x" * 16
    assert asyncio.run(read(OFF_LOOP_BYTES)) == "x" * OFF_LOOP_BYTES
    assert threads[0] == loop_thread and threads[1] != loop_thread


def test_a_burst_of_newcomers_closes_one_connection_each(monkeypatch):
    # asyncio accepts a burst in one pass of its loop, where a closed connection is still in the set until its
    # connection_lost runs: each newcomer must close another one, not the one an earlier newcomer just closed
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from bigcode_cli.serve.connections import bounded_protocol
    from bigcode_cli.serve.limits import ConnectionLimits

    class Transport:
        def __init__(self) -> None:
            self.closing = False

        def close(self) -> None:
            self.closing = True

        def is_closing(self) -> bool:
            return self.closing

    class Loop:
        def time(self) -> float:
            return time.monotonic()

        def call_later(self, delay: float, callback) -> Any:
            return type("Handle", (), {"cancel": lambda self: None})()

    def made(self, transport) -> None:  # uvicorn's own part: the connection joins the server's set
        self.transport = transport
        self.connections.add(self)

    monkeypatch.setattr(H11Protocol, "connection_made", made)
    protocol = bounded_protocol(ConnectionLimits(max_connections=4, timeout=60))
    shared: set = set()
    for _ in range(10):  # all in one pass: nothing leaves the set
        connection = protocol.__new__(protocol)
        connection.connections, connection.loop, connection.cycle = shared, Loop(), None
        connection.connection_made(Transport())
    assert len(shared) == 10
    assert sum(not connection.transport.is_closing() for connection in shared) == 4


def test_a_body_cut_off_by_its_client_is_a_499_not_an_internal_error():
    from pydantic import BaseModel
    from starlette.requests import Request

    from bigcode_cli.serve.errors import ApiError
    from bigcode_cli.serve.handling import ServeConfig, read_request

    class Body(BaseModel):
        prompt: str

    messages = [{"type": "http.request", "body": b'{"prompt": ', "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/completion", "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"100")]}
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_request(Request(scope, receive), Body, ServeConfig(model_name="m", body_timeout=5)))
    assert caught.value.status == 499
