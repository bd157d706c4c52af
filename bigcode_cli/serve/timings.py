"""The `timings` object of every response, in llama.cpp's names (llama.vim shows them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bigcode_cli.serve.worker import JobResult


def timings(result: JobResult) -> dict[str, Any]:
    """llama.cpp's `timings` object, with cache_n: prompt tokens reused from the prompt cache."""
    generation = result.completion.generation
    prompt_n = generation.prompt_tokens - generation.cached_tokens
    predicted_n = generation.new_tokens
    prompt_ms, predicted_ms = generation.prefill_s * 1000, generation.decode_s * 1000
    return {
        "cache_n": generation.cached_tokens,
        "prompt_n": prompt_n,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / prompt_n, 3) if prompt_n else 0.0,
        "prompt_per_second": round(prompt_n / prompt_ms * 1000, 2) if prompt_ms > 0 else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / predicted_n, 3) if predicted_n else 0.0,
        "predicted_per_second": round(predicted_n / predicted_ms * 1000, 2) if predicted_ms > 0 else 0.0,
        "queued_ms": round(result.queued_ms, 3),
        "draft_n": generation.draft_tokens,  # tokens drafted by n-gram speculation, and of them those accepted
        "draft_n_accepted": generation.draft_accepted,
    }
