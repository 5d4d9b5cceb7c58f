"""A full-integer TensorFlow Lite copy of a frozen FCN-8s graph, and a model class that runs it.

convert_int8() turns the frozen float graph (uint8 RGB in, class ids out) into model.tflite with
int8 weights and activations, calibrated on up to 100 images, at one fixed image shape.
TFLiteModel has the interface of loader.Model, so that predict, evaluate and video run either.
"""
import os
import warnings

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import data_loader
import fcn8vgg16
import helper
from roadseg import model_dir
from roadseg.deploy import graph_surgery
from roadseg.deploy import loader
from helper import UserError

tf1 = tf.compat.v1

TFLITE_FILE = 'model.tflite'
MAX_CALIBRATION_IMAGES = 100
# AUTO applies the XNNPACK delegate, TFLite's optimised CPU backend, which runs the int8
# convolutions faster than TFLite's own kernels.
_RESOLVERS = {True: tf.lite.experimental.OpResolverType.AUTO,
              False: tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def _read_graph_def(graph_def_or_path):
    if isinstance(graph_def_or_path, tf1.GraphDef):
        return graph_def_or_path
    return model_dir.read_graph_def(graph_def_or_path)


def _representative_dataset(calibration_paths, image_shape):
    """Up to MAX_CALIBRATION_IMAGES paths, evenly spread over the sorted list, one at a time as
    float32 [1, h, w, 3] resized like loader.network_input."""
    paths = sorted(calibration_paths)
    count = min(len(paths), MAX_CALIBRATION_IMAGES)
    paths = [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]

    def images():
        for path in tqdm(paths, desc='Calibrate', unit='img'):
            image = loader.network_input(data_loader.read_image(path), image_shape, False)
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
    graph_def = graph_surgery.graph_for_tflite(_read_graph_def(graph_def_or_path))
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
            with warnings.catch_warnings():
                # TF 2.20+ points to the ai-edge-litert package: the same interpreter.
                warnings.filterwarnings('ignore', '.*tf.lite.Interpreter is deprecated')
                self.interpreter = tf.lite.Interpreter(
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
