"""A team at work: 1, 2, 4, 8 simulated editors, each replaying serve_session.py's llama.vim editing trace,
against `bigcode serve --parallel N` and llama.cpp's `llama-server -np N` on the same weights; aggregate
generated tokens/s and each editor's p50/p95 latency.

    python benchmarks/serve_parallel.py --model 116m --dtype int8             # ours vs llama-server q8_0
    python benchmarks/serve_parallel.py --model bundled --editors 1 4 --rounds 5
    python benchmarks/serve_parallel.py --model 116m --dtype int8 --no-llama  # ours alone

Each server is started once with N = the largest editor count (ours: `--parallel N --queue N`; llama-server:
`-np N` with N times the model's context, so every slot has the whole window; continuous batching is on by
default there) and warmed with one request. A round runs, for every editor count in turn (the order reversed
every other round) and then for every server in turn (likewise reversed: A B, B A), that many editors at
once; each sends the trace's --requests `/infill` requests one after another, the next as soon as the last
one's answer came (--gap adds a pause before each). Every editor's text is its own: each identifier `text`
in the file becomes `text_<round>_<editor>`, so no server reuses another editor's (or an earlier round's)
prompt. Before the timed part, every editor's first request is sent once with `n_predict: 0` (llama.vim
warms the server's cache so when a file is opened), so the timed requests are those of an editor typing:
a few new prompt tokens each and 16 generated ones.

Equal work: every request says `"ignore_eos": true` and sends neither `n_indent` nor llama.vim's sampler list
(with its "infill" sampler llama-server still stops after one token on random weights, ignore_eos or not;
greedy decoding is the same without it), so both servers make exactly n_predict (16) tokens per request
(ours would otherwise end a fill-in-the-middle completion at the end of its block); the report gives the
tokens each server made. `--llama-spm` starts llama-server with `--spm-infill`, so that, like ours (SPM),
it re-evaluates only the typed end of each prompt instead of the whole suffix (its default PSM layout). A round's aggregate is the tokens all its editors received over its wall time (and over the server
process's CPU seconds, steadier on a busy machine); an editor's p50/p95 are over its own requests, and the
report gives the worst editor's. Medians over rounds. The machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from server_process import cpu_name, cpu_seconds, free_port, post, print_report, start_bigcode, start_llama_server, stop, wait_healthy
from serve_session import LLAMA_TYPES, checkpoint, gguf, llama_vim_body, session

OURS, LLAMA_SERVER = "bigcode serve", "llama-server"


def editor_bodies(requests: int, window: tuple[int, int], n_predict: int, tag: str) -> list[dict]:
    """One editor's requests: the trace with its own text (`text` renamed `text_<tag>`), equal work asked for."""
    bodies = []
    for lines, row, col in session(requests):
        renamed = [line.replace("text", f"text_{tag}") for line in lines]
        col = len(lines[row][:col].replace("text", f"text_{tag}"))
        body = llama_vim_body(renamed, row, col, window, n_predict)
        for field in ("n_indent", "samplers"):  # both end llama-server's generation whatever ignore_eos says
            body.pop(field)
        body["ignore_eos"] = True
        bodies.append(body)
    return bodies


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def at_once(work, count: int) -> None:
    """work(i) for i < count, each on its own thread, until all have returned."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def team_round(url: str, pid: int, editors: list[list[dict]], gap: float) -> dict:
    """All editors at once, each its requests in turn: aggregate tokens/s, per CPU second, worst p50/p95.
    First, untimed, every editor's window is prefilled (llama.vim's `n_predict: 0` request on opening a file)."""
    latencies: list[list[float]] = [[] for _ in editors]
    tokens = [0] * len(editors)
    failures: list[str] = []
    at_once(lambda index: post(url + "/infill", {**editors[index][0], "n_predict": 0}), len(editors))

    def editor(index: int) -> None:
        for body in editors[index]:
            time.sleep(gap)
            try:
                seconds, reply = post(url + "/infill", body)
            except (SystemExit, OSError) as exc:
                failures.append(str(exc))
                return
            latencies[index].append(seconds)
            tokens[index] += reply["tokens_predicted"]

    cpu_before, started = cpu_seconds(pid), time.perf_counter()
    at_once(editor, len(editors))
    wall, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
    if failures:
        raise SystemExit(failures[0])
    made = sum(tokens)
    return {"tok_s": made / wall, "tok_per_cpu_s": made / max(cpu, 1e-3),
            "tokens_per_request": made / sum(len(e) for e in editors),
            "p50_ms": 1000 * max(statistics.median(lat) for lat in latencies),
            "p95_ms": 1000 * max(percentile(lat, 0.95) for lat in latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["bundled", "116m"], default="116m")
    parser.add_argument("--dtype", choices=list(LLAMA_TYPES), default="int8",
                        help="bigcode serve's --dtype; llama-server gets the same weights as f32, bf16, q8_0 or q4_0")
    parser.add_argument("--editors", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=24, help="requests per editor per round (of the trace's 50)")
    parser.add_argument("--n-predict", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.0, help="seconds of pause before each request")
    parser.add_argument("--window", help="lines before,after the cursor (default 256,64; 48,16 for bundled)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of each server (ours: OMP_NUM_THREADS; llama-server: -t); 1 on a crowded machine, "
                             "where llama.cpp's spinning threads lose most when descheduled")
    parser.add_argument("--llama", type=Path, default=Path("/tmp/llama-anchor"), help="build_llama.sh's output")
    parser.add_argument("--no-llama", action="store_true", help="bigcode serve alone")
    parser.add_argument("--llama-spm", action="store_true", help="llama-server --spm-infill (default: its PSM)")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("BIGCODE_BENCH_DIR", "/tmp/bigcode-bench")))
    parser.add_argument("--speculate", choices=["off", "ngram"], default="off",
                        help="ours: n-gram speculation (default off: llama-server does not speculate unless told, and on "
                             "random weights drafts are accepted for reasons no user's text has)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    window = tuple(int(n) for n in args.window.split(",")) if args.window else \
        ((48, 16) if args.model == "bundled" else (256, 64))
    slots = max(args.editors)
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint(args.model, args.work)
    logs = Path(tempfile.mkdtemp(prefix="serve-parallel-"))
    servers = {}
    try:
        servers[OURS] = start_bigcode(free_port(), "--model", str(ckpt), "--dtype", args.dtype, "--parallel",
                                      str(slots), "--queue", str(slots), "--speculate", args.speculate, log=open(logs / "bigcode.log", "w"),
                                      env=dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS=str(args.threads)))
        binary = args.llama / "bin" / "llama-server"
        if not args.no_llama:
            if not binary.exists():
                raise SystemExit(f"{binary} not found: build it with /work/shared/anchors/build_llama.sh, or --no-llama")
            context = json.loads((ckpt / "config.json").read_text())["n_positions"]
            servers[LLAMA_SERVER] = start_llama_server(binary, gguf(ckpt, args.work, args.llama, args.dtype),
                                                       free_port(), context * slots, "-np", str(slots),
                                                       *(["--spm-infill"] if args.llama_spm else []),
                                                       threads=args.threads, log=open(logs / "llama-server.log", "w"))
        for url, process in servers.values():
            wait_healthy(url, process)
            post(url + "/infill", {"input_prefix": "def warm_up():\n", "input_suffix": "\n", "n_predict": 4,
                                   "temperature": 0})
        runs: dict[tuple[str, int], list[dict]] = {(name, n): [] for name in servers for n in args.editors}
        names = list(servers)
        for round_index in range(args.rounds):
            counts = args.editors if round_index % 2 == 0 else args.editors[::-1]
            for count in counts:
                editors = [editor_bodies(args.requests, window, args.n_predict, f"{round_index}_{e}")
                           for e in range(count)]
                for name in (names if round_index % 2 == 0 else names[::-1]):
                    url, process = servers[name]
                    runs[(name, count)].append(team_round(url, process.pid, editors, args.gap))
                    print(f"round {round_index + 1}, {count} editors, {name}: "
                          f"{runs[(name, count)][-1]['tok_s']:.1f} tokens/s", file=sys.stderr, flush=True)
    finally:
        for _, process in servers.values():
            stop(process)
    medians = {key: {field: statistics.median(run[field] for run in rounds) for field in rounds[0]}
               for key, rounds in runs.items()}
    base = args.editors[0]
    report = {"model": args.model, "dtype": args.dtype, "llama_type": LLAMA_TYPES[args.dtype], "slots": slots,
              "requests_per_editor": args.requests, "n_predict": args.n_predict, "gap_s": args.gap,
              "threads": args.threads, "speculate": args.speculate, "llama_layout": "spm" if args.llama_spm else "psm",
              "window_lines": list(window), "rounds": args.rounds,
              "cpu": cpu_name(), "load_average_1min_end": os.getloadavg()[0],
              "rows": []}
    for name in servers:
        for count in args.editors:
            m = medians[(name, count)]
            lone = medians[(name, base)]
            row = {"server": name, "editors": count, "tok_s": round(m["tok_s"], 1),
                   "vs_lone_tok_s": round(m["tok_s"] / lone["tok_s"], 2),
                   "tok_per_cpu_s": round(m["tok_per_cpu_s"], 1),
                   "tokens_per_request": round(m["tokens_per_request"], 2),
                   "worst_p50_ms": round(m["p50_ms"], 1), "p50_vs_lone": round(m["p50_ms"] / lone["p50_ms"], 2),
                   "worst_p95_ms": round(m["p95_ms"], 1)}
            if name == OURS and (LLAMA_SERVER, count) in medians:
                row["vs_llama_tok_s"] = round(m["tok_s"] / medians[(LLAMA_SERVER, count)]["tok_s"], 2)
            report["rows"].append(row)
    print_report(report, args.out)


if __name__ == "__main__":
    main()
