"""Options several commands share, declared once and handed to each command as one object.

`@with_options(model=MODEL, settings=generation(...))` adds a group's options to the command's
signature (so Typer shows and parses them like any other) and replaces them, when the command runs,
by the object the group builds: a `ModelChoice` (bigcode_cli.terminal.model_choice), or validated
`CompletionSettings`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple

from bigcode_cli.cli.commands import options as o
from bigcode_cli.terminal.model_choice import ModelChoice


class OptionGroup(NamedTuple):
    """Options (as signature parameters) and how to build one value from them."""

    parameters: tuple[inspect.Parameter, ...]
    build: Callable[..., Any]


def option(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """One option of a group: its parameter name, its Annotated type and its default (none: required)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def with_options(**groups: OptionGroup) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add each group's options to a command; the command receives the built value under the group's name."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name not in groups]
        added = [p for group in groups.values() for p in group.parameters]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            for name, group in groups.items():
                kwargs[name] = group.build(**{p.name: kwargs.pop(p.name) for p in group.parameters})
            return command(**kwargs)

        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own + added]
        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def _model_choice(*, model, engine, attn, device, dtype, offline) -> ModelChoice:
    return ModelChoice(model, engine.value, attn.value, device.value, dtype.value, offline)


def model_group(task: str) -> OptionGroup:
    """--model (its help naming `task`'s default), --engine, --attn, --device, --dtype, --offline; built into a ModelChoice."""
    return OptionGroup(
        (
            option("model", o.model_option(task), None),
            option("engine", o.EngineOpt, o.Engine.native),
            option("attn", o.AttnOpt, o.Attn.auto),
            option("device", o.DeviceOpt, o.Device.auto),
            option("dtype", o.DtypeOpt, o.Dtype.auto),
            option("offline", o.OfflineOpt, False),
        ),
        _model_choice,
    )


MODEL = model_group("causal-lm")


def generation(*, max_new_tokens: int = 128, block: bool = True, fim: bool = True) -> OptionGroup:
    """The sampling and stopping options, with this command's defaults; built into CompletionSettings."""
    parameters = [
        option("max_new_tokens", o.MaxNewTokensOpt, max_new_tokens),
        option("temperature", o.TemperatureOpt, 0.2),
        option("top_k", o.TopKOpt, 0),
        option("top_p", o.TopPOpt, 0.95),
        option("repetition_penalty", o.RepetitionPenaltyOpt, 1.0),
        option("seed", o.SeedOpt, None),
        option("stop", o.StopOpt, None),
        option("num_samples", o.NumSamplesOpt, 1),
        option("lines", o.LinesOpt, None),
        option("block", o.BlockOpt, block),
    ]
    if fim:
        parameters.append(option("fim_order", o.FimOrderOpt, o.FimOrder.psm))

    def build(**values: Any) -> Any:
        from bigcode_cli.cli.commands.generation_run import make_settings

        return make_settings(**values)

    return OptionGroup(tuple(parameters), build)
