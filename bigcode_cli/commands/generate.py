"""`bigcode generate [PROMPT]` and `bigcode infill`: generation without a file."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bigcode_cli.commands import options as o


def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt; read from standard input when omitted or -.", show_default=False)] = None,
    json_out: o.JsonOpt = False,
    max_new_tokens: o.MaxNewTokensOpt = 256,
    temperature: o.TemperatureOpt = 0.2,
    top_k: o.TopKOpt = 0,
    top_p: o.TopPOpt = 0.95,
    repetition_penalty: o.RepetitionPenaltyOpt = 1.0,
    seed: o.SeedOpt = None,
    stop: o.StopOpt = None,
    num_samples: o.NumSamplesOpt = 1,
    lines: o.LinesOpt = None,
    block: Annotated[bool, typer.Option("--block/--no-block", help="Stop at the end of the current block.")] = False,
    model: o.ModelOpt = None,
    engine: o.EngineOpt = o.Engine.native,
    attn: o.AttnOpt = o.Attn.auto,
    device: o.DeviceOpt = o.Device.auto,
    dtype: o.DtypeOpt = o.Dtype.auto,
    offline: o.OfflineOpt = False,
) -> None:
    """Continue PROMPT (or standard input) left to right and stream the result to stdout."""
    from bigcode_cli.commands.generation_run import check_output_flags, make_settings, run_completion
    from bigcode_cli.textfile import read_text

    check_output_flags(json_out=json_out, num_samples=num_samples)
    settings = make_settings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             repetition_penalty=repetition_penalty, seed=seed, stop=stop, num_samples=num_samples,
                             lines=lines, block=block)
    text = read_text("-") if prompt in (None, "-") else prompt
    if not text.strip():
        from bigcode_cli.errors import InputError, UsageError

        where = "standard input is empty" if prompt in (None, "-") else "the prompt is empty"
        raise InputError(f"{where}: give a PROMPT argument or pipe the prompt in")
    run_completion(prefix=text, suffix="", mode="continue", settings=settings, model=model, engine=engine.value,
                   attn=attn.value, device=device.value, dtype=dtype.value, offline=offline, json_out=json_out)


def infill(
    prefix: Annotated[Optional[str], typer.Option("--prefix", help="Text before the gap.", show_default=False)] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Text after the gap.", show_default=False)] = None,
    prefix_file: Annotated[Optional[str], typer.Option("--prefix-file", help="Read the prefix from a file (- = stdin).", show_default=False)] = None,
    suffix_file: Annotated[Optional[str], typer.Option("--suffix-file", help="Read the suffix from a file (- = stdin).", show_default=False)] = None,
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
    """Fill in the middle between a prefix and a suffix and stream the middle to stdout."""
    from bigcode_cli.commands.generation_run import check_output_flags, make_settings, run_completion
    from bigcode_cli.errors import InputError, UsageError
    from bigcode_cli.textfile import read_text

    if prefix is not None and prefix_file is not None:
        raise UsageError("give the prefix once: --prefix or --prefix-file")
    if suffix is not None and suffix_file is not None:
        raise UsageError("give the suffix once: --suffix or --suffix-file")
    if prefix_file == "-" and suffix_file == "-":
        raise UsageError("only one of --prefix-file and --suffix-file can read standard input")
    if prefix is None and prefix_file is None and suffix is None and suffix_file is None:
        raise UsageError("nothing to fill: give --prefix/--prefix-file and/or --suffix/--suffix-file")
    check_output_flags(json_out=json_out, num_samples=num_samples)
    settings = make_settings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             repetition_penalty=repetition_penalty, seed=seed, stop=stop, num_samples=num_samples,
                             lines=lines, block=block, fim_order=fim_order)
    before = read_text(prefix_file) if prefix_file is not None else (prefix or "")
    after = read_text(suffix_file) if suffix_file is not None else (suffix or "")
    if not before.strip() and not after.strip():
        raise InputError("nothing to fill: the prefix and the suffix are both empty")
    run_completion(prefix=before, suffix=after, mode="fim", settings=settings, model=model, engine=engine.value,
                   attn=attn.value, device=device.value, dtype=dtype.value, offline=offline, json_out=json_out)
