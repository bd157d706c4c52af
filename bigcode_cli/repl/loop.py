"""The two ways turns reach a session: a prompt-toolkit prompt on a terminal, or blank-line separated
blocks read from a pipe."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from bigcode_cli.paths import history_file

if TYPE_CHECKING:
    from bigcode_cli.repl.session import Session

WELCOME = "bigcode repl: Enter on an empty line (or Esc-Enter) runs, /help lists commands, Ctrl-D quits."


def _history() -> Any:
    """The persistent input history under BIGCODE_HOME (in memory only when that cannot be written)."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    path = history_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


def prompt_session(session: Session, *, input: Any = None, output: Any = None) -> Any:
    """The prompt-toolkit PromptSession wired to the session: keys, toolbar, completion, highlighting, history."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import ThreadedCompleter
    from prompt_toolkit.lexers import DynamicLexer, PygmentsLexer
    from prompt_toolkit.output import ColorDepth
    from prompt_toolkit.styles import Style

    from bigcode_cli.repl.keys import repl_key_bindings
    from bigcode_cli.terminal.stream_printer import lexer_for
    from bigcode_cli.repl.slash import SlashCompleter
    from bigcode_cli.repl.toolbar import STYLE, toolbar

    lexers: dict[str, Any] = {}

    def current_lexer() -> Any:
        if session.language not in lexers:
            lexers[session.language] = PygmentsLexer(type(lexer_for(session.language)))
        return lexers[session.language]

    return PromptSession(
        message=">>> ",
        prompt_continuation=lambda width, line_number, wrap_count: "... ".rjust(width),
        multiline=True,
        key_bindings=repl_key_bindings(),
        history=_history(),
        lexer=DynamicLexer(current_lexer),
        completer=ThreadedCompleter(SlashCompleter(session.commands, session)),
        complete_while_typing=True,
        bottom_toolbar=lambda: toolbar(session),
        style=Style.from_dict(STYLE),
        search_ignore_case=True,
        color_depth=None if session.colour else ColorDepth.MONOCHROME,  # NO_COLOR and --no-color
        input=input,
        output=output,
    )


def interactive(session: Session, *, input: Any = None, output: Any = None) -> int:
    """Prompt, run, repeat until /quit or Ctrl-D. Ctrl-C at the prompt drops the input."""
    prompt = prompt_session(session, input=input, output=output)
    session.info(WELCOME)
    while session.running:
        try:
            text = prompt.prompt()
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        session.handle(text)
    return 0


def read_turns(lines: Iterable[str]) -> Iterator[str]:
    """Blank-line separated blocks of `lines`, each ending with a newline."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line if line.endswith("\n") else line + "\n")
        elif block:
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)


def scripted(session: Session, lines: Iterable[str]) -> int:
    """Run each block of `lines` as a turn: 0 when all went well, 1 when one failed, 130 when stopped by Ctrl-C."""
    failed = 0
    for turn in read_turns(lines):
        if not session.handle(turn):
            if session.stopped_by_user:
                return 130
            failed += 1
        if not session.running:
            break
    return 1 if failed else 0
