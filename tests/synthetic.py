"""Tiny network tables and Cityscapes-layout files written with PIL, shared by the tests."""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import fcn8vgg16

from roadseg import specs
from roadseg.training import loop

# A VGG16-shaped encoder small enough for CPU tests: (block, filters, convs).
TINY_VGG16 = ((1, 4, 1), (2, 4, 1), (3, 8, 1), (4, 8, 1), (5, 8, 1))
TINY_FC_CHANNELS = 16
TINY_NETWORK = specs.Network(TINY_VGG16, TINY_FC_CHANNELS)
# The reference tables beside the repository (shared/reference), which CI always has.
REFERENCE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'shared', 'reference')


def frozen_tiny_graph(num_classes):
    """The GraphDef of a tiny FCN-8s with random weights and random (not zero) score layers,
    frozen, with a keep_prob placeholder (its dropouts stay in the graph)."""
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        tf1.set_random_seed(0)
        images = tf1.placeholder(tf.uint8, [None, None, None, 3], name=fcn8vgg16.INPUT_NAME)
        logits, _ = fcn8vgg16.fcn8s(images, num_classes, encoder=TINY_VGG16,
                                    fc_channels=TINY_FC_CHANNELS)
        fcn8vgg16.predictions(logits)
        rng = np.random.default_rng(0)
        scores = [tf1.assign(v, rng.normal(0, 0.3, v.shape).astype(np.float32))
                  for v in tf1.global_variables() if v.op.name.startswith('score_')]
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            session.run(scores)
            return tf1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), [fcn8vgg16.OUTPUT_NAME, fcn8vgg16.LOGITS_NAME])


def unavailable(reason):
    """Skips a test that needs what is missing, naming it; under CI (CI set), where everything
    the tests need is installed, fails instead: a missing evaluator must not pass silently."""
    if os.environ.get('CI'):
        pytest.fail('%s (CI must have it)' % reason)
    pytest.skip(reason)


def interrupt_after(monkeypatch, steps):
    """Ctrl-C as it lands during a step, once `steps` steps of this process have run: after
    the step's session.run has returned. Returns a function that undoes it."""
    real_step = loop.train_step
    count = [0]

    def _step(*args, **kwargs):
        result = real_step(*args, **kwargs)
        count[0] += 1
        if count[0] == steps:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(loop, 'train_step', _step)
    return lambda: monkeypatch.setattr(loop, 'train_step', real_step)


def train_flags(demo_root, folder, *extra):
    """main.py train arguments for a tiny run on the demo dataset, its folders under folder."""
    return ['train', '--dataset', 'demo',
            '-ip', os.path.join(demo_root, 'leftImg8bit/train/*/*_leftImg8bit.png'),
            '-lp', os.path.join(demo_root, 'gtFine/train'),
            '--val_images_paths', os.path.join(demo_root, 'leftImg8bit/val/*/*.png'),
            '--val_labels_paths', os.path.join(demo_root, 'gtFine/val'),
            '--image_shape', '64', '128', '-bs', '4', '-ep', '1',
            '-cd', os.path.join(str(folder), 'ckpt'),
            '-sd', os.path.join(str(folder), 'summaries'),
            '-rd', os.path.join(str(folder), 'runs'), '--gpu', '0'] + [str(flag) for flag in extra]


def image_path(root, city, seq, split='train', frame=19):
    return os.path.join(str(root), 'leftImg8bit', split, city,
                        '%s_%06d_%06d_leftImg8bit.png' % (city, seq, frame))


def label_path(root, city, seq, split='train', frame=19, kind='labelIds', ext='png'):
    return os.path.join(str(root), 'gtFine', split, city,
                        '%s_%06d_%06d_gtFine_%s.%s' % (city, seq, frame, kind, ext))


def write_png(path, array, palette=None):
    """uint8 [h, w] -> 'L' PNG ('P' with a palette), [h, w, 3] -> RGB, [h, w, 4] -> RGBA."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(np.asarray(array, np.uint8))
    if palette is not None:
        image.putpalette(palette)  # 'L' -> 'P', the stored values become palette indices
    image.save(path)
    return path


def write_sample(root, city, seq, image, label, split='train', kind='labelIds'):
    """Writes one image and its label image; returns (image_path, label_path)."""
    return (write_png(image_path(root, city, seq, split), image),
            write_png(label_path(root, city, seq, split, kind=kind), label))


def random_image(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def tf_batches(dataset, *args, **kwargs):
    """Every batch of dataset.tf_dataset(*args, **kwargs), run in a fresh graph."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        tf1.set_random_seed(0)  # as in training; keeps the iterator legal under op determinism
        next_batch = tf1.data.make_one_shot_iterator(
            dataset.tf_dataset(*args, **kwargs)).get_next()
        batches = []
        with tf1.Session() as session:
            while True:
                try:
                    batches.append(session.run(next_batch))
                except tf.errors.OutOfRangeError:
                    return batches


def assert_same_batches(first, second):
    """Equal batch counts, dtypes, shapes and bytes."""
    assert len(first) == len(second)
    for (images_a, labels_a), (images_b, labels_b) in zip(first, second):
        assert images_a.dtype == images_b.dtype == np.uint8
        assert labels_a.dtype == labels_b.dtype == np.uint8
        assert images_a.shape == images_b.shape and labels_a.shape == labels_b.shape
        assert images_a.tobytes() == images_b.tobytes()
        assert labels_a.tobytes() == labels_b.tobytes()
