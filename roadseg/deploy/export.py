"""Export: freeze a trained model into one constant graph, and optimise that graph to 8-bit
weights plus a full-integer TensorFlow Lite model and a float ONNX model.

A frozen folder holds graph.pb, a SavedModel of the same constant graph (saved_model.pb with the
serving signature) and fcn8s_config.json. An optimised folder holds graph.pb with 8-bit weights,
model.tflite, model.onnx and fcn8s_config.json, which also says the ONNX model's inputs and
outputs. Each folder is written to a temporary folder and renamed
into place; an existing folder is replaced only if this tool wrote it.
"""
import contextlib
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import data_loader
import helper
from roadseg import model_dir
from roadseg.deploy import graph_file, graph_surgery
from roadseg.deploy import onnx_export
from roadseg.deploy import onnx_model
from roadseg.deploy import tflite_export
from roadseg.deploy import tflite_model

tf1 = tf.compat.v1


def _bytes(paths):
    return sum(os.path.getsize(path) for path in paths if os.path.isfile(path))


def _weights_and_graph(source_dir):
    """(checkpoint prefix holding the weights, GraphDef the model was saved with, bytes) of a
    checkpoint folder or of the SavedModel that train writes."""
    saved_model = os.path.join(source_dir, 'saved_model.pb')
    if os.path.exists(saved_model):
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


@contextlib.contextmanager
def said_if_interrupted(destination):
    """A Ctrl-C in the block says, in main's line, whether destination was written
    (model_dir.write_model_dir) and, if not, that a model already there is left as it was."""
    existed = os.path.isdir(destination)
    try:
        yield
    except KeyboardInterrupt as interrupt:
        interrupt.message = 'interrupted: %s %s' % (destination, (
            'written' if getattr(interrupt, 'written', False) else
            'not written; the model already there is left as it was' if existed else
            'not written'))
        raise


def freeze(source_dir, frozen_dir, image_shape=None):
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
    try:
        frozen, variables = graph_surgery.frozen_graph_def(config, prefix)
    except (ValueError, tf.errors.OpError) as error:  # weights that do not fit the model
        raise helper.UserError('cannot freeze %s: %s' % (source_dir, helper.first_line(error))) \
            from None
    config = dict(config, model_format='frozen', source_model=os.path.abspath(source_dir))

    def _write(folder):
        with tf.Graph().as_default(), tf1.Session() as frozen_session:
            tf.graph_util.import_graph_def(frozen, name='')
            model_dir.write_saved_model(frozen_session, folder)
        _write_graph(frozen, folder, config)

    _write_model_dir(frozen_dir, _write)
    return dict(source_ops=len(source_graph.node), ops=len(frozen.node),
                variables=variables, source_bytes=source_bytes,
                bytes=os.path.getsize(os.path.join(frozen_dir, model_dir.GRAPH_FILE)))


def _write_model_dir(folder, write):
    """model_dir.write_model_dir, a failed write (a full disk) one line naming the folder, which
    is left as it was."""
    try:
        model_dir.write_model_dir(folder, write)
    except (tf.errors.OpError, OSError) as error:
        raise helper.UserError('cannot write the model %s (%s)'
                               % (folder, helper.first_line(error))) from None


def _write_graph(graph_def, folder, config):
    """GRAPH_FILE with its weights aligned for the loader (graph_file.aligned_bytes), and the
    configuration, into folder."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, model_dir.GRAPH_FILE), 'wb') as f:
        f.write(graph_file.aligned_bytes(graph_def))
    helper.write_json(os.path.join(folder, model_dir.CONFIG_FILE), config)


def optimise(frozen_dir, optimised_dir, calibration_paths=None, onnx=True,
             allow_any_op=False):
    """Prunes and folds the frozen graph, stores its weights in 8 bits, and converts it to a
    full-integer TFLite model calibrated on calibration_paths (when given) and, with onnx, to a
    float ONNX model. allow_any_op: read a graph with operations this tool never writes
    (model_dir.read_graph_def)."""
    model_dir.check_output_dir(optimised_dir)
    config = model_dir.read_model_config(frozen_dir)
    graph_path = os.path.join(frozen_dir, model_dir.GRAPH_FILE)
    if not os.path.exists(graph_path):
        raise helper.UserError('%s holds no %s: freeze the model first (python main.py freeze)'
                               % (frozen_dir, model_dir.GRAPH_FILE))
    frozen = model_dir.read_graph_def(graph_path, allow_any_op)
    pruned = graph_surgery.fold_constants(tf1.graph_util.extract_sub_graph(
        frozen, graph_surgery.OUTPUT_NODES))
    quantized, count = graph_surgery.quantize_weights(pruned)
    config = dict(config, model_format='optimised', source_model=os.path.abspath(frozen_dir))

    def _write(folder):
        written = dict(config)
        if onnx:
            os.makedirs(folder, exist_ok=True)
            written[onnx_model.CONFIG_KEY] = onnx_export.convert(pruned, os.path.join(
                folder, onnx_model.ONNX_FILE), config['num_classes'])
        _write_graph(quantized, folder, written)
        if calibration_paths:
            tflite_export.convert_int8(pruned, os.path.join(folder, tflite_model.TFLITE_FILE),
                                      config['image_shape'], calibration_paths)

    _write_model_dir(optimised_dir, _write)
    return dict(source_ops=len(frozen.node), ops=len(quantized.node), quantized=count,
                source_bytes=os.path.getsize(graph_path),
                bytes=os.path.getsize(os.path.join(optimised_dir, model_dir.GRAPH_FILE)))


def calibration_images(config, count=100):
    """Up to `count` training images of the model's dataset, read from its configuration."""
    pattern = config.get('images_paths')
    if not pattern:
        raise helper.UserError('the model configuration names no training images: pass '
                               '--calibration_images')
    return data_loader.find_images(pattern)[:count]
