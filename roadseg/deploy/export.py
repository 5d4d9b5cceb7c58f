"""Export: freeze a trained model into one constant graph, and optimise that graph to 8-bit
weights plus a full-integer TensorFlow Lite model.

A frozen folder holds graph.pb, a SavedModel of the same constant graph (saved_model.pb with the
serving signature) and fcn8s_config.json. An optimised folder holds graph.pb with 8-bit weights,
model.tflite and fcn8s_config.json. Each folder is written to a temporary folder and renamed
into place; an existing folder is replaced only if this tool wrote it.
"""
import os

import numpy as np
import tensorflow as tf

import data_loader
import helper
from roadseg import model_dir
from roadseg.deploy import inference

tf1 = tf.compat.v1

OUTPUT_NODES = inference.OUTPUT_NODES
# Smaller float constants stay float: biases and score layers weigh nothing and quantize badly.
MIN_QUANTIZED_ELEMENTS = 1024


def _bytes(paths):
    return sum(os.path.getsize(path) for path in paths if os.path.isfile(path))


def _weights_and_graph(source_dir):
    """(checkpoint prefix holding the weights, GraphDef the model was saved with, bytes) of a
    checkpoint folder or of the SavedModel that train writes."""
    saved_model = os.path.join(source_dir, 'saved_model.pb')
    if os.path.exists(saved_model):
        from tensorflow.core.protobuf import saved_model_pb2
        proto = saved_model_pb2.SavedModel()
        with open(saved_model, 'rb') as f:
            proto.ParseFromString(f.read())
        prefix = os.path.join(source_dir, 'variables', 'variables')
        graph_def = proto.meta_graphs[0].graph_def
    else:
        prefix = tf.train.latest_checkpoint(source_dir)
        if prefix is None:
            raise helper.UserError('%s holds neither a SavedModel nor a checkpoint' % source_dir)
        meta = tf1.MetaGraphDef()
        with open(prefix + '.meta', 'rb') as f:
            meta.ParseFromString(f.read())
        graph_def = meta.graph_def
    folder, name = os.path.split(prefix)
    size = _bytes([os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(name + '.')])
    return prefix, graph_def, size


def freeze(source_dir, frozen_dir, session_config=None, image_shape=None):
    """Variables -> constants of the inference-only graph (no optimiser, no summaries, no
    dropout) of a checkpoint folder or a training SavedModel.

    image_shape (H, W), when given, replaces the training size as the size the exported model
    resizes images to (and the int8 model's fixed input): the network is fully convolutional.
    """
    model_dir.check_output_dir(frozen_dir)
    config = model_dir.read_model_config(source_dir)
    if image_shape is not None:
        config['image_shape'] = list(data_loader.check_image_shape(image_shape))
    prefix, source_graph, source_bytes = _weights_and_graph(source_dir)
    frozen, variables = inference.frozen_graph_def(config, prefix, session_config)
    config = dict(config, model_format='frozen', source_model=os.path.abspath(source_dir))

    def _write(folder):
        with tf.Graph().as_default(), tf1.Session() as frozen_session:
            tf.graph_util.import_graph_def(frozen, name='')
            model_dir.write_saved_model(frozen_session, folder)
        _write_graph(frozen, folder, config)

    model_dir.write_model_dir(frozen_dir, _write)
    return dict(source_ops=len(source_graph.node), ops=len(frozen.node),
                variables=variables, source_bytes=source_bytes,
                bytes=os.path.getsize(os.path.join(frozen_dir, model_dir.GRAPH_FILE)))


def _write_graph(graph_def, folder, config):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, model_dir.GRAPH_FILE), 'wb') as f:
        f.write(graph_def.SerializeToString())
    helper.write_json(os.path.join(folder, model_dir.CONFIG_FILE), config)


def quantize_weights(graph_def, min_elements=MIN_QUANTIZED_ELEMENTS):
    """Every float constant of min_elements or more -> 8 bits plus its range, dequantized in
    the graph (what TensorFlow 1's quantize_weights graph transform did).

    Returns (graph_def, number of quantized constants). The Dequantize node takes the
    constant's name, so its consumers are unchanged; inference.dequantize_constants() turns it
    back into a float constant once, when the graph loads.
    """
    output = tf1.GraphDef()
    output.versions.CopyFrom(graph_def.versions)
    count = 0
    for node in graph_def.node:
        value = node.attr['value'].tensor if node.op == 'Const' else None
        if value is None or value.dtype != tf.float32.as_datatype_enum or (
                np.prod([d.size for d in value.tensor_shape.dim]) < min_elements):
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
    node = graph_def.node.add()
    node.name, node.op = name, 'Const'
    node.attr['dtype'].type = dtype.as_datatype_enum
    node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=dtype))


def optimise(frozen_dir, optimised_dir, calibration_paths=None):
    """Prunes and folds the frozen graph, stores its weights in 8 bits, and converts it to a
    full-integer TFLite model calibrated on calibration_paths (when given)."""
    model_dir.check_output_dir(optimised_dir)
    config = model_dir.read_model_config(frozen_dir)
    graph_path = os.path.join(frozen_dir, model_dir.GRAPH_FILE)
    if not os.path.exists(graph_path):
        raise helper.UserError('%s holds no %s: freeze the model first (python main.py freeze)'
                               % (frozen_dir, model_dir.GRAPH_FILE))
    frozen = model_dir.read_graph_def(graph_path)
    pruned = fold_constants(tf1.graph_util.extract_sub_graph(frozen, OUTPUT_NODES))
    quantized, count = quantize_weights(pruned)
    config = dict(config, model_format='optimised', source_model=os.path.abspath(frozen_dir))

    def _write(folder):
        _write_graph(quantized, folder, config)
        if calibration_paths:
            from roadseg.deploy import tflite_model
            tflite_model.convert_int8(pruned, os.path.join(folder, tflite_model.TFLITE_FILE),
                                      config['image_shape'], calibration_paths)

    model_dir.write_model_dir(optimised_dir, _write)
    return dict(source_ops=len(frozen.node), ops=len(quantized.node), quantized=count,
                source_bytes=os.path.getsize(graph_path),
                bytes=os.path.getsize(os.path.join(optimised_dir, model_dir.GRAPH_FILE)))


def fold_constants(graph_def):
    """Grappler's constant folding and pruning, run once, offline, on the frozen graph."""
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, rewriter_config_pb2
    from tensorflow.python.grappler import tf_optimizer
    meta = meta_graph_pb2.MetaGraphDef(graph_def=graph_def)
    fetch = meta.collection_def['train_op'].node_list.value
    fetch.extend(OUTPUT_NODES)
    rewriter = rewriter_config_pb2.RewriterConfig(
        optimizers=['pruning', 'constfold', 'dependency'],
        meta_optimizer_iterations=rewriter_config_pb2.RewriterConfig.ONE)
    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.CopyFrom(rewriter)
    return tf_optimizer.OptimizeGraph(config, meta)


def calibration_images(config, count=100):
    """Up to `count` training images of the model's dataset, read from its configuration."""
    pattern = config.get('images_paths')
    if not pattern:
        raise helper.UserError('the model configuration names no training images: pass '
                               '--calibration_images')
    return data_loader.find_images(pattern)[:count]
