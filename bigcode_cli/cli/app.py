"""The `bigcode` command: the Typer app, its commands, and the one place errors become exit codes.

Nothing imported here at module level may import torch, transformers or safetensors: `--help` and
shell completion must stay instant.
"""

from __future__ import annotations

import errno
import os
import sys

import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from bigcode_cli import __version__
from bigcode_cli.cli.commands import register_all
from bigcode_cli.terminal.console import debug_enabled, print_error
from bigcode_cli.errors import BigCodeError

app = typer.Typer(
    name="bigcode",
    help="Code completion, generation, classification and tagging with GPTBigCode models (SantaCoder, StarCoder).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"bigcode-cli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    no_color: bool = typer.Option(False, "--no-color", help="Never colour the output (same as NO_COLOR=1)."),
) -> None:
    """Code completion, generation, classification and tagging with GPTBigCode models."""
    if no_color:
        os.environ["BIGCODE_NO_COLOR"] = "1"
        os.environ["NO_COLOR"] = "1"  # rich (Typer's help) and prompt-toolkit (the REPL) read this one


register_all(app)


def _quiet_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def _closed_pipe_exit(exc: SystemExit) -> bool:
    """Whether this exit(1) is a library giving up on a closed stdout: rich's console (help text, tables)
    or Typer's EPIPE handler, which also wraps the streams (undone here)."""
    if exc.code != 1:
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    from_rich = tb is not None and tb.tb_frame.f_code.co_name == "on_broken_pipe"
    try:
        from typer._click.utils import PacifyFlushWrapper
    except ImportError:  # pragma: no cover
        from click.utils import PacifyFlushWrapper
    from_typer = isinstance(sys.stdout, PacifyFlushWrapper)
    if from_typer:
        sys.stdout = sys.stdout.wrapped
        if isinstance(sys.stderr, PacifyFlushWrapper):
            sys.stderr = sys.stderr.wrapped
    return from_rich or from_typer


def run(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 ok, 1 error, 2 usage, 130 interrupted."""
    try:
        result = app(args=args, prog_name="bigcode", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "bigcode"
        print_error(f"{exc.format_message()} (see '{command} --help')")
        return 2
    except click_exceptions.ClickException as exc:
        print_error(exc.format_message())
        return exc.exit_code
    except typer.Abort:
        return 130
    except BigCodeError as exc:
        if debug_enabled():
            raise
        print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except SystemExit as exc:
        if _closed_pipe_exit(exc):
            _quiet_stdout()
            return 0
        raise
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _quiet_stdout()
            return 0
        if debug_enabled():
            raise
        print_error(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")
        return 1
    except Exception as exc:  # a bug, not a user mistake: still one line unless debugging
        if debug_enabled():
            raise
        print_error(f"internal error: {type(exc).__name__}: {exc} (run with BIGCODE_DEBUG=1 for the traceback)")
        return 1


def main() -> None:
    """Console-script entry point."""
    code = run()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        _quiet_stdout()
    sys.exit(code)
