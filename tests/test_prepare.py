"""`python main.py prepare`: the resized copy's layout and contents, skipping what is done,
interrupted files, refusing unsafe or mismatched folders, and training from the copy."""
import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

import data_loader
from roadseg.data import demo_data
import main
from roadseg.data import prepare


@pytest.fixture(scope='module')
def city_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('city') / 'demo')
    return demo_data.ensure_demo_dataset(root, split_sizes={'train': 3, 'val': 1, 'test': 1},
                                         video_frames=2)


@pytest.fixture(scope='module')
def vistas_root(tmp_path_factory):
    return demo_data.ensure_mapillary_demo(str(tmp_path_factory.mktemp('vistas') / 'mapillary'),
                                           split_sizes={'training': 4, 'validation': 1})


def _prepare(dataset, root, out, *extra):
    return main.main(['prepare', '--dataset', dataset, '--data_root', root, '--prepared_dir',
                      str(out), '--image_shape', '64', '128', '--workers', '2'] + list(extra))


def _files(root):
    return sorted(os.path.relpath(path, root) for path in
                  glob.glob(os.path.join(str(root), '**', '*'), recursive=True)
                  if os.path.isfile(path))


def _mtimes(root):
    return {name: os.stat(os.path.join(str(root), name)).st_mtime_ns for name in _files(root)}


@pytest.mark.end_to_end
def test_cityscapes_layout_copy_with_train_ids(city_root, tmp_path, capsys):
    out = tmp_path / 'prepared'
    assert _prepare('demo', city_root, out) == 0
    assert 'train: 3 samples (3 written, 0 already done) covering 96x192' in capsys.readouterr().out
    sources = sorted(glob.glob(os.path.join(city_root, 'leftImg8bit', '*', '*', '*.png')))
    expected = [data_loader.PREPARED_MANIFEST]
    label_set = data_loader.get_label_set('cityscapes')
    for image_path in sources:
        relative = os.path.relpath(image_path, city_root)
        split = relative.split(os.sep)[1]
        if split == 'test':
            continue  # only the splits training reads
        label_relative = (relative.replace('leftImg8bit', 'gtFine', 1)
                          .replace('_leftImg8bit.png', '_labelTrainIds.png'))
        expected += [relative, label_relative]
        # 256x512 scaled to cover 64x128 times the demo's top scale 1.5: 96x192.
        image = np.asarray(Image.open(out / relative))
        assert image.shape == (96, 192, 3)
        source_label = data_loader.read_label(os.path.join(city_root, label_relative.replace(
            '_labelTrainIds.png', '_gtFine_labelIds.png')))
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / label_relative)),
            data_loader.resize(label_set.id_to_train_id[source_label], (96, 192), Image.NEAREST))
    assert _files(out) == sorted(expected)
    with open(out / 'fcn8s_prepared.json') as manifest:
        assert json.load(manifest) == {'label_set': 'cityscapes', 'cover_shape': [96, 192],
                                       'source': os.path.abspath(city_root)}


@pytest.mark.end_to_end
def test_second_run_skips_and_interrupted_files_are_redone(city_root, tmp_path, capsys):
    out = tmp_path / 'prepared'
    assert _prepare('demo', city_root, out) == 0
    before = _mtimes(out)
    capsys.readouterr()
    assert _prepare('demo', city_root, out) == 0
    assert 'train: 3 samples (0 written, 3 already done)' in capsys.readouterr().out
    assert _mtimes(out) == before
    # An interrupted run: one label never renamed into place, its half-written file left over.
    label = sorted(glob.glob(str(out / 'gtFine' / 'train' / '*' / '*_labelTrainIds.png')))[0]
    with open(label, 'rb') as done:
        complete = done.read()
    os.remove(label)
    with open(label + prepare.PARTIAL_SUFFIX, 'wb') as partial:
        partial.write(complete[:100])
    assert _prepare('demo', city_root, out) == 0
    assert 'train: 3 samples (1 written, 2 already done)' in capsys.readouterr().out
    with open(label, 'rb') as redone:
        assert redone.read() == complete
    assert not glob.glob(str(out / '**' / '*.partial'), recursive=True)
    assert {name: t for name, t in _mtimes(out).items() if name != os.path.relpath(label, out)} \
        == {name: t for name, t in before.items() if name != os.path.relpath(label, out)}


@pytest.mark.end_to_end
def test_training_reads_the_prepared_copy(city_root, tmp_path, tiny_model, capsys):
    out = str(tmp_path / 'prepared')
    assert _prepare('demo', city_root, out) == 0
    flags = ['train', '--dataset', 'demo', '--data_root', out, '--image_shape', '64', '128',
             '-bs', '3', '-ep', '1', '-cd', str(tmp_path / 'ckpt'), '-sd', str(tmp_path / 's'),
             '-rd', str(tmp_path / 'runs'), '--gpu', '0']
    # A half-written file beside the complete ones is not picked up as an image.
    first_image = sorted(glob.glob(os.path.join(out, 'leftImg8bit', 'train', '*', '*.png')))[0]
    open(first_image.replace('_000019_', '_000020_') + prepare.PARTIAL_SUFFIX, 'w').close()
    capsys.readouterr()
    assert main.main(flags, network=tiny_model) == 0
    output = capsys.readouterr().out
    assert 'training on 3 images (cityscapes, 19 classes, 64x128)' in output
    assert 'val mean IoU' in output
    # Training ids of one label set are not those of another.
    assert main.main(flags + ['--label_set', 'cityscapes35', '-cd', str(tmp_path / 'c2')],
                     network=tiny_model) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert 'was prepared for --label_set cityscapes, not cityscapes35' in line


@pytest.mark.end_to_end
def test_vistas_copy_keeps_jpegs_and_trains(vistas_root, tmp_path, tiny_model, capsys):
    out = str(tmp_path / 'prepared')
    assert main.main(['prepare', '--dataset', 'mapillary', '--data_root', vistas_root,
                      '--prepared_dir', out, '--image_shape', '64', '64',
                      '--prepare_shape', '100', '100'], network=tiny_model) == 0
    values = set()
    for source in glob.glob(os.path.join(vistas_root, '*', 'images', '*.jpg')):
        relative = os.path.relpath(source, vistas_root)
        key = os.path.splitext(os.path.basename(source))[0]
        with Image.open(os.path.join(out, relative)) as image:
            assert image.format == 'JPEG' and min(image.size) == 100
            width, height = image.size
        with Image.open(source) as original:  # the aspect is kept, to the pixel
            assert abs(width / height - original.size[0] / original.size[1]) < 0.02
        label = np.asarray(Image.open(os.path.join(out, relative.split(os.sep)[0], 'labels',
                                                   key + '_labelTrainIds.png')))
        assert label.shape == (height, width)
        values |= set(np.unique(label))
    assert values <= set(range(65)) | {255} and 24 in values  # lane markings survive
    capsys.readouterr()
    assert main.main(['train', '--dataset', 'mapillary', '--data_root', out, '--image_shape',
                      '64', '64', '-bs', '2', '-ep', '1', '--vgg_weights', 'none',
                      '-cd', str(tmp_path / 'ckpt'), '-sd', str(tmp_path / 's'),
                      '-rd', str(tmp_path / 'runs'), '--gpu', '0'], network=tiny_model) == 0
    assert 'training on 4 images (mapillary, 65 classes, 64x64)' in capsys.readouterr().out


@pytest.mark.end_to_end
def test_small_images_are_copied_not_enlarged(vistas_root, tmp_path):
    out = str(tmp_path / 'prepared')
    assert main.main(['prepare', '--dataset', 'mapillary', '--data_root', vistas_root,
                      '--prepared_dir', out, '--prepare_shape', '512', '512',
                      '--split', 'val']) == 0
    (source,) = glob.glob(os.path.join(vistas_root, 'validation', 'images', '*.jpg'))
    with open(source, 'rb') as original, \
            open(os.path.join(out, 'validation', 'images', os.path.basename(source)), 'rb') as copy:
        assert original.read() == copy.read()


def _error(capsys, code):
    assert code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.end_to_end
def test_unsafe_or_mismatched_output_folders_are_refused(city_root, tmp_path, capsys):
    line = _error(capsys, _prepare('demo', city_root, os.path.join(city_root, 'prepared')))
    assert 'must not contain one another' in line
    assert not os.path.exists(os.path.join(city_root, 'prepared'))
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('keep me')
    line = _error(capsys, _prepare('demo', city_root, foreign))
    assert 'exists and was not written by prepare' in line
    assert _files(foreign) == ['notes.txt']
    out = tmp_path / 'prepared'
    assert _prepare('demo', city_root, out, '--split', 'val') == 0
    line = _error(capsys, _prepare('demo', city_root, out, '--split', 'val',
                                   '--prepare_shape', '64', '128'))
    assert "'cover_shape': [96, 192]" in line and 'choose another --prepared_dir' in line
