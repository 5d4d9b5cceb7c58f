"""Training augmentation: random scale, crop with padding, flip, photometric jitter; seeded per
(run seed, epoch, sample) so that both pipelines and resumed runs give the same batches; never
on validation; the --augment, --no_augment, --scale_range and --photometric flags."""
import os
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import data_loader
import helper
import main
import synthetic
from roadseg.training import trainer

SHAPE = (32, 64)
IDS = np.array([7, 8, 11, 21, 26], np.uint8)  # Cityscapes road, sidewalk, building, veg., car
TRAIN_IDS = {0, 1, 2, 8, 13}
BLOCK_RED = {0: 20, 1: 70, 2: 120, 8: 170, 13: 220}  # image red channel of each class


@pytest.fixture
def block_samples(tmp_path):
    """Three 48x96 samples of 8x8 blocks of one class each; the red channel encodes the class,
    so that image and label can be checked to move together."""
    rng = np.random.default_rng(0)
    lookup = data_loader.get_label_set('cityscapes').id_to_train_id
    for seq in range(3):
        label = np.kron(rng.choice(IDS, (6, 12)), np.ones((8, 8), np.uint8))
        image = synthetic.random_image(48, 96, seq) // 4
        image[..., 0] = np.vectorize(BLOCK_RED.get)(lookup[label])
        synthetic.write_sample(tmp_path, 'aachen', seq, image, label)
    return tmp_path


def _dataset(root, augment):
    return data_loader.Dataset(str(root / 'leftImg8bit'), str(root / 'gtFine'),
                               data_loader.get_label_set('cityscapes'), SHAPE, augment)


def test_augmented_labels_hold_only_source_ids_and_follow_the_image(block_samples):
    dataset = _dataset(block_samples, data_loader.AugmentConfig((0.5, 2.0)))
    for seed in range(12):
        image, label = dataset.sample(seed % 3, seed, 0)
        assert set(np.unique(label)) <= TRAIN_IDS | {255}
        # Inside blocks (all 3x3 neighbours alike) the bilinear image shows the block's colour.
        padded = np.pad(label, 1, mode='edge')
        inside = np.all([padded[1 + dy:1 + dy + SHAPE[0], 1 + dx:1 + dx + SHAPE[1]] == label
                         for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0) & (label != 255)
        expected_red = np.vectorize(BLOCK_RED.get)(label[inside])
        assert np.mean(np.abs(image[..., 0][inside].astype(int) - expected_red) <= 3) > 0.97


def test_small_scales_pad_with_the_mean_colour_and_the_ignore_id(block_samples):
    dataset = _dataset(block_samples, data_loader.AugmentConfig((0.5, 0.5), flip=False))
    image, label = dataset.sample(0, 3, 1)
    padding = label == 255
    # Scaled to cover 32x64 (x1/1.5) then halved: 16x32 of image, placed in the 32x64 crop.
    assert padding.sum() == 32 * 64 - 16 * 32
    assert (image[padding] == data_loader.PAD_COLOR).all()
    assert data_loader.PAD_COLOR == (124, 117, 104)  # the ImageNet mean of fcn8vgg16, RGB


def test_flip_mirrors_image_and_label_together(block_samples):
    plain = _dataset(block_samples, None)
    flipping = _dataset(block_samples, data_loader.AugmentConfig((1.0, 1.0)))
    image, label = plain.sample(1)
    seen = set()
    for seed in range(8):
        aug_image, aug_label = flipping.sample(1, seed, 0)
        flipped = bool((aug_label != label).any())
        seen.add(flipped)
        if flipped:
            np.testing.assert_array_equal(aug_label, label[:, ::-1])
            np.testing.assert_array_equal(aug_image, image[:, ::-1])
        else:
            np.testing.assert_array_equal(aug_image, image)
    assert seen == {True, False}


def test_photometric_jitter_changes_the_image_only(block_samples):
    config = data_loader.AugmentConfig((0.5, 0.5), flip=False)
    plain = _dataset(block_samples, config)
    jittered = _dataset(block_samples, config._replace(photometric=True))
    changed = 0
    for seed in range(6):
        image, label = plain.sample(0, seed, 0)
        jittered_image, jittered_label = jittered.sample(0, seed, 0)
        np.testing.assert_array_equal(jittered_label, label)
        padding = label == 255
        assert (jittered_image[padding] == data_loader.PAD_COLOR).all()  # padding untouched
        changed += not np.array_equal(jittered_image, image)
    assert changed >= 4


def test_samples_are_seeded_by_run_seed_epoch_and_index(block_samples):
    dataset = _dataset(block_samples, data_loader.AugmentConfig(photometric=True))
    first = dataset.sample(0, seed=5, epoch=2)
    for other in (dataset.sample(0, seed=5, epoch=2), _dataset(block_samples, dataset.augment)
                  .sample(0, seed=5, epoch=2)):
        synthetic.assert_same_batches([first], [other])
    for seed, epoch in ((6, 2), (5, 3)):
        assert not np.array_equal(dataset.sample(0, seed, epoch)[0], first[0])
    # Unaugmented, every call gives the centre crop of the covering scale.
    plain = _dataset(block_samples, None)
    synthetic.assert_same_batches([plain.sample(0, 1, 1)], [plain.sample(0, 2, 7)])


def test_pipelines_agree_and_resume_with_augmentation(block_samples):
    dataset = _dataset(block_samples, data_loader.AugmentConfig(photometric=True))
    generated = list(dataset.generator(2, epochs=2, seed=9))
    assert len(generated) == 4
    synthetic.assert_same_batches(generated, synthetic.tf_batches(dataset, 2, epochs=2, seed=9))
    synthetic.assert_same_batches(list(dataset.generator(2, epochs=2, seed=9, start_step=3)),
                                  generated[3:])
    synthetic.assert_same_batches(synthetic.tf_batches(dataset, 2, epochs=2, seed=9,
                                                       start_step=3), generated[3:])
    # The second epoch augments the same images differently.
    assert not np.array_equal(np.sort(generated[0][0].ravel()), np.sort(generated[2][0].ravel()))


# ------------------------------------------------------------------------------------ the flags

@pytest.fixture
def captured_sets(monkeypatch):
    """Runs main.train up to trainer.train and keeps what it was given."""
    captured = {}

    def fake_train(run, *rest):
        captured.update(train=run.train_set, val=run.val_set)

    monkeypatch.setattr(trainer, 'train', fake_train)
    return captured


def _flags(root, tmp_path, *extra):
    return ['train', '--dataset', 'demo', '-ip', str(root / 'leftImg8bit'),
            '-lp', str(root / 'gtFine'), '--val_images_paths', str(root / 'leftImg8bit'),
            '--val_labels_paths', str(root / 'gtFine'), '--image_shape', '32', '64',
            '-rd', str(tmp_path / 'runs'), '--gpu', '0'] + list(extra)


@pytest.mark.end_to_end
@pytest.mark.parametrize('extra, expected', [
    ([], data_loader.AugmentConfig((0.75, 1.5), True, False)),  # the demo's narrower range
    (['--augment', '--scale_range', '0.5', '2', '--photometric'],
     data_loader.AugmentConfig((0.5, 2.0), True, True)),
    (['--no_augment'], None),
])
def test_only_the_training_set_is_augmented(block_samples, tmp_path, captured_sets, extra,
                                            expected):
    assert main.main(_flags(block_samples, tmp_path, *extra)) == 0
    assert captured_sets['train'].augment == expected
    assert captured_sets['val'].augment is None


@pytest.mark.end_to_end
@pytest.mark.parametrize('scale_range', [('2', '1'), ('0', '1')])
def test_bad_scale_range_is_one_line(block_samples, tmp_path, capsys, scale_range):
    assert main.main(_flags(block_samples, tmp_path, '--scale_range', *scale_range)) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith('error: --scale_range') and 'need 0 < LO <= HI' in line


# ------------------------------------------------------------------- the tf.data pipeline's threads

def _thread_priority():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='threads have a niceness of '
                    'their own on Linux only')
def test_tf_data_decodes_in_threads_of_its_own_at_a_lower_priority(block_samples, monkeypatch):
    dataset = _dataset(block_samples, data_loader.AugmentConfig())
    caller, caller_priority = threading.get_native_id(), _thread_priority()
    seen, sample = [], dataset.sample

    def recording_sample(*args):
        seen.append((threading.get_native_id(), _thread_priority()))
        return sample(*args)

    monkeypatch.setattr(dataset, 'sample', recording_sample)
    synthetic.assert_same_batches(synthetic.tf_batches(dataset, 2, epochs=2, seed=3),
                                  list(_dataset(block_samples, dataset.augment)
                                       .generator(2, epochs=2, seed=3)))
    assert len(seen) == 6
    threads = {thread for thread, _ in seen}
    assert caller not in threads and len(threads) <= (os.cpu_count() or 1)
    assert all(priority >= max(helper.BACKGROUND_NICE, caller_priority) for _, priority in seen)
    assert _thread_priority() == caller_priority  # the caller's thread keeps its own


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='threads have a niceness of '
                    'their own on Linux only')
def test_a_thread_s_priority_is_only_ever_lowered():
    priorities, caller_priority = {}, _thread_priority()

    def thread(name, start):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), start)
        helper.lower_thread_priority()
        helper.lower_thread_priority()  # once per thread: no further change
        priorities[name] = _thread_priority()

    for name, start in (('normal', caller_priority),
                        ('lower already', helper.BACKGROUND_NICE + 5)):
        worker = threading.Thread(target=thread, args=(name, start))
        worker.start()
        worker.join()
    assert priorities == {'normal': max(helper.BACKGROUND_NICE, caller_priority),
                          'lower already': helper.BACKGROUND_NICE + 5}
    assert _thread_priority() == caller_priority


def _scaled_then_cropped(array, place, resample, fill):
    """The crop as a whole resize of the source and a cut of it would give it."""
    scaled = data_loader.resize(array, place.size, resample)
    crop = np.full(SHAPE + array.shape[2:], fill, array.dtype)
    rows = slice(max(-place.top, 0), min(place.size[0] - place.top, SHAPE[0]))
    cols = slice(max(-place.left, 0), min(place.size[1] - place.left, SHAPE[1]))
    crop[rows, cols] = scaled[rows.start + place.top:rows.stop + place.top,
                              cols.start + place.left:cols.stop + place.left]
    return crop[:, ::-1] if place.flip else crop


def test_a_crop_is_the_whole_scaled_source_cut(block_samples):
    """Only the part of the source a crop shows is resampled; it is what resizing the whole
    source and cutting the crop out of it gives: the label exactly, the bilinear image but for
    the rounding of PIL's fixed-point filter taps (within 2 in a few of its values)."""
    dataset = _dataset(block_samples, data_loader.AugmentConfig((0.3, 3.0)))
    off = []
    for seed in range(40):
        index = seed % len(dataset)
        image = data_loader.read_image(dataset.image_paths[index])
        label = data_loader.get_label_set('cityscapes').id_to_train_id[
            data_loader.read_label(dataset.label_paths[index])]
        place = data_loader.placement(label.shape, SHAPE, dataset.augment,
                                      np.random.default_rng([seed, 0, index]))
        sample_image, sample_label = dataset.sample(index, seed, 0)
        expected_image = _scaled_then_cropped(image, place, Image.BILINEAR,
                                              data_loader.PAD_COLOR)
        off.append(np.abs(sample_image.astype(int) - expected_image))
        assert off[-1].max() <= 2
        expected_label = _scaled_then_cropped(label, place, Image.NEAREST, data_loader.IGNORE_ID)
        np.testing.assert_array_equal(sample_label, expected_label)
    assert np.mean(off) < 0.05
