"""Test-time augmentation and sliding windows: the views of an image that the model sees (at
each scale, mirrored, in overlapping tiles) and their softmax probabilities averaged.

The image a view is made of is the one the network sees without them (`base`): resized to the
model's shape, or at its own size with --keep_size. At scale s it is resized (bilinear) to
round(s * h) x round(s * w); with flip it is also mirrored. Each such image is run whole, or in
tiles placed as mmsegmentation's slide mode places them; every input is padded at the bottom and
right to multiples of 32 as --keep_size pads, the padding cut off the output. The tiles'
probabilities are averaged where they overlap, each scale's are resized back to the base's size
(bilinear) and the mirrored ones mirrored back, and all views averaged: the prediction is their
argmax. DeepLab (Chen et al., 2018) and mmsegmentation's aug_test average the same way.
"""
import numpy as np
from PIL import Image

import data_loader


def one_plain_view(inference, base_shape):
    """Whether inference is one run of the whole base image (h, w) as the network sees it
    without augmentation: scale 1, no flip, no tile or one that covers the image."""
    tile = inference.tile
    return inference.scales == (1.0,) and not inference.flip and (
        tile is None or (tile[0] >= base_shape[0] and tile[1] >= base_shape[1]))


def scaled_size(shape, scale):
    """(round(scale * h), round(scale * w)), at least one pixel a side."""
    return tuple(max(1, int(side * scale + 0.5)) for side in shape)


def tile_boxes(shape, tile, overlap):
    """(top, left, bottom, right) of the windows over an image of shape (h, w): tile-sized,
    tile - round(tile * overlap) apart, the last of each row and column moved back to end at
    the border (mmsegmentation's slide mode), so that every window lies inside the image; a
    side shorter than the tile has one window of its whole length."""
    def starts(length, size):
        stride = max(1, size - int(round(size * overlap)))
        count = max(length - size + stride - 1, 0) // stride + 1
        return [max(min(index * stride, length - size), 0) for index in range(count)]

    (height, width), (tile_height, tile_width) = shape, tile
    return [(top, left, min(top + tile_height, height), min(left + tile_width, width))
            for top in starts(height, tile_height) for left in starts(width, tile_width)]


def _resize_probabilities(probabilities, shape):
    """float32 [h, w, classes] -> [shape, classes], each class resized bilinearly (PIL's
    filter, as the images are; it averages over the footprint when shrinking)."""
    if probabilities.shape[:2] == tuple(shape):
        return probabilities
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(probabilities[..., index]))
                                .resize(shape[::-1], Image.BILINEAR))
                     for index in range(probabilities.shape[-1])], axis=-1)


def _windows_probabilities(model, images, tile, overlap, batch_size):
    """float32 [h, w, classes] per same-size uint8 image: the mean probability of the windows
    over each pixel (the whole image as one window without tile). Windows of all the images
    go through the model batch_size at a time, each padded as --keep_size pads."""
    shape = images[0].shape[:2]
    boxes = tile_boxes(shape, tile, overlap) if tile else [(0, 0) + shape]
    windows = [(index, box) for index in range(len(images)) for box in boxes]
    counts = np.zeros(shape, np.float32)
    for top, left, bottom, right in boxes:
        counts[top:bottom, left:right] += 1
    sums = [None] * len(images)
    for start in range(0, len(windows), batch_size):
        batch = windows[start:start + batch_size]
        inputs = np.stack([data_loader.network_input(images[index][top:bottom, left:right],
                                                     None, True)
                           for index, (top, left, bottom, right) in batch])
        for (index, (top, left, bottom, right)), probabilities in zip(
                batch, model.probabilities(inputs)):
            if sums[index] is None:
                sums[index] = np.zeros(shape + probabilities.shape[-1:], np.float32)
            sums[index][top:bottom, left:right] += probabilities[:bottom - top, :right - left]
    return [total / counts[..., None] for total in sums]


def averaged_probabilities(model, bases, inference, batch_size=1):
    """float32 [h, w, classes] per same-size uint8 RGB base image (h, w): the mean over
    inference.scales, and mirrored with inference.flip, of the views' probabilities, each
    brought back to (h, w)."""
    shape = bases[0].shape[:2]
    flips = (False, True) if inference.flip else (False,)
    totals = [0.0] * len(bases)
    for scale in inference.scales:
        size = scaled_size(shape, scale)
        scaled = [base if size == shape else np.asarray(
            Image.fromarray(base).resize(size[::-1], Image.BILINEAR)) for base in bases]
        views = [image[:, ::-1] if flipped else image for image in scaled for flipped in flips]
        probabilities = _windows_probabilities(model, views, inference.tile,
                                               inference.tile_overlap, batch_size)
        for index in range(len(bases)):
            # Mirrored back after the resize, and summed per scale beside the plain view: a
            # mirrored image then gives the mirrored sum bit for bit (uint8 resizes commute
            # with mirroring, float ones only nearly, and a + b == b + a).
            pair = [_resize_probabilities(view, shape)[:, ::-1] if flipped
                    else _resize_probabilities(view, shape)
                    for view, flipped in zip(probabilities[index * len(flips):], flips)]
            totals[index] = totals[index] + (pair[0] + pair[1] if inference.flip else pair[0])
    return [total / (len(inference.scales) * len(flips)) for total in totals]
