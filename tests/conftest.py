import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_eager_execution()

import pytest  # noqa: E402
from tensorflow.python.framework import config as _tf_config  # noqa: E402

from roadseg.data import demo_data  # noqa: E402
import synthetic  # noqa: E402


@pytest.fixture(autouse=True)
def _op_determinism_off_after_each_test():
    """`train --seed` turns TensorFlow's op determinism on for the whole process; a CLI run
    ends there, but the tests go on in the same process and must not inherit it."""
    yield
    _tf_config.disable_op_determinism()


@pytest.fixture
def tiny_model():
    """A VGG16-shaped network small enough to train in seconds on the CPU:
    main.main(flags, network=tiny_model)."""
    return synthetic.TINY_NETWORK


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    """A small demo dataset, made once per test module (a module may define its own)."""
    root = str(tmp_path_factory.mktemp('demo') / 'demo')
    return demo_data.ensure_demo_dataset(root, split_sizes={'train': 6, 'val': 2, 'test': 1},
                                         video_frames=4)


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'end_to_end: runs the command line, a process or a training run; '
        '-m "not end_to_end" leaves the fast unit suite')
