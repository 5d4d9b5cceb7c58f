#!/usr/bin/env bash
# A resized copy of Cityscapes (../cityscapes/data) that trains faster: ../cityscapes_prepared.
# Train from it with ./nn_train.sh --data_root ../cityscapes_prepared
# Extra flags are passed on, e.g. ./nn_prepare.sh --dataset demo   or   ./nn_prepare.sh --split val
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python "$here/main.py" prepare "$@"
