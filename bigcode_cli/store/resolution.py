"""Model names and what they resolve to.

A name resolves, in order: an existing checkpoint directory; a bundled model; an alias (expanded to
a hub repo id) or a repo id `owner/name[@revision]`, looked up in our cache, then in the Hugging
Face cache (used in place). Downloading is not done here: a hub model in neither cache raises
NotDownloadedError, which `bigcode_cli.store.resolve(..., download=True)` turns into a pull.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bigcode_cli import paths
from bigcode_cli.errors import CheckpointError, ModelNotFoundError, NotDownloadedError, StoreError
from bigcode_cli.model import checkpoint_files as ckpt
from bigcode_cli.store import hub
from bigcode_cli.store.layout import DEFAULT_REVISION, ResolvedModel, display, find_entry, resolved_entry
from bigcode_cli.tasks import TASKS, task as task_row

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

# task -> the bundled model it uses by default (bigcode_cli.tasks)
BUNDLED_MODELS: dict[str, str] = {row.name: row.default_model for row in TASKS.values()}

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REV_PART = re.compile(r"[A-Za-z0-9._-]+")


def default_model(task: str = "causal-lm") -> str:
    """The model a command uses without --model: the task's variable ($BIGCODE_MODEL ...), else the bundled one."""
    row = task_row(task)
    return os.environ.get(row.env_var) or row.default_model


def bundled_models() -> list[str]:
    """Names of the checkpoints shipped in the package (those actually present)."""
    root = paths.bundled_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def split_revision(name: str) -> tuple[str, str | None]:
    """'owner/name@rev' -> ('owner/name', 'rev'); the revision is validated."""
    base, sep, revision = name.partition("@")
    if not sep:
        return name, None
    check_revision(name, revision)
    return base, revision


def check_revision(name: str, revision: str) -> None:
    """Refuse a revision that is not a plain branch, tag or commit (it becomes a directory name)."""
    parts = revision.split("/")
    if not revision or any(not _REV_PART.fullmatch(p) or p in (".", "..") for p in parts):
        raise StoreError(f"invalid revision {revision!r} in {name!r}: use a branch, tag or commit hash")


def name_parts(name: str) -> tuple[str, ...]:
    """The parts of a cache name ('name' or 'owner/name'); refuses anything that could leave the cache."""
    parts = tuple(name.split("/"))
    if (not name or "\\" in name or len(parts) > 2 or name != name.strip()
            or any(not _PART.fullmatch(p) or ".." in p or "--" in p or p.endswith(".") for p in parts)):
        raise StoreError(
            f"invalid model name {name!r}: expected an alias, a bundled model, owner/name[@revision] "
            "or an existing checkpoint directory")
    return parts


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..")


def _is_model_name(name: str) -> bool:
    try:
        base, _ = split_revision(name)
        name_parts(ALIASES.get(base, base))
    except StoreError:
        return False
    return True


def refuse_remote_code_repo(repo_id: str) -> None:
    """CheckpointError for a repo known to need trust_remote_code, naming its gpt_bigcode conversion."""
    replacement = REMOTE_CODE_REPOS.get(repo_id.lower())
    if replacement:
        raise CheckpointError(
            f"{repo_id} needs trust_remote_code (custom modelling code from the hub), which bigcode never runs; "
            f"use {replacement}, the same weights converted to transformers' gpt_bigcode format")


def hf_snapshot(repo_id: str, revision: str | None) -> ResolvedModel | None:
    """A usable snapshot of repo_id in the Hugging Face cache, or None."""
    snapshot = hub.snapshot(repo_id, revision)
    if snapshot is None:
        return None
    ckpt.check_checkpoint(snapshot)
    return ResolvedModel(display(repo_id, revision), snapshot, "hf-cache", repo_id, revision or DEFAULT_REVISION)


def resolve(name: str, *, offline: bool = False) -> ResolvedModel:
    """Find the checkpoint a model name means, without downloading (see the module docstring for the order)."""
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
        path = paths.bundled_dir() / base
        ckpt.check_checkpoint(path)
        return ResolvedModel(base, path, "bundled")
    if revision is None and base in BUNDLED_MODELS.values():
        raise ModelNotFoundError(
            f"the bundled model {base} is not installed in {paths.bundled_dir()}; reinstall bigcode-cli")

    repo_id = ALIASES.get(base, base)
    parts = name_parts(repo_id)
    refuse_remote_code_repo(repo_id)
    entry = find_entry(parts, revision)
    if entry is not None:
        ckpt.check_remote_code(entry)
        return resolved_entry(entry, parts)
    if len(parts) == 2:
        snapshot = hf_snapshot(repo_id, revision)
        if snapshot is not None:
            return snapshot
    if len(parts) == 1:
        raise ModelNotFoundError(
            f"unknown model {name!r}: not a checkpoint directory, a bundled model "
            f"({', '.join(bundled_models()) or 'none installed'}), an alias ({', '.join(ALIASES)}) or a name in "
            f"{paths.models_dir()}; hub models are named owner/name")
    where = f"looked in {paths.models_dir()} and the Hugging Face cache {hub.hf_cache_dir()}"
    offline = offline or hub.env_offline()
    hint = ("; you are offline (--offline or HF_HUB_OFFLINE=1): go online and run" if offline else "; get it with")
    raise NotDownloadedError(
        f"{display(repo_id, revision)} is not downloaded ({where}){hint} `bigcode models pull {name}`")


def path(name: str) -> Path:
    """The checkpoint directory a name resolves to (never downloads)."""
    return resolve(name).path
