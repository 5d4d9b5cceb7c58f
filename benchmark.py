"""Speed, memory and export quality of FCN-8s on this machine, written to BENCHMARKS.md.

    python benchmark.py --quick                                   # small settings, a check
    python benchmark.py --model_dir runs/<timestamp>/model --profile profile   # the full run

One run measures, at 256x512 with the real VGG16 widths and the 19 Cityscapes classes:
- peak: the model's FLOPs per image (TensorFlow's profiler) and this machine's float32 and
  bfloat16 matrix-multiply rates: the limits the speed targets are measured against;
- inference: ms per image of the float32 model, --xla 2, --precision bf16, the frozen, the
  optimised and the int8 TFLite model, at batch 1 and 4;
- training: ms per image of a training step at batch 2 (forward, backward and Adam);
- pipeline: the python generator and tf.data alone on Cityscapes-sized 2048x1024 sources, and a
  training step fed by each against one fed batches already in memory;
- memory: peak RSS of `main.py train` at batch 2 and of `main.py predict` with the optimised model;
- export: frozen vs optimised vs int8 TFLite on the demo val split (needs a trained --model_dir).
Each time is the median of several runs after warm-up runs, and every row that times a model
runs in a fresh Python process (see in_child). Without --model_dir the models have random
weights: right for speed, meaningless for accuracy.
"""
import argparse
import collections
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# XLA reads its flags once per process, at the first device listing, so CPU JIT is allowed from
# the start, here and in the row processes, which run this file too. It acts only where a
# session sets a JIT level, as helper.session_config does for --xla.
if '--tf_xla_cpu_global_jit' not in os.environ.get('TF_XLA_FLAGS', ''):
    os.environ['TF_XLA_FLAGS'] = (os.environ.get('TF_XLA_FLAGS', '')
                                  + ' --tf_xla_cpu_global_jit').strip()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import data_loader  # noqa: E402
from roadseg.data import demo_data  # noqa: E402
from roadseg.deploy import export  # noqa: E402
import fcn8vgg16  # noqa: E402
import helper  # noqa: E402
from roadseg.deploy import loader  # noqa: E402
from roadseg.apps import predict  # noqa: E402
from roadseg.apps import metrics  # noqa: E402
from roadseg.deploy import tflite_model  # noqa: E402
from roadseg import model_dir, specs  # noqa: E402
from roadseg.training import graph as train_graph  # noqa: E402
from helper import UserError  # noqa: E402

tf1 = tf.compat.v1

REPO = os.path.dirname(os.path.abspath(__file__))
IMAGE_SHAPE = (256, 512)
LABEL_SET = 'cityscapes'  # 19 classes
TRAIN_BATCH = 2
KEEP_PROB = 0.5           # Cityscapes training's dropout
SECTIONS = ('peak', 'inference', 'training', 'pipeline', 'memory', 'export')
REPORT_MARK = '<!-- written by benchmark.py; a new run replaces this file -->'
GB = 1e9
BUSY_SHARE = 0.1  # other processes' share of the CPU time above which a run is preliminary

Settings = collections.namedtuple('Settings', [
    'name', 'warmup', 'repeats', 'batches', 'matmul_size', 'sources', 'source_shape',
    'pipeline_batches', 'val_images', 'calibration_images'])
FULL = Settings('full', warmup=2, repeats=5, batches=(1, 4), matmul_size=4096, sources=8,
                source_shape=(1024, 2048), pipeline_batches=12, val_images=32,
                calibration_images=20)
QUICK = Settings('quick', warmup=1, repeats=2, batches=(1,), matmul_size=2048, sources=4,
                 source_shape=(512, 1024), pipeline_batches=4, val_images=8,
                 calibration_images=4)

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
        'Weights under graph_surgery.MIN_QUANTIZED_ELEMENTS values stay float32.'),
    'optimised_agreement': Target(
        'optimised: pixels agreeing with the frozen model', '>=', 0.99, '%',
        '8-bit weights with one range per tensor: a per-channel range keeps more precision.'),
    'optimised_miou': Target(
        'optimised: |mean IoU - frozen mean IoU|', '<=', 0.5, 'points', ''),
    'optimised_time': Target(
        'optimised time / frozen time', '<=', 1.10, 'x',
        'The loader dequantizes once (graph_surgery.dequantize_constants): if the profile shows '
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

Table = collections.namedtuple('Table', ['title', 'columns', 'rows', 'notes'])
_STARTED = time.perf_counter()


def log(message):
    print('[%5.0f s] %s' % (time.perf_counter() - _STARTED, message), flush=True)


SHARE_COLUMN = 'share of peak'  # filled in by finish_peaks() at the end of the run


def table_row(cells, value=None, target=None, label=None, gflops=None, precision='fp32'):
    """A report row: its cells, optionally the value checked against TARGETS[target], and
    the GFLOP/s (in precision) whose share of the peak goes in its SHARE_COLUMN cell."""
    return dict(cells=[str(cell) for cell in cells], value=value, target=target, label=label,
                gflops=gflops, precision=precision)


# ---------------------------------------------------------------------------- the report

def format_value(value, unit):
    if value is None:
        return 'n/a'
    if unit == '%':
        return '%.1f%%' % (100 * value)
    if unit == 'x':
        return '%.2fx' % value
    return '%.2f %s' % (value, unit)


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


def markdown_table(columns, rows):
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    return '\n'.join(lines + ['| ' + ' | '.join(cells) + ' |' for cells in rows])


def _table_markdown(table):
    """A section's table, with target and status columns when any row has a target."""
    with_targets = any(row['target'] for row in table.rows)
    rows = []
    for row in table.rows:
        cells = list(row['cells'])
        if with_targets:
            target = TARGETS.get(row['target'])
            cells += ['%s %s' % (target.op, format_value(target.threshold, target.unit)),
                      target_status(row['value'], target)] if target else ['', '']
        rows.append(cells)
    columns = list(table.columns) + (['target', 'status'] if with_targets else [])
    text = '## %s\n\n' % table.title
    if rows:
        text += markdown_table(columns, rows) + '\n'
    return text + ''.join('\n%s\n' % note for note in table.notes)


def _target_rows(tables):
    """(label, value, target) of every row with a target, in report order."""
    for table in tables:
        for row in table.rows:
            if row['target']:
                target = TARGETS[row['target']]
                yield row['label'] or target.label, row['value'], target


def _summary_markdown(tables):
    rows = [[label, format_value(value, target.unit),
             '%s %s' % (target.op, format_value(target.threshold, target.unit)),
             target_status(value, target)] for label, value, target in _target_rows(tables)]
    if not rows:
        return ''
    return '## Targets\n\n' + markdown_table(['target', 'measured', 'goal', 'status'], rows)


def _next_steps_markdown(tables, profile):
    """For each missed target: what to look at next (once per target)."""
    missed = []
    for _, value, target in _target_rows(tables):
        if value is not None and not target_met(value, target) and target.next_steps \
                and target not in missed:
            missed.append(target)
    if not missed:
        return ''
    text = '## Missed targets: where to look next\n\n'
    if not profile:
        text += 'Run again with `--profile DIR` for the top ops of a training and an ' \
                'inference step.\n\n'
    return text + ''.join('- **%s**: %s\n' % (target.label, target.next_steps)
                          for target in missed)


def _profile_markdown(profile):
    if not profile:
        return ''
    text = '## Profile\n\nTensorFlow\'s trace of one step (FULL_TRACE; open the JSON files in ' \
           'chrome://tracing or Perfetto). Op time summed over threads, top op types:\n'
    for name, step in profile.items():
        rows = [[op, '%.1f' % ms, '%.1f%%' % (100 * share)] for op, ms, share in step['ops']]
        text += '\n### %s (%.0f ms wall, `%s`)\n\n' % (name, step['wall_ms'], step['path'])
        text += markdown_table(['op', 'ms', 'share'], rows) + '\n'
    return text


def _machine_markdown(machine, settings_text, command):
    rows = [['CPU', machine['cpu']], ['cores', str(machine['cores'])],
            ['RAM', '%.1f GiB' % (machine['ram_bytes'] / 2 ** 30)],
            ['TensorFlow', machine['tensorflow']], ['date', machine['date']],
            ['load average (1 min) at start, end', '%.2f, %.2f' % tuple(machine['load'])],
            ['CPU time of other processes during the run',
             '%.0f%% of all cores' % (100 * machine['others_cpu_share'])],
            ['command', '`%s`' % command], ['settings', settings_text]]
    return '## Machine\n\n' + markdown_table(['', ''], rows) + '\n'


def format_report(results):
    """The markdown report of a run: machine, targets, each section's table, profile, steps."""
    machine = results['machine']
    parts = [REPORT_MARK, '# Benchmarks', 'Numbers of one `benchmark.py` run on the machine below '
             '(256x512 images, real VGG16 widths, 19 Cityscapes classes).']
    if machine['others_cpu_share'] > BUSY_SHARE:
        parts.append('**Preliminary**: other processes used %.0f%% of the machine\'s CPU time '
                     'during this run, so its times are noisy and pessimistic. Run it again on '
                     'an idle machine.' % (100 * machine['others_cpu_share']))
    parts += [_machine_markdown(machine, results['settings'], results['command']),
              _summary_markdown(results['tables'])]
    parts += [_table_markdown(table) for table in results['tables']]
    parts += [_profile_markdown(results['profile']),
              _next_steps_markdown(results['tables'], results['profile'])]
    if results['errors']:
        parts.append('## Failed measurements\n\n' + ''.join(
            '- %s: `%s`\n' % (what, error) for what, error in results['errors']))
    return '\n\n'.join(part.strip('\n') for part in parts if part) + '\n'


def machine_info():
    """CPU model, cores, RAM, TensorFlow version, date and load, from /proc."""
    cpu, ram = 'unknown', 0
    with open('/proc/cpuinfo') as f:
        info = f.read()
    match = re.search(r'^model name\s*:\s*(.*)$', info, re.M)
    flags = re.search(r'^flags\s*:\s*(.*)$', info, re.M)
    if match:
        cpu = match.group(1).strip()
    if flags:
        features = [f for f in ('avx512f', 'avx512_bf16', 'amx_bf16', 'amx_int8')
                    if f in flags.group(1).split()]
        cpu += ' (%s)' % ', '.join(features) if features else ''
    with open('/proc/meminfo') as f:
        ram = int(re.search(r'MemTotal:\s*(\d+) kB', f.read()).group(1)) * 1024
    return dict(cpu=cpu, cores=os.cpu_count(), ram_bytes=ram, tensorflow=tf.__version__,
                date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                load=[os.getloadavg()[0], os.getloadavg()[0]])


def cpu_seconds():
    """(CPU seconds every process of the machine has used, those of this one and its waited-for
    children), to tell how much of a run's time other jobs took."""
    with open('/proc/stat') as f:
        fields = [int(value) for value in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait (guest is in user)
    own = os.times()
    return busy / os.sysconf('SC_CLK_TCK'), own.user + own.system + own.children_user + \
        own.children_system


def others_cpu_share(start, end, wall_seconds):
    """The share of all cores' time that other processes used between two cpu_seconds()."""
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, others / (wall_seconds * (os.cpu_count() or 1)))


# ---------------------------------------------------------------------------- measuring

def time_calls(call, warmup, repeats):
    """Median seconds of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def time_in_turn(calls, warmup, repeats):
    """{name: median seconds} of calls {name: call}, run one after the other, round after
    round (warmup untimed rounds, then repeats timed ones): a change in the machine's speed
    during the rounds falls on all of them alike."""
    seconds = {name: [] for name in calls}
    for round_ in range(warmup + repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - started)
    return {name: float(np.median(times)) for name, times in seconds.items()}


def cpu_config(xla=0, precision='fp32'):
    """The session configuration of `--gpu 0 --xla X --precision P`."""
    return helper.session_config(gpu=0, gpu_mem=0.9, xla=xla, precision=precision)


def serial_ops(config):
    """Makes a session of this config run one op at a time. inter_op_parallelism_threads
    alone does not: TensorFlow sizes its inter-op pool once per process, by the first session,
    and later sessions share it; this one gets a pool of its own."""
    config.inter_op_parallelism_threads = 1
    config.use_per_session_threads = True
    return config


def model_flops(num_classes, image_shape, encoder, fc_channels):
    """Floating-point operations of one image's forward pass, counted by TensorFlow's profiler
    (2 per multiply-add) on fcn8vgg16.inference_graph with the input's shape fixed."""
    return _profiled_flops(num_classes, image_shape, encoder, fc_channels).total_float_ops


def layer_flops(num_classes, image_shape, encoder, fc_channels):
    """{layer: FLOPs of its convolution or matrix product} of one image's forward pass."""
    flops, nodes = {}, list(_profiled_flops(num_classes, image_shape, encoder,
                                            fc_channels).children)
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        layer, _, op = node.name.rpartition('/')
        if op in ('Conv2D', 'MatMul', 'conv2d_transpose') and node.float_ops:
            flops[layer] = flops.get(layer, 0) + node.float_ops
    return flops


def _profiled_flops(num_classes, image_shape, encoder, fc_channels):
    with tf.Graph().as_default() as graph:
        fcn8vgg16.inference_graph(num_classes, encoder, fc_channels)
        # Only what the predictions need: the initialisers' random ops are not inference.
        graph_def = tf1.graph_util.extract_sub_graph(graph.as_graph_def(),
                                                     [fcn8vgg16.OUTPUT_NAME])
    with tf.Graph().as_default() as graph:
        images = tf1.placeholder(tf.uint8, (1,) + tuple(image_shape) + (3,))
        tf.graph_util.import_graph_def(graph_def, {fcn8vgg16.INPUT_TENSOR: images}, name='')
        builder = tf1.profiler.ProfileOptionBuilder
        options = builder(builder.float_operation()).with_empty_output().build()
        return tf1.profiler.profile(graph, options=options)


def matmul_rate(dtype, size, warmup, repeats):
    """GFLOP/s of one size x size matrix product in dtype (2 size^3 FLOPs), median of repeats."""
    with tf.Graph().as_default():
        first = tf1.get_variable('a', [size, size], dtype, tf1.random_normal_initializer(seed=1))
        second = tf1.get_variable('b', [size, size], dtype, tf1.random_normal_initializer(seed=2))
        product = tf.matmul(first, second)
        with tf1.Session(config=cpu_config()) as session:
            session.run(tf1.global_variables_initializer())
            # Running the op without fetching it times the product, not a copy to numpy.
            seconds = time_calls(lambda: session.run(product.op), warmup, repeats)
    return 2 * size ** 3 / seconds / 1e9


def top_ops(step_stats, count=10):
    """[(op type, ms, share of all op time)] of the costliest op types of a traced step."""
    totals = collections.Counter()
    for device in step_stats.dev_stats:
        for node in device.node_stats:
            match = re.match(r'[^=]*= (\S+?)\(', node.timeline_label)
            totals[match.group(1) if match else node.node_name] += node.all_end_rel_micros
    whole = sum(totals.values()) or 1
    return [(op, micros / 1000, micros / whole) for op, micros in totals.most_common(count)]


STEP_PARTS = ('forward: convolutions', 'forward: fc6, fc7 (matrix products)',
              'backward: convolutions, input gradients', 'backward: convolutions, filter gradients',
              'backward: fc6, fc7 (matrix products)', 'Adam updates',
              'everything else (element-wise, pooling, loss, weight decay, relayouts)')


def step_part(node_name, op):
    """(index in STEP_PARTS, layer or None) of a traced node: the layer whose convolution or
    matrix product the node computes, forward or backward, for the FLOPs it does."""
    backward = node_name.startswith('gradients/')
    layer = node_name[len('gradients/'):].split('/')[0] if backward else node_name.split('/')[0]
    if 'ApplyAdam' in op or node_name.startswith('Adam/'):
        return 5, None
    if not ('Conv2D' in op or 'MatMul' in op):
        return 6, None
    matmul = layer in fcn8vgg16.MATMUL_LAYERS
    if not backward:
        return (1 if matmul else 0), layer
    if matmul:
        return 4, layer
    return (3 if 'BackpropFilter' in op else 2), layer


def step_parts(step_stats, flops, batch):
    """[(part, ms, GFLOP)] of a traced step run one op at a time: the time of each part of
    STEP_PARTS and the FLOPs of the layers it computes (flops: layer_flops of one image), each
    layer counted once per part however many products compute it (fc6's row bands), twice in
    the fc backward part (input and weight gradients)."""
    times, layers = [0.0] * len(STEP_PARTS), [set() for _ in STEP_PARTS]
    for device in step_stats.dev_stats:
        for node in device.node_stats:
            match = re.match(r'[^=]*= (\S+?)\(', node.timeline_label)
            part, layer = step_part(node.node_name, match.group(1) if match else '')
            times[part] += node.all_end_rel_micros / 1000
            if layer in flops:
                layers[part].add(layer)
    fc_backward = STEP_PARTS.index('backward: fc6, fc7 (matrix products)')
    return [(name, ms, sum(flops[layer] for layer in part_layers) * batch / 1e9 *
             (2 if index == fc_backward else 1))
            for index, (name, ms, part_layers) in enumerate(zip(STEP_PARTS, times, layers))]


def rewrites_seen(step_stats):
    """Which graph rewrites ran in a traced step: XLA clusters, the bf16 mixed-precision casts."""
    names = [node.node_name + ' ' + node.timeline_label
             for device in step_stats.dev_stats for node in device.node_stats]
    return dict(xla=any('_XlaRun' in name for name in names),
                bf16=any('AutoMixedPrecision' in name for name in names))


def traced_run(session, fetches, feed, trace_path=None):
    """Runs once with FULL_TRACE; returns (step stats, wall seconds) and writes a Chrome trace."""
    metadata = tf1.RunMetadata()
    started = time.perf_counter()
    session.run(fetches, feed, options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE),
                run_metadata=metadata)
    seconds = time.perf_counter() - started
    if trace_path:
        from tensorflow.python.client import timeline
        with open(trace_path, 'w') as f:
            f.write(timeline.Timeline(metadata.step_stats).generate_chrome_trace_format())
    return metadata.step_stats, seconds


# Runs argv[2:] with its output in argv[1]; prints the child's peak RSS (KiB), exits with its
# status. A child's ru_maxrss starts from its parent's RSS when it forks: this wrapper's small
# one, not that of the benchmark's process with TensorFlow and models loaded.
_RSS_WRAPPER = """import resource, subprocess, sys
with open(sys.argv[1], 'w') as log:
    status = subprocess.call(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(status)
"""


def peak_rss(command, log_path):
    """Runs command to completion; returns the peak resident memory (bytes) of its process."""
    result = subprocess.run([sys.executable, '-c', _RSS_WRAPPER, log_path] + list(command),
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    if result.returncode:
        with open(log_path) as log:
            last = ([line.strip() for line in log if line.strip()] or ['no output'])[-1]
        raise RuntimeError('%s exited with %d: %s' % (' '.join(command[1:3]),
                                                      result.returncode, last))
    return int(result.stdout.split()[-1]) * 1024  # KiB on Linux


def demo_split(split):
    """(images glob, labels folder) of a demo split; the demo dataset is drawn on first use."""
    return demo_data.demo_paths(split, demo_data.ensure_demo_dataset())


def random_batch(batch_size, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size,) + IMAGE_SHAPE + (3,), dtype=np.uint8)
    labels = rng.integers(0, num_classes, (batch_size,) + IMAGE_SHAPE, dtype=np.uint8)
    return images, labels


def _write_random_model(folder, label_set, calibration_glob):
    """A SavedModel with random weights at IMAGE_SHAPE, in the layout train writes."""
    config = dict(
        dataset='demo', label_set=label_set.name, image_shape=list(IMAGE_SHAPE),
        num_classes=label_set.num_classes, class_names=label_set.class_names,
        encoder=[list(block) for block in fcn8vgg16.VGG16], fc_channels=fcn8vgg16.FC_CHANNELS,
        input_tensor=fcn8vgg16.INPUT_TENSOR, keep_prob_tensor=fcn8vgg16.KEEP_PROB_TENSOR,
        output_tensor=fcn8vgg16.OUTPUT_TENSOR, logits_tensor=fcn8vgg16.LOGITS_TENSOR,
        saved_model_tag=fcn8vgg16.SAVED_MODEL_TAG, signature_key=fcn8vgg16.SIGNATURE_KEY,
        images_paths=calibration_glob, random_weights=True)
    with tf.Graph().as_default():
        tf1.set_random_seed(0)
        fcn8vgg16.inference_graph(label_set.num_classes, fcn8vgg16.VGG16, fcn8vgg16.FC_CHANNELS)
        with tf1.Session(config=cpu_config()) as session:
            session.run(tf1.global_variables_initializer())
            model_dir.write_saved_model(session, folder)
    helper.write_json(os.path.join(folder, model_dir.CONFIG_FILE), config)


class Models:
    """The model folders the benchmark runs, made on first use in its work folder: the float
    model (--model_dir, or a SavedModel with random weights), its frozen export, and its
    optimised export with an int8 TFLite model at IMAGE_SHAPE. Conversion times and sizes go
    to self.stats."""

    def __init__(self, work_dir, model_dir, calibration_count):
        self.work_dir, self.model_dir = work_dir, model_dir
        self.calibration_count = calibration_count
        self.stats = {}

    def float_dir(self):
        if self.model_dir:
            return self.model_dir
        path = os.path.join(self.work_dir, 'random_model')
        if not os.path.exists(path):
            log('writing a model with random weights (the speed rows need no training)')
            label_set = data_loader.get_label_set(LABEL_SET)
            images_glob, _ = demo_split('train')
            model_dir.write_model_dir(path, lambda folder: _write_random_model(
                folder, label_set, images_glob))
        return path

    def frozen_dir(self):
        path = os.path.join(self.work_dir, 'frozen')
        if not os.path.exists(path):
            log('freezing %s' % self.float_dir())
            started = time.perf_counter()
            # Every exported model runs at the benchmark's shape, whatever it was trained at.
            self.stats['freeze'] = export.freeze(self.float_dir(), path, cpu_config(),
                                                 IMAGE_SHAPE)
            self.stats['freeze']['seconds'] = time.perf_counter() - started
        return path

    def optimised_dir(self):
        path = os.path.join(self.work_dir, 'optimised')
        if not os.path.exists(path):
            frozen = self.frozen_dir()
            log('optimising %s' % frozen)
            started = time.perf_counter()
            self.stats['optimise'] = export.optimise(frozen, path)
            self.stats['optimise']['seconds'] = time.perf_counter() - started
            self._convert_tflite(frozen, os.path.join(path, tflite_model.TFLITE_FILE))
        return path

    def _convert_tflite(self, frozen_dir, tflite_path):
        config = model_dir.read_model_config(frozen_dir)
        try:
            calibration = export.calibration_images(config, self.calibration_count)
        except UserError:  # the training images are not here: the demo's stand in
            images_glob, _ = demo_split('train')
            calibration = data_loader.find_images(images_glob)[:self.calibration_count]
        log('converting to int8 TFLite, calibrated on %d images' % len(calibration))
        started = time.perf_counter()
        self.stats['tflite'] = tflite_model.convert_int8(
            os.path.join(frozen_dir, model_dir.GRAPH_FILE), tflite_path, IMAGE_SHAPE,
            calibration)
        self.stats['tflite']['seconds'] = time.perf_counter() - started

    def folder(self, kind):
        """The folder of the model of kind 'float', 'frozen', 'optimised' or 'tflite' (the
        optimised folder holds model.tflite), made now if it is not there yet."""
        return {'float': self.float_dir, 'frozen': self.frozen_dir,
                'optimised': self.optimised_dir, 'tflite': self.optimised_dir}[kind]()


def load_model(folder, kind, xla=0, precision='fp32'):
    """The model of kind (see Models.folder) in folder, ready to predict at IMAGE_SHAPE."""
    if kind == 'tflite':
        return tflite_model.TFLiteModel(folder)
    model = loader.Model(folder, cpu_config(xla, precision))
    model.image_shape = IMAGE_SHAPE  # a trained model may have been trained at another
    return model


class Run:
    """What one benchmark run has measured so far, and what it has made to measure it."""

    def __init__(self, settings, work_dir, model_dir=None, profile_dir=None, debug=False,
                 sources=None):
        self.settings, self.work_dir, self.profile_dir = settings, work_dir, profile_dir
        self.debug = debug
        self.models = Models(work_dir, model_dir, settings.calibration_images)
        self.label_set = data_loader.get_label_set(LABEL_SET)
        self.raw, self.tables, self.errors, self.profile = {}, [], [], {}
        # (image paths, label paths) the export section compares the exported models on; once
        # set, the processes that time those models score them too (into self.scores).
        self.score_split, self.scores = None, {}
        self._sources = sources

    def peak(self, precision, warmup=1, repeats=3):
        """GFLOP/s of a matrix product in bfloat16 (precision bf16) or float32, measured now."""
        dtype = tf.bfloat16 if precision == 'bf16' else tf.float32
        rate = matmul_rate(dtype, self.settings.matmul_size, warmup, repeats)
        self.raw.setdefault('peaks_gflops', {}).setdefault(
            'bf16' if precision == 'bf16' else 'fp32', []).append(rate)
        return rate

    def attempt(self, what, function, *args, **kwargs):
        """function(*args, **kwargs), or None with the error recorded for the report."""
        try:
            return function(*args, **kwargs)
        except Exception as error:  # one failed measurement must not end the run
            line = str(error) if isinstance(error, RowFailed) else error_line(error)
            print('%s failed: %s' % (what, line), file=sys.stderr)
            if self.debug:
                print(error.stderr if isinstance(error, RowFailed) else traceback.format_exc(),
                      file=sys.stderr, end='')
            self.errors.append((what, line))
            return None

    def row_spec(self, function, args):
        """What a row process needs to run function(run, *args) as this run would: plain
        values only, the network's widths included (the tests shrink them in this process)."""
        return dict(function=function.__name__, args=list(args),
                    settings=self.settings._asdict(), work_dir=self.work_dir,
                    model_dir=self.models.model_dir, profile_dir=self.profile_dir,
                    sources=self._sources, encoder=fcn8vgg16.VGG16,
                    fc_channels=fcn8vgg16.FC_CHANNELS)

    def trace(self, session, fetches, feed, name=None, flops=None, batch=1):
        """A traced run: the rewrites it shows. With --profile and a name, also its Chrome
        trace in the profile folder and its top ops for the report; given layer_flops, also
        its step_parts for a batch of that many images."""
        path = os.path.join(self.profile_dir, name.replace(' ', '_') + '.json') \
            if self.profile_dir and name else None
        step_stats, seconds = traced_run(session, fetches, feed, path)
        if path:
            self.profile[name] = dict(path=path, wall_ms=1000 * seconds, ops=top_ops(step_stats))
            if flops:
                self.profile[name]['parts'] = step_parts(step_stats, flops, batch)
        return rewrites_seen(step_stats)

    def sources(self):
        """(images glob, labels folder) of synthetic Cityscapes-layout sources, written once."""
        if self._sources is None:
            root = os.path.join(self.work_dir, 'sources')
            height, width = self.settings.source_shape
            log('drawing %d sources of %dx%d' % (self.settings.sources, width, height))
            for index in range(self.settings.sources):
                image, labels = demo_data.draw_scene(np.random.default_rng(index), height, width)
                stem = 'benchtown_%06d_000019' % index
                _save_png(image, root, 'leftImg8bit', stem + '_leftImg8bit.png')
                _save_png(labels, root, 'gtFine', stem + '_gtFine_labelIds.png')
            self._sources = (os.path.join(root, 'leftImg8bit', 'train', '*', '*.png'),
                             os.path.join(root, 'gtFine', 'train'))
        return self._sources


def _save_png(array, root, kind, name):
    from PIL import Image
    folder = os.path.join(root, kind, 'train', 'benchtown')
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(array).save(os.path.join(folder, name))


def error_line(error):
    """'Type: first line of the message', as a failed measurement is recorded."""
    message = (str(error).strip().splitlines() or [''])[0]
    return ('%s: %s' % (type(error).__name__, message))[:300]


# ---------------------------------------------------------------------------- row processes

ROW_REPLY = 'benchmark row reply: '  # marks the row process's one JSON line on its stdout


class RowFailed(Exception):
    """A row process ended without a reply; str() is its last stderr line."""

    def __init__(self, line, stderr):
        super().__init__(line)
        self.stderr = stderr


def in_child(run, function, *args):
    """function(run, *args) run by a fresh Python process, as a user's `main.py predict` runs
    one model per process: oneDNN's cache of convolution primitives is process-wide, and the
    first model of a process decides how later convolutions of the same shapes run. Returns
    function's JSON-able result; its profile joins run.profile."""
    reply = child_reply(run.row_spec(function, args))
    run.profile.update(reply['profile'])
    return reply['result']


def child_reply(spec):
    """Runs `benchmark.py --row SPEC` (see run_row) and returns its reply: pid, result and
    profile. RowFailed with its last stderr line when it exits non-zero or without a reply."""
    process = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--row', json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    replies = [line[len(ROW_REPLY):] for line in process.stdout.splitlines()
               if line.startswith(ROW_REPLY)]
    if process.returncode == 0 and replies:
        return json.loads(replies[-1])
    lines = [line.strip() for line in process.stderr.splitlines() if line.strip()]
    if process.returncode == 0 or not lines:
        lines.append('row process exited with %d and no reply' % process.returncode)
    raise RowFailed(lines[-1][:300], process.stderr)


# ---------------------------------------------------------------------------- sections

def peak_section(run):
    """FLOPs per image and the float32 and bfloat16 matmul rates."""
    settings = run.settings
    flops = model_flops(run.label_set.num_classes, IMAGE_SHAPE, fcn8vgg16.VGG16,
                        fcn8vgg16.FC_CHANNELS)
    run.raw['flops_per_image'] = flops
    rows = [table_row(['FLOPs per image, forward, %dx%d' % IMAGE_SHAPE,
                       '%.1f GFLOP' % (flops / 1e9)])]
    for precision in ('fp32', 'bf16'):
        rate = run.attempt('%s matmul peak' % precision, run.peak, precision,
                           settings.warmup + 1, settings.repeats + 2)
        log('%s matmul: %s GFLOP/s' % (precision, 'failed' if rate is None else '%.0f' % rate))
    run.tables.append(Table('Model and machine peaks', ['measurement', 'value'], rows, []))


def peak_rows(peaks, size):
    """The best matmul rate of each precision over the run, with the range of all."""
    return [table_row(['%s matmul peak (%d x %d), best of %d' % (precision, size, size,
                                                                 len(rates)),
                       '%.0f GFLOP/s (all: %.0f-%.0f)' % (max(rates), min(rates), max(rates))])
            for precision, rates in sorted(peaks.items(), reverse=True) if rates]


def finish_peaks(run):
    """Sets every row's share of peak against the best matmul rate of the run: other jobs only
    ever slow a measurement down, and the peak is measured beside every row to catch the
    machine when it is free."""
    peaks = run.raw.get('peaks_gflops', {})
    best = {precision: max(rates) for precision, rates in peaks.items() if rates}
    run.raw['peak_gflops'] = best
    for table in run.tables:
        if table.title == 'Model and machine peaks':
            table.rows.extend(peak_rows(peaks, run.settings.matmul_size))
            table.notes.append('The peaks are measured at the start and again beside every '
                               'timed row; each share of peak is taken against the best.')
        for row in table.rows:
            if row['gflops'] is not None and SHARE_COLUMN in table.columns:
                peak = best.get(row['precision'])
                share = row['gflops'] / peak if peak else None
                row['cells'][table.columns.index(SHARE_COLUMN)] = format_value(share, '%')
                if row['target'] in ('inference_fp32', 'training_fp32'):
                    row['value'] = share
            if row.get('beside_peak') and row['gflops'] and 'notes' in table.columns:
                index = table.columns.index('notes')
                beside = '%s of the peak beside it (%.0f GFLOP/s)' % (
                    format_value(row['gflops'] / row['beside_peak'], '%'), row['beside_peak'])
                row['cells'][index] = '; '.join(cell for cell in (row['cells'][index], beside)
                                                if cell)


BESIDE_NOTE = ('The notes give the share of the peak beside the row as well: the higher of the '
               'matmul rates measured just before and just after it, which follows the '
               'machine\'s state as the run\'s best does not; the targets use the best.')


def _sample_peak(run, precision):
    """One more peak measurement right after a row, for finish_peaks (bf16, else float32).
    Returns the peak beside the row: the higher of this one and the one before the row."""
    rates = run.raw.get('peaks_gflops', {}).get('bf16' if precision == 'bf16' else 'fp32', [])
    before = rates[-1] if rates else None
    after = run.attempt('%s matmul peak' % precision, run.peak, precision)
    return max(rate for rate in (before, after, 0.0) if rate is not None) or None


# The exported models the export section compares (row name: model kind).
EXPORTED_KINDS = collections.OrderedDict((('frozen', 'frozen'), ('optimised', 'optimised'),
                                          ('int8 TFLite', 'tflite')))
INFERENCE_VARIANTS = (  # (row name, model kind, xla, precision)
    ('float32', 'float', 0, 'fp32'), ('--xla 2', 'float', 2, 'fp32'),
    ('--precision bf16', 'float', 0, 'bf16'), ('frozen', 'frozen', 0, 'fp32'),
    ('optimised (8-bit weights)', 'optimised', 0, 'fp32'), ('int8 TFLite', 'tflite', 0, 'fp32'))


def _time_inference(run, folder, kind, xla, precision, name, score=None):
    """{'batches': [(seconds per image, rewrites seen)] of model.predict on random images at
    each of the run's batch sizes, 'score': _score_and_save(model, *score) or None}, in one
    process (a row process): a batch size of its own has convolutions of its own shapes, so
    the smaller batch's primitives do not decide how the larger one's run. The export
    comparison's scores come from the same warm model when score is given."""
    model = load_model(folder, kind, xla, precision)
    results = []
    try:
        for batch_size in run.settings.batches:
            images, _ = random_batch(batch_size, run.label_set.num_classes)
            seconds = time_calls(lambda: model.predict(images), run.settings.warmup,
                                 run.settings.repeats)
            rewrites = {}
            if kind != 'tflite':  # a run traced once warm: which rewrites ran, its ops' times
                trace_name = 'inference step' if (name, batch_size) == ('float32', 1) else None
                rewrites = run.trace(model.session, model.output, {model.input: images},
                                     trace_name)
            results.append((seconds / batch_size, rewrites))
        return dict(batches=results, score=_score_and_save(model, *score) if score else None)
    finally:
        model.close()


def _rewrite_note(name, rewrites):
    if 'xla' in name and not rewrites.get('xla'):
        return 'no XLA cluster ran'
    if 'bf16' in name and not rewrites.get('bf16'):
        return 'no bf16 rewrite ran'
    return ''


def _inference_targets(name, seconds, times, batch_size):
    """(value, target key) of an inference row: its speed-up, or its share of the peak
    (set by finish_peaks)."""
    if name == 'float32':
        return None, 'inference_fp32'
    reference = {'--precision bf16': 'float32', 'optimised (8-bit weights)': 'frozen',
                 'int8 TFLite': 'frozen'}.get(name)
    if reference is None or not times.get((reference, batch_size)):
        return None, None
    ratio = times[(reference, batch_size)] / seconds
    if name.startswith('optimised'):
        return 1 / ratio, 'optimised_time'
    return ratio, 'inference_bf16' if 'bf16' in name else 'tflite_speed'


def _inference_row(run, name, precision, batch_size, result, times, beside):
    seconds, rewrites = result
    flops = run.raw.get('flops_per_image')
    gflops = flops / seconds / 1e9 if flops else None
    value, target = _inference_targets(name, seconds, times, batch_size)
    row = table_row([name, batch_size, '%.0f' % (1000 * seconds),
                     '%.0f' % gflops if gflops else '', 'n/a', _rewrite_note(name, rewrites)],
                    value, target,
                    '%s, batch %d' % (TARGETS[target].label, batch_size) if target else None,
                    gflops, precision)
    row['beside_peak'] = beside if gflops else None
    return row


def inference_section(run):
    times, rows = {}, []
    for name, kind, xla, precision in INFERENCE_VARIANTS:
        what = 'inference %s' % name
        log(what)
        score = _score_spec(run, kind) if run.score_split and kind in EXPORTED_KINDS.values() \
            else None
        reply = run.attempt(what, lambda: in_child(
            run, _time_inference, run.models.folder(kind), kind, xla, precision, name, score))
        if reply is None:
            rows += [table_row([name, batch_size, 'failed', '', '', ''])
                     for batch_size in run.settings.batches]
            continue
        if score:
            run.scores[kind] = _read_scores(score[-1], *reply['score'])
        beside = _sample_peak(run, precision) if run.raw.get('flops_per_image') else None
        for batch_size, result in zip(run.settings.batches, reply['batches']):
            times[(name, batch_size)] = result[0]
            rows.append(_inference_row(run, name, precision, batch_size, result, times, beside))
            log(' | '.join(rows[-1]['cells']))
    run.raw['inference_ms_per_image'] = {'%s, batch %d' % key: 1000 * value
                                         for key, value in times.items()}
    notes = ['Random uint8 images. Share of peak: GFLOP/s / the best matmul rate of the run in '
             'the same precision (int8 TFLite against float32\'s). ' + BESIDE_NOTE,
             'Each model runs in a fresh process, as `main.py predict` does, timed at every '
             'batch size in turn: oneDNN\'s cache of convolution primitives is process-wide, '
             'and the first model of a process decides how later ones of the same shapes run.']
    if not run.models.model_dir:
        notes.append('Models with random weights (no --model_dir): times only.')
    run.tables.append(Table('Inference at %dx%d' % IMAGE_SHAPE,
                            ['model', 'batch', 'ms per image', 'GFLOP/s', SHARE_COLUMN,
                             'notes'], rows, notes))


def _train_recipe(precision):
    """The recipe of `main.py train --gpu 0 --precision P` at Cityscapes' defaults."""
    return specs.Recipe(epochs=1, batch_size=TRAIN_BATCH, learning_rate=1e-4,
                        keep_prob=KEEP_PROB, precision=precision)


def _train_session(run, precision, xla, make_inputs=None, serial=False):
    """(session, tensors) of trainer.build_train_graph, initialised. make_inputs() builds the
    (images, labels) the graph reads unless fed; by default every step is fed. serial: the
    session runs one op at a time."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        if make_inputs:
            images, labels = make_inputs()
        else:  # empty defaults, as with the generator pipeline
            images = tf.zeros((0,) + IMAGE_SHAPE + (3,), tf.uint8)
            labels = tf.zeros((0,) + IMAGE_SHAPE, tf.uint8)
        network = specs.Network(fcn8vgg16.VGG16, fcn8vgg16.FC_CHANNELS)
        tensors = train_graph.build_train_graph(images, labels, network,
                                                _train_recipe(precision), run.label_set)
        init = tf1.global_variables_initializer()
    config = cpu_config(xla, precision)
    if serial:
        serial_ops(config)
    session = tf1.Session(graph=graph, config=config)
    session.run(init)
    return session, tensors


def _time_training(run, name, xla, precision):
    """(seconds per step, rewrites seen) of training steps on a batch already in memory (a row
    process)."""
    session, tensors = _train_session(run, precision, xla)
    try:
        images, labels = random_batch(TRAIN_BATCH, run.label_set.num_classes)
        feed = {tensors['images']: images, tensors['labels']: labels,
                tensors['keep_prob']: KEEP_PROB}
        rewrites = run.trace(session, tensors['train_op'], feed)
        step = time_calls(lambda: session.run(tensors['train_op'], feed),
                          run.settings.warmup, run.settings.repeats)
    finally:
        session.close()
    if name == 'float32' and run.profile_dir:
        _profile_training(run, images, labels)
    return step, rewrites


def _profile_training(run, images, labels):
    """The profile of a float32 step run one op at a time, so that each op's time is its own:
    the timed steps run two ops at once, and on 2 cores they take each other's time."""
    session, tensors = _train_session(run, 'fp32', 0, serial=True)
    try:
        feed = {tensors['images']: images, tensors['labels']: labels,
                tensors['keep_prob']: KEEP_PROB}
        session.run(tensors['train_op'], feed)  # warm-up: oneDNN's primitives
        run.trace(session, tensors['train_op'], feed, 'train step', batch=TRAIN_BATCH,
                  flops=layer_flops(run.label_set.num_classes, IMAGE_SHAPE, fcn8vgg16.VGG16,
                                    fcn8vgg16.FC_CHANNELS))
    finally:
        session.close()


def training_section(run):
    flops, rows, steps = run.raw.get('flops_per_image'), [], {}
    for name, xla, precision in (('float32', 0, 'fp32'), ('--xla 2', 2, 'fp32'),
                                 ('--precision bf16', 0, 'bf16')):
        log('training %s' % name)
        result = run.attempt('training %s' % name, in_child, run, _time_training, name, xla,
                             precision)
        if result is None:
            rows.append(table_row([name, 'failed', '', '', '']))
            continue
        step, rewrites = result
        steps[name] = step
        work = 3 * flops * TRAIN_BATCH if flops else None  # forward + 2x for the backward
        gflops = work / step / 1e9 if work else None
        beside = _sample_peak(run, precision) if gflops else None
        value, target = None, 'training_fp32'  # the share, set by finish_peaks
        if name != 'float32':
            value, target = (steps['float32'] / step if 'float32' in steps else None,
                             'training_bf16' if 'bf16' in name else None)
        rows.append(table_row([name, '%.0f' % (1000 * step / TRAIN_BATCH),
                               '%.0f' % gflops if gflops else '', 'n/a',
                               _rewrite_note(name, rewrites)], value, target,
                              gflops=gflops, precision=precision))
        rows[-1]['beside_peak'] = beside
        log(' | '.join(rows[-1]['cells']))
    run.raw['training_ms_per_image'] = {name: 1000 * step / TRAIN_BATCH
                                        for name, step in steps.items()}
    run.tables.append(Table(
        'Training at %dx%d, batch %d' % (IMAGE_SHAPE[0], IMAGE_SHAPE[1], TRAIN_BATCH),
        ['variant', 'ms per image', 'GFLOP/s', SHARE_COLUMN, 'notes'], rows,
        ['A step is forward, backward and Adam on a batch already in memory, dropout on; '
         'its work is counted as 3x the forward FLOPs of the model as the profiler counts the '
         'inference graph. The training graph computes fc6 in row bands that skip the zero '
         'padding (fcn8vgg16._row_band_products): its forward and input-gradient products do '
         '21% fewer multiply-adds at this size, so a step does ~3% less work than counted. '
         'The bf16 row\'s target is its speed-up over float32. Each row runs in a fresh '
         'process. ' + BESIDE_NOTE]))
    parts = run.profile.get('train step', {}).get('parts')
    if parts:
        run.tables.append(_step_parts_table(parts))


def _step_parts_table(parts):
    """Where a float32 training step's time goes, from its profile (step_parts), with two
    summary rows: all its products together, and the whole step."""
    whole = sum(ms for _, ms, _ in parts) or 1
    products = [(ms, gflop) for _, ms, gflop in parts if gflop]
    summary = [('all the products above together', sum(ms for ms, _ in products),
                sum(gflop for _, gflop in products)),
               ('the whole profiled step', whole, sum(gflop for _, gflop in products))]
    rows = [table_row([name, '%.0f' % ms, '%.1f%%' % (100 * ms / whole),
                       '%.1f' % gflop if gflop else '', '%.0f' % (gflop / ms * 1000)
                       if gflop and ms else '', 'n/a'],
                      gflops=gflop / ms * 1000 if gflop and ms else None)
            for name, ms, gflop in list(parts) + summary]
    return Table('Where a float32 training step\'s time goes', [
        'part', 'ms', 'share of the step', 'GFLOP', 'GFLOP/s', SHARE_COLUMN], rows, [
        'From the profiled step (--profile), run one op at a time so that each op\'s time is '
        'its own. GFLOP: the forward FLOPs of the layers each part computes, as the profiler '
        'counts them, for the batch (a backward product does as many as its forward one). The '
        'products\' share of the peak is the most a step could reach if every other op took '
        'no time.'])


def _augmenting_dataset(run):
    """The synthetic sources as training reads them: Cityscapes' augmentation, 256x512."""
    import main
    images_glob, labels_dir = run.sources()
    augment = data_loader.AugmentConfig(tuple(main.CITYSCAPES_DEFAULTS['scale_range']), True,
                                        False)
    return data_loader.Dataset(images_glob, labels_dir, run.label_set, IMAGE_SHAPE, augment)


def _epochs_for(dataset, batches):
    return -(-batches // dataset.steps_per_epoch(TRAIN_BATCH)) + 1


def _images_per_second(next_batch, batches):
    next_batch()  # warm-up: starts the pipeline
    started = time.perf_counter()
    for _ in range(batches):
        next_batch()
    return batches * TRAIN_BATCH / (time.perf_counter() - started)


def _pipeline_rates(run, dataset):
    """Images per second of the python generator and of tf.data, alone."""
    batches = run.settings.pipeline_batches
    generator = dataset.generator(TRAIN_BATCH, _epochs_for(dataset, batches + 1), seed=0)
    rates = {'generator': _images_per_second(lambda: next(generator), batches)}
    with tf.Graph().as_default():
        tf1.set_random_seed(0)
        next_batch = tf1.data.make_one_shot_iterator(dataset.tf_dataset(
            TRAIN_BATCH, _epochs_for(dataset, batches + 1), seed=0)).get_next()
        with tf1.Session(config=cpu_config()) as session:
            rates['tf.data'] = _images_per_second(lambda: session.run(next_batch), batches)
    return rates


PIPELINE_MODES = ('in memory', 'tf.data', 'generator')


def _pipeline_steps(run):
    """{mode: seconds per training step} fed in memory, by tf.data and by the generator, one
    step of each in turn (a row process): the ratios of the modes do not move with the
    machine's speed.

    Every mode runs the same graph, which reads tf.data unless its inputs are fed, as
    trainer.build_train_graph wraps them. Between its own steps the tf.data pipeline only
    fills its prefetch buffer, and stops once it is full: the batch a tf.data step takes is
    made again during that step, as in training.
    """
    settings = run.settings
    dataset = _augmenting_dataset(run)
    epochs = _epochs_for(dataset, settings.warmup + settings.repeats + 2)
    generator = dataset.generator(TRAIN_BATCH, epochs, seed=1)
    in_memory = next(generator)
    session, tensors = _train_session(run, 'fp32', 0, lambda: tf1.data.make_one_shot_iterator(
        dataset.tf_dataset(TRAIN_BATCH, epochs, seed=0)).get_next())
    inputs = (tensors['images'], tensors['labels'])
    feeds = {'in memory': lambda: dict(zip(inputs, in_memory)), 'tf.data': dict,
             'generator': lambda: dict(zip(inputs, next(generator)))}  # decoding is timed

    def step(feed):
        return lambda: session.run(tensors['train_op'], {**feed(), tensors['keep_prob']:
                                                          KEEP_PROB})
    try:
        return time_in_turn({mode: step(feeds[mode]) for mode in PIPELINE_MODES},
                            settings.warmup, settings.repeats)
    finally:
        session.close()


def pipeline_section(run):
    dataset = _augmenting_dataset(run)
    rates = run.attempt('input pipelines alone', _pipeline_rates, run, dataset) or {}
    log('training steps: %s, in turn' % ', '.join(PIPELINE_MODES))
    steps = run.attempt('training steps with each pipeline', in_child, run,
                        _pipeline_steps) or {}
    run.raw['pipeline_images_per_second'] = rates
    run.raw['pipeline_step_ms'] = {mode: 1000 * seconds for mode, seconds in steps.items()}
    rows = [table_row(['%s alone' % name, '%.1f images/s' % rate]) for name, rate in rates.items()]
    for mode, seconds in steps.items():
        ratio = seconds / steps['in memory'] if 'in memory' in steps else None
        rows.append(table_row(['training step, %s' % mode, '%.0f ms (%s the in-memory step)'
                               % (1000 * seconds, format_value(ratio, 'x'))],
                              ratio, 'tfdata_step' if mode == 'tf.data' else None))
    if 'tf.data' in steps and 'generator' in steps:
        rows.append(table_row(['training step, generator / tf.data',
                               format_value(steps['generator'] / steps['tf.data'], 'x')]))
    height, width = run.settings.source_shape
    low, high = dataset.augment.scale_range
    run.tables.append(Table('Input pipelines', ['measurement', 'value'], rows, [
        '%d synthetic Cityscapes-layout PNG sources of %dx%d, augmented as in training (random '
        'scale %g-%g, crop, flip) to %dx%d, batch %d. Alone: images per second over %d '
        'batches after a first one. The training steps run in one fresh process, a step '
        'of each in turn, %d rounds after %d untimed; the generator\'s steps include its '
        'decoding. The original measured its TensorFlow '
        'pipeline 20-25%% faster than its generator.' % (
            len(dataset), width, height, low, high, IMAGE_SHAPE[0], IMAGE_SHAPE[1],
            TRAIN_BATCH, run.settings.pipeline_batches, run.settings.repeats,
            run.settings.warmup)]))


def _train_command(run, folder):
    images_glob, labels_dir = run.sources()
    return [sys.executable, os.path.join(REPO, 'main.py'), 'train', '--dataset', 'cityscapes',
            '-ip', images_glob, '-lp', labels_dir, '--image_shape', str(IMAGE_SHAPE[0]),
            str(IMAGE_SHAPE[1]), '-bs', str(TRAIN_BATCH), '-ep', '1', '--no_val', '--gpu', '0',
            '--vgg_weights', 'none', '-cd', os.path.join(folder, 'ckpt'),
            '-sd', os.path.join(folder, 'summaries'), '-rd', os.path.join(folder, 'runs'),
            '-md', os.path.join(folder, 'model')]


def _predict_command(run, folder):
    images_glob, _ = run.sources()
    return [sys.executable, os.path.join(REPO, 'main.py'), 'predict', '--gpu', '0',
            '-md', run.models.optimised_dir(), '-ip', images_glob,
            '-rd', os.path.join(folder, 'runs')]


def memory_section(run):
    """Peak RSS of the real command lines, each in its own process."""
    folder = os.path.join(run.work_dir, 'memory')
    os.makedirs(folder, exist_ok=True)
    rows = []
    for name, command, target in (
            ('train (float32, batch %d)' % TRAIN_BATCH, _train_command, 'train_rss'),
            ('predict (optimised model)', _predict_command, 'predict_rss')):
        log('peak memory: %s' % name)
        rss = run.attempt('peak memory of %s' % name, lambda: peak_rss(
            command(run, folder), os.path.join(folder, target + '.log')))
        run.raw[target + '_bytes'] = rss
        rows.append(table_row(['python main.py ' + name,
                               'failed' if rss is None else '%.2f GB' % (rss / GB)],
                              None if rss is None else rss / GB, target))
        log(' | '.join(rows[-1]['cells']))
    shutil.rmtree(folder, ignore_errors=True)  # the 1.6 GB checkpoint of the train run
    run.tables.append(Table('Peak memory', ['command', 'peak RSS'], rows, [
        'The kernel\'s maximum resident set size of each process (GB = 10^9 bytes): train on '
        'the synthetic sources for one epoch, checkpoint and SavedModel export included; '
        'predict on the same sources, overlays written.']))


def _val_pairs(count):
    images_glob, labels_dir = demo_split('val')
    image_paths, label_paths = data_loader.find_pairs(images_glob, labels_dir)
    return image_paths[:count], label_paths[:count]


def score_model(model, image_paths, label_paths):
    """(predictions, confusion matrix, median ms per image) over a labelled split, each image
    predicted at the model's image shape; the first image's time is left out as warm-up."""
    label_set = model.label_set
    confusion = np.zeros((label_set.num_classes,) * 2, np.int64)
    predictions, seconds = [], []
    for image_path, label_path in zip(image_paths, label_paths):
        image = data_loader.read_image(image_path)
        label = data_loader.to_train_ids(data_loader.read_label(label_path), label_path, label_set)
        started = time.perf_counter()
        (class_ids,) = predict.predict_batch(model, [image])
        seconds.append(time.perf_counter() - started)
        metrics.accumulate(confusion, label, class_ids, label_set.num_classes,
                           label_set.ignore_id)
        predictions.append(class_ids)
    return predictions, confusion, 1000 * float(np.median(seconds[1:] or seconds))


def _score_and_save(model, image_paths, label_paths, predictions_path):
    """score_model in a row process: the predictions go to an .npz file, the confusion
    matrix and time into the reply (see _read_scores)."""
    predictions, confusion, ms = score_model(model, image_paths, label_paths)
    np.savez(predictions_path, *predictions)
    return confusion.tolist(), ms


def _read_scores(predictions_path, confusion, ms):
    """score_model's (predictions, confusion matrix, ms per image) from _score_and_save's."""
    with np.load(predictions_path) as saved:
        predictions = [saved['arr_%d' % index] for index in range(len(saved.files))]
    return predictions, np.array(confusion, np.int64), ms


def _score_spec(run, kind):
    """_score_and_save's arguments after the model, for the model of kind."""
    image_paths, label_paths = run.score_split
    return [image_paths, label_paths, os.path.join(run.work_dir, 'predictions_%s.npz' % kind)]


def _score_kind(run, folder, kind, score):
    """_score_and_save of one exported model, loaded for it (a row process)."""
    model = load_model(folder, kind)
    try:
        return _score_and_save(model, *score)
    finally:
        model.close()


def _child_scores(run, kind):
    """score_model's (predictions, confusion matrix, ms per image) of one exported model on
    run.score_split, in a fresh process."""
    score = _score_spec(run, kind)
    return _read_scores(score[-1], *in_child(run, _score_kind, run.models.folder(kind), kind,
                                             score))


def agreement(predictions, reference):
    """The share of pixels whose class is the reference's."""
    same = sum(int(np.sum(a == b)) for a, b in zip(predictions, reference))
    return same / sum(a.size for a in reference)


def _export_quality_rows(name, scores, frozen, prefix):
    """Agreement, mean IoU and time of one exported model against the frozen one."""
    predictions, confusion, ms = scores
    miou = helper.mean_iou(confusion)
    rows = [table_row([name, 'mean IoU', '%.2f%%' % (100 * miou)])]
    if frozen is None or name == 'frozen':
        return rows + [table_row([name, 'ms per image', '%.0f' % ms])]
    delta = 100 * (miou - helper.mean_iou(frozen[1]))
    rows[0] = table_row([name, 'mean IoU', '%.2f%% (%+.2f points)' % (100 * miou, delta)],
                        abs(delta), prefix + '_miou')
    rows.append(table_row([name, 'pixels agreeing with the frozen model',
                           format_value(agreement(predictions, frozen[0]), '%')],
                          agreement(predictions, frozen[0]), prefix + '_agreement'))
    ratio = ms / frozen[2]
    value = ratio if prefix == 'optimised' else 1 / ratio
    rows.append(table_row([name, 'ms per image', '%.0f (%.2fx the frozen time)' % (ms, ratio)],
                          value, prefix + '_time' if prefix == 'optimised' else 'tflite_speed'))
    return rows


def _export_size_rows(stats):
    rows = []
    if 'freeze' in stats:
        freeze = stats['freeze']
        rows.append(table_row(['frozen', 'graph.pb (from the model\'s weights), freeze time',
                               '%.1f MB (from %.1f MB), %.0f s' % (
                                   freeze['bytes'] / 1e6, freeze['source_bytes'] / 1e6,
                                   freeze['seconds'])]))
    if 'optimise' in stats:
        ratio = stats['optimise']['bytes'] / stats['optimise']['source_bytes']
        rows.append(table_row(['optimised', 'graph.pb, share of the frozen size, optimise time',
                               '%.1f MB, %.1f%%, %.0f s' % (stats['optimise']['bytes'] / 1e6,
                                                            100 * ratio,
                                                            stats['optimise']['seconds'])],
                              ratio, 'optimised_size'))
    if 'tflite' in stats:
        tflite = stats['tflite']
        rows.append(table_row(['int8 TFLite', 'model.tflite, conversion time',
                               '%.1f MB, %.0f s, calibrated on %d images' % (
                                   tflite['bytes'] / 1e6, tflite['seconds'],
                                   tflite['calibration_images'])]))
    return rows


def export_section(run):
    """Frozen vs optimised vs int8 TFLite of a trained model on the demo val split."""
    title = 'Exported models on the demo val split, %dx%d' % IMAGE_SHAPE
    if not run.models.model_dir:
        run.tables.append(Table(title, [], [], [
            'Skipped: no trained --model_dir given (the inference section times the exported '
            'models with random weights).']))
        return
    if not run.score_split:
        run.score_split = _val_pairs(run.settings.val_images)
    image_paths, _ = run.score_split
    scores = {}
    for name, kind in EXPORTED_KINDS.items():
        if kind in run.scores:  # scored by the process that timed it
            scores[name] = run.scores[kind]
            continue
        log('export comparison: %s on %d val images' % (name, len(image_paths)))
        scores[name] = run.attempt('export comparison, %s' % name, _child_scores, run, kind)
    rows = _export_size_rows(run.models.stats)
    for name, prefix in (('frozen', None), ('optimised', 'optimised'),
                         ('int8 TFLite', 'tflite')):
        if scores[name] is not None:
            rows += _export_quality_rows(name, scores[name], scores['frozen'], prefix)
    run.raw['export'] = {name: dict(mean_iou=helper.mean_iou(score[1]), ms_per_image=score[2])
                         for name, score in scores.items() if score is not None}
    run.tables.append(Table(title, ['model', 'measurement', 'value'], rows, [
        'Model %s, %d val images predicted one at a time (ms: median after the first), each '
        'model in a fresh process: the one that timed it in the inference section, when that '
        'section ran.' % (run.models.model_dir, len(image_paths))]))


SECTION_FUNCTIONS = {'peak': peak_section, 'inference': inference_section,
                     'training': training_section, 'pipeline': pipeline_section,
                     'memory': memory_section, 'export': export_section}
# What a row process may be asked to run (see in_child).
ROW_FUNCTIONS = {function.__name__: function for function in (
    _time_inference, _time_training, _pipeline_steps, _score_kind)}


# ---------------------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Measure FCN-8s speed, memory and exported models on this machine; '
                    'writes a markdown report and a JSON of the raw numbers.')
    parser.add_argument('--quick', action='store_true',
                        help='small settings: fewer repeats, batch 1 only, smaller sources')
    parser.add_argument('--only', metavar='SECTION[,SECTION]',
                        help='run only these sections: %s' % ', '.join(SECTIONS))
    parser.add_argument('-md', '--model_dir',
                        help='a trained model (train\'s SavedModel or a checkpoint folder): '
                             'the export comparison needs one; without it models have '
                             'random weights')
    parser.add_argument('--calibration_images', type=int,
                        help='images calibrating the int8 TFLite model (default 20; quick 4)')
    parser.add_argument('--report', default='BENCHMARKS.md', help='markdown report')
    parser.add_argument('--json', help='raw numbers (default: the report\'s name with .json)')
    parser.add_argument('--profile', metavar='DIR',
                        help='write TensorFlow traces of a training and an inference step here '
                             'and summarise their top ops in the report')
    parser.add_argument('--debug', action='store_true',
                        help='print the traceback of each failed measurement')
    parser.add_argument('--row', help=argparse.SUPPRESS)  # a row process's JSON spec
    return parser.parse_args(argv)


def select_sections(only):
    """The sections to run, in report order; the peaks come along with inference or training,
    whose shares of the peak need them."""
    if not only:
        return list(SECTIONS)
    chosen = {name.strip() for name in only.split(',') if name.strip()}
    unknown = sorted(chosen - set(SECTIONS))
    if unknown or not chosen:
        raise UserError('--only %s: unknown section %s (choose from %s)' % (
            only, ', '.join(unknown) or "''", ', '.join(SECTIONS)))
    if chosen & {'inference', 'training'}:
        chosen.add('peak')
    return [name for name in SECTIONS if name in chosen]


def check_outputs(report, json_path, profile_dir):
    """Replaces only a report, JSON or profile folder that this script wrote."""
    if os.path.exists(report):
        with open(report, errors='replace') as f:
            if REPORT_MARK not in f.read(4096):
                raise UserError('%s exists and was not written by benchmark.py: choose another '
                                '--report' % report)
    if os.path.exists(json_path):
        try:
            ours = helper.read_json(json_path).get('written_by') == 'benchmark.py'
        except (UserError, AttributeError):
            ours = False
        if not ours:
            raise UserError('%s exists and was not written by benchmark.py: choose another '
                            '--json' % json_path)
    traces = {'inference_step.json', 'train_step.json'}
    if profile_dir and os.path.exists(profile_dir) and (
            not os.path.isdir(profile_dir) or set(os.listdir(profile_dir)) - traces):
        raise UserError('%s holds files not written by benchmark.py: choose another --profile '
                        'folder' % profile_dir)


def _settings_text(settings, section_seconds, seconds):
    """The settings of a run, with the minutes each section (name: seconds) and all took."""
    return ('%s: %d warm-up run(s), then the median of %d; inference batch %s; matmul %d; %d '
            'sources of %dx%d; %d demo val images; int8 calibrated on up to %d images; '
            'sections %s; %.1f minutes' % (
                settings.name, settings.warmup, settings.repeats,
                ' and '.join(map(str, settings.batches)), settings.matmul_size,
                settings.sources, settings.source_shape[1], settings.source_shape[0],
                settings.val_images, settings.calibration_images,
                ', '.join('%s (%.1f min)' % (name, section / 60)
                          for name, section in section_seconds.items()),
                seconds / 60))


def _settings(args):
    settings = QUICK if args.quick else FULL
    if args.calibration_images is None:
        return settings
    if args.calibration_images < 1:
        raise UserError('--calibration_images %d is not positive' % args.calibration_images)
    return settings._replace(calibration_images=args.calibration_images)


def run_benchmark(args, command):
    """Runs the chosen sections in a temporary work folder; writes the report and the JSON."""
    settings = _settings(args)
    sections = select_sections(args.only)
    json_path = args.json or os.path.splitext(args.report)[0] + '.json'
    check_outputs(args.report, json_path, args.profile)
    if args.model_dir:
        model_dir.read_model_config(args.model_dir)  # fails now, not after minutes of work
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    machine, started, cpu_at_start = machine_info(), time.time(), cpu_seconds()
    work_dir = tempfile.mkdtemp(prefix='fcn8s-benchmark-')
    section_seconds = collections.OrderedDict()
    try:
        run = Run(settings, work_dir, args.model_dir, args.profile, args.debug)
        if 'export' in sections and args.model_dir:
            run.score_split = _val_pairs(settings.val_images)
        for section in sections:
            log('== %s' % section)
            section_started = time.time()
            SECTION_FUNCTIONS[section](run)
            section_seconds[section] = time.time() - section_started
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    machine['load'][1] = os.getloadavg()[0]
    finish_peaks(run)
    machine['others_cpu_share'] = others_cpu_share(cpu_at_start, cpu_seconds(),
                                                   time.time() - started)
    results = dict(machine=machine, command=command, tables=run.tables, profile=run.profile,
                   errors=run.errors,
                   settings=_settings_text(settings, section_seconds, time.time() - started))
    _write_text(args.report, format_report(results))
    helper.write_json(json_path, dict(
        written_by='benchmark.py', machine=machine, command=command,
        settings=results['settings'], results=run.raw, conversions=run.models.stats,
        profile=run.profile, errors=run.errors))
    print('report written to %s, raw numbers to %s' % (args.report, json_path))


def _write_text(path, text):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def run_row(spec_json):
    """A row process: builds the parent's Run and network from the spec, runs one measurement
    and prints its reply as one JSON line. A failure ends with its one-line error on stderr."""
    spec = json.loads(spec_json)
    fcn8vgg16.VGG16 = tuple(tuple(block) for block in spec['encoder'])
    fcn8vgg16.FC_CHANNELS = spec['fc_channels']
    run = Run(Settings(**spec['settings']), spec['work_dir'], spec['model_dir'],
              spec['profile_dir'], sources=spec['sources'])
    try:
        result = ROW_FUNCTIONS[spec['function']](run, *spec['args'])
    except Exception as error:
        traceback.print_exc()
        print(error_line(error), file=sys.stderr)
        return 1
    print(ROW_REPLY + json.dumps(dict(pid=os.getpid(), result=result, profile=run.profile)),
          flush=True)
    return 0


def main(argv=None):
    args = parse_args(argv)
    tf1.disable_eager_execution()  # graph mode, as the tool
    tf.get_logger().setLevel('ERROR')
    if args.row:
        return run_row(args.row)
    command = 'python benchmark.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    try:
        run_benchmark(args, command.strip())
    except UserError as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
