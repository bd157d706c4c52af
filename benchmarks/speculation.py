"""n-gram speculation (`--speculate ngram`) against one token a step, on two traces, and llama-server's own
n-gram speculation on the same weights and prompts.

    python benchmarks/speculation.py                                  # the bundled model, float32
    python benchmarks/speculation.py --dtype bfloat16 --repeats 5
    python benchmarks/speculation.py --llama /tmp/llama-anchor --out r.json
    python benchmarks/speculation.py --model 116m --dtype int8      # random weights of tiny_starcoder's shape

Traces (prompts from the standard library's textwrap.py and string.py, NEW tokens each, ignore end-of-text):
- retype: a window of the file followed by the header of a function in it, written again: the completion
  re-types text present in the prompt (a function copied to start a variant, a test mirroring it). Greedy.
- fresh: a window of the file ending at a function header that is not in it, continued by sampling
  (temperature 1.0, no top-k or top-p, one seed per prompt): text that does not repeat. Sampling draws the same random numbers
  with and without speculation, so both runs make the same tokens and do the same work.
- forced (ours only): the retype prompts, greedy, with every draft replaced by what the model is about to
  write (its output without speculation, from an untimed run first): acceptance is 100% by construction, so
  this measures the mechanism alone, what a step of 1 + k tokens buys when the drafts are right, on any
  weights (llama-server has no such hook).
Acceptance needs a model that copies from its context: that is the bundled model (trained). On random
weights (--model 116m, tiny_starcoder's shape) acceptance means nothing: such a model soon repeats a few
tokens over and over, so its drafts come from its own output and are nearly all accepted. That run measures
the mechanism (what a step of several tokens costs on a model whose step is a read of its weights), not
what a user gets.

Each prompt runs without and with speculation in the same loop, the order alternating (A B, then B A), in
this process (no server), the model loaded once; decode tokens/s is (tokens - 1) / decode time. Reported per
trace: the median over runs of each mode's tokens/s and of the per-prompt ratio, the acceptance rate
(accepted / drafted), and whether every output was the same token for token. With --llama, llama-server
(built by /work/shared/anchors/build_llama.sh) serves the same weights as GGUF with the same threads, once
plainly and once per --spec-type, and gets the same prompts (greedy / seeded, `ignore_eos`); its
`timings.predicted_per_second` is its decode speed. The machine is shared: the load is printed before and
after, and a run with a busy neighbour should be repeated.
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
from contextlib import contextmanager, nullcontext
from pathlib import Path

SOURCES = ("textwrap.py", "string.py")
WINDOW = 40  # lines of the file before each function header


def _functions(lines: list[str]) -> list[int]:
    """Indices of the lines that start a function whose body is at least 6 lines."""
    starts = []
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith("def ") and i + 6 < len(lines) and lines[i + 6].startswith(" " * (len(line) - len(stripped) + 4)):
            starts.append(i)
    return starts


def traces(prompts: int) -> dict[str, list[str]]:
    """The prompts of the two traces, `prompts` each."""
    retype, fresh = [], []
    for name in SOURCES:
        lines = (Path(sysconfig.get_paths()["stdlib"]) / name).read_text().splitlines()
        for start in _functions(lines):
            body_end = min(start + 14, len(lines))
            window = lines[max(0, body_end - WINDOW) : body_end]  # the function (its first 14 lines) and before it
            retype.append("\n".join(window) + "\n\n\n" + lines[start] + "\n")
            fresh.append("\n".join(lines[max(0, start - WINDOW) : start + 1]) + "\n")
    step_r, step_f = max(1, len(retype) // prompts), max(1, len(fresh) // prompts)
    return {"retype": retype[::step_r][:prompts], "fresh": fresh[::step_f][:prompts]}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


@contextmanager
def drafts_forced(continuation: list[int]):
    """While inside, every NgramDrafter the decoding loop makes drafts `continuation`'s next tokens (the output
    it is known to make) instead of looking up n-grams: the forced trace."""
    from bigcode_cli.generation import ngram_draft

    real = ngram_draft.NgramDrafter

    class Forced(real):
        def __init__(self, ids):
            super().__init__(ids)
            self.prompt_length = len(self.ids)

        def copy(self):
            twin = Forced(self.ids[: self.prompt_length])
            twin.ids = list(self.ids)
            return twin

        def draft(self, k: int) -> list[int]:
            made = len(self.ids) - self.prompt_length
            return list(continuation[made : made + max(k, 0)])

    ngram_draft.NgramDrafter = Forced
    try:
        yield
    finally:
        ngram_draft.NgramDrafter = real


def run_ours(args: argparse.Namespace, prompts: dict[str, list[str]], ckpt: Path) -> dict:
    import torch

    from bigcode_cli.generation.loop import generate
    from bigcode_cli.generation.sampling import SamplingParams
    from bigcode_cli.store.loader import open_model

    torch.set_num_threads(args.threads)
    loaded = open_model(str(ckpt), "causal-lm", dtype=args.dtype)
    runner, tokenizer = loaded.runner, loaded.tokenizer
    results = {}
    with torch.inference_mode():
        generate(runner, tokenizer, tokenizer.encode("def warm():\n"), max_new_tokens=8,
                 params=SamplingParams(temperature=0))
        known = {}  # the forced trace's outputs without speculation, per prompt
        for trace, texts in {**prompts, "forced": prompts["retype"]}.items():
            speeds = {"off": [], "ngram": []}
            ratios, drafted, accepted, same = [], 0, 0, True
            for repeat in range(args.repeats):
                for i, text in enumerate(texts):
                    params = SamplingParams(temperature=1.0, top_p=1.0, seed=i) if trace == "fresh" else \
                        SamplingParams(temperature=0)
                    ids = tokenizer.encode(text)
                    if trace == "forced" and i not in known:
                        known[i] = generate(runner, tokenizer, ids, max_new_tokens=args.new_tokens, params=params,
                                            ignore_eos=True, speculate="off").samples[0].token_ids
                    made = {}
                    order = ("off", "ngram") if (repeat + i) % 2 == 0 else ("ngram", "off")
                    for mode in order:
                        with drafts_forced(known[i]) if trace == "forced" and mode == "ngram" else nullcontext():
                            made[mode] = generate(runner, tokenizer, ids, max_new_tokens=args.new_tokens,
                                                  params=params, ignore_eos=True, speculate=mode)
                        speeds[mode].append(made[mode].tokens_per_s)
                    ratios.append(made["ngram"].tokens_per_s / made["off"].tokens_per_s)
                    same = same and made["ngram"].samples[0].token_ids == made["off"].samples[0].token_ids
                    drafted += made["ngram"].draft_tokens
                    accepted += made["ngram"].draft_accepted
            results[trace] = {
                "off_tok_s": round(statistics.median(speeds["off"]), 1),
                "ngram_tok_s": round(statistics.median(speeds["ngram"]), 1),
                "ratio": round(statistics.median(ratios), 3),
                "acceptance": round(accepted / drafted, 3) if drafted else None,
                "drafted_per_run": round(drafted / len(ratios), 1),
                "accepted_per_run": round(accepted / len(ratios), 1),
                "identical_output": same,
            }
    return results


def run_llama(args: argparse.Namespace, prompts: dict[str, list[str]], ckpt: Path, work: Path) -> dict:
    from serve_session import free_port, gguf, post, wait_healthy

    llama = Path(args.llama)
    model = gguf(ckpt, work, llama, args.dtype)
    kinds = ["none", *args.spec_type]
    servers = {}
    try:
        for kind in kinds:
            port = free_port()
            extra = [] if kind == "none" else ["--spec-type", kind, "--spec-draft-n-max", str(args.llama_draft_max)]
            servers[kind] = (f"http://127.0.0.1:{port}", subprocess.Popen(
                [str(llama / "bin" / "llama-server"), "-m", str(model), "--port", str(port), "-t", str(args.threads),
                 "-c", "1024", "-np", "1", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for url, process in servers.values():
            wait_healthy(url, process)
        results = {}
        for trace, texts in prompts.items():
            speeds: dict[str, list[float]] = {kind: [] for kind in kinds}
            ratios: dict[str, list[float]] = {kind: [] for kind in kinds[1:]}
            drafted = {kind: 0 for kind in kinds}
            accepted = {kind: 0 for kind in kinds}
            for repeat in range(args.repeats):
                for i, text in enumerate(texts):
                    body = {"prompt": text, "n_predict": args.new_tokens, "ignore_eos": True, "cache_prompt": False,
                            "temperature": 0 if trace == "retype" else 1.0, "top_k": 0, "top_p": 1.0, "seed": i}
                    order = kinds if (repeat + i) % 2 == 0 else kinds[::-1]
                    got = {}
                    for kind in order:
                        _, reply = post(servers[kind][0] + "/completion", body)
                        timings = reply["timings"]
                        got[kind] = timings["predicted_per_second"]
                        speeds[kind].append(got[kind])
                        drafted[kind] += timings.get("draft_n", 0)
                        accepted[kind] += timings.get("draft_n_accepted", 0)
                    for kind in kinds[1:]:
                        ratios[kind].append(got[kind] / got["none"])
            results[trace] = {"none_tok_s": round(statistics.median(speeds["none"]), 1)}
            for kind in kinds[1:]:
                results[trace][f"{kind}_tok_s"] = round(statistics.median(speeds[kind]), 1)
                results[trace][f"{kind}_ratio"] = round(statistics.median(ratios[kind]), 3)
                results[trace][f"{kind}_acceptance"] = round(accepted[kind] / drafted[kind], 3) if drafted[kind] else None
        return results
    finally:
        for _, process in servers.values():
            process.terminate()
        for _, process in servers.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["bundled", "116m"], default="bundled")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "int8", "int4"], default="float32")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per trace")
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads for both engines (the machine is shared)")
    parser.add_argument("--llama", help="llama.cpp build directory (with bin/llama-server) to compare with")
    parser.add_argument("--spec-type", action="append", default=None,
                        help="llama-server --spec-type to compare (repeatable; default ngram-simple and ngram-mod)")
    parser.add_argument("--llama-draft-max", type=int, default=8, help="llama-server --spec-draft-n-max")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args()
    args.spec_type = args.spec_type or ["ngram-simple", "ngram-mod"]
    prompts = traces(args.prompts)
    report = {"model": args.model, "cpu": _cpu(), "cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()[0],
              "dtype": args.dtype, "threads": args.threads, "new_tokens": args.new_tokens, "repeats": args.repeats,
              "prompts": {k: len(v) for k, v in prompts.items()}}
    started = time.perf_counter()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve_session import checkpoint

    with tempfile.TemporaryDirectory(prefix="bigcode-spec-") as work:
        ckpt = checkpoint(args.model, Path(work))
        report["bigcode"] = run_ours(args, prompts, ckpt)
        if args.llama:
            report["llama_server"] = run_llama(args, prompts, ckpt, Path(work))
    report["load_after"] = os.getloadavg()[0]
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
