"""`bigcode classify` speed and memory: the native engine against transformers' own model, same process, same inputs.

    python benchmarks/classify_speed.py                         # shape tiny, 512 snippets, batch 1/8/32
    python benchmarks/classify_speed.py --shape 116m --snippets 256 --rounds 5 --memory-lines 20000
    python benchmarks/classify_speed.py --shape micro --snippets 32 --rounds 2 --memory-lines 200   # smoke run
    python benchmarks/classify_speed.py --model bigcode_cli/bundled/bigcode-tiny-langid --batch-sizes 32 \
        --rounds 7 --memory-lines 0                             # the bundled classifier, each engine's default dtype

Checkpoints: a random GPTBigCodeForSequenceClassification written once by transformers' save_pretrained
(under $BIGCODE_BENCH_DIR, default /tmp/bigcode-bench) with the bundled bigcode-tiny tokenizer:
`116m` (tiny_starcoder's shape: n_embd 768, 12 layers, 12 heads, vocab 49152), `tiny` (n_embd 256,
4 layers, vocab 8192) or `micro` (n_embd 64, 2 layers), 9 labels. Or --model DIR for any classifier.

Speed: snippets/s of the one batching service (bigcode_cli.pipelines.batching.Batcher: tokenize, length-sort,
pad, forward, logits) at each batch size, with the native runner (sdpa) and with transformers'
GPTBigCodeForSequenceClassification (sdpa) behind the same Batcher, so only the model differs.
Dtypes (--dtype): by default each engine's own default, what its user gets: ours `--dtype auto` (for a bf16
checkpoint bf16 where the CPU multiplies bf16 natively, else float32), transformers the checkpoint's stored
dtype; or one dtype for both. The report names the dtypes and whether this CPU multiplies bf16 natively.
Snippets come from data/langid/test.jsonl when it exists, else generated code lines. Runs are
interleaved batch by batch because the machines are shared and noisy: the snippets are cut into the
batches one pass of the service forms (length-sorted), each batch goes through the service with one
engine and then the other (the order swapped every round), and each engine's time is the sum over the
batches of their median over the rounds; the native/transformers ratio is reported.

Memory: the CLI (`python -m bigcode_cli classify`) runs in a subprocess on N and 10N input lines;
its peak RSS (ru_maxrss from wait4) should stay flat because input is read and written in chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {
    "116m": dict(n_embd=768, n_layer=12, n_head=12, vocab_size=49152),
    "tiny": dict(n_embd=256, n_layer=4, n_head=4, vocab_size=8192),
    "micro": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=8192),
}
LABELS = ["c", "go", "java", "javascript", "perl", "python", "ruby", "rust", "shell"]


def checkpoint(shape: str) -> Path:
    """The random classifier of a shape, written once by transformers, with the bundled tokenizer."""
    import shutil

    from transformers import GPTBigCodeConfig, GPTBigCodeForSequenceClassification

    root = Path(os.environ.get("BIGCODE_BENCH_DIR", "/tmp/bigcode-bench"))
    path = root / f"classify-{shape}"
    if not (path / "model.safetensors").exists():
        torch.manual_seed(0)
        id2label = dict(enumerate(LABELS))
        config = GPTBigCodeConfig(**SHAPES[shape], n_positions=1024, multi_query=True, num_labels=len(LABELS),
                                  id2label=id2label, label2id={v: k for k, v in id2label.items()}, pad_token_id=0,
                                  problem_type="single_label_classification")
        GPTBigCodeForSequenceClassification(config).save_pretrained(str(path))
        tokenizer = ROOT / "bigcode_cli" / "bundled" / "bigcode-tiny"
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (tokenizer / name).is_file():
                shutil.copyfile(tokenizer / name, path / name)
    return path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform says."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def snippets(n: int, seed: int = 0) -> list[str]:
    """n code snippets: the language-id test set when it is there, else generated lines."""
    data = ROOT / "data" / "langid" / "test.jsonl"
    rng = random.Random(seed)
    if data.is_file():
        texts = [json.loads(line)["text"] for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
        rng.shuffle(texts)
        if len(texts) >= n:
            return texts[:n]
    words = ["def", "return", "int", "for", "while", "if", "x", "y", "total", "print", "(", ")", "{", "}", "+", "=", ";"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 200))) for _ in range(n)]


def seconds(batcher, texts: list[str]) -> float:
    """Seconds for one pass of the batching service over `texts`."""
    started = time.perf_counter()
    batcher.run(texts)
    return time.perf_counter() - started


def batches_of(batcher, texts: list[str]) -> list[list[str]]:
    """`texts` cut into the batches one pass of the batching service forms (longest first), to time one by one."""
    order = sorted(range(len(texts)), key=lambda i: len(batcher.encode(texts[i]).ids), reverse=True)
    size = batcher.batch_size
    return [[texts[i] for i in order[begin:begin + size]] for begin in range(0, len(order), size)]


def engine_dtypes(model: Path, dtype: str) -> dict[str, str]:
    """The --dtype each engine loads with: `default` is each engine's own default (ours auto, transformers the
    checkpoint's stored dtype), anything else is used for both."""
    from bigcode_cli.model.weights import checkpoint_dtype, load_state_dict

    if dtype != "default":
        return {"native": dtype, "transformers": dtype}
    return {"native": "auto", "transformers": str(checkpoint_dtype(load_state_dict(model))).removeprefix("torch.")}


def measure_speed(model: Path, texts: list[str], batch_sizes: list[int], rounds: int, attn: str,
                  dtypes: dict[str, str]) -> list[dict]:
    """Medians of interleaved native / transformers runs at each batch size."""
    from bigcode_cli.pipelines.batching import Batcher
    from bigcode_cli.model.engine import load
    from bigcode_cli.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(model)
    native = load(model, "sequence-classification", engine="native", attn=attn, device="cpu", dtype=dtypes["native"])
    reference = load(model, "sequence-classification", engine="transformers", attn=attn, device="cpu",
                     dtype=dtypes["transformers"])
    print(f"dtypes: native {str(native.dtype).removeprefix('torch.')}, transformers "
          f"{str(reference.dtype).removeprefix('torch.')}", file=sys.stderr)
    rows = []
    for batch_size in batch_sizes:
        a = Batcher(native, tokenizer, batch_size=batch_size)
        b = Batcher(reference, tokenizer, batch_size=batch_size)
        warm = texts[: max(batch_size, 4)]
        a.run(warm), b.run(warm)
        batches = batches_of(a, texts)
        times: dict[Batcher, list[list[float]]] = {a: [[] for _ in batches], b: [[] for _ in batches]}
        for round_ in range(rounds):
            for i, batch in enumerate(batches):
                for batcher in ((a, b) if round_ % 2 == 0 else (b, a)):
                    times[batcher][i].append(seconds(batcher, batch))
        ours = [len(texts) / sum(t[r] for t in times[a]) for r in range(rounds)]  # per round, for the record
        theirs = [len(texts) / sum(t[r] for t in times[b]) for r in range(rounds)]
        row = {"batch_size": batch_size, "batches": len(batches),
               "native_per_s": len(texts) / sum(statistics.median(t) for t in times[a]),
               "transformers_per_s": len(texts) / sum(statistics.median(t) for t in times[b]),
               "native_rounds": ours, "transformers_rounds": theirs,
               "native_dtype": str(native.dtype).removeprefix("torch."),
               "transformers_dtype": str(reference.dtype).removeprefix("torch.")}
        row["ratio"] = row["native_per_s"] / row["transformers_per_s"]
        rows.append(row)
        print(f"batch {batch_size:>3}: native {row['native_per_s']:8.1f}/s  transformers "
              f"{row['transformers_per_s']:8.1f}/s  ratio {row['ratio']:.2f}x", file=sys.stderr)
    return rows


def peak_rss_mb(model: Path, lines: int, threads: int) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of the classify CLI run on `lines` input lines in a subprocess."""
    texts = snippets(200, seed=1)  # the same pool for N and 10N lines: only the input length changes
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        for i in range(lines):
            f.write(" ".join(texts[i % len(texts)].split()) + "\n")  # one snippet per line
        path = f.name
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    try:
        with open(path, "rb") as stdin, open(os.devnull, "wb") as devnull:
            started = time.perf_counter()
            child = subprocess.Popen([sys.executable, "-m", "bigcode_cli", "classify", "-m", str(model),
                                      "--format", "jsonl", "--input-format", "lines"], stdin=stdin, stdout=devnull, stderr=subprocess.PIPE, env=env)
            _, status, usage = os.wait4(child.pid, 0)
            seconds = time.perf_counter() - started
            err = child.stderr.read().decode(errors="replace")
            child.returncode = os.waitstatus_to_exitcode(status)
    finally:
        os.unlink(path)
    if child.returncode != 0:
        raise SystemExit(f"classify failed on {lines} lines (exit {child.returncode}): {err.strip()[-500:]}")
    return usage.ru_maxrss / 1024, seconds  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--model", type=Path, help="a sequence-classification checkpoint instead of --shape")
    parser.add_argument("--snippets", type=int, default=512, help="snippets per timed pass")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per batch, engine and batch size")
    parser.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"])
    parser.add_argument("--dtype", default="default", help="default (each engine's own) or one dtype for both")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (and children's)")
    parser.add_argument("--memory-lines", type=int, default=5000, help="N for the N vs 10N peak-RSS runs (0: skip)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args()

    from bigcode_cli.model.runtime import cpu_multiplies_bf16

    torch.set_num_threads(args.threads)
    model = args.model or checkpoint(args.shape)
    texts = snippets(args.snippets)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    result = {"model": str(model), "snippets": len(texts), "threads": args.threads, "attn": args.attn,
              "torch": torch.__version__, "cpu": cpu_name(), "cpu_multiplies_bf16": cpu_multiplies_bf16(),
              "speed": measure_speed(model, texts, batch_sizes, args.rounds, args.attn,
                                     engine_dtypes(model, args.dtype))}
    if args.memory_lines:
        memory = []
        for lines in (args.memory_lines, 10 * args.memory_lines):
            rss, seconds = peak_rss_mb(model, lines, args.threads)
            memory.append({"lines": lines, "peak_rss_mb": rss, "seconds": seconds})
            print(f"{lines:>8} lines: peak RSS {rss:7.1f} MB in {seconds:6.1f}s", file=sys.stderr)
        result["memory"] = memory
        result["rss_ratio_10x"] = memory[1]["peak_rss_mb"] / memory[0]["peak_rss_mb"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"model {model} ({len(texts)} snippets, {args.threads} threads, attn {args.attn}, {args.rounds} "
              f"interleaved rounds, medians)")
        print(f"cpu {result['cpu']} ({'native' if result['cpu_multiplies_bf16'] else 'emulated'} bf16)")
        print(f"{'batch':>5}  {'native/s':>10}  {'transformers/s':>14}  {'ratio':>6}  dtypes")
        for row in result["speed"]:
            print(f"{row['batch_size']:>5}  {row['native_per_s']:>10.1f}  {row['transformers_per_s']:>14.1f}  "
                  f"{row['ratio']:>5.2f}x  {row['native_dtype']} / {row['transformers_dtype']}")
        for row in result.get("memory", []):
            print(f"{row['lines']:>8} lines -> peak RSS {row['peak_rss_mb']:.1f} MB ({row['seconds']:.1f}s)")
        if "rss_ratio_10x" in result:
            print(f"peak RSS at 10x the input: {result['rss_ratio_10x']:.2f}x")


if __name__ == "__main__":
    main()
