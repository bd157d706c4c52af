"""What `bigcode serve` keeps of large requests: its resident memory (VmRSS) when ready, after each of
several prompts of about 4 MB (an editor sending a huge file), and after idling.

    python benchmarks/serve_memory.py                                  # bundled model, 10 x 4 MB /infill
    python benchmarks/serve_memory.py --requests 5 --route completion --env MALLOC_ARENA_MAX=2
    python benchmarks/serve_memory.py --route ids                      # /completion with token ids

The prompt is real Python (the standard library's textwrap.py, repeated) so it tokenizes like a file;
every request asks for 4 new tokens, so the memory is the request's, not the generation's. `--env`
passes variables to the server (glibc's MALLOC_* tunables, say) to compare what changes the numbers.
One server per run: run the variants one after another on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sysconfig
import tempfile
import time
from pathlib import Path

from server_process import free_port, post, rss_mb, start_bigcode, stop, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny"
BODY_LIMIT = 4 * 1024 * 1024  # the server's MAX_BODY_BYTES


def big_source(limit: int) -> str:
    """Python source of nearly `limit` bytes once JSON-encoded in a request body."""
    unit = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    encoded = len(json.dumps(unit))
    return unit * ((limit - 4096) // encoded)


def body(route: str, text: str) -> dict:
    """A request of `route` with `text` as the code before the cursor."""
    if route == "infill":
        return {"input_prefix": text, "input_suffix": "\n", "n_predict": 4, "temperature": 0}
    if route == "completion":
        return {"prompt": text, "n_predict": 4, "temperature": 0}
    if route == "ids":  # the prompt as token ids: about as many ids as the text's bytes / 5
        return {"prompt": [i % 200 for i in range(len(text) // 5)], "n_predict": 4, "temperature": 0}
    return {"model": "m", "prompt": text, "max_tokens": 4, "temperature": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(BUNDLED), help="checkpoint directory or name (default: bundled)")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--route", choices=("infill", "completion", "ids", "v1"), default="infill")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds to idle before the last reading")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (repeatable)")
    parser.add_argument("--out", help="write the readings as JSON here")
    args = parser.parse_args()

    text = big_source(BODY_LIMIT)
    path = {"infill": "/infill", "completion": "/completion", "ids": "/completion", "v1": "/v1/completions"}[args.route]
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, BIGCODE_HOME=home, HF_HUB_OFFLINE="1", NO_COLOR="1")
        env.update(dict(item.split("=", 1) for item in args.env))
        url, server = start_bigcode(free_port(), "--model", args.model, env=env)
        try:
            wait_healthy(url, server)
            post(url + path, body(args.route, "def warm_up():\n"))
            time.sleep(0.5)
            readings = {"ready": rss_mb(server.pid), "after": []}
            print(f"{len(json.dumps(body(args.route, text))) / 1e6:.2f} MB bodies to {path}; "
                  f"RSS ready: {readings['ready']:.0f} MB", flush=True)
            for i in range(args.requests):
                started = time.perf_counter()
                _, reply = post(url + path, body(args.route, text))
                took = time.perf_counter() - started
                time.sleep(0.2)
                readings["after"].append(rss_mb(server.pid))
                truncated = reply.get("truncated", "?")
                print(f"request {i + 1}: {took:.1f} s, truncated {truncated}, RSS {readings['after'][-1]:.0f} MB",
                      flush=True)
            time.sleep(args.idle)
            readings["idle"] = rss_mb(server.pid)
            print(f"RSS after {args.idle:.0f} s idle: {readings['idle']:.0f} MB "
                  f"(peak after a request {max(readings['after']):.0f} MB)")
        finally:
            stop(server, 30)
    if args.out:
        Path(args.out).write_text(json.dumps({"route": args.route, "env": args.env, **readings}, indent=2))


if __name__ == "__main__":
    main()
