"""The Hugging Face side of the checkpoint cache: its on-disk cache (read in place, never written) and
downloads through huggingface_hub into a directory of ours.

The cache is read with huggingface_hub's own cache scanning (`try_to_load_from_cache`, `scan_cache_dir`);
snapshots are used in place, never copied. Environment variables are read at call time: huggingface_hub
reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE once at import, so its own constants can be stale;
its cache functions are therefore always given the cache directory. huggingface_hub and httpx2 are
imported inside the functions that use them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bigcode_cli.model import checkpoint_files as ckpt
from bigcode_cli.errors import BigCodeError, CheckpointError, ModelNotFoundError, StoreError

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

# progress(filename, bytes done over the whole pull, bytes in the whole pull or 0 when unknown)
Progress = Callable[[str, int, int], None]


def env_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (HF_HUB_CACHE, HF_HOME, XDG)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def snapshot(repo_id: str, revision: str | None) -> Path | None:
    """A complete snapshot of repo_id in the Hugging Face cache (config and all weights present), or None.

    `revision` is a branch or tag (followed through the cache's refs) or a commit hash; None means main.
    """
    cache = hf_cache_dir()
    if not cache.is_dir():  # no Hugging Face cache at all: nothing to find, no need to import huggingface_hub
        return None
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision or "main")
    if not isinstance(config, str):  # not cached, or cached as missing
        return None
    path = Path(config).parent
    return path if ckpt.has_weights(path) else None


def cached_snapshots() -> list[tuple[str, str, Path]]:
    """(repo_id, revision, snapshot) of every gpt_bigcode checkpoint in the HF cache that a branch or tag points to."""
    cache = hf_cache_dir()
    if not cache.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    found: list[tuple[str, str, Path]] = []
    try:
        scanned = scan_cache_dir(cache)
    except Exception:  # huggingface_hub raises CacheNotFound or CorruptedCacheException; listing shows what it can
        return found
    for repo in sorted(scanned.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            path = Path(revision.snapshot_path)
            if not ((path / "config.json").is_file() and ckpt.has_weights(path) and _is_gpt_bigcode(path)):
                continue
            found.extend((repo.repo_id, ref, path) for ref in sorted(revision.refs))
    return sorted(found, key=lambda row: (row[0], row[1]))


def _is_gpt_bigcode(snapshot: Path) -> bool:
    try:
        return json.loads((snapshot / "config.json").read_text(encoding="utf-8")).get("model_type") == "gpt_bigcode"
    except (OSError, ValueError, AttributeError):
        return False


def verify_snapshot(path: Path) -> tuple[list[str], int]:
    """Check snapshot files against their blob names (sha256 for LFS files, git sha1 for the others)."""
    problems, checked = [], 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        blob = file.resolve().name
        rel = file.relative_to(path).as_posix()
        if _SHA256.fullmatch(blob):
            actual = ckpt.sha256_file(file)
        elif _COMMIT.fullmatch(blob):
            actual = ckpt.git_blob_sha1(file)
        else:
            continue
        checked += 1
        if actual != blob:
            problems.append(f"{rel} hash differs")
    return problems, checked


class _ByteCounter:
    """Stands in for tqdm inside huggingface_hub downloads and forwards byte counts to a Progress."""

    def __init__(self, progress: Progress | None, filename: str, done: list[int], total: int) -> None:
        self._progress, self._filename, self._done, self._total = progress, filename, done, total

    def factory(self, **_kwargs: Any) -> _ByteCounter:
        return self

    def update(self, n: int = 1) -> None:
        self._done[0] += n
        if self._progress is not None:
            self._progress(self._filename, self._done[0], self._total)

    def close(self) -> None:
        pass

    def __enter__(self) -> _ByteCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def download(repo_id: str, revision: str, dest: Path, progress: Progress | None) -> tuple[str, dict[str, str]]:
    """Fetch the files a checkpoint needs into dest; returns the commit and the hub's sha256 of LFS files."""
    from huggingface_hub import HfApi, hf_hub_download

    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it once at import
    with _hub_errors(repo_id, revision):
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
        siblings = {s.rfilename: s for s in info.siblings or []}
        commit = info.sha or revision
        done = [0]

        def fetch(filename: str, total: int) -> Path:
            counter = _ByteCounter(progress, filename, done, total)
            local = hf_hub_download(repo_id, filename, revision=commit, local_dir=dest, cache_dir=hf_cache_dir(),
                                    endpoint=endpoint, tqdm_class=counter.factory)  # type: ignore[arg-type]
            return Path(local)

        if "config.json" not in siblings:
            raise CheckpointError(f"{repo_id} has no config.json: it is not a transformers checkpoint")
        wanted = [f for f in ckpt.CONFIG_FILES + ckpt.TOKENIZER_FILES if f in siblings]
        total = sum(siblings[f].size or 0 for f in wanted)
        fetch("config.json", total)
        ckpt.check_checkpoint(dest)  # refuse remote code or a foreign model before fetching gigabytes
        weights: list[str] = []
        for index_name, single in ckpt.WEIGHT_LAYOUTS:
            if index_name in siblings:
                fetch(index_name, total)
                weights = ckpt.index_shards(dest / index_name)
                break
            if single in siblings:
                weights = [single]
                break
        if not weights:
            raise CheckpointError(f"{repo_id}@{revision} has no model.safetensors or pytorch_model.bin weights")
        missing = [w for w in weights if w not in siblings]
        if missing:
            raise CheckpointError(f"{repo_id}@{revision} lacks weight shard(s) {', '.join(missing)}")
        rest = [f for f in wanted if f != "config.json"] + weights
        total = sum(siblings[f].size or 0 for f in wanted + weights)
        for filename in rest:
            fetch(filename, total)
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # huggingface_hub's local-dir bookkeeping
    expected = {f: s.lfs.sha256 for f, s in siblings.items() if s.lfs is not None and (dest / f).is_file()}
    return commit, expected


@contextmanager
def _hub_errors(repo_id: str, revision: str) -> Iterator[None]:
    """huggingface_hub and network failures as one-line BigCodeErrors."""
    import httpx2
    from huggingface_hub import errors as hf

    where = os.environ.get("HF_ENDPOINT") or "the Hugging Face hub"
    again = "nothing was saved; run the pull again"
    try:
        yield
    except BigCodeError:
        raise
    except hf.GatedRepoError:
        raise StoreError(f"{repo_id} is gated: accept its license on the hub, then log in with `hf auth login`") from None
    except hf.RepositoryNotFoundError:
        raise ModelNotFoundError(f"{repo_id} was not found on {where} (or it is private: log in with `hf auth login`)") from None
    except hf.RevisionNotFoundError:
        raise ModelNotFoundError(f"{repo_id} has no revision {revision!r}") from None
    except hf.EntryNotFoundError as exc:
        raise CheckpointError(f"{repo_id}@{revision} is missing a file: {_first_line(exc)}") from None
    except hf.HfHubHTTPError as exc:
        raise StoreError(f"download of {repo_id} failed: {_first_line(exc)}; {again}") from None
    except (httpx2.HTTPError, OSError, ValueError) as exc:
        if _unresolved_host(exc):  # not a flaky transfer: this machine cannot look up the hub at all
            host = (urlparse(where).hostname or where) if where.startswith(("http:", "https:")) else "huggingface.co"
            raise StoreError(f"cannot download {repo_id}: no network ({host} does not resolve); nothing was saved. "
                             "Bundled and cached models need none: --offline or HF_HUB_OFFLINE=1 never tries") from None
        raise StoreError(f"download of {repo_id} from {where} failed ({type(exc).__name__}: {_first_line(exc)}); {again}") from None


def _unresolved_host(exc: BaseException) -> bool:
    """Whether a failure comes from a host name that did not resolve (socket.gaierror anywhere in its chain)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, socket.gaierror):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
