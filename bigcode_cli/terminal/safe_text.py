"""The one rule for model text on its way to a terminal: control characters are shown, never obeyed.

A checkpoint can be made to emit anything, and an escape sequence that reaches a terminal is
interpreted there (colours, cursor moves, window titles, OSC 8 links, even clipboard writes).
On a terminal every C0 control except tab and newline, DEL and every C1 control is shown as
`\\xNN`, which also breaks every ESC/CSI/OSC sequence apart. Pipes and files get the exact text.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls except tab (09) and newline (0a), DEL (7f) and C1 controls (80-9f, e.g. 9b = CSI)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(text: str) -> str:
    """`text` with every terminal control character shown as \\xNN (tabs and newlines kept)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def is_terminal(stream: Any) -> bool:
    """Whether `stream` is a terminal (a closed or odd stream counts as not one)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def for_stream(text: str, stream: Any) -> str:
    """`text` as it may be written to `stream`: made safe on a terminal, exact anywhere else."""
    return safe_text(text) if is_terminal(stream) else text


def json_for_stream(line: str, stream: Any) -> str:
    """A JSON text as it may be written to `stream`: on a terminal, DEL and C1 controls (which JSON
    leaves raw; it always escapes C0) become \\u escapes, so the value is the same and the terminal safe."""
    if not is_terminal(stream):
        return line
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
