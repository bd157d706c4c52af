"""`bigcode complete|generate|infill --server URL`: the same completion, asked of a running `bigcode serve`.

No torch, no model: one HTTP request (the standard library's http.client) to the server's
/v1/completions with the command's settings (and the `bigcode` extension for the options OpenAI's API
lacks). The `RemoteCompleter` returns the same CompletionResult as a local run, so the output is the same:
streamed text, --json records, --in-place, --diff.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import urllib.parse
from typing import TYPE_CHECKING, Any, Iterator

from bigcode_cli.errors import BigCodeError, InputError
from bigcode_cli.terminal.console import stderr_console

if TYPE_CHECKING:
    from bigcode_cli.cli.commands.completer import CompletionRequest, CompletionResult, OnText
    from bigcode_cli.generation.completion import CompletionSettings

SERVER_ENV = "BIGCODE_SERVER"
API_KEY_ENV = "BIGCODE_API_KEY"
TIMEOUT_S = 600


class ServerError(BigCodeError):
    """The server could not be reached or refused the request."""


def server_url(option: str | None) -> str | None:
    """The server to use: --server, else $BIGCODE_SERVER, else None (run the model here)."""
    url = option if option is not None else os.environ.get(SERVER_ENV)
    return url.strip() or None if url else None


def request_body(prefix: str, suffix: str, mode: str, settings: CompletionSettings, stream: bool) -> dict[str, Any]:
    """The /v1/completions body for a completion with these settings."""
    sampling = settings.sampling
    body: dict[str, Any] = {
        "model": "bigcode", "prompt": prefix, "max_tokens": settings.max_new_tokens,
        "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k,
        "repetition_penalty": sampling.repetition_penalty, "seed": sampling.seed, "stop": list(settings.stops),
        "n": settings.num_samples, "stream": stream, "speculate": settings.speculate,
        "bigcode": {"mode": mode, "lines": settings.lines, "block": settings.block, "fim_order": settings.order,
                    "details": True},
    }
    if mode == "fim":
        body["suffix"] = suffix
    return body


class _Connection:
    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"--server {url!r} is not an http:// URL (e.g. http://127.0.0.1:8012)")
        self.url = url
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.connection = kind(parts.hostname, parts.port, timeout=TIMEOUT_S)
        self.path = parts.path.rstrip("/") + "/v1/completions"

    def post(self, body: dict[str, Any]) -> http.client.HTTPResponse:
        headers: dict[str, str | bytes] = {"Content-Type": "application/json",
                                           "Accept": "application/json, text/event-stream"}
        key = os.environ.get(API_KEY_ENV)
        if key:  # the key's own bytes (UTF-8), as the server compares them: http.client would send latin-1
            headers["Authorization"] = b"Bearer " + key.encode("utf-8", "surrogateescape")
        try:
            self.connection.request("POST", self.path, body=json.dumps(body).encode(), headers=headers)
            response = self.connection.getresponse()
        except OSError as exc:
            raise ServerError(f"cannot reach the server at {self.url}: {exc.strerror or exc}; "
                              "start one with `bigcode serve` or drop --server") from None
        if response.status != 200:
            raise ServerError(f"the server at {self.url} answered {response.status}: {_error_message(response)}")
        return response


def _error_message(response: http.client.HTTPResponse) -> str:
    raw = response.read(64 * 1024)
    try:
        error = json.loads(raw)["error"]
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace").strip()[:200] or response.reason


def _events(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream, until `[DONE]`."""
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise ServerError(f"the server failed mid-stream: {event['error'].get('message')}")
        yield event


class RemoteCompleter:
    """Completes by asking the `bigcode serve` at `url` (the Completer of a run with --server)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def complete(self, request: CompletionRequest, on_text: OnText | None) -> CompletionResult:
        """Post the request (streamed when `on_text` is given) and read the server's `bigcode` details."""
        from bigcode_cli.cli.commands.completer import CompletionResult, Sample

        streaming = on_text is not None
        connection = _Connection(self.url)
        try:
            console = stderr_console()
            waiting = console.status("waiting for the server", spinner="dots") \
                if console.is_terminal and not streaming else contextlib.nullcontext()
            with waiting:
                response = connection.post(request_body(*request, stream=streaming))
                if on_text is not None:
                    texts, details = [""], None
                    for event in _events(response):
                        choice = event["choices"][0]
                        if choice["text"]:
                            on_text(choice["text"])
                            texts[0] += choice["text"]
                        details = event.get("bigcode", details)
                else:
                    reply = json.loads(response.read())
                    texts = [c["text"] for c in sorted(reply["choices"], key=lambda c: c["index"])]
                    details = reply.get("bigcode")
        finally:
            connection.connection.close()
        if details is None:
            raise ServerError(f"the server at {self.url} is not a `bigcode serve` (its answer lacks the bigcode details)")
        notice = (f"the input is longer than the model's context: the server kept the {details['prompt_tokens']} "
                  "tokens nearest the cursor") if details["truncated"] else None
        return CompletionResult(
            samples=[Sample(text, sample["stop_reason"], sample["new_tokens"])
                     for text, sample in zip(texts, details["samples"])],
            mode=details["mode"], prompt=details["prompt"], prompt_tokens=details["prompt_tokens"],
            truncated=details["truncated"], dtype=details.get("dtype") or None, load_s=0.0,
            prefill_s=details["prefill_s"], decode_s=details["decode_s"], tokens_per_s=details["tokens_per_s"],
            notice=notice, draft_tokens=details.get("draft_n", 0), draft_accepted=details.get("draft_n_accepted", 0))


def completion_texts(url: str, body: dict[str, Any]) -> list[str]:
    """POST one /v1/completions body (not streamed) and return its choices' texts in index order."""
    connection = _Connection(url)
    try:
        reply = json.loads(connection.post({**body, "stream": False}).read())
    finally:
        connection.connection.close()
    try:
        return [choice["text"] for choice in sorted(reply["choices"], key=lambda c: c["index"])]
    except (KeyError, TypeError):
        raise ServerError(f"the server at {url} answered without completion choices") from None
