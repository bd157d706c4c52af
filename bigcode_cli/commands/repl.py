"""`bigcode repl`: the interactive session."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated

import typer

from bigcode_cli.commands import options as o



class Mode(str, Enum):
    complete = "complete"
    infill = "infill"
    classify = "classify"
    tag = "tag"


ModeOpt = Annotated[Mode, typer.Option("--mode", help="Starting mode (classify and tag need models with those heads).")]
LangOpt = Annotated[str, typer.Option("--lang", help="Language to highlight input and output as (a pygments name).")]


def repl(
    mode: ModeOpt = Mode.complete,
    lang: LangOpt = "python",
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
    """Complete, infill, classify and tag code interactively, with the model loaded once.

    Type code and press Enter on an empty line (or Esc-Enter) to run it; /help lists the slash
    commands (/model, /attn, /set temperature 0.2, /mode infill, /save FILE, /quit ...). The options
    are the starting settings. With standard input not a terminal, blank-line separated turns are
    read from it and the results printed, so a session can be scripted.
    """
    from bigcode_cli.commands.generation_run import make_settings
    from bigcode_cli.repl.loop import interactive, scripted
    from bigcode_cli.repl.session import ModelOptions, Session

    if sys.stdin is None:  # started with stdin closed (`<&-`): nothing to read turns from
        from bigcode_cli.errors import InputError

        raise InputError("cannot read standard input (it is closed): run `bigcode repl` in a terminal or pipe turns in")
    settings = make_settings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             repetition_penalty=repetition_penalty, seed=seed, stop=stop, num_samples=num_samples,
                             lines=lines, block=block, fim_order=fim_order)
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    options = ModelOptions(engine=engine.value, attn=attn.value, device=device.value, dtype=dtype.value,
                           offline=offline)
    session = Session(settings, model=model, options=options, mode=mode.value, language=lang, interactive=terminal)
    session.load(session.task, model)
    code = interactive(session) if terminal else scripted(session, sys.stdin)
    if code:
        raise typer.Exit(code)
