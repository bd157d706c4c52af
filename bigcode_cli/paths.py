"""Every on-disk location the project uses comes from here."""

from __future__ import annotations

import os
from pathlib import Path


def bigcode_home() -> Path:
    """The root of our files: BIGCODE_HOME, else $XDG_CACHE_HOME/bigcode, else ~/.cache/bigcode."""
    explicit = os.environ.get("BIGCODE_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bigcode"


def models_dir() -> Path:
    """Where pulled and imported checkpoints live."""
    return bigcode_home() / "models"


def quantized_dir() -> Path:
    """Where quantized copies of checkpoints (--dtype int8 / int4) are kept."""
    return bigcode_home() / "quantized"


def kernels_dir() -> Path:
    """This user's compiled C kernels: a directory per uid under BIGCODE_KERNEL_DIR, else under the home's kernels/.

    Per user because a compiled library runs in the process that loads it, and a model cache may be shared.
    """
    explicit = os.environ.get("BIGCODE_KERNEL_DIR")
    root = Path(explicit).expanduser() if explicit else bigcode_home() / "kernels"
    return root / f"uid-{os.geteuid()}"


def history_file() -> Path:
    """The REPL's persistent input history."""
    return bigcode_home() / "repl_history"


def bundled_dir() -> Path:
    """The checkpoints shipped inside the package."""
    return Path(__file__).resolve().parent / "bundled"
