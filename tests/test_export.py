"""freeze and optimise end to end through main.main(), with the original command lines."""
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import data_loader
from roadseg.data import demo_data
from roadseg.deploy import graph_file, graph_surgery
import fcn8vgg16
import helper
from roadseg.deploy import loader, tflite_model
from roadseg.apps import predict
import main
from roadseg import devices, model_dir, specs, tf_runtime

tf1 = tf.compat.v1
# Narrow, but with weights large enough that the 8-bit size ratio means what it does at 4096.
SMALL_VGG16 = ((1, 8, 1), (2, 16, 1), (3, 32, 1), (4, 64, 1), (5, 64, 1))
SMALL_FC = 256


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """A folder with ckpt/ of a small FCN-8s trained briefly on a tiny demo, as the cwd."""
    work = tmp_path_factory.mktemp('export')
    root = demo_data.ensure_demo_dataset(str(work / 'demo'),
                                         split_sizes={'train': 6, 'val': 3, 'test': 2},
                                         video_frames=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        code = main.main(['train', '--dataset', 'demo', '--gpu', '0', '--no_val',
                          '-ip', os.path.join(root, 'leftImg8bit/train/*/*.png'),
                          '-lp', os.path.join(root, 'gtFine/train'), '-bs', '3', '-ep', '3',
                          '--image_shape', '64', '128', '-lr', '1e-3', '-cd', 'ckpt'],
                         network=specs.Network(SMALL_VGG16, SMALL_FC))
    assert code == 0
    return work, root


def _val_predictions(folder, root):
    model = loader.Model(folder)
    paths = sorted(glob.glob(os.path.join(root, 'leftImg8bit/val/*/*.png')))
    outputs = [predict.predict_batch(model, [data_loader.read_image(p)])[0] for p in paths]
    model.close()
    return np.stack(outputs)


@pytest.mark.end_to_end
def test_freeze_and_optimise_with_the_original_command_lines(work, monkeypatch, capsys):
    work, root = work
    monkeypatch.chdir(work)
    assert main.main(['freeze', '--ckpt_dir=ckpt', '--frozen_model_dir=frozen_model']) == 0
    assert 'variables converted to constants' in capsys.readouterr().out
    assert main.main(['optimise', '--frozen_model_dir=frozen_model',
                      '--optimised_model_dir=optimised_model',
                      '--calibration_images', os.path.join(root, 'leftImg8bit/train/*/*.png')]) == 0
    out = capsys.readouterr().out
    assert 'weights stored in 8 bits' in out and 'model.onnx written' in out

    frozen = model_dir.read_graph_def('frozen_model/graph.pb')
    ops = {node.op for node in frozen.node}
    assert not ops & {'VariableV2', 'VarHandleOp', 'RandomUniform', 'ApplyAdam', 'Assign'}
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint('ckpt'))
    meta = tf1.MetaGraphDef()
    with open(tf.train.latest_checkpoint('ckpt') + '.meta', 'rb') as f:
        meta.ParseFromString(f.read())
    assert len(frozen.node) < len(meta.graph_def.node) / 4  # optimiser and input pipeline gone
    assert 'fc6/weights' in reader.get_variable_to_shape_map()

    ratio = os.path.getsize('optimised_model/graph.pb') / os.path.getsize('frozen_model/graph.pb')
    assert ratio <= 0.27
    optimised = model_dir.read_graph_def('optimised_model/graph.pb')
    assert sum(node.op == 'Dequantize' for node in optimised.node) >= 3
    for folder in ('frozen_model', 'optimised_model'):  # the loader is fed them in place
        _, contents = graph_file.read_graph_def(folder + '/graph.pb', allow_any_op=True)
        assert contents and all(content.ctypes.data % 64 == 0 for content in contents.values())
    assert os.path.getsize('optimised_model/model.tflite') > 0
    assert os.path.getsize('optimised_model/model.onnx') > 0
    interface = helper.read_json('optimised_model/fcn8s_config.json')['onnx_model']
    assert [(value['name'], value['dtype'], value['shape']) for value in
            interface['inputs'] + interface['outputs']] == [
        ('images', 'uint8', ['batch', 'height', 'width', 3]),
        ('predictions', 'uint8', ['batch', 'height', 'width']),
        ('logits', 'float32', ['batch', 'height', 'width', 19])]


@pytest.mark.end_to_end
def test_exported_models_agree_with_the_trained_one(work, monkeypatch):
    work, root = work
    monkeypatch.chdir(work)
    assert main.main(['freeze', '--ckpt_dir=ckpt', '--frozen_model_dir=frozen_agree']) == 0
    assert main.main(['optimise', '--frozen_model_dir=frozen_agree',
                      '--optimised_model_dir=optimised_agree']) == 0
    trained = _val_predictions('ckpt', root)
    np.testing.assert_array_equal(_val_predictions('frozen_agree', root), trained)
    assert np.mean(_val_predictions('optimised_agree', root) == trained) >= 0.99


@pytest.mark.end_to_end
@pytest.mark.parametrize('onednn', [True, False])
def test_every_model_loads_lean_its_fc_weights_in_variables_its_filters_where_eigen_runs(
        work, onednn, monkeypatch):
    """Where oneDNN runs the convolutions their filters are constants, but in the optimised
    model, made for a small footprint, whose filters are variables too; where Eigen runs them,
    every model's are variables. Every model holds fc6 and fc7 once, in variables, not as
    constants the session copies (a checkpoint's go straight from it into them), and computes
    fc6 in row bands. The predictions are those of the frozen graph with every weight a
    constant."""
    monkeypatch.setattr(tf_runtime, 'onednn_enabled', lambda: onednn)
    work, _ = work
    folder = str(work / 'frozen_vars')
    assert main.main(['freeze', '-cd', str(work / 'ckpt'), '-fd', folder]) == 0
    assert main.main(['optimise', '-fd', folder, '-od', folder + '_optimised']) == 0
    images = np.random.default_rng(3).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
    (saved,) = glob.glob(str(work / 'runs' / '*' / 'model'))
    for path in (folder, folder + '_optimised', str(work / 'ckpt'), saved):
        graph_def = graph_surgery.dequantize_constants(
            model_dir.read_graph_def(os.path.join(folder, model_dir.GRAPH_FILE)))
        with tf.Graph().as_default(), tf1.Session() as session:
            tf.graph_util.import_graph_def(graph_def, name='')
            expected = session.run(fcn8vgg16.OUTPUT_TENSOR, {fcn8vgg16.INPUT_TENSOR: images})
        model = loader.Model(path, devices.session_config(0, 0.9, 0, 'fp32'))
        variables = [op for op in model.graph.get_operations() if op.type == 'VarHandleOp']
        sizes = [np.prod([dim.size for dim in op.get_attr('shape').dim]) for op in variables]
        filters = [op for op in model.graph.get_operations() if op.type == 'Conv2D']
        assert len(filters) >= len(SMALL_VGG16) + 3
        filter_sizes = [np.prod(op.inputs[1].shape) for op in filters]
        fc_sizes = [SMALL_FC * SMALL_FC, 7 * 7 * SMALL_VGG16[-1][1] * SMALL_FC]
        optimised = 'optimised' in path
        in_variables = optimised or not onednn  # the filters
        assert sorted(sizes) == sorted(fc_sizes + (filter_sizes if in_variables else []))
        for op in model.graph.get_operations():
            if op.type in ('MatMul', 'Conv2D'):  # a checkpoint too is frozen as it loads
                source = op.inputs[1].op
                while source.type in ('Reshape', 'Identity', 'Unpack'):  # Unpack: row bands
                    source = source.inputs[0].op
                assert source.type == ('Const' if op.type == 'Conv2D' and not in_variables
                                       else 'ReadVariableOp'), (path, op.name)
        assert len([op for op in model.graph.get_operations() if op.type == 'MatMul'
                    and op.name.startswith('fc6/row_bands/')]) == 7
        predictions = model.predict(images)
        if optimised:  # 8-bit weights
            assert np.mean(predictions == expected) >= 0.99
        else:
            np.testing.assert_array_equal(predictions, expected)
        model.close()
        # Under bf16 the weights stay constants: constant folding casts them once.
        model = loader.Model(path, devices.session_config(0, 0.9, 0, 'bf16'))
        assert not [op for op in model.graph.get_operations() if op.type == 'VarHandleOp']
        model.close()


@pytest.mark.end_to_end
def test_optimised_weights_are_dequantized_in_the_session_bit_for_bit(work):
    """fc6, fc7 and the convolution filters reach the session in 8 bits, 64-byte aligned (fed
    without a copy), and are dequantized there into their variables: exactly the numbers of
    dequantize_constants. No 8-bit constant or float copy of them stays in the graph, and the
    logits are those of the same graph with every weight a constant, run with the same session
    options."""
    work, _ = work
    folder = str(work / 'frozen_8bit')
    assert main.main(['freeze', '-cd', str(work / 'ckpt'), '-fd', folder]) == 0
    assert main.main(['optimise', '-fd', folder, '-od', folder + '_optimised']) == 0
    stored = model_dir.read_graph_def(os.path.join(folder + '_optimised', model_dir.GRAPH_FILE))
    constants = graph_surgery.dequantize_constants(stored)
    expected = {node.name: tf.make_ndarray(node.attr['value'].tensor)
                for node in constants.node if node.op == 'Const'}
    assert len(graph_surgery.split_matmul_weights(stored)[1]) == 2  # fc6 and fc7
    _, weights = graph_surgery.split_matmul_weights(stored, filters=True)
    assert len(weights) >= len(SMALL_VGG16) + 2 + 3  # and every Conv2D's filter
    for weight in weights.values():
        assert weight.values.ctypes.data % 64 == 0
    assert sum(weight.values.dtype == np.uint8 for weight in weights.values()) >= 2

    model = loader.Model(folder + '_optimised', devices.session_config(0, 0.9, 0, 'fp32'))
    operations = model.graph.get_operations()
    reads = {op.inputs[0].op.name: op.outputs[0] for op in operations
             if op.type == 'ReadVariableOp'}
    for index, name in enumerate(sorted(weights)):
        value = model.session.run(reads['matmul_weights/w%d' % index])
        np.testing.assert_array_equal(value.view(np.uint32), expected[name].view(np.uint32))
    shapes = {weight.values.shape for weight in weights.values()}
    assert not [op.name for op in operations if op.type == 'Dequantize' or op.type == 'Const'
                and (op.get_attr('dtype') == tf.quint8 or tuple(op.outputs[0].shape) in shapes)]

    images = np.random.default_rng(5).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
    logits = model.session.run(fcn8vgg16.LOGITS_TENSOR, {model.input: images})
    with tf.Graph().as_default(), tf1.Session(config=model.session_config) as session:
        # fc6 in row bands, as the loader computes it: the same sums in the same order
        graph_surgery.fc_products_in_row_bands(constants)
        tf.graph_util.import_graph_def(constants, name='')
        reference = session.run(fcn8vgg16.LOGITS_TENSOR, {fcn8vgg16.INPUT_TENSOR: images})
    np.testing.assert_array_equal(logits, reference)
    assert len(np.unique(np.argmax(reference, axis=-1))) >= 2  # a model that tells classes apart
    model.close()


@pytest.mark.end_to_end
def test_frozen_graph_is_usable_by_tensor_name(work):
    work, _ = work
    assert main.main(['freeze', '-cd', str(work / 'ckpt'), '-fd', str(work / 'by_name')]) == 0
    graph_def = model_dir.read_graph_def(str(work / 'by_name' / 'graph.pb'))
    with tf.Graph().as_default() as graph, tf1.Session() as session:
        tf.graph_util.import_graph_def(graph_def, name='')
        output = session.run(graph.get_tensor_by_name(fcn8vgg16.OUTPUT_TENSOR),
                             {graph.get_tensor_by_name(fcn8vgg16.INPUT_TENSOR):
                              np.zeros((2, 64, 96, 3), np.uint8)})
    assert output.shape == (2, 64, 96) and output.dtype == np.uint8
    with tf.Graph().as_default(), tf1.Session() as session:  # and as a SavedModel
        tf1.saved_model.loader.load(session, [fcn8vgg16.SAVED_MODEL_TAG], str(work / 'by_name'))
        signature = session.graph.get_tensor_by_name(fcn8vgg16.OUTPUT_TENSOR)
        assert signature.dtype == tf.uint8


def _optimised_model(root):
    """optimised_model/ in the cwd, frozen and optimised from ckpt/ unless an earlier test did."""
    if not os.path.exists('optimised_model'):
        assert main.main(['freeze', '--ckpt_dir=ckpt', '--frozen_model_dir=frozen_model']) == 0
        assert main.main(['optimise', '--frozen_model_dir=frozen_model',
                          '--optimised_model_dir=optimised_model', '--calibration_images',
                          os.path.join(root, 'leftImg8bit/train/*/*.png')]) == 0


@pytest.mark.end_to_end
def test_predict_and_video_run_the_optimised_model(work, monkeypatch):
    work, root = work
    monkeypatch.chdir(work)
    _optimised_model(root)
    assert main.main(['predict', '--model_dir=optimised_model', '-ip',
                      os.path.join(root, 'leftImg8bit/test/*/*.png')]) == 0
    assert len(glob.glob('runs/*/overlays/*.png')) >= 2
    assert main.main(['video', '--model_dir=optimised_model', '-vi',
                      demo_data.demo_video_path(root), '-vo', 'out.mp4']) == 0
    assert os.path.getsize('out.mp4') > 0
    assert main.main(['evaluate', '--model_dir=optimised_model/model.tflite', '-ip',
                      os.path.join(root, 'leftImg8bit/val/*/*.png'), '-lp',
                      os.path.join(root, 'gtFine/val'), '-rd', 'tflite_eval']) == 0
    (report,) = glob.glob('tflite_eval/*/metrics.json')
    assert 0 <= helper.read_json(report)['mean_iou'] <= 1


# main.main in a fresh interpreter; prints whether the process imported TensorFlow.
_MAIN_REPORTING_IMPORTS = ('import sys, main; code = main.main(sys.argv[1:]); '
                           'print("tensorflow imported:", "tensorflow" in sys.modules); '
                           'sys.exit(code)')


@pytest.mark.end_to_end
@pytest.mark.filterwarnings('ignore:.*tf.lite.Interpreter is deprecated')  # the reference here
def test_the_tflite_and_onnx_models_predict_video_and_evaluate_without_importing_tensorflow(
        work, monkeypatch):
    """LiteRT and ONNX Runtime run them, so TensorFlow's import stays out of their start (but
    for evaluate's TensorBoard summaries); the int8 model's class ids are those of
    TensorFlow's own TFLite interpreter."""
    work, root = work
    monkeypatch.chdir(work)
    _optimised_model(root)
    images = sorted(glob.glob(os.path.join(root, 'leftImg8bit/test/*/*.png')))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(main.__file__)))
    for engine in ('tflite', 'onnx'):
        model = 'optimised_model/model.' + engine
        for args in (['predict', '--save_labels', '-rd', engine + '_cli_runs', '-ip',
                      os.path.join(root, 'leftImg8bit/test/*/*.png')],
                     ['video', '-vi', demo_data.demo_video_path(root), '-vo', engine + '_cli.mp4'],
                     ['evaluate', '-rd', engine + '_cli_runs', '-ip',
                      os.path.join(root, 'leftImg8bit/val/*/*.png'), '-lp',
                      os.path.join(root, 'gtFine/val')]):
            done = subprocess.run([sys.executable, '-c', _MAIN_REPORTING_IMPORTS] + args
                                  + ['--gpu', '0', '-md', model], env=env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            assert 'tensorflow imported: False' in done.stdout
        assert len(glob.glob(engine + '_cli_runs/*/trainIds/*.png')) == len(images)
        assert len(glob.glob(engine + '_cli_runs/*/metrics.json')) == 1
        assert os.path.getsize(engine + '_cli.mp4') > 0
    # TensorBoard summaries of evaluate are written with TensorFlow, which is then imported.
    done = subprocess.run([sys.executable, '-c', _MAIN_REPORTING_IMPORTS, 'evaluate', '--gpu',
                           '0', '-md', 'optimised_model/model.tflite', '-rd', 'summary_runs',
                           '-ip', os.path.join(root, 'leftImg8bit/val/*/*.png'), '-lp',
                           os.path.join(root, 'gtFine/val'), '--summary_dir', 'summaries'],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'tensorflow imported: True' in done.stdout and glob.glob('summaries/events.*')
    interpreter = tf.lite.Interpreter(model_path='optimised_model/model.tflite')
    interpreter.allocate_tensors()
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    int8 = tflite_model.TFLiteModel('optimised_model')
    for path in images:
        image = data_loader.read_image(path)
        interpreter.set_tensor(inputs['index'], data_loader.network_input(
            image, int8.image_shape, False)[None])
        interpreter.invoke()
        np.testing.assert_array_equal(
            int8.predict(data_loader.network_input(image, int8.image_shape, False)[None]),
            interpreter.get_tensor(outputs['index']))
        (written,) = glob.glob('tflite_cli_runs/*/trainIds/' + os.path.basename(path))
        np.testing.assert_array_equal(np.asarray(Image.open(written)),
                                      predict.predict_batch(int8, [image])[0])


@pytest.mark.end_to_end
def test_the_onnx_model_runs_every_action_and_no_onnx_leaves_it_out(work, monkeypatch, capsys):
    work, root = work
    monkeypatch.chdir(work)
    calibration = ['--calibration_images', os.path.join(root, 'leftImg8bit/train/*/*.png')]
    val = ['-ip', os.path.join(root, 'leftImg8bit/val/*/*.png'), '-lp',
           os.path.join(root, 'gtFine/val')]
    assert main.main(['freeze', '--ckpt_dir=ckpt', '--frozen_model_dir=frozen_onnx']) == 0
    assert main.main(['optimise', '-fd', 'frozen_onnx', '-od', 'optimised_onnx', '--no_onnx']
                     + calibration) == 0
    assert 'model.onnx' not in capsys.readouterr().out
    assert sorted(os.listdir('optimised_onnx')) == ['fcn8s_config.json', 'graph.pb',
                                                    'model.tflite']
    assert 'onnx_model' not in helper.read_json('optimised_onnx/fcn8s_config.json')
    onnx = 'optimised_onnx/model.onnx'
    test_images = os.path.join(root, 'leftImg8bit/test/*/*.png')
    assert main.main(['predict', '--gpu', '0', '-md', onnx, '-ip', test_images]) == 2
    assert capsys.readouterr().err.endswith('holds no model.onnx: export the model with '
                                            'optimise (without --no_onnx) first\n')
    assert main.main(['optimise', '-fd', 'frozen_onnx', '-od', 'optimised_onnx']
                     + calibration) == 0
    assert sorted(os.listdir('optimised_onnx')) == ['fcn8s_config.json', 'graph.pb',
                                                    'model.onnx', 'model.onnx.data',
                                                    'model.tflite']
    assert main.main(['predict', '--gpu', '0', '-md', onnx, '--keep_size', '-rd', 'onnx_runs',
                      '-ip', test_images]) == 0
    assert 'loaded ONNX: cityscapes, 19 classes, 64x128' in capsys.readouterr().out
    assert len(glob.glob('onnx_runs/*/overlays/*.png')) == 2
    assert main.main(['video', '--gpu', '0', '-md', onnx, '-vi', demo_data.demo_video_path(root),
                      '-vo', 'onnx.mp4']) == 0
    assert os.path.getsize('onnx.mp4') > 0
    mean_iou = {}
    for model in ('frozen_onnx', onnx):
        runs = model.replace('/', '_') + '_eval'
        assert main.main(['evaluate', '--gpu', '0', '-md', model, '-rd', runs] + val) == 0
        (report,) = glob.glob(runs + '/*/metrics.json')
        mean_iou[model] = helper.read_json(report)['mean_iou']
    assert abs(mean_iou[onnx] - mean_iou['frozen_onnx']) <= 0.001


@pytest.mark.end_to_end
def test_refuses_to_replace_a_folder_it_did_not_write(work, tmp_path, capsys):
    work, _ = work
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'thesis.tex').write_text('years of work')
    code = main.main(['freeze', '-cd', str(work / 'ckpt'), '-fd', str(mine)])
    assert code == 2
    assert 'does not hold a model written by this tool' in capsys.readouterr().err
    assert (mine / 'thesis.tex').read_text() == 'years of work'
    assert os.listdir(tmp_path) == ['mine']  # no temporary folder left beside it


@pytest.mark.end_to_end
def test_replaces_its_own_model_folder(work, tmp_path):
    work, _ = work
    target = str(tmp_path / 'frozen')
    for _ in range(2):
        assert main.main(['freeze', '-cd', str(work / 'ckpt'), '-fd', target]) == 0
    assert sorted(os.listdir(tmp_path)) == ['frozen']
    assert helper.read_json(os.path.join(target, model_dir.CONFIG_FILE))['model_format'] == 'frozen'


def test_quantize_weights_round_trips_within_one_step(tmp_path):
    weights = np.random.default_rng(0).normal(size=(3, 3, 16, 32)).astype(np.float32)
    with tf.Graph().as_default() as graph:
        tf.constant(weights, name='kernel')
        tf.constant(np.ones(8, np.float32), name='bias')  # too small: stays float
    quantized, count = graph_surgery.quantize_weights(graph.as_graph_def())
    assert count == 1
    ops = {node.name: node.op for node in quantized.node}
    assert ops['kernel'] == 'Dequantize' and ops['bias'] == 'Const'
    with tf.Graph().as_default(), tf1.Session() as session:  # TensorFlow's own Dequantize
        tf.graph_util.import_graph_def(quantized, name='')
        in_graph = session.run('kernel:0')
    folded = graph_surgery.dequantize_constants(quantized)
    (kernel,) = [n for n in folded.node if n.name == 'kernel']
    at_load = tf.make_ndarray(kernel.attr['value'].tensor)
    step = (weights.max() - weights.min()) / 255
    assert np.abs(in_graph - weights).max() <= step / 2 + 1e-6
    np.testing.assert_allclose(at_load, in_graph, atol=1e-6)
    assert len(folded.node) == 2  # the 8-bit constants and their ranges are gone


@pytest.mark.end_to_end
def test_optimise_without_a_frozen_graph_is_one_line(tmp_path, capsys):
    helper.write_json(str(tmp_path / model_dir.CONFIG_FILE), {'images_paths': None})
    code = main.main(['optimise', '-fd', str(tmp_path), '-od', str(tmp_path / 'out'),
                      '--calibration_images', '/nonexistent/*.png'])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith('error: no images match')


@pytest.mark.end_to_end
def test_freeze_at_another_image_shape(work, capsys):
    """The network is fully convolutional: a model trained at 64x128 deploys at 128x256."""
    work, root = work
    target = str(work / 'frozen_128x256')
    assert main.main(['freeze', '-cd', str(work / 'ckpt'), '-fd', target,
                      '--image_shape', '128', '256']) == 0
    model = loader.Model(target)
    assert tuple(model.image_shape) == (128, 256)
    val_paths = sorted(glob.glob(os.path.join(root, 'leftImg8bit/val/*/*.png')))
    image = data_loader.read_image(val_paths[0])
    assert predict.predict_batch(model, [image])[0].shape == image.shape[:2]
    model.close()
    assert main.main(['freeze', '-cd', str(work / 'ckpt'), '-fd', str(work / 'bad_shape'),
                      '--image_shape', '100', '256']) == 2
    assert '100' in capsys.readouterr().err
    assert not os.path.exists(str(work / 'bad_shape'))


@pytest.mark.end_to_end
def test_a_checkpoint_that_does_not_fit_its_configuration_is_one_line(work, tmp_path, capsys):
    work, root = work
    folder = tmp_path / 'ckpt'
    shutil.copytree(work / 'ckpt', folder)
    config = helper.read_json(str(folder / model_dir.CONFIG_FILE))
    helper.write_json(str(folder / model_dir.CONFIG_FILE), dict(config, fc_channels=SMALL_FC * 2))
    prefix = tf.train.latest_checkpoint(str(folder))
    expected = ('fc6/weights in %s is [7, 7, 64, %d], the model\'s fc6/weights is [7, 7, 64, %d]'
                % (prefix, SMALL_FC, SMALL_FC * 2))
    images = os.path.join(root, 'leftImg8bit/val/*/*.png')
    for args in (['predict', '-md', str(folder), '-ip', images, '-rd', str(tmp_path / 'runs')],
                 ['freeze', '-cd', str(folder), '-fd', str(tmp_path / 'frozen')]):
        assert main.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith('error: ') and err[-1].endswith(expected), err
        assert 'Traceback' not in '\n'.join(err)
    assert not (tmp_path / 'frozen').exists()
