"""The CLI commands, one module each; `register_all` adds them to the app.

Command modules import only typer, rich and the project's light modules at import time; anything
that needs torch is imported inside the command function.
"""

from __future__ import annotations

import typer


def register_all(app: typer.Typer) -> None:
    """Attach every command and command group to the app."""
    from bigcode_cli.cli.commands import registry

    for name, target in registry.COMMANDS:
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
