"""The API keys a server accepts and the guard that asks for one.

Keys come from `--api-key` (or `$BIGCODE_API_KEY`) and from `--api-key-file`, one key per line, so
that each user of a shared server can have their own. A key is its UTF-8 bytes (an argument in bytes
that are not UTF-8 keeps those bytes), and the `Authorization` header is compared as the bytes the
client sent: curl's UTF-8 `clé` matches the key `clé`, a latin-1 byte does not. Each comparison is of
SHA-256 digests with `hmac.compare_digest`, and every key is compared, so the time taken says nothing
about a key's length, its content or which key matched.
"""

from __future__ import annotations

import hashlib
import hmac
import stat
from typing import Callable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from bigcode_cli.errors import InputError
from bigcode_cli.serve.errors import ApiError, error_response
from bigcode_cli.text.textfile import read_file

PUBLIC_PATHS = ("/health",)
MAX_KEY_FILE_BYTES = 1024 * 1024


def key_bytes(key: str) -> bytes:
    """A key given as text, as the bytes a client must send (arguments that were not UTF-8 keep their bytes)."""
    return key.encode("utf-8", "surrogateescape")


def _check_key(key: bytes, where: str) -> bytes:
    if key != key.strip():
        raise InputError(f"{where}: a key cannot begin or end with whitespace (HTTP drops it from the header)")
    if any(byte < 0x20 or byte == 0x7F for byte in key):
        raise InputError(f"{where}: a key cannot contain control characters (no HTTP header can carry them)")
    return key


def read_key_file(path: str, warn: Callable[[str], None] | None = None) -> list[bytes]:
    """The keys in a file, one per line (surrounding whitespace and blank lines skipped); an InputError for a
    file that holds none."""
    data, info = read_file(path, f"--api-key-file {path}", hint="give a file with one key per line",
                           regular_only=True, limit=MAX_KEY_FILE_BYTES)
    keys = [_check_key(line.strip(), f"--api-key-file {path} line {number}")
            for number, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    if not keys:
        raise InputError(f"--api-key-file {path} holds no key: write one key per line")
    if warn is not None and info.st_mode & 0o044:
        warn(f"warning: --api-key-file {path} is readable by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
             f"chmod 600 it")
    return keys


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def key_digest(header: str | None) -> str:
    """The prompt-cache partition of a client's Authorization header: its SHA-256, never the key itself."""
    return hashlib.sha256(key_bytes(header)).hexdigest() if header else ""


class KeyRing:
    """The accepted keys; empty means no key is required."""

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        unique = dict.fromkeys(_check_key(key, "--api-key") for key in keys if key)
        self._expected = [_digest(b"Bearer " + key) for key in unique]

    def __bool__(self) -> bool:
        return bool(self._expected)

    def __len__(self) -> int:
        return len(self._expected)

    def matches(self, header: bytes | None) -> bool:
        """Whether an Authorization header's bytes are `Bearer <one of the keys>`."""
        given = _digest(header or b"")
        found = False
        for expected in self._expected:  # no early exit: every key costs the same time
            found |= hmac.compare_digest(given, expected)
        return found


class ApiKeyGuard:
    """Refuses requests without an accepted key (when there are keys), in the protocol's error shape."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"] not in PUBLIC_PATHS:
            header = next((value for name, value in scope.get("headers", []) if name == b"authorization"), None)
            if not self.keys.matches(header):
                error = ApiError(401, "invalid or missing API key: send the header `Authorization: Bearer KEY`")
                await error_response(scope["path"], error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
