"""Finding images and pairing each with its label file: by name, by suffixes the user gives, or
by a list file of pairs; and holding out a part of a dataset that ships no validation split."""
import glob
import os
import re
import zlib

import helper
from helper import UserError

# Suffixes that differ between an image and its label file; the rest of the name pairs them.
IMAGE_SUFFIXES = ('_leftImg8bit',)
TRAIN_ID_SUFFIX = '_labelTrainIds'
LABEL_SUFFIXES = ('_gtFine' + TRAIN_ID_SUFFIX, '_gtFine_labelIds', TRAIN_ID_SUFFIX, '_labelIds',
                  '_train_id')  # BDD100K's older bdd100k_seg release
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
LIST_EXTENSION = '.txt'


def stem(path, suffixes=()):
    """A file's name without its extension and the first of suffixes it ends with."""
    name = os.path.splitext(os.path.basename(path))[0]
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def _glob(pattern, what):
    """Sorted paths matching a glob, or every image file under a folder."""
    if os.path.isdir(pattern):
        paths = sorted(path for path in glob.glob(os.path.join(pattern, '**', '*'),
                                                  recursive=True)
                       if path.lower().endswith(IMAGE_EXTENSIONS))
    else:
        paths = sorted(glob.glob(pattern, recursive=True))
    if not paths:
        raise UserError('no %s match %s' % (what, pattern))
    return paths


# KITTI Road names its truth <frames>_road_NNNNNN.png or um_lane_NNNNNN.png for <frames>_NNNNNN.png.
KITTI_TRUTH = re.compile(r'^(um|umm|uu)_(?:road|lane)_(\d+)$')


def label_key(label_path):
    """The part of a label file's name that pairs it with its image."""
    return KITTI_TRUTH.sub(r'\1_\2', stem(label_path, LABEL_SUFFIXES))


def is_list_file(path):
    """Whether -ip names a list file of `image label` lines rather than images."""
    return path is not None and path.lower().endswith(LIST_EXTENSION) and os.path.isfile(path)


def find_images(images_glob):
    """Sorted image paths matching a glob (or every PNG or JPEG under a folder, or the images
    of a list file)."""
    if is_list_file(images_glob):
        return read_list_file(images_glob)[0]
    return _glob(images_glob, 'images')


def _key_of(path, suffix, default_suffixes, folder):
    """A file's key: its name (or, with folder, its path below folder) without suffix, or
    without the first of default_suffixes and its extension when no suffix is given; None
    when it does not end with suffix."""
    name = os.path.basename(path)
    above = os.path.dirname(os.path.relpath(path, folder)) if folder else ''
    if suffix is None:
        key = label_key(path) if default_suffixes == LABEL_SUFFIXES else stem(
            path, default_suffixes)
        return os.path.join(above, key)
    # A prepared copy's labels end with TRAIN_ID_SUFFIX after the name's own suffix.
    extension = os.path.splitext('name' + suffix)[1]
    endings = (suffix,) if default_suffixes != LABEL_SUFFIXES else (
        suffix[:len(suffix) - len(extension)] + TRAIN_ID_SUFFIX + '.png', suffix)
    ending = next((ending for ending in endings if name.endswith(ending)), None)
    return None if ending is None else os.path.join(above, name[:-len(ending)])


def _keys(paths, suffix, default_suffixes, what, pattern, by_folder=False):
    """{key: path} of the files that have a key (_key_of); with by_folder, keys keep the
    subfolders below the glob's folder. Several files of one key: the first."""
    folder = folder_of(pattern) if by_folder else None
    keys = {}
    for path in paths:
        key = _key_of(path, suffix, default_suffixes, folder)
        if key is not None:
            keys.setdefault(key, path)
    if suffix is not None and not keys:
        raise UserError('none of the %d %s under %s ends with %s' % (len(paths), what, pattern,
                                                                    suffix))
    return keys


def _same_names(paths, suffix, default_suffixes):
    """Whether two of the files have one key: frames of the same name in two sequences."""
    keys = [_key_of(path, suffix, default_suffixes, None) for path in paths]
    keys = [key for key in keys if key is not None]
    return len(set(keys)) < len(keys)


def find_pairs(images_glob, labels_glob, image_suffix=None, label_suffix=None):
    """Sorted (image_paths, label_paths) paired by name, or as a list file pairs them.

    `aachen_000000_000019_leftImg8bit.png` pairs with `aachen_000000_000019_gtFine_labelIds.png`
    (or `_labelTrainIds`); files without a suffix pair on their whole name (Mapillary style).
    image_suffix and label_suffix replace that: `x_img.jpg` pairs with `x_mask.png` when they
    are `_img.jpg` and `_mask.png`, and files that do not end with them are not used.
    """
    if is_list_file(images_glob):
        return read_list_file(images_glob)
    if labels_glob is None:
        raise UserError('-ip/--images_paths given without -lp/--labels_paths')
    image_paths = _glob(images_glob, 'images')
    label_paths = _glob(labels_glob, 'label images')
    # Images of the same name in two folders (frames of two sequences) pair by the subfolders
    # below the globs' folders as well, images/seq1/000001.png with labels/seq1/000001.png.
    by_folder = _same_names(image_paths, image_suffix, IMAGE_SUFFIXES)
    labels_by_key = _keys(label_paths, label_suffix, LABEL_SUFFIXES, 'label images',
                          labels_glob, by_folder)
    images_by_key = _keys(image_paths, image_suffix, IMAGE_SUFFIXES, 'images', images_glob,
                          by_folder)
    unlabelled = sorted(key for key in images_by_key if key not in labels_by_key)
    if unlabelled:
        raise UserError('%d of %d images have no label under %s, e.g. %s' % (
            len(unlabelled), len(images_by_key), labels_glob,
            ', '.join(os.path.basename(images_by_key[k]) for k in unlabelled[:3])))
    _check_labels_have_images(labels_by_key, images_by_key, images_glob, labels_glob,
                              label_suffix is None)
    keys = sorted(images_by_key)
    return [images_by_key[k] for k in keys], [labels_by_key[k] for k in keys]


def _check_labels_have_images(labels_by_key, images_by_key, images_glob, labels_glob,
                              named_only):
    """Label files without an image: an error when the labels were given as a glob, a warning
    when as a folder, from which the images may rightly pick a part (one city, a few files).

    Without a label suffix, only files named as labels count when some are (Cityscapes' gtFine
    folders also hold _color and _instanceIds images); labels named as their images all count.
    """
    named = {key: path for key, path in labels_by_key.items()
             if named_only and key != stem(path)}
    orphans = sorted(key for key in (named or labels_by_key) if key not in images_by_key)
    if not orphans:
        return
    message = '%d of %d label images under %s have no image in %s, e.g. %s' % (
        len(orphans), len(named or labels_by_key), labels_glob, images_glob,
        ', '.join(os.path.basename(labels_by_key[key]) for key in orphans[:3]))
    if not os.path.isdir(labels_glob):
        raise UserError(message)
    helper.warn(message + ': they are not used')


def _listed_path(path, folder):
    """A path of a list file: as written, else under the list's folder, else its last two
    parts there (SegNet's CamVid lists name /SegNet/CamVid/train/x.png)."""
    candidates = [path, os.path.join(folder, path),
                  os.path.join(folder, *path.replace('\\', '/').split('/')[-2:])]
    return next((candidate for candidate in candidates if os.path.isfile(candidate)), None)


def read_list_file(list_path):
    """(image_paths, label_paths) of a list file: one `image label` pair per line, paths as
    written or relative to the list's folder; blank lines and # comments are skipped."""
    folder = os.path.dirname(os.path.abspath(list_path))
    image_paths, label_paths = [], []
    with open(list_path) as f:
        for number, line in enumerate(f, 1):
            parts = line.split('#', 1)[0].split()
            if not parts:
                continue
            if len(parts) != 2:
                raise UserError('%s line %d: expected `image label`, got %r'
                                % (list_path, number, line.strip()))
            found = [_listed_path(part, folder) for part in parts]
            for part, path, what in zip(parts, found, ('image', 'label')):
                if path is None:
                    raise UserError('%s line %d: %s %s not found (nor under %s)'
                                    % (list_path, number, what, part, folder))
            image_paths.append(found[0])
            label_paths.append(found[1])
    if not image_paths:
        raise UserError('list file %s names no pairs' % list_path)
    return image_paths, label_paths


def held_out(image_paths, label_paths, fraction, part):
    """The 'train' or 'val' part of pairs of a dataset that ships no validation split: a pair
    is held out for val when a hash of its image's name falls in fraction, so a file stays on
    its side whatever else is added, removed or seeded."""
    if part not in ('train', 'val'):
        raise ValueError('part %r is neither train nor val' % (part,))
    keep = [(zlib.crc32(stem(path).encode()) % 10000 < fraction * 10000) == (part == 'val')
            for path in image_paths]
    return ([path for path, kept in zip(image_paths, keep) if kept],
            [path for path, kept in zip(label_paths, keep) if kept])


def folder_of(pattern):
    """The folder part of a glob before its first wildcard (the folder itself if it is one)."""
    folder = pattern if os.path.isdir(pattern) else os.path.dirname(pattern)
    while re.search(r'[*?[]', folder):
        folder = os.path.dirname(folder)
    return folder or '.'


def find_above(pattern, names, levels=4):
    """Paths of the files called `names` in the folder of a glob or up to levels-1 above it."""
    folder = os.path.abspath(folder_of(pattern))
    found = []
    for _ in range(levels):
        found += [os.path.join(folder, name) for name in names
                  if os.path.isfile(os.path.join(folder, name))]
        folder = os.path.dirname(folder)
    return found
