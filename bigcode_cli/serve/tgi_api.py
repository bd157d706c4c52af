"""Hugging Face text-generation-inference's `POST /generate`, as llm-ls / llm.nvim / llm-vscode post it.

Those plugins build the fill-in-the-middle prompt themselves (`<fim_prefix>...<fim_suffix>...<fim_middle>`)
and send it as `inputs`: it is read as a prompt whose control-token spellings are tokens (like
`/completion`). Sampling follows TGI: greedy unless `do_sample` or a sampler setting (temperature other
than 1, top_k, top_p below 1) asks for sampling. The answer is TGI's documented `/generate` shape, one
object `{"generated_text": ...}`; with `return_full_text` the inputs come first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bigcode_cli.serve.handling import (
    Running,
    ServeConfig,
    check_max_tokens,
    completion_settings,
    guarded,
    read_request,
)
from bigcode_cli.serve.schema import TgiParameters, TgiRequest
from bigcode_cli.serve.worker import Job

if TYPE_CHECKING:
    from bigcode_cli.serve.worker import EngineWorker

DEFAULT_MAX_NEW_TOKENS = 100  # TGI's default for `max_new_tokens`


def _samples(p: TgiParameters) -> bool:
    """Whether TGI would sample: asked to, or a sampler setting that changes the distribution is given."""
    return p.do_sample or (p.temperature is not None and p.temperature != 1.0) or p.top_k is not None or (
        p.top_p is not None and p.top_p < 1.0)


def generate_job(body: TgiRequest, config: ServeConfig, emit: Any) -> Job:
    """The worker job of a /generate request."""
    p = body.parameters
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS if p.max_new_tokens is None else p.max_new_tokens
    check_max_tokens(max_new_tokens, config.context_length, "parameters.max_new_tokens")
    sampling = _samples(p)
    settings = completion_settings(max_new_tokens=max_new_tokens, fim=False,
                                   temperature=(p.temperature or 1.0) if sampling else 0.0,
                                   top_k=p.top_k or 0, top_p=p.top_p or 1.0,
                                   repetition_penalty=p.repetition_penalty, seed=p.seed, stops=p.stop or [])
    return Job("text", settings, emit, prefix=body.inputs, cache_salt=p.cache_salt or "", speculate=p.speculate)


def routes(worker: EngineWorker, config: ServeConfig) -> list[Route]:
    """The TGI route."""

    async def generate(request: Request) -> Response:
        body = await read_request(request, TgiRequest, config)
        result = await Running(worker, request, lambda emit: generate_job(body, config, emit)).result()
        if result is None:
            return Response(status_code=499)
        text = result.completion.texts[0]
        return JSONResponse({"generated_text": body.inputs + text if body.parameters.return_full_text else text})

    return [Route("/generate", guarded(generate), methods=["POST"])]
