"""The inference section (every model kind at each batch size, each in a fresh process, and the
cost of test-time augmentation), the video section (`video` against the model alone on the demo
video) and the export section (the frozen, optimised and int8 TFLite models scored on the demo
val split)."""
import collections
import os
import time

import imageio_ffmpeg
import numpy as np

import data_loader
import fcn8vgg16
import helper
from roadseg import specs
from roadseg.apps import metrics, predict, tta, video
from benchmark import measure, models
from benchmark.config import IMAGE_SHAPE
from benchmark.report import SHARE_COLUMN, Table, table_row
from benchmark.sections_peak import BESIDE_NOTE, sample_peak
from benchmark.targets import TARGETS, format_value

# The exported models the export section compares (row name: model kind).
EXPORTED_KINDS = collections.OrderedDict((('frozen', 'frozen'), ('optimised', 'optimised'),
                                          ('int8 TFLite', 'tflite')))
INFERENCE_VARIANTS = (  # (row name, model kind, xla, precision)
    ('float32', 'float', 0, 'fp32'), ('--xla 2', 'float', 2, 'fp32'),
    ('--precision bf16', 'float', 0, 'bf16'), ('frozen', 'frozen', 0, 'fp32'),
    ('ONNX Runtime', 'onnx', 0, 'fp32'), ('optimised (8-bit weights)', 'optimised', 0, 'fp32'),
    ('int8 TFLite', 'tflite', 0, 'fp32'))
INFERENCE_TRACE = 'inference step'  # the profiled step: float32 at batch 1
UNTRACED_KINDS = ('tflite', 'onnx')  # no TensorFlow session to trace
# Test-time augmentation of the float32 model: (row name, specs.Inference), the plain one first.
TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
_SCALES_FLAG = '--scales ' + ' '.join('%g' % scale for scale in TTA_SCALES)
TTA_VARIANTS = (('one scale (plain)', specs.Inference()),
                ('--flip', specs.Inference(flip=True)),
                (_SCALES_FLAG, specs.Inference(scales=TTA_SCALES)),
                (_SCALES_FLAG + ' --flip', specs.Inference(scales=TTA_SCALES, flip=True)))


def _traced_step_name(name, batch_size):
    return INFERENCE_TRACE if (name, batch_size) == ('float32', 1) else None


def time_inference(run, folder, kind, xla, precision, name, score=None):
    """{'batches': [(seconds per image, rewrites seen)] of model.predict on random images at
    each of the run's batch sizes, 'score': _score_and_save(model, *score) or None}, in one
    process (a row process): a batch size of its own has convolutions of its own shapes, so
    the smaller batch's primitives do not decide how the larger one's run. The export
    comparison's scores come from the same warm model when score is given."""
    model = models.load_model(folder, kind, xla, precision)
    results = []
    try:
        for batch_size in run.settings.batches:
            images, _ = models.random_batch(batch_size, run.label_set.num_classes)
            seconds = measure.time_calls(lambda: model.predict(images), run.settings.warmup,
                                         run.settings.repeats)
            rewrites = {}
            if kind not in UNTRACED_KINDS:  # traced once warm: which rewrites ran, ops' times
                rewrites = run.trace(model.session, model.output, {model.input: images},
                                     _traced_step_name(name, batch_size))
            results.append((seconds / batch_size, rewrites))
        return dict(batches=results, score=_score_and_save(model, *score) if score else None)
    finally:
        model.close()


def _inference_targets(name, seconds, times, batch_size):
    """(value, target key) of an inference row: its speed-up, or its share of the peak
    (set by finish_peaks)."""
    if name == 'float32':
        return None, 'inference_fp32'
    reference = {'--precision bf16': 'float32', 'optimised (8-bit weights)': 'frozen',
                 'int8 TFLite': 'frozen', 'ONNX Runtime': 'frozen'}.get(name)
    if reference is None or not times.get((reference, batch_size)):
        return None, None
    ratio = times[(reference, batch_size)] / seconds
    if name.startswith('optimised'):
        return 1 / ratio, 'optimised_time'
    if name == 'ONNX Runtime':  # its time over the frozen graph's: >= 1 when ours is as fast
        return 1 / ratio, 'onnx_runtime'
    return ratio, 'inference_bf16' if 'bf16' in name else 'tflite_speed'


def _inference_row(run, name, precision, batch_size, result, times, beside):
    seconds, rewrites = result
    flops = run.raw.get('flops_per_image')
    gflops = flops / seconds / 1e9 if flops else None
    value, target = _inference_targets(name, seconds, times, batch_size)
    return table_row([name, batch_size, '%.0f' % (1000 * seconds),
                      '%.0f' % gflops if gflops else '', 'n/a',
                      measure.rewrite_note(name, rewrites)],
                     value, target,
                     '%s, batch %d' % (TARGETS[target].label, batch_size) if target else None,
                     gflops, precision, beside_peak=beside if gflops else None,
                     rewrites=rewrites,
                     trace=_traced_step_name(name, batch_size))


def _warm_up(run):
    """Runs the first of INFERENCE_VARIANTS once, untimed, in a process of its own: the first
    heavy work of a run has run slow on shared machines, and it would fall on the first row."""
    name, kind, xla, precision = INFERENCE_VARIANTS[0]
    measure.log('inference warm-up: %s, untimed' % name)
    run.attempt('inference warm-up', lambda: run.in_child(
        time_inference, run.models.folder(kind), kind, xla, precision, 'warm-up', None))


def inference_section(run):
    _warm_up(run)
    times, rows = {}, []
    for name, kind, xla, precision in INFERENCE_VARIANTS:
        what = 'inference %s' % name
        measure.log(what)
        if kind == 'onnx' and not models.has_module('onnxruntime'):
            rows += [table_row([name, batch_size, 'not run: onnxruntime is not installed', '',
                                '', ''], None, 'onnx_runtime',
                               '%s, batch %d' % (TARGETS['onnx_runtime'].label, batch_size))
                     for batch_size in run.settings.batches]
            continue
        score = _score_spec(run, kind) if run.score_split and kind in EXPORTED_KINDS.values() \
            else None
        reply = run.attempt(what, lambda: run.in_child(
            time_inference, run.models.folder(kind), kind, xla, precision, name, score))
        if reply is None:
            rows += [table_row([name, batch_size, 'failed', '', '', ''])
                     for batch_size in run.settings.batches]
            continue
        if score:
            run.scores[kind] = _read_scores(score[-1], *reply['score'])
        beside = sample_peak(run, precision) if run.raw.get('flops_per_image') else None
        for batch_size, result in zip(run.settings.batches, reply['batches']):
            times[(name, batch_size)] = result[0]
            rows.append(_inference_row(run, name, precision, batch_size, result, times, beside))
            measure.log(' | '.join(rows[-1]['cells']))
    run.raw['inference_ms_per_image'] = {'%s, batch %d' % key: 1000 * value
                                         for key, value in times.items()}
    notes = ['Random uint8 images. Share of peak: GFLOP/s / the best matmul rate of the run in '
             'the same precision (int8 TFLite against float32\'s). ' + BESIDE_NOTE,
             'Each model runs in a fresh process, as `main.py predict` does, timed at every '
             'batch size in turn: oneDNN\'s cache of convolution primitives is process-wide, '
             'and the first model of a process decides how later ones of the same shapes run.',
             'The section begins with the %s model run once, untimed, in a process of its own: '
             'the first heavy work of a run has run slow on shared machines.'
             % INFERENCE_VARIANTS[0][0]]
    if not run.models.model_dir:
        notes.append('Models with random weights (no --model_dir): times only.')
    notes.append('ONNX Runtime: the optimised folder\'s float model.onnx (tf2onnx) on the '
                 'CPUExecutionProvider, intra-op threads = the %d cores, sequential execution, '
                 'all graph optimisations on. It runs fc6 as the 7x7 convolution the model.onnx '
                 'holds; the TensorFlow rows load their graph as `predict` does, with fc6 in '
                 'row bands that skip the zero padding, so an image takes a little less work '
                 'than counted.' % os.cpu_count())
    run.tables.append(Table('Inference at %dx%d' % IMAGE_SHAPE,
                            ['model', 'batch', 'ms per image', 'GFLOP/s', SHARE_COLUMN,
                             'notes'], rows, notes))
    tta_table(run)


# ---------------------------------------------------------------------------- augmentation

def time_tta(run):
    """{row name: median seconds per image} of predict_outputs of the float32 model on one
    random image, at batch 1, for each of TTA_VARIANTS in turn (a row process)."""
    model = models.load_model(run.models.folder('float'), 'float')
    try:
        images, _ = models.random_batch(1, run.label_set.num_classes)
        calls = {name: (lambda inference=inference: predict.predict_outputs(
            model, [images[0]], inference=inference)) for name, inference in TTA_VARIANTS}
        return measure.time_in_turn(calls, run.settings.warmup, run.settings.repeats)
    finally:
        model.close()


def _padded_pixels(shape):
    return np.prod([-(-side // fcn8vgg16.STRIDE) * fcn8vgg16.STRIDE for side in shape])


def tta_views(inference):
    """(views the network runs per image, their pixels padded to multiples of 32 over the
    plain view's) of an augmentation at IMAGE_SHAPE."""
    flips = 2 if inference.flip else 1
    pixels = sum(_padded_pixels(tta.scaled_size(IMAGE_SHAPE, scale))
                 for scale in inference.scales)
    return len(inference.scales) * flips, flips * pixels / _padded_pixels(IMAGE_SHAPE)


def tta_rows(seconds):
    """The rows of time_tta's {row name: seconds per image} (None: failed), with each one's
    multiple of the plain time, and the note its numbers say."""
    plain = seconds.get(TTA_VARIANTS[0][0])
    rows, clauses = [], []
    for name, inference in TTA_VARIANTS:
        views, pixels = tta_views(inference)
        spent = seconds.get(name)
        multiple = spent / plain if spent and plain else None
        rows.append(table_row([name, views, '%.2fx' % pixels,
                               '%.0f' % (1000 * spent) if spent else 'failed',
                               format_value(multiple, 'x') if spent else '']))
        if multiple and name != TTA_VARIANTS[0][0]:
            clauses.append('%s costs %.2fx the plain time for %.2fx its pixels (%.2fx the '
                           'time per pixel)' % (name, multiple, pixels, multiple / pixels))
    note = ('In this run ' + '; '.join(clauses) + '.') if clauses else None
    return rows, note


def tta_table(run):
    """The cost of test-time augmentation: the float32 model's ms per image with each of
    TTA_VARIANTS, against the plain prediction."""
    measure.log('test-time augmentation')
    seconds = run.attempt('test-time augmentation', run.in_child, time_tta) or {}
    rows, note = tta_rows(seconds)
    run.raw['tta_ms_per_image'] = {name: 1000 * value for name, value in seconds.items()}
    notes = ['The float32 model of the inference rows, in one fresh process, on one random '
             '%dx%d image at a time through predict_outputs (as `main.py predict -bs 1` with '
             '`--flip` and `--scales`), the variants in turn, so that a change in the '
             'machine\'s speed falls on all alike. Views: the images the network runs per '
             'image; pixels: theirs, each padded to multiples of %d, over the plain view\'s. '
             'Costs, not targets.' % (IMAGE_SHAPE + (fcn8vgg16.STRIDE,))]
    run.tables.append(Table('Test-time augmentation at %dx%d, float32, batch 1' % IMAGE_SHAPE,
                            ['inference', 'views', 'pixels', 'ms per image', 'x plain'], rows,
                            notes + ([note] if note else [])))


# ---------------------------------------------------------------------------- scoring

def val_pairs(count):
    """(image paths, label paths) of the first count images of the demo val split."""
    images_glob, labels_dir = models.demo_split('val')
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
        label = data_loader.to_train_ids(data_loader.read_label(label_path, label_set),
                                         label_path, label_set)
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


def score_kind(run, folder, kind, score):
    """_score_and_save of one exported model, loaded for it (a row process)."""
    model = models.load_model(folder, kind)
    try:
        return _score_and_save(model, *score)
    finally:
        model.close()


def _child_scores(run, kind):
    """score_model's (predictions, confusion matrix, ms per image) of one exported model on
    run.score_split, in a fresh process."""
    score = _score_spec(run, kind)
    return _read_scores(score[-1], *run.in_child(score_kind, run.models.folder(kind), kind,
                                                 score))


def agreement(predictions, reference):
    """The share of pixels whose class is the reference's."""
    same = sum(int(np.sum(a == b)) for a, b in zip(predictions, reference))
    return same / sum(a.size for a in reference)


# ---------------------------------------------------------------------------- export section

def export_quality_rows(name, scores, frozen, prefix):
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
        run.score_split = val_pairs(run.settings.val_images)
    image_paths, _ = run.score_split
    scores = {}
    for name, kind in EXPORTED_KINDS.items():
        if kind in run.scores:  # scored by the process that timed it
            scores[name] = run.scores[kind]
            continue
        measure.log('export comparison: %s on %d val images' % (name, len(image_paths)))
        scores[name] = run.attempt('export comparison, %s' % name, _child_scores, run, kind)
    rows = _export_size_rows(run.models.stats)
    for name, prefix in (('frozen', None), ('optimised', 'optimised'),
                         ('int8 TFLite', 'tflite')):
        if scores[name] is not None:
            rows += export_quality_rows(name, scores[name], scores['frozen'], prefix)
    run.raw['export'] = {name: dict(mean_iou=helper.mean_iou(score[1]), ms_per_image=score[2])
                         for name, score in scores.items() if score is not None}
    run.tables.append(Table(title, ['model', 'measurement', 'value'], rows, [
        'Model %s, %d val images predicted one at a time (ms: median after the first), each '
        'model in a fresh process: the one that timed it in the inference section, when that '
        'section ran.' % (run.models.model_dir, len(image_paths))]))


# ---------------------------------------------------------------------------- video section

def time_video(run, folder, video_in, batch_size, kind='float'):
    """{'frames', 'model_seconds', 'video_seconds'} of the model of kind in a row process: the
    model alone (predict_batch, the frames decoded beforehand, after one warm-up batch) and
    video.segment_video, decoding, counting and encoding included, on the same frames."""
    reader = imageio_ffmpeg.read_frames(video_in)
    try:
        width, height = next(reader)['size']
        frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
    finally:
        reader.close()
    model = models.load_model(folder, kind)
    try:
        predict.predict_batch(model, frames[:batch_size], batch_size=batch_size)
        started = time.perf_counter()
        for start in range(0, len(frames), batch_size):
            predict.predict_batch(model, frames[start:start + batch_size], batch_size=batch_size)
        model_seconds = time.perf_counter() - started
        result = video.segment_video(model, video_in, os.path.join(run.work_dir, 'video.mp4'),
                                     batch_size=batch_size, overwrite=True)
    finally:
        model.close()
    return dict(frames=len(frames), model_seconds=model_seconds,
                video_seconds=result['seconds'])


VIDEO_KINDS = (('float32', 'float'), ('int8 TFLite', 'tflite'))
# The original tool's README: 5 frames/s at 512x256 on a GTX 1080 Ti.
ORIGINAL_VIDEO_ROW = ['the original tool on a GTX 1080 Ti, 512x256 (its README)', '', 1, '5.00',
                      '']


def video_rows(name, reply, batch_size):
    """The model alone's and the video's frames per second, the video's share the target's."""
    if not reply:
        return [table_row([name, 'video', batch_size, 'failed', ''])]
    model_rate = reply['frames'] / reply['model_seconds']
    video_rate = reply['frames'] / reply['video_seconds']
    return [table_row([name, 'model alone (frames decoded beforehand)', batch_size,
                       '%.2f' % model_rate, '']),
            table_row([name, '`video` (decode, model, overlay, encode)', batch_size,
                       '%.2f' % video_rate, format_value(video_rate / model_rate, '%')],
                      video_rate / model_rate, 'video_throughput',
                      label='%s, %s' % (TARGETS['video_throughput'].label, name))]


def video_section(run):
    """`video` on the demo video against the model alone, float32 and int8 TFLite, batch 1."""
    video_in = models.demo_video()
    rows = []
    for name, kind in VIDEO_KINDS:
        measure.log('video on %s, %s' % (video_in, name))
        reply = run.attempt('video, %s' % name, lambda: run.in_child(
            time_video, run.models.folder(kind), video_in, 1, kind))
        rows += video_rows(name, reply, 1)
        if reply:
            run.raw.setdefault('video_frames_per_second', {})[kind] = {
                'model': reply['frames'] / reply['model_seconds'],
                'video': reply['frames'] / reply['video_seconds']}
    rows.append(table_row(ORIGINAL_VIDEO_ROW))
    run.tables.append(Table('Video', ['model', 'what', 'batch', 'frames/s',
                                      'of the model alone\'s'], rows, [
        'The demo video (%s), its frames resized to the model\'s %dx%d, in one fresh process '
        'per model: the model alone on the frames decoded beforehand, then `video`\'s '
        'segment_video on the same file, counting its frames before and after included.'
        % ((os.path.basename(video_in),) + IMAGE_SHAPE)]))
