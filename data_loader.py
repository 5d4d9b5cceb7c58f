"""Finding, pairing, decoding and batching images and label images.

Both input pipelines, the pure-python generator and tf.data, call the same per-sample
function `load_sample`, so that they produce the same tensors for the same files.
"""
import glob
import os

import numpy as np
import tensorflow as tf
from PIL import Image

import cityscape_labels
from helper import UserError

LABEL_SETS = dict(cityscape_labels.LABEL_SETS)

# Suffixes that differ between an image and its label file; the rest of the name pairs them.
IMAGE_SUFFIXES = ('_leftImg8bit',)
LABEL_SUFFIXES = ('_gtFine_labelTrainIds', '_gtFine_labelIds', '_labelTrainIds', '_labelIds')
TRAIN_ID_SUFFIX = '_labelTrainIds'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


def get_label_set(name):
    if name not in LABEL_SETS:
        raise UserError('unknown label set %r (choose from %s)' % (name, ', '.join(LABEL_SETS)))
    return LABEL_SETS[name]()


def _stem(path, suffixes):
    stem = os.path.splitext(os.path.basename(path))[0]
    for suffix in suffixes:
        if stem.endswith(suffix):
            return stem[:-len(suffix)]
    return stem


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


def find_images(images_glob):
    """Sorted image paths matching a glob (or every PNG or JPEG under a folder)."""
    return _glob(images_glob, 'images')


def find_pairs(images_glob, labels_glob):
    """Sorted (image_paths, label_paths) paired by name.

    `aachen_000000_000019_leftImg8bit.png` pairs with `aachen_000000_000019_gtFine_labelIds.png`
    (or `_labelTrainIds`); files without a suffix pair on their whole name (Mapillary style).
    """
    image_paths = _glob(images_glob, 'images')
    label_paths = _glob(labels_glob, 'label images')
    labels_by_key = {}
    for path in label_paths:
        labels_by_key.setdefault(_stem(path, LABEL_SUFFIXES), path)
    images_by_key = {_stem(path, IMAGE_SUFFIXES): path for path in image_paths}
    unlabelled = sorted(key for key in images_by_key if key not in labels_by_key)
    if unlabelled:
        raise UserError('%d of %d images have no label under %s, e.g. %s' % (
            len(unlabelled), len(image_paths), labels_glob,
            ', '.join(os.path.basename(images_by_key[k]) for k in unlabelled[:3])))
    keys = sorted(images_by_key)
    return [images_by_key[k] for k in keys], [labels_by_key[k] for k in keys]


def label_lookup(label_path, label_set):
    """uint8 [256] table from the values stored in this label file to training ids.

    `*_labelTrainIds.png` files hold training ids of the chosen set (as `prepare` writes them);
    the official `*_gtFine_labelTrainIds.png` hold the 19 benchmark classes only.
    """
    stem = _stem(label_path, ())
    if stem.endswith('_gtFine' + TRAIN_ID_SUFFIX) and label_set.name != 'cityscapes':
        raise UserError('%s holds the 19 Cityscapes benchmark classes, not the %s label set: '
                        'use the *_gtFine_labelIds.png files' % (label_path, label_set.name))
    if stem.endswith(TRAIN_ID_SUFFIX):
        table = np.arange(256, dtype=np.uint8)
        table[label_set.num_classes:] = label_set.ignore_id
        return table
    return label_set.id_to_train_id


def check_image_shape(image_shape):
    height, width = image_shape
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise UserError('image shape %dx%d is not a positive multiple of 32' % (height, width))
    return int(height), int(width)


def read_image(path):
    """uint8 RGB [h, w, 3]; grayscale and RGBA are converted."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert('RGB'))
    except (OSError, ValueError) as error:
        raise UserError('cannot read image %s: %s' % (path, error)) from None


def read_label(path):
    """uint8 [h, w] of stored values; palette PNGs give their palette indices."""
    try:
        with Image.open(path) as image:
            if image.mode not in ('L', 'P'):
                raise UserError('label image %s has mode %s, expected a single-channel PNG'
                                % (path, image.mode))
            return np.asarray(image)
    except OSError as error:
        raise UserError('cannot read label image %s: %s' % (path, error)) from None


def _resize(array, image_shape, resample):
    height, width = image_shape
    if array.shape[:2] == (height, width):
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


def load_sample(image_path, label_path, lookup, image_shape):
    """The per-sample function of both pipelines: decode, resize, map to training ids.

    Images are resized bilinearly, labels with nearest neighbour only (bilinear would invent
    class ids at every boundary). Returns uint8 image [h, w, 3] and uint8 label [h, w].
    """
    image = read_image(image_path)
    label = read_label(label_path)
    if label.shape != image.shape[:2]:
        raise UserError('label %s is %dx%d but its image is %dx%d' % (
            label_path, label.shape[1], label.shape[0], image.shape[1], image.shape[0]))
    image = _resize(image, image_shape, Image.BILINEAR)
    label = _resize(lookup[label], image_shape, Image.NEAREST)
    return image, label


class Dataset:
    """Image/label pairs of one split, mapped to one label set at one image shape."""

    def __init__(self, images_glob, labels_glob, label_set, image_shape):
        self.image_paths, self.label_paths = find_pairs(images_glob, labels_glob)
        self.label_set = label_set
        self.image_shape = check_image_shape(image_shape)
        self.lookups = [label_lookup(path, label_set) for path in self.label_paths]

    def __len__(self):
        return len(self.image_paths)

    def sample(self, index):
        return load_sample(self.image_paths[index], self.label_paths[index],
                           self.lookups[index], self.image_shape)

    def label(self, index):
        """The training-id label of one sample at the dataset's image shape."""
        label = read_label(self.label_paths[index])
        return _resize(self.lookups[index][label], self.image_shape, Image.NEAREST)

    def steps_per_epoch(self, batch_size):
        return -(-len(self) // batch_size)

    def order(self, epoch, seed):
        """The sample order of one epoch: a fresh permutation each epoch, reproducible."""
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    def _epoch_orders(self, epochs, seed, start_step, batch_size, shuffle):
        """[(epoch, sample order)] from the batch `start_step` on (to resume mid-epoch)."""
        steps = self.steps_per_epoch(batch_size)
        first_epoch, skip = divmod(start_step, steps)
        for epoch in range(first_epoch, epochs):
            order = self.order(epoch, seed) if shuffle else np.arange(len(self))
            yield epoch, order[skip * batch_size:] if epoch == first_epoch else order

    def generator(self, batch_size, epochs=1, seed=0, start_step=0, shuffle=True):
        """Pure-python pipeline: yields (images [b, h, w, 3], labels [b, h, w]) uint8 batches.

        Each epoch is a fresh permutation; only its last batch may be short.
        """
        for _, order in self._epoch_orders(epochs, seed, start_step, batch_size, shuffle):
            for first in range(0, len(order), batch_size):
                samples = [self.sample(i) for i in order[first:first + batch_size]]
                yield np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])

    def tf_dataset(self, batch_size, epochs=1, seed=0, start_step=0, shuffle=True):
        """tf.data pipeline yielding the same batches as generator(): parallel decode
        through the same load_sample, batch, prefetch."""
        height, width = self.image_shape

        def _load(index):
            return self.sample(int(index))

        def _map(index):
            image, label = tf.numpy_function(_load, [index], (tf.uint8, tf.uint8),
                                             stateful=False)
            return (tf.ensure_shape(image, [height, width, 3]),
                    tf.ensure_shape(label, [height, width]))

        # One dataset per epoch, so that an epoch's short last batch stays its own.
        dataset = None
        for _, order in self._epoch_orders(epochs, seed, start_step, batch_size, shuffle):
            epoch = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
            epoch = epoch.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            epoch = epoch.batch(batch_size)
            dataset = epoch if dataset is None else dataset.concatenate(epoch)
        if dataset is None:
            raise UserError('nothing left to train: start step %d is past %d epochs'
                            % (start_step, epochs))
        return dataset.prefetch(2)
