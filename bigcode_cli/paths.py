"""Every on-disk location the project uses comes from here."""

from __future__ import annotations

import os
from pathlib import Path


def _own_cache() -> Path:
    """This user's own bigcode directory: $XDG_CACHE_HOME/bigcode, else ~/.cache/bigcode."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bigcode"


def bigcode_home() -> Path:
    """The root of our files: BIGCODE_HOME (which a team may share), else this user's own cache directory."""
    explicit = os.environ.get("BIGCODE_HOME")
    return Path(explicit).expanduser() if explicit else _own_cache()


def models_dir() -> Path:
    """Where pulled and imported checkpoints live."""
    return bigcode_home() / "models"


def quantized_dir() -> Path:
    """Where quantized copies of checkpoints (--dtype int8 / int4) are kept."""
    return bigcode_home() / "quantized"


def kernels_dir() -> Path:
    """This user's compiled C kernels: BIGCODE_KERNEL_DIR, else kernels/ in the user's own cache, whatever
    BIGCODE_HOME says.

    A compiled library runs in every process that loads it, so it never lives in a model cache a team may
    share; kernels/build.py refuses a directory that anyone else could write (or replace).
    """
    explicit = os.environ.get("BIGCODE_KERNEL_DIR")
    return Path(explicit).expanduser() if explicit else _own_cache() / "kernels"


def history_file() -> Path:
    """The REPL's persistent input history."""
    return bigcode_home() / "repl_history"


def bundled_dir() -> Path:
    """The checkpoints shipped inside the package."""
    return Path(__file__).resolve().parent / "bundled"
