"""Fine-tuning data: JSON Lines records read and checked (errors name the line), tokenized into
examples with class or B-/I-/O token targets; and the metrics evaluation reports.

Formats: classify `{"text", "label"}` or `{"text", "labels": [...]}` (multi-label); tag
`{"text", "spans": [{"start", "end", "label"}]}` with character offsets. Other fields are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigcode_cli.errors import InputError
from bigcode_cli.pipelines.tagging import bio_labels, f1, token_tags

if TYPE_CHECKING:
    from bigcode_cli.text.tokenizer import Tokenizer


@dataclass
class Example:
    """One training record, tokenized."""

    text: str
    ids: list[int]
    target: Any  # class index, multi-hot list, or per-token label ids
    offsets: list[tuple[int, int]] | None = None
    spans: list[dict] | None = None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a bad line is an InputError naming it."""
    from bigcode_cli.text.json_lines import json_objects

    out = json_objects(str(path))  # one-line errors: missing, directory, binary, not UTF-8, bad JSON
    for number, data in out:
        if not isinstance(data.get("text"), str) or not data["text"]:
            raise InputError(f"{path} line {number}: each record needs a non-empty string \"text\"")
    if not out:
        raise InputError(f"{path} has no records")
    return out


def classify_targets(rows: list[tuple[int, dict]], path: Path) -> tuple[list[Any], bool]:
    """Each record's label (str) or labels (list of str), and whether the data is multi-label."""
    targets, multi = [], None
    for number, data in rows:
        if "labels" in data:
            value = data["labels"]
            if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                raise InputError(f"{path} line {number}: \"labels\" must be a list of label names")
            target, is_multi = sorted({str(v) for v in value}), True
        elif isinstance(data.get("label"), (str, int)) and not isinstance(data.get("label"), bool):
            target, is_multi = str(data["label"]), False
        else:
            raise InputError(f"{path} line {number}: a classification record needs \"label\" (or a \"labels\" list)")
        if multi is not None and multi != is_multi:
            raise InputError(f"{path} line {number}: mixes \"label\" and \"labels\" records; use one kind")
        multi = is_multi
        targets.append(target)
    return targets, bool(multi)


def tag_spans(rows: list[tuple[int, dict]], path: Path) -> list[list[dict]]:
    """Each record's validated spans."""
    out = []
    for number, data in rows:
        spans = data.get("spans")
        if not isinstance(spans, list):
            raise InputError(f"{path} line {number}: a tagging record needs a \"spans\" list")
        clean = []
        for span in spans:
            ok = (isinstance(span, dict) and isinstance(span.get("label"), str) and span["label"]
                  and all(isinstance(span.get(k), int) and not isinstance(span.get(k), bool) for k in ("start", "end")))
            if not ok or not 0 <= span["start"] < span["end"] <= len(data["text"]):
                raise InputError(f"{path} line {number}: each span needs a label and 0 <= start < end <= len(text)")
            if span["label"] == "O" or span["label"][:2] in ("B-", "I-"):
                raise InputError(f"{path} line {number}: span labels are entity types such as KEY, not {span['label']!r}")
            clean.append({"start": span["start"], "end": span["end"], "label": span["label"]})
        out.append(clean)
    return out


def build_examples(task: str, rows: list[tuple[int, dict]], path: Path, tokenizer: Tokenizer, max_length: int,
                   labels: list[str] | None, multi: bool = False) -> tuple[list[Example], list[str], bool]:
    """Tokenized examples, the label list (given, or made from this data) and multi-label-ness."""
    examples: list[Example] = []
    if task == "classify":
        targets, multi_here = classify_targets(rows, path)
        if labels is not None and multi_here != multi:
            raise InputError(f"{path} is {'multi' if multi_here else 'single'}-label, the training data is not")
        if labels is None:
            names = set()
            for t in targets:
                names.update(t if multi_here else [t])
            labels, multi = sorted(names), multi_here
        index = {name: i for i, name in enumerate(labels)}
        for (number, data), target in zip(rows, targets):
            wanted = target if multi else [target]
            unknown = [t for t in wanted if t not in index]
            if unknown:
                raise InputError(f"{path} line {number}: label {unknown[0]!r} does not occur in the training data")
            ids = tokenizer.encode(data["text"])[:max_length]
            value = [1.0 if name in wanted else 0.0 for name in labels] if multi else index[target]
            examples.append(Example(data["text"], ids, value))
        return examples, labels, multi
    all_spans = tag_spans(rows, path)
    if labels is None:
        labels = bio_labels(sorted({s["label"] for spans in all_spans for s in spans}))
    index = {name: i for i, name in enumerate(labels)}
    for (number, data), spans in zip(rows, all_spans):
        ids, offsets = tokenizer.encode_with_offsets(data["text"])
        ids, offsets = ids[:max_length], offsets[:max_length]
        tags = token_tags(offsets, spans, data["text"])
        unknown = [t for t in tags if t not in index]
        if unknown:
            raise InputError(f"{path} line {number}: label {unknown[0][2:]!r} does not occur in the training data")
        examples.append(Example(data["text"], ids, [index[t] for t in tags], offsets, spans))
    return examples, labels, False


def classification_metrics(predicted: list[Any], gold: list[Any], num_labels: int, multi: bool) -> dict[str, float]:
    """accuracy and macro-F1 (single-label); exact-match accuracy and micro-F1 (multi-label)."""
    n = len(gold)
    if multi:
        exact = sum(p == g for p, g in zip(predicted, gold)) / n
        tp = sum(a and b for p, g in zip(predicted, gold) for a, b in zip(p, g))
        return {"accuracy": exact, "micro_f1": f1(tp, sum(map(sum, predicted)), sum(map(sum, gold)))}
    accuracy = sum(p == g for p, g in zip(predicted, gold)) / n
    scores = []
    for label in range(num_labels):
        tp = sum(p == g == label for p, g in zip(predicted, gold))
        n_pred, n_gold = predicted.count(label), gold.count(label)
        if n_pred or n_gold:
            scores.append(f1(tp, n_pred, n_gold))
    return {"accuracy": accuracy, "macro_f1": sum(scores) / len(scores)}


def main_metric(task: str, multi: bool) -> str:
    """The metric early stopping watches."""
    return "span_f1" if task == "tag" else ("micro_f1" if multi else "macro_f1")
