"""The float ONNX export on a tiny random FCN-8s: what the converter sees, what model.onnx holds,
and that ONNX Runtime predicts what the frozen graph predicts at any batch and image size."""
import os
import sys

import numpy as np
import onnx
import pytest
import tensorflow as tf
import tf2onnx
from PIL import Image

import fcn8vgg16
import helper
from helper import UserError
from roadseg import model_dir
from roadseg.deploy import graph_surgery, onnx_export, onnx_model
from synthetic import TINY_FC_CHANNELS, TINY_VGG16, frozen_tiny_graph

tf1 = tf.compat.v1
IMAGE_SHAPE = (64, 128)
NUM_CLASSES = 19


def _scenes(seeds, shape=IMAGE_SHAPE):
    """Smooth random RGB images: bilinear upsampling of 8x16 random colours."""
    return np.stack([np.asarray(Image.fromarray(np.random.default_rng(seed).integers(
        0, 256, (8, 16, 3), dtype=np.uint8)).resize(shape[::-1], Image.BILINEAR))
        for seed in seeds])


def _frozen_outputs(graph_def, images):
    """(class ids, logits) of the frozen graph in TensorFlow."""
    with tf.Graph().as_default():
        tf.import_graph_def(graph_def, name='')
        with tf1.Session() as session:
            return session.run([fcn8vgg16.OUTPUT_TENSOR, fcn8vgg16.LOGITS_TENSOR],
                               {fcn8vgg16.INPUT_TENSOR: images})


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """(frozen graph_def, path of model.onnx in a model folder, its recorded interface)."""
    folder = tmp_path_factory.mktemp('onnx') / 'optimised_model'
    folder.mkdir()
    graph_def = frozen_tiny_graph(NUM_CLASSES)
    path = str(folder / onnx_model.ONNX_FILE)
    interface = onnx_export.convert(graph_def, path, NUM_CLASSES)
    helper.write_json(str(folder / model_dir.CONFIG_FILE), dict(
        label_set='cityscapes', image_shape=list(IMAGE_SHAPE), num_classes=NUM_CLASSES,
        input_tensor=fcn8vgg16.INPUT_TENSOR, output_tensor=fcn8vgg16.OUTPUT_TENSOR,
        onnx_model=interface))
    return graph_def, path, interface


def test_graph_for_onnx_has_convolutions_for_fc6_and_fc7_and_predicts_the_same(exported):
    graph_def = exported[0]
    rewritten = graph_surgery.graph_for_onnx(graph_def)
    ops = [node.op for node in rewritten.node]
    assert 'MatMul' in {node.op for node in graph_def.node}
    assert not {'MatMul', 'RandomUniform', 'SelectV2'} & set(ops)
    # VGG's convolutions, fc6, fc7 and the three score layers.
    assert ops.count('Conv2D') == sum(convs for _, _, convs in TINY_VGG16) + 2 + 3
    images = _scenes([1, 2])
    ids, logits = _frozen_outputs(rewritten, images)
    expected_ids, expected_logits = _frozen_outputs(graph_def, images)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)


def test_weights_reach_the_converter_as_placeholders_of_their_shape():
    graph_def = graph_surgery.graph_for_onnx(frozen_tiny_graph(NUM_CLASSES))
    replaced, weights = graph_surgery.weights_as_placeholders(graph_def)
    nodes = {node.name: node for node in replaced.node}
    assert {'fc6/kernel_hwio', 'upscore8/weights'} <= set(weights)
    assert nodes['conv1_1/filter'].op == 'Const'  # 108 values: small enough to stay
    assert weights['fc6/kernel_hwio'].shape == (7, 7, TINY_VGG16[-1][1], TINY_FC_CHANNELS)
    for name, values in weights.items():
        assert values.size >= graph_surgery.MIN_QUANTIZED_ELEMENTS
        assert nodes[name].op == 'Placeholder'
        assert [d.size for d in nodes[name].attr['shape'].shape.dim] == list(values.shape)
    largest = max(np.prod([d.size for d in node.attr['value'].tensor.tensor_shape.dim])
                  for node in replaced.node if node.op == 'Const')
    assert largest < graph_surgery.MIN_QUANTIZED_ELEMENTS  # the biases, the score layers


def test_converter_sees_no_large_constant(exported, monkeypatch, tmp_path):
    """The converter copies every constant after each of its optimisers (the full-size
    model's memory blow-up): what it is given holds no weight."""
    given = []
    convert = tf2onnx.convert.from_graph_def

    def recording(graph_def, **kwargs):
        given.append(max(node.attr['value'].tensor.ByteSize() for node in graph_def.node
                         if node.op == 'Const'))
        return convert(graph_def, **kwargs)

    monkeypatch.setattr(tf2onnx.convert, 'from_graph_def', recording)
    onnx_export.convert(exported[0], str(tmp_path / 'model.onnx'), NUM_CLASSES)
    assert len(given) == 1 and given[0] < 4 * graph_surgery.MIN_QUANTIZED_ELEMENTS


def test_model_takes_uint8_nhwc_images_and_holds_its_weights(exported):
    graph_def, path, interface = exported
    assert interface == dict(file='model.onnx', data_file='model.onnx.data',
                             opset=onnx_export.OPSET, inputs=[
        dict(name='images', dtype='uint8', shape=['batch', 'height', 'width', 3],
             holds='RGB images, NHWC, height and width multiples of 32')], outputs=[
        dict(name='predictions', dtype='uint8', shape=['batch', 'height', 'width'],
             holds='class ids, the argmax of the logits'),
        dict(name='logits', dtype='float32', shape=['batch', 'height', 'width', NUM_CLASSES],
             holds='per-class scores, NHWC')])
    # The weights are initializers, the large ones in model.onnx.data at page-aligned offsets.
    model, bare = onnx.load(path), onnx.load(path, load_external_data=False)
    external = [init for init in bare.graph.initializer
                if init.data_location == onnx.TensorProto.EXTERNAL]
    assert {init.name for init in external} == {
        init.name for init in model.graph.initializer if len(init.raw_data) >= 1024} != set()
    offsets = [int(entry.value) for init in external for entry in init.external_data
               if entry.key == 'offset']
    assert len(offsets) == len(external) and all(offset % 4096 == 0 for offset in offsets)
    assert os.path.getsize(path) < os.path.getsize(os.path.join(os.path.dirname(path),
                                                                'model.onnx.data')) / 10
    assert [value.name for value in model.graph.input] == ['images']
    ops = [node.op_type for node in model.graph.node]
    assert 'MatMul' not in ops and ops.count('ConvTranspose') == 3
    assert ops.count('Conv') == sum(convs for _, _, convs in TINY_VGG16) + 2 + 3
    kernels = {init.name: init for init in model.graph.initializer if len(init.dims) == 4}
    fc6 = [init for name, init in kernels.items() if 'fc6' in name]
    assert len(fc6) == 1 and list(fc6[0].dims) == [TINY_FC_CHANNELS, TINY_VGG16[-1][1], 7, 7]
    stored = sum(init.ByteSize() for init in model.graph.initializer)
    weights = sum(node.attr['value'].tensor.ByteSize() for node in graph_def.node
                  if node.op == 'Const')
    assert 0.9 * weights < stored < 1.1 * weights  # each weight once


def test_onnx_runtime_predicts_what_the_frozen_graph_predicts_at_any_batch_and_size(exported):
    graph_def, path, _ = exported
    model = onnx_model.ONNXModel(path, gpu=0)
    assert model.kind == 'ONNX' and model.image_shape == IMAGE_SHAPE
    assert model.label_set.name == 'cityscapes' and model.label_set.num_classes == NUM_CLASSES
    for images in (_scenes(range(100, 103)), _scenes([7], (96, 160))):
        class_ids = model.predict(images)
        expected_ids, expected_logits = _frozen_outputs(graph_def, images)
        assert len(np.unique(expected_ids)) > 1  # random score layers
        assert class_ids.dtype == np.uint8 and class_ids.shape == images.shape[:3]
        assert np.mean(class_ids == expected_ids) >= 0.999
        logits = model.session.run(['logits'], {'images': images})[0]
        np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    model.close()


def test_gpu_providers_come_first_when_asked_for_and_present(capsys):
    cpu, cuda, tensorrt = ('CPUExecutionProvider', 'CUDAExecutionProvider',
                           'TensorrtExecutionProvider')
    assert onnx_model.providers([tensorrt, cuda, cpu], 1) == [tensorrt, cuda, cpu]
    assert onnx_model.providers([cuda, cpu], 2) == [cuda, cpu]
    assert onnx_model.providers([tensorrt, cuda, cpu], 0) == [cpu]
    assert capsys.readouterr().err == ''
    assert onnx_model.providers([cpu], 1) == [cpu]
    assert capsys.readouterr().err == ('warning: --gpu 1 asked for, onnxruntime has no GPU '
                                       'provider here (CPUExecutionProvider): running on the '
                                       'CPU\n')


def test_errors_are_one_line(exported, tmp_path, monkeypatch, capsys):
    graph_def, path, _ = exported
    folder = os.path.dirname(path)
    config = helper.read_json(os.path.join(folder, model_dir.CONFIG_FILE))
    helper.write_json(str(tmp_path / model_dir.CONFIG_FILE), config)
    missing = str(tmp_path / onnx_model.ONNX_FILE)
    with pytest.raises(UserError, match='holds no model.onnx: export the model with optimise'):
        onnx_model.ONNXModel(missing)
    with open(missing, 'wb') as f:
        f.write(b'not an onnx model')
    with pytest.raises(UserError, match=r'holds no model.onnx.data, the weights of model.onnx: '
                                        'keep the two files together$'):
        onnx_model.ONNXModel(missing)
    with open(str(tmp_path / onnx_model.DATA_FILE), 'wb') as f:
        f.write(b'no weights either')
    with pytest.raises(UserError, match=r'^cannot load the ONNX model .*model.onnx: [^\n]*$'):
        onnx_model.ONNXModel(missing)
    onnx_model.ONNXModel(path, precision='bf16')
    assert '--precision bf16 does not apply to the ONNX model' in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # as if it were not installed
    with pytest.raises(UserError, match='^running an ONNX model needs the onnxruntime package '
                                        r'\(.*\): pip install onnxruntime$'):
        onnx_model.ONNXModel(path)
    monkeypatch.setitem(sys.modules, 'tf2onnx', None)
    with pytest.raises(UserError, match=r'^the ONNX export \(skip it with --no_onnx\) needs '
                                        'the tf2onnx package'):
        onnx_export.convert(graph_def, missing, NUM_CLASSES)


def test_a_graph_the_converter_cannot_convert_is_one_line(tmp_path):
    with tf.Graph().as_default() as graph:  # an op that ONNX has no counterpart for
        images = tf1.placeholder(tf.uint8, [None, None, None, 3], name=fcn8vgg16.INPUT_NAME)
        pixels = tf.cast(images, tf.float32)
        logits = tf.identity(tf.math.igamma(pixels, pixels), name=fcn8vgg16.LOGITS_NAME)
        fcn8vgg16.predictions(logits)
    output = str(tmp_path / onnx_model.ONNX_FILE)
    with pytest.raises(UserError, match=r'^ONNX conversion failed: [^\n]*Igamma[^\n]*$'):
        onnx_export.convert(graph.as_graph_def(), output, NUM_CLASSES)
    assert os.listdir(str(tmp_path)) == []  # nothing half-written
