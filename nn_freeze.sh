#!/usr/bin/env bash
# Freezes the latest checkpoint into one constant graph, as the original did.
# Extra flags are passed on, e.g. ./nn_freeze.sh --model_dir runs/<timestamp>/model
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ckpt_dir="ckpt"
frozen_model_dir="frozen_model"
exec python "$here/main.py" freeze --ckpt_dir="$ckpt_dir" --frozen_model_dir="$frozen_model_dir" "$@"
