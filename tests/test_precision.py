"""--precision: bf16 through oneDNN's mixed precision rewrite, fp16 on GPUs, on a tiny model."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

import data_loader
from roadseg.data import demo_data
from roadseg.deploy import export
from roadseg.deploy import loader
import main
import synthetic
from roadseg import devices, specs
from roadseg.training import graph as train_graph
from helper import UserError

tf1 = tf.compat.v1
IMAGE_SHAPE = (64, 128)
ON = rewriter_config_pb2.RewriterConfig.ON
_flags = devices.cpu_flags()
needs_bf16_rewrite = pytest.mark.skipif(
    _flags is not None and not _flags & set(devices.BF16_REWRITE_CPU_FLAGS),
    reason='TensorFlow rewrites to bfloat16 only on CPUs with %s'
           % ' or '.join(devices.BF16_REWRITE_CPU_FLAGS))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(demo root, work folder with runs/ and ckpt/) of a tiny FCN-8s trained for 40 steps:
    enough to predict five classes with over 70% pixel accuracy, so that fp32 and bf16 can
    disagree wherever bf16 rounding matters (on 0.3% of the pixels here)."""
    work = tmp_path_factory.mktemp('precision')
    root = demo_data.ensure_demo_dataset(str(work / 'demo'),
                                         split_sizes={'train': 16, 'val': 8, 'test': 1},
                                         video_frames=3)
    code = main.main(['train', '--dataset', 'demo', '--gpu', '0', '--no_val', '--seed', '1',
                      '--no_augment', '-ip', os.path.join(root, 'leftImg8bit/train/*/*.png'),
                      '-lp', os.path.join(root, 'gtFine/train'), '-bs', '4', '-ep', '10',
                      '-lr', '2e-3', '--image_shape', *map(str, IMAGE_SHAPE),
                      '-cd', str(work / 'ckpt'), '-sd', str(work / 'summaries'),
                      '-rd', str(work / 'runs')], network=synthetic.TINY_NETWORK)
    assert code == 0
    return root, work


def _split(root, split):
    dataset = data_loader.Dataset(os.path.join(root, 'leftImg8bit', split, '*', '*.png'),
                                  os.path.join(root, 'gtFine', split),
                                  data_loader.get_label_set('cityscapes'), IMAGE_SHAPE)
    return next(dataset.generator(len(dataset), shuffle=False))


def _traced_run(session, fetches, feed):
    """session.run that also returns the graphs the session ran, after its rewrites."""
    metadata = tf1.RunMetadata()
    results = session.run(fetches, feed, options=tf1.RunOptions(output_partition_graphs=True),
                          run_metadata=metadata)
    return results, [node for graph in metadata.partition_graphs for node in graph.node]


def _dtype(node):
    for key in ('T', 'dtype'):
        if key in node.attr:
            return tf.as_dtype(node.attr[key].type)
    return None


def _bf16_convolutions(nodes):
    return [node.name for node in nodes if 'Conv2D' in node.op and _dtype(node) == tf.bfloat16]


@pytest.fixture
def partition_graphs(monkeypatch):
    """Loaded float32 models keep their lean session options but return the partition graphs
    that _traced_run reads (the lean options turn them off)."""
    lean = loader._lean_session_options

    def lean_with_partition_graphs(config):
        lean(config)
        config.experimental.disable_output_partition_graphs = False

    monkeypatch.setattr(loader, '_lean_session_options', lean_with_partition_graphs)


def _predict(model_dir, images, precision):
    """(class ids, float32 logits, the nodes run) of a model loaded with --precision."""
    model = loader.Model(model_dir, devices.session_config(gpu=0, precision=precision))
    logits = model.graph.get_tensor_by_name(model.config['logits_tensor'])
    (predictions, logits), nodes = _traced_run(model.session, (model.output, logits),
                                               {model.input: images})
    model.close()
    return predictions, logits, nodes


@pytest.mark.end_to_end
@needs_bf16_rewrite
@pytest.mark.parametrize('kind', ['SavedModel', 'frozen graph'])
def test_bf16_predictions_agree_with_fp32(trained, tmp_path, kind, partition_graphs):
    root, work = trained
    (model_dir,) = glob.glob(str(work / 'runs' / '*' / 'model'))
    if kind == 'frozen graph':
        export.freeze(str(work / 'ckpt'), str(tmp_path / 'frozen'))
        model_dir = str(tmp_path / 'frozen')
    images, labels = _split(root, 'val')
    fp32, fp32_logits, fp32_nodes = _predict(model_dir, images, 'fp32')
    bf16, bf16_logits, bf16_nodes = _predict(model_dir, images, 'bf16')
    # A model worth comparing: several classes, most pixels right.
    classes, counts = np.unique(fp32, return_counts=True)
    assert (counts > 0.02 * fp32.size).sum() >= 4, dict(zip(classes, counts))
    assert np.mean(fp32[labels != 255] == labels[labels != 255]) > 0.6
    # The bf16 session really ran its convolutions in bfloat16, the fp32 one none.
    assert len(_bf16_convolutions(bf16_nodes)) >= 10 and not _bf16_convolutions(fp32_nodes)
    assert fp32_logits.dtype == bf16_logits.dtype == np.float32
    assert not np.array_equal(fp32_logits, bf16_logits)
    agreement = np.mean(fp32 == bf16)
    assert agreement >= 0.99, agreement


def _train_graph(precision):
    """The tool's training graph on a fed batch of the tiny model."""
    recipe = specs.Recipe(epochs=1, batch_size=4, learning_rate=1e-3,
                          loss_scaling=precision == 'fp16')
    label_set = data_loader.get_label_set('cityscapes')
    tf1.set_random_seed(1)
    return train_graph.build_train_graph(tf.zeros((0,) + IMAGE_SHAPE + (3,), tf.uint8),
                                         tf.zeros((0,) + IMAGE_SHAPE, tf.uint8),
                                         synthetic.TINY_NETWORK, recipe, label_set)


def _train_losses(graph, tensors, batches, precision, steps=12):
    """Losses of `steps` Adam steps from the same initial weights; the nodes of the last."""
    losses = []
    with tf1.Session(graph=graph, config=devices.session_config(gpu=0, precision=precision)) \
            as session:
        session.run([tf1.global_variables_initializer(), tf1.local_variables_initializer()])
        for step in range(steps):
            images, labels = batches[step % len(batches)]
            (_, loss), nodes = _traced_run(session, (tensors['train_op'], tensors['loss']),
                                           {tensors['images']: images,
                                            tensors['labels']: labels})
            losses.append(loss)
    return losses, nodes


@pytest.mark.end_to_end
@needs_bf16_rewrite
def test_bf16_training_lowers_the_loss_as_fp32_does(trained):
    root, _ = trained
    images, labels = _split(root, 'train')
    batches = [(images[:4], labels[:4]), (images[4:8], labels[4:8])]
    graph = tf.Graph()
    with graph.as_default():
        tensors = _train_graph('fp32')  # the graph is float32: the session's rewrite decides
    fp32, _ = _train_losses(graph, tensors, batches, 'fp32')
    bf16, nodes = _train_losses(graph, tensors, batches, 'bf16')
    assert fp32[0] == pytest.approx(bf16[0], rel=0.02)  # the same start
    assert fp32[-1] < 0.8 * fp32[0] and bf16[-1] < 0.8 * bf16[0]
    assert bf16[-1] == pytest.approx(fp32[-1], rel=0.03), (fp32, bf16)
    backward = [n for n in _bf16_convolutions(nodes) if 'gradients' in n]
    assert len(backward) >= 10, 'the backward pass did not run in bfloat16'
    # Variables, their updates, the cross-entropy and the loss's sums stay float32.
    kept = [node for node in nodes if node.op == 'VariableV2' or 'ApplyAdam' in node.op
            or 'SoftmaxCrossEntropy' in node.op or node.op in ('L2Loss', 'Sum')
            and not node.name.startswith('gradients/')]
    assert len([node for node in kept if 'ApplyAdam' in node.op]) >= 10
    assert [_dtype(node) for node in kept if 'SoftmaxCrossEntropy' in node.op] == [tf.float32]
    assert not [node.name for node in kept if _dtype(node) == tf.bfloat16]


def test_fp16_loss_scale_stays_out_of_checkpoints(tmp_path):
    with tf.Graph().as_default():
        tensors = _train_graph('fp16')
        saver = tf1.train.Saver()
        local = [v.op.name for v in tf1.local_variables()]
        with tf1.Session() as session:
            session.run([tf1.global_variables_initializer(), tf1.local_variables_initializer()])
            path = saver.save(session, str(tmp_path / 'model.ckpt'))
    assert 'current_loss_scale' in local and 'train_op' in tensors
    saved = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    assert 'score_fr/weights' in saved and not any('loss_scale' in name for name in saved)


def test_session_config_sets_the_rewrite():
    options = devices.session_config(gpu=0, precision='bf16').graph_options.rewrite_options
    assert options.auto_mixed_precision_onednn_bfloat16 == ON
    options = devices.session_config(gpu=0).graph_options.rewrite_options
    assert options.auto_mixed_precision_onednn_bfloat16 != ON
    assert options.auto_mixed_precision != ON


def test_fp16_without_a_gpu_warns_and_runs_float32(capsys):
    options = devices.session_config(gpu=0, precision='fp16').graph_options.rewrite_options
    assert options.auto_mixed_precision != ON
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'fp16 needs a GPU' in err[0]


@pytest.mark.parametrize('flags, warning', [
    ({'flags', 'avx512f'}, 'neither avx512_bf16 nor amx_bf16: --precision bf16 is emulated'),
    ({'avx2', 'fma'}, 'neither avx512f nor avx_ne_convert: TensorFlow does not rewrite to '
                      'bfloat16 here, --precision bf16 runs in float32'),
    ({'avx512f', 'amx_bf16'}, None), ({'avx512f', 'avx512_bf16'}, None), (None, None)])
def test_bf16_warns_on_a_cpu_without_bf16(monkeypatch, capsys, flags, warning):
    monkeypatch.setattr(devices, 'cpu_flags', lambda: flags)
    devices.session_config(gpu=0, precision='bf16')
    err = capsys.readouterr().err.strip().splitlines()
    assert err == (['warning: this CPU has ' + warning + (
        ', about half as fast as fp32' if 'emulated' in warning else '')] if warning else [])


def test_cpu_flags_reads_this_machine():
    flags = devices.cpu_flags()
    assert flags is None or (isinstance(flags, set) and flags)


@pytest.mark.end_to_end
def test_bad_precision_is_a_one_line_error(capsys):
    with pytest.raises(UserError) as error:
        devices.session_config(gpu=0, precision='fp8')
    assert str(error.value) == '--precision fp8 is not fp32, bf16 or fp16'
    assert main.main(['predict', '--precision', 'bfloat16']) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: argument --precision: invalid choice: 'bfloat16'")


@pytest.fixture
def recorded_configs(monkeypatch):
    """The ConfigProtos main.py asks devices.session_config for."""
    configs = []
    original = devices.session_config

    def _record(*args, **kwargs):
        configs.append(original(*args, **kwargs))
        return configs[-1]

    monkeypatch.setattr(devices, 'session_config', _record)
    return configs


@pytest.mark.end_to_end
@pytest.mark.parametrize('action', ['train', 'predict', 'evaluate', 'video'])
def test_the_flag_reaches_the_session(trained, tmp_path, monkeypatch, recorded_configs,
                                      action):
    root, work = trained
    flags = {
        'train': ['--dataset', 'demo', '-ip', os.path.join(root, 'leftImg8bit/train/*/*.png'),
                  '-lp', os.path.join(root, 'gtFine/train'), '-bs', '4', '-ep', '1',
                  '--image_shape', *map(str, IMAGE_SHAPE), '--no_val',
                  '-cd', str(tmp_path / 'ckpt'), '-sd', str(tmp_path / 'summaries')],
        'predict': ['-ip', os.path.join(root, 'leftImg8bit/test/*/*.png')],
        'evaluate': ['--dataset', 'demo', '--data_root', root],
        'video': ['-vi', demo_data.demo_video_path(root), '-vo', str(tmp_path / 'out.mp4')],
    }[action]
    runs = str(tmp_path / 'runs') if action == 'train' else str(work / 'runs')
    assert main.main([action, '--gpu', '0', '--precision', 'bf16', '-rd', runs] + flags,
                     network=synthetic.TINY_NETWORK) == 0
    assert recorded_configs
    for config in recorded_configs:
        assert config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 == ON
