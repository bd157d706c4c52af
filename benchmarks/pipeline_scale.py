"""`bigcode classify` at scale: the local path, Ray with 1 and 2 workers, and transformers behind the same
batcher, in snippets/s and peak RSS, on one machine, interleaved.

    python benchmarks/pipeline_scale.py                                  # 20,000 snippets, 2 rounds
    python benchmarks/pipeline_scale.py --snippets 2000 --rounds 3       # a shorter run
    python benchmarks/pipeline_scale.py --tolerance 500                  # bf16 vs fp32 scores only

Every measurement runs in a fresh child process (`--one NAME`), so each has its own peak RSS (the sum
over the child and everything it started: Ray's raylet, GCS and workers, sampled every 0.2 s) and
nothing warms up for the next; configurations are interleaved round by round and medians reported.

- `native bN`: the one batching service (pipelines.batching) with our model, `--dtype auto` (this
  machine's choice), batch N: what `bigcode classify` runs.
- `transformers bN`: transformers' GPTBigCodeForSequenceClassification behind the same batcher, in the
  dtype a transformers user gets by default (the checkpoint's: bfloat16 for the bundled models).
- `ray wK`: `run_job` (what `bigcode classify --ray` runs) on a local Ray with K workers, batch 32;
  the time counts from submitting the job to the last record (actors start and load the model inside
  it), `ray.init` is reported apart.

Snippets: the held-out language-id test set (data/langid/test.jsonl) when present, repeated to the
count asked for; else generated code lines (see classify_speed.snippets).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
MODEL = ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny-langid"


def texts(n: int) -> list[str]:
    """n snippets: the held-out set (cycled) when present, else generated ones."""
    from classify_speed import snippets

    pool = snippets(min(n, 2700))
    return [pool[i % len(pool)] for i in range(n)]


def _descendants_rss_kb(root: int) -> int:
    """RSS of `root` and every process below it, in KiB (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields.get("PPid", "0").strip())
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
    total, stack = 0, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


class PeakRss:
    """The largest RSS sum over this process and its descendants while running."""

    def __init__(self) -> None:
        self.peak, self.done = 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, _descendants_rss_kb(os.getpid()))
            self.done.wait(0.2)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, _descendants_rss_kb(os.getpid()))


def run_one(name: str, n: int, model: Path) -> dict:
    """One measurement in this (fresh) process."""
    data = texts(n)
    with PeakRss() as rss:
        if name.startswith("ray"):
            import ray

            from bigcode_cli.pipelines.ray_job import JobSpec, run_job

            workers = int(name.split("w")[1])
            started = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="error")
            init_s = time.perf_counter() - started
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "in.jsonl"
                path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(data)))
                out: list = []
                started = time.perf_counter()
                total, failed = run_job(JobSpec("sequence-classification", str(model), input_format="jsonl",
                                                workers=workers), [str(path)], out.extend)
                seconds = time.perf_counter() - started
            ray.shutdown()
            result = {"init_s": init_s, "records": total, "failed": failed}
        else:
            from bigcode_cli.model.engine import load
            from bigcode_cli.pipelines.batching import Batcher
            from bigcode_cli.text.tokenizer import Tokenizer

            engine, batch = name.split(" b")
            dtype = "bfloat16" if engine == "transformers" else "auto"  # each engine's default for a bf16 checkpoint
            runner = load(model, "sequence-classification", engine=engine, dtype=dtype, device="cpu")
            batcher = Batcher(runner, Tokenizer.from_dir(model), batch_size=int(batch))
            batcher.run(data[:64])  # warm-up
            started = time.perf_counter()
            for begin in range(0, len(data), 2048):  # the chunks `bigcode classify` scores at a time
                batcher.run(data[begin:begin + 2048])
            seconds = time.perf_counter() - started
            result = {"dtype": str(runner.dtype).removeprefix("torch.")}
    return dict(result, name=name, snippets=n, seconds=seconds, per_s=n / seconds, peak_rss_mb=rss.peak / 1024)


def tolerance(n: int, model: Path) -> dict:
    """bf16 vs fp32 scores of our model on n snippets: the largest |difference| and how often the label differs."""
    from bigcode_cli.model.engine import load
    from bigcode_cli.pipelines.batching import Batcher
    from bigcode_cli.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(model)
    data = texts(n)
    runs = {d: Batcher(load(model, "sequence-classification", dtype=d, device="cpu"), tokenizer).run(data)
            for d in ("float32", "bfloat16")}
    diffs, flips = [], 0
    for a, b in zip(runs["float32"], runs["bfloat16"]):
        pa, pb = a.logits.softmax(-1), b.logits.softmax(-1)
        diffs.append((pa - pb).abs().max().item())
        flips += int(pa.argmax() != pb.argmax())
    diffs.sort()
    return {"snippets": n, "max_abs_prob_diff": diffs[-1], "p99_abs_prob_diff": diffs[int(0.99 * (n - 1))],
            "median_abs_prob_diff": statistics.median(diffs), "label_changes": flips}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snippets", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--configs", default="native b1,native b8,native b32,transformers b1,transformers b8,"
                                              "transformers b32,ray w1,ray w2")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--tolerance", type=int, default=0, help="only compare bf16 with fp32 scores on N snippets")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.snippets, args.model)))
        return
    if args.tolerance:
        print(json.dumps(tolerance(args.tolerance, args.model), indent=2))
        return
    configs = [c.strip() for c in args.configs.split(",")]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for round_ in range(args.rounds):
        for config in configs:
            done = subprocess.run([sys.executable, __file__, "--one", config, "--snippets", str(args.snippets),
                                   "--model", str(args.model)], capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(f"{config} failed: {done.stderr.strip()[-800:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results[config].append(row)
            print(f"round {round_ + 1} {config:>16}: {row['per_s']:8.1f} snippets/s, peak RSS {row['peak_rss_mb']:7.0f} MB"
                  + (f", ray.init {row['init_s']:.1f}s" if "init_s" in row else ""), file=sys.stderr, flush=True)
    print(f"{args.snippets} snippets, {args.rounds} interleaved rounds, medians, {os.cpu_count()} CPUs")
    print("| configuration | dtype | snippets/s | vs transformers same batch | peak RSS MB |")
    print("|---|---|---|---|---|")
    medians = {c: statistics.median(r["per_s"] for r in rows) for c, rows in results.items()}
    for config, rows in results.items():
        batch = config.split(" b")[1] if " b" in config else "32"
        reference = medians.get(f"transformers b{batch}")
        ratio = f"{medians[config] / reference:.2f}x" if reference else "-"
        rss = statistics.median(r["peak_rss_mb"] for r in rows)
        print(f"| {config} | {rows[0].get('dtype', 'auto')} | {medians[config]:.1f} | {ratio} | {rss:.0f} |")


if __name__ == "__main__":
    main()
