"""What `classify` and `tag` add for datasets: column names, `--output FILE|DIR`, and running on Ray.

Options: --text-column, --id-column, --output, --output-format, --ray, --ray-address, --workers,
--cpus-per-worker, --gpus-per-worker. No Ray, pyarrow or torch at import time: the Ray job lives in
bigcode_cli.pipelines.ray_job and is imported only by `--ray`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Optional

import typer

from bigcode_cli.cli.commands.option_groups import OptionGroup, option
from bigcode_cli.cli.commands.options import choice_enum
from bigcode_cli.errors import InputError, UsageError
from bigcode_cli.choices import OUTPUT_FORMATS
from bigcode_cli.pipelines.records import Columns

if TYPE_CHECKING:
    from bigcode_cli.cli.commands.pipeline import PipelineIO
    from bigcode_cli.terminal.model_choice import ModelChoice

OutputFormat = choice_enum("OutputFormat", OUTPUT_FORMATS)

TextColumnOpt = Annotated[str, typer.Option(
    "--text-column", help="JSON Lines field / Parquet column holding the text.", rich_help_panel="Datasets")]
IdColumnOpt = Annotated[str, typer.Option(
    "--id-column", help="JSON Lines field / Parquet column holding the id (default id: the line or row number).",
    rich_help_panel="Datasets")]
OutputOpt = Annotated[Optional[str], typer.Option(
    "--output", "-o", show_default=False, rich_help_panel="Datasets",
    help="Write the records to FILE instead of stdout (FILE.parquet: Parquet), written atomically; with --ray, "
         "the directory DIR for the part files.")]
OutputFormatOpt = Annotated[Optional[OutputFormat], typer.Option(
    "--output-format", show_default=False, rich_help_panel="Datasets",
    help="Format of --output (default: parquet for a .parquet FILE, else JSON Lines).")]
RayOpt = Annotated[bool, typer.Option(
    "--ray", rich_help_panel="Scaling out", help="Run on Ray: RAY_ADDRESS's cluster, else a local Ray started for the job.")]
RayAddressOpt = Annotated[Optional[str], typer.Option(
    "--ray-address", show_default=False, rich_help_panel="Scaling out",
    help="The Ray cluster to run on (default: $RAY_ADDRESS, else a local Ray).")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, rich_help_panel="Scaling out",
                                         help="Ray actors, each loading the model once.")]
CpusOpt = Annotated[Optional[float], typer.Option(
    "--cpus-per-worker", min=0.1, show_default=False, rich_help_panel="Scaling out",
    help="CPUs (torch threads) per actor (default: the cluster's CPUs / --workers; 1 with GPUs).")]
GpusOpt = Annotated[float, typer.Option("--gpus-per-worker", min=0.0, rich_help_panel="Scaling out",
                                        help="GPUs per actor (fractions share a GPU).")]


class ScaleOut(NamedTuple):
    """Where records go and where the job runs."""

    columns: Columns
    output: str | None
    output_format: str | None
    ray: bool
    ray_address: str | None
    workers: int
    cpus_per_worker: float | None
    gpus_per_worker: float


_OTHER_FORMATS = {".csv": "CSV", ".tsv": "TSV", ".xlsx": "Excel", ".arrow": "Arrow",
                  ".feather": "Feather", ".orc": "ORC", ".avro": "Avro"}  # names that promise another format


def _scale_out(*, text_column: str, id_column: str, output: str | None, output_format: Any, ray: bool,
               ray_address: str | None, workers: int, cpus_per_worker: float | None, gpus_per_worker: float) -> ScaleOut:
    if not ray:
        given = [name for name, value in (("--ray-address", ray_address), ("--workers", workers != 1),
                                          ("--cpus-per-worker", cpus_per_worker), ("--gpus-per-worker", gpus_per_worker))
                 if value]
        if given:
            raise UsageError(f"{given[0]} runs the job on Ray: add --ray")
    if output_format is not None and output is None:
        raise UsageError("--output-format says how to write --output: give --output FILE or DIR")
    if ray and output is None:
        raise UsageError("--ray writes part files: give --output DIR")
    suffix = Path(output).suffix.lower() if output is not None else ""
    if suffix in _OTHER_FORMATS and output_format is None and not ray:
        raise UsageError(f"--output {output}: writes JSON Lines, or Parquet for a .parquet name, not "
                         f"{_OTHER_FORMATS[suffix]} (for TSV on stdout: --format tsv > FILE; or say --output-format)")
    return ScaleOut(Columns(text_column, id_column), output, output_format.value if output_format else None, ray,
                    ray_address, workers, cpus_per_worker, gpus_per_worker)


SCALE_OUT = OptionGroup(
    (
        option("text_column", TextColumnOpt, "text"),
        option("id_column", IdColumnOpt, "id"),
        option("output", OutputOpt, None),
        option("output_format", OutputFormatOpt, None),
        option("ray", RayOpt, False),
        option("ray_address", RayAddressOpt, None),
        option("workers", WorkersOpt, 1),
        option("cpus_per_worker", CpusOpt, None),
        option("gpus_per_worker", GpusOpt, 0.0),
    ),
    _scale_out,
)


def output_file(scale: ScaleOut) -> Any:
    """The --output FILE sink of the local path (pipelines.output_files.OutputFile), or None for stdout."""
    if scale.output is None:
        return None
    from bigcode_cli.pipelines.output_files import OutputFile

    return OutputFile(scale.output, scale.output_format)


class _Progress:
    """Records done so far, on stderr, on a terminal only."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.shown = getattr(stream, "isatty", lambda: False)()

    def __call__(self, done: int) -> None:
        if self.shown:
            self.stream.write(f"\r{done:,} records")
            self.stream.flush()

    def close(self, summary: str) -> None:
        if self.shown:
            self.stream.write(f"\r{summary}\n")
            self.stream.flush()


class _RayNoise:
    """Ray prints its own notices (worker restarts, retried tasks, tracebacks) from C++ and from Python threads,
    on stdout as well as stderr: while the job runs (this command writes no results to stdout), both go to
    BIGCODE_HOME/logs/ray.log, and the stream returned is where our progress and error records go (the real
    stderr)."""

    def __enter__(self) -> Any:
        from bigcode_cli.paths import bigcode_home

        path = bigcode_home() / "logs" / "ray.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(path, "a", encoding="utf-8", errors="replace")
        self.previous = (sys.stdout, sys.stderr)
        self.saved: list[tuple[int, int]] = []  # (fd, its duplicate) to put back
        for stream in self.previous:
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                continue  # not a real file (tests capture it): only the Python stream is redirected
            stream.flush()
            self.saved.append((fd, os.dup(fd)))
            os.dup2(self.log.fileno(), fd)
        real_stderr = dict(self.saved).get(2)
        self.ours = (os.fdopen(os.dup(real_stderr), "w", buffering=1, encoding="utf-8", errors="replace")
                     if real_stderr is not None else self.previous[1])
        sys.stdout = sys.stderr = self.log
        return self.ours

    def __exit__(self, *exc: Any) -> None:
        sys.stdout, sys.stderr = self.previous
        if self.ours is not self.previous[1]:
            self.ours.close()
        for fd, duplicate in self.saved:
            os.dup2(duplicate, fd)
            os.close(duplicate)
        self.log.close()


def _model_dir(model: str | None, task: str, offline: bool) -> str:
    """The checkpoint directory for the workers: a path as given (each worker must have it), else the name
    resolved here in the store (bundled, alias, cache), whose path the workers share on one machine."""
    if model is not None and (os.sep in model or model.startswith(".")):
        return os.path.abspath(model)
    from bigcode_cli import store

    return str(store.resolve(model or store.default_model(task), offline=offline).path)


def run_on_ray(*, io: PipelineIO, choice: ModelChoice, scale: ScaleOut, task: str, results: dict[str, Any]) -> None:
    """`--ray`: the job on Ray, its records in part files under --output DIR, error records on stderr."""
    import json

    from bigcode_cli.pipelines.output_files import PartFiles

    from bigcode_cli.pipelines.ray_job import JobSpec, import_ray, require_files, run_job

    files = io.files or []
    require_files(files)
    if io.output == "tsv":
        raise UsageError("--ray writes JSON Lines or Parquet part files: choose with --output-format, not --format")

    import_ray()
    spec = JobSpec(task, _model_dir(choice.model, task, choice.offline), choice.engine, choice.attn, choice.device, choice.dtype, choice.offline,
                   io.batch_size, io.truncate, io.input_format, scale.columns, results, scale.workers,
                   scale.cpus_per_worker, scale.gpus_per_worker)
    parts = PartFiles(scale.output, scale.output_format or "jsonl")
    try:
        with _RayNoise() as stderr:
            progress = _Progress(stderr)

            def on_error(record: dict[str, Any]) -> None:
                stderr.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                stderr.flush()

            total, failed = run_job(spec, files, parts.write, on_error=on_error, on_progress=progress,
                                    address=scale.ray_address)
            written = parts.commit()
            progress.close(f"{total - failed:,} records in {len(written)} part file{'s' * (len(written) != 1)} "
                           f"under {scale.output}")
    except BaseException:
        parts.discard()
        raise
    if failed:
        raise InputError(f"{failed} of {total} records could not be processed (see the error records above)")
