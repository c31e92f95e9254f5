#!/usr/bin/env bash
# Our draft-model speculative decoding vs mlx-lm's own (--draft-model), same prompts, same process.
# Target Qwen2.5-Coder-1.5B-Instruct, draft Qwen2.5-Coder-0.5B-Instruct (both pulled from PyPI),
# float32, greedy; outputs are compared token by token against autoregressive decoding.
#   bash scripts/draft_model_vs_mlx_lm.sh [LIMIT] [MAX_TOKENS] [NUM_DRAFT]
set -euo pipefail
LIMIT=${1:-5}; MAX_TOKENS=${2:-64}; NUM_DRAFT=${3:-4}
PROMPTS=${PROMPTS:-$(dirname "$0")/../../shared/data/humaneval/question.jsonl}
mlx-specdec pull qwen2.5-coder-1.5b
mlx-specdec pull qwen2.5-coder-0.5b
mlx-specdec bench --model qwen2.5-coder-1.5b --draft-model qwen2.5-coder-0.5b --num-draft "$NUM_DRAFT" \
  --methods ar,draft-model --peers mlx-lm --prompts "$PROMPTS" --limit "$LIMIT" --max-tokens "$MAX_TOKENS" \
  --dtype float32 --out "${OUT:-draft_model_vs_mlx_lm.json}"
