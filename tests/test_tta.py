"""Test-time augmentation, sliding windows and saved probabilities, on a tiny FCN-8s with random
weights loaded as predict loads it: each against a plain numpy re-implementation that calls the
model once per view, and the default against the model's own argmax, bit for bit."""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data_loader
import fcn8vgg16
import helper
import synthetic
from helper import UserError
from roadseg import model_dir, specs
from roadseg.apps import evaluate, predict, tta
from roadseg.data import demo_data
from roadseg.deploy import export, loader, tflite_model

tf1 = tf.compat.v1
LABEL_SET = data_loader.get_label_set('cityscapes')
NETWORK_SHAPE = (64, 128)


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    """A loaded tiny FCN-8s checkpoint whose every weight is random (He-scaled, so that its
    probabilities are far from uniform and differ from pixel to pixel)."""
    folder = str(tmp_path_factory.mktemp('tta') / 'model')
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        images = tf1.placeholder(tf.uint8, [None, None, None, 3], name=fcn8vgg16.INPUT_NAME)
        logits, _ = fcn8vgg16.fcn8s(images, LABEL_SET.num_classes, encoder=synthetic.TINY_VGG16,
                                    fc_channels=synthetic.TINY_FC_CHANNELS)
        fcn8vgg16.predictions(logits)
        with tf1.Session() as session:
            for variable in tf1.global_variables():
                shape = variable.shape.as_list()
                scale = 1.5 / np.sqrt(np.prod(shape[:-1])) if len(shape) > 1 else 0.1
                session.run(variable.initializer)
                session.run(variable.assign(rng.normal(0, scale, shape).astype(np.float32)))
            tf1.train.Saver().save(session, os.path.join(folder, 'model.ckpt'), global_step=0)
    helper.write_json(os.path.join(folder, model_dir.CONFIG_FILE), dict(
        label_set='cityscapes', num_classes=LABEL_SET.num_classes,
        image_shape=list(NETWORK_SHAPE), encoder=synthetic.TINY_VGG16,
        fc_channels=synthetic.TINY_FC_CHANNELS, input_tensor=fcn8vgg16.INPUT_TENSOR,
        output_tensor=fcn8vgg16.OUTPUT_TENSOR, logits_tensor=fcn8vgg16.LOGITS_TENSOR))
    loaded = loader.Model(folder)
    yield loaded
    loaded.close()


def _scene(height, width, seed=3):
    return demo_data.draw_scene(np.random.default_rng(seed), height, width)[0]


# ------------------------------------------------------------- the views, re-implemented

def _softmax_of_one(model, image):
    """The model's probabilities of one uint8 image of any size: padded at the bottom and
    right by repeating the edge to multiples of 32, the padding cut off again."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((0, -height % 32), (0, -width % 32), (0, 0)), mode='edge')
    return model.probabilities(padded[None])[0][:height, :width]


def _starts(length, size, overlap):
    """mmsegmentation's slide mode: every stride from 0 while a window fits, then one window
    ending at the border."""
    if length <= size:
        return [0]
    stride = size - int(round(size * overlap))
    return list(range(0, length - size, stride)) + [length - size]


def _windows_by_hand(model, image, tile, overlap):
    if tile is None:
        return _softmax_of_one(model, image)
    height, width = image.shape[:2]
    total = np.zeros((height, width, LABEL_SET.num_classes), np.float64)
    count = np.zeros((height, width, 1))
    for top in _starts(height, tile[0], overlap):
        for left in _starts(width, tile[1], overlap):
            window = image[top:top + tile[0], left:left + tile[1]]
            total[top:top + tile[0], left:left + tile[1]] += _softmax_of_one(model, window)
            count[top:top + tile[0], left:left + tile[1]] += 1
    assert count.min() >= 1
    return total / count


def _resized_classes(probabilities, height, width):
    """Each class's map resized bilinearly with PIL, as the images are."""
    return np.stack([np.asarray(Image.fromarray(probabilities[..., index].astype(np.float32))
                                .resize((width, height), Image.BILINEAR))
                     for index in range(probabilities.shape[-1])], axis=-1)


def _tta_by_hand(model, base, scales, flip=False, tile=None, overlap=1 / 3):
    """The mean of every view's probabilities at the base image's size: each scale resized
    bilinearly (rounded sides), each flipped view mirrored back, one model call per window."""
    height, width = base.shape[:2]
    views = []
    for scale in scales:
        size = (int(np.floor(height * scale + 0.5)), int(np.floor(width * scale + 0.5)))
        scaled = np.asarray(Image.fromarray(base).resize(size[::-1], Image.BILINEAR))
        for mirrored in ([False, True] if flip else [False]):
            view = np.ascontiguousarray(scaled[:, ::-1]) if mirrored else scaled
            probabilities = _resized_classes(_windows_by_hand(model, view, tile, overlap),
                                             height, width)
            views.append(probabilities[:, ::-1] if mirrored else probabilities)
    return np.mean(views, axis=0)


def _agree(ours, expected):
    """Equal probabilities to float32 rounding (a batch of windows and one window at a time
    round differently), and equal argmaxes wherever the top two classes are not within that
    rounding of each other."""
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    top_two = np.sort(expected, axis=-1)[..., -2:]
    clear = top_two[..., 1] - top_two[..., 0] > 2e-5
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(ours.argmax(-1)[clear], expected.argmax(-1)[clear])


# ----------------------------------------------------------------------------- the tests

def test_the_random_model_is_confident_and_varied_enough_to_tell_views_apart(model):
    probabilities = _softmax_of_one(model, _scene(70, 150))
    assert probabilities.max(-1).mean() > 0.3
    assert len(np.unique(probabilities.argmax(-1))) >= 3


@pytest.mark.parametrize('scales, flip', [((1.0,), True), ((0.5, 0.75, 1.0, 1.25), False),
                                          ((0.6, 1.3), True)])
def test_the_average_over_scales_and_flips_is_the_mean_of_each_views_probabilities(
        model, scales, flip):
    """At its own size (70x150: every scale is padded) and resized to the model's shape."""
    image = _scene(70, 150)
    for base in (image, data_loader.network_input(image, NETWORK_SHAPE, False)):
        (ours,) = tta.averaged_probabilities(model, [base], specs.Inference(scales, flip))
        assert ours.shape == base.shape[:2] + (LABEL_SET.num_classes,)
        _agree(ours, _tta_by_hand(model, base, scales, flip))


@pytest.mark.parametrize('keep_size, shape', [(True, (70, 150)), (False, (128, 256))])
def test_flip_of_a_mirrored_image_is_the_mirror_of_flip_of_the_image(model, keep_size, shape):
    """Bit for bit, probabilities and class ids, over several scales of an image whose width
    is padded, or resized to the model's shape (128x256: nearest neighbour back to twice the
    size is itself mirror-symmetric, which 150 from 128 columns is not); a batch of two views
    agrees to float rounding (oneDNN may sum in another order for a batch's second image)."""
    image = _scene(*shape, seed=4)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    inference = specs.Inference((0.75, 1.0, 1.5), flip=True, save_probs='all')
    for batch_size in (1, 2):
        ((ids, probabilities),) = predict.predict_outputs(model, [image], keep_size, inference,
                                                          batch_size)
        ((mirror_ids, mirror_probabilities),) = predict.predict_outputs(
            model, [mirrored], keep_size, inference, batch_size)
        if batch_size == 1:
            np.testing.assert_array_equal(mirror_probabilities, probabilities[:, ::-1])
            np.testing.assert_array_equal(mirror_ids, ids[:, ::-1])
        else:
            np.testing.assert_allclose(mirror_probabilities, probabilities[:, ::-1], atol=1e-6)
    # and the flip does something: the plain view alone is not mirror-symmetric
    (plain,) = predict.predict_batch(model, [image], keep_size)
    (plain_mirrored,) = predict.predict_batch(model, [mirrored], keep_size)
    assert not np.array_equal(plain_mirrored, plain[:, ::-1])


def test_the_default_is_the_models_own_argmax_bit_for_bit(model):
    """No flags, or --scales 1 alone, or --save_probs: model.predict of the image resized or
    padded as before, to the bit; the probabilities the machinery averages are then the
    model's softmax of that one run, exactly."""
    images = [_scene(70, 150, seed) for seed in (5, 6)]
    for keep_size in (True, False):
        inputs = np.stack([data_loader.network_input(image, NETWORK_SHAPE, keep_size)
                           for image in images])
        own = model.predict(inputs)
        if keep_size:
            own = own[:, :70, :150]
        else:
            own = np.stack([np.asarray(Image.fromarray(ids).resize((150, 70), Image.NEAREST))
                            for ids in own])
        for inference in (None, specs.Inference(), specs.Inference((1.0,), tile_overlap=0.5),
                          specs.Inference(save_probs='all')):
            outputs = predict.predict_outputs(model, images, keep_size, inference, 2)
            np.testing.assert_array_equal(np.stack([ids for ids, _ in outputs]), own)
        bases = [image if keep_size else data_loader.network_input(image, NETWORK_SHAPE, False)
                 for image in images]
        averaged = tta.averaged_probabilities(model, bases, specs.Inference(), 2)
        np.testing.assert_array_equal(np.stack(averaged), np.stack(
            [model.probabilities(inputs)[index][:base.shape[0], :base.shape[1]]
             for index, base in enumerate(bases)]))


def test_windows_tile_the_image_as_mmsegmentations_slide_mode_does():
    boxes = tta.tile_boxes((100, 150), (64, 64), 1 / 3)
    assert boxes == [(top, left, top + 64, left + 64) for top in (0, 36) for left in (0, 43, 86)]
    assert tta.tile_boxes((50, 200), (64, 96), 0.5) == [(0, 0, 50, 96), (0, 48, 50, 144),
                                                        (0, 96, 50, 192), (0, 104, 50, 200)]
    assert tta.tile_boxes((64, 128), (64, 128), 1 / 3) == [(0, 0, 64, 128)]
    covered = np.zeros((333, 517), int)
    for top, left, bottom, right in tta.tile_boxes(covered.shape, (96, 128), 0.25):
        assert 0 <= top < bottom <= 333 and 0 <= left < right <= 517
        covered[top:bottom, left:right] += 1
    assert covered.min() >= 1


@pytest.mark.parametrize('scales, flip, tile, overlap', [
    ((1.0,), False, (64, 64), 1 / 3), ((1.0,), False, (32, 96), 0.5),
    ((0.75, 1.25), True, (64, 64), 1 / 3)])
def test_sliding_windows_average_each_windows_probabilities_where_they_overlap(
        model, scales, flip, tile, overlap):
    """100x150 at its own size in 64x64 windows is 2 x 3 of them; 32x96 windows at half
    overlap 6 x 3; with scales and flips every scaled view is tiled. The windows go through
    the model two at a time (-bs 2)."""
    image = _scene(100, 150, seed=7)
    inference = specs.Inference(scales, flip, tile, overlap)
    (ours,) = tta.averaged_probabilities(model, [image], inference, batch_size=2)
    _agree(ours, _tta_by_hand(model, image, scales, flip, tile, overlap))
    # the windows are seen apart: the whole image at once predicts otherwise
    assert not np.allclose(ours, _softmax_of_one(model, image), atol=1e-3)


def test_one_window_covering_the_image_is_keep_size_bit_for_bit(model):
    images = [_scene(100, 150, seed) for seed in (8, 9)]
    keep_size = predict.predict_batch(model, images, True)
    for tile in ((128, 160), (512, 512)):
        inference = specs.Inference(tile=tile, save_probs='confidence')
        outputs = predict.predict_outputs(model, images, True, inference, 2)
        for (ids, _), expected in zip(outputs, keep_size):
            np.testing.assert_array_equal(ids, expected)


def test_keep_size_predicts_an_image_above_the_pixel_budget_in_windows(model, monkeypatch):
    images = [_scene(100, 150, seed) for seed in (8, 9)]
    windowed = predict.predict_outputs(model, images, True, specs.Inference(tile=(64, 64)), 2)
    whole = predict.predict_outputs(model, images, True)
    assert any((a != b).any() for (a, _), (b, _) in zip(windowed, whole))  # they differ
    monkeypatch.setattr(predict, 'KEEP_SIZE_PIXELS', 100 * 150 - 1)
    monkeypatch.setattr(predict, 'KEEP_SIZE_TILE', (64, 64))
    budgeted = predict.predict_outputs(model, images, True)
    for (ids, _), (expected, _) in zip(budgeted, windowed):
        np.testing.assert_array_equal(ids, expected)
    ids_only = type('IdsOnly', (), dict(has_logits=False, kind='int8 TFLite'))()
    with pytest.raises(UserError, match='100x150 images are above the 14999 pixels'):
        predict.predict_outputs(ids_only, images, True)


@pytest.mark.parametrize('keep_size', [True, False])
@pytest.mark.parametrize('flags', [{}, {'scales': (0.75, 1.0), 'flip': True}])
def test_saved_probabilities_are_the_models_softmax(model, tmp_path, keep_size, flags):
    """confidences/<stem>.png: round(p * 65535) of the predicted class; probabilities/<stem>.npz:
    'probs', float16 [classes, h, w], whose argmax is the trainIds written beside it. At the
    image's size: cut or resized back with nearest neighbour like the class ids."""
    image = _scene(70, 150, seed=10)
    path = synthetic.write_png(str(tmp_path / 'in' / 'town_000001_leftImg8bit.png'), image)
    inference = specs.Inference(save_probs='all', **flags)
    predict.predict_images(model, [path], str(tmp_path / 'out'), keep_size, 1, True, inference)
    ids = np.asarray(Image.open(str(tmp_path / 'out' / 'trainIds' / os.path.basename(path))))
    confidence = np.asarray(Image.open(str(tmp_path / 'out' / 'confidences' /
                                           os.path.basename(path))))
    with np.load(str(tmp_path / 'out' / 'probabilities' / 'town_000001_leftImg8bit.npz')) as npz:
        assert list(npz) == ['probs']
        saved = npz['probs']
    assert saved.dtype == np.float16 and saved.shape == (LABEL_SET.num_classes, 70, 150)
    assert confidence.dtype in (np.uint16, np.int32) and confidence.shape == (70, 150)
    if flags:
        base = image if keep_size else data_loader.network_input(image, NETWORK_SHAPE, False)
        softmax = _tta_by_hand(model, base, flags['scales'], flags['flip'])
    else:
        softmax = model.probabilities(data_loader.network_input(image, NETWORK_SHAPE,
                                                           keep_size)[None])[0]
    if keep_size:
        softmax = softmax[:70, :150]
    else:
        softmax = np.stack([np.asarray(Image.fromarray(softmax[..., index]).resize(
            (150, 70), Image.NEAREST)) for index in range(LABEL_SET.num_classes)], axis=-1)
    np.testing.assert_allclose(saved, np.moveaxis(softmax, -1, 0), rtol=1e-3, atol=1e-4)
    chosen = np.take_along_axis(softmax, ids[..., None].astype(int), -1)[..., 0]
    assert np.abs(confidence.astype(int) - np.round(chosen * 65535)).max() <= 1
    np.testing.assert_allclose(chosen, softmax.max(-1), atol=2e-6)  # ids are the argmax
    assert confidence.max() > 0.3 * 65535


def test_evaluate_writes_the_probabilities_of_what_it_scores(model, tmp_path):
    image = _scene(70, 150, seed=11)
    image_path, label_path = synthetic.write_sample(str(tmp_path / 'data'), 'town', 1, image,
                                                    np.full((70, 150), 7, np.uint8))
    out = str(tmp_path / 'run')
    inference = specs.Inference((0.5, 1.0), save_probs='confidence')
    confusion = evaluate.confusion_over(model, [image_path], [label_path], True, 1,
                                        inference=inference, out_dir=out)
    (ids,) = predict.predict_batch(model, [image], True, inference)
    road = LABEL_SET.class_names.index('road')
    np.testing.assert_array_equal(confusion[road], np.bincount(ids.ravel(), minlength=19))
    assert os.listdir(out) == ['confidences']
    assert os.listdir(os.path.join(out, 'confidences')) == [os.path.basename(image_path)]


class _IdsOnlyModel:
    """The interface of the int8 TFLite model: class ids, no probabilities."""
    kind = tflite_model.TFLiteModel.kind
    has_logits = tflite_model.TFLiteModel.has_logits
    label_set = LABEL_SET
    image_shape = NETWORK_SHAPE

    def predict(self, images):
        return np.zeros(images.shape[:3], np.uint8)


@pytest.mark.parametrize('inference', [specs.Inference((0.5, 1.0)), specs.Inference(flip=True),
                                       specs.Inference(tile=(32, 32)),
                                       specs.Inference(save_probs='confidence')])
def test_a_model_of_class_ids_only_refuses_averaging_and_probabilities_in_one_line(inference):
    image = _scene(70, 150)
    with pytest.raises(UserError, match=r'^the TFLite int8 model outputs class ids only: '
                                        r'--scales, --flip, --tile and --save_probs need'):
        predict.predict_batch(_IdsOnlyModel(), [image], True, inference)
    (ids,) = predict.predict_batch(_IdsOnlyModel(), [image], True, specs.Inference())
    assert ids.shape == (70, 150)


@pytest.mark.parametrize('kwargs, message', [
    (dict(scales=(1.0, 0.0)), r'--scales 1 0: each scale must be positive'),
    (dict(tile=(100, 64)), r'--tile 100 64: need two sides, each a positive multiple of 32'),
    (dict(tile=(0, 64)), r'--tile 0 64'),
    (dict(tile=(64, 64), tile_overlap=1.0), r'--tile_overlap 1 is outside \[0, 1\)')])
def test_bad_scales_tiles_and_overlaps_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match='^' + message):
        specs.Inference(**kwargs)


def test_the_record_in_metrics_json_names_the_views():
    assert specs.Inference().record() == dict(scales=[1.0], flip=False, tile=None,
                                              tile_overlap=None)
    assert specs.Inference([0.5, 1], True, [512, 1024], 0.25).record() == dict(
        scales=[0.5, 1.0], flip=True, tile=[512, 1024], tile_overlap=0.25)


def test_every_graph_format_averages_its_own_probabilities(model, tmp_path):
    """The checkpoint, its frozen graph (and SavedModel) and the optimised graph of 8-bit
    weights all keep the logits: each gives probabilities whose argmax is its own predict, and
    the frozen ones are the checkpoint's."""
    frozen, optimised = str(tmp_path / 'frozen'), str(tmp_path / 'optimised')
    export.freeze(model.model_dir, frozen)
    export.optimise(frozen, optimised)
    image = _scene(70, 150, seed=12)
    inputs = data_loader.network_input(image, NETWORK_SHAPE, True)[None]
    inference = specs.Inference((0.75, 1.0), flip=True)
    (expected,) = tta.averaged_probabilities(model, [image], inference)
    for folder in (frozen, optimised):
        other = loader.Model(folder)
        try:
            assert other.has_logits
            ids, probabilities = other.probabilities(inputs, with_class_ids=True)
            np.testing.assert_array_equal(ids, other.predict(inputs))
            assert np.mean(probabilities.argmax(-1) == ids) > 0.99
            (averaged,) = tta.averaged_probabilities(other, [image], inference)
        finally:
            other.close()
        if folder == frozen:
            np.testing.assert_allclose(averaged, expected, atol=1e-5)
        else:  # 8-bit weights move the probabilities a little
            assert np.abs(averaged - expected).mean() < 0.005
            assert np.mean(averaged.argmax(-1) == expected.argmax(-1)) > 0.9
