"""helper.py and the pure pieces of trainer.py: session config, colours, metrics, run folders,
JSON, the confusion matrix and class weights. Expected values are worked out by hand."""
import datetime
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

import data_loader
import helper
from roadseg import devices
import synthetic
from helper import UserError

tf1 = tf.compat.v1


def _trainer():
    """trainer.py, imported per test so that the helper tests stand alone."""
    from roadseg.training import trainer
    return trainer


def _train_graph():
    """graph.py, imported per test so that the helper tests stand alone."""
    from roadseg.training import graph
    return graph


# ------------------------------------------------------------------------------ session config

def test_session_config_applies_the_flags():
    config = devices.session_config(gpu=0, gpu_mem=0.5, xla=0)
    assert isinstance(config, tf1.ConfigProto)
    assert config.device_count['GPU'] == 0
    assert config.gpu_options.per_process_gpu_memory_fraction == pytest.approx(0.5)
    assert config.gpu_options.allow_growth
    assert config.graph_options.optimizer_options.global_jit_level == tf1.OptimizerOptions.DEFAULT
    with tf.Graph().as_default(), tf1.Session(config=config) as session:  # a usable config
        assert session.run(tf.constant(3) * 2) == 6


@pytest.mark.parametrize('xla, level', [(1, 'ON_1'), (2, 'ON_2')])
def test_session_config_sets_the_xla_jit_level(xla, level):
    config = devices.session_config(gpu=0, gpu_mem=1.0, xla=xla)
    assert (config.graph_options.optimizer_options.global_jit_level
            == getattr(tf1.OptimizerOptions, level))
    assert config.gpu_options.per_process_gpu_memory_fraction == 1.0


def test_session_config_warns_when_asked_for_missing_gpus(capsys):
    available = len(tf.config.list_physical_devices('GPU'))
    config = devices.session_config(gpu=available + 1)
    assert config.device_count['GPU'] == available
    assert 'warning' in capsys.readouterr().err


@pytest.mark.parametrize('kwargs, shown', [
    (dict(gpu_mem=0.0), '0'), (dict(gpu_mem=1.5), '1.5'), (dict(gpu_mem=-0.2), '-0.2'),
    (dict(xla=3), '3'), (dict(xla=-1), '-1'), (dict(gpu=-1), '-1')])
def test_session_config_rejects_bad_flags(kwargs, shown):
    with pytest.raises(UserError) as error:
        devices.session_config(**kwargs)
    message = str(error.value)
    assert list(kwargs)[0] in message and shown in message


# ------------------------------------------------------------------------------------ colorize

def test_colorize_maps_ids_through_the_table_and_255_to_the_ignore_colour():
    colors = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], np.uint8)
    ids = np.array([[[0, 1], [2, 255]], [[2, 2], [3, 0]]], np.uint8)  # [batch, h, w]
    out = helper.colorize(ids, colors, ignore_color=(1, 2, 3))
    assert out.shape == (2, 2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, [
        [[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [1, 2, 3]]],
        [[[70, 80, 90], [70, 80, 90]], [[1, 2, 3], [10, 20, 30]]]])   # id 3: past the table
    np.testing.assert_array_equal(helper.colorize(ids[0], colors)[1, 1], [0, 0, 0])


# ------------------------------------------------------------------------------------- metrics

def test_mean_iou_and_pixel_accuracy_by_hand():
    # rows: truth, columns: prediction. Class 2 is only predicted (IoU 0, counts); class 3 is in
    # neither truth nor prediction (does not count).
    confusion = [[5, 1, 1, 0],
                 [2, 3, 0, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]]
    # class 0: 5 / (5 + 2 + 2) = 5/9; class 1: 3 / (3 + 1 + 2) = 1/2; class 2: 0 / 1.
    assert helper.mean_iou(confusion) == pytest.approx((5 / 9 + 1 / 2 + 0) / 3)
    assert helper.pixel_accuracy(confusion) == pytest.approx(8 / 12)


def test_metrics_of_an_empty_confusion_are_zero():
    empty = np.zeros((3, 3), np.int64)
    assert helper.mean_iou(empty) == 0.0
    assert helper.pixel_accuracy(empty) == 0.0


def _confusion(labels, predictions, num_classes, ignore_id=255):
    with tf.Graph().as_default():
        matrix = _train_graph().confusion_matrix(tf.constant(labels), tf.constant(predictions),
                                          num_classes, ignore_id)
        with tf1.Session() as session:
            return session.run(matrix)


def test_confusion_matrix_by_hand_leaves_ignored_pixels_out():
    labels = np.array([[[0, 1, 2], [255, 1, 0]]], np.uint8)
    predictions = np.array([[[0, 2, 2], [1, 1, 1]]], np.uint8)
    confusion = _confusion(labels, predictions, 3)
    assert confusion.dtype == np.int64
    np.testing.assert_array_equal(confusion, [[1, 1, 0],
                                              [0, 1, 1],
                                              [0, 0, 1]])  # the ignored pixel is no FP of 1
    # IoU 1/2, 1/3, 1/2.
    assert helper.mean_iou(confusion) == pytest.approx(4 / 9)


def test_confusion_matrix_matches_numpy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (2, 16, 16)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = 255
    predictions = rng.integers(0, 5, (2, 16, 16)).astype(np.uint8)
    expected = np.zeros((5, 5), np.int64)
    valid = labels != 255
    np.add.at(expected, (labels[valid], predictions[valid]), 1)
    np.testing.assert_array_equal(_confusion(labels, predictions, 5), expected)
    assert expected.sum() == valid.sum() < labels.size


# ------------------------------------------------------------------------------- class weights

@pytest.fixture
def weights_dataset(tmp_path):
    """Two 32x32 labels: A has 512 road, 256 sidewalk, 256 unlabeled; B 768 road, 256 car."""
    label_a = np.full((32, 32), 7, np.uint8)                # road -> 0
    label_a[16:24] = 8                                      # sidewalk -> 1
    label_a[24:] = 0                                        # unlabeled -> 255
    label_b = np.full((32, 32), 7, np.uint8)
    label_b[:, 24:] = 26                                    # car -> 13
    for seq, label in enumerate((label_a, label_b)):
        synthetic.write_sample(tmp_path, 'aachen', seq, synthetic.random_image(32, 32, seq), label)
    return data_loader.Dataset(str(tmp_path / 'leftImg8bit'), str(tmp_path / 'gtFine'),
                               data_loader.get_label_set('cityscapes'), (32, 32))


def test_class_weights_inverse_frequency(weights_dataset):
    weights = _trainer().class_weights(weights_dataset, 'inverse_freq')
    # counts: road 1280, sidewalk 256, car 256 (1792 in all, 3 classes present).
    expected = np.zeros(19)
    expected[0] = 1792 / (3 * 1280)
    expected[1] = expected[13] = 1792 / (3 * 256)
    np.testing.assert_allclose(weights, expected)


def test_class_weights_median_frequency(weights_dataset):
    weights = _trainer().class_weights(weights_dataset, 'median_freq')
    # freq over the images holding the class: road 1280/2048, sidewalk 256/1024, car 256/1024;
    # median 0.25.
    expected = np.zeros(19)
    expected[0] = 0.25 / (1280 / 2048)
    expected[1] = expected[13] = 1.0
    np.testing.assert_allclose(weights, expected)


def test_class_weights_none_and_unknown(weights_dataset):
    assert _trainer().class_weights(weights_dataset, 'none') is None
    with pytest.raises(UserError, match='balanced'):
        _trainer().class_weights(weights_dataset, 'balanced')


# --------------------------------------------------------------------------- run folders, JSON

def test_new_run_dir_is_unique_within_one_second(tmp_path, monkeypatch):
    frozen = datetime.datetime(2024, 5, 6, 7, 8, 9)
    fake_clock = types.SimpleNamespace(datetime=types.SimpleNamespace(now=lambda: frozen))
    monkeypatch.setattr(helper, 'datetime', fake_clock)
    runs = str(tmp_path / 'runs')
    first = helper.new_run_dir(runs)
    with open(os.path.join(first, 'keep.txt'), 'w') as f:
        f.write('mine')
    second = helper.new_run_dir(runs)
    third = helper.new_run_dir(runs)
    assert len({first, second, third}) == 3
    for path in (first, second, third):
        assert os.path.isdir(path) and os.path.dirname(path) == runs
    assert os.listdir(second) == [] and os.listdir(third) == []
    with open(os.path.join(first, 'keep.txt')) as f:
        assert f.read() == 'mine'


def test_new_run_dir_with_the_real_clock_twice(tmp_path):
    runs = str(tmp_path)
    assert helper.new_run_dir(runs) != helper.new_run_dir(runs)
    assert len(os.listdir(runs)) == 2


def test_json_round_trip(tmp_path):
    data = {'encoder': [[1, 4, 1], [2, 4, 1]], 'class_weights': [0.5, 2.25], 'seed': 3,
            'label_set': 'cityscapes', 'nested': {'flag': True, 'none': None}, 'name': 'Zürich'}
    path = str(tmp_path / 'config.json')
    helper.write_json(path, data)
    assert helper.read_json(path) == data
    with open(path) as f:
        assert json.load(f) == data
    assert os.listdir(str(tmp_path)) == ['config.json']  # no temporary left behind


def test_first_line_takes_an_op_error_message_an_os_error_strerror_or_the_type_name():
    op_error = tf.errors.NotFoundError(None, None, 'no such tensor\n\ttraceback of the op')
    assert helper.first_line(op_error) == 'no such tensor'
    assert helper.first_line(FileNotFoundError(2, 'No such file or directory', 'x.png')) == \
        'No such file or directory'
    assert helper.first_line(ValueError('  bad value\nmore detail')) == 'bad value'
    assert helper.first_line(RuntimeError('')) == 'RuntimeError'


def test_write_atomically_keeps_the_extension_and_leaves_nothing_when_write_fails(tmp_path):
    path = str(tmp_path / 'clip.mp4')
    seen = []

    def write(temporary):
        seen.append(temporary)
        with open(temporary, 'w') as f:
            f.write('new')

    helper.write_atomically(path, write)
    assert os.path.dirname(seen[0]) == str(tmp_path) and seen[0].endswith('.mp4')
    assert os.path.basename(seen[0]).startswith('.') and os.listdir(str(tmp_path)) == ['clip.mp4']

    def fail(temporary):
        write(temporary)
        raise OSError(28, 'No space left on device')

    with pytest.raises(OSError, match='No space left'):
        helper.write_atomically(path, fail)
    assert os.listdir(str(tmp_path)) == ['clip.mp4']
    with open(path) as f:
        assert f.read() == 'new'


def test_read_json_of_a_broken_or_missing_file_is_a_user_error(tmp_path):
    path = str(tmp_path / 'broken.json')
    with open(path, 'w') as f:
        f.write('{"seed": 3,')
    with pytest.raises(UserError, match='broken.json'):
        helper.read_json(path)
    with pytest.raises(UserError, match='missing.json'):
        helper.read_json(str(tmp_path / 'missing.json'))


XLA_PROBE = """
import sys
import tensorflow as tf
tf1 = tf.compat.v1
tf1.disable_eager_execution()
from roadseg import devices
config = devices.session_config(gpu=0, xla=int(sys.argv[1]))
graph = tf.Graph()
with graph.as_default():
    x = tf1.placeholder(tf.float32, [8, 8])
    y = tf.nn.relu(tf.matmul(x, x) + 1.0) * 2.0
metadata = tf1.RunMetadata()
tf1.Session(graph=graph, config=config).run(
    y, {x: [[1.0] * 8] * 8}, options=tf1.RunOptions(output_partition_graphs=True),
    run_metadata=metadata)
print(sorted({node.op for partition in metadata.partition_graphs for node in partition.node
              if node.op.startswith('_Xla')}))
"""


@pytest.mark.end_to_end
@pytest.mark.parametrize('xla', [0, 2])
def test_xla_compiles_on_the_cpu_only_when_asked(xla):
    """--xla on a machine without GPUs really compiles (the JIT level alone does not there).
    In a subprocess: XLA reads its flags once per process."""
    import subprocess
    import sys
    env = dict(os.environ)
    env.pop('TF_XLA_FLAGS', None)
    env['PYTHONPATH'] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, '-c', XLA_PROBE, str(xla)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    xla_ops = result.stdout.strip().splitlines()[-1]
    assert ('_XlaRun' in xla_ops) == bool(xla), xla_ops


KERAS_PROBE = """
import sys
if sys.argv[1] == 'main':
    import main
    assert 'tensorflow' not in sys.modules, 'main.py -h would load TensorFlow'
    main.main(['predict', '--epochs', '0'])  # a flag's error, found after TensorFlow's import
import tensorflow as tf
print('keras.src.optimizers' in sys.modules)
print(tf.keras.optimizers.Adam.__name__)
"""


@pytest.mark.end_to_end
@pytest.mark.parametrize('first_import', ['main', 'tensorflow'])
def test_main_skips_the_eager_keras_import_and_leaves_keras_importable(first_import):
    """Importing main.py loads no TensorFlow (-h answers at once); started from it, TensorFlow
    loads without Keras' optimisers; tf.keras
    still imports them when asked. In a subprocess: only a process's first TensorFlow
    import loads them."""
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, '-c', KERAS_PROBE, first_import], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded_by_import, adam = result.stdout.split()[-2:]
    assert loaded_by_import == str(first_import == 'tensorflow')
    assert adam == 'Adam'


@pytest.mark.parametrize('line, noise', [
    ('WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
     True),
    ('I0000 00:00:1796473825.251048   18924 cudart_stub.cc:31] Could not find cuda drivers on '
     'your machine, GPU will not be used.', True),
    ('E0000 00:00:1796473839.821329   18924 cuda_platform.cc:52] failed call to cuInit: '
     'INTERNAL: CUDA error', True),
    ('W0000 00:00:1.5   7 cpu_feature_guard.cc:10] some notice', True),
    ('INFO: Created TensorFlow Lite XNNPACK delegate for CPU.', True),
    ('fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, '
     'output_inference_type: FLOAT32', True),
    ('WARNING: Attempting to use a delegate that only supports static-sized tensors', False),
    ('E0000 00:00:1.5   7 some_kernel.cc:10] a real failure', False),
    ('F0000 00:00:1.5   7 cuda_platform.cc:10] fatal', False),
    ('error: no images match x/*.png', False),
    ('warning: 1 GPU(s) asked for, 0 found: running on the CPU', False)])
def test_native_noise_is_told_from_the_tool_s_own_lines(line, noise):
    assert bool(helper.NATIVE_NOISE.match(line)) == noise


@pytest.mark.end_to_end
def test_the_command_line_shows_its_error_without_tensorflow_s_chatter(tmp_path):
    """Only the tool's own line on stderr, none of TensorFlow's native start-up logs."""
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, os.path.join(repo, 'main.py'), 'predict', '--gpu', '0',
               '-md', str(tmp_path / 'missing'), '-ip', str(tmp_path / '*.png')]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            cwd=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == ['error: no images match %s' % (tmp_path / '*.png')]
