#!/usr/bin/env bash
# Train the LM in segments of one schedule and evaluate after each: the curve of held-out exact match and
# bits per byte against training tokens (run from the repository root, after the `data` step).
#   SEGMENTS=4 SEGMENT_MINUTES=15 bash scripts/bundled/curve.sh
# Extra train_lm.py options go in TRAIN_ARGS; results land in runs/curve/segment-N.json (and train.log).
set -euo pipefail
PY=${PY:-python}
SEGMENTS=${SEGMENTS:-4}
SEGMENT_MINUTES=${SEGMENT_MINUTES:-15}
RUN=${RUN:-runs/lm}
OUT=${OUT:-runs/curve}
mkdir -p "$OUT"
for n in $(seq 1 "$SEGMENTS"); do
  # shellcheck disable=SC2086
  $PY scripts/bundled/train_lm.py --run "$RUN" --out "$RUN/model" --minutes "$((SEGMENTS * SEGMENT_MINUTES))" \
      --segment-minutes "$SEGMENT_MINUTES" ${TRAIN_ARGS:-} >> "$OUT/train.log" 2>&1
  $PY scripts/bundled/evaluate_lm.py --model "$RUN/model" --max-tokens "${EVAL_TOKENS:-200000}" \
      --json "$OUT/segment-$n.json" >> "$OUT/eval.log" 2>&1
done
