#!/usr/bin/env bash
# Segments a video with the optimised model, as the original did.
# Usage: ./nn_video.sh -vi in.mp4 -vo out.mp4 [-vs 10 -ve 20] [more flags, which win]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
model_dir="${MODEL_DIR:-optimised_model}"
exec python "$here/main.py" video --gpu=1 --xla=2 --model_dir="$model_dir" "$@"
