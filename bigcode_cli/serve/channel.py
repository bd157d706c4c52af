"""Carrying a job's events from the worker thread to the request's event loop, and noticing when
the client goes away (the ASGI `http.disconnect` message) while it waits for them."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive

_GONE = ("gone", None)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has closed the connection (the request body was already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class JobChannel:
    """Events of one job: ("text", (index, text)), then ("done", JobResult) or ("error", exception)."""

    def __init__(self, receive: Receive) -> None:
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._disconnect = asyncio.ensure_future(wait_for_disconnect(receive))

    def emit(self, kind: str, payload: Any) -> None:
        """Called from the worker thread."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed: the server is gone, nobody is listening
            pass

    async def next(self) -> tuple[str, Any]:
        """The next event, or ("gone", None) once the client has disconnected."""
        if self._disconnect.done():
            return _GONE
        getter = asyncio.ensure_future(self._events.get())
        done, _ = await asyncio.wait({getter, self._disconnect}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        return _GONE

    def close(self) -> None:
        """Stop watching for the disconnect."""
        self._disconnect.cancel()
