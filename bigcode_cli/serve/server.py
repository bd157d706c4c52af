"""Running the server: bind the socket (a busy port is a one-line error), load the model on the worker
thread while already answering /health (503 until loaded), serve until Ctrl-C or SIGTERM, shut down."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NoReturn, Sequence

from bigcode_cli.errors import BigCodeError, InputError
from bigcode_cli.serve.limits import ConnectionLimits
from bigcode_cli.serve.hosts import HostPolicy, is_loopback

LISTEN_BACKLOG = 128  # connections the kernel holds until accepted


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
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def public_name(name: str, path: Path, source: str, alias: str | None = None) -> str:
    """The name clients see: `alias`, else a model given by path is its directory's name (never the path)."""
    if alias:
        return alias
    return path.name if source == "path" else name


def path_hider(given: str, path: Path, name: str) -> Callable[[str], str]:
    """What clients see of a message about the model (a load error): its public `name` where it named the
    directory `path` (or the path-like `given` name that led there)."""
    spellings = [str(path)] + ([given] if os.sep in given or "/" in given else [])

    def hide(message: str) -> str:
        for spelling in spellings:
            message = message.replace(spelling, name)
        return message

    return hide


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
          api_keys: Sequence[bytes] = (), allowed_hosts: tuple[str, ...] = (), allowed_origins: tuple[str, ...] = (),
          alias: str | None = None, queue_size: int = 4, cache_ram_mib: int | None = None, parallel: int | None = None,
          fim_order: str = "auto", limits: ConnectionLimits = ConnectionLimits(),
          log: Callable[[str], None] | None = None, speculate: str | None = None) -> None:
    """Serve a model until interrupted; raises BigCodeError for what the user can fix.

    `api_keys`: the keys as bytes (serve.api_keys); `allowed_hosts`/`allowed_origins` as serve.hosts parses them;
    `limits`: how many connections may be open and how long one may stay silent (serve.connections).
    """
    import uvicorn

    from bigcode_cli.serve.api_keys import KeyRing
    from bigcode_cli.serve.app import create_app
    from bigcode_cli.serve.connections import bounded_protocol, log_config
    from bigcode_cli.terminal.console import debug_enabled
    from bigcode_cli.serve.handling import ServeConfig
    from bigcode_cli.serve.worker import DEFAULT_CACHE_RAM_MIB, DEFAULT_PARALLEL, EngineWorker
    from bigcode_cli import store
    from bigcode_cli.store.loader import open_model

    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    resolved = store.resolve(model or store.default_model("causal-lm"), offline=offline, download=False)
    keys = KeyRing(api_keys)
    if not is_loopback(host) and not keys:
        say(f"warning: listening on {host} without --api-key: anyone who can reach this address can use the model")
    name = public_name(resolved.name, resolved.path, resolved.source, alias)
    sock = bind(host, port)
    started = time.perf_counter()

    def load():  # on the worker thread
        return open_model(str(resolved.path), "causal-lm", engine=engine, attn=attn, device=device, dtype=dtype,
                          offline=offline)

    address = sock.getsockname()
    worker = EngineWorker(load, queue_size=queue_size,
                          cache_ram_mib=DEFAULT_CACHE_RAM_MIB if cache_ram_mib is None else cache_ram_mib,
                          parallel=DEFAULT_PARALLEL if parallel is None else parallel, fim_order=fim_order, log=say,
                          hide=path_hider(resolved.name, resolved.path, name),
                          **({"speculate": speculate} if speculate else {}))
    config = ServeConfig(model_name=name, api_keys=keys, hosts=HostPolicy(host, address[0], allowed_hosts),
                         origins=allowed_origins, worker=worker, body_timeout=limits.timeout)
    app = create_app(worker, config)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=3, server_header=False,
                                           http=bounded_protocol(limits), timeout_keep_alive=int(limits.timeout) or 1,
                                           # asyncio accepts up to `backlog` connections at once, before any is
                                           # bounded: a small batch keeps a flood below the descriptor limit
                                           backlog=min(limits.max_connections, LISTEN_BACKLOG),
                                           log_config=log_config(tracebacks=debug_enabled())))
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    say(f"serving {resolved.name} as {name!r} on http://{shown}:{address[1]} (OpenAI /v1/completions, "
        f"llama.cpp /infill, /completion, /health); loading the model")

    def watch_loading() -> None:
        worker.loaded_event.wait()
        if worker.state == "ready" and worker.loaded is not None:
            runner = worker.loaded.runner
            say(f"model loaded in {time.perf_counter() - started:.1f} s ({runner.engine}, {runner.device.type}, "
                f"{runner.dtype_name}, fill-in-the-middle order {worker.fim_order}, speculation {worker.speculate}); "
                "ready")
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
