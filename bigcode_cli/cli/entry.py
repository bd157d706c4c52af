"""The console script: Ctrl-C while the CLI is still being imported also ends in exit code 130, and the garbage
collector waits for the start-up's imports (bigcode_cli.collector)."""

from __future__ import annotations

import sys


def main() -> None:
    """Import the CLI, then run it; an interrupt at any point exits 130 without a traceback."""
    from bigcode_cli import collector, interrupts

    interrupts.install()
    collector.pause_for_startup()  # until the model's libraries are imported (bigcode_cli.collector)
    try:
        from bigcode_cli.cli.app import main as cli_main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    cli_main()
