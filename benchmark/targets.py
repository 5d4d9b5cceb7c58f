"""The benchmark's targets, one line each, and how a measured value stands against one."""
import collections

import numpy as np

from roadseg import devices

# A target: the measured value must be op ('>=' or '<=') threshold, shown in unit.
Target = collections.namedtuple('Target', ['label', 'op', 'threshold', 'unit'])
TARGETS = {key: Target(*line) for key, line in {
    'inference_fp32': ('float32 inference, share of the float32 matmul peak', '>=', 0.90, '%'),
    'inference_bf16': ('bf16 inference, speed-up over float32', '>=', 1.5, 'x'),
    'training_fp32': ('float32 training step, share of the peak', '>=', 0.80, '%'),
    'training_bf16': ('bf16 training step, speed-up over float32', '>=', 1.5, 'x'),
    'tfdata_step': ('training step with tf.data / in memory', '<=', 1.05, 'x'),
    'sgd_poly_step': ('training step of SGD, momentum and poly schedule / Adam at a constant rate',
                      '<=', 1.05, 'x'),
    'train_rss': ('peak RSS of float32 training at batch 2', '<=', 5.5, 'GB'),
    'predict_rss': ('peak RSS of predict with the optimised model', '<=', 1.5, 'GB'),
    'float_predict_rss': ('peak RSS of predict with a float model', '<=', 2.0, 'GB'),
    'cold_tflite': ('cold predict of one image, command to exit', '<=', 2.0, 's'),
    'cold_graph': ('cold predict of one image, command to exit', '<=', 5.0, 's'),
    'cold_trained': ('cold predict of one image, command to exit', '<=', 8.0, 's'),
    'video_throughput': ('`video` frames/s, share of the model alone\'s', '>=', 0.85, '%'),
    'optimised_size': ('optimised graph size / frozen graph size', '<=', 0.27, '%'),
    'optimised_agreement': ('optimised: pixels agreeing with the frozen model', '>=', 0.99, '%'),
    'optimised_miou': ('optimised: |mean IoU - frozen mean IoU|', '<=', 0.5, 'points'),
    'optimised_time': ('optimised time / frozen time', '<=', 1.10, 'x'),
    'onnx_runtime': ('float32 inference (frozen graph) at least as fast as ONNX Runtime on the '
                     'same network: ONNX Runtime time / frozen time', '>=', 1.0, 'x'),
    'tflite_speed': ('int8 TFLite speed-up over the frozen float model', '>=', 3.0, 'x'),
    'tflite_agreement': ('int8 TFLite: pixels agreeing with the frozen model', '>=', 0.97, '%'),
    'tflite_miou': ('int8 TFLite: |mean IoU - frozen mean IoU|', '<=', 1.5, 'points'),
}.items()}

# Targets that only a CPU with one of these instructions can meet; elsewhere they do not apply:
# without them --precision bf16 is emulated, or runs in float32, and XNNPACK's int8 products
# run at about its float32 rate, so int8 gains little over a float engine.
INT8_DOT_CPU_FLAGS = ('avx512_vnni', 'avx_vnni')
NEEDED_CPU_FLAGS = {'inference_bf16': devices.BF16_CPU_FLAGS,
                    'training_bf16': devices.BF16_CPU_FLAGS,
                    'tflite_speed': INT8_DOT_CPU_FLAGS}


def not_applicable(key, flags):
    """Why the target key does not apply on a CPU with these flags (a set; None: not known),
    or None where it does."""
    needed = NEEDED_CPU_FLAGS.get(key)
    if needed and flags is not None and not flags & set(needed):
        return 'not applicable: this CPU has neither %s' % ' nor '.join(needed)
    return None


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


def target_status(value, target, reason=None):
    """'met (... to spare)' or '**missed** by ...', the gap in the target's unit; reason (see
    not_applicable) in their place when given."""
    if reason:
        return reason
    if value is None or not np.isfinite(value):
        return 'not measured'
    gap = value - target.threshold if target.op == '>=' else target.threshold - value
    if gap >= 0:
        return 'met (%s to spare)' % _format_gap(gap, target.unit)
    return '**missed** by %s' % _format_gap(-gap, target.unit)


def target_met(value, target, reason=None):
    return value is not None and target_status(value, target, reason).startswith('met')
