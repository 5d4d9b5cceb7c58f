"""`python main.py prepare`: a resized copy of a dataset split, to train from without decoding
full-size images (Mapillary's are up to 4000x3000 JPEGs) at every step.

The copy keeps the dataset's layout under another root, so training reads it with the same
flags and `--data_root`. Images are resized bilinearly (same file format, JPEGs at quality 95),
labels with nearest neighbour, already mapped to the label set's training ids and written as
`<name>_labelTrainIds.png` (which data_loader.label_lookup reads as training ids). A manifest at
the root records the label set and size, so that a copy is never read with another label set
nor completed with other settings. Every file is written to `<name>.partial` and renamed into
place: a file under its final name is complete, and an interrupted run is simply started again.
"""
import concurrent.futures
import math
import os
import shutil

from PIL import Image
from tqdm import tqdm

import data_loader
import helper
from helper import UserError
from roadseg import file_pairs

MANIFEST = data_loader.PREPARED_MANIFEST
PARTIAL_SUFFIX = '.partial'
SAVE_OPTIONS = {'.png': dict(format='PNG'), '.jpg': dict(format='JPEG', quality=95),
                '.jpeg': dict(format='JPEG', quality=95)}


def default_cover_shape(image_shape, scale_range):
    """The size prepared images must cover: the training crop times the largest random scale,
    so the most zoomed-in crop of training still sees the prepared image at full resolution."""
    factor = max(1.0, scale_range[1])
    return tuple(int(math.ceil(side * factor)) for side in image_shape)


def prepared_size(source_size, cover_shape):
    """(height, width) of the smallest copy covering cover_shape at the source's aspect; images
    already that small are never enlarged."""
    height, width = source_size
    scale = max(cover_shape[0] / height, cover_shape[1] / width)
    if scale >= 1:
        return height, width
    return (max(cover_shape[0], int(round(height * scale))),
            max(cover_shape[1], int(round(width * scale))))


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def _check_output_root(output_root, source_root, settings):
    """The output is outside the source, and new, or an earlier copy with the same settings."""
    if _inside(output_root, source_root) or _inside(source_root, output_root):
        raise UserError('--prepared_dir %s and the dataset %s must not contain one another'
                        % (output_root, source_root))
    manifest = os.path.join(output_root, MANIFEST)
    if os.path.exists(manifest):
        found = helper.read_json(manifest)
        if found != settings:
            raise UserError('%s was prepared with %s; this run asks for %s: choose another '
                            '--prepared_dir' % (output_root, found, settings))
    elif os.path.isdir(output_root) and os.listdir(output_root):
        raise UserError('%s exists and was not written by prepare: choose another '
                        '--prepared_dir' % output_root)
    else:
        os.makedirs(output_root, exist_ok=True)
        helper.write_json(manifest, settings)


def _output_path(path, source_root, output_root, new_name=None):
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(source_root))
    if relative.startswith(os.pardir):
        raise UserError('%s is not under the dataset root %s: pass --data_root' % (path,
                                                                                source_root))
    if new_name is not None:
        relative = os.path.join(os.path.dirname(relative), new_name)
    return os.path.join(output_root, relative)


def _save(write, path):
    """write(path + PARTIAL_SUFFIX), then rename into place: no half-written file has the final
    name, and a rerun writes over what a killed run left."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    helper.write_file(path, write, path + PARTIAL_SUFFIX)


def _image_size(path):
    try:
        with Image.open(path) as image:
            return image.size[1], image.size[0]
    except data_loader.DECODE_ERRORS as error:  # a decompression bomb among them
        raise UserError('cannot read image %s: %s' % (path, helper.first_line(error))) from None


def _prepare_one(job):
    """Writes the missing files of one sample: its resized image and training-id label."""
    image_path, label_path, tables, image_out, label_out, cover_shape, label_set = job
    label = data_loader.read_label(label_path, label_set)
    if _image_size(image_path) != label.shape:
        raise UserError('label %s is %dx%d but its image is %dx%d' % (
            label_path, label.shape[1], label.shape[0], *_image_size(image_path)[::-1]))
    size = prepared_size(label.shape, cover_shape)
    if not os.path.exists(label_out):
        train_ids = data_loader.to_train_ids(label, label_path, label_set, *tables)
        train_ids = data_loader.resize(train_ids, size, Image.NEAREST)
        _save(lambda path: Image.fromarray(train_ids).save(path, format='PNG'), label_out)
    if not os.path.exists(image_out):
        if size == label.shape:  # already small enough: the file itself, bit for bit
            _save(lambda path: shutil.copyfile(image_path, path), image_out)
        else:
            image = data_loader.resize(data_loader.read_image(image_path), size, Image.BILINEAR)
            options = SAVE_OPTIONS[os.path.splitext(image_out)[1].lower()]
            _save(lambda path: Image.fromarray(image).save(path, **options), image_out)


def prepare_split(images_glob, labels_glob, source_root, output_root, label_set, cover_shape,
                  workers, desc='Prepare', pairs=None):
    """Copies one split, skipping the samples already done; returns (samples, written).
    pairs: (image_paths, label_paths) when the caller has paired them."""
    image_paths, label_paths = pairs or data_loader.find_pairs(images_glob, labels_glob)
    data_loader.check_label_files(labels_glob, label_set)
    settings = {'label_set': label_set.name, 'cover_shape': list(cover_shape),
                'source': os.path.abspath(source_root)}
    _check_output_root(output_root, source_root, settings)
    with helper.folder_lock(output_root, 'prepare'):  # a second prepare of the folder stops
        return _copy_split(image_paths, label_paths, source_root, output_root, label_set,
                           cover_shape, workers, desc)


def _copy_split(image_paths, label_paths, source_root, output_root, label_set, cover_shape,
                workers, desc):
    jobs = []
    for image_path, label_path in zip(image_paths, label_paths):
        # KITTI's road and lane truth keep their names: the dataset's globs tell them apart.
        new_name = (file_pairs.stem(label_path, file_pairs.LABEL_SUFFIXES)
                    + file_pairs.TRAIN_ID_SUFFIX + '.png')
        # (None, None) for the files whose stored values decide them, as they are read
        tables = data_loader.label_tables(label_path, label_set)
        jobs.append((image_path, label_path, tables,
                     _output_path(image_path, source_root, output_root),
                     _output_path(label_path, source_root, output_root, new_name),
                     tuple(cover_shape), label_set))
    todo = [job for job in jobs if not (os.path.exists(job[3]) and os.path.exists(job[4]))]
    # PIL decodes, resizes and encodes with the GIL released: threads use every core.
    pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))
    try:
        with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc,
                  unit='image') as bar:
            for _ in pool.map(_prepare_one, todo):
                bar.update(1)
    except KeyboardInterrupt as interrupt:
        # The files being written are finished first: each is renamed into place only whole.
        pool.shutdown(cancel_futures=True)
        done = sum(os.path.exists(job[3]) and os.path.exists(job[4]) for job in jobs)
        interrupt.message = ('interrupted: %d of %d samples in %s; the same command goes on '
                             'from there' % (done, len(jobs), output_root))
        raise
    finally:
        pool.shutdown(cancel_futures=True)
    return len(jobs), len(todo)
