"""What only GPUs can show: float16 training with loss scaling, and data-parallel training over
two GPUs following one device. Skipped, naming what is missing, on a machine without them."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import main
import synthetic

tf1 = tf.compat.v1
GPUS = len(tf.config.list_physical_devices('GPU'))


def _needs_gpus(count):
    return pytest.mark.skipif(GPUS < count, reason='needs %d GPU(s), this machine has %d'
                              % (count, GPUS))


def _losses(summary_dir):
    """[(step, loss)] in step order."""
    values = []
    for path in glob.glob(os.path.join(str(summary_dir), '**', 'events.*'), recursive=True):
        for event in tf1.train.summary_iterator(path):
            values += [(event.step, v.simple_value) for v in event.summary.value
                       if v.tag == 'loss']
    return sorted(values)


def _train(demo_root, folder, tiny_model, *extra):
    flags = synthetic.train_flags(demo_root, str(folder), '-ep', '3', '--seed', '1', '--no_val',
                                  '--summary_every', '1', '-lr', '1e-3', *extra)
    assert main.main(flags, network=tiny_model) == 0
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(folder / 'ckpt')))
    return _losses(folder / 'summaries'), reader


@pytest.mark.end_to_end
@_needs_gpus(1)
def test_fp16_training_on_a_gpu_follows_fp32_and_stores_float32(demo_root, tmp_path,
                                                                 tiny_model):
    fp32, _ = _train(demo_root, tmp_path / 'fp32', tiny_model, '--gpu', '1')
    fp16, reader = _train(demo_root, tmp_path / 'fp16', tiny_model, '--gpu', '1',
                          '--precision', 'fp16')
    assert [step for step, _ in fp16] == [step for step, _ in fp32]
    np.testing.assert_allclose([loss for _, loss in fp16], [loss for _, loss in fp32],
                               rtol=0.02)
    assert fp16[-1][1] < fp16[0][1] - 0.1  # it learned
    dtypes = reader.get_variable_to_dtype_map()
    assert all(dtype == tf.float32 for name, dtype in dtypes.items()
               if 'global_step' not in name), dtypes
    assert not [name for name in dtypes if 'loss_scale' in name.lower()]


@pytest.mark.end_to_end
@_needs_gpus(2)
def test_two_gpus_follow_one(demo_root, tmp_path, tiny_model):
    one, one_reader = _train(demo_root, tmp_path / 'one', tiny_model, '--gpu', '1')
    two, two_reader = _train(demo_root, tmp_path / 'two', tiny_model, '--gpu', '2')
    assert [step for step, _ in two] == [step for step, _ in one]
    np.testing.assert_allclose([loss for _, loss in two], [loss for _, loss in one], rtol=1e-3)
    for name in one_reader.get_variable_to_shape_map():
        np.testing.assert_allclose(two_reader.get_tensor(name), one_reader.get_tensor(name),
                                   rtol=1e-2, atol=1e-4, err_msg=name)
