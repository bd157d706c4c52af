"""Turning a sequence classifier's logits into labels, as its config's `problem_type` says.

single-label: softmax, the top label; multi-label: sigmoid, every label at or above the threshold;
regression: the raw values. Without a problem_type, one label means regression and more mean
single-label (as transformers decides).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from bigcode_cli.model.config import GPTBigCodeConfig

SINGLE = "single_label_classification"
MULTI = "multi_label_classification"
REGRESSION = "regression"


def problem_type(config: GPTBigCodeConfig) -> str:
    """The config's problem type, or the one transformers would infer from the number of labels."""
    if config.problem_type:
        return config.problem_type
    return REGRESSION if config.num_labels == 1 else SINGLE


@dataclass
class Prediction:
    """What one snippet was classified as."""

    label: str | None  # the top label; None for regression or a multi-label snippet with no label
    score: float  # its probability (the raw value for regression)
    scores: dict[str, float]  # label -> probability (or value), best first, cut to top-k
    labels: list[str] | None = None  # multi-label: every label at or above the threshold


def _softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    e = math.exp(value)
    return e / (1.0 + e)


def predict(logits: torch.Tensor | Sequence[float], labels: Sequence[str], kind: str, *,
            top_k: int | None = None, threshold: float = 0.5) -> Prediction:
    """The prediction for one snippet's logits (num_labels,)."""
    values = [float(v) for v in (logits.tolist() if hasattr(logits, "tolist") else logits)]
    if kind == REGRESSION:
        scores = dict(zip(labels, values))
        return Prediction(None, values[0], _top(scores, top_k, by_value=False))
    if kind == MULTI:
        probs = [_sigmoid(v) for v in values]
    else:
        probs = _softmax(values)
    scores = dict(zip(labels, probs))
    ranked = _top(scores, None)
    best, best_score = next(iter(ranked.items()))
    if kind == MULTI:
        chosen = [label for label, p in ranked.items() if p >= threshold]
        return Prediction(chosen[0] if chosen else None, best_score, _top(ranked, top_k), chosen)
    return Prediction(best, best_score, _top(ranked, top_k))


def _top(scores: dict[str, float], k: int | None, by_value: bool = True) -> dict[str, float]:
    """Scores sorted best first (stable for ties), cut to k."""
    items = sorted(scores.items(), key=lambda kv: -kv[1]) if by_value else list(scores.items())
    return dict(items[:k] if k else items)
