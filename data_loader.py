"""Finding, pairing, decoding, augmenting and batching images and label images.

Both input pipelines, the pure-python generator and tf.data, call the same per-sample
function `load_sample`, with the same per-sample random generator when augmenting, so that
they produce the same tensors for the same files.
"""
import collections
import os
import threading

import numpy as np
from PIL import Image

import cityscape_labels
import fcn8vgg16
import helper
import mapillary_labels
from helper import UserError
from roadseg import file_pairs, photometric, table_files
# Finding and pairing files, as the actions have always found them here.
from roadseg.file_pairs import TRAIN_ID_SUFFIX, find_images, find_pairs, label_key  # noqa: F401

LABEL_SETS = dict(cityscape_labels.LABEL_SETS, **mapillary_labels.LABEL_SETS,
                  **table_files.LABEL_SETS)
LABEL_FORMATS = table_files.LABEL_FORMATS

PREPARED_MANIFEST = 'fcn8s_prepared.json'  # written by `prepare` at the root of its copy

# Images scaled smaller than the crop are padded with the ImageNet mean (RGB), which the
# network's preprocessing turns into zeros: padding carries no signal. Labels get the ignore id.
PAD_COLOR = tuple(int(round(c)) for c in reversed(fcn8vgg16.BGR_MEAN))  # (124, 117, 104)
IGNORE_ID = cityscape_labels.IGNORE_ID

# What PIL raises for a truncated or corrupt file (it reports a broken PNG chunk as SyntaxError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

# Training augmentation: a random scale factor on top of the scale that makes the image cover
# the crop (uniform in scale_range, as DeepLab's input_preprocess), a random crop, a horizontal
# flip with probability 1/2 and optionally a photometric jitter.
AugmentConfig = collections.namedtuple('AugmentConfig', ['scale_range', 'flip', 'photometric'])
AugmentConfig.__new__.__defaults__ = ((0.5, 2.0), True, False)


def get_label_set(name):
    """A built-in label set by name, or the table of a .json or .csv file."""
    if name in LABEL_SETS:
        return LABEL_SETS[name]()
    if os.path.splitext(name)[1].lower() in table_files.TABLE_EXTENSIONS:
        return table_files.read_table(name, reserved=tuple(LABEL_SETS))
    raise UserError('unknown label set %r (choose from %s, or give a .json or .csv table)'
                    % (name, ', '.join(LABEL_SETS)))


def custom_table(label_set):
    """The table of a label set read from a file, as a model's configuration keeps it (the
    file may change or go); None for a built-in one, which its name gives back."""
    return None if label_set.name in LABEL_SETS else table_files.table_dict(label_set)


def label_set_of_config(config, where):
    """The label set a model's (or a run's) configuration names, or the table it holds."""
    if config.get('label_table') is not None:
        return table_files.table_from_dict(config['label_table'], where)
    return get_label_set(config['label_set'])


def with_encoding(label_set, label_format=None, reduce_zero_label=False):
    """The label set reading label files in label_format (None: its own), with
    reduce_zero_label."""
    if label_format not in (None, 'auto') or reduce_zero_label:
        return label_set._replace(label_format=label_format or label_set.label_format,
                                  reduce_zero_label=bool(reduce_zero_label))
    return label_set


# The original tool trained on all 35 Cityscapes labels from *_gtFine_labelTrainIds.png files
# written by cityscapesScripts' labels.py with train id = label id: the name of the official
# 19-class files, the values of this set's label ids (and leftovers of its bilinear resize).
ORIGINAL_LABEL_SET = 'cityscapes35'
CITYSCAPES_LABEL_SETS = ('cityscapes', ORIGINAL_LABEL_SET)
BENCHMARK_CLASSES = cityscape_labels.benchmark_label_set().num_classes  # 19: train ids 0-18


def _official_train_ids(label_path):
    return file_pairs.stem(label_path, ()).endswith('_gtFine' + TRAIN_ID_SUFFIX)


def label_tables(label_path, label_set, label=None):
    """(lookup, known) for one label file: its table from stored values to training ids, and
    the stored values of the set's labels (check_label_values warns about the others).

    The file's name decides them (label_lookup, known_label_values), but for a
    *_gtFine_labelTrainIds.png read with a Cityscapes label set: official and original-tool
    files share that name, and only their stored values tell them apart (_tables_by_content).
    label is those values, uint8 [h, w]; without it such a file gives (None, None), which
    to_train_ids takes as "decide from the values" once the caller has read them (no file is
    read twice).
    """
    if _official_train_ids(label_path) and label_set.name in CITYSCAPES_LABEL_SETS:
        if label is None:
            return None, None
        return _tables_by_content(label_path, label_set, label)
    return label_lookup(label_path, label_set), known_label_values(label_path, label_set)


def _tables_by_content(label_path, label_set, label):
    """The tables of a *_gtFine_labelTrainIds.png read with a Cityscapes label set, from its
    values.

    Official files never hold 19-254: a file that does is the original tool's, its values label
    ids (training id = label id), any value of no label a leftover to ignore with a warning;
    with the 19-class set it is refused. Values 0-18 and 255 only: an official file, refused
    for cityscapes35. 0-18 only: cityscapes35 cannot tell.
    """
    present = np.bincount(label.ravel(), minlength=256) > 0
    original = present[BENCHMARK_CLASSES:IGNORE_ID].any()
    if label_set.name != ORIGINAL_LABEL_SET:
        if original:
            raise UserError('%s holds label ids %s of the original tool\'s 35-label files, not '
                            'the %d Cityscapes benchmark classes: pass --label_set %s' % (
                                label_path, _listed(np.flatnonzero(
                                    present[BENCHMARK_CLASSES:IGNORE_ID]) + BENCHMARK_CLASSES),
                                BENCHMARK_CLASSES, ORIGINAL_LABEL_SET))
        return label_lookup(label_path, label_set), known_label_values(label_path, label_set)
    if original:
        known = label_set.id_to_train_id != IGNORE_ID
        known[IGNORE_ID] = True
        return label_set.id_to_train_id, known
    if present[IGNORE_ID]:
        _refuse_official_train_ids(label_path, label_set)
    raise UserError('%s cannot tell the %d Cityscapes benchmark classes from the %s label set, '
                    'as it holds only values 0-%d: pass --label_set cityscapes, or use the '
                    '*_gtFine_labelIds.png files' % (label_path, BENCHMARK_CLASSES,
                                                     label_set.name, BENCHMARK_CLASSES - 1))


def _listed(values, most=5):
    """'19, 21, 26' or '19, 21, 26, 33, 40, ...': a few values of many."""
    text = ', '.join(str(value) for value in values[:most])
    return text + (', ...' if len(values) > most else '')


def _refuse_official_train_ids(label_path, label_set):
    raise UserError('%s holds the %d Cityscapes benchmark classes, not the %s label set: '
                    'use the *_gtFine_labelIds.png files' % (label_path, BENCHMARK_CLASSES,
                                                              label_set.name))


def holds_train_ids(label_path, label_set):
    """Whether a label file stores training ids: a prepared copy's `*_labelTrainIds.png`, or
    any file of a label set read in the 'train_id' format (BDD100K's masks)."""
    return (label_set.label_format == 'train_id'
            or file_pairs.stem(label_path, ()).endswith(TRAIN_ID_SUFFIX))


def label_lookup(label_path, label_set):
    """uint8 [256] table from the values stored in this label file to training ids, from its
    name alone (label_tables also looks at the values when the name cannot tell).

    `*_labelTrainIds.png` files hold training ids of the chosen set (as `prepare` writes them);
    the official `*_gtFine_labelTrainIds.png` hold the 19 benchmark classes only.
    """
    if _official_train_ids(label_path) and label_set.name != 'cityscapes':
        _refuse_official_train_ids(label_path, label_set)
    if holds_train_ids(label_path, label_set):
        table = np.arange(256, dtype=np.uint8)
        table[label_set.num_classes:] = label_set.ignore_id
        return table
    return label_set.id_to_train_id


def known_label_values(label_path, label_set):
    """bool [256]: the values a label file of this kind stores for the labels of the set's
    table. Anything else (an annotation tool's interpolated edges, another dataset's ids) is
    outside the label set: the lookup maps it to the ignore id and check_label_values warns."""
    if holds_train_ids(label_path, label_set):
        known = np.zeros(256, bool)
        known[:label_set.num_classes] = True
        known[IGNORE_ID] = True
        return known
    known = (label_set.known_values if label_set.known_values is not None
             else label_set.id_to_train_id != IGNORE_ID)
    if label_set.reduce_zero_label:  # 0 read as 255: ignored, not outside the label set
        known = known.copy()
        known[IGNORE_ID] = True
    return known


_warned_files = set()  # one warning per label file, not one per epoch
_warned_lock = threading.Lock()  # tf.data decodes in parallel threads


def _warn_once(label_path, message):
    with _warned_lock:
        if label_path in _warned_files:
            return
        _warned_files.add(label_path)
    helper.warn(message)


def _warn_outside(label_path, values):
    _warn_once(label_path, 'label %s holds values outside the label set: %s; they are ignored '
                           '(%d)' % (label_path, ', '.join(str(value) for value in values),
                                     IGNORE_ID))


def check_label_values(label, label_path, known):
    """Warns, once per file, about the stored values of a label that known (from
    known_label_values) does not list."""
    present = np.bincount(label.ravel(), minlength=256) > 0
    outside = np.flatnonzero(present & ~known)
    if outside.size:
        _warn_outside(label_path, outside)


def to_train_ids(label, label_path, label_set, lookup=None, known=None):
    """uint8 [h, w] training ids of a label file's stored values. lookup and known are the
    file's tables from label_tables without the values, computed once per file; lookup None
    lets the values decide them. Warns, once per file, about the values known does not list."""
    if lookup is None:
        lookup, known = label_tables(label_path, label_set, label)
    if known is not None:
        check_label_values(label, label_path, known)
    return lookup[label]


def check_label_files(labels_glob, label_set):
    """Checks what describes the label files against the label set, if it is there.

    A Mapillary Vistas config.json (in the label folder or up to three folders above, as in
    both the v1.2 and the v2.0 release layouts) must list the label set's table; JSON files of
    that name without a "labels" list are someone else's and are ignored. A copy written by
    `prepare` holds training ids of the label set it was prepared for, and only of that one.
    """
    if labels_glob is None:  # a list file's pairs: no folder to look in
        return
    if label_set.name in mapillary_labels.VERSIONS:
        names = mapillary_labels.config_file_names(label_set.name)
        for path in file_pairs.find_above(labels_glob, names):
            config = helper.read_json(path)
            if isinstance(config, dict) and 'labels' in config:
                mapillary_labels.check_config(config, label_set.name, path)
                break
    for path in file_pairs.find_above(labels_glob, (PREPARED_MANIFEST,))[:1]:
        prepared_for = dict(helper.read_json(path)).get('label_set')
        if prepared_for != label_set.name:
            raise UserError('%s was prepared for --label_set %s, not %s: pass --label_set %s '
                            'or prepare another copy' % (os.path.dirname(path), prepared_for,
                                                         label_set.name, prepared_for))


def check_image_shape(image_shape):
    height, width = image_shape
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise UserError('image shape %dx%d is not a positive multiple of 32' % (height, width))
    return int(height), int(width)


def read_image(path):
    """uint8 RGB [h, w, 3]; grayscale, RGBA and 16-bit images are converted."""
    try:
        with Image.open(path) as image:
            if image.mode.startswith('I'):  # 16-bit grayscale ('I;16', or 'I' in some PILs)
                gray = (np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            # 16-bit RGB(A) PNGs open as 8-bit RGB(A): PIL keeps the high bytes. convert() of
            # an RGB image is a copy (8 MB more at 2048x1024 while it decodes).
            return np.asarray(image if image.mode == 'RGB' else image.convert('RGB'))
    except DECODE_ERRORS as error:
        raise UserError('cannot read image %s: %s' % (path, helper.first_line(error))) from None


def read_label(path, label_set=None):
    """uint8 [h, w] of stored values, read as label_set's label_format says ('auto': by the
    PNG's mode and the table). Index masks give their values, palette PNGs their palette
    indices, colour masks the index of each pixel's colour in the table's mask_colors (colours
    it lacks become 255, with a warning counting them), KITTI ground truth its planes' code.
    Values above 255 in a 16-bit label are outside every label set: they become 255, which
    every lookup maps to the ignore id, with a warning. Prepared training-id files are read
    as they are."""
    label_format = label_set.label_format if label_set is not None else 'auto'
    if label_format == 'train_id' or file_pairs.stem(path, ()).endswith(TRAIN_ID_SUFFIX):
        label_set, label_format = None, 'index'
    try:
        with Image.open(path) as image:
            label = _decode_label(image, path, label_format, label_set)
    except DECODE_ERRORS as error:
        raise UserError('cannot read label image %s: %s'
                        % (path, helper.first_line(error))) from None
    if label_set is not None and label_set.reduce_zero_label:
        label = np.where((label == 0) | (label == IGNORE_ID), IGNORE_ID,
                         label.astype(np.int16) - 1).astype(np.uint8)
    return label


def _decode_label(image, path, label_format, label_set):
    colour_table = label_set is not None and label_set.mask_colors is not None
    if label_format == 'auto':
        label_format = ('kitti' if label_set is not None and label_set.label_format == 'kitti'
                        else 'color' if colour_table else 'index')
    if label_format in ('color', 'kitti'):
        if image.mode not in ('RGB', 'RGBA', 'P'):
            raise UserError('label image %s has mode %s: read as %s, it must be RGB'
                            % (path, image.mode, 'KITTI planes' if label_format == 'kitti'
                               else 'colours of the table'))
        rgb = np.asarray(image.convert('RGB'))
        return _kitti_planes(rgb) if label_format == 'kitti' else _colour_indices(
            rgb, path, label_set)
    if image.mode.startswith('I'):
        label = np.asarray(image)
        above = np.unique(label[label > 255])
        if above.size:
            _warn_outside(path, above)
        return np.clip(label, 0, 255).astype(np.uint8)
    if image.mode not in ('L', 'P'):
        raise UserError('label image %s has mode %s, expected a single-channel PNG (or a table '
                        'of colours with --label_set FILE for colour masks)' % (path, image.mode))
    return np.asarray(image)


def _kitti_planes(rgb):
    """The KITTI devkit's reading of ground truth, by plane rather than by exact colour: 1 road
    (blue plane) inside the evaluated area (red plane), 2 the rest of it, 0 outside."""
    valid, road = rgb[..., 0] > 0, rgb[..., 2] > 0
    return np.where(valid, np.where(road, 1, 2), 0).astype(np.uint8)


def _colour_indices(rgb, path, label_set):
    """uint8 [h, w]: the index of each pixel's colour in the table's mask_colors, 255 for
    colours it lacks (warned about once per file, with their count)."""
    if label_set is None or label_set.mask_colors is None:
        raise UserError('label image %s is read as colours, but the label set lists no colour '
                        'values: give a table of colours with --label_set FILE' % path)
    keys = _colour_keys(rgb)
    table = _colour_keys(label_set.mask_colors)
    order = np.argsort(table)
    place = np.clip(np.searchsorted(table[order], keys), 0, len(table) - 1)
    found = table[order][place] == keys
    unknown = np.count_nonzero(~found)
    if unknown:
        example = tuple(int(c) for c in rgb[np.unravel_index(np.argmin(found), found.shape)])
        _warn_once(path, 'label %s holds %d pixels of colours not in the table, e.g. %s; they '
                         'are ignored (%d)' % (path, unknown, example, IGNORE_ID))
    return np.where(found, order[place], IGNORE_ID).astype(np.uint8)


def _colour_keys(rgb):
    rgb = np.asarray(rgb, np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def resize(array, size, resample, box=None):
    """uint8 [h, w, ...] resized to size = (height, width) with a PIL filter (itself if it fits).
    box: (left, top, right, bottom) in array's pixels, the part of it to resize instead."""
    height, width = size
    if box is None and array.shape[:2] == (height, width):
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), resample, box=box))


def network_input(image, image_shape, keep_size):
    """The array to feed for one image: resized to the model's shape, or with keep_size padded
    at the bottom and right to multiples of 32 (the padding is cut off the prediction) with its
    edge pixels, which keep the border statistics of the image, unlike black."""
    if not keep_size:
        return resize(image, image_shape, Image.BILINEAR)
    bottom, right = (-side % fcn8vgg16.STRIDE for side in image.shape[:2])
    return np.pad(image, ((0, bottom), (0, right), (0, 0)), mode='edge')


Placement = collections.namedtuple('Placement', ['size', 'top', 'left', 'flip'])


def _offset(scaled, crop, rng):
    """Where a crop starts along one side: random with rng, else centred. Negative when the
    scaled side is shorter than the crop (the image then sits inside the padded crop)."""
    if rng is None:
        return (scaled - crop) // 2
    low, high = sorted((0, scaled - crop))
    return int(rng.integers(low, high + 1))


def placement(source_size, image_shape, augment=None, rng=None):
    """How a source of (height, width) becomes an image_shape crop, without distortion.

    The source is scaled to the smallest size that covers image_shape (a plain resize when the
    aspect already matches), times a random factor in augment.scale_range when augmenting,
    then cropped: at random when augmenting, else centred. Random draws come from rng only.
    """
    height, width = source_size
    factor = rng.uniform(*augment.scale_range) if augment else 1.0
    cover = max(image_shape[0] / height, image_shape[1] / width)
    scale = cover * factor
    size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
    if not augment:  # rounding must never leave the covering image a pixel short
        size = (max(size[0], image_shape[0]), max(size[1], image_shape[1]))
    rng = rng if augment else None
    top, left = _offset(size[0], image_shape[0], rng), _offset(size[1], image_shape[1], rng)
    flip = bool(augment and augment.flip and rng.random() < 0.5)
    return Placement(size, top, left, flip)


def _window(place, image_shape):
    """(rows, cols) slices of the crop covered by the scaled source; the rest is padding."""
    rows = slice(max(-place.top, 0), min(place.size[0] - place.top, image_shape[0]))
    cols = slice(max(-place.left, 0), min(place.size[1] - place.left, image_shape[1]))
    return rows, cols


def _place(array, place, image_shape, resample, fill):
    """Scales array as placed and crops it to image_shape, padding with fill (unflipped). A
    filtered resize computes only the part the crop shows (PIL's box); nearest neighbour, which
    costs little, scales it all, as PIL's box may break ties between two source pixels apart."""
    if (place.top, place.left) == (0, 0) and tuple(place.size) == tuple(image_shape):
        return resize(array, place.size, resample)
    crop = np.full(tuple(image_shape) + array.shape[2:], fill, array.dtype)
    rows, cols = _window(place, image_shape)
    top, left, bottom, right = (rows.start + place.top, cols.start + place.left,
                                rows.stop + place.top, cols.stop + place.left)
    if resample == Image.NEAREST:
        crop[rows, cols] = resize(array, place.size, resample)[top:bottom, left:right]
    else:
        y_scale, x_scale = (side / scaled for side, scaled in zip(array.shape, place.size))
        crop[rows, cols] = resize(array, (bottom - top, right - left), resample, box=(
            left * x_scale, top * y_scale, right * x_scale, bottom * y_scale))
    return crop


def load_sample(image_path, label_path, lookup, image_shape, augment=None, rng=None,
                known=None, label_set=None):
    """The per-sample function of both pipelines: decode, map to training ids, scale, crop,
    and when augmenting flip and jitter. With known (known_label_values), values outside the
    label set are warned about. Without lookup, the label's values decide both for label_set
    (label_tables).

    Images are resized bilinearly, labels with nearest neighbour only (bilinear would invent
    class ids at every boundary); the aspect is never distorted (see `placement`). Padding is
    PAD_COLOR in the image and the ignore id in the label. Returns uint8 image [h, w, 3] and
    uint8 label [h, w].
    """
    image = read_image(image_path)
    label = read_label(label_path, label_set)
    if label.shape != image.shape[:2]:
        raise UserError('label %s is %dx%d but its image %s is %dx%d' % (
            label_path, label.shape[1], label.shape[0], image_path, image.shape[1],
            image.shape[0]))
    label = to_train_ids(label, label_path, label_set, lookup, known)
    place = placement(label.shape, image_shape, augment, rng)
    image = _place(image, place, image_shape, Image.BILINEAR, PAD_COLOR)
    label = _place(label, place, image_shape, Image.NEAREST, cityscape_labels.IGNORE_ID)
    if augment and augment.photometric:
        image = np.array(image)
        rows, cols = _window(place, image_shape)
        image[rows, cols] = photometric.jitter(image[rows, cols], rng)
    if place.flip:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


class Dataset:
    """Image/label pairs of one split, mapped to one label set at one image shape.

    augment: an AugmentConfig for a training set, None (no randomness) for evaluation. Sample
    i of epoch e is augmented with a generator seeded by (seed, e, i), whatever the pipeline
    and wherever training resumes.
    pairs: (image_paths, label_paths) when the caller has paired them (by suffixes, a list
    file, a held-out part), else the globs' files paired by name.
    skip_bad_files: a sample whose files cannot be used (unreadable, or label and image of
    different sizes) becomes a blank one with a warning instead of stopping with an error;
    `skipped` holds the indices of those samples.
    """

    def __init__(self, images_glob, labels_glob, label_set, image_shape, augment=None,
                 skip_bad_files=False, pairs=None):
        self.image_paths, self.label_paths = pairs or find_pairs(images_glob, labels_glob)
        check_label_files(labels_glob, label_set)
        self.label_set = label_set
        self.image_shape = check_image_shape(image_shape)
        self.augment = augment
        # (None, None) for the files whose stored values decide them, as they are read
        tables = [label_tables(path, label_set) for path in self.label_paths]
        self.lookups = [lookup for lookup, _ in tables]
        self.known = [known for _, known in tables]
        self.skip_bad_files = skip_bad_files
        undecided = [path for path, lookup in zip(self.label_paths, self.lookups)
                     if lookup is None]
        if undecided and not skip_bad_files:  # a refusal comes at once, not at some step
            label_tables(undecided[0], label_set, read_label(undecided[0], label_set))
        self.skipped = set()
        self._skipped_lock = threading.Lock()  # tf.data decodes in parallel threads

    def __len__(self):
        return len(self.image_paths)

    def sample(self, index, seed=0, epoch=0):
        rng = np.random.default_rng([seed, epoch, index]) if self.augment else None
        try:
            return load_sample(self.image_paths[index], self.label_paths[index],
                               self.lookups[index], self.image_shape, self.augment, rng,
                               self.known[index], self.label_set)
        except UserError as error:
            if not self.skip_bad_files:
                raise
            return self._skip(index, error)

    def _skip(self, index, error):
        """A blank sample in place of a bad one: every label pixel is the ignore id, so it adds
        nothing to the loss or the metrics, while batches keep their size, epochs their steps
        and the two pipelines their agreement. Warns the first time."""
        with self._skipped_lock:
            first_time = index not in self.skipped
            self.skipped.add(index)
        if first_time:
            helper.warn('skipped (--skip_bad_files): %s' % error)
        return (np.full(self.image_shape + (3,), PAD_COLOR, np.uint8),
                np.full(self.image_shape, IGNORE_ID, np.uint8))

    def label(self, index):
        """The training-id label of one sample at the dataset's image shape, unaugmented."""
        try:
            label = to_train_ids(read_label(self.label_paths[index], self.label_set),
                                 self.label_paths[index],
                                 self.label_set, self.lookups[index], self.known[index])
        except UserError as error:
            if not self.skip_bad_files:
                raise
            return self._skip(index, error)[1]
        return _place(label, placement(label.shape, self.image_shape), self.image_shape,
                      Image.NEAREST, IGNORE_ID)

    def steps_per_epoch(self, batch_size):
        return -(-len(self) // batch_size)

    def order(self, epoch, seed):
        """The sample order of one epoch: a fresh permutation each epoch, reproducible."""
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    def _epoch_order(self, epoch, seed, start_step, batch_size, shuffle):
        """The sample order of one epoch, from the batch `start_step` on in the epoch that
        holds it (to resume mid-epoch)."""
        first_epoch, skip = divmod(start_step, self.steps_per_epoch(batch_size))
        order = self.order(epoch, seed) if shuffle else np.arange(len(self))
        return order[skip * batch_size:] if epoch == first_epoch else order

    def generator(self, batch_size, epochs=1, seed=0, start_step=0, shuffle=True):
        """Pure-python pipeline: yields (images [b, h, w, 3], labels [b, h, w]) uint8 batches.

        Each epoch is a fresh permutation; only its last batch may be short.
        """
        for epoch in range(start_step // self.steps_per_epoch(batch_size), epochs):
            order = self._epoch_order(epoch, seed, start_step, batch_size, shuffle)
            for first in range(0, len(order), batch_size):
                samples = [self.sample(i, seed, epoch) for i in order[first:first + batch_size]]
                yield np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])

    def tf_dataset(self, batch_size, epochs=1, seed=0, start_step=0, shuffle=True):
        """tf.data pipeline of generator()'s very batches: load_sample in parallel, prefetch,
        in threads of its own at a lower priority (helper.lower_thread_priority)."""
        import tensorflow as tf
        height, width = self.image_shape

        def _load(index, epoch):
            helper.lower_thread_priority()
            return self.sample(int(index), seed, int(epoch))

        def _map(index, epoch):
            image, label = tf.numpy_function(_load, [index, epoch], (tf.uint8, tf.uint8),
                                             stateful=False)
            return (tf.ensure_shape(image, [height, width, 3]),
                    tf.ensure_shape(label, [height, width]))

        def _order(epoch):
            return self._epoch_order(int(epoch), seed, start_step, batch_size, shuffle)

        def _epoch(epoch):
            """One epoch's batches, so that its short last batch stays its own."""
            order = tf.ensure_shape(tf.numpy_function(_order, [epoch], tf.int64,
                                                      stateful=False), [None])
            samples = tf.data.Dataset.from_tensor_slices((order, tf.fill(tf.shape(order),
                                                                         epoch)))
            samples = samples.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            return samples.batch(batch_size)

        first_epoch = start_step // self.steps_per_epoch(batch_size)
        if first_epoch >= epochs:
            raise UserError('nothing left to train: start step %d is past %d epochs'
                            % (start_step, epochs))
        # Each epoch is made when the pipeline reaches it: the graph stays the same size however
        # many epochs (a chain of one dataset per epoch passed Python's recursion limit).
        options = tf.data.Options()
        options.threading.private_threadpool_size = os.cpu_count() or 1
        return tf.data.Dataset.range(first_epoch, epochs).flat_map(_epoch).prefetch(
            2).with_options(options)
