"""Runs the int8 TensorFlow Lite model that optimise writes (tflite_export makes it).

TFLiteModel has the interface of loader.Model, so that predict, evaluate and video run either.
It runs in LiteRT's interpreter (the ai-edge-litert package, TensorFlow's own TFLite runtime
packaged apart), so that predict and video with it start without importing TensorFlow.
"""
import os

import numpy as np
from ai_edge_litert import interpreter as litert

import data_loader
import helper
from roadseg import model_dir
from helper import UserError

TFLITE_FILE = 'model.tflite'
# AUTO applies the XNNPACK delegate, TFLite's optimised CPU backend, which runs the int8
# convolutions faster than TFLite's own kernels.
_RESOLVERS = {True: litert.OpResolverType.AUTO,
              False: litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


class TFLiteModel:
    """model.tflite of a model folder with loader.Model's interface: uint8 RGB batches in,
    class ids out, one image at a time through the interpreter (XNNPACK, all cores)."""

    kind = 'TFLite int8'
    has_logits = False  # its graph ends in the class ids: no probabilities to average or write

    def __init__(self, folder, num_threads=None, xnnpack=True):
        self.model_dir = folder
        self.config = model_dir.read_model_config(folder)
        self.label_set = data_loader.label_set_of_config(
            self.config, os.path.join(folder, model_dir.CONFIG_FILE))
        self.image_shape = tuple(self.config['image_shape'])
        self.path = path = os.path.join(folder, TFLITE_FILE)
        if not os.path.exists(path):
            raise UserError('%s holds no %s: export the model with optimise first'
                            % (folder, TFLITE_FILE))
        with open(path, 'rb') as model_file:
            if model_file.read(8)[4:] != b'TFL3':  # the FlatBuffer's file identifier
                raise UserError('%s is not a TFLite model (damaged, or another kind of file)'
                                % path)
        try:
            self.interpreter = litert.Interpreter(
                model_path=path, num_threads=num_threads or os.cpu_count(),
                experimental_op_resolver_type=_RESOLVERS[xnnpack])
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:  # a truncated or damaged file
            reason = ''.join(c if c.isprintable() else ' ' for c in str(error))
            raise UserError('cannot load the TFLite model %s: %s'
                            % (path, ' '.join(reason.split()))) from None
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
