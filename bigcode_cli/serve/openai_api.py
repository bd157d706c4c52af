"""OpenAI-compatible `POST /v1/completions` (with `suffix` for fill-in-the-middle) and `GET /v1/models`."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bigcode_cli.serve.handling import (
    ApiError,
    EventStream,
    Running,
    ServeConfig,
    check_max_tokens,
    completion_settings,
    guarded,
    read_request,
)
from bigcode_cli.serve.schema import BigcodeOptions, CompletionRequest
from bigcode_cli.serve.timings import timings
from bigcode_cli.serve.worker import Job

if TYPE_CHECKING:
    from bigcode_cli.serve.worker import EngineWorker, JobResult

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def finish_reason(result: JobResult, index: int) -> str:
    """OpenAI's finish_reason of one sample: stop (EOS, a stop string, the end of the block) or length."""
    if result.completion.generation.interrupted:
        return "length"
    return FINISH_REASONS[result.completion.generation.samples[index].stop_reason]


def _job(body: CompletionRequest, config: ServeConfig, emit: Any) -> Job:
    prompt = body.prompt
    ids: list[int] = []
    if isinstance(prompt, list):
        if prompt and isinstance(prompt[0], int):
            ids, prompt = list(prompt), ""  # type: ignore[arg-type]
        elif len(prompt) > 1:
            raise ApiError(400, "prompt: send one prompt per request (use n for several completions)", param="prompt")
        else:
            prompt = prompt[0] if prompt else ""
    max_tokens = 16 if body.max_tokens is None else body.max_tokens
    check_max_tokens(max_tokens, config.context_length, "max_tokens")
    options = body.bigcode or BigcodeOptions()
    fim = body.suffix is not None if options.mode is None else options.mode == "fim"
    if ids and (fim or options.mode is not None):
        raise ApiError(400, "prompt: token ids cannot be combined with suffix or bigcode.mode", param="prompt")
    settings = completion_settings(max_new_tokens=max_tokens, fim=fim, temperature=body.temperature,
                                   top_k=body.top_k, top_p=body.top_p, repetition_penalty=body.repetition_penalty,
                                   seed=body.seed, stops=body.stop, num_samples=body.n,  # type: ignore[arg-type]
                                   lines=options.lines, block=options.block)
    kind = "fim" if fim else ("ids" if ids else "continue" if options.mode == "continue" else "text")
    return Job(kind, settings, emit, prefix=str(prompt), suffix=body.suffix or "", ids=ids, warm_only=max_tokens == 0,
               fim_order=options.fim_order, cache_salt=body.cache_salt or "", speculate=body.speculate)


def details(result: JobResult, tokenizer_decode: Any, dtype: str) -> dict[str, Any]:
    """What `bigcode complete --json` prints besides the text: asked for with bigcode.details."""
    completion = result.completion
    generation = completion.generation
    return {
        "mode": completion.prompt.mode,
        "dtype": dtype,
        "prompt": tokenizer_decode(completion.prompt.ids),
        "truncated": completion.prompt.truncated,
        "prompt_tokens": generation.prompt_tokens,
        "prefill_s": generation.prefill_s,
        "decode_s": generation.decode_s,
        "tokens_per_s": generation.tokens_per_s,
        "draft_n": generation.draft_tokens,
        "draft_n_accepted": generation.draft_accepted,
        "interrupted": generation.interrupted,
        "samples": [{"stop_reason": s.stop_reason, "new_tokens": len(s.token_ids)} for s in generation.samples],
    }


def _choice(text: str, index: int, reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": reason}


def routes(worker: EngineWorker, config: ServeConfig) -> list[Route]:
    """The OpenAI routes."""

    async def completions(request: Request) -> Response:
        body = await read_request(request, CompletionRequest, config)
        running = Running(worker, request, lambda emit: _job(body, config, emit))
        ident = f"cmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        head = {"id": ident, "object": "text_completion", "created": created, "model": config.model_name}
        if body.stream:
            want_details = body.bigcode is not None and body.bigcode.details
            return EventStream(_stream(running, head, body.n, worker.decode if want_details else None))
        result = await running.result()
        if result is None:
            return Response(status_code=499)  # nobody is listening any more
        generation = result.completion.generation
        choices = [_choice(text, i, finish_reason(result, i)) for i, text in enumerate(result.completion.texts)]
        usage = {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.new_tokens,
                 "total_tokens": generation.prompt_tokens + generation.new_tokens}
        response = {**head, "choices": choices, "usage": usage, "timings": timings(result)}
        if body.bigcode is not None and body.bigcode.details:
            response["bigcode"] = details(result, worker.decode, worker.dtype)
        return JSONResponse(response)

    async def models(request: Request) -> Response:
        entry = {"id": config.model_name, "object": "model", "created": config.created, "owned_by": "bigcode-cli",
                 "meta": {"n_ctx_train": config.context_length}}
        return JSONResponse({"object": "list", "data": [entry]})

    return [
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/models", guarded(models), methods=["GET"]),
    ]


async def _stream(running: Running, head: dict[str, Any], n: int, decode: Any) -> AsyncIterator[Any]:
    async for kind, payload in running.events():
        if kind == "text":
            index, text = payload
            yield {**head, "choices": [_choice(text, index, None)]}
        elif kind == "done":
            for index in range(n):
                last = {**head, "choices": [_choice("", index, finish_reason(payload, index))],
                        "timings": timings(payload)}
                if decode is not None:
                    last["bigcode"] = details(payload, decode, running.dtype)
                yield last
            yield "[DONE]"
