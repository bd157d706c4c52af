"""`GET /metrics` (Prometheus text exposition format 0.0.4) and `GET /slots` (what each slot is doing).

Metric names start with `bigcode_`, not llama.cpp's `llamacpp:`: Prometheus reserves colons in metric
names for the recording rules users write, so an exporter's own names use underscores only.
`/slots` says how many tokens each slot holds, never which: other clients' prompts must not leak.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bigcode_cli.serve.handling import guarded

if TYPE_CHECKING:
    from bigcode_cli.serve.worker import EngineWorker

PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "bigcode_"


def metrics_text(worker: EngineWorker) -> str:
    """The worker's gauges and counters in Prometheus text format."""
    totals = worker.counters.totals()
    cache = worker.prompt_cache  # None until the model has loaded
    samples = [  # (name, type, help, value)
        ("requests_running", "gauge", "Requests in the batch (prefilling or decoding).", worker.running),
        ("requests_queued", "gauge", "Requests waiting for a free slot (their prompts being tokenized, or queued).",
         worker.waiting),
        ("requests_finished_total", "counter", "Requests that finished (including stopped ones).",
         totals.requests_finished),
        ("prompt_tokens_total", "counter", "Prompt tokens evaluated by the model.", totals.prompt_tokens_evaluated),
        ("prompt_tokens_cached_total", "counter", "Prompt tokens reused from the prompt cache instead.",
         totals.prompt_tokens_cached),
        ("tokens_generated_total", "counter", "Tokens generated.", totals.generated_tokens),
        ("draft_tokens_total", "counter", "Tokens drafted by n-gram speculation and verified.", totals.draft_tokens),
        ("draft_tokens_accepted_total", "counter", "Drafted tokens accepted (each saved a decode step).",
         totals.draft_accepted),
        ("prompt_cache_bytes", "gauge", "Bytes of key/value cache held by the shared prefix cache.",
         cache.bytes if cache is not None else 0),
        ("prompt_cache_entries", "gauge", "Cached prompts in the shared prefix cache.",
         len(cache) if cache is not None else 0),
    ]
    return "".join(f"# HELP {PREFIX}{name} {help_text}\n# TYPE {PREFIX}{name} {kind}\n{PREFIX}{name} {value}\n"
                   for name, kind, help_text, value in samples)


def routes(worker: EngineWorker) -> list[Route]:
    """The observability routes (behind the API-key and browser guards like every route but /health)."""

    async def metrics(request: Request) -> Response:
        return Response(metrics_text(worker), media_type=PROMETHEUS_MEDIA_TYPE)

    async def slots(request: Request) -> Response:
        return JSONResponse([{"id": slot.id, "state": slot.state, "prompt_tokens": slot.prompt_tokens,
                              "generated_tokens": slot.generated_tokens} for slot in worker.counters.slots])

    return [
        Route("/metrics", guarded(metrics), methods=["GET"]),
        Route("/slots", guarded(slots), methods=["GET"]),
    ]
