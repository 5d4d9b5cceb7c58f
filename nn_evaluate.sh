#!/usr/bin/env bash
# Mean IoU of the optimised model on the Cityscapes val split, with a report in runs/.
# Extra flags are passed on and win, e.g. ./nn_evaluate.sh -md optimised_model/model.tflite
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
model_dir="${MODEL_DIR:-optimised_model}"
exec python "$here/main.py" evaluate --gpu=1 --xla=2 --model_dir="$model_dir" "$@"
