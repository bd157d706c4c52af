"""One prepared run on a lent GPU: environment, parity with transformers on CUDA, greedy generation, speed.

    cd repo && PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/gpu_check.py --out $OUT
    PYTHONPATH=. python benchmarks/gpu_check.py --out /tmp/gpu-check --device cpu --quick --threads 1  # on a CPU

Writes OUT/gpu_check.json (every number) and OUT/gpu_check.md (a summary), both rewritten after each
check, so a run cut short still leaves what it measured. Each check, and each row inside one, records
its failure as the exception's first line and the run goes on. Checkpoints are written under --work
(default: a fresh temporary directory), never under OUT. Needs torch, transformers, tokenizers,
safetensors, typer and rich; not prompt-toolkit, and flash-attn only for the flash rows.

Checks:
  environment  versions, GPU, flash-attn, what `--attn auto` resolves to, the one-line `--attn flash` error
  parity       native vs transformers' own classes on random save_pretrained checkpoints (MQA, MHA; causal-lm,
               sequence- and token-classification) and the bundled trained bigcode-tiny: float32 logits;
               bfloat16/float16 error against float32 next to transformers' own; left-padded batch vs rows
               alone; decoding with a cache vs one full forward; flash rows when flash-attn imports
  generation   greedy tokens of bigcode_cli.generation.loop.generate() vs transformers' generate()
  speed        batch-1 greedy decode tokens/s and prefill time, native sdpa vs transformers sdpa on the 116M
               shape of benchmarks/model_speed.py, interleaved rounds, medians; a batch-8 decode row

Verdicts (`ok` per row; null = a measurement, a greedy difference at a near-tie, or a half dtype too narrow
for the model in both engines alike):
  float32      max |ours - transformers| <= FP32_TOL * max(1, max |logit|)
  half         our max error against float32 <= HALF_RATIO * the reference's own + HALF_SLACK * max(1, max |logit|)
               (reference: transformers in the same dtype and attention; for padding and decoding, our own
               unpadded full forward in that dtype)
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

STARTED = time.perf_counter()  # the time budget counts from here, imports included
REPO = Path(__file__).resolve().parent.parent
for _extra in (REPO / "benchmarks", REPO / "tests", REPO):  # model_speed.SHAPES, checkpoints.save_checkpoint
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bigcode_cli.model import engine  # noqa: E402
from bigcode_cli.model.attention import flash_problem, resolve_backend  # noqa: E402
from bigcode_cli.bench import (  # noqa: E402
    benchmark_prompt,
    decode_rate,
    generate_seconds,
    interleave,
    prefill_seconds,
    reference_generate_seconds,
    reference_prefill_seconds,
)
from bigcode_cli.errors import BackendError  # noqa: E402
from bigcode_cli import tasks as bigcode_tasks  # noqa: E402

BUNDLED = REPO / "bigcode_cli" / "bundled" / "bigcode-tiny"  # trained, MQA, stored in bfloat16, with a tokenizer
TASKS = tuple(bigcode_tasks.TASKS)
HALF = ("bfloat16", "float16")
FP32_TOL = 1e-4
HALF_RATIO = 1.5
HALF_SLACK = 1e-3
TIE_EPS = 4  # a greedy difference is a near-tie when the float32 top-2 gap < TIE_EPS * eps(dtype) * max |logit|


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the full GPU run, or --quick (tiny, for trying the script on a CPU)."""

    parity_shape: dict
    lengths: dict  # input sizes of the parity rows
    gen_tokens: int
    speed_shape: str
    speed_dtypes: tuple[str, ...]
    prompts: tuple[int, ...]
    new_tokens: int
    rounds: int
    batch: int


FULL = Plan(
    parity_shape=dict(n_embd=256, n_layer=3, n_head=4, vocab_size=512, n_positions=256),
    lengths=dict(causal=(3, 64), classify=[61, 9, 33, 1], padded=[40, 7, 23], decode=(2, 48)),
    gen_tokens=32, speed_shape="116m", speed_dtypes=("bfloat16", "float16", "float32"), prompts=(128, 1024),
    new_tokens=64, rounds=3, batch=8,
)
QUICK = Plan(
    parity_shape=dict(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=128),
    lengths=dict(causal=(2, 24), classify=[19, 5, 1], padded=[14, 3, 9], decode=(2, 20)),
    gen_tokens=32, speed_shape="tiny", speed_dtypes=("bfloat16", "float32"), prompts=(16, 64),
    new_tokens=8, rounds=1, batch=2,
)


@dataclass
class Context:
    """What every check shares: where it runs, the plan, the scratch directory, the clock, and flash-attn."""

    device: torch.device
    plan: Plan
    work: Path
    budget_s: float
    flash_error: str | None  # why flash_attn does not import; None when it does
    started: float = STARTED
    paths: dict = field(default_factory=dict)  # (variant, task) -> checkpoint directory

    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.perf_counter() - self.started

    def over_budget(self) -> bool:
        """Whether the time budget is spent: later speed settings are then skipped."""
        return self.elapsed() > self.budget_s

    def log(self, message: str) -> None:
        """One progress line on stderr, stamped with the elapsed time."""
        print(f"[{self.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)

    def half_dtypes(self) -> tuple[str, ...]:
        """The half-precision dtypes this device runs (float16 is refused on a CPU)."""
        return HALF if self.device.type != "cpu" else ("bfloat16",)

    def attns(self, dtype: str) -> tuple[str, ...]:
        """Attention backends to compare in a dtype: flash only in half precision with flash-attn present."""
        flash = dtype in HALF and self.flash_error is None and self.device.type == "cuda"
        return ("eager", "sdpa", "flash") if flash else ("eager", "sdpa")


# ---------------------------------------------------------------------------------------------- small helpers


def one_line(exc: BaseException) -> str:
    """The exception's type and first non-empty line of its message, at most 300 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def flash_import_error() -> str | None:
    """Why `import flash_attn` fails here, or None when it imports."""
    try:
        importlib.import_module("flash_attn")
    except Exception as exc:  # an ImportError, or a broken build failing some other way
        return one_line(exc)
    return None


def free_memory() -> None:
    """Drop unreferenced models and give cached GPU memory back (quietly: a broken CUDA context is a row's news)."""
    gc.collect()
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def gpu_peak_gib() -> float | None:
    """The most GPU memory torch held since the last call, in GiB; None without a (working) GPU."""
    try:
        if not torch.cuda.is_available():
            return None
        peak = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        return peak
    except Exception:
        return None


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| in float32; nan when either holds a nan or an infinity."""
    return (a.float() - b.float()).abs().max().item()


def scale_of(logits: torch.Tensor) -> float:
    """max(1, max |logit|): what the tolerances are relative to."""
    return max(1.0, logits.float().abs().max().item())


def half_verdict(ours_err: float, ref_err: float, scale: float) -> bool | None:
    """Our half-precision error is at most HALF_RATIO times the reference's, plus a little slack.

    None when neither is finite: the dtype cannot hold this model's activations, whoever runs it.
    """
    if not math.isfinite(ours_err):
        return None if not math.isfinite(ref_err) else False
    return ours_err <= HALF_RATIO * ref_err + HALF_SLACK * scale


def rounded(value: Any) -> Any:
    """Numbers to 4 significant digits for reading; nan and infinities as text (JSON has none)."""
    if isinstance(value, float):
        return f"{value}" if not math.isfinite(value) else float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def where(exc: BaseException) -> str:
    """file:line function of the innermost frame an exception went through."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}" if frames else ""


def attempt(ctx: Context, rows: list[dict], row: dict, fill: Callable[..., None], *args: Any) -> None:
    """Append `row`, filled in by fill(row, *args); a failure marks it not ok with its one-line error."""
    rows.append(row)
    label = " ".join(str(v) for k, v in row.items() if k != "check")
    try:
        fill(row, *args)
    except Exception as exc:
        row["ok"] = False
        row["error"] = one_line(exc)
        row["error_at"] = where(exc)
        ctx.log(f"  {row.get('check', '')} {label}: {row['error']}")
        free_memory()
        return
    ctx.log(f"  {row.get('check', '')} {label}: ok={row.get('ok')}")


def optional(row: dict, key: str, compute: Callable[[], Any]) -> None:
    """row[key] = compute(), or row[key + '_error'] = its one-line error: extra information, not a verdict."""
    try:
        row[key] = compute()
    except Exception as exc:
        row[f"{key}_error"] = one_line(exc)


def token_ids(batch: int, length: int, vocab: int, seed: int, device: torch.device) -> torch.Tensor:
    """(batch, length) random ids in [3, vocab), the same for a given seed on any device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=generator).to(device)


# ---------------------------------------------------------------------------------------------- report


class Report:
    """Results of every check, written to OUT as JSON and Markdown after each one."""

    def __init__(self, out: Path, meta: dict) -> None:
        self.out = out
        self.meta = meta
        self.checks: dict[str, dict] = {}

    def run(self, ctx: Context, name: str, check: Callable[[dict, Context], None]) -> None:
        """Run one check into its own entry; whatever it raises is recorded and the run goes on."""
        entry: dict[str, Any] = {"status": "running", "rows": []}
        self.checks[name] = entry
        ctx.log(f"{name} ...")
        started = time.perf_counter()
        try:
            check(entry, ctx)
        except Exception as exc:
            entry["error"] = one_line(exc)
            entry["traceback_tail"] = traceback.format_exc().splitlines()[-6:]
            ctx.log(f"{name} stopped: {entry['error']}")
        finally:
            entry["seconds"] = time.perf_counter() - started
            entry["status"] = self.status(entry)
            entry["gpu_peak_gib"] = gpu_peak_gib()
            free_memory()
            self.meta["elapsed_s"] = ctx.elapsed()
            self.write(ctx)
        ctx.log(f"{name}: {entry['status']} in {entry['seconds']:.1f}s")

    @staticmethod
    def status(entry: dict) -> str:
        """error (the check itself stopped), fail (a row is not ok), or ok."""
        if "error" in entry:
            return "error"
        if any(row.get("ok") is False for row in entry["rows"]):
            return "fail"
        return "ok"

    def write(self, ctx: Context) -> None:
        """gpu_check.json and gpu_check.md under OUT; a failure to write is logged, not raised."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            data = rounded({"meta": self.meta, "checks": self.checks})
            (self.out / "gpu_check.json").write_text(json.dumps(data, indent=1) + "\n")
            (self.out / "gpu_check.md").write_text(markdown(data))
        except Exception as exc:
            ctx.log(f"could not write the results: {one_line(exc)}")


def markdown(data: dict) -> str:
    """A readable summary: the run, each check's status, info and rows as tables."""
    meta = data["meta"]
    lines = ["# GPU check", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    lines += ["", "| check | status | seconds | rows ok / not ok / other | error |", "|---|---|---|---|---|"]
    for name, entry in data["checks"].items():
        rows = entry["rows"]
        counts = [sum(row.get("ok") is v for row in rows) for v in (True, False, None)]
        lines.append(f"| {name} | {entry['status']} | {entry.get('seconds', '')} | {' / '.join(map(str, counts))} "
                     f"| {_cell(entry.get('error', ''))} |")
    for name, entry in data["checks"].items():
        peak = entry.get("gpu_peak_gib")
        lines += ["", f"## {name}: {entry['status']}", "",
                  f"{entry.get('seconds')} s" + (f", GPU peak {peak} GiB" if peak is not None else ""), ""]
        if "error" in entry:
            lines += [f"error: `{entry['error']}`", ""]
        lines += [f"- {key}: {_cell(value)}" for key, value in entry.get("info", {}).items()]
        groups: dict[str, list[dict]] = {}
        for row in entry["rows"]:
            groups.setdefault(row.get("check", ""), []).append(row)
        for rows in groups.values():  # one table per kind of row, so each has only its own columns
            lines += [""] + _table(rows)
    return "\n".join(lines) + "\n"


def _table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------- 1. environment


def check_environment(entry: dict, ctx: Context) -> None:
    """Versions and GPU; flash-attn; what `--attn auto` picks; the one-line error of `--attn flash`."""
    info = entry["info"] = environment_info(ctx)
    ctx.log(f"  torch {info['torch']}, transformers {info['transformers']}, gpu {info.get('gpu')}, "
            f"flash_attn {info['flash_attn']} ({info['flash_attn_import']})")
    rows = entry["rows"]
    for dtype in ("bfloat16", "float16", "float32"):
        attempt(ctx, rows, {"check": "auto backend", "dtype": dtype}, auto_backend_row, ctx)
    attempt(ctx, rows, {"check": "resolve_backend('flash')"}, flash_resolve_row, ctx)
    attempt(ctx, rows, {"check": "engine.load --attn flash"}, flash_load_row, ctx)
    attempt(ctx, rows, {"check": "bigcode generate --attn flash"}, flash_cli_row, ctx)


def environment_info(ctx: Context) -> dict:
    """Versions, the GPU, float32 matmul settings and flash-attn, as one flat dict."""
    from importlib import metadata

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "torch_cuda": torch.version.cuda, "cpu_threads": torch.get_num_threads()}
    for package in ("transformers", "tokenizers", "safetensors", "typer", "rich", "prompt-toolkit", "flash-attn"):
        try:
            info[package.replace("-", "_")] = metadata.version(package)
        except Exception:  # not installed
            info[package.replace("-", "_")] = None
    info["flash_attn_import"] = ctx.flash_error or "ok"
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=props.total_memory / 2**30, gpu_count=torch.cuda.device_count())
    info["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    for name in ("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NVIDIA_TF32_OVERRIDE"):
        if name in os.environ:
            info[name] = os.environ[name]
    return info


def auto_backend_row(row: dict, ctx: Context) -> None:
    """What `--attn auto` resolves to in the row's dtype, against what flash_problem says it should be."""
    dtype = getattr(torch, row["dtype"])
    problem = flash_problem(ctx.device, dtype)
    row["picked"] = resolve_backend("auto", ctx.device, dtype).name
    row["flash_problem"] = problem
    row["ok"] = row["picked"] == ("flash" if problem is None else "sdpa")


def _flash_message_row(row: dict, ctx: Context, attempt_flash: Callable[[], Any]) -> None:
    """Run something with --attn flash: without flash-attn it must raise a one-line BackendError."""
    try:
        attempt_flash()
    except BackendError as exc:
        message = str(exc)
        row.update(raised="BackendError", message=message, one_line="\n" not in message)
        row["ok"] = "\n" not in message and "--attn flash is unavailable" in message and ctx.flash_error is not None
        return
    row["raised"] = None
    row["ok"] = ctx.flash_error is None and ctx.device.type == "cuda"


def flash_resolve_row(row: dict, ctx: Context) -> None:
    """resolve_backend('flash', device, bfloat16), what every loader asks first."""
    _flash_message_row(row, ctx, lambda: resolve_backend("flash", ctx.device, torch.bfloat16))


def flash_load_row(row: dict, ctx: Context) -> None:
    """engine.load of the bundled model with attn='flash' in bfloat16."""
    _flash_message_row(row, ctx, lambda: engine.load(BUNDLED, "causal-lm", attn="flash", device=ctx.device.type,
                                                     dtype="bfloat16"))


def flash_cli_row(row: dict, ctx: Context) -> None:
    """The command line a user types, in a fresh process: exit code 1 and one `error:` line without flash-attn."""
    argv = ["generate", "def add(a, b):", "-m", str(BUNDLED), "--attn", "flash", "--device", ctx.device.type,
            "--dtype", "bfloat16", "--max-new-tokens", "4", "-t", "0"]
    code = f"import sys; from bigcode_cli.cli.app import run; sys.exit(run({argv!r}))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               BIGCODE_HOME=str(ctx.work / "bigcode_home"), NO_COLOR="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=env)
    err = done.stderr.strip().splitlines()
    row.update(exit_code=done.returncode, stderr=" / ".join(err[-3:]))
    if ctx.flash_error is None and ctx.device.type == "cuda":
        row["ok"] = done.returncode == 0
    else:
        row["ok"] = done.returncode == 1 and len(err) == 1 and err[0].startswith("error: --attn flash is unavailable")


# ---------------------------------------------------------------------------------------------- 2. parity


class Runners:
    """Models loaded by the parity and generation checks, each (variant, task, engine, attn, dtype) once."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.loaded: dict[tuple, engine.Runner] = {}

    def get(self, variant: str, task: str, engine_name: str, attn: str, dtype: str) -> engine.Runner:
        """The loaded runner; a load that fails raises again on the next asking."""
        key = (variant, task, engine_name, attn, dtype)
        if key not in self.loaded:
            self.loaded[key] = engine.load(self.ctx.paths[variant, task], task, engine=engine_name, attn=attn,
                                           device=self.ctx.device.type, dtype=dtype)
        return self.loaded[key]

    def exact(self, variant: str, task: str) -> engine.Runner:
        """transformers in float32 with eager attention: the reference every error is measured against."""
        return self.get(variant, task, "transformers", "eager", "float32")

    def clear(self) -> None:
        """Forget every model."""
        self.loaded.clear()
        free_memory()


def write_parity_checkpoints(ctx: Context) -> None:
    """Random MQA and MHA checkpoints for each task (transformers' save_pretrained), plus the bundled model."""
    from checkpoints import save_checkpoint

    missing = [(variant, task) for variant in ("mqa", "mha") for task in TASKS if (variant, task) not in ctx.paths]
    if missing:
        ctx.log(f"  writing {len(missing)} random checkpoints under {ctx.work}")
    for variant, task in missing:
        ctx.paths[variant, task] = save_checkpoint(ctx.work / f"{variant}-{task}", task,
                                                   multi_query=variant == "mqa", **ctx.plan.parity_shape)
    ctx.paths["bundled", "causal-lm"] = BUNDLED


def parity_cases() -> list[tuple[str, str]]:
    """(variant, task) pairs of the logits rows: every task for the random checkpoints, causal-lm for bundled."""
    return [(variant, task) for variant in ("mqa", "mha") for task in TASKS] + [("bundled", "causal-lm")]


def check_parity(entry: dict, ctx: Context) -> None:
    """Logits, padding and decoding rows in float32 and half precision; flash rows when flash-attn imports."""
    write_parity_checkpoints(ctx)
    runners = Runners(ctx)
    rows = entry["rows"]
    if ctx.device.type != "cuda":
        rows.append({"check": "flash", "skipped": f"skipped: flash-attn needs CUDA; this run is on {ctx.device}"})
    elif ctx.flash_error is not None:
        rows.append({"check": "flash", "skipped": f"skipped: flash-attn not installed ({ctx.flash_error})"})
    if ctx.device.type == "cpu":
        rows.append({"check": "float16", "skipped": "skipped: float16 is not run on a CPU"})
    try:
        for variant, task in parity_cases():
            for dtype in ("float32", *ctx.half_dtypes()):
                for attn in ctx.attns(dtype):
                    row = {"check": "logits", "variant": variant, "task": task, "dtype": dtype, "attn": attn}
                    attempt(ctx, rows, row, logits_row, runners)
        for variant in ("mqa", "mha", "bundled"):
            for dtype in ("float32", *ctx.half_dtypes()):
                for attn in ctx.attns(dtype):
                    base = {"variant": variant, "task": "causal-lm", "dtype": dtype, "attn": attn}
                    attempt(ctx, rows, {"check": "left-padded", **base}, padded_row, runners)
                    attempt(ctx, rows, {"check": "decode", **base}, decode_row, runners)
    finally:
        runners.clear()


def task_inputs(ctx: Context, task: str, vocab: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal-lm: a plain batch. Classification: right-padded rows of mixed lengths with their mask."""
    if task == "causal-lm":
        batch, length = ctx.plan.lengths["causal"]
        return token_ids(batch, length, vocab, 0, ctx.device), None
    lengths = ctx.plan.lengths["classify"]
    ids = token_ids(len(lengths), max(lengths), vocab, 1, ctx.device)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = 0
    return ids, mask


def task_logits(runner: engine.Runner, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Logits in float32, real positions only for token classification."""
    with torch.inference_mode():
        out = runner(ids, mask).float()
    if runner.task == "token-classification" and mask is not None:
        out = out[mask.bool()]
    return out


def logits_row(row: dict, runners: Runners) -> None:
    """Ours against transformers: float32 directly; half precision by error against float32, next to theirs."""
    variant, task, dtype, attn = row["variant"], row["task"], row["dtype"], row["attn"]
    ours = runners.get(variant, task, "native", attn, dtype)
    ids, mask = task_inputs(runners.ctx, task, ours.config.vocab_size)
    got = task_logits(ours, ids, mask)
    exact = task_logits(runners.exact(variant, task), ids, mask)
    scale = row["scale"] = scale_of(exact)
    row["ours_err"] = max_diff(got, exact)
    ref = task_logits(runners.get(variant, task, "transformers", attn, dtype), ids, mask)
    row["hf_err"] = max_diff(ref, exact)
    row["diff_vs_hf"] = max_diff(got, ref)
    if dtype == "float32":
        row["ok"] = row["diff_vs_hf"] <= FP32_TOL * scale
        return
    row["ratio"] = row["ours_err"] / row["hf_err"] if row["hf_err"] > 0 else None
    if attn != "sdpa":
        optional(row, "diff_vs_sdpa", lambda: max_diff(got, task_logits(runners.get(variant, task, "native", "sdpa",
                                                                                    dtype), ids, mask)))
    row["ok"] = half_verdict(row["ours_err"], row["hf_err"], scale)


def padded_logits(runner: engine.Runner, rows: list[torch.Tensor], nxt: torch.Tensor) -> torch.Tensor:
    """Left-padded batch of `rows`: each row's real-position logits, then one cached step with nxt (B,)."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=nxt.device)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    with torch.inference_mode():
        cache = runner.new_cache(len(rows), width + 1)
        batched = runner(ids, mask, cache=cache).float()
        step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step = runner(nxt.unsqueeze(1), step_mask, cache=cache)[:, -1].float()
    return torch.cat([*(batched[i, width - len(r):] for i, r in enumerate(rows)), step])


def alone_logits(runner: engine.Runner, rows: list[torch.Tensor], nxt: torch.Tensor) -> torch.Tensor:
    """The same layout as padded_logits, every row run alone without padding."""
    with torch.inference_mode():
        pieces = [runner(r.unsqueeze(0))[0].float() for r in rows]
        steps = [runner(torch.cat([r, nxt[i:i + 1]]).unsqueeze(0))[0, -1:].float() for i, r in enumerate(rows)]
    return torch.cat([*pieces, *steps])


def padded_row(row: dict, runners: Runners) -> None:
    """A left-padded batch (and one cached step) against each row alone, in the same dtype and backend."""
    variant, dtype, attn = row["variant"], row["dtype"], row["attn"]
    ours = runners.get(variant, "causal-lm", "native", attn, dtype)
    vocab = ours.config.vocab_size
    rows = [token_ids(1, n, vocab, 10 + i, runners.ctx.device)[0] for i, n in enumerate(runners.ctx.plan.lengths["padded"])]
    nxt = token_ids(1, len(rows), vocab, 9, runners.ctx.device)[0]
    batched, alone = padded_logits(ours, rows, nxt), alone_logits(ours, rows, nxt)
    exact = alone_logits(runners.get(variant, "causal-lm", "native", "eager", "float32"), rows, nxt)
    scale = row["scale"] = scale_of(exact)
    row["diff_vs_alone"] = max_diff(batched, alone)
    optional(row, "diff_vs_hf", lambda: max_diff(
        batched, padded_logits(runners.get(variant, "causal-lm", "transformers", attn, dtype), rows, nxt)))
    if dtype == "float32":
        row["ok"] = row["diff_vs_alone"] <= FP32_TOL * scale
        return
    row["ours_err"], row["alone_err"] = max_diff(batched, exact), max_diff(alone, exact)
    row["ok"] = half_verdict(row["ours_err"], row["alone_err"], scale)


def incremental_logits(runner: engine.Runner, ids: torch.Tensor) -> torch.Tensor:
    """Logits of ids fed in three pieces through one cache: a prefix, one token, the rest."""
    first = ids.shape[1] // 2
    with torch.inference_mode():
        cache = runner.new_cache(ids.shape[0], ids.shape[1])
        pieces = [runner(ids[:, :first], cache=cache), runner(ids[:, first:first + 1], cache=cache),
                  runner(ids[:, first + 1:], cache=cache)]
    return torch.cat(pieces, dim=1).float()


def full_logits(runner: engine.Runner, ids: torch.Tensor) -> torch.Tensor:
    """Logits of one forward over ids, no cache."""
    with torch.inference_mode():
        return runner(ids).float()


def decode_row(row: dict, runners: Runners) -> None:
    """Decoding with a cache against one full forward, in the same dtype and backend."""
    variant, dtype, attn = row["variant"], row["dtype"], row["attn"]
    ours = runners.get(variant, "causal-lm", "native", attn, dtype)
    batch, length = runners.ctx.plan.lengths["decode"]
    ids = token_ids(batch, length, ours.config.vocab_size, 5, runners.ctx.device)
    incremental, full = incremental_logits(ours, ids), full_logits(ours, ids)
    exact = full_logits(runners.get(variant, "causal-lm", "native", "eager", "float32"), ids)
    scale = row["scale"] = scale_of(exact)
    row["diff_vs_full"] = max_diff(incremental, full)
    if dtype == "float32":
        row["ok"] = row["diff_vs_full"] <= FP32_TOL * scale
        return
    row["ours_err"], row["full_err"] = max_diff(incremental, exact), max_diff(full, exact)
    row["ok"] = half_verdict(row["ours_err"], row["full_err"], scale)


# ---------------------------------------------------------------------------------------------- 3. generation


def check_generation(entry: dict, ctx: Context) -> None:
    """Greedy tokens of our generate() against transformers' generate(), per model, dtype and backend."""
    write_parity_checkpoints(ctx)
    runners = Runners(ctx)
    try:
        for variant in ("bundled", "mha"):
            prompt = generation_prompt(ctx, variant)
            for dtype in ("float32", *ctx.half_dtypes()):
                for attn in [a for a in ctx.attns(dtype) if a != "eager"]:
                    row = {"check": "greedy", "variant": variant, "dtype": dtype, "attn": attn,
                           "prompt_tokens": len(prompt)}
                    attempt(ctx, entry["rows"], row, greedy_row, runners, prompt)
    finally:
        runners.clear()


def generation_prompt(ctx: Context, variant: str) -> list[int]:
    """Real code through the bundled tokenizer for the trained model; fixed ids for a random one."""
    if variant == "bundled":
        from bigcode_cli.text.tokenizer import Tokenizer

        return benchmark_prompt(Tokenizer.from_dir(BUNDLED), 48)
    vocab = ctx.plan.parity_shape["vocab_size"]
    return [(i * 7919) % (vocab - 3) + 3 for i in range(24)]


def greedy_row(row: dict, runners: Runners, prompt: list[int]) -> None:
    """Both engines' greedy tokens up to the first stop id; where they part, the float32 top-2 gap there."""
    from bigcode_cli.generation.loop import generate
    from bigcode_cli.generation.sampling import SamplingParams

    variant, dtype, attn = row["variant"], row["dtype"], row["attn"]
    ours = runners.get(variant, "causal-lm", "native", attn, dtype)
    # without a tokenizer generate() stops at the config's eos_token_id alone, as transformers' generate() does
    stop_ids = [] if ours.config.eos_token_id is None else [ours.config.eos_token_id]
    n = runners.ctx.plan.gen_tokens
    got = generate(ours, None, prompt, max_new_tokens=n, params=SamplingParams(temperature=0))
    mine = got.samples[0].token_ids
    theirs = hf_greedy(runners.get(variant, "causal-lm", "transformers", attn, dtype).model, prompt, n, stop_ids)
    row.update(ours_tokens=len(mine), hf_tokens=len(theirs), equal=mine == theirs)
    if mine == theirs:
        row["ok"] = True
        return
    at = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
    gap, scale = top2_gap(runners.exact(variant, "causal-lm"), prompt + mine[:at])
    tie = TIE_EPS * torch.finfo(getattr(torch, dtype)).eps * scale
    row.update(first_difference=at, fp32_top2_gap=gap, tie_threshold=tie)
    row["ok"] = None if gap < tie else False  # a near-tie: either choice is right at this precision


def hf_greedy(model: Any, prompt: list[int], new_tokens: int, stop_ids: list[int]) -> list[int]:
    """transformers' greedy generate(), cut before the first stop id as our generate() reports it."""
    ids = torch.tensor([prompt], device=model.device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                             eos_token_id=stop_ids or None, pad_token_id=stop_ids[0] if stop_ids else 0)
    made = out[0, len(prompt):].tolist()
    cut = next((i for i, token in enumerate(made) if token in stop_ids), len(made))
    return made[:cut]


def top2_gap(runner: engine.Runner, ids: list[int]) -> tuple[float, float]:
    """The gap between the two largest next-token logits after ids, and max |logit| there."""
    with torch.inference_mode():
        logits = runner(torch.tensor([ids], device=runner.device))[0, -1].float()
    top = logits.topk(2).values
    return (top[0] - top[1]).item(), logits.abs().max().item()


# ---------------------------------------------------------------------------------------------- 4. speed


def write_speed_checkpoint(ctx: Context) -> Path:
    """The random checkpoint of benchmarks/model_speed.py's shape, written by transformers under --work."""
    from model_speed import SHAPES
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    path = ctx.work / f"speed-{ctx.plan.speed_shape}"
    if not (path / "config.json").exists():
        ctx.log(f"  writing the {ctx.plan.speed_shape} checkpoint to {path}")
        torch.manual_seed(0)
        config = GPTBigCodeConfig(n_positions=2048, multi_query=True, **SHAPES[ctx.plan.speed_shape])
        GPTBigCodeForCausalLM(config).save_pretrained(str(path))
    return path


def check_speed(entry: dict, ctx: Context) -> None:
    """Decode tokens/s and prefill time, native sdpa vs transformers sdpa, per dtype and prompt length."""
    path = write_speed_checkpoint(ctx)
    entry["info"] = {"shape": ctx.plan.speed_shape, "new_tokens": ctx.plan.new_tokens, "rounds": ctx.plan.rounds,
                     "decode": "(N-1) / (t(N) - t(1)), median of interleaved rounds",
                     "ratios": "decode_ratio = native / transformers tok/s; prefill_ratio = transformers / native time "
                               "(> 1: native faster)"}
    for dtype in ctx.plan.speed_dtypes:
        if ctx.over_budget():
            entry["rows"].append({"check": "speed", "dtype": dtype, "skipped": f"time budget of {ctx.budget_s:.0f}s spent"})
            continue
        speed_rows(entry["rows"], ctx, path, dtype)
        free_memory()


def speed_rows(rows: list[dict], ctx: Context, path: Path, dtype: str) -> None:
    """Load both engines once in `dtype`, then one row per prompt length (and a batched row for bfloat16)."""
    try:
        native = engine.load(path, "causal-lm", attn="sdpa", device=ctx.device.type, dtype=dtype)
        reference = engine.load(path, "causal-lm", engine="transformers", attn="sdpa", device=ctx.device.type,
                                dtype=dtype).model
    except Exception as exc:
        rows.append({"check": "speed", "dtype": dtype, "ok": False, "error": one_line(exc)})
        return
    for prompt_len in ctx.plan.prompts:
        if ctx.over_budget():
            rows.append({"check": "speed", "dtype": dtype, "prompt": prompt_len, "skipped": "time budget spent"})
            continue
        row = {"check": "speed", "dtype": dtype, "prompt": prompt_len, "batch": 1}
        attempt(ctx, rows, row, speed_row, ctx, native, reference)
    if dtype == "bfloat16" and ctx.plan.batch > 1 and not ctx.over_budget():
        row = {"check": "speed", "dtype": dtype, "prompt": ctx.plan.prompts[0], "batch": ctx.plan.batch}
        attempt(ctx, rows, row, speed_row, ctx, native, reference)


def speed_prompt(length: int, vocab: int) -> list[int]:
    """The fixed ids benchmarks/model_speed.py uses."""
    return [(i * 7919) % (vocab - 100) + 50 for i in range(length)]


def speed_row(row: dict, ctx: Context, native: engine.Runner, reference: Any) -> None:
    """Warm both engines up, then interleaved rounds of decode (and, at batch 1, prefill); medians."""
    prompt = speed_prompt(row["prompt"], native.config.vocab_size)
    batch, n = row["batch"], ctx.plan.new_tokens
    generate_seconds(native, None, prompt, 4, batch=batch)
    reference_generate_seconds(reference, prompt, 4, batch=batch)
    tasks: dict[str, Callable[[], dict]] = {
        "native": lambda: {"tok_s": decode_rate(lambda k: generate_seconds(native, None, prompt, k, batch=batch), n)},
        "transformers": lambda: {"tok_s": decode_rate(lambda k: reference_generate_seconds(reference, prompt, k,
                                                                                          batch=batch), n)},
    }
    if batch == 1:
        prefill_seconds(native, prompt)
        reference_prefill_seconds(reference, prompt)
        tasks["native_prefill"] = lambda: {"s": prefill_seconds(native, prompt)}
        tasks["transformers_prefill"] = lambda: {"s": reference_prefill_seconds(reference, prompt)}
    med = interleave(tasks, ctx.plan.rounds)
    ours, theirs = med["native"]["tok_s"], med["transformers"]["tok_s"]
    row["native_tok_s"] = ours * batch if ours else None  # tokens of all rows per second
    row["transformers_tok_s"] = theirs * batch if theirs else None
    row["decode_ratio"] = ours / theirs if ours and theirs else None
    if batch == 1:
        ours_s, theirs_s = med["native_prefill"]["s"], med["transformers_prefill"]["s"]
        row["native_prefill_ms"], row["transformers_prefill_ms"] = ours_s * 1e3, theirs_s * 1e3
        row["prefill_ratio"] = theirs_s / ours_s
    row["ok"] = None


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where gpu_check.json and gpu_check.md go")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 1 round: try the script out on a CPU")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory for checkpoints (default: a temp dir)")
    parser.add_argument("--budget-s", type=float, default=200.0,
                        help="after this many seconds, remaining speed settings are skipped (default 200)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--only", default="environment,parity,generation,speed",
                        help="comma-separated checks to run (default: all four)")
    return parser.parse_args(argv)


CHECKS: dict[str, Callable[[dict, Context], None]] = {
    "environment": check_environment,
    "parity": check_parity,
    "generation": check_generation,
    "speed": check_speed,
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen checks in order; always exits 0, the verdicts are in the files."""
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bigcode-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run_checks(args, work)
    finally:
        if args.work is None:  # our own temporary directory: the checkpoints are not wanted afterwards
            shutil.rmtree(work, ignore_errors=True)
    return 0


def run_checks(args: argparse.Namespace, work: Path) -> None:
    """Set up the context and the report, then run each check named by --only."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("highest")  # float32 parity means float32 matmuls, not TF32
    ctx = Context(torch.device(args.device), QUICK if args.quick else FULL, work, args.budget_s, flash_import_error())
    meta = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
            "work": str(work), "fp32_tol": FP32_TOL, "half_ratio": HALF_RATIO, "half_slack": HALF_SLACK}
    report = Report(args.out, meta)
    ctx.log(f"gpu_check on {args.device}{' (quick)' if args.quick else ''}: results in {args.out}, checkpoints in {work}")
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in CHECKS:
            ctx.log(f"unknown check {name!r}; known: {', '.join(CHECKS)}")
            continue
        report.run(ctx, name, CHECKS[name])
    ctx.log("summary: " + ", ".join(f"{name} {entry['status']}" for name, entry in report.checks.items()))
    ctx.log(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} in {ctx.elapsed():.0f}s")


if __name__ == "__main__":
    sys.exit(main())
