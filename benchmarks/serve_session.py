"""Replay an editing session against `bigcode serve`, per-call `bigcode complete --at`, and llama.cpp's
llama-server on the same weights; report latency and prompt tokens evaluated per request.

    python benchmarks/serve_session.py --model bundled            # bigcode-tiny (1024-token context)
    python benchmarks/serve_session.py --model 116m               # random weights, tiny_starcoder's shape
    python benchmarks/serve_session.py --model 116m --llama /tmp/llama-anchor --cli-samples 3 --out r.json

The session: the first 300 lines of the standard library's textwrap.py; a cursor goes to three
functions in turn and types a new line there one character at a time; after each character the
editor sends llama.vim's /infill request (256 lines before the cursor and 64 after, 48 and 16 for the bundled model; n_predict 16, greedy
so every run is the same). 50 requests. Each server is started once and warmed with one unrelated
request; the session's requests go to the servers interleaved (A B, then B A), so both see the same
machine, each after a pause (--gap, 0.2 s) as an editor's requests come after a pause in typing. `bigcode complete --at` (a fresh process per request, as a shell integration would call it)
is sampled at --cli-samples evenly spaced requests. llama-server (built by
/work/shared/anchors/build_llama.sh) gets the same checkpoint converted to GGUF (f32, or the type matching
--dtype: bf16, q8_0, q4_0), 2 threads, its
default prompt layout (PSM) and, with --llama-spm, also its --spm-infill layout.
This machine is shared and noisy: rerun before trusting a small difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from server_process import free_port, post, print_report, start_bigcode, start_llama_server, stop, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny"
SHAPE_116M = dict(n_embd=768, n_layer=12, n_head=12, vocab_size=49152, n_positions=8192)
# (line to insert after, 1-based, in the 300-line file; the text typed there)
EDITS = [(70, "        width = self.width - len(indent)"), (150, "        chunks = [c for c in chunks if c]"),
         (262, "    lines = text.splitlines(True)")]


def session_file() -> list[str]:
    """The 300 lines the session edits."""
    source = Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"
    return source.read_text().splitlines()[:300]


def session(requests: int) -> list[tuple[list[str], int, int]]:
    """(file lines, cursor line index, cursor column) after each typed character, `requests` of them."""
    base = session_file()
    states: list[tuple[list[str], int, int]] = []
    offset = 0
    lines = list(base)
    for after, typed in EDITS:
        row = after + offset
        indent = len(typed) - len(typed.lstrip())
        lines.insert(row, typed[:indent])
        offset += 1
        for end in range(indent + 1, len(typed) + 1):
            lines[row] = typed[:end]
            states.append((list(lines), row, end))
    return states[:requests]


def llama_vim_body(lines: list[str], row: int, col: int, window: tuple[int, int], n_predict: int = 16) -> dict:
    """The /infill body llama.vim sends for a cursor at (row, col), with `window` = (lines before, lines after):
    its n_prefix and n_suffix settings, 256 and 64 by default."""
    line = lines[row]
    before, after = window
    return {
        "input_prefix": "\n".join(lines[max(0, row - before):row]) + "\n",
        "input_suffix": line[col:] + "\n" + "\n".join(lines[row + 1:row + 1 + after]) + "\n",
        "input_extra": [], "prompt": line[:col], "n_predict": n_predict, "n_indent": len(line) - len(line.lstrip()),
        "top_k": 40, "top_p": 0.99, "temperature": 0, "stream": False, "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True,
    }


def checkpoint(name: str, work: Path) -> Path:
    """The checkpoint directory: the bundled model, or random weights of tiny_starcoder's shape with its tokenizer."""
    if name == "bundled":
        return BUNDLED
    path = work / "116m"
    if not (path / "config.json").exists():
        import shutil

        import torch
        from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

        torch.manual_seed(0)
        GPTBigCodeForCausalLM(GPTBigCodeConfig(multi_query=True, **SHAPE_116M)).save_pretrained(str(path))
        for tokenizer_file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(BUNDLED / tokenizer_file, path / tokenizer_file)
    return path


LLAMA_TYPES = {"float32": "f32", "bfloat16": "bf16", "int8": "q8_0", "int4": "q4_0"}  # ours -> llama.cpp's


def gguf(ckpt: Path, work: Path, llama: Path, dtype: str = "float32") -> Path:
    kind = LLAMA_TYPES[dtype]
    out = work / f"{ckpt.name}-{kind}.gguf"
    if not out.exists():
        subprocess.run([sys.executable, "/work/shared/anchors/to_gguf.py", str(ckpt), str(out), "--type", kind,
                        "--llama", str(llama)], check=True, stdout=subprocess.DEVNULL)
    return out


def summary(latencies: list[float], prompt_n: list[int] | None = None, predicted: list[int] | None = None) -> dict:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    result = {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1)}
    if prompt_n:
        result.update(prompt_n_median=statistics.median(prompt_n), prompt_n_mean=round(statistics.mean(prompt_n), 1))
    if predicted:
        result["predicted_n_mean"] = round(statistics.mean(predicted), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["bundled", "116m"], default="bundled")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--cli-samples", type=int, default=5)
    parser.add_argument("--llama", type=Path, default=Path("/tmp/llama-anchor"), help="build_llama.sh's output")
    parser.add_argument("--llama-spm", action="store_true", help="also run llama-server with --spm-infill")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("BIGCODE_BENCH_DIR", "/tmp/bigcode-bench")))
    parser.add_argument("--fim-order", choices=["auto", "psm", "spm"], default="auto",
                        help="bigcode serve's prompt layout (auto = spm for FIM checkpoints)")
    parser.add_argument("--window", help="lines before,after the cursor that each request sends (llama.vim's "
                        "n_prefix,n_suffix); default 256,64, and 48,16 for the bundled model, whose 1,024-token context "
                        "the default would overflow (llama-server refuses such a request, bigcode serve cuts it)")
    parser.add_argument("--dtype", choices=list(LLAMA_TYPES), default="float32",
                        help="bigcode serve's --dtype; llama-server gets the same weights as f32, bf16, q8_0 or q4_0")
    parser.add_argument("--gap", type=float, default=0.2,
                        help="seconds of pause before each request (default 0.2): an editor asks after a pause in "
                             "typing, and both servers' threads go idle before the other's request (llama.cpp's "
                             "spin after its work, and ours, would otherwise take cores from the next request)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    window = tuple(int(n) for n in args.window.split(",")) if args.window else \
        ((48, 16) if args.model == "bundled" else (256, 64))

    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint(args.model, args.work)
    states = session(args.requests)
    bodies = [llama_vim_body(*state, window=window) for state in states]
    servers: dict[str, tuple[str, subprocess.Popen]] = {}
    logs = tempfile.mkdtemp(prefix="serve-session-")
    try:
        servers["bigcode serve"] = start_bigcode(free_port(), "--model", str(ckpt), "--fim-order", args.fim_order,
                                                 "--dtype", args.dtype, log=open(Path(logs) / "bigcode.log", "w"))
        binary = args.llama / "bin" / "llama-server"
        if binary.exists():
            model = gguf(ckpt, args.work, args.llama, args.dtype)
            context = json.loads((ckpt / "config.json").read_text())["n_positions"]
            variants = [("llama-server", [])] + ([("llama-server --spm-infill", ["--spm-infill"])] if args.llama_spm else [])
            for label, extra in variants:
                servers[label] = start_llama_server(
                    binary, model, free_port(), context, "--parallel", "1", *extra,
                    log=open(Path(logs) / f"{label.replace(' ', '_')}.log", "w"))
        else:
            print(f"note: {binary} not found (build it with /work/shared/anchors/build_llama.sh); skipping llama-server",
                  file=sys.stderr)
        for url, process in servers.values():
            wait_healthy(url, process)
            post(url + "/infill", {"input_prefix": "def warm_up():\n", "input_suffix": "\n", "n_predict": 4,
                                   "temperature": 0})
        results: dict[str, dict[str, list]] = {name: {"latency": [], "prompt_n": [], "predicted_n": []}
                                               for name in servers}
        names = list(servers)
        for i, body in enumerate(bodies):
            for name in (names if i % 2 == 0 else names[::-1]):
                time.sleep(args.gap)
                seconds, reply = post(servers[name][0] + "/infill", body)
                results[name]["latency"].append(seconds)
                results[name]["prompt_n"].append(reply["timings"]["prompt_n"])
                results[name]["predicted_n"].append(reply["timings"]["predicted_n"])
    finally:
        for _, process in servers.values():
            stop(process)

    report = {"model": args.model, "checkpoint": str(ckpt), "dtype": args.dtype, "requests": len(bodies),
              "gap_s": args.gap,
              "fim_order": args.fim_order,
              "window_lines": list(window),
              "servers": {name: summary(r["latency"], r["prompt_n"], r["predicted_n"]) for name, r in results.items()}}
    if args.cli_samples > 0:
        picks = sorted({round(k * (len(states) - 1) / max(args.cli_samples - 1, 1)) for k in range(args.cli_samples)})
        walls = []
        with tempfile.TemporaryDirectory() as tmp:
            for index in picks:
                lines, row, col = states[index]
                path = Path(tmp) / "textwrap_session.py"
                path.write_text("\n".join(lines) + "\n")
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "bigcode_cli", "complete", str(path), "--at", f"{row + 1}:{col + 1}",
                                "--model", str(ckpt), "--max-new-tokens", "16", "-t", "0", "--fim-order", "spm",
                                "--dtype", args.dtype],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                walls.append(time.perf_counter() - started)
        report["bigcode complete --at (per call)"] = summary(walls)
    ours = report["servers"]["bigcode serve"]["p50_ms"]
    report["ratios_p50"] = {name: round(s["p50_ms"] / ours, 2) for name, s in report["servers"].items()}
    if "bigcode complete --at (per call)" in report:
        report["ratios_p50"]["bigcode complete --at (per call)"] = round(
            report["bigcode complete --at (per call)"]["p50_ms"] / ours, 2)
    print_report(report, args.out)


if __name__ == "__main__":
    main()
