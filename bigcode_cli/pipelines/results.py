"""The records `classify` and `tag` write: one JSON-ready dict per input record, the same on every path
(stdout, a Parquet file, Ray part files), plus the error record of an input that could not be used.

`Results.for_task(config, task, ...)` turns a batch's (record, scored) pairs into those dicts; the CLI's
table and TSV views use the same predictions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bigcode_cli.errors import UsageError
from bigcode_cli.pipelines.records import Record

if TYPE_CHECKING:
    from bigcode_cli.model.config import GPTBigCodeConfig
    from bigcode_cli.pipelines.batching import Scored

SEQUENCE = "sequence-classification"
TOKEN = "token-classification"


def json_line(data: dict[str, Any]) -> str:
    """One JSON Lines record (values JSON has no type for, such as a Parquet timestamp, as text)."""
    return json.dumps(data, ensure_ascii=False, default=str) + "\n"


def _round(value: float) -> float:
    return round(value, 6)


def _head(record: Record) -> dict[str, Any]:
    data: dict[str, Any] = {"id": record.id}
    data.update((k, v) for k, v in record.fields.items() if k != "id")
    return data


def classification_record(record: Record, prediction: Any, truncation: dict | None) -> dict[str, Any]:
    """{"id", <other input fields>, "label", "score", "scores"[, "labels"][, "truncated"]}."""
    data = _head(record)
    data.update(label=prediction.label, score=_round(prediction.score),
                scores={k: _round(v) for k, v in prediction.scores.items()})
    if prediction.labels is not None:
        data["labels"] = prediction.labels
    if truncation is not None:
        data["truncated"] = truncation
    return data


def tagging_record(record: Record, spans: Sequence[Any], truncation: dict | None) -> dict[str, Any]:
    """{"id", <other input fields>, "spans": [{"label", "start", "end", "text", "score"}][, "truncated"]}."""
    data = _head(record)
    data["spans"] = [dict(span.to_dict(), score=_round(span.score)) for span in spans]
    if truncation is not None:
        data["truncated"] = truncation
    return data


def error_record(record: Record) -> dict[str, Any]:
    """What is reported for a record that could not be processed: {"id", "source", "line", "error"}."""
    return {"id": record.id, "source": record.source, "line": record.line or None, "error": record.error}


@dataclass
class Results:
    """Builds the output records of one task from scored records: the labels and the user's options."""

    task: str
    labels: list[str]
    kind: str = ""  # classification: the problem type
    top_k: int | None = None
    threshold: float = 0.5
    aggregate: str = "word"
    wanted: list[str] = field(default_factory=list)  # tagging: only these entity types

    @classmethod
    def for_task(cls, config: GPTBigCodeConfig, task: str, *, top_k: int | None = None, threshold: float = 0.5,
                 aggregate: str = "word", wanted: Sequence[str] = (), model_name: str = "") -> Results:
        """The result builder for `task` with this model's labels. --labels match the model's entity types in any
        case (`email` is EMAIL); one the model does not tag is a usage error."""
        labels = config.labels()
        if task == SEQUENCE:
            from bigcode_cli.pipelines.classification import problem_type

            return cls(task, labels, problem_type(config), top_k, threshold)
        from bigcode_cli.pipelines.tagging import entity_types

        known = entity_types(labels)
        folded: dict[str, str] = {}
        for kind in known:
            folded.setdefault(kind.casefold(), kind)
        chosen = [w if w in known else folded.get(w.casefold(), "") for w in wanted]
        unknown = [w for w, kind in zip(wanted, chosen) if not kind]
        if unknown:
            raise UsageError(f"--labels {', '.join(unknown)}: model {model_name} tags only {', '.join(known) or 'nothing'}")
        return cls(task, labels, aggregate=aggregate, wanted=chosen)

    def prediction(self, scored: Scored) -> Any:
        """Classification: the Prediction of one snippet."""
        from bigcode_cli.pipelines.classification import predict

        return predict(scored.logits, self.labels, self.kind, top_k=self.top_k, threshold=self.threshold)

    def spans(self, record: Record, scored: Scored) -> list[Any]:
        """Tagging: the kept spans of one snippet."""
        from bigcode_cli.pipelines.tagging import keep_labels, spans_from_tokens, token_predictions

        predictions = token_predictions(scored.logits, self.labels)
        return keep_labels(spans_from_tokens(record.text or "", scored.encoded.offsets, predictions, self.aggregate),
                           self.wanted)

    def record(self, record: Record, scored: Scored) -> dict[str, Any]:
        """The output record of one scored input record."""
        if self.task == SEQUENCE:
            return classification_record(record, self.prediction(scored), scored.encoded.truncation())
        return tagging_record(record, self.spans(record, scored), scored.encoded.truncation())
