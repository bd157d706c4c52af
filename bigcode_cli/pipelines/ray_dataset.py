"""The Python API for users with a Ray pipeline: a Ray Dataset in, the same Dataset with result columns out.

    import ray
    from bigcode_cli.pipelines.ray_dataset import classify_dataset, tag_dataset

    ds = ray.data.read_parquet("s3://bucket/snippets/")
    classify_dataset(ds, workers=4).write_parquet("s3://bucket/labelled/")

`classify_dataset` adds `label` (string), `score` (float64), `scores` (map<string, float64>), `labels`
(multi-label models only), `truncated` and `error`; `tag_dataset` adds `spans` (list of {label, start, end,
text, score}), `truncated` and `error`. A row whose text cannot be used keeps its columns, gets null
results and the reason in `error`. Every other column passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bigcode_cli.pipelines.records import Columns
from bigcode_cli.pipelines.results import SEQUENCE, TOKEN
from bigcode_cli.pipelines.ray_job import JobSpec, Scorer, import_ray, map_scorer


def _score_dataset(dataset: Any, task: str, *, model: str | None, text_column: str, workers: int,
                   gpus_per_worker: float, cpus_per_worker: float | None, batch_size: int, truncate: str,
                   options: dict[str, Any], model_options: dict[str, Any]) -> Any:
    import_ray()
    if text_column not in dataset.columns():
        from bigcode_cli.errors import InputError

        raise InputError(f"the dataset has no column {text_column!r} (columns: {', '.join(dataset.columns())})")
    spec = JobSpec(task, model, batch_size=batch_size, truncate=truncate, columns=Columns(text=text_column),
                   results=options, workers=workers, gpus_per_worker=gpus_per_worker,
                   cpus_per_worker=cpus_per_worker, **model_options)
    return map_scorer(dataset, spec, "columns", Scorer)


def classify_dataset(dataset: Any, *, model: str | None = None, text_column: str = "text", workers: int = 1,
                     gpus_per_worker: float = 0.0, cpus_per_worker: float | None = None, batch_size: int = 32,
                     truncate: str = "right", top_k: int | None = None, threshold: float = 0.5,
                     **model_options: Any) -> Any:
    """`dataset` with label/score/scores columns from a sequence classifier (default: the bundled language identifier).

    model: a checkpoint directory present on every worker; model_options: engine, attn, device, dtype, as on
    the command line.
    """
    return _score_dataset(dataset, SEQUENCE, model=model, text_column=text_column, workers=workers,
                          gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, batch_size=batch_size,
                          truncate=truncate, options={"top_k": top_k, "threshold": threshold},
                          model_options=model_options)


def tag_dataset(dataset: Any, *, model: str | None = None, text_column: str = "text", workers: int = 1,
                gpus_per_worker: float = 0.0, cpus_per_worker: float | None = None, batch_size: int = 32,
                truncate: str = "right", aggregate: str = "word", labels: Sequence[str] = (),
                **model_options: Any) -> Any:
    """`dataset` with a spans column from a token classifier (default: the bundled secrets tagger)."""
    return _score_dataset(dataset, TOKEN, model=model, text_column=text_column, workers=workers,
                          gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, batch_size=batch_size,
                          truncate=truncate, options={"aggregate": aggregate, "wanted": list(labels)},
                          model_options=model_options)
