"""Bounding the server's connections: how many may be open, how long one may stay silent, and what the log
says about them.

uvicorn closes an idle keep-alive connection only after it has answered a request on it: a connection
that never sends a request, or sends half a request head and stops, stays open for good, and enough of
them use up the process's file descriptors (every client locked out, asyncio logging a traceback per
failed accept). Here every connection gets a deadline while no request of it is running: from its
opening and from the end of each response, it must complete its next request head within `timeout`
seconds or be closed. A request whose body trickles in is bounded by the routes (handling.read_body).

Beyond `max_connections` open ones, a new connection closes the longest-open idle one (no request
running), else the longest-open one whose request body is still arriving: neither silent connections nor
bodies sent a byte at a time (each answered 408 after `timeout`, then sent again) can keep a real client out.
When every connection has a request running with its body in, the new one is closed at once (the worker's
queue bound answers 503 long before that).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from bigcode_cli.serve.limits import ConnectionLimits


def bounded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with `limits` applied to every connection."""
    return type("BoundedH11Protocol", (_BoundedH11Protocol,), {"limits": limits})


class _BoundedH11Protocol(H11Protocol):
    limits: ConnectionLimits
    opened_at: float = 0.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.opened_at = self.loop.time()
        # one already closed (in this loop pass, by an earlier newcomer of a burst) counts as gone
        others = [other for other in self.connections if other is not self and not _is_closing(other)]
        if len(others) + 1 > self.limits.max_connections:
            closable = [other for other in others if _is_idle(other)] or [
                other for other in others if _is_receiving_body(other)]
            if not closable:
                self.transport.close()
                return
            min(closable, key=lambda other: getattr(other, "opened_at", 0.0)).transport.close()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if not _is_idle(self):
            self._disarm()  # a request runs: its body and response are the route's business

    def on_response_complete(self) -> None:
        self._arm()  # before uvicorn looks for a pipelined request, which disarms it again
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.limits.timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if _is_idle(self) and not self.transport.is_closing():
            self.transport.close()


def _is_idle(protocol: Any) -> bool:
    """Whether no request of this connection is running (none yet, or its response is complete)."""
    cycle = getattr(protocol, "cycle", None)
    return cycle is None or cycle.response_complete


def _is_closing(protocol: Any) -> bool:
    transport = getattr(protocol, "transport", None)
    return transport is None or transport.is_closing()


def _is_receiving_body(protocol: Any) -> bool:
    """Whether this connection's request has its head in and its body still arriving (no job runs for it yet)."""
    connection = getattr(protocol, "conn", None)
    return not _is_idle(protocol) and connection is not None and connection.their_state is h11.SEND_BODY


class OneLineFormatter(logging.Formatter):
    """A log record as one line: no traceback, no stack, newlines in the message escaped. A flood of broken
    connections then costs one short line each instead of a traceback each."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {exc})"
        return f"{record.levelname.lower()}: {message}".replace("\r", "\\r").replace("\n", "\\n")


def log_config(*, tracebacks: bool = False) -> dict[str, Any]:
    """uvicorn's log_config: its loggers and asyncio's write warnings and errors to stderr, one line each
    unless `tracebacks` (BIGCODE_DEBUG=1)."""
    handler = {"class": "logging.StreamHandler", "formatter": "one_line", "stream": "ext://sys.stderr"}
    quiet = {"handlers": ["stderr"], "level": "WARNING", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"one_line": {"()": logging.Formatter if tracebacks else OneLineFormatter}},
        "handlers": {"stderr": handler},
        "loggers": {"uvicorn": quiet, "uvicorn.error": {"level": "WARNING"}, "uvicorn.access": {"level": "WARNING"},
                    "asyncio": quiet},
    }
