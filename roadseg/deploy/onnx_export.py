"""The float ONNX copy of a frozen FCN-8s graph that optimise writes; onnx_model runs it.

convert() turns the frozen graph into model.onnx with tf2onnx (fc6 and fc7 as convolutions, no
dropout), with the interface onnx_model describes and its weights in model.onnx.data beside
it. tf2onnx and onnx are imported when used: a missing one is a one-line error.
"""
import os

import numpy as np

import fcn8vgg16
import helper
from roadseg.deploy import graph_surgery
from roadseg.deploy import onnx_model
from helper import UserError

OPSET = 17
_RENAMED = {fcn8vgg16.INPUT_TENSOR: onnx_model.INPUT, fcn8vgg16.OUTPUT_TENSOR: onnx_model.IDS,
            fcn8vgg16.LOGITS_TENSOR: onnx_model.LOGITS}
_DIMENSIONS = ('batch', 'height', 'width')
EXTERNAL_BYTES = 1024  # initializers this large go to the external data file
PAGE_BYTES = 4096


def convert(graph_def, output_path, num_classes):
    """Writes model.onnx of a frozen graph (fc6 and fc7 as convolutions, no dropout); returns
    its interface as the model configuration records it (interface())."""
    tf2onnx = onnx_model.import_optional('tf2onnx', 'the ONNX export (skip it with --no_onnx)')
    onnx = onnx_model.import_optional('onnx', 'the ONNX export (skip it with --no_onnx)')
    graph_def, weights = graph_surgery.weights_as_placeholders(
        graph_surgery.graph_for_onnx(graph_def))
    try:
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=[fcn8vgg16.INPUT_TENSOR] + [name + ':0' for name in weights],
            output_names=[fcn8vgg16.OUTPUT_TENSOR, fcn8vgg16.LOGITS_TENSOR], opset=OPSET,
            tensors_to_rename=dict(_RENAMED, **{name + ':0': name for name in weights}))
        del graph_def
        _weights_as_initializers(model, weights, onnx.numpy_helper)
        del weights
        _name_dimensions(model, num_classes)
        # tf2onnx leaves an op it cannot convert in the model as it was: the checker names it.
        onnx.checker.check_model(model)
    except Exception as error:  # whatever the converter and the checker raise
        raise UserError('ONNX conversion failed: %s' % helper.first_line(error)) from None

    _write_external_data(model, os.path.join(os.path.dirname(output_path),
                                             onnx_model.DATA_FILE), onnx)

    def write(path):
        with open(path, 'wb') as f:
            f.write(model.SerializeToString())

    helper.write_atomically(output_path, write)
    return interface(model, onnx)


def _write_external_data(model, data_path, onnx):
    """Moves every initializer of EXTERNAL_BYTES or more out of the model into data_path (ONNX's
    external data, each tensor at a page-aligned offset). ONNX Runtime then reads the weights
    straight from that file rather than out of a parsed copy of the whole model: its load takes
    about half the memory and time."""
    tensors = [tensor for tensor in model.graph.initializer
               if len(tensor.raw_data) >= EXTERNAL_BYTES]

    def write(path):
        with open(path, 'wb') as f:
            for tensor in tensors:
                f.write(b'\0' * (-f.tell() % PAGE_BYTES))
                offset = f.tell()
                f.write(tensor.raw_data)
                onnx.external_data_helper.set_external_data(
                    tensor, onnx_model.DATA_FILE, offset, len(tensor.raw_data))
                tensor.ClearField('raw_data')
                tensor.data_location = onnx.TensorProto.EXTERNAL

    helper.write_atomically(data_path, write)


def _weights_as_initializers(model, weights, numpy_helper):
    """Puts the weights that were converted as graph inputs (graph_surgery.
    weights_as_placeholders) into the model as initializers, in place. A weight that only
    transposes read (tf2onnx's HWIO -> OIHW for Conv and ConvTranspose) is stored transposed
    instead, in the transposes' place."""
    graph = model.graph
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed = []
    for name, values in weights.items():
        readers = consumers.get(name, [])
        perms = {tuple(attr.ints) for node in readers for attr in node.attribute
                 if node.op_type == 'Transpose' and attr.name == 'perm'}
        if readers and len(perms) == 1 and all(node.op_type == 'Transpose' for node in readers):
            transposed = np.ascontiguousarray(values.transpose(perms.pop()))
            for node in readers:
                graph.initializer.append(numpy_helper.from_array(transposed, node.output[0]))
                removed.append(node)
        else:
            graph.initializer.append(numpy_helper.from_array(values, name))
    for node in removed:
        graph.node.remove(node)
    kept = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(kept)


def _name_dimensions(model, num_classes):
    """Names the input's and outputs' dynamic dimensions batch, height and width, and gives
    the logits their number of classes."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, _DIMENSIONS):
            dim.dim_param = name
        if value.name == onnx_model.LOGITS and len(dims) == 4:
            dims[3].dim_value = num_classes


def interface(model, onnx):
    """{'file', 'opset', 'inputs', 'outputs'}: each input and output's name, dtype and shape
    (a dimension's name where it is dynamic) and what it holds."""
    meaning = {onnx_model.INPUT: 'RGB images, NHWC, height and width multiples of %d'
               % fcn8vgg16.STRIDE,
               onnx_model.IDS: 'class ids, the argmax of the logits',
               onnx_model.LOGITS: 'per-class scores, NHWC'}

    def describe(value):
        tensor = value.type.tensor_type
        return dict(name=value.name,
                    dtype=np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name,
                    shape=[dim.dim_param or dim.dim_value for dim in tensor.shape.dim],
                    holds=meaning.get(value.name, ''))

    return dict(file=onnx_model.ONNX_FILE, data_file=onnx_model.DATA_FILE, opset=OPSET,
                inputs=[describe(value) for value in model.graph.input],
                outputs=[describe(value) for value in model.graph.output])
