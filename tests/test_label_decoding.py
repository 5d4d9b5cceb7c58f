"""data_loader.read_label and to_train_ids with label tables: index, palette and colour masks of a
user's own folder, KITTI Road ground truth read by plane as the devkit does, CamVid's void, and
reduce_zero_label. Fixtures are the tiny real layouts of roadseg/data/demo_layouts.py."""
import glob
import os

import numpy as np
import pytest
from PIL import Image

import data_loader
from helper import UserError
from roadseg.data import demo_layouts

FOLDER_FORMATS = ('index', 'palette', 'color')
FOLDER_SIZE = (64, 96)  # (height, width), both multiples of 32: a Dataset crops nothing
FOLDER_COUNTS = {'train': 2, 'val': 1}
# The folder's stored classes (road 1, car 2, sky 3, unlabelled 0) as training ids.
FOLDER_TRAIN_IDS = np.full(256, 255, np.uint8)
FOLDER_TRAIN_IDS[[1, 2, 3]] = [0, 1, 2]
ROAD_COLOUR = (128, 64, 128)


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """{label format: root} of write_folder's layout in each format, with its table.json."""
    base = tmp_path_factory.mktemp('folders')
    return {label_format: demo_layouts.write_folder(
        str(base / label_format), label_format, FOLDER_COUNTS, FOLDER_SIZE)
        for label_format in FOLDER_FORMATS}


@pytest.fixture(scope='module')
def kitti(tmp_path_factory):
    return demo_layouts.write_kitti_road(str(tmp_path_factory.mktemp('kitti') / 'data_road'),
                                         {'um': 1, 'umm': 1, 'uu': 1})


@pytest.fixture(scope='module')
def camvid(tmp_path_factory):
    return demo_layouts.write_camvid(str(tmp_path_factory.mktemp('camvid') / 'CamVid'),
                                     {'train': 2, 'val': 1})


def _table(root):
    return data_loader.get_label_set(os.path.join(root, 'table.json'))


def _masks(root):
    return sorted(glob.glob(os.path.join(root, '*', 'masks', '*.png')))


def _train_ids(path, label_set):
    return data_loader.to_train_ids(data_loader.read_label(path, label_set), path, label_set)


def _write_png(folder, name, array):
    path = os.path.join(str(folder), name)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def _read_error(path, label_set):
    with pytest.raises(UserError) as error:
        data_loader.read_label(path, label_set)
    message = str(error.value)
    assert '\n' not in message
    return message


# ------------------------------------------------------------------ a user's own folder and table

def test_index_palette_and_colour_masks_of_a_scene_decode_to_the_same_training_ids(folders,
                                                                                     capsys):
    names = [os.path.relpath(path, folders['index']) for path in _masks(folders['index'])]
    assert len(names) == 3
    for name in names:
        expected = FOLDER_TRAIN_IDS[demo_layouts.folder_truth(
            os.path.join(folders['index'], name))]
        assert set(np.unique(expected)) == {0, 1, 2, 255}, name  # every class is drawn
        for label_format, root in folders.items():
            label_set = _table(root)
            assert label_set.label_format == 'auto'
            decoded = _train_ids(os.path.join(root, name), label_set)
            np.testing.assert_array_equal(decoded, expected, err_msg=label_format + ' ' + name)
    assert capsys.readouterr().err == ''  # every value and colour is in the tables


def test_auto_reads_each_format_by_the_png_mode_and_the_table(folders):
    modes = {'index': 'L', 'palette': 'P', 'color': 'RGB'}
    for label_format, root in folders.items():
        path = _masks(root)[0]
        assert Image.open(path).mode == modes[label_format]
        stored = data_loader.read_label(path, _table(root))
        truth = demo_layouts.folder_truth(path)
        if label_format == 'color':  # places in the table's colours: road, car, sky, unlabelled
            truth = np.array([3, 0, 1, 2] + [255] * 252, np.uint8)[truth]
        np.testing.assert_array_equal(stored, truth, err_msg=label_format)


def test_an_explicit_label_format_overrides_auto(folders):
    palette_mask = _masks(folders['palette'])[0]
    colour_table = _table(folders['color'])
    # Auto reads a palette PNG with a colour table by its palette's colours...
    np.testing.assert_array_equal(
        data_loader.to_train_ids(data_loader.read_label(palette_mask, colour_table),
                                 palette_mask, colour_table),
        FOLDER_TRAIN_IDS[demo_layouts.folder_truth(palette_mask)])
    # ...'index' by its palette indices (1, 2, 3), which are not the table's colour places.
    as_index = data_loader.with_encoding(colour_table, 'index')
    assert as_index.label_format == 'index' and colour_table.label_format == 'auto'
    np.testing.assert_array_equal(data_loader.read_label(palette_mask, as_index),
                                  demo_layouts.folder_truth(palette_mask))
    # 'color' needs a table of colours.
    as_colour = data_loader.with_encoding(_table(folders['index']), 'color')
    assert _read_error(palette_mask, as_colour) == (
        'label image %s is read as colours, but the label set lists no colour values: give a '
        'table of colours with --label_set FILE' % palette_mask)


def test_a_colour_not_in_the_table_becomes_255_with_one_warning_counting_its_pixels(
        folders, tmp_path, capsys):
    colour_table = _table(folders['color'])
    mask = np.empty((4, 8, 3), np.uint8)
    mask[:] = ROAD_COLOUR
    mask[1, 2:7] = (1, 2, 3)
    mask[3, 0:2] = (250, 0, 0)
    path = _write_png(tmp_path, 'odd.png', mask)
    for _ in range(2):  # read twice, warned once
        stored = data_loader.read_label(path, colour_table)
        train_ids = data_loader.to_train_ids(stored, path, colour_table)
        expected = np.zeros((4, 8), np.uint8)
        expected[1, 2:7] = expected[3, 0:2] = 255
        np.testing.assert_array_equal(train_ids, expected)
    assert capsys.readouterr().err.splitlines() == [
        'warning: label %s holds 7 pixels of colours not in the table, e.g. (1, 2, 3); they '
        'are ignored (255)' % path]
    other = _write_png(tmp_path, 'other.png', mask)
    data_loader.read_label(other, colour_table)
    assert capsys.readouterr().err.count('warning: label %s holds 7 pixels' % other) == 1


def test_an_l_mask_read_with_a_colour_table_is_a_one_line_error_naming_the_file(folders):
    path = _masks(folders['index'])[0]
    assert _read_error(path, _table(folders['color'])) == (
        'label image %s has mode L: read as colours of the table, it must be RGB' % path)


def test_an_rgb_mask_read_with_an_index_table_is_a_one_line_error_naming_the_file(folders):
    path = _masks(folders['color'])[0]
    assert _read_error(path, _table(folders['index'])) == (
        'label image %s has mode RGB, expected a single-channel PNG (or a table of colours '
        'with --label_set FILE for colour masks)' % path)


@pytest.mark.parametrize('label_format', FOLDER_FORMATS)
def test_a_dataset_on_a_folder_gives_the_labels_of_its_table(folders, label_format):
    root = folders[label_format]
    dataset = data_loader.Dataset(os.path.join(root, 'train', 'images', '*.jpg'),
                                  os.path.join(root, 'train', 'masks', '*.png'),
                                  _table(root), FOLDER_SIZE)
    assert len(dataset) == FOLDER_COUNTS['train']
    for index, label_path in enumerate(dataset.label_paths):
        expected = FOLDER_TRAIN_IDS[demo_layouts.folder_truth(label_path)]
        assert expected.shape == FOLDER_SIZE
        np.testing.assert_array_equal(dataset.label(index), expected)
        np.testing.assert_array_equal(dataset.sample(index)[1], expected)


# ------------------------------------------------------------------------- KITTI Road and CamVid

def test_kitti_ground_truth_decodes_by_plane_to_the_devkit_truth(kitti, capsys):
    kitti_road = data_loader.get_label_set('kitti_road')
    paths = sorted(glob.glob(os.path.join(kitti, 'training', 'gt_image_2', '*_road_*.png')))
    assert len(paths) == 3
    for path in paths:
        rgb = np.asarray(Image.open(path).convert('RGB'))
        decoded = _train_ids(path, kitti_road)
        np.testing.assert_array_equal(decoded, demo_layouts.kitti_truth(path), err_msg=path)
        by_colour = {colour: decoded[(rgb == colour).all(axis=-1)] for colour in (
            demo_layouts.KITTI_MAGENTA, demo_layouts.KITTI_BLENDED_ROAD,
            demo_layouts.KITTI_RED, demo_layouts.KITTI_BLENDED_OTHER, (0, 0, 0))}
        # Black is "don't care": ignored, not road (the old Udacity helper took every pixel
        # that is not pure red for road).
        expected = dict(zip(by_colour, (0, 0, 1, 1, 255)))
        for colour, train_ids in by_colour.items():
            assert train_ids.size and (train_ids == expected[colour]).all(), (path, colour)
    assert capsys.readouterr().err == ''


def test_kitti_lane_ground_truth_marks_the_ego_lane(kitti):
    kitti_lane = data_loader.get_label_set('kitti_lane')
    paths = sorted(glob.glob(os.path.join(kitti, 'training', 'gt_image_2', 'um_lane_*.png')))
    assert len(paths) == 1
    decoded = _train_ids(paths[0], kitti_lane)
    np.testing.assert_array_equal(decoded, demo_layouts.kitti_truth(paths[0]))
    assert set(np.unique(decoded)) == {0, 1, 255}


def test_camvid_void_is_ignored_and_other_values_are_their_class(camvid, capsys):
    camvid_set = data_loader.get_label_set('camvid')
    paths = sorted(glob.glob(os.path.join(camvid, '*annot', '*.png')))
    assert len(paths) == 3
    for path in paths:
        stored = np.asarray(Image.open(path))
        assert (stored[-1] == 11).all()  # the bonnet rows are void
        decoded = _train_ids(path, camvid_set)
        np.testing.assert_array_equal(decoded, np.where(stored == 11, 255, stored))
        assert len(np.unique(decoded)) > 3
    assert capsys.readouterr().err == ''


# ---------------------------------------------------------------------------- reduce_zero_label

def test_reduce_zero_label_ignores_0_and_shifts_the_other_values_down(tmp_path):
    path = _write_png(tmp_path, 'ade.png', [[0, 1, 2, 255], [12, 11, 0, 1]])
    camvid = data_loader.get_label_set('camvid')
    reduced = data_loader.with_encoding(camvid, reduce_zero_label=True)
    assert reduced.reduce_zero_label and reduced.label_format == 'index'
    assert not camvid.reduce_zero_label
    np.testing.assert_array_equal(data_loader.read_label(path, reduced),
                                  [[255, 0, 1, 255], [11, 10, 255, 0]])
    np.testing.assert_array_equal(data_loader.read_label(path, camvid),
                                  [[0, 1, 2, 255], [12, 11, 0, 1]])
    assert data_loader.with_encoding(camvid) is camvid


def test_reduce_zero_label_does_not_warn_about_the_pixels_it_ignores(tmp_path, capsys):
    path = _write_png(tmp_path, 'ade.png', [[0, 1, 2], [3, 1, 0]])
    reduced = data_loader.with_encoding(data_loader.get_label_set('camvid'),
                                        reduce_zero_label=True)
    train_ids = _train_ids(path, reduced)
    np.testing.assert_array_equal(train_ids, [[255, 0, 1], [2, 0, 255]])
    assert capsys.readouterr().err == ''
