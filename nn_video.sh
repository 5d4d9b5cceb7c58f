#!/usr/bin/env bash
# Segments a video with a trained model, as the original did.
# Usage: ./nn_video.sh -vi in.mp4 -vo out.mp4 [-vs 10 -ve 20] [more flags]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# MODEL_DIR picks the model; by default the newest under runs/
model_flags=()
if [[ -n "${MODEL_DIR:-}" ]]; then model_flags=(--model_dir="$MODEL_DIR"); fi
exec python "$here/main.py" video --gpu=1 --xla=2 "${model_flags[@]}" "$@"
