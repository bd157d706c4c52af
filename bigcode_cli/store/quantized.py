"""Quantized copies of checkpoints (--dtype int8 / int4), kept so the next start maps them in without quantizing.

Layout, under `quantized_dir()`:
    <name>-<source id>/<dtype>/model.safetensors + manifest.json     one copy
    .tmp/                                                            copies being written (never read)
    .locks/                                                          one file lock per copy
The source id is a hash of the source checkpoint's location and its config and weight files' names, sizes and
modification times: a checkpoint replaced in place (a new pull, a re-import, an edited file) gets a new id, so
a copy never outlives what it was made from. The manifest also records the sha256 of every source weight file
and of the copy itself. A copy appears by one atomic rename of a complete, fsynced directory, so an interrupted
or failed write (Ctrl-C, a full disk) leaves nothing that is ever read. Library code: torch only inside functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigcode_cli.errors import StoreError
from bigcode_cli.model import checkpoint_files as ckpt
from bigcode_cli.model import quantized_format
from bigcode_cli.paths import quantized_dir
from bigcode_cli.store.layout import MANIFEST
from bigcode_cli.store.layout import manifest as read_manifest
from bigcode_cli.store.locking import holding

if TYPE_CHECKING:
    from bigcode_cli.store.layout import ResolvedModel

FILE = "model.safetensors"


def source_id(checkpoint: Path) -> str:
    """A short hash naming one state of a checkpoint directory (location, files, sizes, mtimes)."""
    digest = hashlib.sha256(str(checkpoint.resolve()).encode())
    for path in [checkpoint / "config.json", *(ckpt.weight_files(checkpoint) or [])]:
        st = path.stat()
        digest.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "model"


def entry_dir(model: ResolvedModel, dtype: str) -> Path:
    """Where the `dtype` copy of a resolved model lives (whether or not it exists)."""
    return quantized_dir() / f"{_slug(model.name)}-{source_id(model.path)}" / dtype


def find(model: ResolvedModel, dtype: str) -> Path | None:
    """The file of a complete `dtype` copy of `model` in this version's format, or None."""
    entry = entry_dir(model, dtype)
    manifest = read_manifest(entry)
    version = quantized_format.FORMAT_VERSION
    if manifest is None or manifest.get("format") != version or manifest.get("dtype") != dtype:
        return None
    file = entry / FILE
    try:
        if file.stat().st_size != manifest.get("size"):
            return None
    except OSError:
        return None
    return file


def save(model: ResolvedModel, dtype: str, quantized_model: Any) -> Path:
    """Write a loaded quantized model as the `dtype` copy of `model`; atomic. StoreError when it cannot be written."""
    from bigcode_cli.model.quantized_file import write_state
    from bigcode_cli.model.quantized_loading import quantized_state

    version = quantized_format.FORMAT_VERSION
    final = entry_dir(model, dtype)
    key = f"{final.parent.name}.{dtype}"
    root = quantized_dir()
    try:
        (root / ".locks").mkdir(parents=True, exist_ok=True)
        (root / ".tmp").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {root}: {exc.strerror or exc}") from None
    with holding(root / ".locks" / f"{key}.lock", f"the {dtype} copy of {model.name}"):
        if find(model, dtype) is not None:
            return final / FILE
        for stale in (root / ".tmp").glob(f"{key}.*"):  # a killed writer's leftovers: we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / ".tmp" / f"{key}.{uuid.uuid4().hex[:12]}"
        try:
            tmp.mkdir()
            write_state(tmp / FILE, quantized_state(quantized_model), {"format": str(version), "dtype": dtype})
            sources = {p.name: ckpt.sha256_file(p) for p in ckpt.weight_files(model.path) or []}
            manifest = {"format": version, "dtype": dtype, "source_name": model.name, "source_path": str(model.path),
                        "source_id": source_id(model.path), "source_sha256": sources,
                        "sha256": ckpt.sha256_file(tmp / FILE), "size": (tmp / FILE).stat().st_size,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                _discard(final)
            os.rename(tmp, final)
        except OSError as exc:
            raise StoreError(f"cannot write the {dtype} copy of {model.name} under {root}: "
                             f"{exc.strerror or exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename
    return final / FILE


def _discard(path: Path) -> None:
    trash = quantized_dir() / ".tmp" / f"trash.{uuid.uuid4().hex[:12]}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def entries() -> list[dict[str, Any]]:
    """Every complete quantized copy: its source, dtype, size, path and when it was made."""
    root = quantized_dir()
    found = []
    if not root.is_dir():
        return found
    for parent in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in sorted(p for p in parent.iterdir() if p.is_dir()):
            manifest = read_manifest(entry)
            if manifest is None or not (entry / FILE).is_file():
                continue
            found.append({"name": manifest.get("source_name"), "dtype": manifest.get("dtype"),
                          "source_path": manifest.get("source_path"), "size_bytes": manifest.get("size"),
                          "created": manifest.get("created"), "path": str(entry / FILE),
                          "current": _is_current(manifest)})
    return found


def _is_current(manifest: dict[str, Any]) -> bool:
    # a copy whose source changed or vanished since is never used again; `models rm` clears it
    try:
        return source_id(Path(manifest["source_path"])) == manifest.get("source_id")
    except (OSError, KeyError, TypeError):
        return False


def copies_of(name: str) -> list[dict[str, Any]]:
    """The quantized copies made from the model called `name`."""
    return [e for e in entries() if e["name"] == name]


def remove(name: str) -> list[Path]:
    """Delete every quantized copy made from the model called `name`; returns the directories removed."""
    removed = []
    for entry in copies_of(name):
        directory = Path(entry["path"]).parent
        _discard(directory)
        removed.append(directory)
        if not any(directory.parent.iterdir()):
            directory.parent.rmdir()
    return removed
