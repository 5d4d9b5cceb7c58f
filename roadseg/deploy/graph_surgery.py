"""Every rewrite of a GraphDef the deployment makes, each a function from graph to graph.

freeze: frozen_graph_def() turns a checkpoint's variables into constants of the inference
graph. optimise: fold_constants() folds and prunes it once, offline, and quantize_weights()
stores its large weights in 8 bits. Loading: dequantize_constants() turns those back into
float constants once, split_matmul_weights() takes the fc6/fc7 weights out to feed them
into variables, and fc_products_in_row_bands() computes fc6 without its zero padding. TFLite:
graph_for_tflite() rewrites the frozen graph for the int8 converter. ONNX: graph_for_onnx()
rewrites it for tf2onnx, and weights_as_placeholders() keeps its weights out of the
converter.
"""
import collections

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, rewriter_config_pb2
from tensorflow.python.grappler import tf_optimizer

import fcn8vgg16
from helper import UserError
from roadseg import fc_products, specs
from roadseg.deploy import graph_file

tf1 = tf.compat.v1

OUTPUT_NODES = [fcn8vgg16.OUTPUT_NAME, fcn8vgg16.LOGITS_NAME]
# Smaller float constants stay float: biases and score layers weigh nothing and quantize badly.
MIN_QUANTIZED_ELEMENTS = 1024
SCORE_DEPTH = 16.0  # scores this far below a pixel's best are clipped before upscore8
# Ops that may stand between an fc6/fc7 product and its reshape to [batch, h, w, out].
ROW_WISE_OPS = ('BiasAdd', 'Relu', 'Identity', 'Add', 'AddV2')


# ------------------------------------------------------------------------- freeze, optimise

def frozen_graph_def(config, prefix):
    """(GraphDef, number of variables converted): the inference graph of a model
    configuration with the weights of the checkpoint prefix as constants (no optimiser,
    summaries or dropout)."""
    graph_def, weights, count = _frozen(config, prefix)
    return graph_def, count


def frozen_graph_def_and_matmul_weights(config, prefix, filters=False):
    """split_matmul_weights(frozen_graph_def(config, prefix)[0], filters=filters), without
    the weights it takes out ever being constants: each is a Placeholder of its name in the
    graph and goes from the checkpoint straight into its StoredWeight."""
    graph_def, weights, _ = _frozen(config, prefix, apart_ops=_weight_ops(filters))
    return graph_def, weights


def _frozen(config, prefix, apart_ops=()):
    """(GraphDef, {name: StoredWeight} of the weights kept apart, number of variables).

    Each weight is read from the checkpoint into its constant in place, one at a time: a
    session restoring the variables and converting them would hold every weight three times.
    """
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)  # initialisers never run; determinism mode asks for a seed
        network = specs.Network.from_config(config)
        fcn8vgg16.inference_graph(config['num_classes'], network.encoder, network.fc_channels)
        count = len(tf1.global_variables())
    graph_def = tf1.graph_util.extract_sub_graph(graph.as_graph_def(), OUTPUT_NODES)
    variables = set()
    for node in graph_def.node:
        if node.op == 'VarHandleOp':  # a placeholder of the variable's shape, filled below
            variables.add(node.name)
            node.op = 'Placeholder'
            for key in [key for key in node.attr if key not in ('dtype', 'shape')]:
                del node.attr[key]
        elif node.op == 'ReadVariableOp':  # the variable's value: the weight's
            dtype = node.attr['dtype'].type
            del node.attr['dtype']
            node.op = 'Identity'
            node.attr['T'].type = dtype
    apart = set(_weight_nodes(graph_def, apart_ops))
    reader = tf.train.load_checkpoint(prefix)
    weights = {}
    for node in graph_def.node:
        if node.name not in variables:
            continue
        value = _checkpoint_value(node, reader, prefix)
        if node.name in apart:
            weights[node.name] = StoredWeight(_aligned(value), None, None)
            continue
        node.op = 'Const'
        del node.attr['shape']
        node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(value))
        del value
    graph_def = tf1.graph_util.remove_training_nodes(graph_def, protected_nodes=OUTPUT_NODES)
    return graph_def, weights, count


def _checkpoint_value(node, reader, prefix):
    """The checkpoint's value of the variable a Placeholder node stands for."""
    value = reader.get_tensor(node.name)
    shape = [dim.size for dim in node.attr['shape'].shape.dim]
    if list(value.shape) != shape:
        raise ValueError('%s in %s is %s, the model\'s %s is %s' % (
            node.name, prefix, list(value.shape), node.name, shape))
    return value


def fold_constants(graph_def):
    """Grappler's constant folding and pruning, run once, offline, on the frozen graph."""
    meta = meta_graph_pb2.MetaGraphDef(graph_def=graph_def)
    fetch = meta.collection_def['train_op'].node_list.value
    fetch.extend(OUTPUT_NODES)
    rewriter = rewriter_config_pb2.RewriterConfig(
        optimizers=['pruning', 'constfold', 'dependency'],
        meta_optimizer_iterations=rewriter_config_pb2.RewriterConfig.ONE)
    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.CopyFrom(rewriter)
    return tf_optimizer.OptimizeGraph(config, meta)


def _large_float_constant(node, min_elements):
    """The TensorProto of a float32 Const node of at least min_elements values, else None."""
    value = node.attr['value'].tensor if node.op == 'Const' else None
    if value is None or value.dtype != tf.float32.as_datatype_enum or (
            np.prod([d.size for d in value.tensor_shape.dim]) < min_elements):
        return None
    return value


def quantize_weights(graph_def, min_elements=MIN_QUANTIZED_ELEMENTS):
    """Every float constant of min_elements or more -> 8 bits plus its range, dequantized in
    the graph (what TensorFlow 1's quantize_weights graph transform did).

    Returns (graph_def, number of quantized constants). The Dequantize node takes the
    constant's name, so its consumers are unchanged; dequantize_constants() turns it
    back into a float constant once, when the graph loads.
    """
    output = tf1.GraphDef()
    output.versions.CopyFrom(graph_def.versions)
    count = 0
    for node in graph_def.node:
        value = _large_float_constant(node, min_elements)
        if value is None:
            output.node.add().CopyFrom(node)
            continue
        weights = tf.make_ndarray(value)
        low, high = float(weights.min()), float(weights.max())
        scale = (high - low) / 255.0 or 1.0
        quantized = np.round((weights - low) / scale).astype(np.uint8)
        _add_const(output, node.name + '/quantized', quantized, tf.quint8)
        _add_const(output, node.name + '/min', np.float32(low), tf.float32)
        _add_const(output, node.name + '/max', np.float32(high), tf.float32)
        dequantize = output.node.add()
        dequantize.name, dequantize.op = node.name, 'Dequantize'
        dequantize.input.extend([node.name + '/quantized', node.name + '/min',
                                 node.name + '/max'])
        dequantize.attr['T'].type = tf.quint8.as_datatype_enum
        dequantize.attr['mode'].s = b'MIN_COMBINED'
        if node.device:
            dequantize.device = node.device
        count += 1
    return output, count


def _add_const(graph_def, name, value, dtype):
    """Appends a Const node of value as dtype; returns its name."""
    node = graph_def.node.add(name=name, op='Const')
    node.attr['dtype'].type = dtype.as_datatype_enum
    node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    return name


# --------------------------------------------------------------------------------- loading

def dequantize_constants(graph_def):
    """Replaces every Dequantize of constant 8-bit weights by the float constant it computes.

    Done once as the graph loads, so an optimised graph runs as fast as the frozen one. The
    arithmetic is TensorFlow's MIN_COMBINED mode for quint8: min + q * (max - min) / 255.
    """
    if not any(node.op == 'Dequantize' for node in graph_def.node):
        return graph_def
    consts = {node.name: node for node in graph_def.node if node.op == 'Const'}
    output = tf1.GraphDef()
    output.versions.CopyFrom(graph_def.versions)
    used, folded = set(), set()
    for node in graph_def.node:
        inputs = [name.split(':')[0] for name in node.input]
        if node.op == 'Dequantize' and all(name in consts for name in inputs):
            weights = _dequantized(*(consts[name] for name in inputs))
            new = output.node.add()
            new.name, new.op = node.name, 'Const'
            new.attr['dtype'].type = tf.float32.as_datatype_enum
            new.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(weights))
            del weights
            folded.update(inputs)
            continue
        used.update(inputs)
        output.node.add().CopyFrom(node)
    # The 8-bit constants and ranges that fed only the folded nodes are dropped.
    kept = [node for node in output.node if node.name not in folded - used]
    del output.node[:]
    output.node.extend(kept)
    return output


def _quantized(quantized, low, high, content=None):
    """(uint8 values, float32 scale, float32 low) of MIN_COMBINED quint8 constants; the values
    read straight from the proto's bytes where it has them (make_ndarray copies them twice),
    or from content, those bytes kept apart (see graph_file.read_graph_def)."""
    tensor = quantized.attr['value'].tensor
    content = tensor.tensor_content if content is None else content
    q = (_content_values(tensor, np.uint8, content) if len(content)
         else tf.make_ndarray(tensor).view(np.uint8))
    low, high = (tf.make_ndarray(node.attr['value'].tensor) for node in (low, high))
    return q, np.float32((high - low) / 255.0), np.float32(low)


def _dequantized(quantized, low, high):
    """MIN_COMBINED quint8 -> float32: min + q * (max - min) / 255, computed in place."""
    values, scale, low = _quantized(quantized, low, high)
    weights = values.astype(np.float32)
    weights *= scale
    weights += low
    return weights


# A weight as the graph stores it: float32 values (scale None), or uint8 values of 8-bit
# weights low + values * scale (see dequantize_constants).
StoredWeight = collections.namedtuple('StoredWeight', 'values scale low')


def split_matmul_weights(graph_def, contents=None, filters=False):
    """(graph_def without the constant weights of its matrix products, {node name:
    StoredWeight}). A weight is the Const, or the Dequantize of 8-bit constants (see
    dequantize_constants), that a MatMul (with filters, a Conv2D too) reads directly or through
    Reshape and Identity; the 8-bit constants only it read go too. The values are 64-byte
    aligned: a session is fed such an array without copying it. contents: {Const name: its
    tensor_content}, of the constants graph_def holds without it (graph_file.read_graph_def);
    those that are not weights get it back."""
    contents = contents or {}
    nodes = {node.name: node for node in graph_def.node}
    consts = {name: node for name, node in nodes.items() if node.op == 'Const'}
    weights = {}
    for name in _weight_nodes(graph_def, _weight_ops(filters)):
        node = nodes[name]
        inputs = [name.split(':')[0] for name in node.input]
        if node.op == 'Const' and node.attr['dtype'].type == tf.float32.as_datatype_enum:
            weights[node.name] = StoredWeight(
                _float_values(node.attr['value'].tensor, contents.get(node.name)), None, None)
        elif node.op == 'Dequantize' and inputs and all(name in consts for name in inputs):
            values, scale, low = _quantized(*(consts[name] for name in inputs),
                                            content=contents.get(inputs[0]))
            weights[node.name] = StoredWeight(_aligned(values), scale, low)
    removed = set(weights)
    used = {name.lstrip('^').split(':')[0] for node in graph_def.node
            if node.name not in removed for name in node.input}
    removed |= {name.split(':')[0] for weight in weights for name in nodes[weight].input
                if name.split(':')[0] not in used}
    output = tf1.GraphDef()
    output.versions.CopyFrom(graph_def.versions)
    output.node.extend(node for node in graph_def.node if node.name not in removed)
    graph_file.restore(output, contents)
    return output, weights


def _weight_ops(filters):
    """The operations whose weights go into variables: the matrix products, with filters the
    convolutions too."""
    return ('MatMul', 'Conv2D') if filters else ('MatMul',)


def _weight_nodes(graph_def, ops):
    """The names of the nodes whose output the nodes of ops (MatMul, Conv2D) take as their
    weights, directly or through Reshape and Identity, in graph order, each once."""
    nodes = {node.name: node for node in graph_def.node}
    names = []
    for product in (node for node in graph_def.node if node.op in ops):
        node = nodes.get(product.input[1].split(':')[0])
        while node is not None and node.op in ('Reshape', 'Identity'):
            node = nodes.get(node.input[0].split(':')[0])
        if node is not None and node.name not in names:
            names.append(node.name)
    return names


def _float_values(tensor, content=None):
    """A float32 TensorProto's values, aligned (see _aligned), copied once from the proto's
    bytes (or content, see _quantized) where make_ndarray would copy them twice more."""
    content = tensor.tensor_content if content is None else content
    if not len(content):
        return _aligned(tf.make_ndarray(tensor))
    return _aligned(_content_values(tensor, np.float32, content))


def _content_values(tensor, dtype, content):
    """A TensorProto's tensor_content, content, as a read-only array of dtype in its shape."""
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    return np.frombuffer(content, dtype).reshape(shape)


def _aligned(array):
    """array, or a copy of it at a 64-byte aligned address (Eigen's alignment: a fed array
    that has it is used in place, any other is copied)."""
    if array.ctypes.data % 64 == 0:
        return array
    buffer = np.empty(array.nbytes + 64, np.uint8)
    start = -buffer.ctypes.data % 64
    # Copied as bytes: numpy copies floats at an address not a multiple of 4 one by one.
    buffer[start:start + array.nbytes] = array.reshape(-1).view(np.uint8)
    return buffer[start:start + array.nbytes].view(array.dtype).reshape(array.shape)


def fc_products_in_row_bands(graph_def):
    """Puts the product of each fc layer whose kernel is larger than 1 x 1 (fc6) in row bands
    (fc_products.row_band_product), in place: on fc6's 8 x 16 map at 256 x 512 they skip the
    fifth of the multiply-adds that fall on SAME's zero padding. The exported files keep the
    one product their converters expect; the loader rewrites it. The patches the product
    read go, unless something else reads them."""
    nodes = {node.name: node for node in graph_def.node}
    consumed = {_data_input(name) for node in graph_def.node for name in node.input}
    kept = [name for name in nodes if name not in consumed]
    for matmul in [node for node in graph_def.node if node.op == 'MatMul'
                   and node.name.split('/')[0] in fcn8vgg16.MATMUL_LAYERS]:
        layer = matmul.name.split('/')[0]
        try:
            inputs, size = _layer_input(nodes, matmul, layer)
        except UserError:  # not the patches this tool builds: the product stays as it is
            continue
        if size == 1:
            continue
        product = _in_scope(_row_band_def(size), layer + '/row_bands/',
                            {'inputs': inputs, 'weights': matmul.input[1]}, graph_def)
        for node in graph_def.node:
            node.input[:] = [product if _data_input(name) == matmul.name and name[0] != '^'
                             else name for name in node.input]
    _remove_unread(graph_def, kept)


def _row_band_def(size):
    """The GraphDef of fc_products.row_band_product of two float placeholders, inputs and
    weights, its result named product."""
    with tf.Graph().as_default() as graph:
        tf.identity(fc_products.row_band_product(
            tf1.placeholder(tf.float32, name='inputs'), tf1.placeholder(tf.float32,
                                                                        name='weights'),
            size), name='product')
    return graph.as_graph_def()


def _in_scope(part, scope, feeds, graph_def):
    """Adds part's nodes to graph_def under scope, its placeholders replaced by the tensors
    feeds names; returns the name of part's node 'product' there."""
    def renamed(name):
        control = '^' if name.startswith('^') else ''
        return feeds.get(name, control + scope + name.lstrip('^'))

    for node in part.node:
        if node.name not in feeds:
            added = graph_def.node.add()
            added.CopyFrom(node)
            added.name = scope + node.name
            added.input[:] = [renamed(name) for name in node.input]
    return scope + 'product'


def _remove_unread(graph_def, kept):
    """Removes from graph_def, in place, the nodes that neither are in kept nor feed one that
    is."""
    nodes = {node.name: node for node in graph_def.node}
    reached, stack = set(), [name for name in kept if name in nodes]
    while stack:
        name = stack.pop()
        if name not in reached:
            reached.add(name)
            stack.extend(_data_input(i) for i in nodes[name].input if _data_input(i) in nodes)
    for index in reversed(range(len(graph_def.node))):
        if graph_def.node[index].name not in reached:
            del graph_def.node[index]


# ------------------------------------------------------------------------------------ TFLite

def graph_for_tflite(graph_def):
    """The frozen graph, pruned to its predictions and rewritten for the int8 converter.

    - Each dropout is select(uniform >= rate, x / (1 - rate), 0): TFLite has no int8 random op,
      and keep_prob is 1 at inference, so the select becomes x.
    - The RGB -> BGR ReverseV2 of the input becomes a Gather of channels [2, 1, 0]: the quantiser
      gives REVERSE_V2 an output scale of its own while its int8 kernel copies bytes unscaled,
      so every later layer would read wrongly scaled values; GATHER keeps its input's scale.
    - The uint8 input placeholder becomes float32 and its Cast an Identity: the converter then
      quantises the input itself (uint8 in, scale 1), so no float32 tensor is left in the model.
    - upscore8 upsamples clipped scores (_clip_scores).
    - fc6 and fc7 are convolutions again (_matmuls_as_convolutions).
    """
    graph_def = _without_dropout(_outputs_of(graph_def, [fcn8vgg16.OUTPUT_NAME]))
    nodes = {node.name: node for node in graph_def.node}
    for node in list(graph_def.node):
        if node.op == 'ReverseV2' and nodes[_data_input(node.input[0])].op == 'Cast' and \
                nodes[node.input[0]].input[0] == fcn8vgg16.INPUT_NAME:
            node.op = 'GatherV2'
            node.input[1] = _add_const(graph_def, node.name + '/channels', [2, 1, 0], tf.int32)
            node.input.append(_add_const(graph_def, node.name + '/axis', 3, tf.int32))
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


def _outputs_of(graph_def, outputs):
    """graph_def pruned to the named outputs, which it must have, as the image input."""
    names = {node.name for node in graph_def.node}
    for name in [fcn8vgg16.INPUT_NAME] + outputs:
        if name not in names:
            raise UserError('the frozen graph has no %r node: not a graph of this tool' % name)
    return tf1.graph_util.extract_sub_graph(graph_def, outputs)


def _without_dropout(graph_def):
    """Each dropout, select(uniform >= rate, x / (1 - rate), 0), becomes x: keep_prob is 1 at
    inference, and neither TFLite nor ONNX has a use for the random op. In place."""
    nodes = {node.name: node for node in graph_def.node}

    def op_of(name):
        return nodes[_data_input(name)].op

    for node in list(graph_def.node):
        if node.op == 'SelectV2' and op_of(node.input[0]) == 'GreaterEqual' and \
                op_of(nodes[node.input[0]].input[0]) == 'RandomUniform':
            _make_identity(node, nodes[node.input[1]].input[0], node.attr['T'].type)
    return graph_def


def _make_identity(node, input_name, dtype):
    node.op = 'Identity'
    del node.input[:]
    node.input.append(input_name)
    node.ClearField('attr')
    node.attr['T'].type = dtype


def _clip_scores(graph_def):
    """Feeds upscore8 each 1/8 pixel's scores minus its best score, clipped at -SCORE_DEPTH.

    The bilinear upsampling gives every class the same interpolated shift, so the argmax is
    unchanged unless a class SCORE_DEPTH below the best at one pixel wins 8 pixels away. The
    int8 logits then span [-SCORE_DEPTH, 0] instead of the whole range of every class's
    scores: a finer quantisation step where the argmax is decided.
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


def _matmuls_as_convolutions(graph_def):
    """Turns each fc6/fc7 matrix product (fc_products.conv_as_matmul) back into the SAME
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
            inputs, _add_const(graph_def, layer + '/kernel_hwio',
                               _kernel(nodes, matmul, layer, size), tf.float32)])
        conv.attr['T'].type = types_pb2.DT_FLOAT
        conv.attr['strides'].list.i.extend([1, 1, 1, 1])
        conv.attr['padding'].s = b'SAME'
        for node in graph_def.node:
            node.input[:] = [conv.name if name == matmul.name else name for name in node.input]
        _make_identity(reshape, reshape.input[0], types_pb2.DT_FLOAT)


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
        if len(following) != 1 or following[0].op not in ROW_WISE_OPS + ('Reshape',):
            raise UserError('cannot turn %s back into a convolution: expected its product '
                            'followed by a bias, a ReLU and a Reshape, found %s after %s' % (
                                layer, ', '.join(n.op for n in following) or 'nothing',
                                node.name))
        node = following[0]
        if node.op == 'Reshape':
            return node


# -------------------------------------------------------------------------------------- ONNX

def graph_for_onnx(graph_def):
    """The frozen graph, pruned to its class ids and logits, for tf2onnx: without dropout, and
    fc6 and fc7 convolutions again (_matmuls_as_convolutions), so that ONNX Runtime runs them
    as the convolutions they are and the model takes any height and width."""
    graph_def = _without_dropout(_outputs_of(graph_def, OUTPUT_NODES))
    _matmuls_as_convolutions(graph_def)
    return tf1.graph_util.extract_sub_graph(graph_def, OUTPUT_NODES)


def weights_as_placeholders(graph_def, min_elements=MIN_QUANTIZED_ELEMENTS):
    """(graph_def with every float constant of min_elements or more replaced by a placeholder
    of its name, dtype and shape, {name: float32 values}).

    tf2onnx copies every constant into a new protobuf message after each of its optimisers,
    and with protobuf's upb backend the copies it replaces stay in the message's arena until
    the model is freed: on VGG16's 538 MB of weights that grows past 24 GB. Converted as
    placeholders, the weights are a few bytes each; onnx_model puts them back as initializers.
    """
    output = tf1.GraphDef()
    output.versions.CopyFrom(graph_def.versions)
    weights = {}
    for node in graph_def.node:
        value = _large_float_constant(node, min_elements)
        if value is None:
            output.node.add().CopyFrom(node)
            continue
        weights[node.name] = tf.make_ndarray(value)
        placeholder = output.node.add(name=node.name, op='Placeholder', device=node.device)
        placeholder.attr['dtype'].type = value.dtype
        placeholder.attr['shape'].shape.CopyFrom(value.tensor_shape)
    return output, weights
