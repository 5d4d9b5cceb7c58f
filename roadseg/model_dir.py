"""Model folders: the files in them, reading their configuration, writing them safely.

Every run, checkpoint and model folder the tool writes holds CONFIG_FILE, the model's
configuration (label set, image shape, tensor names, training arguments), which every action
reads instead of asking again. `train` writes a SavedModel, `freeze` a SavedModel and GRAPH_FILE
of the same constant graph, `optimise` GRAPH_FILE with 8-bit weights and model.tflite. A model
folder is written to a temporary folder beside its place and renamed into it; an existing folder
is replaced only if this tool wrote it. Training and deployment both read and write model
folders through this module, and neither through the other.
"""
import contextlib
import os
import shutil
import signal
import tempfile
import threading

from google.protobuf.message import DecodeError

import fcn8vgg16
import helper
from helper import UserError

CONFIG_FILE = 'fcn8s_config.json'  # in every run, checkpoint and model folder the tool writes
GRAPH_FILE = 'graph.pb'  # the constant graph of a frozen or optimised model
# What every model configuration the tool writes holds, whatever the model's format.
CONFIG_KEYS = ('label_set', 'image_shape', 'input_tensor', 'output_tensor')


def read_model_config(folder):
    """The configuration of the model in folder; a UserError unless this tool wrote one."""
    if not os.path.isdir(folder):
        raise UserError('model folder %s does not exist' % folder
                        if not os.path.exists(folder) else
                        '%s is a file, not a model folder' % folder)
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(path):
        raise UserError('%s holds no %s: not a model written by this tool' % (folder,
                                                                                CONFIG_FILE))
    return helper.read_json(path)


def check_config(config, folder):
    """A configuration read from folder holds CONFIG_KEYS, or a UserError names the missing."""
    missing = [key for key in CONFIG_KEYS if not isinstance(config, dict) or key not in config]
    if missing:
        raise UserError('%s in %s has no %s: not a model configuration written by this tool'
                        % (CONFIG_FILE, folder, ', '.join(missing)))


# The operations of the graphs this tool writes (freeze, optimise), and a few more of their
# kind: arithmetic on tensors only. A graph.pb may hold any operation, reading or writing files
# (ReadFile, WriteFile, Save) or running Python (PyFunc); one outside this set is refused.
GRAPH_OPS = frozenset((
    'Add', 'AddN', 'AddV2', 'ArgMax', 'BiasAdd', 'Cast', 'ConcatV2', 'Const', 'Conv2D',
    'Conv2DBackpropInput', 'Dequantize', 'EnsureShape', 'ExpandDims', 'Fill', 'GatherV2',
    'Identity', 'MatMul', 'MaxPool', 'Maximum', 'Minimum', 'Mul', 'NoOp', 'Pack', 'Pad',
    'PadV2', 'Placeholder', 'PlaceholderWithDefault', 'RealDiv', 'Relu', 'Reshape',
    'ResizeBilinear', 'ReverseV2', 'Shape', 'Slice', 'Softmax', 'Split', 'Squeeze',
    'StridedSlice', 'Sub', 'Tile', 'Transpose', 'Unpack'))


def read_graph_def(path, allow_any_op=False):
    """The GraphDef stored at path (a folder's GRAPH_FILE); a UserError if it is not one, or
    if it holds an operation outside GRAPH_OPS (unless allow_any_op, with a warning)."""
    def read():
        with open(path, 'rb') as f:
            return f.read()
    return parse_graph_def(path, read, allow_any_op)


def parse_graph_def(path, read, allow_any_op=False):
    """read_graph_def of the bytes read() returns for the graph at path."""
    import tensorflow as tf
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(read())
    except (OSError, ValueError, DecodeError) as error:
        raise UserError('cannot read the graph %s: %s' % (path, helper.first_line(error))) from None
    foreign = sorted({node.op for node in graph_def.node} - GRAPH_OPS
                     | {function.signature.name for function in graph_def.library.function})
    if foreign and not allow_any_op:
        raise UserError('%s holds operations this tool never writes (%s): not loaded; '
                        '--allow_any_op runs it anyway, if you trust its source'
                        % (path, ', '.join(foreign)))
    if foreign:
        helper.warn('%s holds operations this tool never writes (%s): running it as '
                    '--allow_any_op asks' % (path, ', '.join(foreign)))
    return graph_def


def check_output_dir(path):
    """An output folder may be replaced only if it holds a model this tool wrote."""
    if os.path.exists(path) and not os.path.exists(os.path.join(path, CONFIG_FILE)):
        raise UserError('%s exists and does not hold a model written by this tool: '
                        'choose another folder' % path)


def temp_dir_beside(path):
    """A new empty folder next to path, to be renamed into place by move_into_place()."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix='.%s.tmp-' % os.path.basename(os.path.abspath(path)),
                            dir=parent)


def move_into_place(tmp_dir, destination):
    """Renames tmp_dir to destination; an older model of ours there is replaced."""
    check_output_dir(destination)
    if os.path.exists(destination):
        old = tempfile.mkdtemp(prefix='.%s.old-' % os.path.basename(destination),
                               dir=os.path.dirname(os.path.abspath(destination)))
        os.rename(destination, os.path.join(old, 'model'))
        os.rename(tmp_dir, destination)
        shutil.rmtree(old)
    else:
        os.rename(tmp_dir, destination)


def write_model_dir(destination, write):
    """Calls write(folder) on a new temporary folder (which write creates) beside destination,
    then renames it into place; nothing is left behind if write fails. Ctrl-C or SIGTERM
    during the renames takes effect once they are done; its KeyboardInterrupt then has
    written = True."""
    check_output_dir(destination)
    tmp_dir = temp_dir_beside(destination)
    moved = False
    try:
        write(os.path.join(tmp_dir, 'model'))
        with _signals_held():
            move_into_place(os.path.join(tmp_dir, 'model'), destination)
            moved = True
    except KeyboardInterrupt as interrupt:
        interrupt.written = moved
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def _signals_held(signals=(signal.SIGINT, signal.SIGTERM)):
    """signals received in the block are sent again, to the handlers of before, once it ends:
    neither the old model nor the new one is left half in place."""
    if threading.current_thread() is not threading.main_thread():  # signal() would refuse
        yield
        return
    received = []
    previous = {signum: signal.signal(signum, lambda signum, _: received.append(signum))
                for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:
            signal.raise_signal(signum)


def write_saved_model(session, folder):
    """A SavedModel of the session's graph with the tool's serving signature."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = session.graph
    inputs = {'images': graph.get_tensor_by_name(fcn8vgg16.INPUT_TENSOR)}
    outputs = {'predictions': graph.get_tensor_by_name(fcn8vgg16.OUTPUT_TENSOR),
               'logits': graph.get_tensor_by_name(fcn8vgg16.LOGITS_TENSOR)}
    builder = tf1.saved_model.Builder(folder)
    builder.add_meta_graph_and_variables(
        session, [fcn8vgg16.SAVED_MODEL_TAG], signature_def_map={
            fcn8vgg16.SIGNATURE_KEY: tf1.saved_model.predict_signature_def(inputs, outputs)})
    builder.save()
