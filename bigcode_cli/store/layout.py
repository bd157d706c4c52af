"""Our checkpoint cache on disk: where an entry lives, its manifest, and finding the entries of a name.

Under `models_dir()`:
    <owner>--<name>/<revision>/          one entry: the checkpoint files + manifest.json
    <name>/main/                          an imported checkpoint with a one-part name
    .tmp/                                 downloads and imports in progress (never resolved)
    .locks/                               one file lock per entry
An entry appears by one atomic rename of a complete, verified directory (bigcode_cli.store.writing),
so a half-written entry is never visible here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from bigcode_cli import paths

MANIFEST = "manifest.json"
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name led: its checkpoint directory and how it was found."""

    name: str
    path: Path
    source: str  # "path" | "bundled" | "cache" | "hf-cache" | "downloaded"
    repo_id: str | None = None
    revision: str | None = None


def entry_key(parts: tuple[str, ...]) -> str:
    """The directory name of a cache name's entries: 'owner--name' or 'name'."""
    return "--".join(parts)


def revision_dir(revision: str | None) -> str:
    """The directory name of one revision (quoted: a revision may hold '/')."""
    return quote(revision or DEFAULT_REVISION, safe="")


def entry_dir(parts: tuple[str, ...], revision: str | None) -> Path:
    """Where the entry of a name at a revision lives (whether or not it exists)."""
    return paths.models_dir() / entry_key(parts) / revision_dir(revision)


def display(base: str, revision: str | None) -> str:
    """A name as messages and listings show it: the revision only when it is not main."""
    return base if revision in (None, DEFAULT_REVISION) else f"{base}@{revision}"


def manifest(entry: Path) -> dict[str, Any] | None:
    """An entry's manifest.json, or None when it is missing or unreadable."""
    try:
        data = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cache_entries(key: str) -> list[Path]:
    """Complete entries of one cache name, newest first."""
    root = paths.models_dir() / key
    if not root.is_dir():
        return []
    entries = [p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file() and (p / "config.json").is_file()]
    return sorted(entries, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)


def find_entry(parts: tuple[str, ...], revision: str | None) -> Path | None:
    """Our cache entry for a name: the revision asked for, else main, else the newest one."""
    entries = cache_entries(entry_key(parts))
    wanted = revision_dir(revision)
    for entry in entries:
        if entry.name == wanted:
            return entry
    if revision is None and entries:
        return entries[0]
    return None


def resolved_entry(entry: Path, parts: tuple[str, ...]) -> ResolvedModel:
    """A cache entry as a ResolvedModel, named from its manifest."""
    recorded = manifest(entry) or {}
    revision = recorded.get("revision") or unquote(entry.name)
    repo_id = recorded.get("repo_id") or ("/".join(parts) if len(parts) == 2 else None)
    return ResolvedModel(display("/".join(parts), revision), entry, "cache", repo_id,
                         revision if recorded.get("source") != "import" else None)
