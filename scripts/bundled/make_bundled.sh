#!/usr/bin/env bash
# The whole bundled-model recipe, in order, seeded (run from the repository root, ~2 h on a 2-core CPU).
#   bash scripts/bundled/make_bundled.sh            # everything
#   STEP=langid bash scripts/bundled/make_bundled.sh  # one step: data | lm | langid | secrets | eval
# A GPU makes the LM step much faster: DEVICE=cuda MINUTES=10 bash scripts/bundled/make_bundled.sh
# The tokenizer is the shipped one (the models' ids depend on it): RETRAIN_TOKENIZER=1 trains a new one.
# The LM continues from the shipped bigcode-tiny (INIT=, empty, trains from scratch), one thread by default.
set -euo pipefail
PY=${PY:-python}
DEVICE=${DEVICE:-cpu}
MINUTES=${MINUTES:-60}
THREADS=${THREADS:-1}
INIT=${INIT-bigcode_cli/bundled/bigcode-tiny}
BUNDLED=bigcode_cli/bundled
step() { [ -z "${STEP:-}" ] || [ "${STEP}" = "$1" ]; }

if step data; then
  $PY scripts/bundled/corpus.py --fetch
  [ "${RETRAIN_TOKENIZER:-0}" = 1 ] && $PY scripts/bundled/tokenizer.py
  $PY scripts/bundled/pretokenize.py
  $PY scripts/bundled/langid_data.py
  $PY scripts/bundled/secrets_data.py
fi
if step lm; then
  # resumable: rerunning continues from runs/lm/state.pt; bf16 autocast where the hardware has it
  $PY scripts/bundled/train_lm.py --device "$DEVICE" --minutes "$MINUTES" --threads "$THREADS" \
      --length 512 --batch 8 --lr 1.5e-3 --warmup 100 ${INIT:+--init "$INIT"}
fi
if step langid; then
  # a CPU-sized share of the (shuffled) training data: 5,400 snippets, ~600 per language
  rm -rf runs/langid && mkdir -p runs
  head -n "${LANGID_TRAIN:-5400}" data/langid/train.jsonl > runs/langid_train.jsonl
  $PY -m bigcode_cli finetune classify --base "$BUNDLED/bigcode-tiny" --train runs/langid_train.jsonl \
      --eval data/langid/eval.jsonl --out runs/langid --epochs 3 --lr 2e-3 --unfreeze 1 --max-length 128 \
      --batch-size 32 --seed 0 --device "$DEVICE"
  $PY scripts/bundled/ship.py runs/langid "$BUNDLED/bigcode-tiny-langid"
fi
if step secrets; then
  rm -rf runs/secrets && mkdir -p runs
  head -n "${SECRETS_TRAIN:-4000}" data/secrets/train.jsonl > runs/secrets_train.jsonl
  $PY -m bigcode_cli finetune tag --base "$BUNDLED/bigcode-tiny" --train runs/secrets_train.jsonl \
      --eval data/secrets/eval.jsonl --out runs/secrets --epochs 3 --lr 2e-3 --unfreeze 2 --max-length 256 \
      --batch-size 16 --seed 0 --device "$DEVICE"
  $PY scripts/bundled/ship.py runs/secrets "$BUNDLED/bigcode-tiny-secrets"
fi
if step eval; then
  $PY scripts/bundled/evaluate_lm.py --json runs/eval_lm.json
  $PY scripts/bundled/evaluate_heads.py --json runs/eval_heads.json
fi
