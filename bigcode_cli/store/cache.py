"""The local checkpoint cache and model-name resolution.

A name resolves, in order: an existing checkpoint directory; a bundled model; an alias (expanded to
a hub repo id) or a repo id `owner/name[@revision]`, looked up in our cache, then in the Hugging
Face cache (used in place); else a download when asked for and not offline.

Our cache, under `models_dir()`:
    <owner>--<name>/<revision>/          one entry: the checkpoint files + manifest.json
    <name>/main/                          an imported checkpoint with a one-part name
    .tmp/                                 downloads and imports in progress (never resolved)
    .locks/                               one file lock per entry
An entry appears by one atomic rename of a complete, verified directory, so a half-written entry
is never visible. Library code: no typer or rich; huggingface_hub, torch and safetensors are
imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from bigcode_cli.model import checkpoint_files as ckpt
from bigcode_cli.store import hub
from bigcode_cli.errors import BigCodeError, CheckpointError, ModelNotFoundError, StoreError
from bigcode_cli.paths import bundled_dir, models_dir

# short names for the real GPTBigCode checkpoints on the hub
ALIASES: dict[str, str] = {
    "santacoder": "bigcode/gpt_bigcode-santacoder",
    "starcoder": "bigcode/starcoder",
    "starcoderbase": "bigcode/starcoderbase",
    "starcoderbase-1b": "bigcode/starcoderbase-1b",
    "starcoderbase-3b": "bigcode/starcoderbase-3b",
    "starcoderbase-7b": "bigcode/starcoderbase-7b",
    "starcoderplus": "bigcode/starcoderplus",
    "tiny_starcoder_py": "bigcode/tiny_starcoder_py",
    "octocoder": "bigcode/octocoder",
}

# repos that only work with trust_remote_code, and the gpt_bigcode conversion to use instead
REMOTE_CODE_REPOS: dict[str, str] = {
    "bigcode/santacoder": "bigcode/gpt_bigcode-santacoder",
}

BUNDLED_MODELS: dict[str, str] = {
    "causal-lm": "bigcode-tiny",
    "sequence-classification": "bigcode-tiny-langid",
    "token-classification": "bigcode-tiny-secrets",
}
_TASK_ENV = {"causal-lm": "BIGCODE_MODEL", "sequence-classification": "BIGCODE_CLASSIFY_MODEL",
             "token-classification": "BIGCODE_TAG_MODEL"}

MANIFEST = "manifest.json"
DEFAULT_REVISION = "main"

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REV_PART = re.compile(r"[A-Za-z0-9._-]+")

Progress = hub.Progress  # progress(filename, bytes done, bytes in the whole pull or 0 when unknown)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name led: its checkpoint directory and how it was found."""

    name: str
    path: Path
    source: str  # "path" | "bundled" | "cache" | "hf-cache" | "downloaded"
    repo_id: str | None = None
    revision: str | None = None


# ---------------------------------------------------------------------------------------------
# names


def default_model(task: str = "causal-lm") -> str:
    """The model a command uses without --model: $BIGCODE_MODEL (or the task's variable), else the bundled one."""
    if task not in BUNDLED_MODELS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(BUNDLED_MODELS)}")
    return os.environ.get(_TASK_ENV[task]) or BUNDLED_MODELS[task]


def bundled_models() -> list[str]:
    """Names of the checkpoints shipped in the package (those actually present)."""
    root = bundled_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def split_revision(name: str) -> tuple[str, str | None]:
    """'owner/name@rev' -> ('owner/name', 'rev'); the revision is validated."""
    base, sep, revision = name.partition("@")
    if not sep:
        return name, None
    _check_revision(name, revision)
    return base, revision


def _check_revision(name: str, revision: str) -> None:
    parts = revision.split("/")
    if not revision or any(not _REV_PART.fullmatch(p) or p in (".", "..") for p in parts):
        raise StoreError(f"invalid revision {revision!r} in {name!r}: use a branch, tag or commit hash")


def _name_parts(name: str) -> tuple[str, ...]:
    """The parts of a cache name ('name' or 'owner/name'); refuses anything that could leave the cache."""
    parts = tuple(name.split("/"))
    if (not name or "\\" in name or len(parts) > 2 or name != name.strip()
            or any(not _PART.fullmatch(p) or ".." in p or "--" in p or p.endswith(".") for p in parts)):
        raise StoreError(
            f"invalid model name {name!r}: expected an alias, a bundled model, owner/name[@revision] "
            "or an existing checkpoint directory")
    return parts


def _entry_key(parts: tuple[str, ...]) -> str:
    return "--".join(parts)


def _revision_dir(revision: str | None) -> str:
    return quote(revision or DEFAULT_REVISION, safe="")


def _display(base: str, revision: str | None) -> str:
    return base if revision in (None, DEFAULT_REVISION) else f"{base}@{revision}"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..")


def _is_model_name(name: str) -> bool:
    try:
        base, _ = split_revision(name)
        _name_parts(ALIASES.get(base, base))
    except StoreError:
        return False
    return True


def _refuse_remote_code_repo(repo_id: str) -> None:
    replacement = REMOTE_CODE_REPOS.get(repo_id.lower())
    if replacement:
        raise CheckpointError(
            f"{repo_id} needs trust_remote_code (custom modelling code from the hub), which bigcode never runs; "
            f"use {replacement}, the same weights converted to transformers' gpt_bigcode format")


# ---------------------------------------------------------------------------------------------
# lookup


def _manifest(entry: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _cache_entries(key: str) -> list[Path]:
    """Complete entries of one cache name, newest first."""
    root = models_dir() / key
    if not root.is_dir():
        return []
    entries = [p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file() and (p / "config.json").is_file()]
    return sorted(entries, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)


def _find_entry(parts: tuple[str, ...], revision: str | None) -> Path | None:
    """Our cache entry for a name: the revision asked for, else main, else the newest one."""
    entries = _cache_entries(_entry_key(parts))
    wanted = _revision_dir(revision)
    for entry in entries:
        if entry.name == wanted:
            return entry
    if revision is None and entries:
        return entries[0]
    return None


def _resolved_entry(entry: Path, parts: tuple[str, ...]) -> ResolvedModel:
    manifest = _manifest(entry) or {}
    revision = manifest.get("revision") or unquote(entry.name)
    repo_id = manifest.get("repo_id") or ("/".join(parts) if len(parts) == 2 else None)
    return ResolvedModel(_display("/".join(parts), revision), entry, "cache", repo_id,
                         revision if manifest.get("source") != "import" else None)


def resolve(name: str, *, offline: bool = False, download: bool = False,
            progress: hub.Progress | None = None) -> ResolvedModel:
    """Find the checkpoint a model name means (see the module docstring for the order)."""
    if not name or not name.strip():
        raise ModelNotFoundError("empty model name: pass an alias, owner/name or a checkpoint directory")
    local = Path(name).expanduser()
    if local.is_dir():
        if (local / "config.json").is_file() or _looks_like_path(name) or not _is_model_name(name):
            ckpt.check_checkpoint(local)
            return ResolvedModel(name, local.resolve(), "path")
    elif local.exists():
        raise CheckpointError(f"{name} is a file: pass the checkpoint directory that holds config.json")
    elif _looks_like_path(name):
        raise ModelNotFoundError(f"no checkpoint directory at {name}")

    base, revision = split_revision(name)
    if revision is None and base in bundled_models():
        path = bundled_dir() / base
        ckpt.check_checkpoint(path)
        return ResolvedModel(base, path, "bundled")
    if revision is None and base in BUNDLED_MODELS.values():
        raise ModelNotFoundError(f"the bundled model {base} is not installed in {bundled_dir()}; reinstall bigcode-cli")

    repo_id = ALIASES.get(base, base)
    parts = _name_parts(repo_id)
    _refuse_remote_code_repo(repo_id)
    entry = _find_entry(parts, revision)
    if entry is not None:
        ckpt.check_remote_code(entry)
        return _resolved_entry(entry, parts)
    if len(parts) == 2:
        snapshot = hub.snapshot(repo_id, revision)
        if snapshot is not None:
            ckpt.check_checkpoint(snapshot)
            return ResolvedModel(_display(repo_id, revision), snapshot, "hf-cache", repo_id, revision or DEFAULT_REVISION)
    offline = offline or hub.env_offline()
    if len(parts) == 1:
        raise ModelNotFoundError(
            f"unknown model {name!r}: not a checkpoint directory, a bundled model ({', '.join(bundled_models()) or 'none installed'}), "
            f"an alias ({', '.join(ALIASES)}) or a name in {models_dir()}; hub models are named owner/name")
    if download and not offline:
        return pull(name, progress=progress)
    where = f"looked in {models_dir()} and the Hugging Face cache {hub.hf_cache_dir()}"
    hint = ("; you are offline (--offline or HF_HUB_OFFLINE=1): go online and run" if offline else "; get it with")
    raise ModelNotFoundError(f"{_display(repo_id, revision)} is not downloaded ({where}){hint} `bigcode models pull {name}`")


def path(name: str) -> Path:
    """The checkpoint directory a name resolves to (never downloads)."""
    return resolve(name).path


# ---------------------------------------------------------------------------------------------
# writing entries


@contextmanager
def _entry_lock(key: str, revision: str | None) -> Iterator[None]:
    """One lock per entry: concurrent pulls, imports and removals of one model take turns."""
    from filelock import FileLock

    locks = models_dir() / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{key}@{_revision_dir(revision)}.lock")):
        yield


def _tmp_dir(key: str, revision: str | None) -> Path:
    tmp = models_dir() / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    # leftovers of a killed pull of this entry: we hold its lock, so nobody is writing them
    for stale in tmp.glob(f"{key}@{_revision_dir(revision)}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    path = tmp / f"{key}@{_revision_dir(revision)}.{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def _discard(path: Path) -> None:
    """Make a directory disappear at once (rename), then delete it."""
    if not path.exists():
        return
    trash = models_dir() / ".tmp" / f"trash.{uuid.uuid4().hex[:12]}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _finish_entry(tmp: Path, final: Path, manifest: dict[str, Any], expected: dict[str, str] | None = None) -> None:
    """Verify a complete checkpoint in tmp, record its hashes, and rename it into place."""
    ckpt.check_checkpoint(tmp)
    ckpt.check_weights(tmp)
    files = ckpt.hash_tree(tmp, skip=(MANIFEST,))
    for rel, sha in (expected or {}).items():
        if rel in files and files[rel]["sha256"] != sha:
            raise CheckpointError(f"{rel} does not match the sha256 the hub published for it; run the pull again")
    manifest = {**manifest, "format": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        _discard(final)
    os.rename(tmp, final)


def pull(name: str, revision: str | None = None, *, progress: hub.Progress | None = None,
         force: bool = False, offline: bool = False) -> ResolvedModel:
    """Download a hub checkpoint (config, tokenizer and weight files only) into our cache, atomically."""
    base, name_revision = split_revision(name)
    if revision is not None:
        _check_revision(name, revision)
        if name_revision is not None and name_revision != revision:
            raise StoreError(f"two revisions given for {base}: {name_revision} and {revision}")
    revision = revision or name_revision
    if revision is None and base in bundled_models():
        return resolve(base)
    repo_id = ALIASES.get(base, base)
    parts = _name_parts(repo_id)
    if len(parts) != 2:
        raise ModelNotFoundError(
            f"cannot pull {base!r}: it is neither an alias ({', '.join(ALIASES)}) nor a hub repo id owner/name")
    _refuse_remote_code_repo(repo_id)
    key, rev = _entry_key(parts), revision or DEFAULT_REVISION
    final = models_dir() / key / _revision_dir(rev)
    if not force:
        if (final / MANIFEST).is_file():
            return _resolved_entry(final, parts)
        snapshot = hub.snapshot(repo_id, rev)
        if snapshot is not None:
            ckpt.check_checkpoint(snapshot)
            return ResolvedModel(_display(repo_id, rev), snapshot, "hf-cache", repo_id, rev)
    if offline or hub.env_offline():
        raise ModelNotFoundError(
            f"cannot download {_display(repo_id, rev)}: offline (--offline or HF_HUB_OFFLINE=1); it is not in "
            f"{models_dir()} or the Hugging Face cache {hub.hf_cache_dir()}")
    with _entry_lock(key, rev):
        if not force and (final / MANIFEST).is_file():  # another process finished it while we waited
            return _resolved_entry(final, parts)
        tmp = _tmp_dir(key, rev)
        try:
            commit, expected = hub.download(repo_id, rev, tmp, progress)
            _finish_entry(tmp, final, {"source": "pull", "name": _display(repo_id, rev), "repo_id": repo_id,
                                       "revision": rev, "commit": commit}, expected)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedModel(_display(repo_id, rev), final, "downloaded", repo_id, rev)


def import_checkpoint(source: str | Path, name: str, *, force: bool = False) -> ResolvedModel:
    """Copy a local checkpoint into our cache under a name; .bin weights become model.safetensors."""
    src = Path(source).expanduser()
    if not src.is_dir():
        raise CheckpointError(f"{source} is not a directory: import the checkpoint directory that holds config.json")
    base, revision = split_revision(name)
    if revision is not None:
        raise StoreError(f"an imported model has no revision: name it without '@' (got {name!r})")
    parts = _name_parts(base)
    if base in ALIASES or base in BUNDLED_MODELS.values() or base in bundled_models():
        raise StoreError(f"{base!r} is already an alias or a bundled model: choose another name")
    ckpt.check_checkpoint(src)
    files = ckpt.complete_weight_files(src)
    key = _entry_key(parts)
    final = models_dir() / key / _revision_dir(None)
    with _entry_lock(key, None):
        if _cache_entries(key) and not force:
            raise StoreError(f"{base} already exists in {models_dir()}: remove it first or import with --force")
        tmp = _tmp_dir(key, None)
        try:
            for extra in ckpt.CONFIG_FILES + ckpt.TOKENIZER_FILES:
                if (src / extra).is_file():
                    shutil.copyfile(src / extra, tmp / extra)
            if files[0].suffix == ".safetensors":
                for f in files:
                    shutil.copyfile(f, tmp / f.name)
                if (src / "model.safetensors.index.json").is_file():
                    shutil.copyfile(src / "model.safetensors.index.json", tmp / "model.safetensors.index.json")
            else:
                _convert_bin(files, tmp)
            _finish_entry(tmp, final, {"source": "import", "name": base, "repo_id": None, "revision": None,
                                       "imported_from": str(src.resolve())})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedModel(base, final, "cache")


def _convert_bin(files: list[Path], dest: Path) -> None:
    """Rewrite .bin weights as safetensors (shards keep their split), cloning tensors that share storage."""
    from safetensors.torch import save_file

    weight_map: dict[str, str] = {}
    for i, f in enumerate(files, start=1):
        state = ckpt.load_bin(f)
        seen: set[int] = set()
        tensors = {}
        for key, tensor in state.items():
            # tied weights (lm_head = wte) share one storage, which safetensors refuses: give each its own
            storage = tensor.untyped_storage().data_ptr()
            if storage in seen and tensor.numel():
                tensor = tensor.clone()
            seen.add(storage)
            tensors[key] = tensor.contiguous()
        out = "model.safetensors" if len(files) == 1 else f"model-{i:05d}-of-{len(files):05d}.safetensors"
        save_file(tensors, str(dest / out), metadata={"format": "pt"})
        weight_map.update({key: out for key in tensors})
        del state, tensors
    if len(files) > 1:
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def remove(name: str) -> list[Path]:
    """Delete a model from our cache (one revision with name@rev, else all of them); returns what was removed."""
    base, revision = split_revision(name)
    if revision is None and base in bundled_models():
        raise StoreError(f"{base} is bundled with bigcode-cli and cannot be removed")
    repo_id = ALIASES.get(base, base)
    parts = _name_parts(repo_id)
    key = _entry_key(parts)
    root = models_dir() / key
    if revision is not None:
        candidates = [root / _revision_dir(revision)]
    else:
        candidates = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    removed: list[Path] = []
    for entry in candidates:
        with _entry_lock(key, unquote(entry.name)):
            if entry.is_dir():
                _discard(entry)
                removed.append(entry)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    if not removed:
        if len(parts) == 2 and hub.snapshot(repo_id, revision):
            raise StoreError(f"{_display(repo_id, revision)} lives in the Hugging Face cache {hub.hf_cache_dir()}, which "
                             "bigcode does not manage: remove it with the `hf` command's cache tools")
        raise ModelNotFoundError(f"{_display(repo_id, revision)} is not in {models_dir()}")
    return removed


# ---------------------------------------------------------------------------------------------
# reading entries


def info(name: str) -> dict[str, Any]:
    """What `bigcode models info` shows: the resolved model and its config and weights summary."""
    return _describe(resolve(name))


def _describe(model: ResolvedModel) -> dict[str, Any]:
    data: dict[str, Any] = {"name": model.name, "source": model.source, "path": str(model.path),
                            "repo_id": model.repo_id, "revision": model.revision}
    manifest = _manifest(model.path) if model.source in ("cache", "downloaded") else None
    data["commit"] = (manifest or {}).get("commit") or (model.path.name if model.source == "hf-cache" else None)
    data.update(ckpt.summarize(model.path))
    return data


def list_models() -> list[dict[str, Any]]:
    """Every model available without a download: bundled, our cache, and gpt_bigcode snapshots in the HF cache."""
    found: list[ResolvedModel] = [ResolvedModel(n, bundled_dir() / n, "bundled") for n in bundled_models()]
    root = models_dir()
    if root.is_dir():
        for key_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            parts = tuple(key_dir.name.split("--"))
            for entry in sorted(_cache_entries(key_dir.name)):
                found.append(_resolved_entry(entry, parts))
    found.extend(ResolvedModel(_display(repo_id, rev), snap, "hf-cache", repo_id, rev)
                 for repo_id, rev, snap in hub.cached_snapshots())
    rows = []
    for model in found:
        try:
            rows.append(_describe(model))
        except BigCodeError as exc:
            rows.append({"name": model.name, "source": model.source, "path": str(model.path), "error": str(exc)})
    return rows


def verify(name: str) -> dict[str, Any]:
    """Re-hash a model's files against the hashes recorded when it was pulled or imported; StoreError on mismatch."""
    model = resolve(name)
    if model.source == "hf-cache":
        problems, checked = hub.verify_snapshot(model.path)
    else:
        manifest = _manifest(model.path)
        if manifest is None or not isinstance(manifest.get("files"), dict):
            raise StoreError(f"{model.name} ({model.source}) has no recorded hashes to check; "
                             "`bigcode models import` it to record them")
        problems, checked = [], 0
        for rel, want in sorted(manifest["files"].items()):
            path = model.path / rel
            checked += 1
            if not path.is_file():
                problems.append(f"{rel} is missing")
            elif path.stat().st_size != want.get("size"):
                problems.append(f"{rel} has {path.stat().st_size} bytes, expected {want.get('size')}")
            elif ckpt.sha256_file(path) != want.get("sha256"):
                problems.append(f"{rel} sha256 differs")
    if problems:
        fix = f"`bigcode models pull --force {model.name}`" if model.repo_id else "a fresh `bigcode models import`"
        raise StoreError(f"{model.name} is corrupt: {'; '.join(problems)}; replace it with {fix}")
    return {"name": model.name, "source": model.source, "path": str(model.path), "files": checked, "ok": True}
