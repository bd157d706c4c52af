"""What every route shares: reading and checking request bodies, running a job on the worker while
watching for the client to leave, server-sent events, errors as JSON."""


from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import anyio
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bigcode_cli.serve.api_keys import KeyRing, key_digest
from bigcode_cli.serve.channel import JobChannel
from bigcode_cli.serve.errors import ApiError, error_response
from bigcode_cli.serve.hosts import HostPolicy
from bigcode_cli.serve.worker import EngineWorker, Job, NotReady, ServerBusy

MAX_BODY_BYTES = 4 * 1024 * 1024
OFF_LOOP_BYTES = 64 * 1024  # a body at least this large is decoded and validated on a worker thread
JSON_MEDIA_TYPE = "application/json"


@dataclass
class ServeConfig:
    """What the routes need to know about the server."""

    model_name: str  # what responses call the model: never a local path
    api_keys: KeyRing = field(default_factory=KeyRing)
    hosts: HostPolicy = field(default_factory=HostPolicy)
    origins: tuple[str, ...] = ()  # --allowed-origins
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout: float | None = None  # seconds a request body may take to arrive (--timeout)
    created: int = 0
    worker: EngineWorker | None = None

    @property
    def context_length(self) -> int:
        """The loaded model's context (0 while loading: no request gets that far then)."""
        loaded = self.worker.loaded if self.worker is not None else None
        return loaded.runner.context_length if loaded is not None else 0


# -- reading and checking requests -----------------------------------------------------------------


async def read_request(request: Request, schema: type[BaseModel], config: ServeConfig) -> Any:
    """The request body validated against `schema`, within the server's size and time limits. A large body is
    decoded and validated on a worker thread, so /health and the other clients are answered meanwhile."""
    body = await read_body(request, config.max_body_bytes, timeout=config.body_timeout)
    if len(body) < OFF_LOOP_BYTES:
        return parse(schema, _decode_json(body))
    return await run_in_threadpool(lambda: parse(schema, _decode_json(body)))


async def read_body(request: Request, limit: int, *, timeout: float | None = None) -> bytes:
    """The request body, at most `limit` bytes arriving within `timeout` seconds, declared as JSON
    (browser_guard: a web page cannot send that type without a preflight)."""
    declared_type = request.headers.get("content-type")
    if (declared_type or "").split(";", 1)[0].strip().lower() != JSON_MEDIA_TYPE:
        raise ApiError(415, f"send the request body as JSON with the header `Content-Type: {JSON_MEDIA_TYPE}` "
                            f"(curl: -H 'Content-Type: {JSON_MEDIA_TYPE}'), not {declared_type or 'without one'}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes")
    body = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise ApiError(413, f"the request body is larger than {limit} bytes")
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:  # closed before its body was in (by the client, or to make room: connections.py)
        raise ApiError(499, "the client closed the connection before sending the whole request body") from None
    return bytes(body)


def _decode_json(body: bytes) -> dict[str, Any]:
    """`body` as a JSON object; what is wrong with it as a 400."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None
    except ValueError:  # not a JSONDecodeError: an integer of more digits than Python converts (4,300)
        raise ApiError(400, "the request body holds a number with too many digits") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(data).__name__}")
    return data


def parse(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate a body against its schema; the first problem becomes a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(400, f"{where}: {message}" if where else message, param=where) from None


def user_error(exc: Exception) -> ApiError:
    """A library error met while running a request, as an API error."""
    from bigcode_cli.errors import BigCodeError, TokenizerError

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ServerBusy):
        return ApiError(503, str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, NotReady):
        return ApiError(503, str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, TokenizerError):
        return ApiError(501, str(exc))
    if isinstance(exc, BigCodeError):
        return ApiError(400, str(exc))
    return ApiError(500, f"internal error: {exc}")


def check_max_tokens(value: int, context: int, name: str) -> None:
    """Refuse a generation longer than the model's context."""
    if value > context:
        raise ApiError(400, f"{name} must be at most {context} (the model's context), got {value}", param=name)


def completion_settings(*, max_new_tokens: int, fim: bool, temperature: float | None, top_k: int | None,
                        top_p: float | None, repetition_penalty: float | None, seed: int | None, stops: list[str],
                        num_samples: int = 1, lines: int | None = None, block: bool | None = None,
                        min_indent: int = 0, ignore_eos: bool = False) -> Any:
    """CompletionSettings for a request; unset fields keep the CLI's defaults. FIM requests are cleaned
    like `bigcode infill` (stop at the end of the block), plain continuations are not, like `bigcode generate`."""
    from bigcode_cli.generation.completion import CompletionSettings
    from bigcode_cli.generation.sampling import SamplingParams

    defaults = SamplingParams()
    sampling = SamplingParams(
        temperature=defaults.temperature if temperature is None else float(temperature),
        top_k=defaults.top_k if top_k is None else max(int(top_k), 0),
        top_p=defaults.top_p if top_p is None else float(top_p),
        repetition_penalty=defaults.repetition_penalty if repetition_penalty is None else float(repetition_penalty),
        seed=seed,
    )
    return CompletionSettings(max_new_tokens=max(1, max_new_tokens), sampling=sampling, stops=list(stops or []),
                              num_samples=num_samples, lines=lines, block=fim if block is None else block,
                              min_indent=max(0, min_indent), ignore_eos=ignore_eos)


# -- running a job ---------------------------------------------------------------------------------


class Running:
    """A submitted job and its channel: events as they come, cancellation when the client leaves."""

    def __init__(self, worker: EngineWorker, request: Request, make_job: Callable[[Callable[[str, Any], None]], Job]):
        worker.check_ready()
        self.worker = worker
        self.dtype = worker.dtype
        self.channel = JobChannel(request.receive)
        try:
            self.job = make_job(self.channel.emit)
            self.job.key_digest = key_digest(request.headers.get("authorization"))
            worker.submit(self.job)
        except Exception:
            self.channel.close()
            raise

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        """("text", (index, text)) events, then one ("done", result); raises ApiError on an error."""
        try:
            while True:
                kind, payload = await self.channel.next()
                if kind == "gone":
                    self.worker.cancel(self.job)
                    return
                if kind == "error":
                    raise user_error(payload)
                yield kind, payload
                if kind == "done":
                    return
        finally:
            self.worker.cancel(self.job)  # a no-op once done; stops the generation if the response was abandoned
            self.channel.close()

    async def result(self) -> Any:
        """The finished JobResult (texts came with it), or None when the client went away."""
        async for kind, payload in self.events():
            if kind == "done":
                return payload
        return None


class EventStream:
    """Server-sent events from an async iterator of JSON-ready objects (or raw `[DONE]`)."""

    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]

    def __init__(self, events: AsyncIterator[Any]) -> None:
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        try:
            async for event in self.events:
                data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
                await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})
        except ApiError as exc:  # after the headers went out the error can only be one more event
            from bigcode_cli.serve.errors import error_body

            data = json.dumps(error_body(scope["path"], exc), ensure_ascii=False)
            await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})
        except OSError:  # the client went away while we wrote
            return
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


# -- errors as JSON ----------------------------------------------------------------------------------


def http_error(request: Request, exc: Exception) -> Response:
    """404, 405 (and any unexpected error) as JSON in the protocol's shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    messages = {404: f"no such endpoint: {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    return error_response(request.url.path, ApiError(status, messages.get(status, str(getattr(exc, "detail", exc)))))


def api_error(request: Request, exc: Exception) -> Response:
    """An ApiError raised outside a guarded handler, as JSON."""
    assert isinstance(exc, ApiError)
    return error_response(request.url.path, exc)


def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """A route handler whose ApiErrors and library errors become JSON error responses."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:  # every error leaves as JSON in the protocol's shape, never a traceback
            return error_response(request.url.path, user_error(exc))

    return run
