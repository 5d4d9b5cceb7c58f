#!/usr/bin/env bash
# End to end with the full-size FCN-8s on a few demo images: train, freeze, optimise, predict,
# evaluate (the TFLite and ONNX models too) and segment the demo video, checking each output.
# About 5 minutes on 2 CPU cores.
# Usage: tests/smoke.sh [WORK_DIR]   (default: a new temporary folder, kept for inspection)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
demo="$repo/data/demo"
train_images="$demo/leftImg8bit/train/demoville/demoville_00000[0-7]_*_leftImg8bit.png"
mkdir -p "$work"
cd "$work"
run() { echo "+ main.py $*"; python "$repo/main.py" "$@" --gpu 0; }
check() { python -c "$1" || { echo "smoke test failed: $2" >&2; exit 1; }; }

run train --dataset demo -ip "$train_images" -lp "$demo/gtFine/train" --image_shape 64 128 \
    -bs 4 -ep 1 -cd ckpt -sd summaries -rd runs -md model
check "import os; assert os.path.exists('model/saved_model.pb')" "no SavedModel"

run freeze --ckpt_dir=ckpt --frozen_model_dir=frozen_model
run optimise --frozen_model_dir=frozen_model --optimised_model_dir=optimised_model
check "import os; r = os.path.getsize('optimised_model/graph.pb') / os.path.getsize('frozen_model/graph.pb'); print('size ratio %.3f' % r); assert r <= 0.27" "optimised graph too large"
check "import os; assert os.path.getsize('optimised_model/model.tflite') > 0" "no TFLite model"
check "import os; assert os.path.getsize('optimised_model/model.onnx') > 0" "no ONNX model"

run predict --dataset demo --model_dir=optimised_model -rd predictions --save_labels
check "import glob; assert len(glob.glob('predictions/*/overlays/*.png')) == 16" "overlays missing"

run evaluate --dataset demo --model_dir=optimised_model/model.tflite -rd evaluation
check "import glob, json; m = json.load(open(glob.glob('evaluation/*/metrics.json')[0])); print('TFLite mean IoU %.3f' % m['mean_iou']); assert 0 <= m['mean_iou'] <= 1" "no metrics"

run evaluate --dataset demo --model_dir=optimised_model/model.onnx -rd evaluation_onnx
check "import glob, json; m = json.load(open(glob.glob('evaluation_onnx/*/metrics.json')[0])); print('ONNX mean IoU %.3f' % m['mean_iou']); assert 0 <= m['mean_iou'] <= 1" "no ONNX metrics"

run video --dataset demo --model_dir=frozen_model -vo video.mp4
check "import imageio_ffmpeg as f, sys; sys.path.insert(0, '$repo'); from roadseg.data import demo_data; assert f.count_frames_and_secs('video.mp4')[0] == f.count_frames_and_secs(demo_data.demo_video_path())[0]" "video frame count differs"

# The original tool's command lines as its README gave them, with one epoch and no pretrained
# weights, on a generated Cityscapes-layout folder where the original expected Cityscapes.
mkdir -p "$work/original"
cd "$work/original"
python -c "import sys; sys.path.insert(0, '$repo'); from roadseg.data import demo_data; demo_data.ensure_demo_dataset('$work/cityscapes/data', split_sizes={'train': 4, 'val': 2, 'test': 2}, video_frames=6)"
original() { echo "+ main.py $*"; python "$repo/main.py" "$@"; }
original train --gpu=1 --xla=2 -ep=1 -bs=10 -lr=0.00001 --vgg_weights none
original freeze --ckpt_dir=ckpt --frozen_model_dir=frozen_model
original optimise --frozen_model_dir=frozen_model --optimised_model_dir=optimised_model
check "import os; assert os.path.getsize('optimised_model/model.tflite') > 0" "original chain: no TFLite model"
original predict --gpu=1 --xla=2 --model_dir=optimised_model
check "import glob; assert len(glob.glob('runs/*/overlays/*.png')) == 2" "original chain: overlays missing"
original video --gpu=1 --xla=2 --model_dir=frozen_model -vi "$work/cityscapes/data/video/demo_drive.mp4" -vo out.mp4
check "import os; assert os.path.getsize('out.mp4') > 0" "original chain: no video"

echo "smoke test passed in $work"
