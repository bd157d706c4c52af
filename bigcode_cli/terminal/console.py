"""The two consoles (results on stdout, everything else on stderr) and the one way errors are shown.

rich is imported only when a console is first needed, so `--help` and shell completion stay fast.
Colour is decided here once: on a terminal, unless NO_COLOR is set or `--no-color` called
`set_colour(False)`; the consoles are given that setting rather than reading the environment.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING

from bigcode_cli.terminal.safe_text import for_stream, is_terminal

if TYPE_CHECKING:
    from rich.console import Console

_colour = {"allowed": True}  # False after --no-color


def set_colour(allowed: bool) -> None:
    """Allow colour (the default) or turn it off everywhere (--no-color); the consoles follow."""
    _colour["allowed"] = allowed
    stderr_console.cache_clear()
    stdout_console.cache_clear()


def colour_wanted(stream) -> bool:
    """Colour only on a terminal, never with NO_COLOR or --no-color."""
    if not _colour["allowed"] or os.environ.get("NO_COLOR"):
        return False
    return is_terminal(stream)


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
    text = for_stream(" ".join(str(message).split()), sys.stderr)  # it may quote model text
    stderr_console().print(f"[bold red]error:[/] {_escape(text)}", soft_wrap=True)


def print_notice(message: str) -> None:
    """A one-line notice on stderr (truncation, fallbacks)."""
    stderr_console().print(f"[yellow]note:[/] {_escape(for_stream(message, sys.stderr))}", soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
