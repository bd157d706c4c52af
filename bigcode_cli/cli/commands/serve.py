"""`bigcode serve`: a local completion server for editors (OpenAI /v1/completions, llama.cpp /infill)."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from bigcode_cli.choices import SERVE_FIM_ORDERS
from bigcode_cli.cli.commands.option_groups import MODEL, with_options
from bigcode_cli.cli.commands.options import choice_enum
from bigcode_cli.terminal.model_choice import ModelChoice

HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback wants --api-key.")]
PortOpt = Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port).")]
ApiKeyOpt = Annotated[Optional[str], typer.Option(
    "--api-key", show_default=False,
    help="Require `Authorization: Bearer KEY` on every request but /health (default: $BIGCODE_API_KEY).")]
QueueOpt = Annotated[int, typer.Option("--queue", min=1, max=1024,
                                       help="Requests that may wait while one runs; more get 503 at once.")]
CacheSlotsOpt = Annotated[int, typer.Option("--cache-slots", min=1, max=64,
                                            help="Recent prompts whose KV cache is kept for reuse.")]
ServeFimOrder = choice_enum("ServeFimOrder", SERVE_FIM_ORDERS)
FimOrderOpt = Annotated[ServeFimOrder, typer.Option(
    "--fim-order", help="Fill-in-the-middle prompt order: auto (spm where the model has FIM tokens), psm or spm.")]


@with_options
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8012,
    api_key: ApiKeyOpt = None,
    queue: QueueOpt = 4,
    cache_slots: CacheSlotsOpt = 2,
    fim_order: FimOrderOpt = ServeFimOrder.auto,
    choice: ModelChoice = MODEL,
) -> None:
    """Serve a model to editors over HTTP until Ctrl-C: OpenAI /v1/completions and /v1/models, llama.cpp /infill,
    /completion and /health.

    The model is loaded once (/health answers 503 until it is ready), consecutive prompts reuse the KV cache
    of their shared beginning, a client that disconnects stops its generation, and requests beyond --queue
    waiting get 503. Needs the serve extra: pip install 'bigcode-cli[serve]'.
    """
    missing = _missing_web_stack()
    if missing:
        from bigcode_cli.errors import BigCodeError

        raise BigCodeError(f"bigcode serve needs {missing}: pip install 'bigcode-cli[serve]'")
    from bigcode_cli.serve.server import serve as run_server

    run_server(model=choice.model, engine=choice.engine, attn=choice.attn, device=choice.device, dtype=choice.dtype,
               offline=choice.offline, host=host, port=port, api_key=api_key or os.environ.get("BIGCODE_API_KEY") or None,
               queue_size=queue, cache_slots=cache_slots, fim_order=fim_order.value)


def _missing_web_stack() -> str | None:
    """The first package of the serve extra that is not installed, if any."""
    import importlib.util

    for name in ("starlette", "uvicorn", "pydantic"):
        if importlib.util.find_spec(name) is None:
            return name
    return None
