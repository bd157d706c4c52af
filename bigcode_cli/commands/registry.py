"""The list of commands in the order `bigcode --help` shows them."""

from __future__ import annotations

from bigcode_cli.commands.models import models_app

COMMANDS: list = [
    ("models", models_app),
]
