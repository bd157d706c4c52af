"""`bigcode models`: the local checkpoint cache (list, pull, rm, quantize, info, import, verify, path).

Thin commands over `bigcode_cli.store`; nothing here imports torch. Results go to stdout, progress
and notes to stderr; the store raises BigCodeError subclasses, which the CLI renders.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Callable, Optional

import typer

from bigcode_cli import choices, store
from bigcode_cli.errors import ModelNotFoundError
from bigcode_cli.store import quantized
from bigcode_cli.cli.commands.options import choice_enum, complete_model
from bigcode_cli.terminal.console import print_notice, stderr_console, stdout_console
from bigcode_cli.terminal.safe_text import for_stream

models_app = typer.Typer(name="models", no_args_is_help=True)  # its help, naming every command, is set below

NameArg = Annotated[str, typer.Argument(help="Alias, owner/name[@revision], bundled model or checkpoint directory.",
                                        show_default=False, autocompletion=complete_model)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _on_terminal(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _human_size(n: int | None) -> str:
    from rich.filesize import decimal

    return "-" if n is None else decimal(n)


def _human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= limit:
            return f"{n / limit:.1f}{suffix}"
    return str(n)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@models_app.command("list")
def list_command(as_json: JsonOpt = False) -> None:
    """List the models usable without a download: bundled, in our cache, and in the Hugging Face cache."""
    rows = store.list_models() + [
        {"name": f"{copy['name']} ({copy['dtype']})", "source": "quantized" if copy["current"] else "quantized, stale",
         "tasks": ["causal-lm"], "dtype": copy["dtype"], "size_bytes": copy["size_bytes"], "path": copy["path"]}
        for copy in quantized.entries()]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        print_notice("no models found")
        return
    if _on_terminal(sys.stdout):
        _print_list_table(rows)
        return
    sys.stdout.write("\t".join(("NAME", "SOURCE", "TASKS", "PARAMS", "DTYPE", "CONTEXT", "SIZE")) + "\n")
    for row in _list_cells(rows, lambda tasks: ",".join(tasks)):
        sys.stdout.write("\t".join(for_stream(cell, sys.stdout) for cell in row) + "\n")


def _print_list_table(rows: list[dict[str, Any]]) -> None:
    """`models list` for a person: the commands each model serves instead of its task ids (which are long
    and say less), and names never cut, even on an 80-column terminal."""
    from rich.table import Table

    from bigcode_cli.tasks import TASKS

    def commands(tasks: list[str]) -> str:
        return ", ".join(mode for task in tasks for mode in TASKS[task].modes)

    cells = [tuple(for_stream(cell, sys.stdout) for cell in row) for row in _list_cells(rows, commands)]
    table = Table("NAME", "SOURCE", "COMMANDS", "PARAMS", "DTYPE", "CONTEXT", "SIZE", box=None, header_style="bold",
                  pad_edge=False)
    table.columns[0].no_wrap = True  # a name is what the next command is typed with: the other columns give way
    table.columns[0].min_width = max(len(row[0]) for row in cells)
    for row in cells:
        table.add_row(*row)
    stdout_console().print(table, markup=False)


def _list_cells(rows: list[dict[str, Any]], tasks: Callable[[list[str]], str]) -> list[tuple[str, ...]]:
    """The `models list` columns of each row, as text; `tasks` shows a row's task names."""
    return [(r["name"], r["source"], tasks(r.get("tasks") or []) or ("error" if "error" in r else "-"),
             _human_count(r.get("parameters")), str(r.get("dtype") or "-"), str(r.get("n_positions") or "-"),
             _human_size(r.get("size_bytes"))) for r in rows]


@models_app.command("pull")
def pull_command(
    name: NameArg,
    revision: Annotated[Optional[str], typer.Option("--revision", "-r", help="Branch, tag or commit (same as NAME@REV).",
                                                    show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if the model is already here.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network (same as HF_HUB_OFFLINE=1).")] = False,
) -> None:
    """Download a model from the Hugging Face hub into the cache (config, tokenizer and weights only); prints its path."""
    if _on_terminal(sys.stderr):
        model = _pull_with_bar(name, revision, force, offline)
    else:
        model = store.pull(name, revision, force=force, offline=offline, notice=print_notice)
    verb = {"downloaded": "pulled", "cache": "already in the cache:", "hf-cache": "found in the Hugging Face cache:",
            "bundled": "bundled:"}.get(model.source, model.source)
    print_notice(f"{verb} {model.name}")
    sys.stdout.write(f"{model.path}\n")


def _pull_with_bar(name: str, revision: str | None, force: bool, offline: bool) -> store.ResolvedModel:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=stderr_console(), transient=True) as bar:
        task = bar.add_task(name, total=None)

        def update(filename: str, done: int, total: int) -> None:
            bar.update(task, description=filename, completed=done, total=total or None)

        return store.pull(name, revision, progress=update, force=force, offline=offline, notice=print_notice)


@models_app.command("rm")
def rm_command(
    name: NameArg,
    only_quantized: Annotated[bool, typer.Option("--quantized", help="Remove only the quantized copies (int8/int4) "
                                                                     "made from NAME, which works for bundled models too.")] = False,
) -> None:
    """Remove a model from the cache (NAME@REV removes one revision, NAME all of them), with its quantized copies."""
    # the store refuses first (a bundled model, a name not in the cache): a refused command changes nothing
    removed = [] if only_quantized else store.remove(name, notice=print_notice)
    removed += quantized.remove(name)
    if only_quantized and not removed:
        raise ModelNotFoundError(f"no quantized copies of {name} are kept; `bigcode models list` shows them")
    for path in removed:
        sys.stdout.write(f"removed {path}\n")


QuantDtype = choice_enum("QuantDtype", choices.QUANTIZED_DTYPES)


@models_app.command("quantize")
def quantize_command(
    name: NameArg,
    dtype: Annotated[QuantDtype, typer.Option("--dtype", help="int8 (q8_0-like blocks) or int4 (q4_0-like).")] = QuantDtype.int8,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network (same as HF_HUB_OFFLINE=1).")] = False,
) -> None:
    """Quantize a causal LM ahead of time and keep the copy, so `--dtype int8|int4` starts without quantizing; prints its path."""
    from bigcode_cli.store.loader import quantize_ahead

    model, path = quantize_ahead(name, dtype.value, offline=offline)
    print_notice(f"{dtype.value} copy of {model.name}")
    sys.stdout.write(f"{path}\n")


_INFO_FIELDS = (
    ("name", "name"), ("source", "source"), ("repo", "repo_id"), ("revision", "revision"), ("commit", "commit"),
    ("layers", "n_layer"), ("heads", "n_head"), ("hidden size", "n_embd"), ("multi-query", "multi_query"),
    ("context", "n_positions"), ("vocab", "vocab_size"), ("fim tokens", "fim"), ("tasks", "tasks"),
    ("labels", "labels"), ("parameters", "parameters"), ("dtype", "dtype"), ("weights", "weights"),
    ("size", "size_bytes"), ("decode", "decode"), ("quantized", "quantized"), ("path", "path"),
)


def _info_value(key: str, value: Any) -> str:
    if key == "size_bytes":
        return _human_size(value)
    if key == "parameters":
        return f"{_human_count(value)} ({value:,})" if value is not None else "-"
    if key == "fim":
        return {"starcoder": "<fim_prefix> (starcoder)", "santacoder": "<fim-prefix> (santacoder)"}.get(value, "none")
    if key == "multi_query":
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


@models_app.command("info")
def info_command(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show a model's config summary: layers, heads, multi-query, context, vocab, FIM tokens, tasks, size, location."""
    data = store.info(name)
    data["decode"] = _cpu_decode(data)
    data["quantized"] = [f"{c['dtype']} {c['path']}" for c in quantized.copies_of(data["name"])]
    if as_json:
        _print_json(data)
        return
    width = max(len(label) for label, _ in _INFO_FIELDS)
    for label, key in _INFO_FIELDS:
        if key in ("labels", "decode", "quantized") and not data.get(key):
            continue
        sys.stdout.write(f"{label:<{width}}  {for_stream(_info_value(key, data.get(key)), sys.stdout)}\n")


def _cpu_decode(data: dict[str, Any]) -> str | None:
    """What would run a causal LM's decode steps on this machine's CPU (the C kernel, or PyTorch and why)."""
    from pathlib import Path

    from bigcode_cli.kernels.decode_support import cpu_decode_summary
    from bigcode_cli.model.config import GPTBigCodeConfig
    from bigcode_cli.tasks import TASKS

    if not any(name in TASKS and TASKS[name].generative for name in data.get("tasks") or []):
        return None

    config = GPTBigCodeConfig.from_file(Path(data["path"]) / "config.json")
    return f"on a CPU: {cpu_decode_summary(config.activation_function)}"


@models_app.command("import")
def import_command(
    path: Annotated[str, typer.Argument(help="Checkpoint directory (config.json + weights).", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Name to register it under (name or owner/name).",
                                      show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model of that name.")] = False,
) -> None:
    """Copy a local checkpoint into the cache under NAME; .bin weights are converted to safetensors. Prints its path."""
    model = store.import_checkpoint(path, name, force=force, notice=print_notice)
    print_notice(f"imported {path} as {model.name}")
    sys.stdout.write(f"{model.path}\n")


@models_app.command("verify")
def verify_command(name: NameArg) -> None:
    """Re-hash a model's files against the hashes recorded when it was pulled or imported (or shipped, for bundled ones)."""
    result = store.verify(name)
    sys.stdout.write(f"ok: {result['name']}: {result['files']} files match\n")


@models_app.command("path")
def path_command(name: NameArg) -> None:
    """Print the checkpoint directory a model name resolves to (never downloads)."""
    sys.stdout.write(f"{store.path(name)}\n")


models_app.info.help = ("Manage the local checkpoint cache: "
                        f"{', '.join(command.name for command in models_app.registered_commands)}.")
