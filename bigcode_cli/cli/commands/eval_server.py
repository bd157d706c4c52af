"""`bigcode eval --server URL`: completions of each problem from a running `bigcode serve` or any server with
the OpenAI completions API (`suffix` for the infill tasks); no model is loaded here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bigcode_cli.eval.evaluation import Generate
    from bigcode_cli.eval.problem import Problem
    from bigcode_cli.generation.completion import CompletionSettings

# samples asked for in one request: `bigcode serve` takes at most 8 (serve.schema.MAX_SAMPLES), and the
# OpenAI API at most 4 stop strings (the rest are cut here by Problem.trim)
SAMPLES_PER_REQUEST = 8
STOPS_PER_REQUEST = 4


def request(problem: Problem, settings: CompletionSettings, samples: int) -> dict[str, Any]:
    """The /v1/completions body for `samples` completions of a problem."""
    from dataclasses import replace

    from bigcode_cli.cli.commands.server_client import request_body
    from bigcode_cli.eval.completer import problem_settings

    asked = problem_settings(settings, problem, samples)
    body = request_body(problem.prompt, problem.suffix, problem.mode,
                        replace(asked, stops=asked.stops[:STOPS_PER_REQUEST]), stream=False)
    body["bigcode"].pop("details", None)
    return body


def server_completer(url: str, settings: CompletionSettings) -> Generate:
    """generate(problem, n) through the server at `url`."""
    from bigcode_cli.cli.commands.server_client import completion_texts

    def generate(problem: Problem, samples: int) -> list[str]:
        texts: list[str] = []
        while len(texts) < samples:
            asked = min(SAMPLES_PER_REQUEST, samples - len(texts))
            texts += completion_texts(url, request(problem, settings, asked))
        return [problem.trim(text) for text in texts]

    return generate
