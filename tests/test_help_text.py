"""What `--help` shows: every option's own words, no value placeholder on flags, each command's model
variable, every `models` command; and a bare `bigcode` that shows the help without an empty error."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command

from bigcode_cli.cli import app as cli
from bigcode_cli.tasks import TASKS

WIDE = "2000"  # no option's help wraps, so each reads on one line as written


def _leaves(command, path=()):
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield path, command
    for name, sub in (subcommands or {}).items():
        yield from _leaves(sub, (*path, name))


COMMANDS = list(_leaves(get_command(cli.app)))


def _help(capsys, monkeypatch, *path: str) -> str:
    monkeypatch.setenv("COLUMNS", WIDE)
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli.run([*path, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_shows_its_own_help_and_flags_take_no_value(capsys, monkeypatch, path, command):
    shown = _help(capsys, monkeypatch, *path)
    assert "<bool>" not in shown
    for param in command.params:
        if param.help:  # as written: no markdown turned part of it into a quote, a list or emphasis
            assert " ".join(param.help.replace("`", "").split()) in shown, (path, param.name)  # `code` shows plain


def test_root_help_flags_take_no_value(capsys, monkeypatch):
    shown = _help(capsys, monkeypatch)
    assert "--no-color Never colour" in shown and "--help -h Show this message" in shown and "<bool>" not in shown


@pytest.mark.parametrize("command, task", [("classify", "sequence-classification"), ("tag", "token-classification"),
                                           ("complete", "causal-lm")])
def test_model_help_names_the_commands_own_variable_and_default(capsys, monkeypatch, command, task):
    row = TASKS[task]
    assert f"(default: ${row.env_var} or the bundled {row.default_model})" in _help(capsys, monkeypatch, command)


def test_models_help_names_every_models_command(capsys, monkeypatch):
    group = get_command(cli.app).commands["models"]
    assert "quantize" in group.commands
    line = re.search(r"Manage the local checkpoint cache: ([a-z, ]+)\.", _help(capsys, monkeypatch, "models"))
    assert line is not None and line.group(1).split(", ") == list(group.commands)


def test_bare_bigcode_shows_the_help_and_no_empty_error(capsys):
    code = cli.run([])
    out, err = capsys.readouterr()
    assert code == 2 and "Usage: bigcode" in out and err == ""
