"""Refusing what a web page can make the user's browser send to the server.

Any page the user visits can POST to http://127.0.0.1:8012 (a form, or a `fetch` whose answer it
cannot read), and with DNS rebinding it can read the answers too. Editors, curl and the openai client
are not browsers: they send no `Origin`. So the guard, in front of everything else:
- refuses a request whose `Host` does not name this server (hosts.HostPolicy): DNS rebinding;
- refuses a request with an `Origin` not in --allowed-origins (default: none), as ollama and
  Jupyter do; an allowed origin gets CORS headers, and its preflight (`OPTIONS` with
  `Access-Control-Request-Method`) is answered here, before the API-key check, which a preflight
  cannot pass (browsers send it without credentials).
POST bodies must also be declared `application/json` (handling.read_body): a page can send that
only after a preflight, which only allowed origins pass. Refusals are 403 in the protocol's error
shape. (Starlette's TrustedHostMiddleware and CORSMiddleware answer in plain text, and the latter
lets a disallowed origin's request run, only withholding the headers: neither fits.)
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bigcode_cli.serve.errors import ApiError, error_response
from bigcode_cli.serve.hosts import ANY, HostPolicy

PREFLIGHT_MAX_AGE_S = 600
ALLOWED_METHODS = b"GET, POST, OPTIONS"
ALLOWED_HEADERS = b"Authorization, Content-Type"


class BrowserGuard:
    """Checks Host and Origin before the app sees a request; adds CORS headers for allowed origins."""

    def __init__(self, app: ASGIApp, hosts: HostPolicy, origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        host = headers.get(b"host")
        shown_host = host.decode("latin-1")[:100] if host is not None else None
        if not self.hosts.allows(shown_host):
            await self._refuse(scope, receive, send, f"the Host header {shown_host!r} does not name this server; "
                               "a name it should answer to goes in --allowed-hosts (this stops DNS rebinding)")
            return
        origin = headers.get(b"origin")
        if origin is None:  # not a browser, or a browser on a page of this very server (it serves none)
            await self.app(scope, receive, send)
            return
        shown_origin = origin.decode("latin-1")[:200]
        if ANY not in self.origins and shown_origin.lower().rstrip("/") not in self.origins:
            await self._refuse(scope, receive, send, f"requests from web pages are refused (Origin: {shown_origin}); "
                               "start the server with --allowed-origins ORIGIN to let a page use it")
            return
        cors = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await send({"type": "http.response.start", "status": 204, "headers": [
                *cors, (b"access-control-allow-methods", ALLOWED_METHODS),
                (b"access-control-allow-headers", ALLOWED_HEADERS),
                (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode())]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, message: str) -> None:
        await error_response(scope["path"], ApiError(403, message))(scope, receive, send)
