"""`bigcode complete FILE`: complete the code at the cursor."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bigcode_cli.commands import options as o


def complete(
    file: Annotated[str, typer.Argument(help="The source file, or - for standard input.", show_default=False)],
    at: Annotated[Optional[str], typer.Option("--at", help="Cursor position LINE:COL (1-based); fill in the middle there.", show_default=False)] = None,
    in_place: Annotated[bool, typer.Option("--in-place", "-i", help="Write the completion into the file (atomically).")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Print the change as a unified diff instead.")] = False,
    json_out: o.JsonOpt = False,
    max_new_tokens: o.MaxNewTokensOpt = 128,
    temperature: o.TemperatureOpt = 0.2,
    top_k: o.TopKOpt = 0,
    top_p: o.TopPOpt = 0.95,
    repetition_penalty: o.RepetitionPenaltyOpt = 1.0,
    seed: o.SeedOpt = None,
    stop: o.StopOpt = None,
    num_samples: o.NumSamplesOpt = 1,
    lines: o.LinesOpt = None,
    block: o.BlockOpt = True,
    fim_order: o.FimOrderOpt = "psm",
    model: o.ModelOpt = None,
    engine: o.EngineOpt = o.Engine.native,
    attn: o.AttnOpt = o.Attn.auto,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    offline: o.OfflineOpt = False,
) -> None:
    """Complete the code at the cursor in FILE and stream the completion to stdout.

    A <FILL> marker in the file, or --at LINE:COL, fills in the middle with the rest of the file as
    the suffix; otherwise the file is continued at its end. Completions stop at the end of the
    current block (--no-block to run on) or after --lines lines.
    """
    from bigcode_cli.commands.generation_run import check_output_flags, make_settings, run_completion
    from bigcode_cli.errors import InputError
    from bigcode_cli.fim import parse_at, split_source
    from bigcode_cli.textfile import read_text

    check_output_flags(json_out=json_out, in_place=in_place, diff=diff, num_samples=num_samples, path=file)
    settings = make_settings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             repetition_penalty=repetition_penalty, seed=seed, stop=stop, num_samples=num_samples,
                             lines=lines, block=block, fim_order=fim_order)
    cursor_at = parse_at(at) if at is not None else None
    text = read_text(file)
    if not text.strip():
        name = "standard input" if file == "-" else file
        raise InputError(f"{name} is empty: there is no code to complete")
    cursor = split_source(text, cursor_at)
    run_completion(prefix=cursor.prefix, suffix=cursor.suffix, mode=cursor.mode, settings=settings, model=model,
                   engine=engine.value, attn=attn.value, device=device.value, dtype=dtype.value, offline=offline,
                   json_out=json_out, filename=file, in_place=in_place, diff=diff)
