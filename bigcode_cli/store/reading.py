"""Reading our checkpoint cache and the Hugging Face cache: list, info, verify. Nothing here writes."""

from __future__ import annotations

from typing import Any

from bigcode_cli import paths
from bigcode_cli.errors import BigCodeError, StoreError
from bigcode_cli.model import checkpoint_files as ckpt
from bigcode_cli.store import hub
from bigcode_cli.store.layout import ResolvedModel, cache_entries, display, manifest, resolved_entry
from bigcode_cli.store.resolution import bundled_models, resolve


def info(name: str) -> dict[str, Any]:
    """What `bigcode models info` shows: the resolved model and its config and weights summary."""
    return _describe(resolve(name))


def _describe(model: ResolvedModel) -> dict[str, Any]:
    data: dict[str, Any] = {"name": model.name, "source": model.source, "path": str(model.path),
                            "repo_id": model.repo_id, "revision": model.revision}
    recorded = manifest(model.path) if model.source in ("cache", "downloaded") else None
    data["commit"] = (recorded or {}).get("commit") or (model.path.name if model.source == "hf-cache" else None)
    data.update(ckpt.summarize(model.path))
    return data


def list_models() -> list[dict[str, Any]]:
    """Every model available without a download: bundled, our cache, and gpt_bigcode snapshots in the HF cache."""
    found: list[ResolvedModel] = [ResolvedModel(n, paths.bundled_dir() / n, "bundled") for n in bundled_models()]
    root = paths.models_dir()
    if root.is_dir():
        for key_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            parts = tuple(key_dir.name.split("--"))
            for entry in sorted(cache_entries(key_dir.name)):
                found.append(resolved_entry(entry, parts))
    found.extend(ResolvedModel(display(repo_id, rev), snap, "hf-cache", repo_id, rev)
                 for repo_id, rev, snap in hub.cached_snapshots())
    rows = []
    for model in found:
        try:
            rows.append(_describe(model))
        except BigCodeError as exc:
            rows.append({"name": model.name, "source": model.source, "path": str(model.path), "error": str(exc)})
    return rows


def verify(name: str) -> dict[str, Any]:
    """Re-hash a model's files against the hashes recorded when it was pulled, imported or shipped (bundled);
    StoreError on mismatch."""
    model = resolve(name)
    if model.source == "hf-cache":
        problems, checked = hub.verify_snapshot(model.path)
    else:
        recorded = manifest(model.path)
        if recorded is None or not isinstance(recorded.get("files"), dict):
            raise StoreError(f"{model.name} ({model.source}) has no recorded hashes to check; "
                             "`bigcode models import` it to record them")
        problems, checked = [], 0
        for rel, want in sorted(recorded["files"].items()):
            path = model.path / rel
            checked += 1
            if not path.is_file():
                problems.append(f"{rel} is missing")
            elif path.stat().st_size != want.get("size"):
                problems.append(f"{rel} has {path.stat().st_size} bytes, expected {want.get('size')}")
            elif ckpt.sha256_file(path) != want.get("sha256"):
                problems.append(f"{rel} sha256 differs")
    if problems:
        fix = (f"`bigcode models pull --force {model.name}`" if model.repo_id else
               "a reinstall of bigcode-cli" if model.source == "bundled" else "a fresh `bigcode models import`")
        raise StoreError(f"{model.name} is corrupt: {'; '.join(problems)}; replace it with {fix}")
    return {"name": model.name, "source": model.source, "path": str(model.path), "files": checked, "ok": True}
