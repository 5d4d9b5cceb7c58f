"""Segmentation metrics from one confusion matrix over a whole split, and their report.

The evaluate action adds every image into one int64 [C, C] confusion matrix (rows: ground-truth
train id, columns: predicted train id; pixels whose ground truth is the ignore id are left out),
then calls compute_metrics, format_table, write_report and write_summaries. Class and category
IoU follow the official Cityscapes evaluator, cityscapesscripts 2.3.0
evaluation/evalPixelLevelSemanticLabeling.py; tests/test_metrics.py checks them against it.
"""
import csv
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import cityscape_labels
import helper
from helper import UserError


REPORT_FILES = ('metrics.json', 'confusion_matrix.csv', 'iou_per_class.png',
                'confusion_matrix.png')
SUMMARY_SCALARS = ('mean_iou', 'pixel_accuracy', 'mean_class_accuracy', 'frequency_weighted_iou',
                   'mean_category_iou')


def accumulate(confusion, labels, predictions, num_classes, ignore_id=255):
    """Adds one image or a batch ([..., h, w] train ids) into confusion, int64 [C, C], in place.

    Returns confusion. Pixels labelled ignore_id count nowhere, whatever their prediction.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if confusion.shape != (num_classes, num_classes):
        raise UserError('confusion matrix is %s, expected (%d, %d)'
                        % (confusion.shape, num_classes, num_classes))
    if labels.shape != predictions.shape:
        raise UserError('labels %s and predictions %s differ in shape'
                        % (labels.shape, predictions.shape))
    valid = labels != ignore_id
    truth = labels[valid].astype(np.int64)
    for what, values in (('prediction', predictions), ('label', truth)):
        if values.size and not 0 <= values.min() <= values.max() < num_classes:
            bad = values.min() if values.min() < 0 else values.max()
            raise UserError('%s %d is not a class id in [0, %d)' % (what, bad, num_classes))
    # Pixel counts of each (truth, prediction) pair, truth-major: [C * C] -> [C, C].
    pairs = truth * num_classes + predictions[valid]
    confusion += np.bincount(pairs, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)
    return confusion


def _ratios(numerators, denominators):
    """numerator / denominator per class as floats, None where the denominator is 0."""
    return [float(n) / d if d > 0 else None for n, d in zip(numerators, denominators)]


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def compute_metrics(confusion, label_set):
    """Plain floats (None where undefined) from confusion [C, C], as a dict.

    Keys: num_pixels, pixel_accuracy, mean_iou, mean_class_accuracy, frequency_weighted_iou,
    per_class_iou and per_class_accuracy ({class name: value}, class order); with categories,
    also per_category_iou ({category: IoU}) and mean_category_iou.

    IoU = TP / (TP + FP + FN) over the whole split, as getIouScoreForLabel in the official
    script, and mean IoU is its getScoreAverage: the mean over classes whose IoU is defined
    (TP + FP + FN > 0). So a class absent from the ground truth but predicted somewhere has IoU
    0 and pulls the mean down; a class neither labelled nor predicted is left out (NaN there,
    None here). Predictions on ignored pixels are never false positives: those pixels are not
    in the matrix, as the official script skips ignored ground-truth rows. For the benchmark set
    the numbers are the official ones (tests/test_metrics.py); for 'cityscapes35' every one of
    the 35 classes is scored, ignored-in-eval or not, since the model was trained on them all.
    """
    confusion = np.asarray(confusion, np.int64)
    num_classes = label_set.num_classes
    if confusion.shape != (num_classes, num_classes):
        raise UserError('confusion matrix is %s, but label set %s has %d classes'
                        % (confusion.shape, label_set.name, num_classes))
    total = int(confusion.sum())
    if total == 0:
        raise UserError('no labelled pixel was evaluated: every ground-truth pixel is the ignore '
                        'id %d (wrong label files or label set %s?)'
                        % (label_set.ignore_id, label_set.name))
    true_positives = np.diag(confusion)
    truth, predicted = confusion.sum(1), confusion.sum(0)
    iou = _ratios(true_positives, truth + predicted - true_positives)
    accuracy = _ratios(true_positives, truth)
    names = list(label_set.class_names)
    metrics = {
        'num_pixels': total,
        'pixel_accuracy': helper.pixel_accuracy(confusion),
        'mean_iou': helper.mean_iou(confusion),
        'mean_class_accuracy': _mean(accuracy),
        # A class with undefined IoU has no ground-truth pixel, so it weighs 0 anyway.
        'frequency_weighted_iou': float(sum(
            count / total * value for count, value in zip(truth, iou) if value is not None)),
        'per_class_iou': dict(zip(names, iou)),
        'per_class_accuracy': dict(zip(names, accuracy)),
    }
    if label_set.categories is not None:
        metrics['per_category_iou'] = _category_iou(confusion, label_set)
        metrics['mean_category_iou'] = _mean(metrics['per_category_iou'].values())
    return metrics


def _evaluated_classes(label_set):
    """bool [C]: the classes the official script scores (not ignoreInEval in its table).

    Only the Cityscapes sets know ignoreInEval; every class of another set counts.
    """
    if label_set.name not in cityscape_labels.LABEL_SETS:
        return np.ones(label_set.num_classes, bool)
    return np.array([not cityscape_labels.NAME_TO_LABEL[name].ignore_in_eval
                     for name in label_set.class_names])


def _category_iou(confusion, label_set):
    """{category: IoU or None}, the official getIouScoreForCategory on a train-id matrix.

    A category's members are its classes that are not ignoreInEval; categories without any
    ('void') are left out, as the official average leaves out their NaN. For 'cityscapes' (19
    classes) this is the plain sum of the matrix into categories: road predicted as sidewalk is a
    true positive of 'flat'. For 'cityscapes35' the ignored-in-eval classes are classes of the
    set (they have their own IoU above) but we still score categories the official way, so the
    number is the benchmark's category IoU for those predictions: ground truth of an
    ignored-in-eval class (parking, guard rail, ...) counts nowhere, and predicting one counts
    as a false negative of the true category, even the same one (road predicted as parking).
    """
    evaluated = _evaluated_classes(label_set)
    categories = np.array(label_set.categories)
    result = {}
    for category in dict.fromkeys(categories[evaluated]):  # first-seen order, no duplicates
        members = evaluated & (categories == category)
        true_positives = confusion[members][:, members].sum()
        false_negatives = confusion[members].sum() - true_positives
        false_positives = confusion[evaluated & ~members][:, members].sum()
        union = true_positives + false_negatives + false_positives
        result[str(category)] = float(true_positives) / union if union > 0 else None
    return result


def _percent(value, width=7):
    return ('%*.1f' % (width, 100 * value)) if value is not None else '%*s' % (width, '-')


def format_table(metrics):
    """The per-class table and summary lines a user reads in the terminal."""
    classes = metrics['per_class_iou']
    name_width = max([len('frequency-weighted IoU')] + [len(name) for name in classes])
    lines = ['%-*s %7s %7s' % (name_width, 'class', 'IoU %', 'acc %')]
    lines += ['%-*s %s %s' % (name_width, name, _percent(iou),
                              _percent(metrics['per_class_accuracy'][name]))
              for name, iou in classes.items()]
    if 'per_category_iou' in metrics:
        lines += ['', '%-*s %7s' % (name_width, 'category', 'IoU %')]
        lines += ['%-*s %s' % (name_width, name, _percent(iou))
                  for name, iou in metrics['per_category_iou'].items()]
    defined = sum(iou is not None for iou in classes.values())
    lines += ['', '%-*s %s   (%d of %d classes)' % (name_width, 'mean IoU',
                                                    _percent(metrics['mean_iou']), defined,
                                                    len(classes))]
    if 'mean_category_iou' in metrics:
        lines.append('%-*s %s' % (name_width, 'mean category IoU',
                                  _percent(metrics['mean_category_iou'])))
    for title, key in (('pixel accuracy', 'pixel_accuracy'),
                       ('mean class accuracy', 'mean_class_accuracy'),
                       ('frequency-weighted IoU', 'frequency_weighted_iou')):
        lines.append('%-*s %s' % (name_width, title, _percent(metrics[key])))
    lines.append('%-*s %s' % (name_width, 'pixels evaluated', '{:,}'.format(metrics['num_pixels'])))
    return '\n'.join(lines)


def write_report(run_dir, metrics, confusion, label_set, inference=None):
    """metrics.json, confusion_matrix.csv, iou_per_class.png and confusion_matrix.png in run_dir.

    inference: how the predictions were made ({'scales', 'flip', 'tile', 'tile_overlap'},
    specs.Inference.record()), kept in metrics.json. Refuses to overwrite a report already there.
    """
    paths = [os.path.join(run_dir, name) for name in REPORT_FILES]
    existing = [path for path in paths if os.path.exists(path)]
    if existing:
        raise UserError('%s already exists: not overwriting it' % existing[0])
    os.makedirs(run_dir, exist_ok=True)
    confusion = np.asarray(confusion, np.int64)
    names = list(label_set.class_names)
    # write_json sorts the keys: class_names keeps the class order.
    helper.write_json(paths[0], dict(metrics, label_set=label_set.name, class_names=names,
                                     **(inference or {})))

    def write_csv(tmp):
        with open(tmp, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['truth \\ prediction'] + names)
            writer.writerows([name] + [int(count) for count in row]
                             for name, row in zip(names, confusion))
    helper.write_file(paths[1], write_csv)
    for path, image in zip(paths[2:], (_draw_iou_bars(metrics, label_set),
                                       _draw_confusion(confusion, label_set))):
        helper.write_file(path, lambda tmp: image.save(tmp, format='PNG'))


def _font(size):
    return ImageFont.load_default(size=size)  # Pillow's bundled TrueType font (Pillow >= 10.1)


def _draw_iou_bars(metrics, label_set, bar_width=400, row=22):
    """White canvas, one horizontal bar per class in its colour, IoU % at the bar's end."""
    font, small = _font(13), _font(11)
    names, ious = list(metrics['per_class_iou']), list(metrics['per_class_iou'].values())
    left = 16 + int(max(font.getlength(name) for name in names))
    top, width = 48, left + bar_width + 60
    image = Image.new('RGB', (width, top + row * len(names) + 40), 'white')
    draw = ImageDraw.Draw(image)
    bottom = top + row * len(names)
    draw.text((8, 8), 'IoU per class (%s, %d classes)' % (label_set.name, len(names)),
              fill='black', font=font)
    for tick in range(0, 101, 25):  # grid and axis labels
        x = left + bar_width * tick // 100
        draw.line([(x, top - 4), (x, bottom)], fill=(225, 225, 225))
        draw.text((x, bottom + 4), '%d %%' % tick, fill=(90, 90, 90), font=small, anchor='mt')
    if metrics['mean_iou'] is not None:  # dashed line at the mean IoU, behind bars and numbers
        x = left + round(bar_width * metrics['mean_iou'])
        for y in range(top - 4, bottom, 8):
            draw.line([(x, y), (x, min(y + 4, bottom))], fill=(200, 0, 0), width=2)
        draw.text((x, top - 8), 'mean IoU %.1f %%' % (100 * metrics['mean_iou']),
                  fill=(200, 0, 0), font=small, anchor='md')
    for i, (name, iou, colour) in enumerate(zip(names, ious, label_set.colors)):
        y = top + i * row
        draw.text((left - 8, y + row // 2), name, fill='black', font=font, anchor='rm')
        if iou is None:
            draw.text((left + 4, y + row // 2), 'n/a', fill=(150, 150, 150), font=small,
                      anchor='lm')
            continue
        end = left + round(bar_width * iou)
        outline = tuple(int(c * 0.6) for c in colour)  # keeps pale classes visible on white
        draw.rectangle([left, y + 3, max(end, left + 1), y + row - 4], fill=tuple(map(int, colour)),
                       outline=outline)
        value_at = (end + 5, y + row // 2)
        draw.rectangle(draw.textbbox(value_at, '%.1f' % (100 * iou), font=small, anchor='lm'),
                       fill='white')
        draw.text(value_at, '%.1f' % (100 * iou), fill='black', font=small, anchor='lm')
    return image


def _heat(value):
    """RGB for a fraction 0..1: white to dark blue."""
    low, high = np.array([255, 255, 255]), np.array([8, 48, 107])
    return tuple(int(c) for c in np.round(low + (high - low) * value))


def _draw_confusion(confusion, label_set):
    """Row-normalised confusion as a heat map: rows ground truth, columns prediction, cells %."""
    num_classes, names = label_set.num_classes, list(label_set.class_names)
    cell = 26 if num_classes <= 20 else 20
    font, small = _font(12), _font(10 if num_classes <= 20 else 9)
    label_width = 24 + int(max(font.getlength(name) for name in names))
    left, top = label_width, 40 + label_width
    size = cell * num_classes
    image = Image.new('RGB', (left + size + 12, top + size + 40), 'white')
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), 'Confusion matrix (%s): rows ground truth, columns prediction, %% of row'
              % label_set.name, fill='black', font=font)
    rows = confusion.sum(1, keepdims=True)
    fractions = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    for i, (name, colour) in enumerate(zip(names, label_set.colors)):
        middle = i * cell + cell // 2
        swatch = tuple(map(int, colour))
        draw.text((left - 18, top + middle), name, fill='black', font=font, anchor='rm')
        draw.rectangle([left - 13, top + middle - 4, left - 5, top + middle + 4], fill=swatch,
                       outline=(120, 120, 120))
        column = Image.new('RGB', (label_width, cell), 'white')  # drawn flat, turned upright
        column_draw = ImageDraw.Draw(column)
        column_draw.text((18, cell // 2), name, fill='black', font=font, anchor='lm')
        column_draw.rectangle([5, cell // 2 - 4, 13, cell // 2 + 4], fill=swatch,
                              outline=(120, 120, 120))
        image.paste(column.rotate(90, expand=True), (left + i * cell, top - label_width))
    for i in range(num_classes):
        for j in range(num_classes):
            box = [left + j * cell, top + i * cell, left + (j + 1) * cell, top + (i + 1) * cell]
            value = fractions[i, j]
            draw.rectangle(box, fill=_heat(value) if rows[i, 0] else (235, 235, 235),
                           outline=(230, 230, 230))
            if rows[i, 0] and round(100 * value) > 0:
                draw.text((box[0] + cell // 2, box[1] + cell // 2), '%d' % round(100 * value),
                          fill='white' if value > 0.5 else 'black', font=small, anchor='mm')
    draw.rectangle([left, top, left + size, top + size], outline=(80, 80, 80))
    draw.text((left, top + size + 10), 'grey rows: class absent from the ground truth; '
              'blank cells: under 0.5 %', fill=(90, 90, 90), font=_font(11))
    return image


def write_summaries(summary_dir, metrics, step=0):
    """The scalar metrics as TensorBoard scalars: mean_iou, ..., iou/<class>, category_iou/<cat>.

    Spaces in names become underscores (iou/traffic_light), as tf.summary names would.
    Undefined values (None) are not written.
    """
    import tensorflow as tf  # here: evaluate with a TFLite or ONNX model runs without it
    tf1 = tf.compat.v1
    scalars = [(key, metrics.get(key)) for key in SUMMARY_SCALARS]
    for prefix, key in (('iou/', 'per_class_iou'), ('category_iou/', 'per_category_iou')):
        scalars += [(prefix + name.replace(' ', '_'), value)
                    for name, value in metrics.get(key, {}).items()]
    summary = tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=value)
                                 for tag, value in scalars if value is not None])
    with tf.Graph().as_default():
        writer = tf1.summary.FileWriter(summary_dir)
        try:
            writer.add_summary(summary, step)
        finally:
            writer.close()
