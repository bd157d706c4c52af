"""`bigcode repl`: the interactive session."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from bigcode_cli.cli.commands.option_groups import MODEL, generation, with_options
from bigcode_cli.cli.commands.options import choice_enum
from bigcode_cli.tasks import MODES
from bigcode_cli.terminal.model_choice import ModelChoice

if TYPE_CHECKING:
    from bigcode_cli.generation.completion import CompletionSettings

Mode = choice_enum("Mode", tuple(MODES))  # the REPL's modes: one per command of each task (bigcode_cli.tasks)

ModeOpt = Annotated[Mode, typer.Option("--mode", help="Starting mode (classify and tag need models with those heads).")]
LangOpt = Annotated[str, typer.Option("--lang", help="Language to highlight input and output as (a pygments name).")]


@with_options
def repl(
    mode: ModeOpt = Mode.complete,  # type: ignore[attr-defined]
    lang: LangOpt = "python",
    settings: CompletionSettings = generation(),
    choice: ModelChoice = MODEL,
) -> None:
    """Complete, infill, classify and tag code interactively, with the model loaded once.

    Type code and press Enter on an empty line (or Esc-Enter) to run it; /help lists the slash
    commands (/model, /attn, /set temperature 0.2, /mode infill, /save FILE, /quit ...). The options
    are the starting settings. With standard input not a terminal, blank-line separated turns are
    read from it and the results printed, so a session can be scripted.
    """
    from bigcode_cli.repl.loop import interactive, scripted
    from bigcode_cli.repl.session import Session

    if sys.stdin is None:  # started with stdin closed (`<&-`): nothing to read turns from
        from bigcode_cli.errors import InputError

        raise InputError("cannot read standard input (it is closed): run `bigcode repl` in a terminal or pipe turns in")
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    session = Session(settings, model=choice.model, options=choice, mode=mode.value, language=lang, interactive=terminal)
    session.load(session.task, choice.model)
    code = interactive(session) if terminal else scripted(session, sys.stdin)
    if code:
        raise typer.Exit(code)
