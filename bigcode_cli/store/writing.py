"""Writing our checkpoint cache: pull from the hub, import a local checkpoint, remove.

Each write holds the entry's file lock (concurrent pulls, imports and removals of one model take turns),
builds the entry under `.tmp/`, verifies it and records its hashes, then renames it into place in one
step, so a half-written entry is never visible (layout in bigcode_cli.store.layout). huggingface_hub,
torch and safetensors are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bigcode_cli import paths
from bigcode_cli.errors import CheckpointError, ModelNotFoundError, StoreError
from bigcode_cli.model import checkpoint_files as ckpt
from bigcode_cli.store import hub
from bigcode_cli.store.locking import Notice, holding
from bigcode_cli.store.layout import (
    DEFAULT_REVISION,
    MANIFEST,
    ResolvedModel,
    cache_entries,
    display,
    entry_dir,
    entry_key,
    resolved_entry,
    revision_dir,
)
from bigcode_cli.store.resolution import (
    ALIASES,
    BUNDLED_MODELS,
    bundled_models,
    check_revision,
    hf_snapshot,
    name_parts,
    refuse_remote_code_repo,
    resolve,
    split_revision,
)


def entry_lock_file(key: str, revision: str | None) -> Path:
    """The lock file of one entry: concurrent pulls, imports and removals of one model take turns."""
    return paths.models_dir() / ".locks" / f"{key}@{revision_dir(revision)}.lock"


@contextmanager
def _entry_lock(key: str, revision: str | None, what: str, notice: Notice | None = None) -> Iterator[None]:
    """Hold an entry's lock (see `locking.holding`: a wait is announced and bounded)."""
    lock = entry_lock_file(key, revision)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with holding(lock, what, notice):
        yield


def _tmp_dir(key: str, revision: str | None) -> Path:
    tmp = paths.models_dir() / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    # leftovers of a killed pull of this entry: we hold its lock, so nobody is writing them
    for stale in tmp.glob(f"{key}@{revision_dir(revision)}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    path = tmp / f"{key}@{revision_dir(revision)}.{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def _discard(path: Path) -> None:
    """Make a directory disappear at once (rename), then delete it."""
    if not path.exists():
        return
    trash = paths.models_dir() / ".tmp" / f"trash.{uuid.uuid4().hex[:12]}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def record_hashes(directory: Path, fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Write a checkpoint directory's manifest.json: `fields` plus the size and sha256 of every other file in it
    (what `bigcode models verify` checks); returns those files."""
    files = ckpt.hash_tree(directory, skip=(MANIFEST,))
    manifest = {**fields, "format": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return files


def _finish_entry(tmp: Path, final: Path, manifest: dict[str, Any], expected: dict[str, str] | None = None) -> None:
    """Verify a complete checkpoint in tmp, record its hashes, and rename it into place."""
    ckpt.check_checkpoint(tmp)
    ckpt.check_weights(tmp)
    files = record_hashes(tmp, manifest)
    for rel, sha in (expected or {}).items():
        if rel in files and files[rel]["sha256"] != sha:
            raise CheckpointError(f"{rel} does not match the sha256 the hub published for it; run the pull again")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        _discard(final)
    os.rename(tmp, final)


def pull(name: str, revision: str | None = None, *, progress: hub.Progress | None = None,
         force: bool = False, offline: bool = False, notice: Notice | None = None) -> ResolvedModel:
    """Download a hub checkpoint (config, tokenizer and weight files only) into our cache, atomically."""
    base, name_revision = split_revision(name)
    if revision is not None:
        check_revision(name, revision)
        if name_revision is not None and name_revision != revision:
            raise StoreError(f"two revisions given for {base}: {name_revision} and {revision}")
    revision = revision or name_revision
    if revision is None and base in bundled_models():
        return resolve(base)
    repo_id = ALIASES.get(base, base)
    parts = name_parts(repo_id)
    if len(parts) != 2:
        raise ModelNotFoundError(
            f"cannot pull {base!r}: it is neither an alias ({', '.join(ALIASES)}) nor a hub repo id owner/name")
    refuse_remote_code_repo(repo_id)
    key, rev = entry_key(parts), revision or DEFAULT_REVISION
    final = entry_dir(parts, rev)
    if not force:
        if (final / MANIFEST).is_file():
            return resolved_entry(final, parts)
        snapshot = hf_snapshot(repo_id, rev)
        if snapshot is not None:
            return snapshot
    if offline or hub.env_offline():
        raise ModelNotFoundError(
            f"cannot download {display(repo_id, rev)}: offline (--offline or HF_HUB_OFFLINE=1); it is not in "
            f"{paths.models_dir()} or the Hugging Face cache {hub.hf_cache_dir()}")
    with _entry_lock(key, rev, display(repo_id, rev), notice):
        if not force and (final / MANIFEST).is_file():  # another process finished it while we waited
            return resolved_entry(final, parts)
        tmp = _tmp_dir(key, rev)
        try:
            commit, expected = hub.download(repo_id, rev, tmp, progress)
            _finish_entry(tmp, final, {"source": "pull", "name": display(repo_id, rev), "repo_id": repo_id,
                                       "revision": rev, "commit": commit}, expected)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedModel(display(repo_id, rev), final, "downloaded", repo_id, rev)


def import_checkpoint(source: str | Path, name: str, *, force: bool = False,
                      notice: Notice | None = None) -> ResolvedModel:
    """Copy a local checkpoint into our cache under a name; .bin weights become model.safetensors."""
    src = Path(source).expanduser()
    if not src.is_dir():
        raise CheckpointError(f"{source} is not a directory: import the checkpoint directory that holds config.json")
    base, revision = split_revision(name)
    if revision is not None:
        raise StoreError(f"an imported model has no revision: name it without '@' (got {name!r})")
    parts = name_parts(base)
    if base in ALIASES or base in BUNDLED_MODELS.values() or base in bundled_models():
        raise StoreError(f"{base!r} is already an alias or a bundled model: choose another name")
    ckpt.check_checkpoint(src)
    files = ckpt.complete_weight_files(src)
    key = entry_key(parts)
    final = entry_dir(parts, None)
    with _entry_lock(key, None, base, notice):
        if cache_entries(key) and not force:
            raise StoreError(f"{base} already exists in {paths.models_dir()}: remove it first or import with --force")
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


def remove(name: str, *, notice: Notice | None = None) -> list[Path]:
    """Delete a model from our cache (one revision with name@rev, else all of them); returns what was removed."""
    base, revision = split_revision(name)
    if revision is None and base in bundled_models():
        raise StoreError(f"{base} is bundled with bigcode-cli and cannot be removed")
    repo_id = ALIASES.get(base, base)
    parts = name_parts(repo_id)
    key = entry_key(parts)
    root = paths.models_dir() / key
    if revision is not None:
        candidates = [root / revision_dir(revision)]
    else:
        candidates = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    removed: list[Path] = []
    for entry in candidates:
        with _entry_lock(key, unquote(entry.name), display(repo_id, unquote(entry.name)), notice):
            if entry.is_dir():
                _discard(entry)
                removed.append(entry)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    if not removed:
        if len(parts) == 2 and hub.snapshot(repo_id, revision):
            raise StoreError(f"{display(repo_id, revision)} lives in the Hugging Face cache {hub.hf_cache_dir()}, which "
                             "bigcode does not manage: remove it with the `hf` command's cache tools")
        raise ModelNotFoundError(f"{display(repo_id, revision)} is not in {paths.models_dir()}")
    return removed
