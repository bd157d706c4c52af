"""`bigcode serve`: a local completion server speaking the protocols editor plugins already use.

OpenAI-compatible `/v1/completions` and `/v1/models`; llama.cpp-compatible `/infill`, `/completion`
and `/health`. One worker thread owns the model (worker.py); the ASGI app (app.py) validates
requests (schema.py), queues them and streams the results back. Starlette, uvicorn and pydantic are
the `serve` extra and are imported only here.
"""
