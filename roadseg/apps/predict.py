"""The predict action: class ids of images through a loaded model, and their colour overlays
and label files written to a run folder. evaluate and video predict through predict_batch.
"""
import collections
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

import data_loader
import helper
from roadseg.deploy import loader


def predict_batch(model, images, keep_size=False):
    """Class ids, uint8 [h, w] at each image's own size, for a list of same-size RGB images.

    The network sees each image resized to the model's shape (the prediction is then resized
    back with nearest neighbour, never interpolated) or, with keep_size, at its own size padded
    to multiples of 32 (the padding cut off again).
    """
    height, width = images[0].shape[:2]
    inputs = np.stack([loader.network_input(image, model.image_shape, keep_size)
                       for image in images])
    outputs = model.predict(inputs)
    if keep_size:
        return [output[:height, :width] for output in outputs]
    if outputs.shape[1:] == (height, width):
        return list(outputs)
    return [np.asarray(Image.fromarray(output).resize((width, height), Image.NEAREST))
            for output in outputs]


def read_ahead(paths, read, depth):
    """Yields (path, read(path)) in order, reading up to `depth` files ahead in a thread."""
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = collections.deque()
        for path in paths:
            pending.append((path, reader.submit(read, path)))
            if len(pending) > depth:
                done_path, future = pending.popleft()
                yield done_path, future.result()
        while pending:
            done_path, future = pending.popleft()
            yield done_path, future.result()


def same_size_batches(items, batch_size, size_of):
    """Groups consecutive items whose size_of() agrees into lists of at most batch_size."""
    batch = []
    for item in items:
        if batch and (len(batch) == batch_size or size_of(item) != size_of(batch[0])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _save_png(array, path):
    # compress_level 1: zlib's fastest level, for slightly larger files than the default 6.
    Image.fromarray(array).save(path, compress_level=1)


def _write_outputs(image_path, image, class_ids, out_dir, label_set, save_labels):
    """Writes the overlay (and the label files); returns the seconds it took."""
    started = time.perf_counter()
    stem = os.path.splitext(os.path.basename(image_path))[0]
    _save_png(helper.overlay(image, class_ids, label_set.colors),
              os.path.join(out_dir, 'overlays', stem + '.png'))
    if save_labels:
        _save_png(class_ids, os.path.join(out_dir, 'trainIds', stem + '.png'))
        if label_set.train_id_to_id is not None:
            _save_png(label_ids(class_ids, label_set),
                      os.path.join(out_dir, 'labelIds', stem + '.png'))
    return time.perf_counter() - started


def label_ids(class_ids, label_set):
    """Training ids -> the dataset's own label ids (what the Cityscapes evaluator reads)."""
    table = np.zeros(256, np.uint8)  # 0 'unlabeled' for anything that is not a class
    valid = label_set.train_id_to_id >= 0
    table[np.flatnonzero(valid)] = label_set.train_id_to_id[valid]
    return table[class_ids]


def predict_images(model, image_paths, out_dir, keep_size=False, batch_size=1,
                   save_labels=False, images_glob=None):
    """Colour overlays (and with save_labels trainIds/labelIds PNGs) of every image in out_dir.
    images_glob: what the paths were found by, for the line that names the run.

    Overlays are drawn and written in a second thread while the model computes the next batch.
    """
    folders = ['overlays'] + (['trainIds'] if save_labels else []) + (
        ['labelIds'] if save_labels and model.label_set.train_id_to_id is not None else [])
    for folder in folders:
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    print('Predicting on test images %s to: %s' % (
        images_glob or '(%d images)' % len(image_paths), out_dir), flush=True)
    model_seconds, write_seconds, writes = [], [], collections.deque()
    with ThreadPoolExecutor(max_workers=1) as writer, \
            tqdm(total=len(image_paths), desc='Predict', unit='img') as bar:
        # One batch ahead: decoding a 2048x1024 PNG takes a fraction of a model call, and each
        # image read ahead holds 6 MB.
        loaded = read_ahead(image_paths, data_loader.read_image, batch_size)
        for batch in same_size_batches(loaded, batch_size, lambda item: item[1].shape):
            started = time.perf_counter()
            outputs = predict_batch(model, [image for _, image in batch], keep_size)
            model_seconds.append((time.perf_counter() - started) / len(batch))
            for (path, image), class_ids in zip(batch, outputs):
                writes.append(writer.submit(_write_outputs, path, image, class_ids, out_dir,
                                            model.label_set, save_labels))
            while writes and (writes[0].done() or len(writes) > 2 * batch_size):
                write_seconds.append(writes.popleft().result())
            bar.set_postfix_str(_timings(model_seconds, write_seconds), refresh=False)
            bar.update(len(batch))
        write_seconds.extend(future.result() for future in writes)
    return dict(images=len(image_paths), model_ms=1000 * np.mean(model_seconds),
                write_ms=1000 * np.mean(write_seconds))


def _timings(model_seconds, write_seconds):
    text = 'last tf call %.0f ms, avg tf %.0f ms' % (1000 * model_seconds[-1],
                                                     1000 * np.mean(model_seconds))
    if write_seconds:
        text += ', last img %.0f ms, avg %.0f ms' % (1000 * write_seconds[-1],
                                                    1000 * np.mean(write_seconds))
    return text
