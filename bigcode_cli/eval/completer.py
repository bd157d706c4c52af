"""Completions of a problem by a model loaded here, through the one generation service: the n samples of a
problem in one decode, stopped at the problem's stop sequences, FIM prompts for infill problems."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from bigcode_cli.eval.evaluation import Generate
from bigcode_cli.eval.problem import Problem

if TYPE_CHECKING:
    from bigcode_cli.generation.completion import CompletionSettings
    from bigcode_cli.model.runner import Runner
    from bigcode_cli.text.tokenizer import Tokenizer


def problem_settings(settings: CompletionSettings, problem: Problem, samples: int) -> CompletionSettings:
    """The user's sampling settings with this problem's stops, line cap and sample count; no editor cleaning
    (block rules) beyond dropping a repeat of the suffix, which the FIM cleaning does."""
    return replace(settings, stops=[*settings.stops, *problem.stops], lines=problem.lines, num_samples=samples,
                   block=False)


def local_completer(runner: Runner, tokenizer: Tokenizer, settings: CompletionSettings) -> Generate:
    """generate(problem, n) for a loaded model."""
    from bigcode_cli.generation.completion import complete

    def generate(problem: Problem, samples: int) -> list[str]:
        result = complete(runner, tokenizer, problem.prompt, problem.suffix, problem.mode,
                          problem_settings(settings, problem, samples))
        if result.generation.interrupted:
            raise KeyboardInterrupt
        return [problem.trim(text) for text in result.texts]

    return generate
