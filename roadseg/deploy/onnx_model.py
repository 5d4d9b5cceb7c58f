"""Runs the float ONNX model that optimise writes (onnx_export makes it) with ONNX Runtime.

model.onnx takes uint8 RGB images [batch, height, width, 3], any batch, height and width
(multiples of 32), and gives class ids and logits, named as the SavedModel's serving signature
names them. ONNXModel has the interface of loader.Model, so that predict, evaluate and video run
either, without importing TensorFlow. onnxruntime is imported when used: a missing one is a
one-line error.
"""
import importlib
import os

import data_loader
import helper
from roadseg import model_dir
from helper import UserError

ONNX_FILE = 'model.onnx'
DATA_FILE = 'model.onnx.data'  # its weights, beside it (ONNX external data)
CONFIG_KEY = 'onnx_model'  # the model configuration's record of model.onnx: onnx_export
# The ONNX names of the graph's interface: those of the SavedModel's serving signature.
INPUT = 'images'
IDS, LOGITS = 'predictions', 'logits'
# With --gpu N > 0, the first of these that onnxruntime offers runs the model, the CPU the rest.
GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')


def import_optional(module, purpose):
    """An optional dependency, or one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError('%s needs the %s package (%s): pip install %s'
                        % (purpose, module, helper.first_line(error), module)) from None


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
        data_file = self._recorded().get('data_file')
        if isinstance(data_file, str) and not os.path.isfile(os.path.join(folder, data_file)):
            raise UserError('%s holds no %s, the weights of %s: keep the two files together'
                            % (folder, data_file, os.path.basename(path)))
        if precision != 'fp32':
            helper.warn('--precision %s does not apply to the ONNX model, which runs in float32'
                        % precision)
        ort = import_optional('onnxruntime', 'running an ONNX model')
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

    def _recorded(self):
        """The configuration's record of the ONNX model (onnx_export.interface), or {}."""
        recorded = self.config.get(CONFIG_KEY)
        return recorded if isinstance(recorded, dict) else {}

    def _interface_names(self):
        """(input name, class ids output name) of the configuration, which the model has."""
        recorded = self._recorded()
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
