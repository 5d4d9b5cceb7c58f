"""The benchmark's fixed shapes and its full and quick settings."""
import collections
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder of main.py
IMAGE_SHAPE = (256, 512)
LABEL_SET = 'cityscapes'  # 19 classes
TRAIN_BATCH = 2
ACCUMULATE = 2            # --accumulate's rows: the batch of TRAIN_BATCH in micro-batches of 1
KEEP_PROB = 0.5           # Cityscapes training's dropout
GB = 1e9
BUSY_SHARE = 0.1  # other processes' share of the CPU time above which a run is preliminary

Settings = collections.namedtuple('Settings', [
    'name', 'warmup', 'repeats', 'batches', 'matmul_size', 'sources', 'source_shape',
    'pipeline_batches', 'val_images', 'calibration_images', 'copy_megabytes'])
FULL = Settings('full', warmup=2, repeats=5, batches=(1, 4), matmul_size=4096, sources=8,
                source_shape=(1024, 2048), pipeline_batches=12, val_images=32,
                calibration_images=20, copy_megabytes=1024)
QUICK = Settings('quick', warmup=1, repeats=2, batches=(1,), matmul_size=2048, sources=4,
                 source_shape=(512, 1024), pipeline_batches=4, val_images=8,
                 calibration_images=4, copy_megabytes=64)
