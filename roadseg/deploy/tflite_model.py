"""A full-integer TensorFlow Lite copy of a frozen FCN-8s graph, and a model class that runs it.

convert_int8() turns the frozen float graph (uint8 RGB in, class ids out) into model.tflite with
int8 weights and activations, calibrated on up to 100 images, at one fixed image shape.
TFLiteModel has the interface of inference.Model, so that predict, evaluate and video run either.
"""
import os
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tqdm import tqdm

import data_loader
import fcn8vgg16
import helper
from roadseg import model_dir
from roadseg.deploy import inference
from helper import UserError

tf1 = tf.compat.v1

TFLITE_FILE = 'model.tflite'
MAX_CALIBRATION_IMAGES = 100
SCORE_DEPTH = 16.0  # scores this far below a pixel's best are clipped before upscore8
# AUTO applies the XNNPACK delegate, which runs the int8 convolutions several times faster
# than TFLite's own kernels.
_RESOLVERS = {True: tf.lite.experimental.OpResolverType.AUTO,
              False: tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def _read_graph_def(graph_def_or_path):
    if isinstance(graph_def_or_path, tf1.GraphDef):
        return graph_def_or_path
    return model_dir.read_graph_def(graph_def_or_path)


def _const(graph_def, name, value):
    """Adds an int32 Const node; returns its name."""
    node = graph_def.node.add(name=name, op='Const')
    node.attr['dtype'].type = types_pb2.DT_INT32
    node.attr['value'].tensor.CopyFrom(tf1.make_tensor_proto(value, tf.int32))
    return name


def _make_identity(node, input_name, dtype):
    node.op = 'Identity'
    del node.input[:]
    node.input.append(input_name)
    node.ClearField('attr')
    node.attr['T'].type = dtype


def _clip_scores(graph_def):
    """Feeds upscore8 each 1/8 pixel's scores minus its best score, clipped at -SCORE_DEPTH.

    The bilinear upsampling gives every class the same interpolated shift, so the argmax is
    unchanged unless a class SCORE_DEPTH below the best at one pixel wins 8 pixels away (no
    pixel of the demo model's 32 val images changed). The int8 logits then span [-16, 0] instead of every class' range
    (~[-50, 45]): a 4x finer step, +1 point of pixel agreement with the float model.
    """
    for upscore8 in graph_def.node:
        if upscore8.op == 'Conv2DBackpropInput' and upscore8.name.startswith('upscore8/'):
            break
    else:
        return  # not an FCN-8s graph: nothing to clip
    with tf.Graph().as_default() as scratch:
        scores = tf1.placeholder(tf.float32, name=upscore8.input[2])
        with tf1.name_scope('clip_scores'):
            clipped = tf.maximum(scores - tf.reduce_max(scores, -1, keepdims=True), -SCORE_DEPTH)
    graph_def.node.extend(node for node in scratch.as_graph_def().node
                          if node.name != scores.op.name)
    upscore8.input[2] = clipped.op.name


def _data_input(name):
    """The node name of an input, without its output index or control marker."""
    return name.lstrip('^').split(':')[0]


def _walk(nodes, name, through, scope=''):
    """From node `name` along first inputs while the op is in `through` and the name in
    `scope`; returns the nodes passed (the first included) and the first node not passed, or
    None past the graph."""
    passed, node = [], nodes.get(name)
    while node is not None and node.op in through and node.name.startswith(scope):
        passed.append(node)
        node = nodes.get(_data_input(node.input[0])) if node.input else None
    return passed, node


def _layer_input(nodes, matmul, layer):
    """(the layer's input tensor, kernel size) of an fc6/fc7 product: back from the product's
    flattened patches through the reshape, slices, concatenations and SAME padding that
    fcn8vgg16 builds them with, to the first node outside the layer's scope."""
    passed, outside = _walk(nodes, _data_input(matmul.input[0]),
                            ('Reshape', 'ConcatV2', 'StridedSlice', 'Pad'), layer + '/')
    if outside is None or not passed or passed[0].op != 'Reshape':
        raise UserError('cannot find the input of %s in the frozen graph: expected its '
                        'patches built from one tensor (Reshape of slices of a Pad)' % layer)
    pads = [node for node in passed if node.op == 'Pad']
    if not pads:  # a 1 x 1 kernel: the product reads the layer's input itself
        return passed[-1].input[0], 1
    paddings = nodes.get(_data_input(pads[0].input[1]))
    if paddings is None or paddings.op != 'Const':
        raise UserError('the padding of %s in the frozen graph is not a constant' % layer)
    return pads[0].input[0], 2 * int(tf.make_ndarray(paddings.attr['value'].tensor)[1][0]) + 1


def _kernel(nodes, matmul, layer, size):
    """The product's weights as a [size, size, in, out] SAME convolution kernel."""
    _, weights = _walk(nodes, _data_input(matmul.input[1]), ('Reshape', 'Identity'))
    if weights is None or weights.op != 'Const':
        raise UserError('the weights of %s in the frozen graph are not a constant (%s): '
                        'freeze the model again' % (layer, weights.op if weights else 'none'))
    kernel = tf.make_ndarray(weights.attr['value'].tensor)
    return kernel.reshape((size, size, -1, kernel.shape[-1]))


def _back_to_image_shape(graph_def, output, layer):
    """The Reshape that turns the product's [pixels, out] rows back into [batch, h, w, out],
    past any bias and ReLU: each works on the last axis alike in either shape. Grappler's
    constant folding removes a bias that is still all zeros (a model trained for a few steps,
    whose fc6/fc7 no gradient has reached yet), so none is required."""
    consumers = {}
    for node in graph_def.node:
        for name in node.input:
            consumers.setdefault(_data_input(name), []).append(node)
    node = output
    while True:
        following = consumers.get(node.name, [])
        if len(following) != 1 or following[0].op not in _ROW_WISE_OPS + ('Reshape',):
            raise UserError('cannot turn %s back into a convolution: expected its product '
                            'followed by a bias, a ReLU and a Reshape, found %s after %s' % (
                                layer, ', '.join(n.op for n in following) or 'nothing',
                                node.name))
        node = following[0]
        if node.op == 'Reshape':
            return node


# Ops that may stand between an fc6/fc7 product and its reshape to [batch, h, w, out].
_ROW_WISE_OPS = ('BiasAdd', 'Relu', 'Identity', 'Add', 'AddV2')


def _matmuls_as_convolutions(graph_def):
    """Turns each fc6/fc7 matrix product (fcn8vgg16._conv_as_matmul) back into the SAME
    convolution it computes, in place.

    The converter fixes the shape of the reshape back to [1, h, w, filters] at the image shape
    it converts at, so XNNPACK could no longer resize the model for another image size; a
    convolution's output size follows its input.
    """
    nodes = {node.name: node for node in graph_def.node}
    for matmul in [node for node in graph_def.node if node.op == 'MatMul'
                   and node.name.split('/')[0] in fcn8vgg16.MATMUL_LAYERS]:
        layer = matmul.name.split('/')[0]
        inputs, size = _layer_input(nodes, matmul, layer)
        reshape = _back_to_image_shape(graph_def, matmul, layer)
        conv = graph_def.node.add(name=matmul.name + '_as_conv', op='Conv2D', input=[
            inputs, _float_const(graph_def, layer + '/kernel_hwio',
                                 _kernel(nodes, matmul, layer, size))])
        conv.attr['T'].type = types_pb2.DT_FLOAT
        conv.attr['strides'].list.i.extend([1, 1, 1, 1])
        conv.attr['padding'].s = b'SAME'
        for node in graph_def.node:
            node.input[:] = [conv.name if name == matmul.name else name for name in node.input]
        _make_identity(reshape, reshape.input[0], types_pb2.DT_FLOAT)


def _float_const(graph_def, name, value):
    node = graph_def.node.add(name=name, op='Const')
    node.attr['dtype'].type = types_pb2.DT_FLOAT
    node.attr['value'].tensor.CopyFrom(tf1.make_tensor_proto(value, tf.float32))
    return name


def _graph_for_tflite(graph_def):
    """The frozen graph, pruned to its predictions and rewritten for the int8 converter.

    - Each dropout is select(uniform >= rate, x / (1 - rate), 0): TFLite has no int8 random op,
      and keep_prob is 1 at inference, so the select becomes x.
    - The RGB -> BGR ReverseV2 of the input becomes a Gather of channels [2, 1, 0]: the quantiser
      gives REVERSE_V2 an output scale of its own while its int8 kernel copies bytes unscaled
      (TF 2.21: 60% relative error from there on); GATHER keeps its input's scale.
    - The uint8 input placeholder becomes float32 and its Cast an Identity: the converter then
      quantises the input itself (uint8 in, scale 1), so no float32 tensor is left in the model.
    - upscore8 upsamples clipped scores (_clip_scores).
    - fc6 and fc7 are convolutions again (_matmuls_as_convolutions).
    """
    names = {node.name for node in graph_def.node}
    for name in (fcn8vgg16.INPUT_NAME, fcn8vgg16.OUTPUT_NAME):
        if name not in names:
            raise UserError('the frozen graph has no %r node: not a graph of this tool' % name)
    graph_def = tf1.graph_util.extract_sub_graph(graph_def, [fcn8vgg16.OUTPUT_NAME])
    nodes = {node.name: node for node in graph_def.node}

    def op_of(name):
        return nodes[name.lstrip('^').split(':')[0]].op

    for node in list(graph_def.node):
        if node.op == 'SelectV2' and op_of(node.input[0]) == 'GreaterEqual' and \
                op_of(nodes[node.input[0]].input[0]) == 'RandomUniform':
            _make_identity(node, nodes[node.input[1]].input[0], node.attr['T'].type)
        elif node.op == 'ReverseV2' and op_of(node.input[0]) == 'Cast' and \
                nodes[node.input[0]].input[0] == fcn8vgg16.INPUT_NAME:
            node.op = 'GatherV2'
            node.input[1] = _const(graph_def, node.name + '/channels', [2, 1, 0])
            node.input.append(_const(graph_def, node.name + '/axis', 3))
            node.attr['Tparams'].type = node.attr['T'].type
            node.attr['Tindices'].type = node.attr['Taxis'].type = types_pb2.DT_INT32
            del node.attr['T'], node.attr['Tidx']
    for node in graph_def.node:
        if node.name == fcn8vgg16.INPUT_NAME:
            node.attr['dtype'].type = types_pb2.DT_FLOAT
        elif fcn8vgg16.INPUT_NAME in node.input and node.op == 'Cast':
            _make_identity(node, fcn8vgg16.INPUT_NAME, types_pb2.DT_FLOAT)
        elif fcn8vgg16.INPUT_NAME in node.input:
            node.attr['T'].type = types_pb2.DT_FLOAT  # Shape, for the upscore8 output size
    _clip_scores(graph_def)
    _matmuls_as_convolutions(graph_def)
    return tf1.graph_util.extract_sub_graph(graph_def, [fcn8vgg16.OUTPUT_NAME])


def _representative_dataset(calibration_paths, image_shape):
    """Up to MAX_CALIBRATION_IMAGES paths, evenly spread over the sorted list, one at a time as
    float32 [1, h, w, 3] resized like inference.network_input."""
    paths = sorted(calibration_paths)
    count = min(len(paths), MAX_CALIBRATION_IMAGES)
    paths = [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]

    def images():
        for path in tqdm(paths, desc='Calibrate', unit='img'):
            image = inference.network_input(data_loader.read_image(path), image_shape, False)
            yield [image[None].astype(np.float32)]
    return images, len(paths)


def convert_int8(graph_def_or_path, output_path, image_shape, calibration_paths):
    """Writes a full-integer TFLite model of a frozen graph: uint8 RGB [1, h, w, 3] in, uint8
    class ids [1, h, w] out, int8 weights (per channel) and activations, int32 biases.

    Calibrated on up to 100 of calibration_paths. Returns dict(bytes, calibration_images).
    """
    height, width = data_loader.check_image_shape(image_shape)
    if not calibration_paths:
        raise UserError('no calibration images for the int8 TFLite model')
    graph_def = _graph_for_tflite(_read_graph_def(graph_def_or_path))
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name='')
        images = graph.get_tensor_by_name(fcn8vgg16.INPUT_TENSOR)
        images.set_shape([1, height, width, 3])
        converter = tf1.lite.TFLiteConverter(
            graph_def, [images], [graph.get_tensor_by_name(fcn8vgg16.OUTPUT_TENSOR)])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset, count = _representative_dataset(calibration_paths,
                                                                       (height, width))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    try:
        flatbuffer = converter.convert()
    except UserError:
        raise
    except Exception as error:  # ConverterError and whatever calibration raises
        raise UserError('int8 TFLite conversion failed: %s' % helper.first_line(error)) from None

    def write(path):
        with open(path, 'wb') as f:
            f.write(flatbuffer)

    helper.write_atomically(output_path, write)
    return dict(bytes=len(flatbuffer), calibration_images=count)


class TFLiteModel:
    """model.tflite of a model folder with inference.Model's interface: uint8 RGB batches in,
    class ids out, one image at a time through the interpreter (XNNPACK, all cores)."""

    kind = 'TFLite int8'

    def __init__(self, folder, num_threads=None, xnnpack=True):
        self.model_dir = folder
        self.config = model_dir.read_model_config(folder)
        self.label_set = data_loader.get_label_set(self.config['label_set'])
        self.image_shape = tuple(self.config['image_shape'])
        self.path = path = os.path.join(folder, TFLITE_FILE)
        if not os.path.exists(path):
            raise UserError('%s holds no %s: export the model with optimise first'
                            % (folder, TFLITE_FILE))
        with warnings.catch_warnings():
            # TF 2.20+ points to the ai-edge-litert package: the same interpreter, not needed.
            warnings.filterwarnings('ignore', '.*tf.lite.Interpreter is deprecated')
            self.interpreter = tf.lite.Interpreter(
                model_path=path, num_threads=num_threads or os.cpu_count(),
                experimental_op_resolver_type=_RESOLVERS[xnnpack])
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        if tuple(self._input['shape'][1:3]) != self.image_shape:
            raise UserError('%s takes %dx%d images but its %s says %dx%d' % (
                (path,) + tuple(self._input['shape'][1:3]) + (model_dir.CONFIG_FILE,)
                + self.image_shape))
        self._size = self.image_shape

    def predict(self, images):
        """uint8 [batch, h, w, 3], h and w multiples of 32 -> uint8 class ids [batch, h, w]."""
        self._fit_input(tuple(images.shape[1:3]))
        outputs = np.empty(images.shape[:3], np.uint8)
        for index, image in enumerate(images):
            self.interpreter.set_tensor(self._input['index'], image[None])
            self.interpreter.invoke()
            outputs[index] = self.interpreter.get_tensor(self._output['index'])[0]
        return outputs

    def _fit_input(self, size):
        """Resizes the input for another image size (keep_size). XNNPACK, the default delegate,
        then reshapes the whole network; TFLite's own kernels keep the converted output shapes
        of the transposed convolutions and refuse (ADD: shapes not broadcastable)."""
        if size == self._size:
            return
        self._size = None
        try:
            self.interpreter.resize_tensor_input(self._input['index'], (1,) + size + (3,))
            self.interpreter.allocate_tensors()
        except RuntimeError as error:
            raise UserError('%s cannot run at %dx%d, only at its image shape %dx%d: %s' % (
                (self.path,) + size + self.image_shape + (helper.first_line(error),))) from None
        self._output = self.interpreter.get_output_details()[0]
        if tuple(self._output['shape']) != (1,) + size:
            raise UserError('%s gives %s class ids for %dx%d images, only fits %dx%d' % (
                (self.path, self._output['shape']) + size + self.image_shape))
        self._size = size

    def close(self):
        self.interpreter = None
