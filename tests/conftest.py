import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_eager_execution()

import pytest  # noqa: E402
from tensorflow.python.framework import config as _tf_config  # noqa: E402


@pytest.fixture(autouse=True)
def _op_determinism_off_after_each_test():
    """`train --seed` turns TensorFlow's op determinism on for the whole process; a CLI run
    ends there, but the tests go on in the same process and must not inherit it."""
    yield
    _tf_config.disable_op_determinism()
