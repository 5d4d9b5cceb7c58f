"""Measuring: timing calls, FLOPs, matmul rates, traced steps, the machine's load, processes and
their peak memory."""
import collections
import concurrent.futures
import datetime
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from tensorflow.python.client import timeline

import fcn8vgg16
from roadseg import devices, tf_runtime
from benchmark import config, targets

tf1 = tf.compat.v1
_STARTED = time.perf_counter()


def log(message):
    print('[%5.0f s] %s' % (time.perf_counter() - _STARTED, message), flush=True)


# ---------------------------------------------------------------------------- timing

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
    return devices.session_config(gpu=0, gpu_mem=0.9, xla=xla, precision=precision)


def serial_ops(session_config):
    """Makes a session of this config run one op at a time. inter_op_parallelism_threads
    alone does not: TensorFlow sizes its inter-op pool once per process, by the first session,
    and later sessions share it; this one gets a pool of its own."""
    session_config.inter_op_parallelism_threads = 1
    session_config.use_per_session_threads = True
    return session_config


# ---------------------------------------------------------------------------- FLOPs and peaks

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


def copy_bandwidth(megabytes, warmup, repeats, threads=None):
    """GB/s of a large copy, counted as STREAM counts it (the bytes read plus those written):
    a float32 array of `megabytes` MiB into another, a slice on each of `threads` threads (one
    per core), median of repeats. The memory-bound parts of a step compare with it."""
    threads = threads or os.cpu_count()
    source = np.ones(megabytes * 2 ** 20 // 4, np.float32)
    target = np.zeros_like(source)
    bounds = np.linspace(0, source.size, threads + 1).astype(int)

    def copy_slice(index):  # numpy lets go of the GIL while it copies
        start, end = bounds[index], bounds[index + 1]
        np.copyto(target[start:end], source[start:end])

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        seconds = time_calls(lambda: list(pool.map(copy_slice, range(threads))), warmup,
                             repeats)
    return 2 * source.nbytes / seconds / 1e9


# ---------------------------------------------------------------------------- traced steps

def _op_type(node):
    match = re.match(r'[^=]*= (\S+?)\(', node.timeline_label)
    return match.group(1) if match else ''


def top_ops(step_stats, count=10):
    """[(op type, ms, share of all op time)] of the costliest op types of a traced step."""
    totals = collections.Counter()
    for device in step_stats.dev_stats:
        for node in device.node_stats:
            totals[_op_type(node) or node.node_name] += node.all_end_rel_micros
    whole = sum(totals.values()) or 1
    return [(op, micros / 1000, micros / whole) for op, micros in totals.most_common(count)]


STEP_PARTS = ('forward: convolutions', 'forward: fc6, fc7 (matrix products)',
              'backward: convolutions, input gradients',
              'backward: convolutions, filter gradients',
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
            part, layer = step_part(node.node_name, _op_type(node))
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


def rewrite_note(name, rewrites):
    """A row's note when the rewrite its variant's name asks for did not run."""
    if 'xla' in name and not rewrites.get('xla'):
        return 'no XLA cluster ran'
    if 'bf16' in name and not rewrites.get('bf16'):
        return 'no bf16 rewrite ran'
    return ''


def traced_run(session, fetches, feed, trace_path=None):
    """Runs once with FULL_TRACE; returns (step stats, wall seconds) and writes a Chrome trace."""
    metadata = tf1.RunMetadata()
    started = time.perf_counter()
    session.run(fetches, feed, options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE),
                run_metadata=metadata)
    seconds = time.perf_counter() - started
    if trace_path:
        with open(trace_path, 'w') as f:
            f.write(timeline.Timeline(metadata.step_stats).generate_chrome_trace_format())
    return metadata.step_stats, seconds


# ---------------------------------------------------------------------------- the machine

# The CPU features the report names: the vector widths and those a target needs.
CPU_FEATURES = (('avx2', 'avx512f') + targets.INT8_DOT_CPU_FLAGS + devices.BF16_CPU_FLAGS
                + ('amx_int8',))


def machine_info():
    """CPU model, cores, RAM, TensorFlow version and whether it uses oneDNN's ops (it does not
    on some CPUs, e.g. AVX2-only ones), date and load, from /proc."""
    cpu, ram = 'unknown', 0
    with open('/proc/cpuinfo') as f:
        match = re.search(r'^model name\s*:\s*(.*)$', f.read(), re.M)
    if match:
        cpu = match.group(1).strip()
    flags = devices.cpu_flags() or set()
    features = [f for f in CPU_FEATURES if f in flags]
    if features:
        cpu += ' (%s)' % ', '.join(features)
    with open('/proc/meminfo') as f:
        ram = int(re.search(r'MemTotal:\s*(\d+) kB', f.read()).group(1)) * 1024
    return dict(cpu=cpu, cores=os.cpu_count(), ram_bytes=ram, tensorflow=tf.__version__,
                onednn=tf_runtime.onednn_enabled(),
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


# ---------------------------------------------------------------------------- processes

# Runs argv[2:] with its output in argv[1]; prints the child's peak RSS (KiB), exits with its
# status. A child's ru_maxrss starts from its parent's RSS when it forks: this wrapper's small
# one, not that of the benchmark's process with TensorFlow and models loaded.
_RSS_WRAPPER = """import resource, subprocess, sys, time
with open(sys.argv[1], 'w') as log:
    started = time.perf_counter()
    status = subprocess.call(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(status)
"""


def peak_rss(command, log_path):
    """Runs command to completion in the repository's folder; returns the peak resident memory
    (bytes) of its process."""
    return timed_peak_rss(command, log_path)[1]


def timed_peak_rss(command, log_path):
    """Runs command to completion in the repository's folder; returns (seconds from its start
    to its exit, peak resident memory of its process in bytes)."""
    result = subprocess.run([sys.executable, '-c', _RSS_WRAPPER, log_path] + list(command),
                            stdout=subprocess.PIPE, text=True, cwd=config.REPO)
    if result.returncode:
        with open(log_path) as log_file:
            last = ([line.strip() for line in log_file if line.strip()] or ['no output'])[-1]
        raise RuntimeError('%s exited with %d: %s' % (' '.join(command[1:3]),
                                                      result.returncode, last))
    seconds, kib = result.stdout.split()[-2:]
    return float(seconds), int(kib) * 1024  # KiB on Linux


ROW_REPLY = 'benchmark row reply: '  # marks the row process's one JSON line on its stdout


class RowFailed(Exception):
    """A row process ended without a reply; str() is its last stderr line."""

    def __init__(self, line, stderr):
        super().__init__(line)
        self.stderr = stderr


def child_reply(spec):
    """Runs `python -m benchmark --row SPEC` in the repository's folder (the row process of
    benchmark/__main__.py) and returns its reply: pid, result and profile. RowFailed with its
    last stderr line when it exits non-zero or without a reply."""
    process = subprocess.run(
        [sys.executable, '-m', 'benchmark', '--row', json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=config.REPO)
    replies = [line[len(ROW_REPLY):] for line in process.stdout.splitlines()
               if line.startswith(ROW_REPLY)]
    if process.returncode == 0 and replies:
        return json.loads(replies[-1])
    lines = [line.strip() for line in process.stderr.splitlines() if line.strip()]
    if process.returncode == 0 or not lines:
        lines.append('row process exited with %d and no reply' % process.returncode)
    raise RowFailed(lines[-1][:300], process.stderr)


def error_line(error):
    """'Type: first line of the message', as a failed measurement is recorded."""
    message = (str(error).strip().splitlines() or [''])[0]
    return ('%s: %s' % (type(error).__name__, message))[:300]
