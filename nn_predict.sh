#!/usr/bin/env bash
# Overlays of the Cityscapes test split with a trained model, as the original did.
# Extra flags are passed on, e.g. ./nn_predict.sh --dataset demo --save_labels
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# MODEL_DIR picks the model; by default the newest under runs/
model_flags=()
if [[ -n "${MODEL_DIR:-}" ]]; then model_flags=(--model_dir="$MODEL_DIR"); fi
exec python "$here/main.py" predict --gpu=1 --xla=2 "${model_flags[@]}" "$@"
