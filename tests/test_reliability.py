"""Faults during training, bad input and bad flags: what survives, and the one line the user reads.

Tiny VGG16 and 64x128 images throughout; the tests that need real signals, kills or a file size
limit run the tool in a subprocess through tests/tiny_main.py.
"""
import glob
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data_loader
from roadseg.data import demo_data
import fcn8vgg16
import helper
import imageio_ffmpeg
import main
import synthetic
from helper import UserError
from roadseg import model_dir

tf1 = tf.compat.v1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_MAIN = os.path.join(REPO, 'tests', 'tiny_main.py')
STEPS_PER_EPOCH = 4  # 8 training images at batch size 2


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo') / 'demo')
    return demo_data.ensure_demo_dataset(root, split_sizes={'train': 8, 'val': 2, 'test': 1},
                                         video_frames=4)


def _flags(demo_root, tmp_path, *extra, images=None):
    return ['train', '--dataset', 'demo', '--no_val', '--gpu', '0',
            '-ip', images or os.path.join(demo_root, 'leftImg8bit/train/*/*_leftImg8bit.png'),
            '-lp', os.path.join(demo_root, 'gtFine/train'),
            '--image_shape', '64', '128', '-bs', '2', '-ep', '1',
            '-cd', str(tmp_path / 'ckpt'), '-sd', str(tmp_path / 'summaries'),
            '-rd', str(tmp_path / 'runs')] + list(extra)


def _error(capsys, flags):
    """The last stderr line of a run that must fail with exit code 2, checked to be one line."""
    code = main.main(flags, network=synthetic.TINY_NETWORK)
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert 'Traceback' not in err or '--debug' in flags
    line = err.strip().splitlines()[-1]
    assert line.startswith('error: ')
    return line


def _checkpoint_files(ckpt_dir):
    return glob.glob(os.path.join(str(ckpt_dir), 'model.ckpt*'))


def _latest_step(ckpt_dir):
    """The step of the latest checkpoint (0 if none), after reading every tensor of it: all
    there, all finite, and its graph (.meta, which freeze reads) beside it."""
    path = tf.train.latest_checkpoint(str(ckpt_dir))
    if path is None:
        return 0
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
        value = np.asarray(reader.get_tensor(name))
        assert value.dtype.kind != 'f' or np.isfinite(value).all(), name
    assert os.path.exists(path + '.meta')
    return int(path.rsplit('-', 1)[1])


def _spawn(args, log_path, stop_at=None, marker=None, **kwargs):
    """tests/tiny_main.py in a subprocess, output unbuffered into log_path. SIGINT is given
    its default back: a shell's background job starts with it ignored, and Python then never
    turns it into KeyboardInterrupt. stop_at, marker: where the process marks and waits
    (tiny_main's TINY_MAIN_STOP_AT and TINY_MAIN_MARKER)."""
    def _child_setup():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if 'file_size_limit' in kwargs:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (kwargs['file_size_limit'],) * 2)

    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if stop_at:
        env.update(TINY_MAIN_STOP_AT=stop_at, TINY_MAIN_MARKER=str(marker))
    with open(log_path, 'w') as log:
        return subprocess.Popen([sys.executable, TINY_MAIN] + args, stdout=log,
                                stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=_child_setup,
                                env=env)


def _wait_for_marker(marker, process, log_path, limit=120):
    """What the process wrote into the marker file once it stopped at its moment (limit: a
    hung or failed run fails the test)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(marker):
        assert process.poll() is None, open(log_path).read()[-2000:]
        assert time.monotonic() < deadline, 'the process never reached its moment'
        time.sleep(0.05)
    return open(marker).read()


def _wait_for_checkpoint_after(ckpt_dir, step, process, log_path, limit=120):
    """Waits until the process has written a checkpoint past step (limit: a hung run fails)."""
    deadline = time.monotonic() + limit
    while _checkpoint_step(ckpt_dir) <= step:
        assert process.poll() is None, open(log_path).read()[-2000:]
        assert time.monotonic() < deadline, 'no checkpoint after step %d' % step
        time.sleep(0.05)


def _checkpoint_step(ckpt_dir):
    path = tf.train.latest_checkpoint(str(ckpt_dir))
    return int(path.rsplit('-', 1)[1]) if path else 0


# ------------------------------------------------------------------------- faults during training

# Where the kills land, one run after another, each resuming the last: ckpt_every 2, keep 2, 4
# steps an epoch. (tiny_main's moment:count, the checkpoint it names, the step the run trained,
# the latest checkpoint after the kill, files the kill leaves, files it leaves out).
KILLS = (
    ('save-variables:2', 'model.ckpt-4', 4, 2, ['model.ckpt-4.index'], []),
    ('save-graph:2', 'model.ckpt-6', 6, 4, ['model.ckpt-6.meta'], ['model.ckpt-6.index']),
    ('delete-index:1', 'model.ckpt-2', 6, 6, ['model.ckpt-2.data-00000-of-00001'],
     ['model.ckpt-2.index']),
    ('step:2', None, 8, 6, [], ['model.ckpt-8.meta']),  # step 8 trained, its save not begun
)


@pytest.mark.end_to_end
def test_kill_9_at_marked_moments_loses_at_most_ckpt_every_steps(demo_root, tmp_path, tiny_model,
                                                                  capsys):
    """Killed four times, each at a moment the process marks and waits at: three inside a
    save (before the `checkpoint` file names the written variables, between the graph and the
    variables, while deleting an old checkpoint), one after a step whose save is due. Every
    restart resumes the last complete checkpoint, at most ckpt_every steps back; the run then
    ends with only the kept checkpoints in the folder."""
    ckpt_every, ckpt = 2, tmp_path / 'ckpt'
    args = _flags(demo_root, tmp_path, '--ckpt_every', str(ckpt_every), '--keep_checkpoints',
                  '2', '--summary_every', '1')
    last = 0
    for attempt, (stop_at, named, reached, latest, left, absent) in enumerate(KILLS):
        log_path = str(tmp_path / ('kill%d.log' % attempt))
        marker = str(tmp_path / ('kill%d.marker' % attempt))
        process = _spawn(args + ['-ep', '1000'], log_path, stop_at, marker)
        try:
            marked = _wait_for_marker(marker, process, log_path)
        finally:
            process.kill()
            process.wait()
        assert marked == '%s %s' % (stop_at, ckpt / named if named else 'done')
        log = open(log_path).read()
        if last:
            assert 'continuing training after %d steps' % last in log
        assert _latest_step(ckpt) == latest and reached - latest <= ckpt_every
        assert [name for name in left if (ckpt / name).exists()] == left
        assert not [name for name in absent if (ckpt / name).exists()]
        last = latest

    epochs = last // STEPS_PER_EPOCH + 1
    assert main.main(args + ['-ep', str(epochs)], network=tiny_model) == 0
    out = capsys.readouterr().out
    assert 'continuing training after %d steps' % last in out and 'model saved to' in out
    assert _latest_step(ckpt) == epochs * STEPS_PER_EPOCH
    assert glob.glob(str(tmp_path / 'runs' / '*' / 'model' / 'saved_model.pb'))
    # --keep_checkpoints held across the restarts, and nothing of a cut-short save is left.
    state = tf.train.get_checkpoint_state(str(ckpt))
    kept = [os.path.basename(path) for path in state.all_model_checkpoint_paths]
    assert kept == ['model.ckpt-6', 'model.ckpt-8']
    assert sorted(os.listdir(ckpt)) == sorted(
        ['checkpoint', 'fcn8s_config.json'] + [name + kind for name in kept
                                               for kind in ('.data-00000-of-00001', '.index',
                                                            '.meta')])


@pytest.mark.end_to_end
def test_restart_removes_what_cut_short_saves_left(demo_root, tmp_path, tiny_model):
    assert main.main(_flags(demo_root, tmp_path), network=tiny_model) == 0
    ckpt = tmp_path / 'ckpt'
    debris = ['model.ckpt-2.data-00000-of-00001',  # a kill while deleting an old checkpoint
              'model.ckpt-1.index', 'model.ckpt-1.data-00000-of-00001',  # ... or before it
              'model.ckpt-6.data-00000-of-00001.tempstate1234',  # ... while writing one
              'model.ckpt-6.meta', 'model.ckpt-6.meta.tmp0a1b2c', 'checkpoint.tmp0a1b2c']
    for name in debris + ['notes.txt']:
        (ckpt / name).write_bytes(b'x')
    assert main.main(_flags(demo_root, tmp_path, '-ep', '2'), network=tiny_model) == 0
    left = os.listdir(ckpt)
    assert 'notes.txt' in left and not set(debris) & set(left)
    assert _latest_step(ckpt) == 8 and os.path.exists(ckpt / 'model.ckpt-4.index')


@pytest.mark.end_to_end
def test_sigterm_saves_the_current_step_and_exits_143(demo_root, tmp_path):
    log_path = str(tmp_path / 'term.log')
    process = _spawn(_flags(demo_root, tmp_path, '-ep', '1000', '--ckpt_every', '3'), log_path)
    try:
        _wait_for_checkpoint_after(tmp_path / 'ckpt', 0, process, log_path)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 143
    finally:
        process.kill()
        process.wait()
    log = open(log_path).read()
    step = _latest_step(tmp_path / 'ckpt')
    assert 'terminated: checkpoint of step %d saved in %s' % (step, tmp_path / 'ckpt') in log
    assert step >= 3 and 'Traceback' not in log


@pytest.mark.end_to_end
def test_ctrl_c_saves_the_step_it_reached(demo_root, tmp_path, tiny_model, capsys,
                                          monkeypatch):
    handler = signal.getsignal(signal.SIGTERM)
    synthetic.interrupt_after(monkeypatch, 3)
    assert main.main(_flags(demo_root, tmp_path, '-ep', '3'), network=tiny_model) == 130
    # The third step ran to its end: the checkpoint holds it, under its own number.
    assert 'interrupted: checkpoint of step 3 saved in' in capsys.readouterr().out
    assert _latest_step(tmp_path / 'ckpt') == 3
    assert signal.getsignal(signal.SIGTERM) is handler


def _nan_gradient_weight_decay(weight_decay):
    """A weight decay of 0 whose gradient is NaN (the gradient of sqrt(|z|) at 0): the loss
    stays finite, the weights do not. Written so that no graph rewrite can fold it away."""
    total = tf.add_n([tf.reduce_sum(v) for v in tf1.trainable_variables()])
    return tf.sqrt(tf.abs(total - tf.stop_gradient(total)))


@pytest.mark.end_to_end
def test_nan_loss_stops_naming_the_step_and_saves_nothing(demo_root, tmp_path, tiny_model,
                                                          capsys, monkeypatch):
    monkeypatch.setattr(fcn8vgg16, 'weight_decay_loss', lambda _: tf.constant(float('nan')))
    line = _error(capsys, _flags(demo_root, tmp_path, '--ckpt_every', '1'))
    assert 'the loss is nan at step 1' in line
    assert not _checkpoint_files(tmp_path / 'ckpt')


@pytest.mark.end_to_end
def test_weights_that_turned_non_finite_are_never_saved(demo_root, tmp_path, tiny_model,
                                                        capsys, monkeypatch):
    assert main.main(_flags(demo_root, tmp_path), network=tiny_model) == 0
    capsys.readouterr()
    monkeypatch.setattr(fcn8vgg16, 'weight_decay_loss', _nan_gradient_weight_decay)
    line = _error(capsys, _flags(demo_root, tmp_path, '-ep', '2', '--ckpt_every', '1'))
    assert 'a weight is not finite at step 5' in line
    assert 'the checkpoint of step 4 there is intact' in line
    assert _latest_step(tmp_path / 'ckpt') == 4


@pytest.mark.end_to_end
def test_ctrl_c_after_a_step_that_broke_the_weights_saves_nothing(demo_root, tmp_path,
                                                                  tiny_model, capsys,
                                                                  monkeypatch):
    monkeypatch.setattr(fcn8vgg16, 'weight_decay_loss', _nan_gradient_weight_decay)
    synthetic.interrupt_after(monkeypatch, 1)
    line = _error(capsys, _flags(demo_root, tmp_path))
    assert 'a weight is not finite at step 1' in line and str(tmp_path / 'ckpt') in line
    assert not _checkpoint_files(tmp_path / 'ckpt')


@pytest.mark.end_to_end
def test_failed_checkpoint_write_is_one_line_and_keeps_the_last(demo_root, tmp_path,
                                                                tiny_model):
    """A file size limit below the checkpoint's size: the write fails as on a full disk."""
    assert main.main(_flags(demo_root, tmp_path), network=tiny_model) == 0
    data_file, = glob.glob(str(tmp_path / 'ckpt' / 'model.ckpt-4.data-*'))
    log_path = str(tmp_path / 'full.log')
    process = _spawn(_flags(demo_root, tmp_path, '-ep', '2'), log_path,
                     file_size_limit=os.path.getsize(data_file) // 2)
    assert process.wait(timeout=300) == 2
    last_line = open(log_path).read().strip().splitlines()[-1]
    assert last_line.startswith('error: cannot write the checkpoint of step 8 into %s'
                                % (tmp_path / 'ckpt'))
    assert last_line.endswith('the checkpoint of step 4 there is intact')
    assert _latest_step(tmp_path / 'ckpt') == 4
    process = _spawn(_flags(demo_root, tmp_path, '-ep', '2'), str(tmp_path / 'resume.log'))
    assert process.wait(timeout=300) == 0
    assert _latest_step(tmp_path / 'ckpt') == 8


def test_write_json_failure_names_the_file_and_leaves_no_temporary(tmp_path):
    with pytest.raises(UserError, match='cannot write .*missing/config.json'):
        helper.write_json(str(tmp_path / 'missing' / 'config.json'), {'a': 1})
    helper.write_json(str(tmp_path / 'config.json'), {'a': 1})
    helper.write_json(str(tmp_path / 'config.json'), {'a': 2})
    assert os.listdir(tmp_path) == ['config.json'] and helper.read_json(
        str(tmp_path / 'config.json')) == {'a': 2}


# ----------------------------------------------------------------------------------- bad files

def _copy_images(demo_root, folder, broken, kind):
    """The demo's training images in one folder; broken (an index) truncated, as PNG or JPEG.
    Returns (glob of the images, path of the broken file)."""
    os.makedirs(folder)
    paths = sorted(glob.glob(os.path.join(demo_root, 'leftImg8bit/train/*/*.png')))
    broken_path = None
    for index, path in enumerate(paths):
        target = os.path.join(folder, os.path.basename(path))
        if index == broken and kind == 'jpeg':
            target = target[:-len('.png')] + '.jpg'
        Image.open(path).save(target)
        if index == broken:
            data = open(target, 'rb').read()
            open(target, 'wb').write(data[:len(data) // 3])
            broken_path = target
    return os.path.join(folder, '*_leftImg8bit.*'), broken_path


@pytest.mark.end_to_end
@pytest.mark.parametrize('pipeline', ['tfdata', 'generator'])
@pytest.mark.parametrize('kind', ['png', 'jpeg'])
def test_truncated_image_stops_training_naming_it(demo_root, tmp_path, tiny_model, capsys,
                                                  pipeline, kind):
    images, broken = _copy_images(demo_root, str(tmp_path / 'images'), 5, kind)
    line = _error(capsys, _flags(demo_root, tmp_path, '--pipeline', pipeline, images=images))
    assert line.startswith('error: cannot read image %s' % broken)
    assert not _checkpoint_files(tmp_path / 'ckpt')


@pytest.mark.end_to_end
@pytest.mark.parametrize('pipeline', ['tfdata', 'generator'])
def test_skip_bad_files_warns_once_and_counts(demo_root, tmp_path, tiny_model, capsys,
                                              pipeline):
    images, broken = _copy_images(demo_root, str(tmp_path / 'images'), 2, 'jpeg')
    flags = _flags(demo_root, tmp_path, '--pipeline', pipeline, '--skip_bad_files', '-ep', '2',
                   images=images)
    assert main.main(flags, network=tiny_model) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if 'skipped (--skip_bad_files)' in line]
    assert len(warnings) == 1 and broken in warnings[0]
    assert '1 of 8 training samples skipped so far (--skip_bad_files)' in out
    assert _latest_step(tmp_path / 'ckpt') == 2 * STEPS_PER_EPOCH  # every step still taken


def test_skipped_samples_are_blank_and_alike_in_both_pipelines(tmp_path):
    for seq in range(3):
        synthetic.write_sample(tmp_path, 'aachen', seq, synthetic.random_image(32, 64, seq),
                               np.full((32, 64), 7, np.uint8))
    with open(synthetic.label_path(tmp_path, 'aachen', 1), 'wb') as f:
        f.write(b'\x89PNG broken')
    dataset = data_loader.Dataset(str(tmp_path / 'leftImg8bit'), str(tmp_path / 'gtFine'),
                                  data_loader.get_label_set('cityscapes'), (32, 64),
                                  skip_bad_files=True)
    batches = list(dataset.generator(2, shuffle=False))
    synthetic.assert_same_batches(batches, synthetic.tf_batches(dataset, 2, shuffle=False))
    images, labels = batches[0]
    assert images.shape == (2, 32, 64, 3)  # the batch keeps its size
    assert (labels[1] == data_loader.IGNORE_ID).all() and (labels[0] == 0).all()
    assert dataset.skipped == {1}


@pytest.mark.end_to_end
def test_corrupt_label_stops_training_naming_it(demo_root, tmp_path, tiny_model, capsys):
    labels = tmp_path / 'labels'
    labels.mkdir()
    for path in glob.glob(os.path.join(demo_root, 'gtFine/train/*/*_labelIds.png')):
        (labels / os.path.basename(path)).write_bytes(open(path, 'rb').read())
    broken = sorted(labels.iterdir())[0]
    broken.write_bytes(broken.read_bytes()[:100])
    flags = _flags(demo_root, tmp_path)
    flags[flags.index('-lp') + 1] = str(labels)
    line = _error(capsys, flags)
    assert line.startswith('error: cannot read label image %s' % broken)


def _write_png16_rgb(path, array):
    """A 16-bit RGB PNG (PIL writes none): signature, IHDR, one IDAT, IEND."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    height, width, _ = array.shape
    rows = b''.join(b'\x00' + array[y].astype('>u2').tobytes() for y in range(height))
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height,
                                                                   16, 2, 0, 0, 0))
                + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


def test_16_bit_images_become_8_bit_rgb(tmp_path):
    gray = np.full((32, 64), 0x7f80, np.uint16)
    gray[:, 32:] = 0xffff
    Image.fromarray(gray).save(tmp_path / 'gray16.png')
    assert Image.open(tmp_path / 'gray16.png').mode.startswith('I')
    image = data_loader.read_image(str(tmp_path / 'gray16.png'))
    assert image.dtype == np.uint8 and image.shape == (32, 64, 3)
    assert (image[:, :32] == 0x7f).all() and (image[:, 32:] == 0xff).all()
    rgb = np.random.default_rng(0).integers(0, 65536, (32, 64, 3)).astype(np.uint16)
    _write_png16_rgb(str(tmp_path / 'rgb16.png'), rgb)
    image = data_loader.read_image(str(tmp_path / 'rgb16.png'))
    np.testing.assert_array_equal(image, (rgb >> 8).astype(np.uint8))


@pytest.mark.end_to_end
def test_label_of_another_size_names_both_files_and_sizes(demo_root, tmp_path, tiny_model,
                                                          capsys):
    labels = tmp_path / 'labels'
    labels.mkdir()
    for path in glob.glob(os.path.join(demo_root, 'gtFine/train/*/*_labelIds.png')):
        Image.open(path).save(labels / os.path.basename(path))
    small = sorted(labels.iterdir())[0]
    Image.open(small).resize((64, 32), Image.NEAREST).save(small)
    flags = _flags(demo_root, tmp_path)
    flags[flags.index('-lp') + 1] = str(labels)
    line = _error(capsys, flags)
    image_name = small.name.replace('_gtFine_labelIds', '_leftImg8bit')
    assert str(small) in line and image_name in line and '64x32' in line
    assert '%dx%d' % demo_data.IMAGE_SHAPE[::-1] in line


def test_label_values_outside_the_set_are_ignored_with_one_warning_per_file(tmp_path, capsys):
    label = np.full((32, 64), 7, np.uint8)  # road
    label[:, :8], label[:, 8:16] = 40, 201  # no Cityscapes label has these ids
    synthetic.write_sample(tmp_path, 'aachen', 0, synthetic.random_image(32, 64, 0), label)
    wide = np.full((32, 64), 7, np.uint16)
    wide[:4] = 1000  # a 16-bit label file
    Image.fromarray(wide).save(synthetic.label_path(tmp_path, 'aachen', 1))
    synthetic.write_png(synthetic.image_path(tmp_path, 'aachen', 1),
                        synthetic.random_image(32, 64, 1))
    dataset = data_loader.Dataset(str(tmp_path / 'leftImg8bit'), str(tmp_path / 'gtFine'),
                                  data_loader.get_label_set('cityscapes'), (32, 64))
    batches = list(dataset.generator(2, epochs=2, shuffle=False))
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 2  # one per file, not one per epoch
    assert 'aachen_000000_000019_gtFine_labelIds.png' in warnings[0] and '40, 201' in warnings[0]
    assert 'aachen_000001_000019_gtFine_labelIds.png' in warnings[1] and '1000' in warnings[1]
    labels = batches[0][1]
    assert (labels[0, :, :16] == 255).all() and (labels[0, :, 16:] == 0).all()
    assert (labels[1, :4] == 255).all() and (labels[1, 4:] == 0).all()


@pytest.mark.end_to_end
def test_labels_without_images_are_counted_and_named(demo_root, tmp_path, tiny_model, capsys):
    flags = _flags(demo_root, tmp_path, images=os.path.join(
        demo_root, 'leftImg8bit/train/*/*_00000[0-2]_*.png'))
    flags[flags.index('-lp') + 1] = os.path.join(demo_root, 'gtFine/train/*/*_labelIds.png')
    line = _error(capsys, flags)
    assert '2 of 8 label images' in line and 'demoville_000003_000019_gtFine_labelIds.png' in line
    # A folder of labels may hold more than the images pick: a warning, and training goes on.
    flags[flags.index('-lp') + 1] = os.path.join(demo_root, 'gtFine/train')
    assert main.main(flags, network=tiny_model) == 0
    assert '2 of 8 label images' in capsys.readouterr().err


@pytest.mark.end_to_end
def test_images_without_labels_are_counted_and_named(demo_root, tmp_path, tiny_model, capsys):
    images, _ = _copy_images(demo_root, str(tmp_path / 'images'), None, 'png')
    synthetic.write_png(str(tmp_path / 'images' / 'extra_000000_000019_leftImg8bit.png'),
                        synthetic.random_image(32, 64, 0))
    line = _error(capsys, _flags(demo_root, tmp_path, images=images))
    assert '1 of 9 images have no label' in line and 'extra_000000_000019_leftImg8bit' in line


# ---------------------------------------------------------------------------- models and videos

CONFIG = {'label_set': 'cityscapes', 'image_shape': [64, 128], 'num_classes': 19,
          'input_tensor': fcn8vgg16.INPUT_TENSOR, 'output_tensor': fcn8vgg16.OUTPUT_TENSOR,
          'encoder': [list(block) for block in synthetic.TINY_VGG16], 'fc_channels': 16}


def _foreign_graph(folder):
    with tf.Graph().as_default() as graph:
        tf.identity(tf1.placeholder(tf.float32, [None, 4], name='x'), name='y')
    with open(os.path.join(folder, 'graph.pb'), 'wb') as f:
        f.write(graph.as_graph_def().SerializeToString())


def _write(folder, name, data):
    with open(os.path.join(folder, name), 'wb') as f:
        f.write(data)


MODEL_FOLDERS = {
    'missing': (None, 'model folder {} does not exist'),
    'someone else\'s': (lambda d: _write(d, 'notes.txt', b'mine'),
                        '{} holds no fcn8s_config.json'),
    'config of something else': (lambda d: helper.write_json(
        os.path.join(d, 'fcn8s_config.json'), {'name': 'x'}), 'has no label_set, image_shape'),
    'no model': (lambda d: helper.write_json(os.path.join(d, 'fcn8s_config.json'), CONFIG),
                 '{} holds neither a SavedModel nor a checkpoint'),
    'foreign frozen graph': (lambda d: (helper.write_json(
        os.path.join(d, 'fcn8s_config.json'), CONFIG), _foreign_graph(d)),
        'the frozen graph in {} has no tensor image_input:0'),
    'corrupt frozen graph': (lambda d: (helper.write_json(
        os.path.join(d, 'fcn8s_config.json'), CONFIG), _write(d, 'graph.pb', b'\x0a\xff' * 9)),
        'cannot read the graph {}/graph.pb'),
    'empty frozen graph': (lambda d: (helper.write_json(
        os.path.join(d, 'fcn8s_config.json'), CONFIG), _write(d, 'graph.pb', b'')),
        'the frozen graph in {} has no tensor image_input:0'),
    'config not JSON': (lambda d: _write(d, 'fcn8s_config.json', b'{"label_set": '),
                        'cannot read {}/fcn8s_config.json: Expecting value'),
    'truncated SavedModel': (lambda d: (
        helper.write_json(os.path.join(d, 'fcn8s_config.json'), CONFIG),
        _write(d, 'saved_model.pb', b'\x08\x01\x12\x05ab')), 'cannot load the model in {}'),
    'corrupt checkpoint': (lambda d: (
        helper.write_json(os.path.join(d, 'fcn8s_config.json'), CONFIG),
        _write(d, 'checkpoint', b'model_checkpoint_path: "model.ckpt-1"\n'),
        _write(d, 'model.ckpt-1.index', b'not an index'),
        _write(d, 'model.ckpt-1.data-00000-of-00001', b'')),
        'cannot load the model in {}'),
}


@pytest.mark.end_to_end
@pytest.mark.parametrize('case', sorted(MODEL_FOLDERS))
def test_model_folder_errors_are_one_line(tmp_path, capsys, case):
    build, message = MODEL_FOLDERS[case]
    model_dir = str(tmp_path / 'model')
    if build is not None:
        os.makedirs(model_dir)
        build(model_dir)
    image = synthetic.write_png(str(tmp_path / 'a.png'), synthetic.random_image(64, 128, 0))
    line = _error(capsys, ['predict', '--gpu', '0', '-ip', image, '-md', model_dir,
                           '-rd', str(tmp_path / 'runs')])
    assert message.format(model_dir) in line
    assert not os.path.exists(tmp_path / 'runs')


@pytest.mark.end_to_end
@pytest.mark.parametrize('data, message', [
    (b'', 'is not a TFLite model'), (b'\0' * 64, 'is not a TFLite model'),
    (b'\0\0\0\0TFL3' + b'\1' * 56,
     'cannot load the TFLite model {}: The model is not a valid Flatbuffer buffer')])
def test_a_damaged_tflite_model_is_one_line(tmp_path, capsys, data, message):
    model_dir = tmp_path / 'model'
    model_dir.mkdir()
    helper.write_json(str(model_dir / 'fcn8s_config.json'), CONFIG)
    _write(str(model_dir), 'model.tflite', data)
    image = synthetic.write_png(str(tmp_path / 'a.png'), synthetic.random_image(64, 128, 0))
    tflite = str(model_dir / 'model.tflite')
    line = _error(capsys, ['predict', '--gpu', '0', '-ip', image, '-md', tflite,
                           '-rd', str(tmp_path / 'runs')])
    assert tflite in line and message.format(tflite) in line
    assert not os.path.exists(tmp_path / 'runs')


def _no_frames_video(path):
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-v', 'error', '-f', 'lavfi', '-i',
                    'sine=duration=1', '-c:a', 'aac', path], check=True)


@pytest.mark.end_to_end
@pytest.mark.parametrize('make, message', [
    (None, 'video {} does not exist'),
    (lambda path: open(path, 'w').write('not a video\n'), '{} is not a readable video'),
    (_no_frames_video, '{} holds no video frames'),
])
def test_video_errors_come_before_any_work(tmp_path, capsys, make, message):
    video_in = str(tmp_path / 'in.mp4')
    if make is not None:
        make(video_in)
    line = _error(capsys, ['video', '--gpu', '0', '-vi', video_in, '-md', str(tmp_path / 'x'),
                           '-rd', str(tmp_path / 'runs')])
    assert line == 'error: ' + message.format(video_in)  # not the missing model: no work done
    assert not os.path.exists(tmp_path / 'runs')


# ------------------------------------------------------------------------------------- flags

@pytest.mark.end_to_end
@pytest.mark.parametrize('flags, message', [
    (['train', '-ep', '-1'], '--epochs -1 must be at least 1'),
    (['train', '-bs', '0'], '--batch_size 0 must be at least 1'),
    (['predict', '-bs', '0'], '--batch_size 0 must be at least 1'),
    (['train', '--gpu_mem', '0'], '--gpu_mem 0 is outside (0, 1]'),
    (['evaluate', '--gpu_mem', '1.5'], '--gpu_mem 1.5 is outside (0, 1]'),
    (['train', '--image_shape', '100', '128'], 'image shape 100x128 is not a positive multiple'),
    (['train', '--dataset', 'kitti'], "argument --dataset: invalid choice: 'kitti'"),
    (['train', '--label_set', 'kitti'], "unknown label set 'kitti'"),
    (['train', '-ep', 'ten'], "argument -ep/--epochs: invalid int value: 'ten'"),
    (['fly'], "argument action: invalid choice: 'fly'"),
    (['train', '--momentum', '1'], '--momentum 1 is outside [0, 1)'),
    (['train', '--optimizer', 'rmsprop'], "argument --optimizer: invalid choice: 'rmsprop'"),
    (['evaluate', '-ip', '/nonexistent/*.png', '-lp', '/nonexistent'],
     'no images match /nonexistent/*.png'),
])
def test_bad_flags_are_one_line_before_any_work(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    code = main.main(flags)
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == ['error: ' + err.strip()[7:]]
    assert message in err
    assert os.listdir(tmp_path) == []  # no run folder, no checkpoint folder, no demo


@pytest.mark.end_to_end
@pytest.mark.parametrize('flags', [
    ['train', '-bs', '0'],
    ['predict', '-ip', '/nonexistent/*.png'],
])
def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch, flags):
    monkeypatch.chdir(tmp_path)
    assert main.main(flags + ['--debug']) == 2
    err = capsys.readouterr().err
    assert 'Traceback (most recent call last)' in err and 'UserError' in err
    assert err.strip().splitlines()[-1].startswith('error: ')


# ---------------------------------------------------------------------- one process per folder

def _lock_of(folder, pid, **fields):
    """A lock file as a process pid of this host wrote it."""
    holder = dict(dict(pid=pid, host=socket.gethostname(), action='train',
                       start=helper.process_start(pid), since='20261206-010203'), **fields)
    (folder / helper.LOCK_FILE).write_text(json.dumps(holder))
    return holder


@pytest.mark.end_to_end
def test_a_folder_another_running_process_holds_is_refused(tmp_path):
    sleeper = subprocess.Popen(['sleep', '60'])
    try:
        holder = _lock_of(tmp_path, sleeper.pid)
        with pytest.raises(UserError) as error:
            with helper.folder_lock(str(tmp_path), 'train'):
                pass
        assert ('%s is in use by train (pid %d on %s, since 20261206-010203)'
                % (tmp_path, sleeper.pid, holder['host'])) in str(error.value)
        assert json.loads((tmp_path / helper.LOCK_FILE).read_text()) == holder
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.end_to_end
@pytest.mark.parametrize('host', ['here', 'elsewhere'])
def test_the_lock_of_a_process_gone_is_taken_over_one_of_another_host_is_not(tmp_path, capsys,
                                                                             host):
    gone = subprocess.Popen(['true'])
    gone.wait()
    _lock_of(tmp_path, gone.pid)
    if host == 'elsewhere':
        holder = json.loads((tmp_path / helper.LOCK_FILE).read_text())
        (tmp_path / helper.LOCK_FILE).write_text(json.dumps(dict(holder, host='other-host')))
        with pytest.raises(UserError, match='pid %d on other-host' % gone.pid):
            with helper.folder_lock(str(tmp_path), 'train'):
                pass
        return
    with helper.folder_lock(str(tmp_path), 'prepare'):
        held = json.loads((tmp_path / helper.LOCK_FILE).read_text())
        assert (held['pid'], held['action']) == (os.getpid(), 'prepare')
    assert os.listdir(tmp_path) == []  # released, and nothing of the stale lock left
    assert ('which is no longer running: taken over' in capsys.readouterr().err)


def test_a_pid_now_of_another_process_is_a_stale_lock(tmp_path):
    """The pid runs, but started at another time than the lock's process: reused."""
    holder = _lock_of(tmp_path, os.getppid())
    (tmp_path / helper.LOCK_FILE).write_text(json.dumps(dict(holder, start=holder['start'] + 1)))
    with helper.folder_lock(str(tmp_path), 'train'):
        assert json.loads((tmp_path / helper.LOCK_FILE).read_text())['pid'] == os.getpid()


@pytest.mark.end_to_end
def test_a_second_training_of_one_folder_stops_and_a_killed_one_s_lock_is_taken_over(
        demo_root, tmp_path, capsys):
    first = _spawn(_flags(demo_root, tmp_path), tmp_path / 'first.log', stop_at='step:1',
                   marker=tmp_path / 'marker')
    try:
        _wait_for_marker(tmp_path / 'marker', first, tmp_path / 'first.log')
        line = _error(capsys, _flags(demo_root, tmp_path))
        assert line.startswith('error: %s is in use by train (pid %d on '
                               % (tmp_path / 'ckpt', first.pid))
    finally:
        first.kill()
        first.wait()
    assert main.main(_flags(demo_root, tmp_path), network=synthetic.TINY_NETWORK) == 0
    assert ('was locked by train (pid %d on %s), which is no longer running: taken over'
            % (first.pid, socket.gethostname())) in capsys.readouterr().err
    assert _latest_step(tmp_path / 'ckpt') == STEPS_PER_EPOCH
    assert not os.path.exists(tmp_path / 'ckpt' / helper.LOCK_FILE)


@pytest.mark.end_to_end
def test_a_second_prepare_into_one_folder_stops(demo_root, tmp_path, capsys):
    out = tmp_path / 'prepared'
    flags = ['prepare', '--dataset', 'demo', '--data_root', demo_root, '--prepared_dir',
             str(out), '--image_shape', '64', '128']
    assert main.main(flags) == 0
    sleeper = subprocess.Popen(['sleep', '60'])
    try:
        _lock_of(out, sleeper.pid, action='prepare')
        line = _error(capsys, flags)
        assert line.startswith('error: %s is in use by prepare (pid %d' % (out, sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------------------ hostile input

def _png_declaring(path, width, height):
    """A small PNG file whose header declares width x height pixels (a decompression bomb)."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))

    path.write_bytes(b'\x89PNG\r\n\x1a\n'
                     + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(b'\0' * 1000)) + chunk(b'IEND', b''))
    return str(path)


def _jpeg_declaring(path, width, height):
    """A real small JPEG whose frame header is rewritten to declare width x height."""
    Image.new('RGB', (16, 16), (90, 120, 60)).save(path, format='JPEG')
    data = bytearray(path.read_bytes())
    frame = data.index(b'\xff\xc0') + 5  # SOF0: length (2), precision (1), then height, width
    data[frame:frame + 4] = struct.pack('>HH', height, width)
    path.write_bytes(bytes(data))
    return str(path)


@pytest.mark.parametrize('make, reader', [
    (_png_declaring, data_loader.read_image), (_jpeg_declaring, data_loader.read_image),
    (_png_declaring, data_loader.read_label)])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, make, reader):
    path = make(tmp_path / 'bomb', 60000, 60000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UserError) as error:
        reader(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mb < 50  # 60000 x 60000 decoded would be 10 GB
    assert path in str(error.value) and '3600000000 pixels' in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_a_large_photo_is_read(tmp_path):
    path = tmp_path / 'large.jpg'
    Image.new('RGB', (6000, 4000), (30, 60, 90)).save(path, quality=90)
    assert data_loader.read_image(str(path)).shape == (4000, 6000, 3)


@pytest.mark.end_to_end
def test_prepare_refuses_a_bomb_with_one_line(tmp_path, capsys):
    images, masks = tmp_path / 'data' / 'images', tmp_path / 'data' / 'masks'
    images.mkdir(parents=True)
    masks.mkdir()
    bomb = _png_declaring(images / 'a.png', 60000, 60000)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / 'a.png')
    line = _error(capsys, ['prepare', '--dataset', 'folder', '-ip', str(images), '-lp',
                           str(masks), '--label_set', 'cityscapes', '--val_fraction', '0',
                           '--prepared_dir', str(tmp_path / 'out')])
    assert bomb in line and 'exceeds limit' in line


# ----------------------------------------------------------------------------- corrupt state

def _damage_newest(ckpt_dir, part):
    """Flips a byte in the middle of the newest checkpoint's data file, or truncates its
    index; returns the prefix."""
    prefix = tf.train.latest_checkpoint(str(ckpt_dir))
    if part == 'data':
        (path,) = glob.glob(prefix + '.data-*')
        data = bytearray(open(path, 'rb').read())
        data[len(data) // 2] ^= 0xff
    else:
        path = prefix + '.index'
        data = open(path, 'rb').read()[:40]
    with open(path, 'wb') as f:
        f.write(bytes(data))
    return prefix


@pytest.mark.end_to_end
@pytest.mark.parametrize('part', ['data', 'index'])
def test_a_damaged_newest_checkpoint_is_passed_over_for_the_one_before(demo_root, tmp_path,
                                                                       capsys, part):
    flags = _flags(demo_root, tmp_path, '--ckpt_every', '2')
    assert main.main(flags, network=synthetic.TINY_NETWORK) == 0
    damaged = _damage_newest(tmp_path / 'ckpt', part)
    assert damaged.endswith('-%d' % STEPS_PER_EPOCH)
    assert main.main(_flags(demo_root, tmp_path, '--ckpt_every', '2', '-ep', '2'),
                     network=synthetic.TINY_NETWORK) == 0
    captured = capsys.readouterr()
    assert ('the checkpoint %s is damaged (' % damaged) in captured.err
    assert 'continuing training after 2 steps' in captured.out
    assert _latest_step(tmp_path / 'ckpt') == 2 * STEPS_PER_EPOCH  # every tensor reads back


@pytest.mark.end_to_end
def test_no_usable_checkpoint_is_one_line_and_nothing_is_deleted(demo_root, tmp_path, capsys):
    flags = _flags(demo_root, tmp_path, '--keep_checkpoints', '1')
    assert main.main(flags, network=synthetic.TINY_NETWORK) == 0
    _damage_newest(tmp_path / 'ckpt', 'data')
    files = sorted(os.listdir(tmp_path / 'ckpt'))
    line = _error(capsys, _flags(demo_root, tmp_path, '--keep_checkpoints', '1', '-ep', '2'))
    assert line.startswith('error: no usable checkpoint in %s' % (tmp_path / 'ckpt'))
    assert sorted(os.listdir(tmp_path / 'ckpt')) == files


# ------------------------------------------------------------------- Ctrl-C outside training

@pytest.fixture(scope='module')
def tiny_model_dir(demo_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp('model')
    assert main.main(_flags(demo_root, folder, '-md', str(folder / 'model')),
                     network=synthetic.TINY_NETWORK) == 0
    return str(folder / 'model')


@pytest.mark.end_to_end
def test_ctrl_c_in_predict_says_what_was_written_and_leaves_only_whole_files(
        demo_root, tiny_model_dir, tmp_path):
    images = os.path.join(demo_root, 'leftImg8bit/train/*/*_leftImg8bit.png')
    process = _spawn(['predict', '--gpu', '0', '-ip', images, '-md', tiny_model_dir, '-bs', '1',
                      '-rd', str(tmp_path / 'runs'), '--save_labels'],
                     tmp_path / 'log', stop_at='predict:4', marker=tmp_path / 'marker')
    _wait_for_marker(tmp_path / 'marker', process, tmp_path / 'log')
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    log = open(tmp_path / 'log').read()
    (run,) = glob.glob(str(tmp_path / 'runs' / '*'))
    assert 'interrupted: 3 of 8 images written to %s' % run in log
    assert 'Traceback' not in log
    for folder in ('overlays', 'trainIds', 'labelIds'):
        written = sorted(os.listdir(os.path.join(run, folder)))
        assert len(written) == 3, folder
        for name in written:
            Image.open(os.path.join(run, folder, name)).load()  # whole, not cut short


@pytest.mark.end_to_end
def test_ctrl_c_in_prepare_finishes_the_file_being_written_and_says_what_is_done(
        demo_root, tmp_path):
    out = tmp_path / 'prepared'

    def prepare_into(folder):
        return ['prepare', '--dataset', 'demo', '--data_root', demo_root, '--prepared_dir',
                str(folder), '--image_shape', '64', '128', '--workers', '1']

    args = prepare_into(out)
    # The 3rd file (the 2nd sample's label) written under its temporary name, not yet renamed.
    process = _spawn(args, tmp_path / 'log', stop_at='prepare-write:3', marker=tmp_path / 'marker')
    paused = _wait_for_marker(tmp_path / 'marker', process, tmp_path / 'log')
    process.send_signal(signal.SIGINT)
    time.sleep(1)  # Ctrl-C reaches the main thread while the worker holds the file
    os.remove(tmp_path / 'marker')  # the worker goes on: renames it, finishes its sample
    assert process.wait(timeout=60) == 130
    log = open(tmp_path / 'log').read()
    assert 'Traceback' not in log
    labels = glob.glob(str(out / 'gtFine' / 'train' / '*' / '*_labelTrainIds.png'))
    images = glob.glob(str(out / 'leftImg8bit' / 'train' / '*' / '*.png'))
    assert paused.split()[1] in labels  # the paused file is whole, under its final name
    samples = len(glob.glob(os.path.join(demo_root, 'gtFine', 'train', '*', '*_labelIds.png')))
    assert len(labels) == len(images) < samples
    assert ('interrupted: %d of %d samples in %s; the same command goes on from there'
            % (len(labels), samples, out)) in log
    assert not glob.glob(str(out / '**' / '*.partial'), recursive=True)
    for path in labels + images:
        Image.open(path).load()  # whole, not cut short
    # The same command goes on and ends with what an uninterrupted run writes.
    assert main.main(args) == 0
    whole = tmp_path / 'whole'
    assert main.main(prepare_into(whole)) == 0
    assert _tree_bytes(out) == _tree_bytes(whole)


def _tree_bytes(root):
    """{relative path: contents} of every PNG under root."""
    paths = glob.glob(os.path.join(str(root), '**', '*.png'), recursive=True)
    return {os.path.relpath(path, root): open(path, 'rb').read() for path in paths}


@pytest.mark.end_to_end
def test_ctrl_c_in_video_leaves_no_partial_file(tiny_model_dir, tmp_path, capsys,
                                                monkeypatch):
    from roadseg.apps import video
    video_in = demo_data.demo_video_path(demo_data.ensure_demo_dataset(
        str(tmp_path / 'demo'), split_sizes={'train': 1, 'val': 1, 'test': 1}, video_frames=6))
    real = video.overlay
    drawn = []

    def interrupted_overlay(*args, **kwargs):  # Ctrl-C in the main thread, at the 3rd frame
        drawn.append(1)
        if len(drawn) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(video, 'overlay', interrupted_overlay)
    out = tmp_path / 'out'
    code = main.main(['video', '--gpu', '0', '-vi', video_in, '-vo', str(out / 'seg.mp4'),
                      '-md', tiny_model_dir, '-rd', str(tmp_path / 'runs')])
    assert code == 130
    assert 'interrupted: %s not written' % (out / 'seg.mp4') in capsys.readouterr().err
    assert not out.exists() or os.listdir(out) == []


# ------------------------------------------------------------------------- untrusted models

@pytest.fixture(scope='module')
def frozen_and_optimised(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp('exported')
    assert main.main(['freeze', '--model_dir', tiny_model_dir,
                      '--frozen_model_dir', str(folder / 'frozen')]) == 0
    assert main.main(['optimise', '--frozen_model_dir', str(folder / 'frozen'),
                      '--optimised_model_dir', str(folder / 'optimised')]) == 0
    return folder


@pytest.mark.end_to_end
def test_the_tool_s_own_graphs_use_only_the_operations_it_loads(frozen_and_optimised):
    for kind in ('frozen', 'optimised'):
        graph_def = model_dir.read_graph_def(str(frozen_and_optimised / kind / 'graph.pb'))
        assert {node.op for node in graph_def.node} <= model_dir.GRAPH_OPS


def _graph_that_writes(source, folder, written):
    """source's frozen graph with a WriteFile of `written` that its output waits for."""
    shutil.copytree(source, folder)
    graph_def = model_dir.read_graph_def(os.path.join(folder, 'graph.pb'))
    with tf.Graph().as_default() as graph:
        tf.io.write_file(tf.constant(written, name='sneaky_path'),
                         tf.constant('pwned', name='sneaky_text'), name='sneaky')
    graph_def.node.extend(graph.as_graph_def().node)
    output = helper.read_json(os.path.join(folder, 'fcn8s_config.json'))['output_tensor']
    (node,) = [node for node in graph_def.node if node.name == output.split(':')[0]]
    node.input.append('^sneaky')
    with open(os.path.join(folder, 'graph.pb'), 'wb') as f:
        f.write(graph_def.SerializeToString())


@pytest.mark.end_to_end
def test_a_graph_that_would_write_a_file_is_refused_unless_allowed(frozen_and_optimised,
                                                                  tmp_path, capsys):
    written = tmp_path / 'written.txt'
    model = str(tmp_path / 'model')
    _graph_that_writes(str(frozen_and_optimised / 'frozen'), model, str(written))
    image = synthetic.write_png(str(tmp_path / 'a.png'), synthetic.random_image(64, 128, 0))
    flags = ['predict', '--gpu', '0', '-ip', image, '-md', model, '-rd', str(tmp_path / 'runs')]
    line = _error(capsys, flags)
    assert line == ('error: %s/graph.pb holds operations this tool never writes (WriteFile): '
                    'not loaded; --allow_any_op runs it anyway, if you trust its source' % model)
    assert not written.exists() and not os.path.exists(tmp_path / 'runs')
    line = _error(capsys, ['optimise', '--frozen_model_dir', model, '--optimised_model_dir',
                           str(tmp_path / 'optimised')])
    assert 'WriteFile' in line and not os.path.exists(tmp_path / 'optimised')
    assert main.main(flags + ['--allow_any_op']) == 0  # what the check stops is real
    assert written.read_text() == 'pwned'
    assert 'running it as --allow_any_op asks' in capsys.readouterr().err


# ------------------------------------------------------------------ full disks outside training

@pytest.mark.end_to_end
@pytest.mark.parametrize('action', ['predict', 'evaluate', 'prepare'])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_part(demo_root, tiny_model_dir,
                                                                    tmp_path, action):
    out = tmp_path / 'out'
    args = {'predict': ['predict', '-ip', os.path.join(demo_root, 'leftImg8bit/val/*/*.png'),
                        '-md', tiny_model_dir, '-rd', str(out), '--save_labels'],
            'evaluate': ['evaluate', '--dataset', 'demo', '--data_root', demo_root,
                         '-md', tiny_model_dir, '-rd', str(out)],
            'prepare': ['prepare', '--dataset', 'demo', '--data_root', demo_root,
                        '--prepared_dir', str(out), '--image_shape', '64', '128']}[action]
    process = _spawn(args + ['--gpu', '0'], tmp_path / 'log', file_size_limit=3000)
    assert process.wait(timeout=300) == 2
    log = open(tmp_path / 'log').read()
    assert 'Traceback' not in log
    (line,) = [line for line in log.splitlines() if line.startswith('error:')]
    assert line.startswith('error: cannot write %s' % out) and line.endswith('File too large')
    for path in glob.glob(str(out / '**' / '*'), recursive=True):
        name = os.path.basename(path)
        assert not name.startswith('.') and not name.endswith('.partial'), path
        if name.endswith('.png'):
            Image.open(path).load()  # each file under its name is whole
