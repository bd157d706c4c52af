"""Token labels <-> character spans: what `tag` prints and what `finetune tag` trains on.

Labels follow the B-/I-/O scheme (`B-KEY`, `I-KEY`, `O`); plain labels (`KEY`) work too and count
as a continuation of the same type. Spans are character offsets into the original text, stripped of
surrounding whitespace (byte-level BPE tokens carry their leading space), so that
`text[start:end]` is exactly the tagged value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from bigcode_cli.choices import AGGREGATES

if TYPE_CHECKING:
    import torch

OUTSIDE = "O"


@dataclass
class Span:
    """One tagged piece of text."""

    label: str
    start: int
    end: int
    text: str
    score: float

    def to_dict(self) -> dict:
        """The span as its JSON record."""
        return asdict(self)


def split_label(label: str) -> tuple[str, str]:
    """'B-KEY' -> ('B', 'KEY'), 'I-KEY' -> ('I', 'KEY'), 'KEY' -> ('I', 'KEY'), 'O' -> ('', 'O')."""
    if label == OUTSIDE:
        return "", OUTSIDE
    if len(label) > 2 and label[1] in "-_" and label[0] in "BIES":
        prefix = "B" if label[0] in "BS" else "I"
        return prefix, label[2:]
    return "I", label


def entity_types(labels: Iterable[str]) -> list[str]:
    """The entity types named by a label set, in first-seen order, without the outside label."""
    seen: dict[str, None] = {}
    for label in labels:
        kind = split_label(label)[1]
        if kind != OUTSIDE:
            seen.setdefault(kind)
    return list(seen)


def bio_labels(types: Iterable[str]) -> list[str]:
    """The label list a tagger for `types` is trained with: O, then B-/I- for each type."""
    labels = [OUTSIDE]
    for kind in types:
        labels += [f"B-{kind}", f"I-{kind}"]
    return labels


def token_predictions(logits: torch.Tensor, labels: Sequence[str]) -> list[tuple[str, float]]:
    """(label, probability) of the best label for each token of one snippet's logits (T, num_labels)."""
    probs = logits.float().softmax(-1)
    best, index = probs.max(-1)
    return [(labels[i], p) for i, p in zip(index.tolist(), best.tolist())]


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# what counts as one word when a span is grown to whole words: identifiers, and for EMAIL the whole
# address (a causal tagger often recognises an address only at its end: `.com`)
_EMAIL_CHARS = frozenset(".-+%@")


def _word_test(kind: str):
    if kind == "EMAIL":
        return lambda ch: ch.isalnum() or ch == "_" or ch in _EMAIL_CHARS
    return _is_word


def _widen(text: str, start: int, end: int, kind: str = "") -> tuple[int, int]:
    """Grow a span that cuts a word in two to the whole word."""
    is_word = _word_test(kind)
    while 0 < start < len(text) and is_word(text[start - 1]) and is_word(text[start]):
        start -= 1
    while 0 < end < len(text) and is_word(text[end - 1]) and is_word(text[end]):
        end += 1
    if kind == "EMAIL":
        while end > start and text[end - 1] in ".-":  # a sentence's full stop is not part of the address
            end -= 1
    return start, end


def spans_from_tokens(text: str, offsets: Sequence[tuple[int, int]], predictions: Sequence[tuple[str, float]],
                      aggregate: str = "word") -> list[Span]:
    """Spans from per-token (label, probability).

    `none`: one span per token not labelled O, with the model's own label (`B-EMAIL`, `I-EMAIL`), as
    transformers' token-classification pipeline gives with no aggregation. `word`: consecutive tokens
    of one type merge into one span named by the type (`EMAIL`; a B- starts a new span, unless it
    continues a word the previous piece is in: a causal model cannot see the end of a word when it
    labels its first piece), and a span that cuts a word grows to the whole word.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}")
    groups: list[list] = []  # [type, start, end, [probabilities]]
    previous_end = -1
    for (start, end), (label, prob) in zip(offsets, predictions):
        prefix, kind = split_label(label)
        if kind == OUTSIDE:
            previous_end = -1
            continue
        last = groups[-1] if groups else None
        joins = (aggregate == "word" and last is not None and last[0] == kind and previous_end >= 0
                 and (prefix == "I" or _inside_word(text, previous_end, start)))
        if joins:
            last[2] = max(last[2], end)
            last[3].append(prob)
        else:
            groups.append([kind if aggregate == "word" else label, start, end, [prob]])
        previous_end = end
    spans: list[Span] = []
    for kind, start, end, probs in groups:
        start, end = _strip(text, start, end)
        if aggregate == "word":
            start, end = _widen(text, start, end, kind)
        if start >= end:
            continue
        score = sum(probs) / len(probs)
        if spans and start < spans[-1].end:  # widened into the previous span
            prev = spans[-1]
            if prev.label == kind:
                prev.end = max(prev.end, end)
                prev.text = text[prev.start:prev.end]
                continue
            start = prev.end
            if start >= end:
                continue
        spans.append(Span(kind, start, end, text[start:end], score))
    return spans


def _inside_word(text: str, previous_end: int, start: int) -> bool:
    """Whether a token starting at `start` continues the word the previous token ended at."""
    return (start == previous_end and 0 < start < len(text)
            and _is_word(text[start - 1]) and _is_word(text[start]))


def keep_labels(spans: Iterable[Span], wanted: Iterable[str] | None) -> list[Span]:
    """Only the spans whose type (`EMAIL` for `B-EMAIL` too) is in `wanted` (all when None or empty)."""
    wanted = {w for w in (wanted or []) if w}
    return [s for s in spans if not wanted or split_label(s.label)[1] in wanted]


def redact(text: str, spans: Iterable[Span]) -> str:
    """`text` with every span replaced by `<LABEL>`."""
    pieces: list[str] = []
    at = 0
    for span in sorted(spans, key=lambda s: s.start):
        if span.start < at:
            continue
        pieces += [text[at:span.start], f"<{span.label}>"]
        at = span.end
    pieces.append(text[at:])
    return "".join(pieces)


def token_tags(offsets: Sequence[tuple[int, int]], spans: Iterable[dict], text: str) -> list[str]:
    """B-/I-/O training labels for tokens from character spans: a token is inside a span when its
    non-space characters overlap it; the first such token of a span is B-."""
    tags = [OUTSIDE] * len(offsets)
    for span in sorted(spans, key=lambda s: s["start"]):
        first = True
        for i, (start, end) in enumerate(offsets):
            s, e = _strip(text, start, end)
            if s >= e:
                s, e = start, end  # a whitespace token counts with its whole extent
                if s >= span["start"] and e <= span["end"] and not first:
                    tags[i] = f"I-{span['label']}"  # whitespace inside a span (a PEM body's newlines)
                continue
            if s < span["end"] and e > span["start"] and tags[i] == OUTSIDE:
                tags[i] = f"{'B' if first else 'I'}-{span['label']}"
                first = False
    return tags


def span_scores(predicted: Iterable[tuple[str, int, int]], gold: Iterable[tuple[str, int, int]]) -> tuple[int, int, int]:
    """(true positives, predicted, gold) counts of exactly matching (label, start, end) spans."""
    predicted, gold = set(predicted), set(gold)
    return len(predicted & gold), len(predicted), len(gold)


def f1(true_positives: int, predicted: int, gold: int) -> float:
    """F1 from counts (0 when there is nothing to match)."""
    if predicted == 0 or gold == 0:
        return 1.0 if predicted == gold else 0.0
    precision, recall = true_positives / predicted, true_positives / gold
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
