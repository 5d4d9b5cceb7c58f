"""cityscape_labels.py and data_loader.py: label sets, pairing, decoding, resizing, batching.

Files are written by the tests in the Cityscapes layout (synthetic.py). Expected label values
are typed from the official table (/work/shared/reference/cityscapes_labels.md).
"""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import cityscape_labels
import data_loader
import synthetic
from helper import UserError

tf1 = tf.compat.v1

# (name, id, trainId, color) from cityscapesScripts helpers/labels.py.
REFERENCE_TABLE = [
    ('unlabeled', 0, 255, (0, 0, 0)), ('ego vehicle', 1, 255, (0, 0, 0)),
    ('rectification border', 2, 255, (0, 0, 0)), ('out of roi', 3, 255, (0, 0, 0)),
    ('static', 4, 255, (0, 0, 0)), ('dynamic', 5, 255, (111, 74, 0)),
    ('ground', 6, 255, (81, 0, 81)), ('road', 7, 0, (128, 64, 128)),
    ('sidewalk', 8, 1, (244, 35, 232)), ('parking', 9, 255, (250, 170, 160)),
    ('rail track', 10, 255, (230, 150, 140)), ('building', 11, 2, (70, 70, 70)),
    ('wall', 12, 3, (102, 102, 156)), ('fence', 13, 4, (190, 153, 153)),
    ('guard rail', 14, 255, (180, 165, 180)), ('bridge', 15, 255, (150, 100, 100)),
    ('tunnel', 16, 255, (150, 120, 90)), ('pole', 17, 5, (153, 153, 153)),
    ('polegroup', 18, 255, (153, 153, 153)), ('traffic light', 19, 6, (250, 170, 30)),
    ('traffic sign', 20, 7, (220, 220, 0)), ('vegetation', 21, 8, (107, 142, 35)),
    ('terrain', 22, 9, (152, 251, 152)), ('sky', 23, 10, (70, 130, 180)),
    ('person', 24, 11, (220, 20, 60)), ('rider', 25, 12, (255, 0, 0)),
    ('car', 26, 13, (0, 0, 142)), ('truck', 27, 14, (0, 0, 70)),
    ('bus', 28, 15, (0, 60, 100)), ('caravan', 29, 255, (0, 0, 90)),
    ('trailer', 30, 255, (0, 0, 110)), ('train', 31, 16, (0, 80, 100)),
    ('motorcycle', 32, 17, (0, 0, 230)), ('bicycle', 33, 18, (119, 11, 32)),
    ('license plate', -1, -1, (0, 0, 142)),
]
BENCHMARK_CLASSES = ['road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                     'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
                     'truck', 'bus', 'train', 'motorcycle', 'bicycle']


# ---------------------------------------------------------------------------------- label sets

def test_both_label_sets_exist_with_their_class_counts():
    assert set(cityscape_labels.LABEL_SETS) == {'cityscapes', 'cityscapes35'}
    for name, count in (('cityscapes', 19), ('cityscapes35', 35)):
        label_set = data_loader.get_label_set(name)
        assert label_set.name == name
        assert label_set.num_classes == count == len(label_set.class_names)
        assert label_set.ignore_id == 255
        assert label_set.colors.shape == (count, 3) and label_set.colors.dtype == np.uint8
        assert label_set.id_to_train_id.shape == (256,)
        assert label_set.id_to_train_id.dtype == np.uint8


def test_benchmark_label_set_follows_the_official_table():
    label_set = data_loader.get_label_set('cityscapes')
    assert label_set.class_names == BENCHMARK_CLASSES
    for name, label_id, train_id, color in REFERENCE_TABLE:
        if label_id >= 0:
            assert label_set.id_to_train_id[label_id] == train_id, name
        if 0 <= train_id < 255:
            assert tuple(label_set.colors[train_id]) == color, name
            assert label_set.train_id_to_id[train_id] == label_id, name
    assert label_set.id_to_train_id[7] == 0                    # road
    assert label_set.id_to_train_id[9] == 255                  # parking: ignored in the benchmark
    assert (label_set.id_to_train_id[34:] == 255).all()        # no ids beyond 33
    assert label_set.categories[label_set.class_names.index('car')] == 'vehicle'


def test_all_labels_label_set_uses_the_id_as_train_id():
    label_set = data_loader.get_label_set('cityscapes35')
    by_id = {label_id: (name, color) for name, label_id, _, color in REFERENCE_TABLE}
    np.testing.assert_array_equal(label_set.id_to_train_id[:34], np.arange(34))
    assert (label_set.id_to_train_id[34:] == 255).all()
    for train_id in range(34):
        name, color = by_id[train_id]
        assert label_set.class_names[train_id] == name
        assert tuple(label_set.colors[train_id]) == color, name
    assert label_set.id_to_train_id[7] == 7 and label_set.id_to_train_id[9] == 9
    # 'license plate' (id -1) takes the last class; no stored value maps to it.
    assert label_set.class_names[34] == 'license plate'
    assert tuple(label_set.colors[34]) == (0, 0, 142)
    assert label_set.train_id_to_id[34] == -1
    assert 34 not in label_set.id_to_train_id


@pytest.mark.parametrize('name', ['cityscapes', 'cityscapes35'])
def test_train_id_to_id_round_trips(name):
    label_set = data_loader.get_label_set(name)
    ids = np.asarray(label_set.train_id_to_id)
    assert len(ids) == label_set.num_classes
    stored = ids >= 0  # all but the license plate
    np.testing.assert_array_equal(label_set.id_to_train_id[ids[stored]],
                                  np.arange(label_set.num_classes)[stored])


def test_unknown_label_set_is_a_user_error_naming_it():
    with pytest.raises(UserError, match='mapilary'):
        data_loader.get_label_set('mapilary')


# ------------------------------------------------------------------------------------- pairing

def _write_split(root, samples, shape=(32, 64), kind='labelIds'):
    """samples: [(city, seq)] -> {(city, seq): (image_path, label_path)}."""
    paths = {}
    for number, (city, seq) in enumerate(samples):
        label = np.full(shape, 7, np.uint8)
        paths[city, seq] = synthetic.write_sample(
            root, city, seq, synthetic.random_image(*shape, seed=number), label, kind=kind)
    return paths


def test_find_pairs_pairs_by_name_across_cities(tmp_path):
    # Written out of order; aachen and bochum share sequence numbers.
    paths = _write_split(tmp_path, [('bochum', 0), ('aachen', 1), ('aachen', 0)])
    # The other files of a real gtFine folder, and a label whose image is not in this split.
    for kind in ('color', 'instanceIds'):
        synthetic.write_png(synthetic.label_path(tmp_path, 'aachen', 0, kind=kind),
                            np.zeros((32, 64), np.uint8))
    synthetic.write_png(synthetic.label_path(tmp_path, 'cologne', 0),
                        np.zeros((32, 64), np.uint8))
    order = [('aachen', 0), ('aachen', 1), ('bochum', 0)]
    expected = ([paths[k][0] for k in order], [paths[k][1] for k in order])

    images_glob = os.path.join(str(tmp_path), 'leftImg8bit/train/*/*_leftImg8bit.png')
    labels_glob = os.path.join(str(tmp_path), 'gtFine/train/*/*_gtFine_labelIds.png')
    # A folder of labels may hold more than the images pick (a warning); a glob may not.
    assert data_loader.find_pairs(images_glob, str(tmp_path / 'gtFine' / 'train')) == expected
    assert data_loader.find_pairs(str(tmp_path / 'leftImg8bit'),
                                  str(tmp_path / 'gtFine')) == expected
    with pytest.raises(UserError, match='1 of 4 label images .* cologne_000000_000019'):
        data_loader.find_pairs(images_glob, labels_glob)
    os.remove(synthetic.label_path(tmp_path, 'cologne', 0))
    assert data_loader.find_pairs(images_glob, labels_glob) == expected


def test_find_pairs_glob_matching_nothing_is_a_user_error(tmp_path):
    _write_split(tmp_path, [('aachen', 0)])
    images_glob = os.path.join(str(tmp_path), 'leftImg8bit/train/*/*_leftImg8bit.png')
    missing = os.path.join(str(tmp_path), 'gtFine/val/*/*.png')
    with pytest.raises(UserError, match='label') as error:
        data_loader.find_pairs(images_glob, missing)
    assert missing in str(error.value)
    with pytest.raises(UserError, match='images') as error:
        data_loader.find_pairs(missing, str(tmp_path / 'gtFine'))
    assert missing in str(error.value)
    with pytest.raises(UserError):
        data_loader.find_pairs(images_glob, str(tmp_path / 'no_such_folder'))


def test_images_without_labels_are_a_user_error_with_counts_and_a_name(tmp_path):
    paths = _write_split(tmp_path, [('aachen', 0), ('aachen', 1), ('bochum', 2)])
    os.remove(paths['aachen', 1][1])
    os.remove(paths['bochum', 2][1])
    with pytest.raises(UserError) as error:
        data_loader.find_pairs(str(tmp_path / 'leftImg8bit'), str(tmp_path / 'gtFine'))
    message = str(error.value)
    assert '2 of 3' in message
    assert 'aachen_000001_000019_leftImg8bit.png' in message


# ------------------------------------------------------------------------- decoding and resizing

def _load(image_path, label_path, label_set_name, image_shape):
    label_set = data_loader.get_label_set(label_set_name)
    lookup = data_loader.label_lookup(label_path, label_set)
    return data_loader.load_sample(image_path, label_path, lookup, image_shape)


STORED = [0, 5, 7, 18, 19, 26, 33, 34, 200, 255]


@pytest.mark.parametrize('kind, label_set_name, expected', [
    # labelIds hold ids: unlabeled, dynamic, road, polegroup, traffic light, car, bicycle.
    ('labelIds', 'cityscapes', [255, 255, 0, 255, 6, 13, 18, 255, 255, 255]),
    ('labelIds', 'cityscapes35', [0, 5, 7, 18, 19, 26, 33, 255, 255, 255]),
    # labelTrainIds hold training ids already; values past the classes are ignored. The
    # official gtFine ones are of the 19-class set; prepared ones (no gtFine) of any set.
    ('labelTrainIds', 'cityscapes', [0, 5, 7, 18, 255, 255, 255, 255, 255, 255]),
    ('prepared_labelTrainIds', 'cityscapes', [0, 5, 7, 18, 255, 255, 255, 255, 255, 255]),
    ('prepared_labelTrainIds', 'cityscapes35', [0, 5, 7, 18, 19, 26, 33, 34, 255, 255]),
])
def test_label_values_map_to_training_ids(tmp_path, kind, label_set_name, expected):
    label = np.resize(np.array(STORED, np.uint8), (32, 64))
    image_path, label_path = synthetic.write_sample(
        tmp_path, 'aachen', 0, synthetic.random_image(32, 64, 0), label,
        kind=kind.replace('prepared_', ''))
    if kind.startswith('prepared_'):  # as `prepare` names them: no _gtFine
        prepared = label_path.replace('_gtFine_labelTrainIds', '_labelTrainIds')
        os.rename(label_path, prepared)
        label_path = prepared
    image, loaded = _load(image_path, label_path, label_set_name, (32, 64))
    assert loaded.dtype == np.uint8 and loaded.shape == (32, 64)
    np.testing.assert_array_equal(loaded, np.resize(np.array(expected, np.uint8), (32, 64)))
    np.testing.assert_array_equal(image, synthetic.random_image(32, 64, 0))


def test_official_train_id_names_leave_cityscapes35_to_the_values_and_refuse_other_sets(
        tmp_path):
    # The values decide with cityscapes35 (tests/test_original_label_files.py).
    label = np.zeros((32, 64), np.uint8)
    _, label_path = synthetic.write_sample(tmp_path, 'aachen', 0, synthetic.random_image(32, 64, 0),
                                           label, kind='labelTrainIds')
    cityscapes35 = data_loader.get_label_set('cityscapes35')
    assert data_loader.label_tables(label_path, cityscapes35) == (None, None)
    with pytest.raises(UserError) as error:
        data_loader.label_tables(label_path, cityscapes35, label)
    assert 'cannot tell' in str(error.value)
    with pytest.raises(UserError) as error:
        data_loader.label_tables(label_path, data_loader.get_label_set('mapillary_v2'))
    assert os.path.basename(label_path) in str(error.value)
    assert 'not the mapillary_v2 label set: use the *_gtFine_labelIds.png' in str(error.value)


def test_labels_are_resized_with_nearest_neighbour_only(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.array([7, 8, 11, 26, 0], np.uint8)             # train ids 0, 1, 2, 13, 255
    allowed = {0, 1, 2, 13, 255}
    label = ids[rng.integers(0, len(ids), (40, 72))]
    image_path, label_path = synthetic.write_sample(
        tmp_path, 'aachen', 0, synthetic.random_image(40, 72, 0), label)
    image, loaded = _load(image_path, label_path, 'cityscapes', (32, 64))
    assert loaded.shape == (32, 64) and image.shape == (32, 64, 3)
    assert set(np.unique(loaded)) <= allowed
    assert len(set(np.unique(loaded))) == len(allowed)
    # The check has teeth: bilinear resizing of the same label invents ids.
    mapped = np.array(data_loader.get_label_set('cityscapes').id_to_train_id[label])
    bilinear = np.asarray(Image.fromarray(mapped).resize((64, 32), Image.BILINEAR))
    assert not set(np.unique(bilinear)) <= allowed


def test_label_upscaled_by_two_repeats_each_pixel(tmp_path):
    label = np.random.default_rng(1).choice(np.array([7, 8, 26], np.uint8), (16, 32))
    image_path, label_path = synthetic.write_sample(
        tmp_path, 'aachen', 0, synthetic.random_image(16, 32, 0), label)
    _, loaded = _load(image_path, label_path, 'cityscapes35', (32, 64))
    np.testing.assert_array_equal(loaded, label.repeat(2, 0).repeat(2, 1))


def test_images_are_resized_bilinearly(tmp_path):
    image = np.zeros((16, 32, 3), np.uint8)
    image[..., 0] = 8 * np.arange(32)[None, :]    # ramps across ...
    image[..., 1] = 8 * np.arange(16)[:, None]    # ... and down
    image[..., 2] = 77
    image_path, label_path = synthetic.write_sample(
        tmp_path, 'aachen', 0, image, np.full((16, 32), 7, np.uint8))
    resized, _ = _load(image_path, label_path, 'cityscapes', (32, 64))
    assert resized.shape == (32, 64, 3) and resized.dtype == np.uint8
    # Half-pixel bilinear x2: output x samples input (x + 0.5) / 2 - 0.5, so value 4x - 2.
    x = np.arange(1, 63)
    y = np.arange(1, 31)
    np.testing.assert_allclose(resized[1:31, 1:63, 0], np.broadcast_to(4 * x - 2, (30, 62)),
                               atol=1)
    np.testing.assert_allclose(resized[1:31, 1:63, 1], np.broadcast_to((4 * y - 2)[:, None],
                                                                       (30, 62)), atol=1)
    assert (resized[..., 2] == 77).all()


@pytest.mark.parametrize('mode', ['L', 'RGBA'])
def test_grayscale_and_rgba_images_become_rgb(tmp_path, mode):
    if mode == 'L':
        stored, expected = np.full((32, 64), 77, np.uint8), (77, 77, 77)
    else:
        stored, expected = np.tile(np.array([10, 20, 30, 0], np.uint8), (32, 64, 1)), (10, 20, 30)
    image_path, label_path = synthetic.write_sample(
        tmp_path, 'aachen', 0, stored, np.full((32, 64), 7, np.uint8))
    assert Image.open(image_path).mode == mode
    image, _ = _load(image_path, label_path, 'cityscapes', (32, 64))
    assert image.shape == (32, 64, 3)
    assert (image.reshape(-1, 3) == expected).all()


def test_palette_labels_give_their_indices(tmp_path):
    indices = np.zeros((32, 64), np.uint8)
    indices[:, 16:32], indices[:, 32:48], indices[:, 48:] = 7, 26, 11
    palette = list(np.random.default_rng(0).integers(0, 256, 768))  # colours unrelated to ids
    image_path = synthetic.write_png(synthetic.image_path(tmp_path, 'aachen', 0),
                                     synthetic.random_image(32, 64, 0))
    label_path = synthetic.write_png(synthetic.label_path(tmp_path, 'aachen', 0), indices,
                                     palette=palette)
    assert Image.open(label_path).mode == 'P'
    _, loaded = _load(image_path, label_path, 'cityscapes', (32, 64))
    np.testing.assert_array_equal(loaded[0], [255] * 16 + [0] * 16 + [13] * 16 + [2] * 16)


def test_label_of_another_size_is_a_user_error_naming_it(tmp_path):
    image_path, label_path = synthetic.write_sample(
        tmp_path, 'aachen', 0, synthetic.random_image(32, 64, 0), np.full((32, 32), 7, np.uint8))
    with pytest.raises(UserError) as error:
        _load(image_path, label_path, 'cityscapes', (32, 64))
    message = str(error.value)
    assert os.path.basename(label_path) in message
    assert '32x32' in message and '64x32' in message


def test_rgb_label_is_a_user_error(tmp_path):
    image_path, label_path = synthetic.write_sample(
        tmp_path, 'aachen', 0, synthetic.random_image(32, 64, 0), synthetic.random_image(32, 64, 1))
    with pytest.raises(UserError, match='RGB') as error:
        _load(image_path, label_path, 'cityscapes', (32, 64))
    assert os.path.basename(label_path) in str(error.value)


def test_unreadable_image_is_a_user_error(tmp_path):
    _, label_path = synthetic.write_sample(
        tmp_path, 'aachen', 0, synthetic.random_image(32, 64, 0), np.full((32, 64), 7, np.uint8))
    broken = synthetic.image_path(tmp_path, 'aachen', 0)
    with open(broken, 'wb') as f:
        f.write(b'not a png')
    with pytest.raises(UserError, match='aachen_000000_000019_leftImg8bit.png'):
        _load(broken, label_path, 'cityscapes', (32, 64))


@pytest.mark.parametrize('shape', [(33, 64), (32, 48), (0, 64), (-32, 64), (32, 0)])
def test_check_image_shape_rejects_non_multiples_of_32(shape):
    with pytest.raises(UserError, match='%dx%d' % shape):
        data_loader.check_image_shape(shape)


def test_check_image_shape_accepts_multiples_of_32():
    assert data_loader.check_image_shape((np.int64(64), 96)) == (64, 96)
    assert all(type(side) is int for side in data_loader.check_image_shape((np.int64(64), 96)))


# ------------------------------------------------------------------------------------ batching

NUM_SAMPLES = 5
IDS_OF_SAMPLE = [7, 8, 11, 12, 13]   # cityscapes train ids 0..4: sample i has train id i


@pytest.fixture
def dataset(tmp_path):
    """Five 48x80 samples in two cities, loaded at 32x64. Sample i has a red channel of
    40 * (i + 1) and a top half labelled with train id i; the rest is noise."""
    order = [('aachen', 0), ('aachen', 3), ('bochum', 1), ('bochum', 2), ('cologne', 0)]
    rng = np.random.default_rng(0)
    for number, (city, seq) in enumerate(order):
        image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
        image[..., 0] = 40 * (number + 1)
        label = rng.choice(np.array([0, 21, 23, 26], np.uint8), (48, 80))
        label[:24] = IDS_OF_SAMPLE[number]
        synthetic.write_sample(tmp_path, city, seq, image, label)
    return data_loader.Dataset(str(tmp_path / 'leftImg8bit'), str(tmp_path / 'gtFine'),
                               data_loader.get_label_set('cityscapes'), (32, 64))


def _sample_numbers(batches):
    """The sample number of every row of every batch, checking images and labels agree."""
    numbers = []
    for images, labels in batches:
        for image, label in zip(images, labels):
            number = int(round(image[..., 0].mean() / 40)) - 1
            assert label[0, 0] == number, 'image and label of different samples'
            numbers.append(number)
    return numbers


def test_generator_and_tf_data_give_identical_batches(dataset):
    generated = list(dataset.generator(2, epochs=2, seed=7))
    assert [len(images) for images, _ in generated] == [2, 2, 1, 2, 2, 1]  # short last batches
    assert generated[0][0].shape == (2, 32, 64, 3) and generated[0][1].shape == (2, 32, 64)
    synthetic.assert_same_batches(generated, synthetic.tf_batches(dataset, 2, epochs=2, seed=7))
    # Resuming at step 4, the middle of the second epoch, continues the same sequence.
    synthetic.assert_same_batches(list(dataset.generator(2, epochs=2, seed=7, start_step=4)),
                                  generated[4:])
    synthetic.assert_same_batches(synthetic.tf_batches(dataset, 2, epochs=2, seed=7, start_step=4),
                                  generated[4:])
    # And the same seed gives the same batches again.
    synthetic.assert_same_batches(list(dataset.generator(2, epochs=2, seed=7)), generated)


def test_each_epoch_is_a_fresh_permutation_fixed_by_the_seed(dataset):
    numbers = _sample_numbers(dataset.generator(2, epochs=2, seed=7))
    first_epoch, second_epoch = numbers[:NUM_SAMPLES], numbers[NUM_SAMPLES:]
    assert sorted(first_epoch) == sorted(second_epoch) == list(range(NUM_SAMPLES))
    assert first_epoch != second_epoch
    other_seed = _sample_numbers(dataset.generator(2, epochs=2, seed=8))
    assert other_seed != numbers
    assert sorted(other_seed[:NUM_SAMPLES]) == list(range(NUM_SAMPLES))
    # Unshuffled, the order is the sorted file order.
    assert _sample_numbers(dataset.generator(2, shuffle=False)) == list(range(NUM_SAMPLES))


def test_tf_data_past_the_last_epoch_is_a_user_error(dataset):
    with pytest.raises(UserError, match='start step 6'):
        dataset.tf_dataset(2, epochs=2, start_step=6)
