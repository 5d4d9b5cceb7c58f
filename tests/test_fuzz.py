"""Seeded random damage (truncations, flipped bytes, overwritten headers, inserted bytes) of the
files the tool reads, fed to the readers the actions use: each case reads, or ends in one
UserError line; never another exception."""
import io
import json
import os

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

import data_loader
import mapillary_labels
import synthetic
from helper import UserError
from roadseg import model_dir
from roadseg.apps import video

CASES = 300
VIDEO_CASES = 40


def _mutate(data, rng):
    """One random damage of data."""
    data = bytearray(data)
    kind = rng.integers(5)
    if kind == 0 or not data:  # cut short
        return bytes(data[:rng.integers(len(data) + 1)])
    if kind == 1:  # a few flipped bytes anywhere
        for _ in range(rng.integers(1, 9)):
            data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
        return bytes(data)
    if kind == 2:  # the header overwritten
        end = min(len(data), 64)
        data[:end] = rng.integers(0, 256, end, dtype=np.uint8).tobytes()
        return bytes(data)
    if kind == 3:  # bytes inserted
        at = rng.integers(len(data) + 1)
        return bytes(data[:at]) + rng.integers(0, 256, rng.integers(1, 64),
                                               dtype=np.uint8).tobytes() + bytes(data[at:])
    start = rng.integers(len(data))  # a run zeroed
    data[start:start + int(rng.integers(1, 256))] = bytes(min(255, len(data) - start))
    return bytes(data)


def _image_bytes(fmt):
    buffer = io.BytesIO()
    Image.fromarray(synthetic.random_image(48, 64, 0)).save(buffer, format=fmt)
    return buffer.getvalue()


def _label_bytes(mode):
    labels = np.random.default_rng(0).integers(0, 34, (48, 64)).astype(np.uint8)
    image = Image.fromarray(labels)
    if mode == 'P':
        image = image.convert('P')
        image.putpalette(list(range(256)) * 3)
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def _model_config(folder):
    config = model_dir.read_model_config(folder)
    model_dir.check_config(config, folder)
    data_loader.label_set_of_config(config, os.path.join(folder, model_dir.CONFIG_FILE))


CONFIG = json.dumps({'label_set': 'cityscapes', 'image_shape': [64, 128], 'num_classes': 19,
                     'input_tensor': 'image_input:0', 'output_tensor': 'predictions:0',
                     'label_table': None}).encode()
VISTAS = json.dumps({'labels': [{'name': label.name, 'color': list(label.color)}
                                for label in mapillary_labels.LABELS_V12]}).encode()

# name: (valid bytes, file name, reader of the folder holding the file)
FORMATS = {
    'PNG image': (lambda: _image_bytes('PNG'), 'a.png',
                  lambda folder: data_loader.read_image(os.path.join(folder, 'a.png'))),
    'JPEG image': (lambda: _image_bytes('JPEG'), 'a.jpg',
                   lambda folder: data_loader.read_image(os.path.join(folder, 'a.jpg'))),
    'label PNG': (lambda: _label_bytes('L'), 'a.png', lambda folder: data_loader.read_label(
        os.path.join(folder, 'a.png'), data_loader.get_label_set('cityscapes'))),
    'palette label PNG': (lambda: _label_bytes('P'), 'a.png', lambda folder: (
        data_loader.read_label(os.path.join(folder, 'a.png'),
                               data_loader.get_label_set('mapillary')))),
    'fcn8s_config.json': (lambda: CONFIG, model_dir.CONFIG_FILE, _model_config),
    'Mapillary config.json': (lambda: VISTAS, 'config.json', lambda folder: (
        data_loader.check_label_files(os.path.join(folder, '*.png'),
                                      data_loader.get_label_set('mapillary')))),
}


def _fuzz(tmp_path, valid, name, read, cases, seed):
    rng = np.random.default_rng(seed)
    read(_write(tmp_path, name, valid))  # the undamaged file reads
    outcomes = {'read': 0, 'refused': 0}
    for case in range(cases):
        folder = _write(tmp_path, name, _mutate(valid, rng))
        try:
            read(folder)
            outcomes['read'] += 1
        except UserError as error:
            assert len(str(error).splitlines()) == 1, (case, str(error))
            outcomes['refused'] += 1
    return outcomes


def _write(tmp_path, name, data):
    with open(os.path.join(str(tmp_path), name), 'wb') as f:
        f.write(data)
    return str(tmp_path)


@pytest.mark.parametrize('kind', sorted(FORMATS))
def test_damaged_files_read_or_end_in_one_line(tmp_path, kind):
    make, name, read = FORMATS[kind]
    outcomes = _fuzz(tmp_path, make(), name, read, CASES, seed=sorted(FORMATS).index(kind))
    assert outcomes['refused'] > CASES // 10  # the damage reached the readers


@pytest.mark.end_to_end  # ffmpeg in a subprocess for every case
def test_damaged_videos_read_or_end_in_one_line(tmp_path):
    path = str(tmp_path / 'source.mp4')
    writer = imageio_ffmpeg.write_frames(path, (64, 48), fps=5, macro_block_size=16)
    writer.send(None)
    for seed in range(10):
        writer.send(synthetic.random_image(48, 64, seed).tobytes())
    writer.close()
    with open(path, 'rb') as f:
        valid = f.read()
    outcomes = _fuzz(tmp_path, valid, 'a.mp4',
                     lambda folder: video.check_video(os.path.join(folder, 'a.mp4')),
                     VIDEO_CASES, seed=7)
    assert outcomes['refused'] > 0
