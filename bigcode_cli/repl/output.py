"""Model text on the way to the screen: written as plain text (never markup), the current line
re-drawn with pygments colours on a terminal, control characters made visible."""

from __future__ import annotations

import re
import shutil
from typing import TextIO

# C0 controls except tab and newline, DEL and C1 controls: a model can emit any of them, and an
# escape sequence reaching the terminal would be interpreted there
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """`text` with terminal control characters shown as \\xNN (tabs and newlines kept)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def lexer_for(name: str):
    """The pygments lexer for a language name or alias (raises pygments' ClassNotFound)."""
    from pygments.lexers import get_lexer_by_name

    return get_lexer_by_name(name, stripnl=False, ensurenl=False)


class TurnPrinter:
    """Streams one turn's model text: plain in a pipe; on a terminal each piece re-draws its line highlighted."""

    def __init__(self, stream: TextIO, *, colour: bool = False, language: str = "python") -> None:
        self.stream = stream
        self.colour = colour
        self.line = ""  # the unfinished line on screen, as text
        self.redraw = colour  # False once a line got too wide to re-draw in place
        self.tail = ""  # the input's unfinished last line, shown with the first text
        if colour:
            from pygments.formatters import TerminalFormatter

            self.formatter = TerminalFormatter()
            self.lexer = lexer_for(language)
            self.width = shutil.get_terminal_size().columns

    def start(self, tail: str) -> None:
        """Show the unfinished last line of the input before the first model text, so the text continues it."""
        self.tail = tail

    def write(self, text: str) -> None:
        """Show a piece of model text now."""
        if not text:
            return
        if self.tail:
            text, self.tail = self.tail + text, ""
        for piece in visible(text).splitlines(keepends=True):
            ended = piece.endswith("\n")
            body = piece[:-1] if ended else piece
            self.line += body
            if self.redraw and len(self.line.expandtabs()) < self.width:
                self._draw(self.line)
            else:
                if self.colour and self.redraw:
                    self.redraw = False  # too wide: the rest of this line goes out plain
                self.stream.write(body)
            if ended:
                self.stream.write("\n")
                self.line = ""
                self.redraw = self.colour
        self.stream.flush()

    def _draw(self, line: str) -> None:
        from pygments import highlight

        coloured = highlight(line, self.lexer, self.formatter).rstrip("\n")
        self.stream.write("\r\x1b[K" + coloured)

    def finish(self) -> None:
        """End the output on its own line, so the next prompt starts at the left edge."""
        if self.line:
            self.stream.write("\n")
            self.line = ""
        self.redraw = self.colour
        self.stream.flush()
