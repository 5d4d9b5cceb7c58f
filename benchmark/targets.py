"""The benchmark's targets, and how a measured value stands against one."""
import collections

import numpy as np

# A target: the measured value must be op ('>=' or '<=') threshold, shown in unit.
Target = collections.namedtuple('Target', ['label', 'op', 'threshold', 'unit', 'next_steps'])
TARGETS = {
    'inference_fp32': Target(
        'float32 inference, share of the float32 matmul peak', '>=', 0.90, '%',
        'The profile (the batch-1 step, traced warm) has the convolutions and fc6/fc7 '
        'products at ~95% of the op time: bias, ReLU and pooling are fused or small. At batch '
        '1 fc6 is one product of a 128-row patch matrix with 411 MB of weights (~a quarter of '
        'the FLOPs), and oneDNN runs such a short product below its 4096 x 4096 rate; batch 4 '
        'gives it 512 rows. The share moves with the machine\'s state by several points from '
        'run to run: the peak is the best of the run, the row one stretch of a few seconds. '
        'fc6 in row bands, as in training, is slower at batch 1 (products of 80-128 rows: 127 '
        'against 108 ms). '
        'Next: fc6\'s short product, timed alone against the 4096 x 4096 rate.'),
    'inference_bf16': Target(
        'bf16 inference, speed-up over float32', '>=', 1.5, 'x',
        'If the row says no bf16 rewrite ran, --precision bf16 did not reach the session. '
        'Otherwise the profile shows which ops stayed float32, with casts around them.'),
    'training_fp32': Target(
        'float32 training step, share of the peak (3x forward FLOPs)', '>=', 0.80, '%',
        'With --profile, "Where a float32 training step\'s time goes" splits the profiled '
        'step and gives each part\'s share of the peak. The forward passes and the input '
        'gradients run closest to it, the filter gradients lowest (oneDNN runs them with its '
        'jit:avx512_core kernel, ONEDNN_VERBOSE=1). The row of all the products together is '
        'the most a step could reach if nothing else took time: 81-88% in recent runs. The '
        'rest of the step, ~15%, is bound by memory: Adam reads the weights, both moments and '
        'the gradients (2.1 GB) and writes 1.6 GB every step; weight decay multiplies and adds '
        'over the same 537 MB of kernels (~3%); then the ReLU, bias and pooling gradients and '
        'the loss. fc6 already runs in row bands that skip the zero padding (~2%). XLA would '
        'fuse the element-wise ops but compiles the convolutions to slower code (the --xla 2 '
        'row). Transparent huge pages made a step fed batches in memory faster but not one fed '
        'by tf.data, so training does not use them. The peak is the best of the run, and the '
        'machine\'s state moves both by several points between rows. Next: filter gradients '
        'faster than oneDNN\'s, and weight decay added inside the weight gradient\'s product '
        '(TensorFlow\'s fused matrix product with an addend fails when an operand is '
        'transposed).'),
    'training_bf16': Target(
        'bf16 training step, speed-up over float32', '>=', 1.5, 'x',
        'As for bf16 inference; the backward convolutions and Adam\'s float32 update are the '
        'parts to look at in the profile.'),
    'tfdata_step': Target(
        'training step with tf.data / in memory', '<=', 1.05, 'x',
        'On 2 cores the decoding and resizing of 2048x1024 PNGs takes cores from the '
        'convolutions: train on a resized copy (main.py prepare) so each sample decodes less.'),
    'train_rss': Target(
        'peak RSS of float32 training at batch 2', '<=', 5.5, 'GB',
        'Weights, Adam\'s two moments and their gradients are ~2.1 GB; the rest is '
        'activations, the checkpoint and SavedModel writers and the input pipeline.'),
    'predict_rss': Target(
        'peak RSS of predict with the optimised model', '<=', 1.5, 'GB',
        'TensorFlow takes 0.54 GB once imported (main.py skips the Keras optimisers it '
        'loads eagerly, 68 MB), fc6 and fc7 0.48 GB (held once, in variables '
        'the session dequantizes into). The peak is in steady prediction: the convolution '
        'filters (60 MB) are held 4 times (Python graph, session graph, executor constants, '
        'oneDNN\'s layout), activations take ~0.1 GB of oneDNN\'s allocator, the 2048x1024 '
        'images ~0.05 GB. Next: the filters in 8 bits in the two graphs, which grappler\'s '
        'constant folding (it folds growth of at most 100 KB) would dequantize only in '
        'slices. The int8 TFLite model fits (0.94 GB).'),
    'optimised_size': Target(
        'optimised graph size / frozen graph size', '<=', 0.27, '%',
        'Weights under export.MIN_QUANTIZED_ELEMENTS values stay float32.'),
    'optimised_agreement': Target(
        'optimised: pixels agreeing with the frozen model', '>=', 0.99, '%',
        '8-bit weights with one range per tensor: a per-channel range keeps more precision.'),
    'optimised_miou': Target(
        'optimised: |mean IoU - frozen mean IoU|', '<=', 0.5, 'points', ''),
    'optimised_time': Target(
        'optimised time / frozen time', '<=', 1.10, 'x',
        'The loader dequantizes once (inference.dequantize_constants): if the profile shows '
        'Dequantize ops at every run, that folding did not happen.'),
    'tflite_speed': Target(
        'int8 TFLite speed-up over the frozen float model', '>=', 3.0, 'x',
        'The profile of the float model shows what the int8 model saves; for TFLite itself '
        'check that XNNPACK runs every op (no fallback to TFLite\'s reference kernels).'),
    'tflite_agreement': Target(
        'int8 TFLite: pixels agreeing with the frozen model', '>=', 0.97, '%',
        'More or more varied calibration images (--calibration_images).'),
    'tflite_miou': Target(
        'int8 TFLite: |mean IoU - frozen mean IoU|', '<=', 1.5, 'points', ''),
}


def format_value(value, unit):
    if value is None:
        return 'n/a'
    if unit == '%':
        return '%.1f%%' % (100 * value)
    if unit == 'x':
        return '%.2fx' % value
    return '%.2f %s' % (value, unit)


def format_goal(target):
    """'>= 90.0%': the target as the report shows it."""
    return '%s %s' % (target.op, format_value(target.threshold, target.unit))


def _format_gap(gap, unit):
    return '%.1f points' % (100 * gap) if unit == '%' else format_value(gap, unit)


def target_status(value, target):
    """'met (... to spare)' or '**missed** by ...', the gap in the target's unit."""
    if value is None or not np.isfinite(value):
        return 'not measured'
    gap = value - target.threshold if target.op == '>=' else target.threshold - value
    if gap >= 0:
        return 'met (%s to spare)' % _format_gap(gap, target.unit)
    return '**missed** by %s' % _format_gap(-gap, target.unit)


def target_met(value, target):
    return value is not None and target_status(value, target).startswith('met')
