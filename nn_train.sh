#!/usr/bin/env bash
# Trains FCN-8s on Cityscapes beside the repo (../cityscapes/data), as the original did.
# Extra flags are passed on, e.g. ./nn_train.sh --vgg_weights none   or   ./nn_train.sh --dataset demo
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ckpt_dir="ckpt"
summary_dir="summaries"
exec python "$here/main.py" train --gpu=1 --xla=2 -ep=10 -bs=10 -lr=0.00001 \
    --ckpt_dir="$ckpt_dir" --summary_dir="$summary_dir" "$@"
