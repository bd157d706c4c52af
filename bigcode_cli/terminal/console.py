"""The two consoles (results on stdout, everything else on stderr) and the one way errors are shown.

rich is imported only when a console is first needed, so `--help` and shell completion stay fast.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def colour_wanted(stream) -> bool:
    """Colour only on a terminal, never with NO_COLOR or --no-color."""
    if os.environ.get("NO_COLOR") or os.environ.get("BIGCODE_NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


@lru_cache(maxsize=None)
def stderr_console() -> Console:
    """Progress, status and errors."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, no_color=not colour_wanted(sys.stderr),
                   force_terminal=None if colour_wanted(sys.stderr) else False)


@lru_cache(maxsize=None)
def stdout_console() -> Console:
    """Results shown to a person on a terminal (tables, highlighted code); pipes get plain text."""
    from rich.console import Console

    return Console(highlight=False, no_color=not colour_wanted(sys.stdout),
                   force_terminal=None if colour_wanted(sys.stdout) else False)


def debug_enabled() -> bool:
    """BIGCODE_DEBUG=1 shows tracebacks instead of one-line errors."""
    return os.environ.get("BIGCODE_DEBUG", "") not in ("", "0", "false", "no")


def print_error(message: str) -> None:
    """One line on stderr: `error: ...`."""
    text = " ".join(str(message).split())
    stderr_console().print(f"[bold red]error:[/] {_escape(text)}", soft_wrap=True)


def print_notice(message: str) -> None:
    """A one-line notice on stderr (truncation, fallbacks)."""
    stderr_console().print(f"[yellow]note:[/] {_escape(message)}", soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
