"""The ASGI app: the routes of both protocols behind the browser guard and the API-key guard, the worker
started and stopped by the lifespan.

Why Starlette + uvicorn + pydantic v2 (not FastAPI): the two protocols need their own error shapes
and their own streaming formats, so FastAPI's automatic validation responses and docs would have to
be overridden route by route; Starlette gives routing, JSON and raw ASGI access (for the disconnect
message) with little else, pydantic validates the request bodies, uvicorn is the standard server.
"""

from __future__ import annotations

import contextlib
import time
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from bigcode_cli.serve import llama_api, observability, openai_api, tgi_api
from bigcode_cli.serve.api_keys import ApiKeyGuard
from bigcode_cli.serve.browser_guard import BrowserGuard
from bigcode_cli.serve.errors import ApiError, error_response
from bigcode_cli.serve.handling import ServeConfig, api_error, http_error
from bigcode_cli.serve.worker import EngineWorker


def create_app(worker: EngineWorker, config: ServeConfig) -> ASGIApp:
    """The ASGI app serving `worker`'s model; the lifespan starts and stops the worker."""
    config.created = config.created or int(time.time())
    config.worker = worker

    async def health(request: Request) -> Response:
        if worker.state == "ready":
            return JSONResponse({"status": "ok", "slots_idle": worker.parallel - worker.running,
                                 "slots_processing": worker.running, "requests_waiting": worker.waiting})
        message = "Loading model" if worker.state == "loading" else f"the model failed to load: {worker.public_error}"
        return error_response(request.url.path, ApiError(503, message))

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
        *openai_api.routes(worker, config),
        *llama_api.routes(worker, config),
        *tgi_api.routes(worker, config),
        *observability.routes(worker),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not worker.started:
            worker.start()
        try:
            yield
        finally:
            worker.stop(timeout=5.0)

    app = Starlette(routes=routes,
                    exception_handlers={HTTPException: http_error, ApiError: api_error, Exception: http_error},
                    lifespan=lifespan)
    return BrowserGuard(ApiKeyGuard(app, config.api_keys), config.hosts, config.origins)
