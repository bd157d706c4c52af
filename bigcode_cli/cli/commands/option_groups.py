"""Options several commands share, declared once and handed to each command as one object.

A command names the object it wants and the group that builds it as a default, and `@with_options`
does the rest:

    @with_options
    def complete(file: ..., settings: CompletionSettings = generation(), choice: ModelChoice = MODEL) -> None:

Typer sees the group's options in the parameter's place (and shows and parses them like any other);
when the command runs, the parameter holds what the group built from them: a `ModelChoice`
(bigcode_cli.terminal.model_choice), validated `CompletionSettings`, a classify/tag `PipelineIO`...
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from bigcode_cli.choices import SPECULATE_DEFAULT
from bigcode_cli.cli.commands import options as o
from bigcode_cli.terminal.model_choice import ModelChoice

if TYPE_CHECKING:
    from bigcode_cli.generation.completion import CompletionSettings


class OptionGroup(NamedTuple):
    """Options (as signature parameters) and how to build one value from them."""

    parameters: tuple[inspect.Parameter, ...]
    build: Callable[..., Any]


def option(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """One option of a group: its parameter name, its Annotated type and its default (none: required)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def with_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Replace each parameter whose default is an OptionGroup by the group's options; when the command runs,
    that parameter receives the value the group builds from them."""
    signature = inspect.signature(command)
    groups = {name: p.default for name, p in signature.parameters.items() if isinstance(p.default, OptionGroup)}
    # Typer reads the other parameters' annotations, evaluated (the module may use `from __future__ import
    # annotations`); the groups' own annotations name the built types and may be imported for type checking only
    own = [p.replace(annotation=_evaluated(p.annotation, command)) for name, p in signature.parameters.items()
           if name not in groups]
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


def _evaluated(annotation: Any, command: Callable[..., Any]) -> Any:
    return eval(annotation, command.__globals__) if isinstance(annotation, str) else annotation  # noqa: S307


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
        option("speculate", o.SpeculateOpt, o.Speculate(SPECULATE_DEFAULT)),
    ]
    if fim:
        parameters.append(option("fim_order", o.FimOrderOpt, o.FimOrder.psm))

    def build(**values: Any) -> CompletionSettings:
        from bigcode_cli.cli.commands.generation_run import make_settings

        return make_settings(**values)

    return OptionGroup(tuple(parameters), build)
