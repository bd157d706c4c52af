"""The list of commands in the order `bigcode --help` shows them."""

from __future__ import annotations

from bigcode_cli.commands.complete import complete
from bigcode_cli.commands.generate import generate, infill
from bigcode_cli.commands.models import models_app

COMMANDS: list = [
    ("complete", complete),
    ("generate", generate),
    ("infill", infill),
    ("models", models_app),
]
