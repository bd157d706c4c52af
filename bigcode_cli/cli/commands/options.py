"""Options shared by every model command, as `Annotated` types, and their choices as str Enums
(made from bigcode_cli.choices, so Typer's checks, --help and shell completion follow it)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Annotated, Any, Optional

import typer

from bigcode_cli import choices
from bigcode_cli.tasks import TASKS


def choice_enum(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum with one member per choice, named and valued after it (`Attn.sdpa == "sdpa"`)."""
    return Enum(name, [(value, value) for value in values], type=str)  # type: ignore[return-value]


Engine = choice_enum("Engine", choices.ENGINES)
Attn = choice_enum("Attn", choices.ATTENTION_CHOICES)
Device = choice_enum("Device", choices.DEVICE_CHOICES)
Dtype = choice_enum("Dtype", choices.DTYPE_CHOICES)
FimOrder = choice_enum("FimOrder", choices.FIM_ORDERS)
Speculate = choice_enum("Speculate", choices.SPECULATE_CHOICES)


def model_names() -> list[str]:
    """Every model name usable without typing a path: bundled, cached (ours and Hugging Face's), aliases."""
    from bigcode_cli import store

    names: list[str] = list(store.bundled_models())
    try:
        names += [row["name"] for row in store.list_models()]
    except Exception:  # a broken cache must never break a TAB press
        pass
    names += list(store.ALIASES)
    return list(dict.fromkeys(names))


def complete_model(incomplete: str) -> list[str]:
    """Shell completion for --model: the known names starting with what was typed.

    A path (./, /, ~) gets nothing here, so the shell falls back to completing file names.
    """
    if incomplete.startswith((".", "/", "~")):
        return []
    return [name for name in model_names() if name.startswith(incomplete)]


def model_option(task: str) -> Any:
    """--model for a command that runs `task`: its help names the task's variable and bundled default."""
    row = TASKS[task]
    help_text = f"Model name, alias or checkpoint directory (default: ${row.env_var} or the bundled {row.default_model})."
    return Annotated[Optional[str], typer.Option("--model", "-m", help=help_text, show_default=False,
                                                 autocompletion=complete_model)]


ModelOpt = model_option("causal-lm")
EngineOpt = Annotated[Engine, typer.Option("--engine", help="native (fast, default) or transformers (the reference).")]
AttnOpt = Annotated[Attn, typer.Option("--attn", help="Attention backend; auto = flash if usable, else sdpa.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run; auto = cuda, then mps, then cpu.")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="Weight and compute dtype; auto keeps the checkpoint's.")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never touch the network (same as HF_HUB_OFFLINE=1).")]

MaxNewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="Most tokens to generate per sample.", min=1)]
TemperatureOpt = Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 = greedy.", min=0.0)]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Sample only from the k most likely tokens; 0 = off.", min=0)]
TopPOpt = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass in (0, 1]; 1 = off.")]
RepetitionPenaltyOpt = Annotated[float, typer.Option("--repetition-penalty", help="Above 1 discourages repeats; 1 = off.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", min=0, max=choices.MAX_SEED, show_default=False,
                                                help="Seed for reproducible sampling.")]
StopOpt = Annotated[Optional[list[str]], typer.Option("--stop", help="Stop when this text is generated (repeatable).", show_default=False)]
NumSamplesOpt = Annotated[int, typer.Option("--num-samples", "-n", help="Samples to generate, in one batch.", min=1)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object per sample instead of the text.")]
LinesOpt = Annotated[Optional[int], typer.Option("--lines", help="Keep at most this many lines (1 = single-line mode).", min=1, show_default=False)]
BlockOpt = Annotated[bool, typer.Option("--block/--no-block", help="Stop at the end of the current block.")]
FimOrderOpt = Annotated[FimOrder, typer.Option("--fim-order", help="Fill-in-the-middle prompt order: psm or spm.")]
SpeculateOpt = Annotated[Speculate, typer.Option(
    "--speculate", help="ngram: draft tokens from the prompt and the output so far and verify them in one step "
                        "(same output at temperature 0, same distribution when sampling); off: one token a step.")]
ServerOpt = Annotated[Optional[str], typer.Option("--server", help="Ask a running `bigcode serve` at this URL "
                                                  "instead of loading a model (default: $BIGCODE_SERVER).",
                                                  show_default=False)]
