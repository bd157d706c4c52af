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


def problem_settings(settings: CompletionSettings, problem: Problem, samples: int, first: int = 0) -> CompletionSettings:
    """The user's sampling settings with this problem's stops, line cap and sample count; no editor cleaning
    (block rules) beyond dropping a repeat of the suffix, which the FIM cleaning does. `first`: how many samples
    of the problem came before these (a seeded run gives each batch its own seed, so batches differ)."""
    sampling = settings.sampling
    if first and sampling.seed is not None:
        sampling = replace(sampling, seed=sampling.seed + first)
    return replace(settings, sampling=sampling, stops=[*settings.stops, *problem.stops], lines=problem.lines,
                   num_samples=samples, block=False)


def batches(samples: int) -> list[tuple[int, int]]:
    """(first, count) of each batch of at most MAX_SAMPLES rows that `samples` samples of one problem take."""
    from bigcode_cli.generation.completion import MAX_SAMPLES

    return [(first, min(MAX_SAMPLES, samples - first)) for first in range(0, samples, MAX_SAMPLES)]


def local_completer(runner: Runner, tokenizer: Tokenizer, settings: CompletionSettings) -> Generate:
    """generate(problem, n) for a loaded model."""
    from bigcode_cli.generation.completion import complete

    def generate(problem: Problem, samples: int) -> list[str]:
        texts: list[str] = []
        for first, count in batches(samples):  # n samples are rows of one decode, MAX_SAMPLES at a time
            result = complete(runner, tokenizer, problem.prompt, problem.suffix, problem.mode,
                              problem_settings(settings, problem, count, first))
            if result.generation.interrupted:
                raise KeyboardInterrupt
            texts += result.texts
        return [problem.trim(text) for text in texts]

    return generate
