#!/usr/bin/env bash
# Optimises the frozen graph (8-bit weights, int8 TFLite model), as the original did.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
frozen_model_dir="frozen_model"
optimised_model_dir="optimised_model"
exec python "$here/main.py" optimise --frozen_model_dir="$frozen_model_dir" \
    --optimised_model_dir="$optimised_model_dir" "$@"
