"""Cityscapes label table and the label sets derived from it.

The table is copied from the official cityscapesScripts helpers/labels.py. Everything the
tool needs about Cityscapes classes (class count, id -> train id lookup, colours, categories)
is derived from it; no class count is typed by hand anywhere else.
"""
import collections

import numpy as np

IGNORE_ID = 255

Label = collections.namedtuple(
    'Label', ['name', 'id', 'train_id', 'category', 'category_id',
              'has_instances', 'ignore_in_eval', 'color'])

LABELS = [
    #      name                    id  trainId  category        catId  instances  ignore  color
    Label('unlabeled',              0, 255, 'void',          0, False, True,  (0, 0, 0)),
    Label('ego vehicle',            1, 255, 'void',          0, False, True,  (0, 0, 0)),
    Label('rectification border',   2, 255, 'void',          0, False, True,  (0, 0, 0)),
    Label('out of roi',             3, 255, 'void',          0, False, True,  (0, 0, 0)),
    Label('static',                 4, 255, 'void',          0, False, True,  (0, 0, 0)),
    Label('dynamic',                5, 255, 'void',          0, False, True,  (111, 74, 0)),
    Label('ground',                 6, 255, 'void',          0, False, True,  (81, 0, 81)),
    Label('road',                   7,   0, 'flat',          1, False, False, (128, 64, 128)),
    Label('sidewalk',               8,   1, 'flat',          1, False, False, (244, 35, 232)),
    Label('parking',                9, 255, 'flat',          1, False, True,  (250, 170, 160)),
    Label('rail track',            10, 255, 'flat',          1, False, True,  (230, 150, 140)),
    Label('building',              11,   2, 'construction',  2, False, False, (70, 70, 70)),
    Label('wall',                  12,   3, 'construction',  2, False, False, (102, 102, 156)),
    Label('fence',                 13,   4, 'construction',  2, False, False, (190, 153, 153)),
    Label('guard rail',            14, 255, 'construction',  2, False, True,  (180, 165, 180)),
    Label('bridge',                15, 255, 'construction',  2, False, True,  (150, 100, 100)),
    Label('tunnel',                16, 255, 'construction',  2, False, True,  (150, 120, 90)),
    Label('pole',                  17,   5, 'object',        3, False, False, (153, 153, 153)),
    Label('polegroup',             18, 255, 'object',        3, False, True,  (153, 153, 153)),
    Label('traffic light',         19,   6, 'object',        3, False, False, (250, 170, 30)),
    Label('traffic sign',          20,   7, 'object',        3, False, False, (220, 220, 0)),
    Label('vegetation',            21,   8, 'nature',        4, False, False, (107, 142, 35)),
    Label('terrain',               22,   9, 'nature',        4, False, False, (152, 251, 152)),
    Label('sky',                   23,  10, 'sky',           5, False, False, (70, 130, 180)),
    Label('person',                24,  11, 'human',         6, True,  False, (220, 20, 60)),
    Label('rider',                 25,  12, 'human',         6, True,  False, (255, 0, 0)),
    Label('car',                   26,  13, 'vehicle',       7, True,  False, (0, 0, 142)),
    Label('truck',                 27,  14, 'vehicle',       7, True,  False, (0, 0, 70)),
    Label('bus',                   28,  15, 'vehicle',       7, True,  False, (0, 60, 100)),
    Label('caravan',               29, 255, 'vehicle',       7, True,  True,  (0, 0, 90)),
    Label('trailer',               30, 255, 'vehicle',       7, True,  True,  (0, 0, 110)),
    Label('train',                 31,  16, 'vehicle',       7, True,  False, (0, 80, 100)),
    Label('motorcycle',            32,  17, 'vehicle',       7, True,  False, (0, 0, 230)),
    Label('bicycle',               33,  18, 'vehicle',       7, True,  False, (119, 11, 32)),
    Label('license plate',         -1,  -1, 'vehicle',       7, False, True,  (0, 0, 142)),
]

NAME_TO_LABEL = {label.name: label for label in LABELS}
ID_TO_LABEL = {label.id: label for label in LABELS}


class LabelSet(collections.namedtuple(
        'LabelSet', ['name', 'class_names', 'colors', 'id_to_train_id', 'train_id_to_id',
                     'categories', 'known_values', 'mask_colors', 'label_format',
                     'reduce_zero_label'],
        defaults=(None, None, 'auto', False))):
    """What training and inference need to know about one set of classes, and how label
    files mark them.

    class_names: one name per training id, in training-id order.
    colors: uint8 [num_classes, 3], RGB.
    id_to_train_id: uint8 [256] lookup from the value stored in a label image to a training
        id, IGNORE_ID for values that are not a class of this set.
    train_id_to_id: int [num_classes] lookup back to the dataset's own label id, or None.
    categories: category name per training id, or None.
    known_values: bool [256], the stored values the table lists (trained or ignored); label
        files holding others are warned about. None: every value the lookup maps.
    mask_colors: uint8 [k, 3] for a table of colour-coded masks: colour i of an RGB label
        image is stored value i (the lookup's index); None for tables of indices.
    label_format: how label files are read: 'auto' (by the PNG's mode and the table), 'index',
        'palette', 'color', 'kitti' (the KITTI devkit's planes: 0 outside the evaluated
        area, 1 road, 2 not road) or 'train_id' (the values are training ids).
    reduce_zero_label: stored 0 means unlabelled: it becomes ignored and every other value
        shifts down by one before the lookup (mmsegmentation's reduce_zero_label).
    """

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def ignore_id(self):
        return IGNORE_ID


def _lookup(pairs):
    """uint8 [256] table mapping each stored value to a training id, IGNORE_ID elsewhere."""
    table = np.full(256, IGNORE_ID, np.uint8)
    for stored, train_id in pairs:
        table[stored] = train_id
    return table


def _label_set(name, labels, train_ids):
    return LabelSet(
        name=name,
        class_names=[label.name for label in labels],
        colors=np.array([label.color for label in labels], np.uint8),
        id_to_train_id=_lookup(
            (label.id, train_id) for label, train_id in zip(labels, train_ids) if label.id >= 0),
        train_id_to_id=np.array([label.id for label in labels], np.int64),
        categories=[label.category for label in labels],
        known_values=np.isin(np.arange(256), [label.id for label in LABELS if label.id >= 0]))


def benchmark_label_set():
    """The 19 classes of the Cityscapes benchmark; every other label is ignored."""
    labels = sorted((label for label in LABELS if 0 <= label.train_id < IGNORE_ID),
                    key=lambda label: label.train_id)
    return _label_set('cityscapes', labels, [label.train_id for label in labels])


def all_labels_label_set():
    """Every Cityscapes label its own class (35 classes), training id = label id.

    'license plate' (id -1) takes the last training id; it never appears in labelIds images.
    """
    labels = sorted((label for label in LABELS if label.id >= 0), key=lambda label: label.id)
    labels.append(NAME_TO_LABEL['license plate'])
    return _label_set('cityscapes35', labels, range(len(labels)))


LABEL_SETS = {
    'cityscapes': benchmark_label_set,
    'cityscapes35': all_labels_label_set,
}
