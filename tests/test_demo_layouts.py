"""demo_layouts.py: each tiny dataset has the real release's folders, names, image modes and
label encodings, and is written byte for byte the same every time."""
import glob
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import cityscape_labels
from helper import UserError
from roadseg.data import demo_layouts

KITTI_CATEGORIES = ('um', 'umm', 'uu')
CAMVID_LINE = re.compile(r'^/SegNet/CamVid/(\w+)/(\S+\.png) /SegNet/CamVid/(\w+)annot/(\S+)$')
CAMVID_NAME = re.compile(r'^(0001TP_\d{6}|0006R0_f\d{5}|0016E5_\d{5}|Seq05VD_f\d{5})\.png$')
BDD_STEM = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{8}$')
FOLDER_ROWS = [('road', [128, 64, 128], 1), ('car', [0, 0, 142], 2),
               ('sky', [70, 130, 180], 3)]


@pytest.fixture(scope='module')
def kitti(tmp_path_factory):
    return demo_layouts.write_kitti_road(str(tmp_path_factory.mktemp('kitti') / 'data_road'))


@pytest.fixture(scope='module')
def camvid(tmp_path_factory):
    return demo_layouts.write_camvid(str(tmp_path_factory.mktemp('camvid') / 'CamVid'))


@pytest.fixture(scope='module')
def bdd(tmp_path_factory):
    return demo_layouts.write_bdd100k(str(tmp_path_factory.mktemp('bdd') / 'bdd100k'))


def _names(folder, pattern='*'):
    return sorted(os.path.basename(path) for path in glob.glob(os.path.join(folder, pattern)))


def _stems(folder, suffix):
    return sorted(name[:-len(suffix)] for name in _names(folder, '*' + suffix))


def _files(root):
    return sorted(os.path.relpath(path, root)
                  for path in glob.glob(os.path.join(root, '**', '*'), recursive=True)
                  if os.path.isfile(path))


def _read(path):
    return np.asarray(Image.open(path))


def _kitti_gt_paths(kitti):
    return sorted(glob.glob(os.path.join(kitti, 'training', 'gt_image_2', '*.png')))


def test_kitti_road_has_images_road_and_lane_truth_and_calib_per_category(kitti):
    frames = [f'{category}_{index:06d}' for category, count in (('um', 3), ('umm', 2), ('uu', 2))
              for index in range(count)]
    for split in ('training', 'testing'):
        assert _names(os.path.join(kitti, split, 'image_2')) == [f + '.png' for f in frames]
        assert _names(os.path.join(kitti, split, 'calib')) == [f + '.txt' for f in frames]
    assert sorted(os.listdir(os.path.join(kitti, 'testing'))) == ['calib', 'image_2']
    truth = _names(os.path.join(kitti, 'training', 'gt_image_2'))
    assert len(truth) == 3 + 2 + 2 + 3
    assert [name for name in truth if '_lane_' in name] == [
        f'um_lane_{index:06d}.png' for index in range(3)]
    assert sorted(re.sub('_road_', '_', name) for name in truth if '_road_' in name) == [
        f + '.png' for f in frames]


def test_kitti_images_are_rgb_and_their_truth_the_same_size(kitti):
    for image_path in glob.glob(os.path.join(kitti, '*', 'image_2', '*.png')):
        image = Image.open(image_path)
        assert (image.mode, image.size) == ('RGB', (320, 96)), image_path
    for gt_path in _kitti_gt_paths(kitti):
        gt = Image.open(gt_path)
        assert (gt.mode, gt.size) == ('RGB', (320, 96)), gt_path


def test_kitti_ground_truth_marks_road_magenta_and_dont_care_black(kitti):
    for gt_path in _kitti_gt_paths(kitti):
        gt = _read(gt_path)
        colors = {tuple(color) for color in np.unique(gt.reshape(-1, 3), axis=0)}
        assert {(0, 0, 0), (255, 0, 255), (255, 0, 0)} <= colors, gt_path
        assert all(green == 0 and (blue == 0 or red > 0) for red, green, blue in colors), colors
        assert (gt[:gt.shape[0] // 4] == 0).all(), gt_path  # nothing above the horizon counts
        assert (gt[gt.shape[0] // 2:] == 0).all(axis=-1).any(), gt_path  # a block below it


def test_kitti_road_truth_has_blended_edge_colours_that_keep_their_side(kitti):
    gt = _read(os.path.join(kitti, 'training', 'gt_image_2', 'um_road_000000.png'))
    truth = demo_layouts.kitti_truth(os.path.join(kitti, 'training', 'gt_image_2',
                                                  'um_road_000000.png'))
    blended_road = (gt == demo_layouts.KITTI_BLENDED_ROAD).all(axis=-1)
    blended_other = (gt == demo_layouts.KITTI_BLENDED_OTHER).all(axis=-1)
    assert blended_road.any() and blended_other.any()
    assert (truth[blended_road] == 0).all() and (truth[blended_other] == 1).all()


def test_kitti_truth_ignores_exactly_where_the_red_plane_is_zero(kitti):
    for gt_path in _kitti_gt_paths(kitti):
        gt, truth = _read(gt_path), demo_layouts.kitti_truth(gt_path)
        assert truth.dtype == np.uint8 and truth.shape == gt.shape[:2]
        np.testing.assert_array_equal(truth == 255, gt[..., 0] == 0, err_msg=gt_path)
        np.testing.assert_array_equal(truth == 0, (gt[..., 2] > 0) & (gt[..., 0] > 0))
        assert set(np.unique(truth)) == {0, 1, 255}, gt_path


def test_kitti_lane_truth_is_the_middle_of_the_road_with_the_same_dont_care(kitti):
    gt_dir = os.path.join(kitti, 'training', 'gt_image_2')
    for index in range(3):
        road = demo_layouts.kitti_truth(os.path.join(gt_dir, f'um_road_{index:06d}.png'))
        lane = demo_layouts.kitti_truth(os.path.join(gt_dir, f'um_lane_{index:06d}.png'))
        np.testing.assert_array_equal(lane == 255, road == 255)
        assert (lane == 0).sum() < (road == 0).sum()
        columns = np.flatnonzero((lane == 0).any(axis=0))
        width = lane.shape[1]
        assert width // 3 - 1 <= columns.min() and columns.max() <= 2 * width // 3


def test_camvid_images_and_labels_share_names_in_the_segnet_folders(camvid):
    assert sorted(os.listdir(camvid)) == ['test', 'test.txt', 'testannot', 'train', 'train.txt',
                                          'trainannot', 'val', 'val.txt', 'valannot']
    every_name = []
    for split, count in (('train', 4), ('val', 2), ('test', 2)):
        names = _names(os.path.join(camvid, split))
        assert len(names) == count
        assert _names(os.path.join(camvid, split + 'annot')) == names
        assert all(CAMVID_NAME.match(name) for name in names), names
        every_name += names
    assert len(set(every_name)) == len(every_name)  # a frame belongs to one split


def test_camvid_lists_hold_one_shipped_absolute_line_per_pair(camvid):
    for split in ('train', 'val', 'test'):
        with open(os.path.join(camvid, split + '.txt')) as list_file:
            text = list_file.read()
        assert text.endswith('.png\n')
        lines = text.splitlines()
        assert len(lines) == len(_names(os.path.join(camvid, split)))
        for line in lines:
            image_split, image_name, label_split, label_name = CAMVID_LINE.match(line).groups()
            assert (image_split, label_split, label_name) == (split, split, image_name)
            assert os.path.isfile(os.path.join(camvid, split, image_name))
            assert not os.path.exists(line.split()[0])  # shipped paths point at SegNet's machine


def test_camvid_labels_are_single_channel_indices_up_to_void(camvid):
    seen = set()
    for label_path in glob.glob(os.path.join(camvid, '*annot', '*.png')):
        label = Image.open(label_path)
        image = Image.open(label_path.replace('annot' + os.sep, os.sep))
        assert (label.mode, image.mode, label.size) == ('L', 'RGB', image.size), label_path
        values = np.asarray(label)
        assert values.max() <= demo_layouts.CAMVID_VOID, label_path
        assert (values[-4:] == demo_layouts.CAMVID_VOID).all(), label_path  # the bonnet
        seen.update(np.unique(values).tolist())
    assert {0, 1, 3, 4, 5, 11} <= seen  # sky, building, road, pavement, tree, void
    assert 7 not in seen and 10 not in seen  # the demo draws no fences or cyclists


def test_camvid_classes_are_segnets_eleven_in_index_order():
    names = [name for name, _ in demo_layouts.CAMVID_CLASSES]
    assert names == ['Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol',
                     'Fence', 'Car', 'Pedestrian', 'Bicyclist']
    assert dict(demo_layouts.CAMVID_CLASSES)['Road'] == (128, 64, 128)
    assert dict(demo_layouts.CAMVID_CLASSES)['Pavement'] == (60, 40, 222)
    assert demo_layouts.CAMVID_VOID == len(demo_layouts.CAMVID_CLASSES) == 11


def test_bdd100k_jpegs_and_masks_share_stems_and_test_has_no_labels(bdd):
    sem_seg = os.path.join(bdd, 'labels', 'sem_seg')
    for split, count in (('train', 4), ('val', 2), ('test', 2)):
        stems = _stems(os.path.join(bdd, 'images', '10k', split), '.jpg')
        assert len(stems) == count and all(BDD_STEM.match(stem) for stem in stems), stems
        if split == 'test':
            continue
        assert _stems(os.path.join(sem_seg, 'masks', split), '.png') == stems
        assert _stems(os.path.join(sem_seg, 'colormaps', split), '.png') == stems
    assert sorted(os.listdir(os.path.join(sem_seg, 'masks'))) == ['train', 'val']
    assert sorted(os.listdir(os.path.join(sem_seg, 'colormaps'))) == ['train', 'val']


def test_bdd100k_masks_hold_train_ids_and_agree_with_the_colormap(bdd):
    colors = cityscape_labels.benchmark_label_set().colors
    seen = set()
    for mask_path in glob.glob(os.path.join(bdd, 'labels', 'sem_seg', 'masks', '*', '*.png')):
        mask = Image.open(mask_path)
        image = Image.open(mask_path.replace(os.path.join('labels', 'sem_seg', 'masks'),
                                             os.path.join('images', '10k'))[:-4] + '.jpg')
        assert (mask.mode, image.mode, mask.size) == ('L', 'RGB', image.size), mask_path
        train_ids = np.asarray(mask)
        assert set(np.unique(train_ids)) <= set(range(19)) | {255}, mask_path
        assert (train_ids[-4:] == 255).all()  # the ego vehicle is unknown
        colormap = _read(mask_path.replace(f'{os.sep}masks{os.sep}', f'{os.sep}colormaps{os.sep}'))
        known = train_ids != 255
        np.testing.assert_array_equal(colormap[known], colors[train_ids[known]])
        assert (colormap[~known] == 0).all()
        seen.update(np.unique(train_ids).tolist())
    assert {0, 1, 2, 8, 10, 13, 255} <= seen  # road, sidewalk, building, vegetation, sky, car


def test_bdd100k_legacy_layout_names_labels_train_id_and_train_color(tmp_path):
    root = demo_layouts.write_bdd100k(str(tmp_path / 'bdd100k'), legacy=True)
    assert os.listdir(root) == ['seg']
    seg = os.path.join(root, 'seg')
    assert sorted(os.listdir(seg)) == ['color_labels', 'images', 'labels']
    assert sorted(os.listdir(os.path.join(seg, 'labels'))) == ['train', 'val']
    for split in ('train', 'val'):
        stems = _stems(os.path.join(seg, 'images', split), '.jpg')
        assert _names(os.path.join(seg, 'labels', split)) == [s + '_train_id.png' for s in stems]
        assert _names(os.path.join(seg, 'color_labels', split)) == [
            s + '_train_color.png' for s in stems]
    assert len(_names(os.path.join(seg, 'images', 'test'))) == 2
    new = demo_layouts.write_bdd100k(str(tmp_path / 'new'))
    assert _stems(os.path.join(new, 'images', '10k', 'val'), '.jpg') == stems


@pytest.mark.parametrize('label_format, mode', [('index', 'L'), ('palette', 'P'),
                                                ('color', 'RGB')])
def test_folder_masks_have_the_mode_of_their_label_format(tmp_path, label_format, mode):
    root = demo_layouts.write_folder(str(tmp_path / 'mine'), label_format)
    assert sorted(os.listdir(root)) == ['table.json', 'train', 'val']
    stems = {'train': ['scene_0000', 'scene_0001', 'scene_0002', 'scene_0003'],
             'val': ['scene_0004', 'scene_0005']}
    for split, split_stems in stems.items():
        assert _stems(os.path.join(root, split, 'images'), '.jpg') == split_stems
        assert _stems(os.path.join(root, split, 'masks'), '.png') == split_stems
        for stem in split_stems:
            mask = Image.open(os.path.join(root, split, 'masks', stem + '.png'))
            image = Image.open(os.path.join(root, split, 'images', stem + '.jpg'))
            assert (mask.mode, image.mode, mask.size) == (mode, 'RGB', (96, 64))


@pytest.mark.parametrize('label_format', ['index', 'palette', 'color'])
def test_folder_table_file_lists_the_classes_of_its_label_format(tmp_path, label_format):
    root = demo_layouts.write_folder(str(tmp_path / 'mine'), label_format, counts={'train': 1})
    with open(os.path.join(root, 'table.json')) as table_file:
        table = json.load(table_file)
    by_color = label_format == 'color'
    expected = [{'name': name, 'values': [color if by_color else index], 'color': color}
                for name, color, index in FOLDER_ROWS]
    expected.append({'name': 'unlabelled', 'values': [[0, 0, 0] if by_color else 0],
                     'ignore': True})
    assert table == {'name': 'my_roads', 'classes': expected}


def test_folder_label_formats_store_the_same_classes(tmp_path):
    truths = {}
    for label_format in demo_layouts.FOLDER_FORMATS:
        root = demo_layouts.write_folder(str(tmp_path / label_format), label_format)
        paths = sorted(glob.glob(os.path.join(root, '*', 'masks', '*.png')))
        truths[label_format] = [demo_layouts.folder_truth(path) for path in paths]
    for index, color, palette in zip(*truths.values()):
        np.testing.assert_array_equal(index, color)
        np.testing.assert_array_equal(index, palette)
    assert set(np.unique(truths['index'])) == {0, 1, 2, 3}
    palette = Image.open(os.path.join(tmp_path, 'palette', 'train', 'masks', 'scene_0000.png'))
    rgb = np.asarray(palette.convert('RGB'))
    road = truths['palette'][0] == 1
    assert road.any() and (rgb[road] == (128, 64, 128)).all()


def test_folder_rejects_an_unknown_label_format(tmp_path):
    with pytest.raises(UserError, match="unknown label format 'rgb'"):
        demo_layouts.write_folder(str(tmp_path / 'mine'), 'rgb')
    assert not os.path.exists(tmp_path / 'mine')


@pytest.mark.parametrize('write', [
    demo_layouts.write_kitti_road, demo_layouts.write_camvid, demo_layouts.write_bdd100k,
    lambda root: demo_layouts.write_bdd100k(root, legacy=True),
    lambda root: demo_layouts.write_folder(root, 'palette'),
    lambda root: demo_layouts.write_folder(root, 'color')])
def test_writing_twice_gives_identical_bytes(tmp_path, write):
    first, second = write(str(tmp_path / 'first')), write(str(tmp_path / 'second'))
    assert _files(first) == _files(second) and len(_files(first)) > 5
    for name in _files(first):
        with open(os.path.join(first, name), 'rb') as one, \
                open(os.path.join(second, name), 'rb') as other:
            assert one.read() == other.read(), name


def test_writing_again_into_the_same_root_never_overwrites_a_file(tmp_path):
    root = demo_layouts.write_camvid(str(tmp_path / 'CamVid'), counts={'train': 1})
    with open(os.path.join(root, 'train.txt'), 'rb') as list_file:
        listed = list_file.read()
    with pytest.raises(UserError, match='already exists'):
        demo_layouts.write_camvid(root, counts={'train': 1})
    with open(os.path.join(root, 'train.txt'), 'rb') as list_file:
        assert list_file.read() == listed


def test_sizes_are_parameters(tmp_path):
    root = demo_layouts.write_kitti_road(str(tmp_path / 'kitti'), counts={'uu': 1},
                                         size=(64, 128))
    assert Image.open(os.path.join(root, 'training', 'image_2', 'uu_000000.png')).size == (128, 64)
    assert _read(os.path.join(root, 'training', 'gt_image_2', 'uu_road_000000.png')).shape == (
        64, 128, 3)
