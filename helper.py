"""Shared utilities that fit nowhere else: errors, session config, colouring, run folders."""
import datetime
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1


class UserError(Exception):
    """A mistake in the user's input: main.py prints it as one line and exits non-zero."""


def warn(message):
    print('warning: ' + message, file=sys.stderr)


def session_config(gpu=1, gpu_mem=0.9, xla=0):
    """A ConfigProto that applies the --gpu, --gpu_mem and --xla flags.

    gpu=0 hides every GPU from the session; gpu_mem is the fraction of each GPU's memory the
    process may take, grown on demand; xla 1 or 2 sets the global JIT level (ON_1, ON_2).
    """
    if not 0 < gpu_mem <= 1:
        raise UserError('--gpu_mem %g is outside (0, 1]' % gpu_mem)
    if xla not in (0, 1, 2):
        raise UserError('--xla %d is not 0, 1 or 2' % xla)
    if gpu < 0:
        raise UserError('--gpu %d is negative' % gpu)
    available = len(tf.config.list_physical_devices('GPU'))
    if gpu > available:
        warn('%d GPU(s) asked for, %d found: running on %s'
             % (gpu, available, '%d GPU(s)' % available if available else 'the CPU'))
    config = tf1.ConfigProto(allow_soft_placement=True)
    config.device_count['GPU'] = min(gpu, available)
    config.gpu_options.per_process_gpu_memory_fraction = gpu_mem
    config.gpu_options.allow_growth = True
    if xla:
        config.graph_options.optimizer_options.global_jit_level = (
            tf1.OptimizerOptions.ON_1 if xla == 1 else tf1.OptimizerOptions.ON_2)
    return config


def colorize(class_ids, colors, ignore_color=(0, 0, 0)):
    """uint8 class ids [..., h, w] -> uint8 RGB [..., h, w, 3] through a colour lookup table.

    Ids outside the table (the ignore id 255) take ignore_color.
    """
    table = np.tile(np.asarray(ignore_color, np.uint8), (256, 1))
    table[:len(colors)] = colors
    return table[class_ids]


def overlay(image, class_ids, colors, alpha=0.5):
    """uint8 RGB [h, w, 3] photo, uint8 class ids [h, w] -> uint8 RGB [h, w, 3].

    Each pixel is blended toward colors[class id] (uint8 [classes, 3]): within 1 of
    (1 - alpha) * image + alpha * color, as alpha is taken in 1/256ths for integer arithmetic
    (no float copy of the frame). Ids >= len(colors), such as the ignore id 255, keep the photo.
    """
    if not 0 <= alpha <= 1:
        raise UserError('overlay alpha %g is outside [0, 1]' % alpha)
    if image.shape != class_ids.shape + (3,):
        raise ValueError('image %s and class ids %s differ in size' % (image.shape,
                                                                       class_ids.shape))
    weight = int(round(alpha * 256))
    # (photo * (256 - weight) + color * weight + 128) >> 8 stays below 2 ** 16: uint16 suffices.
    color_terms = np.full((256, 3), 128, np.uint16)
    color_terms[:len(colors)] += np.asarray(colors, np.uint16) * weight
    color_terms = color_terms.view('V6').ravel()  # one 6-byte item per class: a fast take()
    any_ignored = class_ids.max() >= len(colors)  # never in argmax predictions
    blended = np.empty(image.shape, np.uint8)
    # Bands of ~64k pixels keep the uint16 temporaries in cache: twice as fast as whole frames.
    band = max(1, 2 ** 16 // image.shape[1])
    for top in range(0, image.shape[0], band):
        rows = slice(top, top + band)
        mixed = np.multiply(image[rows], np.uint16(256 - weight), dtype=np.uint16)
        mixed += (color_terms.take(class_ids[rows].astype(np.intp))
                  .view(np.uint16).reshape(mixed.shape))
        mixed >>= 8
        blended[rows] = mixed
        if any_ignored:
            ignored = class_ids[rows, :, None] >= len(colors)
            np.copyto(blended[rows], image[rows], where=ignored)
    return blended


MODEL_CONFIG = 'fcn8s_config.json'  # in every run, checkpoint and model folder the tool writes


def check_output_dir(path):
    """An output folder may be replaced only if it holds a model this tool wrote."""
    if os.path.exists(path) and not os.path.exists(os.path.join(path, MODEL_CONFIG)):
        raise UserError('%s exists and does not hold a model written by this tool: '
                        'choose another folder' % path)


def temp_dir_beside(path):
    """A new empty folder next to path, to be renamed into place by move_into_place()."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix='.%s.tmp-' % os.path.basename(os.path.abspath(path)),
                            dir=parent)


def move_into_place(tmp_dir, destination):
    """Renames tmp_dir to destination; an older model of ours there is replaced."""
    check_output_dir(destination)
    if os.path.exists(destination):
        old = tempfile.mkdtemp(prefix='.%s.old-' % os.path.basename(destination),
                               dir=os.path.dirname(os.path.abspath(destination)))
        os.rename(destination, os.path.join(old, 'model'))
        os.rename(tmp_dir, destination)
        shutil.rmtree(old)
    else:
        os.rename(tmp_dir, destination)


def write_model_dir(destination, write):
    """Calls write(folder) on a new temporary folder (which write creates) beside destination,
    then renames it into place; nothing is left behind if write fails."""
    check_output_dir(destination)
    tmp_dir = temp_dir_beside(destination)
    try:
        write(os.path.join(tmp_dir, 'model'))
        move_into_place(os.path.join(tmp_dir, 'model'), destination)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def new_run_dir(runs_dir):
    """A new folder runs_dir/<timestamp>, with a suffix if that name is taken."""
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    for suffix in [''] + ['-%d' % i for i in range(1, 1000)]:
        path = os.path.join(runs_dir, stamp + suffix)
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise UserError('cannot create a new run folder under %s' % runs_dir)


def write_json(path, data):
    """Writes JSON to a temporary name and renames it into place."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise UserError('cannot read %s: %s' % (path, error)) from None


def mean_iou(confusion):
    """Mean over classes present in truth or prediction of TP / (TP + FP + FN)."""
    confusion = np.asarray(confusion, np.float64)
    true_positives = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    present = union > 0
    return float(np.mean(true_positives[present] / union[present])) if present.any() else 0.0


def pixel_accuracy(confusion):
    confusion = np.asarray(confusion, np.float64)
    return float(np.trace(confusion) / max(confusion.sum(), 1))
