"""`bigcode generate [PROMPT]` and `bigcode infill`: generation without a file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bigcode_cli.cli.commands import options as o
from bigcode_cli.cli.commands.option_groups import MODEL, generation, with_options
from bigcode_cli.terminal.model_choice import ModelChoice

if TYPE_CHECKING:
    from bigcode_cli.generation.completion import CompletionSettings


@with_options
def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt; read from standard input when omitted or -.", show_default=False)] = None,
    json_out: o.JsonOpt = False,
    server: o.ServerOpt = None,
    settings: CompletionSettings = generation(max_new_tokens=256, block=False, fim=False),
    choice: ModelChoice = MODEL,
) -> None:
    """Continue PROMPT (or standard input) left to right and stream the result to stdout."""
    from bigcode_cli.cli.commands.completer import CompletionRequest
    from bigcode_cli.cli.commands.generation_run import check_output_flags, completer_for, run_completion
    from bigcode_cli.errors import InputError
    from bigcode_cli.text.textfile import read_text

    check_output_flags(json_out=json_out, num_samples=settings.num_samples)
    text = read_text("-") if prompt in (None, "-") else prompt
    if not text.strip():
        where = "standard input is empty" if prompt in (None, "-") else "the prompt is empty"
        raise InputError(f"{where}: give a PROMPT argument or pipe the prompt in")
    request = CompletionRequest(text, "", "continue", settings)
    run_completion(completer_for(server, choice), request, json_out=json_out)


@with_options
def infill(
    prefix: Annotated[Optional[str], typer.Option("--prefix", help="Text before the gap.", show_default=False)] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Text after the gap.", show_default=False)] = None,
    prefix_file: Annotated[Optional[str], typer.Option("--prefix-file", help="Read the prefix from a file (- = stdin).", show_default=False)] = None,
    suffix_file: Annotated[Optional[str], typer.Option("--suffix-file", help="Read the suffix from a file (- = stdin).", show_default=False)] = None,
    json_out: o.JsonOpt = False,
    server: o.ServerOpt = None,
    settings: CompletionSettings = generation(),
    choice: ModelChoice = MODEL,
) -> None:
    """Fill in the middle between a prefix and a suffix and stream the middle to stdout."""
    from bigcode_cli.cli.commands.completer import CompletionRequest
    from bigcode_cli.cli.commands.generation_run import check_output_flags, completer_for, run_completion
    from bigcode_cli.errors import InputError, UsageError
    from bigcode_cli.text.textfile import read_text

    if prefix is not None and prefix_file is not None:
        raise UsageError("give the prefix once: --prefix or --prefix-file")
    if suffix is not None and suffix_file is not None:
        raise UsageError("give the suffix once: --suffix or --suffix-file")
    if prefix_file == "-" and suffix_file == "-":
        raise UsageError("only one of --prefix-file and --suffix-file can read standard input")
    if prefix is None and prefix_file is None and suffix is None and suffix_file is None:
        raise UsageError("nothing to fill: give --prefix/--prefix-file and/or --suffix/--suffix-file")
    check_output_flags(json_out=json_out, num_samples=settings.num_samples)
    before = read_text(prefix_file) if prefix_file is not None else (prefix or "")
    after = read_text(suffix_file) if suffix_file is not None else (suffix or "")
    if not before.strip() and not after.strip():
        raise InputError("nothing to fill: the prefix and the suffix are both empty")
    request = CompletionRequest(before, after, "fim", settings)
    run_completion(completer_for(server, choice), request, json_out=json_out)
