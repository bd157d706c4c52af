"""llama.cpp-compatible `POST /infill` (llama.vim, llama.vscode) and `POST /completion`.

`/infill` fills in between `input_prefix` + `prompt` (llama.vim sends the cursor line's text before
the cursor as `prompt`) and `input_suffix`, after the `input_extra` chunks from other files.
`n_predict: 0` only prefills the prompt into the cache. Non-streaming responses are one JSON object;
streaming ones are server-sent events whose last one has `"stop": true` and the timings.
`response_fields: ["content", "timings/prompt_n", ...]` returns just those fields, flat, keyed by path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bigcode_cli.serve.handling import (
    EventStream,
    Running,
    ServeConfig,
    check_max_tokens,
    completion_settings,
    guarded,
    read_request,
)
from bigcode_cli.serve.schema import InfillRequest, LlamaRequest
from bigcode_cli.serve.timings import timings
from bigcode_cli.serve.worker import Job

if TYPE_CHECKING:
    from bigcode_cli.serve.worker import EngineWorker, JobResult

DEFAULT_N_PREDICT = 128  # the CLI's default; llama.cpp's -1 (no limit) is bounded by the context here
STOP_TYPES = {"eos": "eos", "stop": "word", "length": "limit"}


def _settings(body: LlamaRequest, config: ServeConfig, fim: bool) -> tuple[Any, bool]:
    n_predict = DEFAULT_N_PREDICT if body.n_predict is None or body.n_predict < 0 else body.n_predict
    check_max_tokens(n_predict, config.context_length, "n_predict")
    top_p = 1.0 if body.top_p == 0 else body.top_p  # llama.cpp: 0 and 1 both mean off
    settings = completion_settings(max_new_tokens=n_predict, fim=fim, temperature=body.temperature, top_k=body.top_k,
                                   top_p=top_p, repetition_penalty=body.repeat_penalty,
                                   seed=None if body.seed is None or body.seed < 0 else body.seed,
                                   stops=body.stop or [], min_indent=body.n_indent, ignore_eos=body.ignore_eos)
    return settings, n_predict == 0


def _deadline(body: LlamaRequest) -> float | None:
    return float(body.t_max_predict_ms) if body.t_max_predict_ms is not None and body.t_max_predict_ms > 0 else None


def infill_job(body: InfillRequest, config: ServeConfig, emit: Any) -> Job:
    """The worker job of an /infill request."""
    settings, warm = _settings(body, config, fim=True)
    extra = [(chunk.filename, chunk.text) for chunk in body.input_extra]
    return Job("fim", settings, emit, prefix=body.input_prefix + body.prompt, suffix=body.input_suffix, extra=extra,
               warm_only=warm, use_cache=body.cache_prompt, max_predict_ms=_deadline(body),
               cache_salt=body.cache_salt or "", speculate=body.speculate)


def completion_job(body: LlamaRequest, config: ServeConfig, emit: Any) -> Job:
    """The worker job of a /completion request (the prompt's control-token spellings read as tokens)."""
    settings, warm = _settings(body, config, fim=False)
    if isinstance(body.prompt, list):
        return Job("ids", settings, emit, ids=list(body.prompt), warm_only=warm, use_cache=body.cache_prompt,
                   max_predict_ms=_deadline(body), cache_salt=body.cache_salt or "", speculate=body.speculate)
    return Job("text", settings, emit, prefix=body.prompt, warm_only=warm, use_cache=body.cache_prompt,
               max_predict_ms=_deadline(body), cache_salt=body.cache_salt or "", speculate=body.speculate)


def final_response(result: JobResult, config: ServeConfig) -> dict[str, Any]:
    """The response object (also the last streamed event) of a finished llama.cpp request."""
    completion = result.completion
    generation = completion.generation
    sample = generation.samples[0]
    reason = "length" if generation.interrupted else sample.stop_reason
    stop_type = STOP_TYPES[reason]
    text = completion.texts[0]
    return {
        "index": 0,
        "content": text,
        "id_slot": 0,
        "stop": True,
        "model": config.model_name,
        "tokens_predicted": len(sample.token_ids),
        "tokens_evaluated": generation.prompt_tokens,
        "tokens_cached": generation.prompt_tokens + len(sample.token_ids),
        "truncated": completion.prompt.truncated,
        "has_new_line": "\n" in text,
        "stop_type": stop_type,
        "stopped_eos": stop_type == "eos",
        "stopped_word": stop_type == "word",
        "stopped_limit": stop_type == "limit",
        "stopping_word": "",
        "timings": timings(result),
    }


def select_fields(data: dict[str, Any], paths: list[str] | None) -> dict[str, Any]:
    """Only the fields named by `paths` ("content", "timings/prompt_n"), flat and keyed by path; all without paths."""
    if not paths:
        return data
    selected: dict[str, Any] = {}
    for path in paths:
        value: Any = data
        for part in path.split("/"):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            selected[path] = value
    return selected


def routes(worker: EngineWorker, config: ServeConfig) -> list[Route]:
    """The llama.cpp routes."""

    def endpoint(schema: type[LlamaRequest], make_job: Any) -> Any:
        async def handle(request: Request) -> Response:
            body = await read_request(request, schema, config)
            running = Running(worker, request, lambda emit: make_job(body, config, emit))
            if body.stream:
                return EventStream(_stream(running, config, body.response_fields))
            result = await running.result()
            if result is None:
                return Response(status_code=499)
            return JSONResponse(select_fields(final_response(result, config), body.response_fields))

        return guarded(handle)

    return [
        Route("/infill", endpoint(InfillRequest, infill_job), methods=["POST"]),
        Route("/completion", endpoint(LlamaRequest, completion_job), methods=["POST"]),
        Route("/completions", endpoint(LlamaRequest, completion_job), methods=["POST"]),
    ]


async def _stream(running: Running, config: ServeConfig, fields: list[str] | None) -> AsyncIterator[Any]:
    async for kind, payload in running.events():
        if kind == "text":
            _, text = payload
            yield select_fields({"index": 0, "content": text, "stop": False, "id_slot": 0}, fields)
        elif kind == "done":
            final = final_response(payload, config)
            final["content"] = ""
            yield select_fields(final, fields)
