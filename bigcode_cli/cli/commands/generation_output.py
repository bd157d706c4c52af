"""How generation commands show their results: streamed text (highlighted on a terminal), JSON, diffs."""

from __future__ import annotations

import json
import shutil
import sys
from typing import TYPE_CHECKING, Any

from bigcode_cli.terminal.console import colour_wanted

if TYPE_CHECKING:
    from bigcode_cli.generation.completion import Completion
    from bigcode_cli.text.tokenizer import Tokenizer


class StreamPrinter:
    """Writes generated text to stdout as it arrives; on a terminal each finished line is re-drawn highlighted."""

    def __init__(self, filename: str | None = None, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.colour = colour_wanted(self.stream)
        self.line = ""  # the current, unfinished line as printed so far
        self.formatter = self.lexer = None
        if self.colour:
            from pygments.formatters import TerminalFormatter
            from pygments.lexers import PythonLexer, get_lexer_for_filename
            from pygments.util import ClassNotFound

            try:
                self.lexer = get_lexer_for_filename(filename) if filename and filename != "-" else PythonLexer()
            except ClassNotFound:
                self.lexer = PythonLexer()
            self.formatter = TerminalFormatter()
            self.width = shutil.get_terminal_size().columns

    def write(self, text: str) -> None:
        """Print a piece of generated text now."""
        if not self.colour:
            self.stream.write(text)
            self.stream.flush()
            return
        for piece in text.splitlines(keepends=True):
            self.stream.write(piece)
            self.line += piece
            if self.line.endswith("\n"):
                self._redraw(self.line[:-1])
                self.stream.write("\n")
                self.line = ""
        self.stream.flush()

    def _redraw(self, line: str) -> None:
        if not line.strip() or len(line.expandtabs()) >= self.width:
            return  # a wrapped line cannot be redrawn in place
        from pygments import highlight

        coloured = highlight(line, self.lexer, self.formatter).rstrip("\n")
        self.stream.write("\r\x1b[K" + coloured)

    def close(self) -> None:
        """End the output with a newline on a terminal, so the shell prompt starts on its own line."""
        if self.colour and self.line:
            self._redraw(self.line)
            self.stream.write("\n")
            self.stream.flush()
            self.line = ""


def completion_records(result: Completion, tokenizer: Tokenizer, load_s: float,
                       dtype: str | None = None) -> list[dict[str, Any]]:
    """One JSON-ready object per sample (the --json contract); `dtype`: what the model computed in (--dtype auto's choice)."""
    generation = result.generation
    timings = {
        "load_s": round(load_s, 4),
        "prefill_s": round(generation.prefill_s, 4),
        "decode_s": round(generation.decode_s, 4),
        "tokens_per_s": round(generation.tokens_per_s, 2),
    }
    prompt_text = tokenizer.decode(result.prompt.ids, skip_special_tokens=False)
    return [
        {
            "text": sample.text,
            "mode": result.prompt.mode,
            "prompt": prompt_text,
            "stop_reason": sample.stop_reason,
            "prompt_tokens": generation.prompt_tokens,
            "new_tokens": len(sample.token_ids),
            "truncated": result.prompt.truncated,
            **({"dtype": dtype} if dtype else {}),
            "timings": timings,
        }
        for sample in generation.samples
    ]


def print_json_lines(records: list[dict[str, Any]]) -> None:
    """One compact JSON object per line on stdout."""
    for record in records:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_samples(texts: list[str]) -> None:
    """Several samples on stdout, separated by a line holding only `---`."""
    for i, text in enumerate(texts):
        if i:
            sys.stdout.write("\n---\n")
        sys.stdout.write(text)
    sys.stdout.write("\n")
    sys.stdout.flush()


def unified_diff(path: str, before: str, after: str) -> str:
    """The change as a unified diff, as `diff -u` would print it."""
    import difflib

    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"a/{path}", tofile=f"b/{path}"))
