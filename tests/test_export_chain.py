"""The whole export chain (freeze, optimise with the int8 and ONNX models, predict with every
format) on tiny models at every stage of training: straight from initialisation, after one step,
trained, and trained with --xla 2. Grappler simplifies what it may in each (a bias still all
zeros is folded away), and every format must still predict what the frozen model predicts."""
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import fcn8vgg16
import helper
import main
from roadseg import model_dir
import synthetic

tf1 = tf.compat.v1
STAGES = ('initialised', 'one_step', 'trained', 'trained_xla2')
# The share of pixels the 8-bit-weights graph, the int8 TFLite model and the float ONNX model
# must predict as the frozen graph does. After one step the two leading classes' scores are
# close at most pixels, so that rounding the weights to 8 bits flips a few per cent of them, and
# so do ONNX Runtime's float sums, added in another order than TensorFlow's.
MIN_AGREEMENT = {'initialised': (1.0, 1.0, 1.0), 'one_step': (0.95, 0.95, 0.95),
                 'trained': (0.99, 0.95, 0.999), 'trained_xla2': (0.99, 0.95, 0.999)}


def _train(root, folder, *flags):
    """A tiny model trained on the tiny demo into folder/ckpt; 6 images at batch 6 is one step
    an epoch."""
    code = main.main(['train', '--dataset', 'demo', '--gpu', '0', '--no_val',
                      '-ip', os.path.join(root, 'leftImg8bit/train/*/*.png'),
                      '-lp', os.path.join(root, 'gtFine/train'), '-bs', '6',
                      '--image_shape', '64', '128', '-cd', os.path.join(folder, 'ckpt'),
                      '-sd', os.path.join(folder, 'summaries'),
                      '-rd', os.path.join(folder, 'runs')] + list(flags),
                     network=synthetic.TINY_NETWORK)
    assert code == 0


def _initialised_copy(ckpt_dir, folder):
    """folder: the checkpoint folder of ckpt_dir's model as initialised, before any step
    (score layers and every bias zero), as an interrupt before the first step leaves it."""
    os.makedirs(folder)
    shutil.copy(os.path.join(ckpt_dir, model_dir.CONFIG_FILE), folder)
    config = helper.read_json(os.path.join(folder, model_dir.CONFIG_FILE))
    with tf.Graph().as_default():
        tf1.set_random_seed(config['seed'])
        fcn8vgg16.inference_graph(config['num_classes'], config['encoder'],
                                  config['fc_channels'])
        saver = tf1.train.Saver()
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            saver.save(session, os.path.join(folder, 'model.ckpt'), global_step=0)


@pytest.fixture(scope='module')
def checkpoints(demo_root, tmp_path_factory):
    """{stage: checkpoint folder} of tiny models at each stage of training."""
    work = str(tmp_path_factory.mktemp('chain'))
    folders = {stage: os.path.join(work, stage) for stage in STAGES}
    _train(demo_root, folders['one_step'], '-ep', '1', '--seed', '1')
    _train(demo_root, folders['trained'], '-ep', '12', '-lr', '1e-3', '--seed', '1')
    # With the flags of the original's command line.
    _train(demo_root, folders['trained_xla2'], '--gpu=1', '--xla=2', '-ep=12', '-lr=0.001',
           '--seed', '1')
    _initialised_copy(os.path.join(folders['one_step'], 'ckpt'), folders['initialised'])
    return {stage: (folder if stage == 'initialised' else os.path.join(folder, 'ckpt'))
            for stage, folder in folders.items()}


def _predicted_ids(root, model_dir, runs_dir):
    """trainIds of every demo image written by `predict --save_labels`, by file name."""
    assert main.main(['predict', '--gpu', '0', '--model_dir', model_dir, '--save_labels',
                      '-ip', os.path.join(root, 'leftImg8bit/*/*/*.png'), '-rd', runs_dir]) == 0
    (run,) = glob.glob(os.path.join(runs_dir, '*'))
    paths = sorted(glob.glob(os.path.join(run, 'trainIds', '*.png')))
    assert len(paths) == 9
    return np.stack([np.asarray(Image.open(path)) for path in paths])


def _val_mean_iou(root, model_dir, runs_dir):
    """The mean IoU `evaluate` reports for the val split."""
    assert main.main(['evaluate', '--gpu', '0', '--model_dir', model_dir, '-rd', runs_dir,
                      '-ip', os.path.join(root, 'leftImg8bit/val/*/*.png'),
                      '-lp', os.path.join(root, 'gtFine/val')]) == 0
    (report,) = glob.glob(os.path.join(runs_dir, '*', 'metrics.json'))
    return helper.read_json(report)['mean_iou']


@pytest.mark.end_to_end
@pytest.mark.parametrize('stage', STAGES)
def test_every_format_predicts_what_the_frozen_model_predicts(stage, checkpoints, demo_root,
                                                              tmp_path):
    ckpt_dir, work = checkpoints[stage], str(tmp_path)
    frozen, optimised = os.path.join(work, 'frozen_model'), os.path.join(work, 'optimised_model')
    assert main.main(['freeze', '--ckpt_dir=' + ckpt_dir, '--frozen_model_dir=' + frozen]) == 0
    assert main.main(['optimise', '--frozen_model_dir=' + frozen,
                      '--optimised_model_dir=' + optimised, '--calibration_images',
                      os.path.join(demo_root, 'leftImg8bit/train/*/*.png')]) == 0
    expected = _predicted_ids(demo_root, frozen, os.path.join(work, 'frozen_runs'))
    if stage.startswith('trained'):  # a model that can tell a difference between formats
        assert len(np.unique(expected)) >= 3
    np.testing.assert_array_equal(
        _predicted_ids(demo_root, ckpt_dir, os.path.join(work, 'ckpt_runs')), expected)
    eight_bit = _predicted_ids(demo_root, optimised, os.path.join(work, 'optimised_runs'))
    assert np.mean(eight_bit == expected) >= MIN_AGREEMENT[stage][0]
    int8 = _predicted_ids(demo_root, os.path.join(optimised, 'model.tflite'),
                          os.path.join(work, 'tflite_runs'))
    assert np.mean(int8 == expected) >= MIN_AGREEMENT[stage][1]
    # The float ONNX model, through ONNX Runtime: the frozen model's ids and, once trained (after
    # one step the leading scores differ by float rounding, 1e-8), its val mean IoU within 0.1
    # points.
    onnx = os.path.join(optimised, 'model.onnx')
    assert np.mean(_predicted_ids(demo_root, onnx, os.path.join(work, 'onnx_runs'))
                   == expected) >= MIN_AGREEMENT[stage][2]
    if stage.startswith('trained'):
        assert abs(_val_mean_iou(demo_root, onnx, os.path.join(work, 'onnx_eval'))
                   - _val_mean_iou(demo_root, frozen, os.path.join(work, 'frozen_eval'))) <= 0.001
