"""Key bindings: Enter runs the input only on an empty last line (else a new, auto-indented line),
Esc-Enter / Alt-Enter always runs it, Tab indents code and completes slash commands."""

from __future__ import annotations

from prompt_toolkit.application import get_app
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import Condition, has_focus
from prompt_toolkit.key_binding import KeyBindings

INDENT = "    "
_OPENERS = (":", "{", "(", "[")
_ENDS_BLOCK = ("return", "pass", "break", "continue", "raise")


def is_command(text: str) -> bool:
    """A slash command: one line starting with '/'."""
    stripped = text.strip()
    return stripped.startswith("/") and "\n" not in stripped


def should_run(text: str, cursor: int) -> bool:
    """Whether Enter runs the input: a slash command, nothing typed, or the cursor on an empty last line."""
    if not text.strip() or is_command(text):
        return True
    if cursor != len(text) or "\n" not in text:
        return False
    return not text.rpartition("\n")[2].strip()


def next_indent(line: str) -> str:
    """The indentation of the line after `line`: the same, one more after an opener, one less after return."""
    indent = line[: len(line) - len(line.lstrip())]
    code = line.strip()
    if code.endswith(_OPENERS):
        return indent + INDENT
    if code.split(" ", 1)[0] in _ENDS_BLOCK or code in _ENDS_BLOCK:
        return indent[: -len(INDENT)] if indent.endswith(INDENT) else indent.rstrip(" ")
    return indent


def new_line(buffer: Buffer) -> None:
    """Break the line at the cursor, indented for what comes next."""
    before = buffer.document.current_line_before_cursor
    buffer.insert_text("\n" + next_indent(before))


def repl_key_bindings() -> KeyBindings:
    """The REPL's bindings, on top of prompt-toolkit's emacs defaults (Ctrl-R search, Ctrl-D quit)."""
    bindings = KeyBindings()
    editing = has_focus(DEFAULT_BUFFER)  # not while Ctrl-R searching: there Enter takes the match
    typing_code = editing & Condition(lambda: not get_app().current_buffer.text.lstrip().startswith("/"))

    @bindings.add("enter", filter=editing)
    def _enter(event) -> None:
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and state.current_completion is not None:
            buffer.apply_completion(state.current_completion)
            return
        if should_run(buffer.text, buffer.cursor_position):
            buffer.validate_and_handle()
        else:
            new_line(buffer)

    @bindings.add("escape", "enter", filter=editing)
    def _run(event) -> None:
        event.current_buffer.validate_and_handle()

    @bindings.add("tab", filter=typing_code)
    def _indent(event) -> None:
        event.current_buffer.insert_text(INDENT)

    @bindings.add("s-tab", filter=typing_code)
    def _dedent(event) -> None:
        buffer = event.current_buffer
        line = buffer.document.current_line_before_cursor
        spaces = len(line) - len(line.rstrip(" "))
        if spaces:
            buffer.delete_before_cursor(min(spaces, len(INDENT)))

    return bindings
