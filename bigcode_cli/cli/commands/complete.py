"""`bigcode complete FILE`: complete the code at the cursor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bigcode_cli.cli.commands import options as o
from bigcode_cli.cli.commands.option_groups import MODEL, generation, with_options
from bigcode_cli.terminal.model_choice import ModelChoice

if TYPE_CHECKING:
    from bigcode_cli.generation.completion import CompletionSettings


@with_options
def complete(
    file: Annotated[str, typer.Argument(help="The source file, or - for standard input.", show_default=False)],
    at: Annotated[Optional[str], typer.Option("--at", help="Cursor position LINE:COL (1-based); fill in the middle there.", show_default=False)] = None,
    in_place: Annotated[bool, typer.Option("--in-place", "-i", help="Write the completion into the file (atomically).")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Print the change as a unified diff instead.")] = False,
    json_out: o.JsonOpt = False,
    server: o.ServerOpt = None,
    settings: CompletionSettings = generation(),
    choice: ModelChoice = MODEL,
) -> None:
    """Complete the code at the cursor in FILE and stream the completion to stdout.

    A `<FILL>` marker in the file, or --at LINE:COL, fills in the middle with the rest of the file as
    the suffix; otherwise the file is continued at its end. Completions stop at the end of the
    current block (--no-block to run on) or after --lines lines.
    """
    from bigcode_cli.cli.commands.completer import CompletionRequest
    from bigcode_cli.cli.commands.generation_run import check_output_flags, completer_for, run_completion
    from bigcode_cli.errors import InputError
    from bigcode_cli.generation.fim import parse_at, split_source
    from bigcode_cli.text.textfile import in_place_target, read_text

    check_output_flags(json_out=json_out, in_place=in_place, diff=diff, num_samples=settings.num_samples, path=file)
    cursor_at = parse_at(at) if at is not None else None
    text = read_text(file)
    if not text.strip():
        name = "standard input" if file == "-" else file
        raise InputError(f"{name} is empty: there is no code to complete")
    if in_place:
        in_place_target(file)  # a file that cannot be edited in place is refused before the model is loaded
    cursor = split_source(text, cursor_at)
    request = CompletionRequest(cursor.prefix, cursor.suffix, cursor.mode, settings)
    run_completion(completer_for(server, choice), request, json_out=json_out, filename=file, in_place=in_place,
                   diff=diff)
