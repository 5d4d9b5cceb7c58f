"""Shared utilities that fit nowhere else: errors and their first line, colouring, run folders,
atomic files and JSON, mean IoU and pixel accuracy. No TensorFlow: `main.py -h` imports it."""
import contextlib
import datetime
import json
import os
import re
import socket
import sys
import threading
import uuid

import numpy as np


# The folder of main.py: data/ below it holds the demo dataset and the downloaded weights.
TOOL_DIR = os.path.dirname(os.path.abspath(__file__))
PRECISIONS = ('fp32', 'bf16', 'fp16')


class UserError(Exception):
    """A mistake in the user's input: main.py prints it as one line and exits non-zero."""


class Terminated(KeyboardInterrupt):
    """SIGTERM while training, raised where Ctrl-C would be: the same checkpoint is saved."""
    exit_code = 143  # 128 + the signal's number, as a shell reports it (Ctrl-C: 130)


# TensorFlow's native chatter: absl's info and warning lines (CUDA probing, oneDNN notices),
# its note on logging before absl starts, the errors of probing for a GPU that is not there,
# TensorFlow Lite's info lines (the XNNPACK delegate) and the int8 converter's echo of its
# settings. Errors and fatal lines of anything else pass, and so do TFLite's warnings.
NATIVE_NOISE = re.compile(
    r'(WARNING: All log messages before absl::InitializeLog\(\) is called'
    r'|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] '
    r'|E\d{4} [\d:.]+ +\d+ (cuda_\w+|cuda_platform|cuda_executor|cuda_diagnostics)\.cc:\d+\] '
    r'|INFO: '
    r'|fully_quantize: \d+, inference_type: )')


def quiet_native_logs():
    """Drops TensorFlow's native chatter (NATIVE_NOISE) from the process's stderr
    (file descriptor 2, where C++ writes), passing every other line through. Python's own
    sys.stderr is moved to a copy of the real stderr, so the tool's messages never wait in
    the filter and none is lost at exit."""
    real = os.dup(2)
    sys.stderr.flush()
    sys.stderr = os.fdopen(os.dup(real), 'w', buffering=1, errors='backslashreplace')
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def _forward():
        with os.fdopen(read, 'rb') as lines, os.fdopen(real, 'wb', buffering=0) as out:
            for line in lines:
                if not NATIVE_NOISE.match(line.decode('utf-8', 'replace')):
                    out.write(line)

    threading.Thread(target=_forward, daemon=True, name='native-log-filter').start()


def warn(message):
    print('warning: ' + message, file=sys.stderr)


BACKGROUND_NICE = 10  # a thread at this niceness gets about a tenth of a busy core's time


_lowered = threading.local()


def lower_thread_priority():
    """Lowers the calling thread's scheduling priority to BACKGROUND_NICE, once per thread, on
    Linux (whose threads each have a niceness of their own; elsewhere this does nothing).
    Work that only has to keep ahead of the main work, such as the input pipeline's decoding
    during a training step on the CPU, then takes the cores the main work leaves idle instead
    of preempting its threads, which wait for each other at every operation."""
    if getattr(_lowered, 'done', False) or not sys.platform.startswith('linux'):
        return
    _lowered.done = True
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, max(BACKGROUND_NICE,
                                                    os.getpriority(os.PRIO_PROCESS, thread)))
    except OSError:  # a sandbox that forbids it: the thread keeps its priority
        pass


def first_line(error):
    """The first line of an error's own words, for a one-line message: an OpError's message
    (without TensorFlow's traceback), an OSError's strerror (without the errno and the path,
    which the caller's message names), else str(error); the type's name if that says nothing."""
    text = getattr(error, 'message', None) or getattr(error, 'strerror', None) or str(error)
    return (text.strip().splitlines() or [type(error).__name__])[0]


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
    # Bands of ~64k pixels keep the uint16 temporaries in cache, unlike whole frames.
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


def timestamp():
    """Now, as run folders and TensorBoard runs are named: 20261205-130115."""
    return datetime.datetime.now().strftime('%Y%m%d-%H%M%S')


def new_run_dir(runs_dir):
    """A new folder runs_dir/<timestamp>, with a suffix if that name is taken."""
    stamp = timestamp()
    for suffix in [''] + ['-%d' % i for i in range(1, 1000)]:
        path = os.path.join(runs_dir, stamp + suffix)
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise UserError('cannot create a new run folder under %s' % runs_dir)


LOCK_FILE = '.fcn8s.lock'  # in a folder a process writes: its pid, host and action


def process_start(pid):
    """The start time of a process of this host in clock ticks since boot, None if unknown
    (no /proc): a pid reused by another process has another start."""
    try:
        with open('/proc/%d/stat' % pid) as stat:
            return int(stat.read().rsplit(')', 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _lock_is_stale(holder):
    """True if the process a lock names is gone: of this host, and no longer running (or its
    pid now another process). A lock of another host is never stale: it cannot be checked."""
    if holder.get('host') != socket.gethostname() or not isinstance(holder.get('pid'), int):
        return False
    try:
        os.kill(holder['pid'], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    start = process_start(holder['pid'])
    return None not in (start, holder.get('start')) and start != holder['start']


def _read_lock(path):
    try:
        with open(path) as lock:
            holder = json.load(lock)
        return holder if isinstance(holder, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or damaged: held, by an unknown process


@contextlib.contextmanager
def folder_lock(folder, action):
    """Holds folder for this process while the block runs: LOCK_FILE, created atomically
    (O_EXCL), names the process. A folder another running process holds is a UserError naming
    it; the lock of a process that died without removing it is taken over with a warning."""
    # The real path: a folder that is a symlink, replaced midway, still has its lock removed.
    path = os.path.join(os.path.realpath(folder), LOCK_FILE)
    me = dict(pid=os.getpid(), host=socket.gethostname(), action=action,
              start=process_start(os.getpid()), since=timestamp())
    while True:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None:  # removed meanwhile: try again
                continue
            if not _lock_is_stale(holder):
                raise UserError(
                    '%s is in use by %s (pid %s on %s, since %s): wait for it to end, or use '
                    'another folder; if no such process runs, delete %s'
                    % (folder, holder.get('action', 'another process'), holder.get('pid', '?'),
                       holder.get('host', '?'), holder.get('since', '?'), path)) from None
            try:  # renamed aside first: of two processes taking it over, one wins
                os.rename(path, '%s.stale-%d' % (path, os.getpid()))
            except FileNotFoundError:
                continue
            os.remove('%s.stale-%d' % (path, os.getpid()))
            warn('%s was locked by %s (pid %d on %s), which is no longer running: taken over'
                 % (folder, holder.get('action', '?'), holder['pid'], holder['host']))
            continue
        except OSError as error:
            raise UserError('cannot lock %s: %s' % (folder, first_line(error))) from None
        with os.fdopen(descriptor, 'w') as lock:
            json.dump(me, lock)
        break
    try:
        yield
    finally:
        if _read_lock(path) == me:
            os.remove(path)


def write_atomically(path, write, temporary=None):
    """Calls write(temporary path) beside path, syncs that file to disk and renames it to path:
    a reader, or a run killed halfway, sees the old file or the new one, never a part.

    The temporary is hidden, unique to the call and ends in path's extension (ffmpeg chooses a
    container by it), unless the caller names it. It never outlives the call.
    """
    if temporary is None:
        stem, extension = os.path.splitext(os.path.basename(path))
        # A name of its own per writer (not mkstemp, whose files only their owner may read).
        temporary = os.path.join(os.path.dirname(path), '.%s.%s.tmp%s' % (
            stem, uuid.uuid4().hex[:8], extension))
    try:
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # renamed only once the bytes are on disk
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_file(path, write, temporary=None):
    """write_atomically, a failure (a full disk, a file size limit) a UserError naming path."""
    try:
        write_atomically(path, write, temporary)
    except OSError as error:
        raise UserError('cannot write %s: %s' % (path, first_line(error))) from None


def write_json(path, data):
    """Writes JSON through write_file."""
    def dump(temporary):
        with open(temporary, 'x') as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write('\n')

    write_file(path, dump)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise UserError('cannot read %s: %s' % (path, first_line(error))) from None


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
