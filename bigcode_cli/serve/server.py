"""Running the server: bind the socket (a busy port is a one-line error), load the model on the worker
thread while already answering /health (503 until loaded), serve until Ctrl-C or SIGTERM, shut down."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, NoReturn

from bigcode_cli.errors import BigCodeError, InputError

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


@contextmanager
def _quiet_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """SIGINT/SIGTERM handlers that uvicorn's own (installed on top) fall back to once it has shut down:
    the signal it re-raises then ends here instead of killing the process or raising KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda s, _f: on_signal(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(*, model: str | None, engine: str = "native", attn: str = "auto", device: str = "auto",
          dtype: str = "auto", offline: bool = False, host: str = "127.0.0.1", port: int = 8012,
          api_key: str | None = None, queue_size: int = 4, cache_slots: int = 2, fim_order: str = "auto",
          log: Callable[[str], None] | None = None) -> None:
    """Serve a model until interrupted; raises BigCodeError for what the user can fix."""
    import uvicorn

    from bigcode_cli.serve.app import create_app
    from bigcode_cli.serve.handling import ServeConfig
    from bigcode_cli.serve.worker import EngineWorker
    from bigcode_cli import store
    from bigcode_cli.store.loader import open_model

    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    resolved = store.resolve(model or store.default_model("causal-lm"), offline=offline, download=False)
    if not is_loopback(host) and not api_key:
        say(f"warning: listening on {host} without --api-key: anyone who can reach this address can use the model")
    sock = bind(host, port)
    started = time.perf_counter()

    def load():  # on the worker thread
        return open_model(str(resolved.path), "causal-lm", engine=engine, attn=attn, device=device, dtype=dtype,
                          offline=offline)

    worker = EngineWorker(load, queue_size=queue_size, cache_slots=cache_slots, fim_order=fim_order, log=say)
    config = ServeConfig(model_name=resolved.name, api_key=api_key, worker=worker)
    app = create_app(worker, config)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=3, server_header=False))
    address = sock.getsockname()
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    say(f"serving {resolved.name} on http://{shown}:{address[1]} (OpenAI /v1/completions, llama.cpp /infill, "
        f"/completion, /health); loading the model")

    def watch_loading() -> None:
        worker.loaded_event.wait()
        if worker.state == "ready" and worker.loaded is not None:
            runner = worker.loaded.runner
            say(f"model loaded in {time.perf_counter() - started:.1f} s ({runner.engine}, {runner.device.type}, "
                f"{str(runner.dtype).removeprefix('torch.')}, fill-in-the-middle order {worker.fim_order}); ready")
        else:
            server.should_exit = True

    threading.Thread(target=watch_loading, name="bigcode-load-watch", daemon=True).start()
    with _quiet_signals(lambda _sig: None):
        server.run(sockets=[sock])
    sock.close()
    if worker.state == "failed":
        raise BigCodeError(worker.error or "the model failed to load")
    say("stopped")
    if worker.alive:
        _end_now()


def _end_now() -> NoReturn:
    """End the process with status 0 while the worker thread is still inside torch (a load cannot be stopped
    midway). An interpreter exit would tear torch's C++ runtime down under that thread, and the runtime then
    aborts ("terminate called without an active exception", exit 134). Nothing is lost by not waiting: every
    write to the caches is atomic, and a killed writer's leftovers are cleared by the next one."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
