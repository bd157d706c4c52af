"""The `bigcode` command: the Typer app, its commands, and the one place errors become exit codes.

Nothing imported here at module level may import torch, transformers or safetensors: `--help` and
shell completion must stay instant.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

try:  # newer typer carries its own copy of click, whose errors derive from this public class
    from typer import TyperException as CommandLineError
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import ClickException as CommandLineError

from bigcode_cli import __version__
from bigcode_cli.cli.commands import register_all
from bigcode_cli.errors import BigCodeError
from bigcode_cli.terminal.closed_stdout import StdoutClosed, guarded_stdout
from bigcode_cli.terminal.console import debug_enabled, print_error, set_colour

app = typer.Typer(
    name="bigcode",
    help="Code completion, generation, classification and tagging with GPTBigCode models (SantaCoder, StarCoder).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


NO_COLOR = "--no-color"


def _version(value: bool) -> None:
    if value:
        print(f"bigcode-cli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    no_color: bool = typer.Option(False, NO_COLOR, help="Never colour the output (same as NO_COLOR=1); "
                                                        "works after the command too."),
) -> None:
    """Code completion, generation, classification and tagging with GPTBigCode models."""
    if no_color:
        _no_colour_anywhere()


_typer_colours: list = []  # typer.rich_utils.COLOR_SYSTEM as it was before --no-color changed it


def _no_colour_anywhere() -> None:
    """--no-color: our consoles (and the REPL, through them) and Typer's help console stop colouring."""
    from typer import rich_utils

    set_colour(False)
    if not _typer_colours:
        _typer_colours.append(rich_utils.COLOR_SYSTEM)
    rich_utils.COLOR_SYSTEM = None  # typer.rich_utils' public setting ("Set to None to disable colors")


def _colour_back() -> None:
    """Undo --no-color: it lasts one run (tests run many in one process)."""
    set_colour(True)
    if _typer_colours:
        from typer import rich_utils

        rich_utils.COLOR_SYSTEM = _typer_colours.pop()


register_all(app)


def _command() -> Any:
    """The app as a click command whose flags show no value placeholder in --help (typer's rich help
    labels every flag, --help included, `<bool>`, which reads as if it took a value)."""
    from typer.main import get_command

    command = get_command(app)
    _hide_flag_types(command)
    return command


def _hide_flag_types(command: Any, parent: typer.Context | None = None) -> None:
    # a context like the one the command will run in (its settings, its parent's): the help option it makes is kept
    context = typer.Context(command, parent=parent, **command.context_settings)
    for param in command.get_params(context):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in (getattr(command, "commands", None) or {}).values():
        _hide_flag_types(sub, context)


def _without_no_color(args: list[str]) -> list[str]:
    """The command line without --no-color wherever it stands before `--` (a global option, accepted after
    the command too); turns colour off when it was there."""
    end = args.index("--") if "--" in args else len(args)
    kept = [arg for arg in args[:end] if arg != NO_COLOR] + args[end:]
    if len(kept) != len(args):
        _no_colour_anywhere()
    return kept


def _run(args: list[str] | None) -> int:
    try:
        args = _without_no_color(sys.argv[1:] if args is None else list(args))
        result = _command()(args=args, prog_name="bigcode", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except CommandLineError as exc:
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `bigcode` or `bigcode models` alone: the help said it all
            return exc.exit_code
        if exc.exit_code == 2:  # a usage error: say where to look
            command = context.command_path if context is not None else "bigcode"
            print_error(f"{exc.format_message()} (see '{command} --help')")
        else:
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
    except OSError as exc:
        if debug_enabled():
            raise
        print_error(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")
        return 1
    except Exception as exc:  # a bug, not a user mistake: still one line unless debugging
        if debug_enabled():
            raise
        print_error(f"internal error: {type(exc).__name__}: {exc} (run with BIGCODE_DEBUG=1 for the traceback)")
        return 1


def run(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 ok, 1 error, 2 usage, 130 interrupted; a closed stdout is 0."""
    try:
        with guarded_stdout():
            return _run(args)
    except StdoutClosed:
        return 0
    finally:
        _colour_back()


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
