"""mapillary_labels.py and the Mapillary Vistas layout: tables, label sets, config.json checks,
palette decoding, undistorted crops of varied sizes, and training through main.main().

The tables themselves are compared row by row with the reference in test_label_tables.py.
"""
import glob
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import data_loader
from roadseg.data import demo_data
import main
import mapillary_labels
import synthetic
from helper import UserError


@pytest.fixture(scope='module')
def vistas_root(tmp_path_factory):
    return demo_data.ensure_mapillary_demo(str(tmp_path_factory.mktemp('vistas') / 'mapillary'),
                                           split_sizes={'training': 4, 'validation': 2})


# ---------------------------------------------------------------------------------- the tables

def test_tables_have_unique_names():
    for table in (mapillary_labels.LABELS_V12, mapillary_labels.LABELS_V20):
        assert len({label.name for label in table}) == len(table)


@pytest.mark.parametrize('name, classes, unlabeled', [('mapillary', 65, 65),
                                                      ('mapillary_v2', 123, 123)])
def test_label_sets_ignore_unlabeled_and_values_past_the_table(name, classes, unlabeled):
    label_set = data_loader.get_label_set(name)
    assert label_set.name == name and label_set.num_classes == classes
    assert label_set.ignore_id == 255 and label_set.colors.shape == (classes, 3)
    assert label_set.train_id_to_id is None and label_set.categories is None
    np.testing.assert_array_equal(label_set.id_to_train_id[:classes], np.arange(classes))
    assert (label_set.id_to_train_id[unlabeled:] == 255).all()
    assert 'void--unlabeled' not in label_set.class_names


# --------------------------------------------------------------------------- decoding, layout

def test_palette_labels_decode_by_index_and_unknown_values_are_ignored(tmp_path):
    indices = np.resize(np.array([13, 24, 64, 65, 66, 200], np.uint8), (32, 48))
    palette = [0] * 768  # every index the same colour: decoding by colour could not work
    label_path = synthetic.write_png(str(tmp_path / 'labels' / 'key.png'), indices, palette)
    image_path = synthetic.write_png(str(tmp_path / 'images' / 'key.png'),
                                     synthetic.random_image(32, 48, 0))
    label_set = data_loader.get_label_set('mapillary')
    dataset = data_loader.Dataset(str(tmp_path / 'images'), str(tmp_path / 'labels'), label_set,
                                  (32, 32))
    assert Image.open(label_path).mode == 'P'
    _, label = data_loader.load_sample(image_path, label_path, dataset.lookups[0], (32, 48))
    np.testing.assert_array_equal(label, np.resize(np.array([13, 24, 64, 255, 255, 255],
                                                            np.uint8), (32, 48)))


def test_demo_in_the_vistas_layout(vistas_root):
    images = sorted(glob.glob(os.path.join(vistas_root, 'training', 'images', '*.jpg')))
    labels = sorted(glob.glob(os.path.join(vistas_root, 'training', 'labels', '*.png')))
    assert len(images) == len(labels) == 4
    sizes = {Image.open(path).size for path in images}
    assert (320, 240) in sizes and (384, 216) in sizes and len(sizes) == 4  # 4:3, 16:9, ...
    values = np.unique(np.concatenate([np.asarray(Image.open(p)).ravel() for p in labels]))
    assert all(Image.open(path).mode == 'P' for path in labels)
    assert 24 in values and set(values) <= set(range(66))  # lane markings, v1.2 indices
    with open(os.path.join(vistas_root, 'config.json')) as config_file:
        mapillary_labels.check_config(json.load(config_file), 'mapillary', 'config.json')


def test_images_of_any_aspect_are_scaled_to_cover_then_centre_cropped(vistas_root):
    label_set = data_loader.get_label_set('mapillary')
    dataset = data_loader.Dataset(os.path.join(vistas_root, 'training', 'images', '*.jpg'),
                                  os.path.join(vistas_root, 'training', 'labels'), label_set,
                                  (64, 96))
    for index in range(len(dataset)):
        image, label = dataset.sample(index)
        source = data_loader.read_image(dataset.image_paths[index])
        height, width = source.shape[:2]
        scale = max(64 / height, 96 / width)
        size = (max(64, round(height * scale)), max(96, round(width * scale)))
        top, left = (size[0] - 64) // 2, (size[1] - 96) // 2
        expected = data_loader.resize(source, size, Image.BILINEAR)[top:top + 64, left:left + 96]
        # The same aspect, nothing stretched: within PIL's rounding of the crop's own resize.
        assert np.abs(image.astype(int) - expected).max() <= 2
        assert label.shape == (64, 96) and (label != 255).any()


def test_generator_and_tf_data_agree_on_vistas_with_augmentation(vistas_root):
    dataset = data_loader.Dataset(os.path.join(vistas_root, 'training', 'images', '*.jpg'),
                                  os.path.join(vistas_root, 'training', 'labels'),
                                  data_loader.get_label_set('mapillary'), (64, 64),
                                  data_loader.AugmentConfig(photometric=True))
    generated = list(dataset.generator(3, epochs=2, seed=4))
    synthetic.assert_same_batches(generated, synthetic.tf_batches(dataset, 3, epochs=2, seed=4))


# ------------------------------------------------------------------------------ config.json

def _config(labels):
    return {'labels': [{'name': label.name, 'readable': label.readable,
                        'color': list(label.color)} for label in labels]}


def test_config_mismatch_names_the_first_label_that_differs():
    labels = list(mapillary_labels.LABELS_V12)
    labels[24] = labels[24]._replace(name='marking--lane')
    with pytest.raises(UserError) as error:
        mapillary_labels.check_config(_config(labels), 'mapillary', 'config.json')
    message = str(error.value)
    assert "label 24 is 'marking--lane'" in message and "'marking--general'" in message
    with pytest.raises(UserError, match="label 2 is 'construction--barrier--curb'"):
        mapillary_labels.check_config(_config(mapillary_labels.LABELS_V12), 'mapillary_v2', 'c')
    with pytest.raises(UserError, match='65 labels in the file, 66 in the table'):
        mapillary_labels.check_config(_config(mapillary_labels.LABELS_V12[:65]), 'mapillary', 'c')
    mapillary_labels.check_config(_config(mapillary_labels.LABELS_V20), 'mapillary_v2', 'c')


def _train_flags(root, tmp_path, *extra):
    return ['train', '--dataset', 'mapillary', '--data_root', root, '--image_shape', '64', '96',
            '-bs', '2', '-ep', '1', '--vgg_weights', 'none', '-cd', str(tmp_path / 'ckpt'),
            '-sd', str(tmp_path / 'summaries'), '-rd', str(tmp_path / 'runs'),
            '--gpu', '0'] + list(extra)


def _error(capsys, flags):
    assert main.main(flags, network=synthetic.TINY_NETWORK) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.end_to_end
def test_train_on_the_vistas_layout_with_its_defaults(vistas_root, tmp_path, tiny_model, capsys):
    assert main.main(_train_flags(vistas_root, tmp_path), network=tiny_model) == 0
    out = capsys.readouterr().out
    assert 'training on 4 images (mapillary, 65 classes, 64x96)' in out
    assert 'val mean IoU' in out and 'over 2 images' in out  # the validation split beside it


@pytest.mark.end_to_end
@pytest.mark.parametrize('extra, message', [
    (['--label_set', 'mapillary_v3'], "unknown label set 'mapillary_v3'"),
    (['--label_set', 'cityscapes'], '--label_set cityscapes does not fit --dataset mapillary'),
    (['--label_set', 'mapillary_v2'], "label 2 is 'construction--barrier--curb' there, "
                                      "'construction--barrier--ambiguous' in the table"),
])
def test_label_set_errors_are_one_line(vistas_root, tmp_path, tiny_model, capsys, extra,
                                       message):
    line = _error(capsys, _train_flags(vistas_root, tmp_path, *extra))
    assert line.startswith('error: ') and message in line


@pytest.mark.end_to_end
def test_edited_config_json_stops_training(vistas_root, tmp_path, tiny_model, capsys):
    root = str(tmp_path / 'edited')
    shutil.copytree(vistas_root, root)
    with open(os.path.join(root, 'config.json')) as config_file:
        config = json.load(config_file)
    config['labels'][30]['name'] = 'nature--forest'
    with open(os.path.join(root, 'config.json'), 'w') as config_file:
        json.dump(config, config_file)
    line = _error(capsys, _train_flags(root, tmp_path))
    assert "config.json does not match the mapillary label table" in line
    assert "label 30 is 'nature--forest' there, 'nature--vegetation' in the table" in line


@pytest.mark.end_to_end
def test_missing_vistas_names_its_default_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _error(capsys, ['train', '--dataset', 'mapillary', '--gpu', '0'])
    assert '../mapillary/training/images/*.jpg' in line and 'put Mapillary Vistas there' in line
