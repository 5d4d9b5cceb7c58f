"""The train action end to end through main.main(), on a tiny VGG16 and a tiny demo split."""
import glob
import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import fcn8vgg16
import helper
import main
import synthetic
from roadseg import model_dir
from roadseg.training import vgg_weights

tf1 = tf.compat.v1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_flags = synthetic.train_flags


def _checkpoint_values(ckpt_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt_dir)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if 'Adam' not in name and 'power' not in name}


def _scalars(summary_dir):
    values = {}
    for path in glob.glob(os.path.join(str(summary_dir), '**', 'events.*'), recursive=True):
        for event in tf1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append((event.step, value))
    return values


@pytest.mark.end_to_end
def test_train_resume_and_export(demo_root, tmp_path, tiny_model, capsys):
    assert main.main(_flags(demo_root, tmp_path), network=tiny_model) == 0
    ckpt = str(tmp_path / 'ckpt')
    assert tf.train.latest_checkpoint(ckpt).endswith('-2')  # 6 images at batch 4: 2 steps
    (run_dir,) = glob.glob(str(tmp_path / 'runs' / '*'))
    config = helper.read_json(os.path.join(run_dir, 'model', model_dir.CONFIG_FILE))
    assert config['num_classes'] == 19 and config['image_shape'] == [64, 128]
    assert config['input_tensor'] == fcn8vgg16.INPUT_TENSOR

    with tf.Graph().as_default() as graph, tf1.Session() as session:
        tf1.saved_model.loader.load(session, [fcn8vgg16.SAVED_MODEL_TAG],
                                    os.path.join(run_dir, 'model'))
        image = np.zeros((1, 64, 96, 3), np.uint8)
        output = session.run(fcn8vgg16.OUTPUT_TENSOR, {fcn8vgg16.INPUT_TENSOR: image})
        assert output.shape == (1, 64, 96) and output.dtype == np.uint8
        assert len(graph.get_collection(tf1.GraphKeys.TRAIN_OP)) == 0
    capsys.readouterr()

    assert main.main(_flags(demo_root, tmp_path, '-ep', '2'), network=tiny_model) == 0
    assert 'continuing training after 2 steps' in capsys.readouterr().out
    assert tf.train.latest_checkpoint(ckpt).endswith('-4')
    assert len(glob.glob(str(tmp_path / 'runs' / '*'))) == 2  # every run gets its own folder


@pytest.mark.end_to_end
def test_summaries_show_learning(demo_root, tmp_path, tiny_model):
    flags = _flags(demo_root, tmp_path, '-ep', '12', '-lr', '1e-3', '--seed', '1',
                   '--summary_every', '1', '--image_summary_every', '3', '--ckpt_every', '100',
                   '--weight_decay', '0', '--no_val')
    assert main.main(flags, network=tiny_model) == 0
    scalars = _scalars(tmp_path / 'summaries')
    for tag in ('loss', 'cross_entropy', 'learning_rate', 'batch_mean_iou',
                'images_per_second', 'input_prediction_truth/image/0'):
        assert tag in scalars, tag
    xent = [value.simple_value for _, value in sorted(scalars['cross_entropy'],
                                                      key=lambda pair: pair[0])]
    assert len(xent) == 24
    assert np.mean(xent[-4:]) < 0.8 * xent[0]  # starts at ln(19) = 2.94 and must fall


@pytest.mark.end_to_end
def test_tensorboard_shows_pictures_from_the_first_step_and_every_epoch_end(demo_root, tmp_path,
                                                                          tiny_model):
    """However short the run: input/prediction/truth at the first step and at each epoch's end
    (6 images, batch 4: steps 2 and 4 end the epochs), and the same val images at every
    validation. Read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing import event_accumulator
    assert main.main(_flags(demo_root, tmp_path, '-ep', '2', '--seed', '5'),
                     network=tiny_model) == 0
    (run,) = glob.glob(str(tmp_path / 'summaries' / '*'))  # one TensorBoard run per training
    assert re.fullmatch(r'\d{8}-\d{6}_ep2_bs4_lr0.0001_kp1', os.path.basename(run))
    events = event_accumulator.EventAccumulator(run, size_guidance={event_accumulator.IMAGES: 0})
    events.Reload()
    assert 'config' in events.Tags()['tensors']  # the hyperparameters, in the TEXT tab
    pictures = {tag: [image.step for image in events.Images(tag)]
                for tag in events.Tags()['images']}
    assert pictures['input_prediction_truth/image/0'] == [1, 2, 4]
    assert pictures['val/input_prediction_truth/image/0'] == [2, 4]
    assert pictures['val/input_prediction_truth/image/1'] == [2, 4]  # the demo has 2 val images
    shown = [np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
             for image in events.Images('val/input_prediction_truth/image/0')]
    assert shown[0].shape == (64, 3 * 128, 3)  # input, prediction, truth side by side
    width = shown[0].shape[1] // 3
    np.testing.assert_array_equal(shown[0][:, :width], shown[1][:, :width])  # the same image
    np.testing.assert_array_equal(shown[0][:, 2 * width:], shown[1][:, 2 * width:])


@pytest.mark.end_to_end
def test_validation_is_logged(demo_root, tmp_path, tiny_model, capsys):
    assert main.main(_flags(demo_root, tmp_path), network=tiny_model) == 0
    assert 'val mean IoU' in capsys.readouterr().out
    scalars = _scalars(tmp_path / 'summaries')
    (step, value), = scalars['val/mean_iou']
    assert step == 2 and 0 <= value.simple_value <= 1


@pytest.mark.end_to_end
def test_seed_makes_runs_reproducible(demo_root, tmp_path, tiny_model):
    runs = {}
    for name, seed in (('a', '5'), ('b', '5'), ('c', '6')):
        flags = _flags(demo_root, tmp_path / name, '--seed', seed, '--no_val', '-kp', '0.5')
        assert main.main(flags, network=tiny_model) == 0
        runs[name] = _checkpoint_values(tmp_path / name / 'ckpt')
    for key in runs['a']:
        np.testing.assert_array_equal(runs['a'][key], runs['b'][key], err_msg=key)
    assert any(not np.array_equal(runs['a'][k], runs['c'][k]) for k in runs['a'])


@pytest.mark.end_to_end
def test_generator_and_tfdata_train_identically(demo_root, tmp_path, tiny_model):
    values = {}
    for pipeline in ('generator', 'tfdata'):
        flags = _flags(demo_root, tmp_path / pipeline, '--seed', '2', '--no_val',
                       '--pipeline', pipeline)
        assert main.main(flags, network=tiny_model) == 0
        values[pipeline] = _checkpoint_values(tmp_path / pipeline / 'ckpt')
    for key in values['tfdata']:
        np.testing.assert_array_equal(values['generator'][key], values['tfdata'][key],
                                      err_msg=key)


def _error(capsys, flags):
    code = main.main(flags, network=synthetic.TINY_NETWORK)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    return err[-1]


@pytest.mark.end_to_end
@pytest.mark.parametrize('extra, message', [
    (['--image_shape', '100', '200'], 'image shape 100x200 is not a positive multiple of 32'),
    (['-bs', '0'], '--batch_size 0 must be at least 1'),
    (['-ep', '-1'], '--epochs -1 must be at least 1'),
    (['-gm', '1.5'], '--gpu_mem 1.5 is outside (0, 1]'),
    (['-kp', '0'], '--keep_prob 0 is outside (0, 1]'),
    (['--label_set', 'kitti'], "unknown label set 'kitti'"),
    (['-ip', '/nonexistent/*.png'], 'no images match /nonexistent/*.png'),
    (['--vgg_weights', '/nonexistent/vgg'], '/nonexistent/vgg: no such file or folder'),
])
def test_bad_input_is_one_line(demo_root, tmp_path, tiny_model, capsys, extra, message):
    line = _error(capsys, _flags(demo_root, tmp_path, *extra))
    assert line.startswith('error: ') and message in line
    assert not glob.glob(str(tmp_path / 'ckpt' / 'model.ckpt*'))


@pytest.mark.end_to_end
def test_missing_cityscapes_points_to_demo(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _error(capsys, ['train', '--gpu', '0'])
    assert '../cityscapes/data/leftImg8bit/train' in line and '--dataset demo' in line


@pytest.mark.end_to_end
def test_failed_download_stops_with_advice(demo_root, tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.setattr(vgg_weights, 'DEFAULT_VGG_DIR', str(tmp_path / 'vgg'))
    monkeypatch.setattr(vgg_weights, 'UDACITY_VGG_URL', 'http://127.0.0.1:9/vgg.zip')
    flags = _flags(demo_root, tmp_path)
    flags[flags.index('demo')] = 'cityscapes'  # no --vgg_weights: download, as the original
    line = _error(capsys, flags)
    assert 'could not download the VGG16 weights' in line and '--vgg_weights none' in line
    assert not glob.glob(str(tmp_path / 'ckpt' / 'model.ckpt*'))


@pytest.mark.end_to_end
def test_resume_refuses_another_label_set(demo_root, tmp_path, tiny_model, capsys):
    assert main.main(_flags(demo_root, tmp_path, '--no_val'), network=tiny_model) == 0
    line = _error(capsys, _flags(demo_root, tmp_path, '--label_set', 'cityscapes35'))
    assert 'label_set' in line and 'another --ckpt_dir' in line


@pytest.mark.end_to_end
def test_foreign_model_dir_is_refused_before_training(demo_root, tmp_path, tiny_model, capsys):
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('keep me')
    line = _error(capsys, _flags(demo_root, tmp_path, '-md', str(foreign)))
    assert str(foreign) in line and 'not hold a model written by this tool' in line
    assert (foreign / 'notes.txt').read_text() == 'keep me'
    assert not glob.glob(str(tmp_path / 'ckpt' / 'model.ckpt*'))


@pytest.mark.end_to_end
def test_corrupt_image_in_tfdata_names_the_file(demo_root, tmp_path, tiny_model, capsys):
    images = tmp_path / 'images'
    images.mkdir()
    for path in glob.glob(os.path.join(demo_root, 'leftImg8bit/train/*/*.png')):
        Image.open(path).save(images / os.path.basename(path))
    broken = sorted(images.iterdir())[0]
    broken.write_bytes(broken.read_bytes()[:200])
    flags = _flags(demo_root, tmp_path, '--no_val')
    flags[flags.index('-ip') + 1] = str(images / '*.png')
    line = _error(capsys, flags)
    assert line.startswith('error: cannot read image') and broken.name in line


@pytest.mark.end_to_end
def test_full_size_model_trains_from_the_command_line(demo_root, tmp_path):
    """The real VGG16 widths, in a subprocess as a user runs it: one step, then the export."""
    flags = _flags(demo_root, tmp_path, '-bs', '2', '--no_val')
    flags[flags.index('-ip') + 1] = os.path.join(demo_root,
                                                 'leftImg8bit/train/demoville/*_000000_*.png')
    result = subprocess.run([sys.executable, os.path.join(REPO, 'main.py')] + flags,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'Train Epoch  1/1' in result.stderr and 'model saved to' in result.stdout
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / 'ckpt')))
    assert reader.get_variable_to_shape_map()['fc6/weights'] == [7, 7, 512, 4096]


@pytest.mark.end_to_end
def test_original_command_line_on_cityscapes_beside_the_repo(demo_root, tmp_path, tiny_model,
                                                              monkeypatch, capsys):
    """The demo is in the Cityscapes layout: copied to ../cityscapes/data it stands in for it."""
    shutil.copytree(os.path.join(demo_root, 'leftImg8bit'),
                    tmp_path / 'cityscapes' / 'data' / 'leftImg8bit')
    shutil.copytree(os.path.join(demo_root, 'gtFine'), tmp_path / 'cityscapes' / 'data' / 'gtFine')
    (tmp_path / 'repo').mkdir()
    monkeypatch.chdir(tmp_path / 'repo')
    flags = ['train', '--gpu=1', '--xla=2', '-ep=1', '-bs=10', '-lr=0.00001',
             '--vgg_weights', 'none', '--image_shape', '64', '128']
    assert main.main(flags, network=tiny_model) == 0
    out = capsys.readouterr().out
    assert 'training on 6 images (cityscapes, 19 classes, 64x128)' in out
    assert 'val mean IoU' in out  # the val split beside it is found too
    assert tf.train.latest_checkpoint('ckpt').endswith('-1')
    assert glob.glob('summaries/*/events.*') and glob.glob('runs/*/model/saved_model.pb')
