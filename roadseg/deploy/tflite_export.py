"""The full-integer TensorFlow Lite copy of a frozen FCN-8s graph that optimise writes.

convert_int8() turns the frozen float graph (uint8 RGB in, class ids out) into model.tflite with
int8 weights and activations, calibrated on up to 100 images, at one fixed image shape;
tflite_model runs it.
"""
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import data_loader
import fcn8vgg16
import helper
from roadseg import model_dir
from roadseg.deploy import graph_surgery
from helper import UserError

tf1 = tf.compat.v1

MAX_CALIBRATION_IMAGES = 100


def _read_graph_def(graph_def_or_path):
    if isinstance(graph_def_or_path, tf1.GraphDef):
        return graph_def_or_path
    return model_dir.read_graph_def(graph_def_or_path)


def _representative_dataset(calibration_paths, image_shape):
    """Up to MAX_CALIBRATION_IMAGES paths, evenly spread over the sorted list, one at a time as
    float32 [1, h, w, 3] resized like data_loader.network_input."""
    paths = sorted(calibration_paths)
    count = min(len(paths), MAX_CALIBRATION_IMAGES)
    paths = [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]

    def images():
        for path in tqdm(paths, desc='Calibrate', unit='img'):
            image = data_loader.network_input(data_loader.read_image(path), image_shape, False)
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
