#!/usr/bin/env bash
# Overlays of the Cityscapes test split with the optimised model, as the original did.
# Extra flags are passed on and win, e.g. ./nn_predict.sh --dataset demo -md runs/<timestamp>/model
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
model_dir="${MODEL_DIR:-optimised_model}"
exec python "$here/main.py" predict --gpu=1 --xla=2 --model_dir="$model_dir" "$@"
