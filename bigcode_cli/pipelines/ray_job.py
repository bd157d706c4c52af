"""`classify` and `tag` on Ray: the one batching service inside Ray Data actors that load the model once.

Files become a Ray Dataset of input records (read on the workers, one task per file, by the rules of
pipelines.records), `map_batches` runs `Scorer` actors (an actor pool of `workers`, each with
`cpus_per_worker` CPUs and `gpus_per_worker` GPUs), and the driver receives the output records in
input order and writes them with pipelines.output_files. Ray restarts an actor that dies and retries
its batch, so every record comes out once; an actor that cannot load the model fails the job with
its own one-line reason.

Imported only when Ray is used: `ray` is an optional extra (`bigcode-cli[ray]`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from bigcode_cli.errors import BigCodeError, InputError, ModelNotFoundError
from bigcode_cli.pipelines.records import Columns, Record

INSTALL_HINT = "--ray needs Ray: pip install 'bigcode-cli[ray]' (Ray Data and pyarrow)"
RECORDS_PER_CALL = 16  # x batch_size records per actor call: room to sort by length, small enough to retry


class RayJobError(BigCodeError):
    """A Ray job that could not run: no Ray, an unreachable cluster, a worker that cannot load the model."""


class WorkerError(Exception):
    """Raised inside an actor that cannot start; its message is the one line the driver reports."""


def import_ray() -> Any:
    """The `ray` module with Ray Data, or a RayJobError saying what to install."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayJobError(INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to score records: the model, batching and result options, the actor pool."""

    task: str  # "sequence-classification" or "token-classification"
    model: str | None = None  # a checkpoint directory, at this path on every worker; None: the task's bundled model
    engine: str = "native"
    attn: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    offline: bool = False
    batch_size: int = 32
    truncate: str = "right"
    input_format: str = "auto"
    columns: Columns = Columns()
    results: dict[str, Any] = field(default_factory=dict)  # Results.for_task options: top_k, threshold, aggregate, wanted
    workers: int = 1
    cpus_per_worker: float | None = None  # None: the cluster's CPUs shared out between the workers
    gpus_per_worker: float = 0.0


def model_dir(spec: JobSpec) -> str:
    """The checkpoint directory the workers load: the spec's, or the task's bundled model (in every install)."""
    from bigcode_cli.paths import bundled_dir
    from bigcode_cli.tasks import task

    return spec.model or str(bundled_dir() / task(spec.task).default_model)


# --- records as rows of a Ray Dataset (fixed column types, whatever the JSON fields hold) -----------------

def record_row(record: Record) -> dict[str, Any]:
    """An input record as a dataset row."""
    return {"id": json.dumps(record.id, ensure_ascii=False, default=str), "text": record.text, "line": record.line,
            "source": record.source, "kind": record.kind,
            "fields": json.dumps(record.fields, ensure_ascii=False, default=str), "error": record.error}


def row_record(row: dict[str, Any], index: int) -> Record:
    """A dataset row back as an input record."""
    return Record(index, json.loads(row["id"]), row["text"], row["line"], row["source"], row["kind"],
                  json.loads(row["fields"]), row["error"])


def _piece_rows(piece: dict[str, Any], columns: Columns) -> Iterator[dict[str, Any]]:
    # one piece of a file (read where the task runs) -> its records as rows
    from bigcode_cli.pipelines.input_pieces import read_piece

    for record in read_piece(piece, columns):
        yield record_row(record)


def require_files(files: list[str]) -> None:
    """Refuse a Ray job without input files, or with stdin ("-") among them."""
    if not files or "-" in files:
        raise InputError("--ray reads FILES (a Ray job cannot read this process's stdin): give the input files")


def records_dataset(files: list[str], input_format: str = "auto", columns: Columns = Columns(),
                    per_piece: int = 512) -> Any:
    """A Ray Dataset of the input records of `files`, read by the local path's rules, in pieces of about
    `per_piece` records (one block each, so even one file spreads over every worker)."""
    from bigcode_cli.pipelines.input_pieces import file_pieces

    ray = import_ray()
    require_files(files)
    pieces = [piece for name in files
              for piece in file_pieces(os.path.abspath(name), name, input_format, per_piece, columns)]
    dataset = ray.data.from_items(pieces, override_num_blocks=len(pieces))
    # reading is light next to scoring, and the actors may hold every CPU: the reading tasks ask for none
    return dataset.flat_map(_piece_rows, fn_kwargs={"columns": columns}, num_cpus=0)


# --- the actor ---------------------------------------------------------------------------------------------

class Scorer:
    """A Ray Data actor: loads the model once, then scores batches of rows with the one batching service.

    mode "records": rows are input records (record_row) and come back as {"output": JSON of the output record,
    "error": JSON of the error record}, one of the two set. mode "columns": rows are a user's table with a text
    column and come back with result columns added (see `classify_dataset`).
    """

    def __init__(self, spec: JobSpec, mode: str = "records") -> None:
        from bigcode_cli.model.engine import load
        from bigcode_cli.pipelines.batching import Batcher
        from bigcode_cli.pipelines.results import Results
        from bigcode_cli.text.tokenizer import Tokenizer

        if spec.cpus_per_worker:
            import torch

            torch.set_num_threads(max(1, int(spec.cpus_per_worker)))
        path = model_dir(spec)
        try:
            if not os.path.isdir(path):
                raise ModelNotFoundError(f"no checkpoint directory at {path}")
            tokenizer = Tokenizer.from_dir(path)
            runner = load(path, spec.task, engine=spec.engine, attn=spec.attn, device=spec.device, dtype=spec.dtype)
            self.results = Results.for_task(runner.config, spec.task, model_name=path, **spec.results)
        except BigCodeError as exc:
            raise WorkerError(f"worker on {socket.gethostname()}: {exc}") from None
        self.batcher = Batcher(runner, tokenizer, batch_size=spec.batch_size, truncate=spec.truncate,
                               offsets=spec.task == "token-classification")
        self.spec, self.mode = spec, mode

    def _score(self, records: list[Record]) -> list[tuple[Record, Any]]:
        from bigcode_cli.pipelines.batching import stream

        return [pair for chunk in stream(records, self.batcher, first_chunk=len(records), largest_chunk=len(records))
                for pair in chunk]

    def __call__(self, batch: Any) -> Any:
        if self.mode == "columns":
            from bigcode_cli.pipelines.ray_columns import add_result_columns

            return add_result_columns(batch, self._score, self.results, self.spec.columns.text)
        from bigcode_cli.pipelines.results import error_record

        records = [row_record(row, i) for i, row in enumerate(batch.to_pylist())]
        outputs, errors = [], []
        for record, scored in self._score(records):
            ok = scored is not None
            outputs.append(json.dumps(self.results.record(record, scored), ensure_ascii=False, default=str) if ok else None)
            errors.append(None if ok else json.dumps(error_record(record), ensure_ascii=False, default=str))
        return {"output": outputs, "error": errors}


def map_scorer(dataset: Any, spec: JobSpec, mode: str = "records", scorer: type = Scorer) -> Any:
    """`dataset.map_batches` with a pool of `spec.workers` scorer actors."""
    ray = import_ray()
    cpus = spec.cpus_per_worker
    if cpus is None:
        total = ray.cluster_resources().get("CPU", 1)
        cpus = 1.0 if spec.gpus_per_worker else max(1.0, float(int(total // spec.workers)))
        spec = replace(spec, cpus_per_worker=cpus)
    calls = RECORDS_PER_CALL * spec.batch_size
    return dataset.map_batches(scorer, fn_constructor_args=(spec, mode), batch_format="pyarrow",
                               batch_size=calls,
                               compute=ray.data.ActorPoolStrategy(size=spec.workers),
                               num_cpus=cpus, num_gpus=spec.gpus_per_worker or None)


# --- the driver --------------------------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    """The one line to show for a failed job: a worker's own message when there is one."""
    text = str(exc)
    found = re.findall(r"WorkerError: (.+)", text)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(" ")]
    return lines[-1] if lines else type(exc).__name__


class Connection:
    """A Ray connection for one job: the running one, the cluster at `address` / RAY_ADDRESS, or a local Ray."""

    def __init__(self, address: str | None = None) -> None:
        ray = import_ray()
        self.ray, self.started = ray, False
        if ray.is_initialized():
            return
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise RayJobError(f"could not start or reach {where}: {_reason(exc)}") from None
        self.started = True

    def close(self) -> None:
        """Disconnect (and stop the local Ray) if this connection started it."""
        if self.started:
            self.ray.shutdown()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextlib.contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    # Ray Data logs its plan, progress notices and the tracebacks of failed workers on stderr; the job reports
    # its own progress and failures, in one line each
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _quiet_data_context(ray: Any) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # progress is ours to show, on a terminal only
    context.print_on_execution_start = False
    context.execution_options.preserve_order = True  # part files in input order, like the local path's output


def run_job(spec: JobSpec, files: list[str], write: Callable[[list[dict[str, Any]]], None], *,
            on_error: Callable[[dict[str, Any]], None] | None = None,
            on_progress: Callable[[int], None] | None = None, address: str | None = None,
            scorer: type = Scorer) -> tuple[int, int]:
    """Run the job over `files`; output records go to `write` in input order, error records to `on_error`.

    Returns (records, failed). Needs a Ray connection (Connection) or starts one for the job.
    """
    with Connection(address) as connection, _quiet_ray_logs():
        ray = connection.ray
        _quiet_data_context(ray)
        records = records_dataset(files, spec.input_format, spec.columns, RECORDS_PER_CALL * spec.batch_size)
        dataset = map_scorer(records, spec, "records", scorer)
        total = failed = 0
        try:
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                rows = []
                for output, error in zip(batch.column("output").to_pylist(), batch.column("error").to_pylist()):
                    total += 1
                    if output is not None:
                        rows.append(json.loads(output))
                    else:
                        failed += 1
                        if on_error is not None:
                            on_error(json.loads(error))
                write(rows)
                if on_progress is not None:
                    on_progress(total)
        except BigCodeError:
            raise  # ours, from `write` (a record Parquet cannot hold)
        except Exception as exc:  # Ray's: a worker that could not start, a batch that failed past its retries
            raise RayJobError(f"the Ray job failed: {_reason(exc)}") from None
        return total, failed
