"""A float ONNX copy of a frozen FCN-8s graph, and a model class that runs it with ONNX Runtime.

convert() turns the frozen graph into model.onnx with tf2onnx: uint8 RGB images [batch, height,
width, 3] in, any batch, height and width (multiples of 32), class ids and logits out, named as
the SavedModel's serving signature names them. ONNXModel has the interface of loader.Model, so
that predict, evaluate and video run either. tf2onnx and onnxruntime are imported when used:
a missing one is a one-line error.
"""
import importlib
import os

import numpy as np

import data_loader
import fcn8vgg16
import helper
from roadseg import model_dir
from roadseg.deploy import graph_surgery
from helper import UserError

ONNX_FILE = 'model.onnx'
CONFIG_KEY = 'onnx_model'  # the model configuration's record of model.onnx: interface()
OPSET = 17
# The ONNX names of the graph's interface: those of the SavedModel's serving signature.
INPUT = 'images'
IDS, LOGITS = 'predictions', 'logits'
_RENAMED = {fcn8vgg16.INPUT_TENSOR: INPUT, fcn8vgg16.OUTPUT_TENSOR: IDS,
            fcn8vgg16.LOGITS_TENSOR: LOGITS}
_DIMENSIONS = ('batch', 'height', 'width')
# With --gpu N > 0, the first of these that onnxruntime offers runs the model, the CPU the rest.
GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')


def _import(module, purpose):
    """An optional dependency, or one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError('%s needs the %s package (%s): pip install %s'
                        % (purpose, module, helper.first_line(error), module)) from None


def convert(graph_def, output_path, num_classes):
    """Writes model.onnx of a frozen graph (fc6 and fc7 as convolutions, no dropout); returns
    its interface as the model configuration records it (interface())."""
    tf2onnx = _import('tf2onnx', 'the ONNX export (skip it with --no_onnx)')
    onnx = _import('onnx', 'the ONNX export (skip it with --no_onnx)')
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

    def write(path):
        with open(path, 'wb') as f:
            f.write(model.SerializeToString())

    helper.write_atomically(output_path, write)
    return interface(model, onnx)


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
        if value.name == LOGITS and len(dims) == 4:
            dims[3].dim_value = num_classes


def interface(model, onnx):
    """{'file', 'opset', 'inputs', 'outputs'}: each input and output's name, dtype and shape
    (a dimension's name where it is dynamic) and what it holds."""
    meaning = {INPUT: 'RGB images, NHWC, height and width multiples of %d' % fcn8vgg16.STRIDE,
               IDS: 'class ids, the argmax of the logits',
               LOGITS: 'per-class scores, NHWC'}

    def describe(value):
        tensor = value.type.tensor_type
        return dict(name=value.name,
                    dtype=np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name,
                    shape=[dim.dim_param or dim.dim_value for dim in tensor.shape.dim],
                    holds=meaning.get(value.name, ''))

    return dict(file=ONNX_FILE, opset=OPSET,
                inputs=[describe(value) for value in model.graph.input],
                outputs=[describe(value) for value in model.graph.output])


def providers(available, gpu):
    """The execution providers to ask for: with gpu > 0, the GPU ones onnxruntime offers, then
    the CPU's."""
    chosen = [name for name in GPU_PROVIDERS if gpu > 0 and name in available]
    if gpu > 0 and not chosen:
        helper.warn('--gpu %d asked for, onnxruntime has no GPU provider here (%s): running on '
                    'the CPU' % (gpu, ', '.join(available)))
    return chosen + ['CPUExecutionProvider']


class ONNXModel:
    """model.onnx of a model folder with loader.Model's interface: uint8 RGB batches in, class
    ids out, through ONNX Runtime: one op at a time (sequential execution), each on threads
    threads (0: ONNX Runtime's default, one per physical core), all graph optimisations on."""

    kind = 'ONNX'

    def __init__(self, path, gpu=0, precision='fp32', threads=0):
        self.path = path
        self.model_dir = folder = os.path.dirname(path) or '.'
        self.config = model_dir.read_model_config(folder)
        model_dir.check_config(self.config, folder)
        self.label_set = data_loader.label_set_of_config(
            self.config, os.path.join(folder, model_dir.CONFIG_FILE))
        self.image_shape = tuple(self.config['image_shape'])
        if not os.path.isfile(path):
            raise UserError('%s holds no %s: export the model with optimise (without '
                            '--no_onnx) first' % (folder, os.path.basename(path)))
        if precision != 'fp32':
            helper.warn('--precision %s does not apply to the ONNX model, which runs in float32'
                        % precision)
        ort = _import('onnxruntime', 'running an ONNX model')
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                path, options, providers=providers(ort.get_available_providers(), gpu))
        except Exception as error:  # onnxruntime's Fail, InvalidProtobuf, ... on a bad file
            raise UserError('cannot load the ONNX model %s: %s'
                            % (path, helper.first_line(error))) from None
        self._input, self._output = self._interface_names()

    def _interface_names(self):
        """(input name, class ids output name) of the configuration, which the model has."""
        recorded = self.config.get(CONFIG_KEY)
        recorded = recorded if isinstance(recorded, dict) else {}
        inputs = [value['name'] for value in recorded.get('inputs', [])] or [INPUT]
        outputs = [value['name'] for value in recorded.get('outputs', [])
                   if value['dtype'] == 'uint8'] or [IDS]
        has = ({value.name for value in self.session.get_inputs()},
               {value.name for value in self.session.get_outputs()})
        for name, names, what in ((inputs[0], has[0], 'input'), (outputs[0], has[1], 'output')):
            if name not in names:
                raise UserError('%s has no %s %r (it has %s): not a model of this tool'
                                % (self.path, what, name, ', '.join(sorted(names))))
        return inputs[0], outputs[0]

    def predict(self, images):
        """uint8 [batch, h, w, 3], h and w multiples of 32 -> uint8 class ids [batch, h, w]."""
        return self.session.run([self._output], {self._input: images})[0]

    def close(self):
        self.session = None
