"""predict and evaluate tell the truth, on a tiny trained model and images of mixed sizes that are
not multiples of 32: evaluate's numbers are the official Cityscapes evaluator's on the labelIds
files predict writes; the validation that training logs is evaluate's on the images validation
sees (README: the centre crop of the covering scale); predict's files hold the model's own
predictions of their own image; and evaluate's confusion matrix pairs every prediction with its
own label."""
import copy
import glob
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data_loader
import helper
import main
import synthetic
from roadseg.apps import evaluate
from roadseg.data import demo_data
from roadseg.deploy import loader
from helper import UserError

tf1 = tf.compat.v1
LABEL_SET = data_loader.get_label_set('cityscapes')
NETWORK_SHAPE = (64, 128)  # synthetic.train_flags' --image_shape
TRAIN_IMAGES = 8
# Consecutive pairs of one size, so that -bs 2 batches two images both with and without a resize
# (70x150, 64x128); 70x150 and 100x130 are padded with --keep_size, 64x128 is not.
TEST_SIZES = ((70, 150), (70, 150), (100, 130), (64, 128), (64, 128))
# Validation sees 64x128 as it is and 96x192 resized to 64x128; 90x140 and 40x100 it scales to
# cover 64x128 (82x128, and 64x160 enlarged) and centre-crops: even margins, no rounding to choose.
VAL_SIZES = ((64, 128), (96, 192), (90, 140), (40, 100))


def _write_scenes(root, split, sizes, seed):
    for index, (height, width) in enumerate(sizes):
        image, label_ids = demo_data.draw_scene(np.random.default_rng([seed, index]), height,
                                                width)
        synthetic.write_sample(root, 'town', index, image, label_ids, split=split)


def _cli(runs_dir, *flags):
    """Runs main.py with flags into a runs folder of its own; returns the one run folder."""
    assert main.main(list(flags) + ['--gpu', '0', '-rd', str(runs_dir)]) == 0
    (run_dir,) = glob.glob(os.path.join(str(runs_dir), '*'))
    return run_dir


def _test_images(root):
    return sorted(glob.glob(os.path.join(root, 'leftImg8bit', 'test', '*', '*.png')))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny FCN-8s trained on drawn street scenes, validated after each epoch on VAL_SIZES
    scenes, and the test scenes of TEST_SIZES. The model, loaded, predicts at least three
    classes on the test images, resized or at their own size: agreement with a model that says
    one class everywhere would prove nothing."""
    work = tmp_path_factory.mktemp('truths')
    root = str(work / 'scenes')
    _write_scenes(root, 'train', [NETWORK_SHAPE] * TRAIN_IMAGES, 1)
    _write_scenes(root, 'val', VAL_SIZES, 2)
    _write_scenes(root, 'test', TEST_SIZES, 3)
    model_folder = str(work / 'model')
    # 16 steps on unaugmented crops teach the tiny network several classes in seconds.
    flags = synthetic.train_flags(root, work, '-ep', '8', '-lr', '2e-3', '--seed', '3',
                                  '--no_augment', '--weight_decay', '0', '-md', model_folder)
    assert main.main(flags, network=synthetic.TINY_NETWORK) == 0
    model = loader.Model(model_folder)
    images = [data_loader.read_image(path) for path in _test_images(root)]
    for keep_size in (False, True):
        class_ids = np.concatenate([_by_hand(model, [image], keep_size)[0].ravel()
                                    for image in images])
        assert len(np.unique(class_ids)) >= 3, np.unique(class_ids)
    yield types.SimpleNamespace(work=work, root=root, model_folder=model_folder, model=model,
                                images=os.path.join(root, 'leftImg8bit', 'test', '*', '*.png'),
                                labels=os.path.join(root, 'gtFine', 'test'))
    model.close()


@pytest.fixture(scope='module')
def predicted(trained):
    """predict --save_labels's run folder for (keep_size, batch size), each run once."""
    runs = {}

    def run(keep_size, batch_size):
        if (keep_size, batch_size) not in runs:
            runs[keep_size, batch_size] = _cli(
                trained.work / ('predict_%s_%d' % (keep_size, batch_size)), 'predict',
                '-ip', trained.images, '-md', trained.model_folder, '--save_labels',
                '-bs', str(batch_size), *(['--keep_size'] if keep_size else []))
        return runs[keep_size, batch_size]
    return run


def _evaluate(trained, name, images, labels, *flags):
    """evaluate's metrics.json for the images and labels."""
    run_dir = _cli(trained.work / name, 'evaluate', '-ip', images, '-lp', labels,
                   '-md', trained.model_folder, *flags)
    return helper.read_json(os.path.join(run_dir, 'metrics.json'))


# ----------------------------------------------------------------- the model called by hand

def _network_input(image, keep_size):
    """What the README says the network sees: the image resized bilinearly to the model's
    shape, or with --keep_size padded to multiples of 32 (at the bottom and right, repeating
    the edge pixels, as data_loader.network_input documents)."""
    if not keep_size:
        return np.asarray(Image.fromarray(image).resize(NETWORK_SHAPE[::-1], Image.BILINEAR))
    height, width = image.shape[:2]
    return np.pad(image, ((0, -height % 32), (0, -width % 32), (0, 0)), mode='edge')


def _by_hand(model, images, keep_size):
    """Class ids of same-size images in one call of Model.predict, brought back to their size:
    the padding cut off, or resized with nearest neighbour."""
    height, width = images[0].shape[:2]
    outputs = model.predict(np.stack([_network_input(image, keep_size) for image in images]))
    if keep_size:
        return [output[:height, :width] for output in outputs]
    return [np.asarray(Image.fromarray(output).resize((width, height), Image.NEAREST))
            for output in outputs]


def _readme_batches(sizes, batch_size):
    """'-bs batches consecutive images of the same size': lists of indices."""
    batches = []
    for index, size in enumerate(sizes):
        if batches and len(batches[-1]) < batch_size and sizes[batches[-1][0]] == size:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


# -------------------------------------------------------------- 1. evaluate = predict + official

def _official_scores(tmp_path, monkeypatch, prediction_paths, truth_paths):
    """cityscapesscripts' evalPixelLevelSemanticLabeling on pairs of labelIds files. Not
    importorskip: the evaluator is a test requirement, and a missing one fails."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
    monkeypatch.chdir(tmp_path)  # nothing of the script's may land in the repository
    args = copy.copy(official.args)
    args.evalInstLevelScore = False  # no *_instanceIds.png needed
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ''
    return official.evaluateImgLists(list(prediction_paths), list(truth_paths), args)


def _same(ours, official_value):
    if ours is None:
        return bool(np.isnan(official_value))
    return abs(ours - official_value) < 1e-9


@pytest.mark.end_to_end
@pytest.mark.parametrize('keep_size', [False, True])
def test_evaluate_gives_the_official_evaluators_scores_of_predicts_label_files(
        trained, predicted, tmp_path, monkeypatch, keep_size):
    """Same model, same images of mixed sizes, -bs 2, resized or --keep_size: evaluate's
    metrics.json holds, class by class and category by category, the IoU that cityscapesScripts
    computes from the labelIds PNGs of predict --save_labels and the gtFine labelIds."""
    run_dir = predicted(keep_size, 2)
    images = _test_images(trained.root)
    truths = [synthetic.label_path(trained.root, 'town', index, 'test')
              for index in range(len(images))]
    predictions = [os.path.join(run_dir, 'labelIds', os.path.basename(path)) for path in images]
    official = _official_scores(tmp_path, monkeypatch, predictions, truths)
    ours = _evaluate(trained, 'evaluate_%s' % keep_size, trained.images, trained.labels,
                     '-bs', '2', *(['--keep_size'] if keep_size else []))
    scored = [name for name, iou in ours['per_class_iou'].items() if iou]
    assert len(scored) >= 3, ours['per_class_iou']  # several classes both found and scored
    assert ours['class_names'] == list(LABEL_SET.class_names)  # the JSON's keys are sorted
    assert set(ours['per_class_iou']) == set(LABEL_SET.class_names)
    for name, iou in ours['per_class_iou'].items():
        assert _same(iou, official['classScores'][name]), (name, iou,
                                                           official['classScores'][name])
    assert _same(ours['mean_iou'], official['averageScoreClasses'])
    for name, iou in ours['per_category_iou'].items():
        assert _same(iou, official['categoryScores'][name]), name
    assert _same(ours['mean_category_iou'], official['averageScoreCategories'])
    assert ours['num_pixels'] == sum(
        np.count_nonzero(LABEL_SET.id_to_train_id[np.asarray(Image.open(path))] != 255)
        for path in truths)


# ------------------------------------------------------ 2. per-epoch validation = evaluate

def _last_validation(summary_dir):
    """{tag: value} of the val/ scalars that training logged at its last validation."""
    logged = {}
    for path in glob.glob(os.path.join(str(summary_dir), '**', 'events.*'), recursive=True):
        for event in tf1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag in ('val/mean_iou', 'val/pixel_accuracy'):
                    logged.setdefault(value.tag, []).append((event.step, value.simple_value))
    return {tag: max(values)[1] for tag, values in logged.items()}


def _centre_crop_of_covering_scale(array, resample):
    """README, Augmentation: 'Validation never augments: it takes the centre crop of the
    covering scale'. Scaled to just cover the network's shape, then its middle cut out."""
    height, width = array.shape[:2]
    scale = max(NETWORK_SHAPE[0] / height, NETWORK_SHAPE[1] / width)
    size = (int(round(height * scale)), int(round(width * scale)))
    scaled = np.asarray(Image.fromarray(array).resize(size[::-1], resample))
    top, left = (size[0] - NETWORK_SHAPE[0]) // 2, (size[1] - NETWORK_SHAPE[1]) // 2
    return scaled[top:top + NETWORK_SHAPE[0], left:left + NETWORK_SHAPE[1]]


@pytest.mark.end_to_end
def test_the_validation_logged_for_the_last_epoch_is_evaluate_on_the_images_it_sees(
        trained, tmp_path):
    """The README promises two things: validation scores the centre crop of the covering scale
    at the training size, evaluate whole images at their own size. So evaluate on those crops
    (written as files: 64x128 images are their own crop, the others are resized and cropped)
    must give the val mean IoU and pixel accuracy logged after the last epoch, with the
    model that training exported."""
    logged = _last_validation(trained.work / 'summaries')
    assert set(logged) == {'val/mean_iou', 'val/pixel_accuracy'}
    crops = str(tmp_path / 'crops')
    for index, _ in enumerate(VAL_SIZES):
        image = data_loader.read_image(synthetic.image_path(trained.root, 'town', index, 'val'))
        label = data_loader.read_label(synthetic.label_path(trained.root, 'town', index, 'val'))
        synthetic.write_sample(crops, 'town', index,
                               _centre_crop_of_covering_scale(image, Image.BILINEAR),
                               _centre_crop_of_covering_scale(label, Image.NEAREST), split='val')
    ours = _evaluate(trained, 'evaluate_crops',
                     os.path.join(crops, 'leftImg8bit', 'val', '*', '*.png'),
                     os.path.join(crops, 'gtFine', 'val'), '-bs', '2')
    # float32 summaries; the exported graph is the trained one frozen, so equal argmaxes.
    assert logged['val/mean_iou'] == pytest.approx(ours['mean_iou'], abs=1e-6)
    assert logged['val/pixel_accuracy'] == pytest.approx(ours['pixel_accuracy'], abs=1e-6)


# ---------------------------------------------------- 3. predict's files = the model's output

@pytest.mark.end_to_end
@pytest.mark.parametrize('batch_size', [1, 2])
@pytest.mark.parametrize('keep_size', [False, True])
def test_predicts_files_hold_the_models_predictions_of_their_own_image(
        trained, predicted, keep_size, batch_size):
    """Each image's trainIds, labelIds and overlay PNG, named as the image, are pixel for pixel
    Model.predict of that image (resized or padded as the README says, in the batches -bs
    makes of consecutive same-size images), its Cityscapes ids and helper.overlay in the label
    table's colours. Images of one size predict differently, so a swapped pair would show."""
    run_dir = predicted(keep_size, batch_size)
    paths = _test_images(trained.root)
    images = [data_loader.read_image(path) for path in paths]
    expected = [None] * len(paths)
    for batch in _readme_batches(TEST_SIZES, batch_size):
        for index, class_ids in zip(batch, _by_hand(trained.model, [images[i] for i in batch],
                                                    keep_size)):
            expected[index] = class_ids
    assert not np.array_equal(expected[0], expected[1])
    assert not np.array_equal(expected[3], expected[4])
    names = sorted(os.path.basename(path) for path in paths)
    for folder in ('overlays', 'trainIds', 'labelIds'):
        assert sorted(os.listdir(os.path.join(run_dir, folder))) == names, folder
    for path, image, class_ids in zip(paths, images, expected):
        name = os.path.basename(path)
        written = {folder: np.asarray(Image.open(os.path.join(run_dir, folder, name)))
                   for folder in ('overlays', 'trainIds', 'labelIds')}
        assert class_ids.shape == image.shape[:2]
        np.testing.assert_array_equal(written['trainIds'], class_ids, err_msg=name)
        np.testing.assert_array_equal(written['labelIds'], LABEL_SET.train_id_to_id[class_ids],
                                      err_msg=name)
        np.testing.assert_array_equal(written['overlays'],
                                      helper.overlay(image, class_ids, LABEL_SET.colors),
                                      err_msg=name)


# ------------------------------------------------- 4. evaluate's pairing and resizing, alone

class _StripesModel:
    """loader.Model's interface without TensorFlow: vertical stripes of class ids, 8 pixels
    wide, counting up from a class of the image's own (its top-left red value // 10), so each
    prediction tells which image it came from and where its columns were."""
    label_set = LABEL_SET
    image_shape = (32, 64)

    def __init__(self):
        self.input_shapes = []

    def predict(self, images):
        self.input_shapes.append(images.shape)
        first = images[:, 0, 0, 0].astype(np.int64) // 10
        stripes = first[:, None] + np.arange(images.shape[2])[None, :] // 8
        return np.ascontiguousarray(np.broadcast_to(
            (stripes % 19)[:, None, :], images.shape[:3]).astype(np.uint8))


def _stripes(first, height, width):
    return ((first + np.arange(width) // 8) % 19 * np.ones((height, 1))).astype(np.uint8)


def _confusion_by_hand(labels, predictions):
    confusion = np.zeros((19, 19), np.int64)
    for label, prediction in zip(labels, predictions):
        valid = label != 255
        np.add.at(confusion, (label[valid], prediction[valid]), 1)
    return confusion


@pytest.mark.parametrize('keep_size', [False, True])
def test_evaluate_pairs_each_prediction_with_its_own_label_at_the_labels_size(tmp_path,
                                                                             keep_size):
    """confusion_over reads images ahead in a thread and batches them, yet every prediction
    meets its own image's label: the same matrix, worked out by hand, at batch sizes 1 to 3,
    for images given out of name order. Without keep_size the network sees the model's
    shape and its stripes come back to the label's size by nearest neighbour; with it the
    padding is cut off."""
    rng = np.random.default_rng(5)
    sizes = {'c': (50, 70), 'a': (40, 100), 'b': (40, 100), 'd': (40, 100)}
    image_paths, label_paths, labels, predictions = [], [], [], []
    for order, (name, (height, width)) in enumerate(sizes.items()):
        red = 10 * (3 * order + 1) + 5
        image = np.full((height, width, 3), (red, 90, 40), np.uint8)
        label = rng.integers(0, 19, (height, width)).astype(np.uint8)
        label[rng.random((height, width)) < 0.2] = 255
        image_paths.append(synthetic.write_png(str(tmp_path / (name + '.png')), image))
        label_paths.append(synthetic.write_png(str(tmp_path / (name + '_labelTrainIds.png')),
                                               label))
        labels.append(label)
        if keep_size:
            predictions.append(_stripes(red // 10, height, width))
        else:
            predictions.append(np.asarray(Image.fromarray(_stripes(red // 10, 32, 64)).resize(
                (width, height), Image.NEAREST)))
    expected = _confusion_by_hand(labels, predictions)
    assert expected.sum() == sum(np.count_nonzero(label != 255) for label in labels)
    for batch_size in (1, 2, 3):
        model = _StripesModel()
        confusion = evaluate.confusion_over(model, image_paths, label_paths, keep_size,
                                            batch_size)
        np.testing.assert_array_equal(confusion, expected, err_msg='batch %d' % batch_size)
        if keep_size:
            assert all(shape[1] % 32 == shape[2] % 32 == 0 for shape in model.input_shapes)
        else:
            assert {shape[1:3] for shape in model.input_shapes} == {model.image_shape}
        # c alone, then the three 40x100 images in batches of at most batch_size
        assert [shape[0] for shape in model.input_shapes] == [1] + {
            1: [1, 1, 1], 2: [2, 1], 3: [3]}[batch_size]


def test_evaluate_refuses_a_label_of_another_size_than_its_image(tmp_path):
    """Predictions come back at the image's size; a label of another size is never resized to
    fit it: one line names both files and both sizes."""
    image = synthetic.write_png(str(tmp_path / 'a.png'), np.zeros((40, 100, 3), np.uint8))
    label = synthetic.write_png(str(tmp_path / 'a_labelTrainIds.png'),
                                np.zeros((40, 99), np.uint8))
    with pytest.raises(UserError, match=r'label .*a_labelTrainIds.png is 99x40 but its image '
                                        r'.*a.png is 100x40'):
        evaluate.confusion_over(_StripesModel(), [image], [label])
