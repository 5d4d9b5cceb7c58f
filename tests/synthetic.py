"""Tiny network tables and Cityscapes-layout files written with PIL, shared by the tests."""
import os

import numpy as np
from PIL import Image

# A VGG16-shaped encoder small enough for CPU tests: (block, filters, convs).
TINY_VGG16 = ((1, 4, 1), (2, 4, 1), (3, 8, 1), (4, 8, 1), (5, 8, 1))
TINY_FC_CHANNELS = 16


def image_path(root, city, seq, split='train', frame=19):
    return os.path.join(str(root), 'leftImg8bit', split, city,
                        '%s_%06d_%06d_leftImg8bit.png' % (city, seq, frame))


def label_path(root, city, seq, split='train', frame=19, kind='labelIds', ext='png'):
    return os.path.join(str(root), 'gtFine', split, city,
                        '%s_%06d_%06d_gtFine_%s.%s' % (city, seq, frame, kind, ext))


def write_png(path, array, palette=None):
    """uint8 [h, w] -> 'L' PNG ('P' with a palette), [h, w, 3] -> RGB, [h, w, 4] -> RGBA."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(np.asarray(array, np.uint8))
    if palette is not None:
        image.putpalette(palette)  # 'L' -> 'P', the stored values become palette indices
    image.save(path)
    return path


def write_sample(root, city, seq, image, label, split='train', kind='labelIds'):
    """Writes one image and its label image; returns (image_path, label_path)."""
    return (write_png(image_path(root, city, seq, split), image),
            write_png(label_path(root, city, seq, split, kind=kind), label))


def random_image(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
