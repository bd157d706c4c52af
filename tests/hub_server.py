"""A tiny stand-in for the Hugging Face hub, served on 127.0.0.1, speaking the endpoints huggingface_hub calls.

- GET  /api/models/{owner}/{name}[/revision/{rev}]  -> {"id", "sha", "siblings": [{rfilename, size, blobId, lfs}]}
- HEAD /{owner}/{name}/resolve/{rev}/{file}          -> X-Repo-Commit, ETag, Content-Length (+ X-Linked-* for LFS)
- GET  /{owner}/{name}/resolve/{rev}/{file}          -> the bytes, honouring `Range: bytes=N-`
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) as the hub's do.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {filename: bytes}


class FakeHub:
    """Serve repos from memory; `drop` makes a file's download break off half-way, and its retries fail."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.drop: set[str] = set()  # files whose first GET breaks off half-way; later GETs get a 500
        self.dropped: set[str] = set()
        self.gate = threading.Event()  # cleared: weight GETs wait (lets a test line up concurrent pulls)
        self.gate.set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()

    def add(self, repo_id: str, files: dict[str, bytes], *, revision: str = "main") -> str:
        """Publish files as a new commit of repo_id at `revision`; returns the commit hash."""
        repo = self.repos.setdefault(repo_id, Repo())
        commit = hashlib.sha1(f"{repo_id}{revision}{len(repo.commits)}".encode()).hexdigest()
        repo.commits[commit] = dict(files)
        repo.refs[revision] = commit
        return commit

    def count(self, method: str, suffix: str) -> int:
        """How many requests of that method asked for a path ending in suffix."""
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and p.endswith(suffix))

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _error(self, status: int, code: str | None = None) -> None:
            payload = json.dumps({"error": code or "error"}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _commit(self, repo: Repo, revision: str) -> str | None:
            return revision if revision in repo.commits else repo.refs.get(revision)

        def _serve(self, *, body: bool) -> None:
            path = urlsplit(self.path).path
            hub.record(self.command, path)
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._api(parts[2:])
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id, revision, filename = f"{parts[0]}/{parts[1]}", unquote(parts[3]), "/".join(parts[4:])
                return self._resolve(repo_id, revision, filename, body)
            self._error(404)

        def _api(self, parts: list[str]) -> None:
            repo = hub.repos.get(f"{parts[0]}/{parts[1]}")
            if repo is None:
                return self._error(404, "RepoNotFound")
            revision = unquote(parts[3]) if len(parts) >= 4 and parts[2] == "revision" else "main"
            commit = self._commit(repo, revision)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            siblings = []
            for name, data in repo.commits[commit].items():
                entry = {"rfilename": name, "size": len(data), "blobId": git_sha1(data)}
                if name.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                siblings.append(entry)
            payload = json.dumps({"id": f"{parts[0]}/{parts[1]}", "sha": commit, "siblings": siblings}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _resolve(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound")
            commit = self._commit(repo, revision)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            data = repo.commits[commit].get(filename)
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            lfs = filename.endswith(LFS_SUFFIXES)
            start = 0
            if body and filename in hub.drop and filename in hub.dropped:
                return self._error(500)  # the client's retry after the drop: fail fast
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                start = int(ranged[len("bytes="):].split("-")[0])
            if body and lfs:
                hub.gate.wait(10)
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            etag = hashlib.sha256(data).hexdigest() if lfs else git_sha1(data)
            self.send_header("ETag", f'"{etag}"')
            if lfs:
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(data)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if not body:
                return
            if filename in hub.drop:
                hub.dropped.add(filename)
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(data[start:])

    return Handler
