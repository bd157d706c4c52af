"""`bigcode bench`: load time, prefill and decode speed of engines and attention backends, side by side."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bigcode_cli.choices import ATTENTION_CHOICES, ENGINES
from bigcode_cli.cli.commands.options import Attn, Device, DeviceOpt, Dtype, DtypeOpt, Engine, ModelOpt, OfflineOpt
from bigcode_cli.cli.commands.pipeline import json_line
from bigcode_cli.terminal.console import print_notice, stderr_console, stdout_console

if TYPE_CHECKING:
    from bigcode_cli.bench import BenchReport, ComboResult

EnginesOpt = Annotated[str, typer.Option("--engine", help=f"Engines to compare, comma-separated: {', '.join(ENGINES)}.")]
AttnsOpt = Annotated[str, typer.Option(
    "--attn", help=f"Attention backends, comma-separated: {', '.join(ATTENTION_CHOICES)}.")]
PromptTokensOpt = Annotated[int, typer.Option("--prompt-tokens", min=1,
                                              help="Prompt length (code), cut to fit the context with the new tokens.")]
NewTokensOpt = Annotated[int, typer.Option("--new-tokens", min=1, help="Tokens generated per decode run.")]
RoundsOpt = Annotated[int, typer.Option("--rounds", min=1, help="Interleaved rounds; medians are reported.")]
BenchJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON Lines, one object per combination.")]


def _choices(value: str, allowed: type, flag: str) -> list[str]:
    """A comma-separated list of choices, in order, without repeats."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    known = [member.value for member in allowed]
    for name in names:
        if name not in known:
            raise typer.BadParameter(f"{name!r} is not one of {', '.join(known)}", param_hint=f"'{flag}'")
    if not names:
        raise typer.BadParameter(f"give at least one of {', '.join(known)}", param_hint=f"'{flag}'")
    return list(dict.fromkeys(names))


def bench(
    model: ModelOpt = None,
    engine: EnginesOpt = "native,transformers",
    attn: AttnsOpt = "auto",
    device: DeviceOpt = Device.auto,
    dtype: DtypeOpt = Dtype.auto,
    offline: OfflineOpt = False,
    prompt_tokens: PromptTokensOpt = 128,
    new_tokens: NewTokensOpt = 64,
    rounds: RoundsOpt = 3,
    json_out: BenchJsonOpt = False,
) -> None:
    """Measure load time, prefill and decode speed of a model for each engine and attention backend.

    Every combination of --engine and --attn is loaded, timed on a prompt of real code and freed,
    once per round, the combinations interleaved; the medians are reported. Decode rate is
    (N-1)/(t(N)-t(1)) over greedy runs of N = --new-tokens (EOS ignored); ratio is the decode
    rate over the first row's; a `-` is a number not measured (timing noise larger than the decode
    steps), with a note on stderr saying why. A combination this machine cannot run (flash without
    CUDA) is skipped with a note. A table on a terminal, JSON Lines (one object per combination) in a
    pipe or with --json.
    """
    from bigcode_cli.bench import Combo, run_bench

    engines = _choices(engine, Engine, "--engine")
    attns = _choices(attn, Attn, "--attn")
    combos = [Combo(e, a) for e in engines for a in attns]
    console = stderr_console()
    progress = console.status("loading", spinner="dots") if console.is_terminal else contextlib.nullcontext()
    with progress as status:
        def on_task(round_index: int, combo: Combo) -> None:
            if status is not None:
                status.update(f"round {round_index + 1}/{rounds}: {combo.label}")

        report = run_bench(model, combos, device=device.value, dtype=dtype.value, offline=offline,
                           prompt_tokens=prompt_tokens, new_tokens=new_tokens, rounds=rounds, on_task=on_task)
    for note in report.notes:
        print_notice(note)
    for result in report.results:
        if result.skipped:
            print_notice(f"skipped {result.combo.label}: {result.skipped}")
    if json_out or not getattr(sys.stdout, "isatty", lambda: False)():
        sys.stdout.write("".join(json_line(_record(report, r)) for r in report.results))
        sys.stdout.flush()
    else:
        _print_table(report)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _record(report: BenchReport, result: ComboResult) -> dict[str, Any]:
    return {
        "model": report.model, "engine": result.combo.engine, "attn": result.combo.attn, "backend": result.backend,
        "device": result.device, "dtype": result.dtype, "decode_by": result.decode_by,
        "decode_reason": result.decode_reason,
        "prompt_tokens": report.prompt_tokens,
        "new_tokens": report.new_tokens, "rounds": report.rounds, "load_s": _round(result.load_s, 4),
        "prefill_ms": _round(None if result.prefill_s is None else result.prefill_s * 1000, 3),
        "prefill_tok_s": _round(result.prefill_tok_s, 1), "decode_tok_s": _round(result.decode_tok_s, 1),
        "ratio": _round(result.ratio, 3), "skipped": result.skipped,
    }


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_table(report: BenchReport) -> None:
    from rich.table import Table

    measured = [r for r in report.results if not r.skipped]
    title = (f"{report.model}: {measured[0].device}, {measured[0].dtype}, prompt {report.prompt_tokens}, "
             f"{report.new_tokens} new tokens, median of {report.rounds}")
    native_steps = {r.decode_summary for r in measured if r.combo.engine == "native" and r.decode_summary}
    if native_steps:
        title += "; native decode steps: " + ", ".join(sorted(native_steps))
    table = Table("ENGINE", "ATTN", "LOAD S", "PREFILL MS", "PREFILL TOK/S", "DECODE TOK/S", "RATIO",
                  box=None, header_style="bold")
    for column in table.columns:
        column.no_wrap = True
    for column in table.columns[2:]:
        column.justify = "right"
    for r in report.results:
        attn = r.combo.attn if r.backend in (None, r.combo.attn) else f"{r.combo.attn} ({r.backend})"
        if r.skipped:
            table.add_row(r.combo.engine, attn, "skipped", "", "", "", "")
            continue
        table.add_row(r.combo.engine, attn, _cell(r.load_s, ".2f"),
                      _cell(None if r.prefill_s is None else r.prefill_s * 1000, ".1f"),
                      _cell(r.prefill_tok_s, ".0f"), _cell(r.decode_tok_s, ".1f"), _cell(r.ratio, ".2f"))
    console = stdout_console()
    console.print(title, markup=False, soft_wrap=True)
    console.print(table, markup=False)
