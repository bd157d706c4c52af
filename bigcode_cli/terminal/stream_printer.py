"""The one printer of streamed model text, used by `complete`/`generate`/`infill` and the REPL.

In a pipe or a file the text goes out exactly as generated. On a terminal it is always made safe
(`safe_text`: control characters shown, never obeyed) and, with colour, each piece re-draws its
unfinished line highlighted by pygments (a line too wide to re-draw in place goes on plain).
"""

from __future__ import annotations

import shutil
import sys
from typing import Any, TextIO

from bigcode_cli.terminal.console import colour_wanted
from bigcode_cli.terminal.safe_text import is_terminal, safe_text


def lexer_for(name: str) -> Any:
    """The pygments lexer for a language name or alias (raises pygments' ClassNotFound)."""
    from pygments.lexers import get_lexer_by_name

    return get_lexer_by_name(name, stripnl=False, ensurenl=False)


def lexer_for_file(filename: str | None) -> Any:
    """The pygments lexer for a file name; Python for standard input or an unknown kind of file."""
    from pygments.lexers import get_lexer_for_filename
    from pygments.util import ClassNotFound

    if filename and filename != "-":
        try:
            return get_lexer_for_filename(filename, stripnl=False, ensurenl=False)
        except ClassNotFound:
            pass
    return lexer_for("python")


class StreamPrinter:
    """Writes model text as it arrives: exact in a pipe; safe, and highlighted with colour, on a terminal."""

    def __init__(self, stream: TextIO | None = None, *, terminal: bool | None = None, colour: bool | None = None,
                 language: str | None = None, filename: str | None = None, end_line: bool | None = None) -> None:
        """terminal/colour: None = ask the stream; language or filename picks the highlighting (default
        Python); end_line: whether `finish` ends an unfinished line (default: on a terminal)."""
        self.stream = stream or sys.stdout
        self.colour = colour_wanted(self.stream) if colour is None else colour
        self.terminal = self.colour or (is_terminal(self.stream) if terminal is None else terminal)
        self.end_line = self.terminal if end_line is None else end_line
        self.line = ""  # the unfinished line on screen, as (safe) text
        self.open = False  # something is written after the last newline
        self.redraw = self.colour  # False once a line got too wide to re-draw in place
        self.tail = ""  # the input's unfinished last line, shown with the first text
        if self.colour:
            from pygments.formatters import TerminalFormatter

            self.formatter = TerminalFormatter()
            self.lexer = lexer_for(language) if language else lexer_for_file(filename)
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
        self.open = not text.endswith("\n")
        if not self.terminal:
            self.stream.write(text)
            self.stream.flush()
            return
        pieces = safe_text(text).split("\n")
        for number, body in enumerate(pieces):
            self.line += body
            if not body:
                pass
            elif self.redraw and len(self.line.expandtabs()) < self.width:
                self._draw(self.line)
            else:
                if self.redraw:
                    self.redraw = False  # too wide: the rest of this line goes out plain
                self.stream.write(body)
            if number < len(pieces) - 1:
                self.stream.write("\n")
                self.line = ""
                self.redraw = self.colour
        self.stream.flush()

    def _draw(self, line: str) -> None:
        from pygments import highlight

        coloured = highlight(line, self.lexer, self.formatter).rstrip("\n")
        self.stream.write("\r\x1b[K" + coloured)

    def finish(self) -> None:
        """End the output (on its own line when `end_line`), ready for what comes next."""
        if self.open and self.end_line:
            self.stream.write("\n")
        self.open = False
        self.line = ""
        self.redraw = self.colour
        self.stream.flush()
