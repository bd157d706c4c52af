"""`bigcode eval --server URL`: completions of each problem from a running `bigcode serve` or any server with
the OpenAI completions API (`suffix` for the infill tasks); no model is loaded here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bigcode_cli.eval.evaluation import Generate
    from bigcode_cli.eval.problem import Problem
    from bigcode_cli.generation.completion import CompletionSettings

# stop strings in one request: the OpenAI API takes at most 4 (the rest are cut here by Problem.trim); samples
# go MAX_SAMPLES to a request (eval.completer.batches), as many as `bigcode serve` takes
STOPS_PER_REQUEST = 4


def request(problem: Problem, settings: CompletionSettings, samples: int, first: int = 0) -> dict[str, Any]:
    """The /v1/completions body for `samples` completions of a problem (`first`: how many came before)."""
    from dataclasses import replace

    from bigcode_cli.cli.commands.server_client import request_body
    from bigcode_cli.eval.completer import problem_settings

    asked = problem_settings(settings, problem, samples, first)
    body = request_body(problem.prompt, problem.suffix, problem.mode,
                        replace(asked, stops=asked.stops[:STOPS_PER_REQUEST]), stream=False)
    body["bigcode"].pop("details", None)
    return body


def server_completer(url: str, settings: CompletionSettings) -> Generate:
    """generate(problem, n) through the server at `url`."""
    from bigcode_cli.cli.commands.server_client import completion_texts
    from bigcode_cli.eval.completer import batches

    def generate(problem: Problem, samples: int) -> list[str]:
        texts: list[str] = []
        for first, count in batches(samples):
            texts += completion_texts(url, request(problem, settings, count, first))
        return [problem.trim(text) for text in texts]

    return generate
