"""The predict action: class ids of images through a loaded model, and their colour overlays,
label and probability files written to a run folder. evaluate and video predict through
predict_batch and predict_outputs.
"""
import collections
import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

import data_loader
import helper
from roadseg import specs
from roadseg.apps import tta

# --keep_size runs an image whole up to Cityscapes' 2048x1024 pixels; a larger one (Mapillary's
# 4000x3000) goes through the network in windows of KEEP_SIZE_TILE, so that memory stays bounded.
KEEP_SIZE_PIXELS = 2048 * 1024
KEEP_SIZE_TILE = (1024, 1024)


def predict_batch(model, images, keep_size=False, inference=None, batch_size=1):
    """Class ids, uint8 [h, w] at each image's own size, for a list of same-size RGB images
    (see predict_outputs)."""
    return [class_ids for class_ids, _ in predict_outputs(model, images, keep_size, inference,
                                                          batch_size)]


def predict_outputs(model, images, keep_size=False, inference=None, batch_size=1):
    """[(class ids uint8 [h, w], probabilities float32 [h, w, classes] or None)] at each image's
    own size, for a list of same-size RGB images; probabilities with inference.save_probs.

    The network sees each image resized to the model's shape (the prediction is then resized
    back with nearest neighbour, never interpolated) or, with keep_size, at its own size padded
    to multiples of 32 (the padding cut off again), in KEEP_SIZE_TILE windows when larger than
    KEEP_SIZE_PIXELS. inference (specs.Inference) other than one
    plain view: the argmax of tta.averaged_probabilities of that image, whose views go
    through the model batch_size at a time; one plain view is one run's own argmax.
    """
    inference = inference or specs.Inference()
    height, width = images[0].shape[:2]
    if keep_size and inference.tile is None and height * width > KEEP_SIZE_PIXELS:
        if not getattr(model, 'has_logits', False):
            raise helper.UserError(
                '%dx%d images are above the %d pixels --keep_size runs whole, and the %s model '
                'cannot predict in windows: resize them, or use a model folder'
                % (height, width, KEEP_SIZE_PIXELS, model.kind))
        inference = dataclasses.replace(inference, tile=KEEP_SIZE_TILE)
    if not tta.one_plain_view(inference, (height, width) if keep_size else model.image_shape):
        inference.check_model(model)
        bases = [image if keep_size else data_loader.network_input(image, model.image_shape, False)
                 for image in images]
        probabilities = tta.averaged_probabilities(model, bases, inference, batch_size)
        outputs = [np.argmax(each, axis=-1).astype(np.uint8) for each in probabilities]
    else:
        inputs = np.stack([data_loader.network_input(image, model.image_shape, keep_size)
                           for image in images])
        if inference.save_probs:
            inference.check_model(model)
            outputs, probabilities = model.probabilities(inputs, with_class_ids=True)
        else:
            outputs = model.predict(inputs)
    if not inference.save_probs:
        probabilities = [None] * len(images)
    return [_at_size(class_ids, each, height, width, keep_size)
            for class_ids, each in zip(outputs, probabilities)]


def _at_size(class_ids, probabilities, height, width, keep_size):
    """(class ids, probabilities or None) of one input brought to height x width: the padding
    cut off (keep_size), or resized with nearest neighbour, class by class alike."""
    if keep_size:
        return class_ids[:height, :width], (None if probabilities is None
                                            else probabilities[:height, :width])
    if class_ids.shape == (height, width):
        return class_ids, probabilities
    if probabilities is not None:
        probabilities = np.stack([_nearest(probabilities[..., index], height, width)
                                  for index in range(probabilities.shape[-1])], axis=-1)
    return _nearest(class_ids, height, width), probabilities


def _nearest(array, height, width):
    return np.asarray(Image.fromarray(np.ascontiguousarray(array)).resize((width, height),
                                                                         Image.NEAREST))


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
    # Written beside and renamed: a full disk or Ctrl-C leaves no half file under the name.
    helper.write_file(path, lambda temporary: Image.fromarray(array).save(
        temporary, format='PNG', compress_level=1))


def _write_outputs(image_path, image, class_ids, out_dir, label_set, save_labels,
                   probabilities=None, save_probs=None):
    """Writes the overlay (and the label and probability files); returns the seconds it took."""
    started = time.perf_counter()
    stem = os.path.splitext(os.path.basename(image_path))[0]
    _save_png(helper.overlay(image, class_ids, label_set.colors),
              os.path.join(out_dir, 'overlays', stem + '.png'))
    if save_labels:
        _save_png(class_ids, os.path.join(out_dir, 'trainIds', stem + '.png'))
        if label_set.train_id_to_id is not None:
            _save_png(label_ids(class_ids, label_set),
                      os.path.join(out_dir, 'labelIds', stem + '.png'))
    if save_probs:
        write_probabilities(out_dir, stem, class_ids, probabilities, save_probs)
    return time.perf_counter() - started


def probability_folders(save_probs):
    """The folders write_probabilities writes into."""
    return {None: [], 'confidence': ['confidences'],
            'all': ['confidences', 'probabilities']}[save_probs]


def write_probabilities(out_dir, stem, class_ids, probabilities, save_probs='confidence'):
    """confidences/<stem>.png: the probability of each pixel's class (uint8 [h, w] class ids,
    float32 [h, w, classes] probabilities) as round(p * 65535) in a 16-bit PNG; with save_probs
    'all' also probabilities/<stem>.npz, compressed: 'probs', float16 [classes, h, w]."""
    confidence = np.take_along_axis(probabilities, class_ids[..., None].astype(np.intp), -1)
    _save_png(np.round(np.clip(confidence[..., 0], 0, 1) * 65535).astype(np.uint16),
              os.path.join(out_dir, 'confidences', stem + '.png'))
    if save_probs == 'all':
        helper.write_file(os.path.join(out_dir, 'probabilities', stem + '.npz'),
                          lambda temporary: np.savez_compressed(
                              temporary, probs=np.moveaxis(probabilities, -1, 0).astype(
                                  np.float16)))


def label_ids(class_ids, label_set):
    """Training ids -> the dataset's own label ids (what the Cityscapes evaluator reads)."""
    table = np.zeros(256, np.uint8)  # 0 'unlabeled' for anything that is not a class
    valid = label_set.train_id_to_id >= 0
    table[np.flatnonzero(valid)] = label_set.train_id_to_id[valid]
    return table[class_ids]


def predict_images(model, image_paths, out_dir, keep_size=False, batch_size=1,
                   save_labels=False, inference=None, images_glob=None):
    """Colour overlays (and with save_labels trainIds/labelIds PNGs, with inference.save_probs
    confidences and probabilities) of every image in out_dir; inference: a specs.Inference.
    images_glob: what the paths were found by, for the line that names the run.

    Overlays are drawn and written in a second thread while the model computes the next batch.
    """
    inference = inference or specs.Inference()
    inference.check_model(model)
    folders = ['overlays'] + (['trainIds'] if save_labels else []) + (
        ['labelIds'] if save_labels and model.label_set.train_id_to_id is not None else []) + (
        probability_folders(inference.save_probs))
    for folder in folders:
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    print('Predicting on test images %s to: %s' % (
        images_glob or '(%d images)' % len(image_paths), out_dir), flush=True)
    model_seconds, write_seconds, writes = [], [], collections.deque()
    try:
        return _predict_all(model, image_paths, out_dir, keep_size, batch_size, save_labels,
                            inference, model_seconds, write_seconds, writes)
    except KeyboardInterrupt as interrupt:  # the writes under way end first: no partial file
        interrupt.message = 'interrupted: %d of %d images written to %s' % (
            len(write_seconds) + sum(future.done() for future in writes), len(image_paths),
            out_dir)
        raise


def _predict_all(model, image_paths, out_dir, keep_size, batch_size, save_labels, inference,
                 model_seconds, write_seconds, writes):
    with ThreadPoolExecutor(max_workers=1) as writer, \
            tqdm(total=len(image_paths), desc='Predict', unit='img') as bar:
        # One batch ahead: decoding a 2048x1024 PNG takes a fraction of a model call, and each
        # image read ahead holds 6 MB.
        loaded = read_ahead(image_paths, data_loader.read_image, batch_size)
        for batch in same_size_batches(loaded, batch_size, lambda item: item[1].shape):
            started = time.perf_counter()
            outputs = predict_outputs(model, [image for _, image in batch], keep_size,
                                      inference, batch_size)
            model_seconds.append((time.perf_counter() - started) / len(batch))
            for (path, image), (class_ids, probabilities) in zip(batch, outputs):
                writes.append(writer.submit(_write_outputs, path, image, class_ids, out_dir,
                                            model.label_set, save_labels, probabilities,
                                            inference.save_probs))
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
