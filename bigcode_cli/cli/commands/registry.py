"""The list of commands in the order `bigcode --help` shows them."""

from __future__ import annotations

from bigcode_cli.cli.commands.bench import bench
from bigcode_cli.cli.commands.classify import classify
from bigcode_cli.cli.commands.complete import complete
from bigcode_cli.cli.commands.eval import eval_command
from bigcode_cli.cli.commands.finetune import finetune_app
from bigcode_cli.cli.commands.generate import generate, infill
from bigcode_cli.cli.commands.models import models_app
from bigcode_cli.cli.commands.repl import repl
from bigcode_cli.cli.commands.serve import serve
from bigcode_cli.cli.commands.tag import tag

COMMANDS: list = [
    ("complete", complete),
    ("generate", generate),
    ("infill", infill),
    ("classify", classify),
    ("tag", tag),
    ("finetune", finetune_app),
    ("repl", repl),
    ("serve", serve),
    ("models", models_app),
    ("bench", bench),
    ("eval", eval_command),
]
