"""Held-out evaluation of the bundled classifier and tagger, through the real `bigcode classify` / `bigcode tag`.

    python scripts/bundled/evaluate_heads.py [--langid bigcode-tiny-langid] [--secrets bigcode-tiny-secrets] [--json FILE]

- bigcode-tiny-langid on data/langid/test.jsonl (snippets from files no model saw): accuracy and a
  confusion matrix (rows = truth, columns = prediction).
- bigcode-tiny-secrets on data/secrets/test.jsonl: span precision / recall / F1 per label, a span
  counting as right only when label, start and end all match exactly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(command: str, model: str, records: list[dict]) -> list[dict]:
    """Feed JSON Lines records to a bigcode command and return its JSON Lines output."""
    data = "".join(json.dumps({"id": i, "text": r["text"]}) + "\n" for i, r in enumerate(records))
    proc = subprocess.run([sys.executable, "-m", "bigcode_cli", command, "-m", model, "--format", "jsonl",
                           "--input-format", "jsonl"], input=data, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def langid(model: str, path: Path) -> dict:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    out = run_cli("classify", model, records)
    labels = sorted({r["label"] for r in records})
    confusion = {t: Counter() for t in labels}
    for record, result in zip(records, out):
        confusion[record["label"]][result["label"]] += 1
    correct = sum(confusion[t][t] for t in labels)
    return {"examples": len(records), "accuracy": round(correct / len(records), 4),
            "per_label_accuracy": {t: round(confusion[t][t] / sum(confusion[t].values()), 3) for t in labels},
            "confusion": {t: {p: confusion[t][p] for p in labels} for t in labels}}


def secrets(model: str, path: Path) -> dict:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    out = run_cli("tag", model, records)
    tp, predicted, gold = Counter(), Counter(), Counter()
    for record, result in zip(records, out):
        truth = {(s["label"], s["start"], s["end"]) for s in record["spans"]}
        guess = {(s["label"], s["start"], s["end"]) for s in result["spans"]}
        for label, *_ in truth:
            gold[label] += 1
        for label, *_ in guess:
            predicted[label] += 1
        for label, *_ in truth & guess:
            tp[label] += 1
    report = {}
    for label in sorted(set(gold) | set(predicted)):
        p = tp[label] / predicted[label] if predicted[label] else 0.0
        r = tp[label] / gold[label] if gold[label] else 0.0
        report[label] = {"precision": round(p, 3), "recall": round(r, 3),
                         "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0, "gold": gold[label]}
    total_tp, total_p, total_g = sum(tp.values()), sum(predicted.values()), sum(gold.values())
    p = total_tp / total_p if total_p else 0.0
    r = total_tp / total_g if total_g else 0.0
    report["micro"] = {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0}
    return {"examples": len(records), "spans": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langid", default="bigcode-tiny-langid")
    parser.add_argument("--secrets", default="bigcode-tiny-secrets")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = {"langid": langid(args.langid, args.data / "langid" / "test.jsonl")}
    print(json.dumps(report["langid"]), flush=True)
    report["secrets"] = secrets(args.secrets, args.data / "secrets" / "test.jsonl")
    print(json.dumps(report["secrets"]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
