"""`bigcode serve`: a local completion server for editors (OpenAI /v1/completions, llama.cpp /infill)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from bigcode_cli.choices import SERVE_FIM_ORDERS, SPECULATE_DEFAULT
from bigcode_cli.cli.commands.option_groups import MODEL, with_options
from bigcode_cli.cli.commands.options import Speculate, SpeculateOpt, choice_enum
from bigcode_cli.serve.limits import ConnectionLimits
from bigcode_cli.serve.worker import DEFAULT_CACHE_RAM_MIB, DEFAULT_PARALLEL
from bigcode_cli.terminal.model_choice import ModelChoice

HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback wants --api-key.")]
PortOpt = Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on (0: any free port).")]
ApiKeyOpt = Annotated[Optional[str], typer.Option(
    "--api-key", show_default=False,
    help="Require `Authorization: Bearer KEY` on every request but /health (default: $BIGCODE_API_KEY). "
         "An option shows in the process list (ps, /proc/PID/cmdline): $BIGCODE_API_KEY or --api-key-file do not.")]
ApiKeyFileOpt = Annotated[Optional[str], typer.Option(
    "--api-key-file", show_default=False,
    help="Read the keys from this file, one per line (one per user, say): any of them is accepted, with --api-key's.")]
AllowedHostsOpt = Annotated[Optional[list[str]], typer.Option(
    "--allowed-hosts", show_default=False,
    help="Host names the server also answers to besides its own address (comma-separated or repeated; * for any): "
         "other Host headers get 403, which stops DNS-rebinding web pages.")]
AllowedOriginsOpt = Annotated[Optional[list[str]], typer.Option(
    "--allowed-origins", show_default=False,
    help="Web pages (origins such as http://localhost:3000, comma-separated or repeated; * for any) that may use "
         "the server from a browser; default none: a request with any other Origin header gets 403.")]
AliasOpt = Annotated[Optional[str], typer.Option(
    "--alias", show_default=False,
    help="The model's name in responses and /v1/models (default: its name, or its directory's name for a path).")]
QueueOpt = Annotated[int, typer.Option("--queue", min=1, max=1024,
                                       help="Requests that may wait while one runs; more get 503 at once.")]
CacheRamOpt = Annotated[int, typer.Option(
    "--cache-ram", min=0, metavar="MiB",
    help="Memory for the prompt cache shared by all requests (the key/value caches of earlier requests, least "
         "recently used dropped first); 0 turns it off.")]
ParallelOpt = Annotated[int, typer.Option(
    "--parallel", min=1, max=64,
    help="Requests generated at once (slots), each step one pass over the weights for all of them; "
         "more wait in the queue.")]
MaxConnectionsOpt = Annotated[int, typer.Option(
    "--max-connections", min=1, max=16384,
    help="Connections kept open at once; beyond it a new one closes the longest-open idle one.")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", min=0.1, max=3600,
    help="Seconds a connection may stay idle, and a request's head or body may take to arrive, before it is closed "
         "(408 for a body).")]
ServeFimOrder = choice_enum("ServeFimOrder", SERVE_FIM_ORDERS)
FimOrderOpt = Annotated[ServeFimOrder, typer.Option(
    "--fim-order", help="Fill-in-the-middle prompt order: auto (spm where the model has FIM tokens), psm or spm.")]


@with_options
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8012,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    allowed_hosts: AllowedHostsOpt = None,
    allowed_origins: AllowedOriginsOpt = None,
    alias: AliasOpt = None,
    queue: QueueOpt = 4,
    cache_ram: CacheRamOpt = DEFAULT_CACHE_RAM_MIB,
    parallel: ParallelOpt = DEFAULT_PARALLEL,
    fim_order: FimOrderOpt = ServeFimOrder.auto,
    speculate: SpeculateOpt = Speculate(SPECULATE_DEFAULT),
    max_connections: MaxConnectionsOpt = ConnectionLimits.max_connections,
    timeout: TimeoutOpt = ConnectionLimits.timeout,
    choice: ModelChoice = MODEL,
) -> None:
    """Serve a model to editors over HTTP until Ctrl-C: OpenAI /v1/completions and /v1/models, llama.cpp /infill,
    /completion and /health.

    The model is loaded once (/health answers 503 until it is ready), consecutive prompts reuse the KV cache
    of their shared beginning, a client that disconnects stops its generation, up to --parallel requests
    are generated together (one pass over the weights per step for all of them), and requests beyond
    --queue waiting get 503. At most --max-connections are kept open, and one that stays silent for --timeout
    seconds is closed. Requests from web pages (an Origin header) and for other host names are refused unless
    --allowed-origins / --allowed-hosts name them. Needs the serve extra: pip install 'bigcode-cli[serve]'.
    """
    missing = _missing_web_stack()
    if missing:
        from bigcode_cli.errors import BigCodeError

        raise BigCodeError(f"bigcode serve needs {missing}: pip install 'bigcode-cli[serve]'")
    from bigcode_cli.errors import UsageError
    from bigcode_cli.serve.api_keys import key_bytes, read_key_file
    from bigcode_cli.serve.hosts import allowed_hosts as parse_hosts, allowed_origins as parse_origins
    from bigcode_cli.serve.server import serve as run_server

    hosts, origins = parse_hosts(allowed_hosts or []), parse_origins(allowed_origins or [])
    if alias is not None and not alias.strip():
        raise UsageError("--alias must not be empty")
    key = api_key or os.environ.get("BIGCODE_API_KEY")
    keys = [key_bytes(key)] if key else []
    if api_key_file is not None:
        keys += read_key_file(api_key_file, warn=lambda line: print(line, file=sys.stderr, flush=True))
    run_server(model=choice.model, engine=choice.engine, attn=choice.attn, device=choice.device, dtype=choice.dtype,
               offline=choice.offline, host=host, port=port, api_keys=keys, allowed_hosts=hosts,
               allowed_origins=origins, alias=alias, queue_size=queue, cache_ram_mib=cache_ram,
               parallel=parallel, fim_order=fim_order.value, speculate=speculate.value,
               limits=ConnectionLimits(max_connections=max_connections, timeout=timeout))


def _missing_web_stack() -> str | None:
    """The first package of the serve extra that is not installed, if any."""
    import importlib.util

    for name in ("starlette", "uvicorn", "pydantic"):
        if importlib.util.find_spec(name) is None:
            return name
    return None
