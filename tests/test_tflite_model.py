"""The int8 TFLite export on a tiny random FCN-8s: fully integer, a drop-in for the float graph."""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import fcn8vgg16
import helper
from roadseg import model_dir, specs
from roadseg.deploy import graph_surgery
from roadseg.apps import predict
from roadseg.deploy import tflite_export
from roadseg.deploy import tflite_model
from helper import UserError
from synthetic import TINY_FC_CHANNELS, TINY_VGG16, frozen_tiny_graph

tf1 = tf.compat.v1

IMAGE_SHAPE = (64, 128)
NUM_CLASSES = 19


def _scene(seed):
    """A smooth random RGB image: bilinear 8x upsampling of 8x16 random colours."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(IMAGE_SHAPE[::-1], Image.BILINEAR))


def _float_predictions(graph_def, images):
    with tf.Graph().as_default():
        tf.import_graph_def(graph_def, name='')
        with tf1.Session() as session:
            return session.run(fcn8vgg16.OUTPUT_TENSOR, {fcn8vgg16.INPUT_TENSOR: images})


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """(frozen graph_def, model folder with fcn8s_config.json and model.tflite, conversion info)."""
    work = tmp_path_factory.mktemp('tflite')
    calibration = []
    for seed in range(8):
        calibration.append(str(work / ('calibration_%d.png' % seed)))
        Image.fromarray(_scene(seed)).save(calibration[-1])
    folder = work / 'optimised_model'
    folder.mkdir()
    helper.write_json(str(folder / model_dir.CONFIG_FILE), dict(
        label_set='cityscapes', image_shape=list(IMAGE_SHAPE),
        input_tensor=fcn8vgg16.INPUT_TENSOR, output_tensor=fcn8vgg16.OUTPUT_TENSOR))
    graph_def = frozen_tiny_graph(NUM_CLASSES)
    info = tflite_export.convert_int8(graph_def, str(folder / tflite_model.TFLITE_FILE),
                                     IMAGE_SHAPE, calibration)
    return graph_def, str(folder), info


def test_graph_rewritten_for_tflite_predicts_exactly_like_the_frozen_graph(exported):
    graph_def = exported[0]
    rewritten = graph_surgery.graph_for_tflite(graph_def)
    ops = {node.op for node in rewritten.node}
    assert 'RandomUniform' in {node.op for node in graph_def.node}  # dropout, keep_prob 1
    assert not ops & {'RandomUniform', 'ReverseV2'}
    assert any(node.name.startswith('clip_scores/') for node in rewritten.node)
    images = np.stack([_scene(seed) for seed in range(200, 202)])
    with tf.Graph().as_default():
        tf.import_graph_def(rewritten, name='')
        with tf1.Session() as session:
            class_ids = session.run(fcn8vgg16.OUTPUT_TENSOR,
                                    {fcn8vgg16.INPUT_TENSOR: images.astype(np.float32)})
    np.testing.assert_array_equal(class_ids, _float_predictions(graph_def, images))


def test_conversion_is_fully_integer_with_uint8_in_and_class_ids_out(exported):
    _, folder, info = exported
    assert info['calibration_images'] == 8
    assert info['bytes'] == os.path.getsize(os.path.join(folder, tflite_model.TFLITE_FILE))
    assert [name for name in os.listdir(folder) if name.startswith('.')] == []
    umask = os.umask(0)
    os.umask(umask)  # readable by whoever may read the folder's other files, as a plain open()
    assert os.stat(os.path.join(folder, tflite_model.TFLITE_FILE)).st_mode & 0o777 == (
        0o666 & ~umask)
    interpreter = tflite_model.TFLiteModel(folder).interpreter
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inputs['dtype'] == np.uint8 and list(inputs['shape']) == [1, 64, 128, 3]
    assert outputs['dtype'] == np.uint8 and list(outputs['shape']) == [1, 64, 128]
    tensors = interpreter.get_tensor_details()
    # No float tensor at all: weights, activations and the input cast are all integer.
    assert {t['dtype'] for t in tensors} <= {np.uint8, np.int8, np.int32, np.int64}
    # Every convolution kernel is int8 with one scale per output channel, biases int32.
    kernels = [t for t in tensors if len(t['shape']) == 4 and t['shape'][0] != 1]
    # VGG convs, fc6, fc7, three score layers; upscore2 and upscore_pool4 share one kernel.
    assert len(kernels) == sum(convs for _, _, convs in TINY_VGG16) + 2 + 3 + 2
    # fc6, a matrix product over patches in the graph, is a 7 x 7 convolution again.
    fc6 = [t for t in kernels if t['name'].startswith('fc6/')]
    assert len(fc6) == 1 and list(fc6[0]['shape']) == [TINY_FC_CHANNELS, 7, 7,
                                                     TINY_VGG16[-1][1]]
    for kernel in kernels:
        assert kernel['dtype'] == np.int8, kernel['name']
        assert len(kernel['quantization_parameters']['scales']) == kernel['shape'][0]
    conv1_1 = [t for t in kernels if t['name'].startswith('conv1_1')]
    assert len(conv1_1) == 1 and list(conv1_1[0]['shape']) == [4, 3, 3, 3]


def test_tflite_model_predicts_like_the_float_graph(exported):
    graph_def, folder, _ = exported
    model = tflite_model.TFLiteModel(folder)
    assert model.kind == 'TFLite int8' and model.image_shape == IMAGE_SHAPE
    assert model.config['image_shape'] == list(IMAGE_SHAPE)
    assert model.label_set.name == 'cityscapes' and model.label_set.num_classes == NUM_CLASSES
    images = np.stack([_scene(seed) for seed in range(100, 103)])  # not calibration images
    class_ids = model.predict(images)
    assert class_ids.dtype == np.uint8 and class_ids.shape == (3,) + IMAGE_SHAPE
    expected = _float_predictions(graph_def, images)
    assert len(np.unique(expected)) > 1  # random score layers: not one class everywhere
    assert np.mean(class_ids == expected) >= 0.9
    # Images of another size are resized to the model's shape and the ids resized back.
    photo = np.asarray(Image.fromarray(images[0]).resize((150, 80), Image.BILINEAR))
    (resized_back,) = predict.predict_batch(model, [photo])
    assert resized_back.shape == (80, 150) and resized_back.dtype == np.uint8
    model.close()


def test_keep_size_resizes_the_input_under_xnnpack_only(exported):
    graph_def, folder, _ = exported
    images = np.stack([np.asarray(Image.fromarray(_scene(7)).resize((160, 96)))])
    model = tflite_model.TFLiteModel(folder)
    class_ids = model.predict(images)
    assert class_ids.shape == (1, 96, 160)
    assert np.mean(class_ids == _float_predictions(graph_def, images)) >= 0.9
    assert model.predict(np.stack([_scene(8)])).shape == (1,) + IMAGE_SHAPE  # and back
    # TFLite's own kernels keep the transposed convolutions' converted output shapes.
    without_xnnpack = tflite_model.TFLiteModel(folder, xnnpack=False)
    with pytest.raises(UserError, match='cannot run at 96x160, only at its image shape 64x128'):
        without_xnnpack.predict(images)


@pytest.mark.parametrize('inference', [specs.Inference((0.5, 1.0)), specs.Inference(flip=True),
                                       specs.Inference(tile=(64, 64)),
                                       specs.Inference(save_probs='all')])
def test_the_int8_model_refuses_to_average_or_save_probabilities_in_one_line(exported,
                                                                             inference):
    """It outputs class ids only: --scales, --flip, --tile and --save_probs are refused before
    any image runs; the default still predicts."""
    model = tflite_model.TFLiteModel(exported[1])
    with pytest.raises(UserError, match=r'^the TFLite int8 model outputs class ids only'):
        inference.check_model(model)
    with pytest.raises(UserError, match=r'^the TFLite int8 model outputs class ids only'):
        predict.predict_batch(model, [_scene(9)], False, inference)
    specs.Inference().check_model(model)
    assert predict.predict_batch(model, [_scene(9)], False, specs.Inference())[0].shape == (
        IMAGE_SHAPE)


def test_errors(exported, tmp_path):
    graph_def, folder, _ = exported
    output = str(tmp_path / tflite_model.TFLITE_FILE)
    with pytest.raises(UserError, match='no calibration images'):
        tflite_export.convert_int8(graph_def, output, IMAGE_SHAPE, [])
    unreadable = tmp_path / 'broken.png'
    unreadable.write_bytes(b'not a png')
    with pytest.raises(UserError, match='cannot read image .*broken.png'):
        tflite_export.convert_int8(graph_def, output, IMAGE_SHAPE, [str(unreadable)])
    with pytest.raises(UserError, match='image shape 64x100 is not a positive multiple of 32'):
        tflite_export.convert_int8(graph_def, output, (64, 100), [str(unreadable)])
    logits_only = tf1.graph_util.extract_sub_graph(graph_def, [fcn8vgg16.LOGITS_NAME])
    with pytest.raises(UserError, match="no 'predictions' node"):
        tflite_export.convert_int8(logits_only, output, IMAGE_SHAPE, [str(unreadable)])
    with tf.Graph().as_default() as graph:  # an op that TFLite has no kernel for
        images = tf1.placeholder(tf.uint8, [None, None, None, 3], name=fcn8vgg16.INPUT_NAME)
        pixels = tf.cast(images, tf.float32)
        fcn8vgg16.predictions(tf.math.igamma(pixels, pixels))
    readable = str(tmp_path / 'scene.png')
    Image.fromarray(_scene(0)).save(readable)
    with pytest.raises(UserError, match=r'^int8 TFLite conversion failed: [^\n]*Igamma[^\n]*$'):
        tflite_export.convert_int8(graph.as_graph_def(), output, IMAGE_SHAPE, [readable])
    with pytest.raises(UserError, match='cannot read the graph .*missing.pb'):
        tflite_export.convert_int8(str(tmp_path / 'missing.pb'), output, IMAGE_SHAPE,
                                  [str(unreadable)])
    assert sorted(os.listdir(str(tmp_path))) == ['broken.png', 'scene.png']  # nothing half-written
    helper.write_json(str(tmp_path / model_dir.CONFIG_FILE),
                      helper.read_json(os.path.join(folder, model_dir.CONFIG_FILE)))
    with pytest.raises(UserError, match='holds no model.tflite'):
        tflite_model.TFLiteModel(str(tmp_path))


def test_an_fc_layer_in_an_unknown_form_is_one_line_naming_it(exported, tmp_path):
    graph_def, _, _ = exported
    changed = tf1.GraphDef()
    changed.CopyFrom(graph_def)
    for node in changed.node:  # fc6's product no longer reshaped back to [batch, h, w, out]
        if node.name.startswith('fc6/') and node.op == 'Reshape' and \
                node.input[0].startswith('fc6/Relu'):
            node.op = 'Identity'
            del node.input[1:]
            node.attr.pop('Tshape')
    with pytest.raises(UserError, match=r'^cannot turn fc6 back into a convolution: expected '
                                        r'its product followed by a bias, a ReLU and a Reshape'):
        tflite_export.convert_int8(changed, str(tmp_path / 'model.tflite'), IMAGE_SHAPE,
                                  [str(tmp_path / 'unused.png')])
