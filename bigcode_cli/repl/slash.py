"""The slash-command registry: what each command is called, its usage and help, how its arguments
complete, and turning a `/name args...` line into a call."""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.document import Document

from bigcode_cli.errors import InputError

# handler(session, args): does the command; raises BigCodeError for a bad value
Handler = Callable[[Any, list[str]], None]
# choices(session, args_before): the words that may come next
Choices = Callable[[Any, list[str]], Iterable[str]]


@dataclass(frozen=True)
class SlashCommand:
    """One slash command."""

    name: str
    handler: Handler
    usage: str  # e.g. "/set KEY VALUE"
    help: str  # one line
    choices: Choices | None = None
    aliases: tuple[str, ...] = ()


def split_words(line: str) -> list[str]:
    """A command line as shell-like words (quotes group, backslashes escape)."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise InputError(f"cannot read {line.strip()!r}: {exc} (close the quote)") from None


class SlashRegistry:
    """The commands, looked up by name or alias."""

    def __init__(self) -> None:
        self._commands: dict[str, SlashCommand] = {}
        self._names: dict[str, str] = {}

    def command(self, name: str, usage: str, help: str, *, choices: Choices | None = None,
                aliases: tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
        """Decorator: register `handler` as /name."""
        def register(handler: Handler) -> Handler:
            self._commands[name] = SlashCommand(name, handler, usage, help, choices, aliases)
            for key in (name, *aliases):
                self._names[key] = name
            return handler

        return register

    def __iter__(self) -> Iterator[SlashCommand]:
        return iter(self._commands.values())

    def find(self, name: str) -> SlashCommand | None:
        """The command called `name` (without the slash), or None."""
        key = self._names.get(name.lower())
        return self._commands[key] if key else None

    def run(self, session: Any, line: str) -> None:
        """Run one `/name args...` line."""
        words = split_words(line.strip()[1:])
        if not words:
            raise InputError("type a command after the slash; /help lists them")
        command = self.find(words[0])
        if command is None:
            raise InputError(f"unknown command /{words[0]}{self._suggestion(words[0])}; /help lists the commands")
        command.handler(session, words[1:])

    def _suggestion(self, name: str) -> str:
        close = difflib.get_close_matches(name.lower(), list(self._names), n=1, cutoff=0.6)
        return f" (did you mean /{self._names[close[0]]}?)" if close else ""

    def help_text(self, name: str | None = None) -> str:
        """/help: every command with its usage, or one command in detail."""
        if name:
            command = self.find(name.lstrip("/"))
            if command is None:
                raise InputError(f"unknown command /{name.lstrip('/')}; /help lists the commands")
            aliases = f"\n  also: {', '.join('/' + a for a in command.aliases)}" if command.aliases else ""
            return f"{command.usage}\n  {command.help}{aliases}"
        width = max(len(c.usage) for c in self) + 2
        rows = [f"  {c.usage:<{width}}{c.help}" for c in self]
        return "\n".join(["Commands:", *rows, "", *KEYS_HELP])


KEYS_HELP = [
    "Keys:",
    "  Enter           new line (auto-indented); on an empty last line: run",
    "  Esc-Enter       run now (Alt-Enter too)",
    "  Tab             indent; after a /: complete",
    "  Ctrl-R          search the history",
    "  Ctrl-C          stop a generation (keeping its text), or clear the input",
    "  Ctrl-D          quit (on an empty prompt)",
    "Put <FILL> in the code to fill in the middle there.",
]


class SlashCompleter(Completer):
    """Completes command names after a leading '/', then each command's arguments."""

    def __init__(self, registry: SlashRegistry, session: Any) -> None:
        self.registry = registry
        self.session = session

    def get_completions(self, document: Document, complete_event: Any) -> Iterator[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or "\n" in text:
            return
        if " " not in text:
            typed = text[1:].lower()
            for command in self.registry:
                if command.name.startswith(typed):
                    yield Completion("/" + command.name, start_position=-len(text), display_meta=command.help)
            return
        head, _, current = text.rpartition(" ")
        try:
            words = shlex.split(head[1:])
        except ValueError:
            return
        command = self.registry.find(words[0]) if words else None
        if command is None or command.choices is None:
            return
        try:
            options = list(command.choices(self.session, words[1:]))
        except Exception:  # completion must never break typing
            return
        for option in options:
            if option.startswith(current) and option != current:
                yield Completion(option, start_position=-len(current))
