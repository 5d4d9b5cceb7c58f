"""The cold section: `main.py predict` on one image at IMAGE_SHAPE in a fresh process for each
model format, as a new user runs it, from the command to its exit (the overlay written), with
the peak RSS of that process and where its time goes (the imports, the model's load, its first
run against a warm one)."""
import os
import statistics
import subprocess
import sys
import time

from PIL import Image

import data_loader
from benchmark import measure, models
from benchmark.config import GB, IMAGE_SHAPE, REPO
from benchmark.report import Table, table_row
from benchmark.targets import TARGETS
from roadseg.deploy import onnx_model, tflite_model

MAIN = os.path.join(REPO, 'main.py')
# (row name, model kind, cold-start target, peak-memory target) of every format predict loads.
COLD_FORMATS = (
    ('checkpoint', 'checkpoint', 'cold_trained', 'float_predict_rss'),
    ('SavedModel', 'saved_model', 'cold_trained', 'float_predict_rss'),
    ('frozen', 'frozen', 'cold_graph', 'float_predict_rss'),
    ('optimised (8-bit weights)', 'optimised', 'cold_graph', 'float_predict_rss'),
    ('ONNX Runtime', 'onnx', None, 'float_predict_rss'),
    ('int8 TFLite', 'tflite', 'cold_tflite', None))
# What a predict process imports before it reads a model: Python, the tool and the runtime
# of the model's kind (TensorFlow's runtime, see roadseg.tf_runtime, but for the TFLite and ONNX
# models).
_TENSORFLOW_IMPORTS = ('import main; from roadseg import tf_runtime; '
                       'tf_runtime.install_runtime(); from roadseg.deploy import loader')
RUNTIME_IMPORTS = {'tflite': 'import main; from roadseg.deploy import tflite_model',
                   'onnx': 'import main, onnxruntime; from roadseg.deploy import onnx_model'}


def cold_phases(run, folder, kind):
    """{'load', 'first', 'second'}: seconds to load the model of kind in folder, of its first
    run on one image and of its second, in a row process (TensorFlow already imported)."""
    image, _ = models.random_batch(1, run.label_set.num_classes)
    started = time.perf_counter()
    model = models.load_model(folder, kind)
    loaded = time.perf_counter()
    try:
        model.predict(image)
        first = time.perf_counter()
        model.predict(image)
        second = time.perf_counter()
    finally:
        model.close()
    return dict(load=loaded - started, first=first - loaded, second=second - first)


def _import_seconds(kind, repeats):
    """The median wall time of a process that only imports the tool and kind's runtime, and
    ends as predict does, without Python's teardown (main.QUICK_EXIT_ACTIONS)."""
    command = [sys.executable, '-c',
               RUNTIME_IMPORTS.get(kind, _TENSORFLOW_IMPORTS) + '; import os; os._exit(0)']
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _median_phases(run, kind):
    """cold_phases of kind, each phase's median over as many fresh processes as runs."""
    runs = [run.in_child(cold_phases, run.models.folder(kind), kind)
            for _ in range(run.settings.repeats)]
    return {phase: statistics.median(one[phase] for one in runs) for phase in runs[0]}


def _model_path(run, kind):
    """What -md names for kind: a model folder, or the .tflite or .onnx file in one."""
    folder = run.models.folder(kind)
    name = {'tflite': tflite_model.TFLITE_FILE, 'onnx': onnx_model.ONNX_FILE}.get(kind)
    return os.path.join(folder, name) if name else folder


def _one_image(folder):
    """A demo val image resized to IMAGE_SHAPE, written once into folder."""
    path = os.path.join(folder, 'image.png')
    if not os.path.exists(path):
        images_glob, _ = models.demo_split('val')
        source = sorted(data_loader.find_images(images_glob))[0]
        image = Image.open(source).convert('RGB').resize(IMAGE_SHAPE[::-1], Image.BILINEAR)
        image.save(path)
    return path


def cold_runs(run, kind, image, folder):
    """(median seconds, largest peak RSS in bytes) of `main.py predict` on image, after one
    run that warms the file cache, the model's files among them."""
    command = [sys.executable, MAIN, 'predict', '--gpu', '0', '-md', _model_path(run, kind),
               '-ip', image, '-rd', os.path.join(folder, 'runs')]
    log_path = os.path.join(folder, kind + '.log')
    measure.timed_peak_rss(command, log_path)
    results = [measure.timed_peak_rss(command, log_path) for _ in range(run.settings.repeats)]
    return statistics.median(seconds for seconds, _ in results), max(rss for _, rss in results)


def _cold_row(name, timed, phases, imports, target):
    """A format's row of the cold-start table: the command's seconds and its parts."""
    if timed is None:
        return table_row([name, 'failed', '', '', '', '', ''])
    seconds = timed[0]
    if phases is None or imports is None:
        return table_row([name, '%.2f' % seconds, '', '', '', '', ''],
                         seconds, target, label=_label(target, name))
    rest = seconds - imports - phases['load'] - phases['first']
    return table_row([name, '%.2f' % seconds, '%.2f' % imports, '%.2f' % phases['load'],
                      '%.2f' % phases['first'], '%.2f' % phases['second'], '%.2f' % rest],
                     seconds, target, label=_label(target, name))


def _label(target, name):
    if not target:
        return None
    return '%s, %s' % (TARGETS[target].label, name)


def cold_section(run):
    """The cold-start and peak-memory tables of predict, every format in its own processes."""
    folder = os.path.join(run.work_dir, 'cold')
    os.makedirs(folder, exist_ok=True)
    image = _one_image(folder)
    time_rows, memory_rows, import_seconds = [], [], {}
    for name, kind, time_target, memory_target in COLD_FORMATS:
        measure.log('cold predict: %s' % name)
        imports = run.attempt('import time, %s' % name, _import_seconds, kind,
                              run.settings.repeats)
        import_seconds[kind] = imports
        timed = run.attempt('cold predict, %s' % name, cold_runs, run, kind, image, folder)
        phases = run.attempt('cold predict phases, %s' % name, _median_phases, run, kind)
        run.raw.setdefault('cold', {})[kind] = dict(
            seconds=timed and timed[0], rss_bytes=timed and timed[1], phases=phases)
        time_rows.append(_cold_row(name, timed, phases, imports, time_target))
        rss = timed and timed[1] / GB
        memory_rows.append(table_row([name, 'failed' if rss is None else '%.2f GB' % rss],
                                     rss, memory_target, label=_label(memory_target, name)))
        measure.log(' | '.join(time_rows[-1]['cells'] + memory_rows[-1]['cells'][1:]))
    run.raw['import_seconds'] = import_seconds
    run.tables.append(Table(
        'First prediction, cold, %dx%d' % IMAGE_SHAPE,
        ['model', 'command (s)', 'imports (s)', 'model load (s)',
         'first run (s)', 'a warm run (s)', 'the rest (s)'], time_rows,
        ['`python main.py predict --gpu 0 -md MODEL -ip image.png` on one %dx%d image in a '
         'fresh process, from the command to its exit with the overlay written: the median of '
         '%d runs after one that warms the file cache. Its parts: a process that only imports '
         'the tool and the runtime of the model (TensorFlow\'s runtime without its public API; '
         'LiteRT for the TFLite model, ONNX Runtime for the ONNX one; ended as predict ends, '
         'without Python\'s teardown; median of as many); then, measured in fresh processes of '
         'their own (median of as many), reading and building the model (for a checkpoint or '
         'SavedModel, its freezing as it loads) and its first run (oneDNN creating its '
         'primitives) against a warm run; the rest is reading the image, writing the overlay, '
         'exiting and, for the TensorFlow models, the TensorFlow modules the load imports.'
         % (IMAGE_SHAPE + (run.settings.repeats,))]))
    run.tables.append(Table(
        'Peak memory of predict, every model format, %dx%d' % IMAGE_SHAPE,
        ['model', 'peak RSS'], memory_rows,
        ['The largest peak RSS of the cold runs above (GB = 10^9 bytes).']))
