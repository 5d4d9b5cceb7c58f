"""metrics.py: accumulate, the metrics (worked out by hand, and checked against the official
Cityscapes evaluator of cityscapesscripts), the terminal table, the report files and the
TensorBoard scalars."""
import copy
import csv
import glob
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import cityscape_labels
import helper
from roadseg.apps import metrics
from helper import UserError
import synthetic

tf1 = tf.compat.v1

# Three classes, rows ground truth, columns prediction. Class 2 is predicted twice but never in
# the ground truth. By hand, with row sums (8, 4, 0), column sums (6, 4, 2), total 12:
#   IoU 0 = 5 / (8 + 6 - 5) = 5/9;  IoU 1 = 3 / (4 + 4 - 3) = 3/5;  IoU 2 = 0 / (0 + 2 - 0) = 0
#   mean IoU = (5/9 + 3/5 + 0) / 3 = (25/45 + 27/45) / 3 = 52/135
#   pixel accuracy = (5 + 3) / 12 = 2/3
#   accuracy 0 = 5/8, accuracy 1 = 3/4, class 2 undefined: mean class accuracy = 11/16
#   fwIoU = 8/12 * 5/9 + 4/12 * 3/5 + 0 * 0 = 10/27 + 1/5 = 77/135
KNOWN_CONFUSION = np.array([[5, 1, 2],
                            [1, 3, 0],
                            [0, 0, 0]], np.int64)


def _tiny_label_set(names=('a', 'b', 'c'), categories=None):
    return cityscape_labels.LabelSet(
        name='tiny', class_names=list(names),
        colors=np.array([(200, 0, 0), (0, 200, 0), (0, 0, 200)][:len(names)], np.uint8),
        id_to_train_id=np.arange(256, dtype=np.uint8), train_id_to_id=None,
        categories=categories)


# ------------------------------------------------------------------------------------ accumulate

def test_accumulate_counts_pairs_and_leaves_ignored_pixels_out():
    labels = np.array([[0, 0, 1], [2, 255, 255]], np.uint8)
    predictions = np.array([[0, 1, 1], [0, 2, 0]], np.int64)
    confusion = np.zeros((3, 3), np.int64)
    result = metrics.accumulate(confusion, labels, predictions, 3)
    assert result is confusion
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 0], [1, 0, 0]])
    # Whatever is predicted on ignored pixels changes nothing.
    again = metrics.accumulate(np.zeros((3, 3), np.int64), labels,
                               np.array([[0, 1, 1], [0, 1, 1]]), 3)
    np.testing.assert_array_equal(again, confusion)


def test_accumulate_over_images_equals_one_over_their_concatenation():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (4, 16, 24)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = 255
    predictions = rng.integers(0, 5, labels.shape).astype(np.uint8)
    one_by_one = np.zeros((5, 5), np.int64)
    for label, prediction in zip(labels, predictions):
        metrics.accumulate(one_by_one, label, prediction, 5)
    batch = metrics.accumulate(np.zeros((5, 5), np.int64), labels, predictions, 5)
    together = metrics.accumulate(np.zeros((5, 5), np.int64), np.concatenate(labels, 1),
                                  np.concatenate(predictions, 1), 5)
    np.testing.assert_array_equal(one_by_one, batch)
    np.testing.assert_array_equal(one_by_one, together)
    assert one_by_one.sum() == np.count_nonzero(labels != 255)


@pytest.mark.parametrize('labels, predictions, shown', [
    ([[0, 1]], [[0, 3]], 'prediction 3'), ([[0, 1]], [[-1, 0]], 'prediction -1'),
    ([[0, 7]], [[0, 0]], 'label 7'), ([[0, 1]], [[0, 1, 2]], '(1, 3)')])
def test_accumulate_rejects_bad_values(labels, predictions, shown):
    with pytest.raises(UserError, match=re.escape(shown)) as error:
        metrics.accumulate(np.zeros((3, 3), np.int64), np.array(labels), np.array(predictions), 3)
    assert '\n' not in str(error.value)


# ------------------------------------------------------------------------------ compute_metrics

def test_known_confusion_gives_the_hand_computed_numbers():
    result = metrics.compute_metrics(KNOWN_CONFUSION, _tiny_label_set())
    assert result['per_class_iou'] == pytest.approx({'a': 5 / 9, 'b': 3 / 5, 'c': 0.0})
    assert list(result['per_class_iou']) == ['a', 'b', 'c']
    assert result['mean_iou'] == pytest.approx(52 / 135)
    assert result['pixel_accuracy'] == pytest.approx(2 / 3)
    assert result['per_class_accuracy'] == {'a': pytest.approx(5 / 8), 'b': pytest.approx(3 / 4),
                                            'c': None}
    assert result['mean_class_accuracy'] == pytest.approx(11 / 16)
    assert result['frequency_weighted_iou'] == pytest.approx(77 / 135)
    assert result['num_pixels'] == 12
    assert 'per_category_iou' not in result and 'mean_category_iou' not in result
    # The training-time helpers use the same definitions.
    assert result['mean_iou'] == pytest.approx(helper.mean_iou(KNOWN_CONFUSION))
    assert result['pixel_accuracy'] == pytest.approx(helper.pixel_accuracy(KNOWN_CONFUSION))


def test_perfect_prediction_scores_one_and_absent_classes_none():
    labels = np.array([[0, 0, 2], [2, 2, 255]], np.uint8)
    predictions = np.where(labels == 255, 1, labels)  # 'b' predicted only on an ignored pixel
    confusion = metrics.accumulate(np.zeros((3, 3), np.int64), labels, predictions, 3)
    result = metrics.compute_metrics(confusion, _tiny_label_set())
    assert result['per_class_iou'] == {'a': 1.0, 'b': None, 'c': 1.0}
    assert result['per_class_accuracy'] == {'a': 1.0, 'b': None, 'c': 1.0}
    for key in ('mean_iou', 'pixel_accuracy', 'mean_class_accuracy', 'frequency_weighted_iou'):
        assert result[key] == pytest.approx(1.0)
    assert result['num_pixels'] == 5


def test_compute_metrics_rejects_an_empty_or_mismatched_matrix():
    with pytest.raises(UserError, match='no labelled pixel'):
        metrics.compute_metrics(np.zeros((3, 3), np.int64), _tiny_label_set())
    with pytest.raises(UserError, match=r'\(4, 4\).*3 classes'):
        metrics.compute_metrics(np.ones((4, 4), np.int64), _tiny_label_set())


def test_category_iou_by_hand_on_the_benchmark_classes():
    label_set = cityscape_labels.benchmark_label_set()
    road, sidewalk, car = (label_set.class_names.index(name)
                           for name in ('road', 'sidewalk', 'car'))
    # truth: 4 road, 2 sidewalk, 2 car. Predicted: road 3x road + 1x sidewalk, sidewalk 2x
    # sidewalk, car 1x car + 1x road.
    labels = np.array([road] * 4 + [sidewalk] * 2 + [car] * 2, np.uint8)[None]
    predictions = np.array([road, road, road, sidewalk, sidewalk, sidewalk, car, road])[None]
    confusion = metrics.accumulate(np.zeros((19, 19), np.int64), labels, predictions, 19)
    result = metrics.compute_metrics(confusion, label_set)
    # flat (road + sidewalk): TP 3 + 1 + 2 = 6 (road as sidewalk is right at category level),
    # FN 0, FP 1 (car predicted road): 6/7. vehicle: TP 1, FN 1, FP 0: 1/2. Others: absent.
    assert list(result['per_category_iou']) == [
        'flat', 'construction', 'object', 'nature', 'sky', 'human', 'vehicle']
    assert result['per_category_iou']['flat'] == pytest.approx(6 / 7)
    assert result['per_category_iou']['vehicle'] == pytest.approx(1 / 2)
    assert all(result['per_category_iou'][name] is None
               for name in ('construction', 'object', 'nature', 'sky', 'human'))
    assert result['mean_category_iou'] == pytest.approx((6 / 7 + 1 / 2) / 2)
    # At class level road is hurt by the sidewalk confusion: 3 / (4 + 4 - 3).
    assert result['per_class_iou']['road'] == pytest.approx(3 / 5)


# ------------------------------------------------------------- the official Cityscapes evaluator

def _write_cityscapes_pair(root, index, label_ids, predicted_ids):
    name = 'aachen_%06d_000019' % index
    gt_dir, pred_dir = os.path.join(root, 'gtFine', 'val', 'aachen'), os.path.join(root, 'pred')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(pred_dir, exist_ok=True)
    gt_path = os.path.join(gt_dir, name + '_gtFine_labelIds.png')
    pred_path = os.path.join(pred_dir, name + '_pred_labelIds.png')
    Image.fromarray(label_ids.astype(np.uint8)).save(gt_path)
    Image.fromarray(predicted_ids.astype(np.uint8)).save(pred_path)
    return gt_path, pred_path


def _random_scenes(rng, prediction_ids, count=3, shape=(64, 128)):
    """Blocky label-id images (8x8 blocks of ids 0-33, bus never) and noisy predictions.

    Predictions copy the truth where it is one of prediction_ids, with 30 % of pixels replaced
    by a random id from prediction_ids; 'train' is never in the truth but sometimes predicted.
    """
    present = np.array([i for i in range(34) if i not in (28, 31)])  # bus, train
    for _ in range(count):
        blocks = rng.choice(present, (shape[0] // 8, shape[1] // 8))
        label_ids = np.kron(blocks, np.ones((8, 8), np.int64))
        noise = rng.choice(prediction_ids, shape)
        keep = np.isin(label_ids, prediction_ids) & (rng.random(shape) > 0.3)
        yield label_ids, np.where(keep, label_ids, noise)


def _official_scores(tmp_path, monkeypatch, pairs):
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
    except ImportError:
        synthetic.unavailable('cityscapesscripts is not installed (requirements-dev.txt)')
    monkeypatch.chdir(tmp_path)  # nothing of the script's may land in the repository
    args = copy.copy(official.args)
    args.evalInstLevelScore = False  # no *_instanceIds.png needed
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.exportFile = str(tmp_path / 'result.json')
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ''
    gt_paths, pred_paths = zip(*pairs)
    return official.evaluateImgLists(list(pred_paths), list(gt_paths), args)


def _ours(pairs, label_set):
    """Our metrics from the same files, mapped to train ids as the data loader does."""
    confusion = np.zeros((label_set.num_classes,) * 2, np.int64)
    for gt_path, pred_path in pairs:
        labels = label_set.id_to_train_id[np.array(Image.open(gt_path))]
        predictions = label_set.id_to_train_id[np.array(Image.open(pred_path))]
        metrics.accumulate(confusion, labels, predictions, label_set.num_classes)
    return metrics.compute_metrics(confusion, label_set)


def _same(ours, official_value):
    if ours is None:
        return np.isnan(official_value)
    return abs(ours - official_value) < 1e-6


def test_agrees_with_the_official_cityscapes_evaluator(tmp_path, monkeypatch):
    label_set = cityscape_labels.benchmark_label_set()
    rng = np.random.default_rng(7)
    class_ids = np.array([i for i in label_set.train_id_to_id if i != 28])  # bus never predicted
    pairs = [_write_cityscapes_pair(str(tmp_path), i, *scene)
             for i, scene in enumerate(_random_scenes(rng, class_ids))]
    official = _official_scores(tmp_path, monkeypatch, pairs)
    ours = _ours(pairs, label_set)
    # The edge cases are really there: bus is in neither, train only predicted.
    assert ours['per_class_iou']['bus'] is None and ours['per_class_iou']['train'] == 0.0
    for name, iou in ours['per_class_iou'].items():
        assert _same(iou, official['classScores'][name]), name
    assert _same(ours['mean_iou'], official['averageScoreClasses'])
    assert np.isnan(official['categoryScores']['void']) and 'void' not in ours['per_category_iou']
    for name, iou in ours['per_category_iou'].items():
        assert _same(iou, official['categoryScores'][name]), name
    assert _same(ours['mean_category_iou'], official['averageScoreCategories'])
    assert not os.path.exists(str(tmp_path / 'result.json'))  # JSON output really off


def test_cityscapes35_category_iou_is_the_official_one(tmp_path, monkeypatch):
    """With all 35 labels as classes, ignored-in-eval ones are predicted too (train id = id)."""
    label_set = cityscape_labels.all_labels_label_set()
    rng = np.random.default_rng(8)
    pairs = [_write_cityscapes_pair(str(tmp_path), i, *scene)
             for i, scene in enumerate(_random_scenes(rng, np.arange(34)))]
    official = _official_scores(tmp_path, monkeypatch, pairs)
    ours = _ours(pairs, label_set)
    assert list(ours['per_category_iou']) == [
        'flat', 'construction', 'object', 'nature', 'sky', 'human', 'vehicle']
    for name, iou in ours['per_category_iou'].items():
        assert _same(iou, official['categoryScores'][name]), name
    assert _same(ours['mean_category_iou'], official['averageScoreCategories'])
    # Class IoU is the set's own: parking has one here, none in the benchmark.
    assert ours['per_class_iou']['parking'] is not None
    assert np.isnan(official['classScores']['parking'])


# ------------------------------------------------------------------------- table, report, summaries

def _benchmark_example():
    label_set = cityscape_labels.benchmark_label_set()
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 19, (2, 32, 64)).astype(np.uint8)
    labels[labels == 6] = 255  # traffic light absent from the truth ...
    noise = rng.integers(0, 19, labels.shape)
    predictions = np.where(rng.random(labels.shape) < 0.8, labels, noise)
    predictions[predictions == 255] = 0
    predictions[predictions == 6] = 5  # ... and never predicted
    confusion = metrics.accumulate(np.zeros((19, 19), np.int64), labels, predictions, 19)
    return label_set, confusion, metrics.compute_metrics(confusion, label_set)


def test_format_table_lists_every_class_and_the_summary():
    label_set, _, result = _benchmark_example()
    table = metrics.format_table(result)
    for name in label_set.class_names + ['flat', 'vehicle', 'mean IoU', 'mean category IoU',
                                         'pixel accuracy', 'frequency-weighted IoU']:
        assert name in table
    assert '%.1f' % (100 * result['mean_iou']) in table
    assert '18 of 19 classes' in table
    traffic_light = next(line for line in table.splitlines() if line.startswith('traffic light'))
    assert traffic_light.split()[2:] == ['-', '-']


def test_write_report_files(tmp_path):
    label_set, confusion, result = _benchmark_example()
    run_dir = str(tmp_path / 'run')
    metrics.write_report(run_dir, result, confusion, label_set)
    assert sorted(os.listdir(run_dir)) == sorted(metrics.REPORT_FILES)  # no temporaries left

    with open(os.path.join(run_dir, 'metrics.json')) as f:
        saved = json.load(f)
    for key in ('mean_iou', 'pixel_accuracy', 'mean_class_accuracy', 'frequency_weighted_iou',
                'mean_category_iou', 'num_pixels'):
        assert saved[key] == pytest.approx(result[key])
    assert saved['per_class_iou'] == result['per_class_iou']
    assert saved['per_class_iou']['traffic light'] is None
    assert saved['per_category_iou'] == result['per_category_iou']
    assert saved['class_names'] == label_set.class_names

    with open(os.path.join(run_dir, 'confusion_matrix.csv'), newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == label_set.class_names
    assert [row[0] for row in rows[1:]] == label_set.class_names
    np.testing.assert_array_equal(np.array([row[1:] for row in rows[1:]], np.int64), confusion)

    bars = Image.open(os.path.join(run_dir, 'iou_per_class.png'))
    heat = Image.open(os.path.join(run_dir, 'confusion_matrix.png'))
    assert bars.format == heat.format == 'PNG' and bars.mode == heat.mode == 'RGB'
    assert 300 < bars.width < 1200 and 19 * 15 < bars.height < 1000
    assert 19 * 20 < heat.width < 1200 and 19 * 20 < heat.height < 1200
    # The road bar is drawn in the road colour.
    assert tuple(label_set.colors[0]) in {colour for _, colour in bars.getcolors(1 << 20)}

    with pytest.raises(UserError, match='metrics.json already exists'):
        metrics.write_report(run_dir, result, confusion, label_set)


def test_write_report_draws_the_35_class_set(tmp_path):
    label_set = cityscape_labels.all_labels_label_set()
    confusion = np.diag(np.arange(1, 36)).astype(np.int64)
    metrics.write_report(str(tmp_path), metrics.compute_metrics(confusion, label_set), confusion,
                         label_set)
    heat = Image.open(str(tmp_path / 'confusion_matrix.png'))
    assert 35 * 15 < heat.width < 1400 and 35 * 15 < heat.height < 1400
    assert sorted(os.listdir(str(tmp_path))) == sorted(metrics.REPORT_FILES)  # no temporary


def test_write_summaries_reads_back(tmp_path):
    _, _, result = _benchmark_example()
    metrics.write_summaries(str(tmp_path), result, step=7)
    values = {}
    for path in glob.glob(str(tmp_path / 'events.out.tfevents.*')):
        for event in tf1.train.summary_iterator(path):
            for value in event.summary.value:
                assert event.step == 7
                values[value.tag] = value.simple_value
    for key in ('mean_iou', 'pixel_accuracy', 'mean_class_accuracy', 'frequency_weighted_iou',
                'mean_category_iou'):
        assert values[key] == pytest.approx(result[key], abs=1e-6)
    assert values['iou/road'] == pytest.approx(result['per_class_iou']['road'], abs=1e-6)
    assert values['category_iou/flat'] == pytest.approx(result['per_category_iou']['flat'],
                                                        abs=1e-6)
    assert 'iou/traffic_light' not in values  # undefined: not written
    assert 'iou/traffic_sign' in values
