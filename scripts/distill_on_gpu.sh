#!/usr/bin/env bash
# Distil an EAGLE-3 head for a target on a lent NVIDIA GPU within one 10-minute run, so the head
# (a few MB) comes back under $OUT. The target reads ShareGPT answers batch by batch (online
# training: taps + its own top-k labels), the head trains with training-time test, and the head
# directory (published Hugging Face EAGLE-3 layout) is written at the end.
#
#   WHEELS=shared/wheels scripts/distill_on_gpu.sh            # on the GPU machine: $OUT/eagle3-head
#   DRY_RUN=1 MODEL=tiny-dir DATA=pairs.jsonl scripts/distill_on_gpu.sh   # the CPU path (tests)
#
# Environment: WHEELS (a folder holding the mlx[cuda13] wheels and their dependencies; installed
# with --no-index), MODEL (path or store name; default: the default model), DATA (sharegpt or a
# .jsonl of prompt/answer pairs), PAIRS, STEPS, BATCH_TOKENS, TRAIN_MINUTES (training stops, evaluates
# and writes the head after this long, default 6), BUDGET_S (hard wall-clock cap for the
# training command, default 540 s: the run must finish, export included, inside 10 minutes),
# OUT (default: $OUT or ./gpu-out). DRY_RUN=1 skips the wheel install and runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-./gpu-out}"
mkdir -p "$OUT_DIR"
if [ -z "${DRY_RUN:-}" ]; then
  python -m pip install --quiet --no-index --find-links "${WHEELS:?set WHEELS to the folder of mlx[cuda13] wheels}" "mlx[cuda13]"
  python -c "import mlx.core as mx; assert mx.default_device().type == mx.DeviceType.gpu, 'MLX sees no GPU'; print('MLX', mx.__version__, mx.default_device())"
fi
MODEL_ARGS=()
[ -n "${MODEL:-}" ] && MODEL_ARGS=(--model "$MODEL")
start=$(date +%s)
timeout "${BUDGET_S:-540}" python cli.py train-drafter --arch eagle3 "${MODEL_ARGS[@]}" --data "${DATA:-sharegpt}" \
  --out "$OUT_DIR/eagle3-head" --work "$OUT_DIR/work" --read-answers "${PAIRS:-6000}" --steps "${STEPS:-600}" \
  --batch-tokens "${BATCH_TOKENS:-16384}" --eval-every "${EVAL_EVERY:-100}" --eval-prompts "${EVAL_PROMPTS:-32}" \
  --max-new-tokens "${MAX_NEW:-96}" --max-answer-tokens 512 --train-minutes "${TRAIN_MINUTES:-6}" ${EXTRA_ARGS:-} | tee "$OUT_DIR/train.txt"
rm -rf "$OUT_DIR/work/redrafter-data"  # the side shards are large; the head and its checkpoint come back
echo "seconds: $(( $(date +%s) - start ))" | tee -a "$OUT_DIR/train.txt"
