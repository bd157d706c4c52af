"""How many connections the server keeps open and how long one may stay silent (applied by serve.connections
and handling.read_body); the CLI's defaults come from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConnectionLimits:
    """--max-connections and --timeout."""

    max_connections: int = 128
    timeout: float = 10.0  # seconds: an idle connection, a request head, a request body
