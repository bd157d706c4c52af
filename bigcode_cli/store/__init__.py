"""The checkpoint store: model names, our cache and the Hugging Face cache, used as `store.pull(...)`.

Four small modules behind this facade: `resolution` (what a name means), `writing` (pull, import, rm:
locks and atomic entries), `reading` (list, info, verify) over `layout` (our cache on disk), and `hub`
(the Hugging Face side: its cache, read in place, and downloads). `loader.open_model` loads what a
name resolves to. Torch-free at import, so the CLI's shell completion can use it.
"""

from __future__ import annotations

from bigcode_cli.errors import NotDownloadedError
from bigcode_cli.store import hub
from bigcode_cli.store.layout import ResolvedModel
from bigcode_cli.store.reading import info, list_models, verify
from bigcode_cli.store.resolution import (
    ALIASES,
    BUNDLED_MODELS,
    REMOTE_CODE_REPOS,
    bundled_models,
    default_model,
    path,
    split_revision,
)
from bigcode_cli.store.resolution import resolve as _resolve_local
from bigcode_cli.store.writing import import_checkpoint, pull, remove

Progress = hub.Progress  # progress(filename, bytes done, bytes in the whole pull or 0 when unknown)

__all__ = ["ALIASES", "BUNDLED_MODELS", "REMOTE_CODE_REPOS", "Progress", "ResolvedModel", "bundled_models",
           "default_model", "import_checkpoint", "info", "list_models", "path", "pull", "remove", "resolve",
           "split_revision", "verify"]


def resolve(name: str, *, offline: bool = False, download: bool = False,
            progress: Progress | None = None) -> ResolvedModel:
    """Find the checkpoint a model name means (bigcode_cli.store.resolution); with `download`, pull a hub
    model that is in neither cache, unless offline."""
    try:
        return _resolve_local(name, offline=offline)
    except NotDownloadedError:
        if download and not (offline or hub.env_offline()):
            return pull(name, progress=progress)
        raise
