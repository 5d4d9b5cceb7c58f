"""The models a run times: the float model (--model_dir, or one with random weights), its frozen
export and its optimised export with an int8 TFLite model and a float ONNX model, all at
config.IMAGE_SHAPE."""
import importlib.util
import os
import time

import numpy as np
import tensorflow as tf

import data_loader
import fcn8vgg16
import helper
from helper import UserError
from roadseg.data import demo_data
from roadseg import model_dir
from roadseg.deploy import export, loader, onnx_model, tflite_export, tflite_model
from benchmark import config, measure
from benchmark.config import IMAGE_SHAPE

tf1 = tf.compat.v1


def demo_split(split):
    """(images glob, labels folder) of a demo split; the demo dataset is drawn on first use."""
    return demo_data.demo_paths(split, demo_data.ensure_demo_dataset())


def has_module(name):
    """Whether an optional package (onnxruntime, tf2onnx) can be imported here."""
    return importlib.util.find_spec(name) is not None


def demo_video():
    """The demo video's path; the demo dataset is drawn on first use."""
    return demo_data.demo_video_path(demo_data.ensure_demo_dataset())


def random_batch(batch_size, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size,) + IMAGE_SHAPE + (3,), dtype=np.uint8)
    labels = rng.integers(0, num_classes, (batch_size,) + IMAGE_SHAPE, dtype=np.uint8)
    return images, labels


def _write_random_model(folder, network, label_set, calibration_glob):
    """A SavedModel with random weights at IMAGE_SHAPE, in the layout train writes."""
    model_config = dict(
        dataset='demo', label_set=label_set.name, image_shape=list(IMAGE_SHAPE),
        num_classes=label_set.num_classes, class_names=label_set.class_names,
        input_tensor=fcn8vgg16.INPUT_TENSOR, keep_prob_tensor=fcn8vgg16.KEEP_PROB_TENSOR,
        output_tensor=fcn8vgg16.OUTPUT_TENSOR, logits_tensor=fcn8vgg16.LOGITS_TENSOR,
        saved_model_tag=fcn8vgg16.SAVED_MODEL_TAG, signature_key=fcn8vgg16.SIGNATURE_KEY,
        images_paths=calibration_glob, random_weights=True, **network.config())
    with tf.Graph().as_default():
        tf1.set_random_seed(0)
        fcn8vgg16.inference_graph(label_set.num_classes, network.encoder, network.fc_channels)
        with tf1.Session(config=measure.cpu_config()) as session:
            session.run(tf1.global_variables_initializer())
            model_dir.write_saved_model(session, folder)
    helper.write_json(os.path.join(folder, model_dir.CONFIG_FILE), model_config)


class Models:
    """The model folders the benchmark runs, made on first use in its work folder: the float
    model (--model_dir, or a SavedModel with random weights), its frozen export, and its
    optimised export with an int8 TFLite model at IMAGE_SHAPE and, where tf2onnx is
    installed, a float ONNX model. Conversion times and sizes go to self.stats."""

    def __init__(self, work_dir, model_dir, calibration_count, network):
        self.work_dir, self.model_dir, self.network = work_dir, model_dir, network
        self.calibration_count = calibration_count
        self.stats = {}

    def float_dir(self):
        if self.model_dir:
            return self.model_dir
        path = os.path.join(self.work_dir, 'random_model')
        if not os.path.exists(path):
            measure.log('writing a model with random weights (the speed rows need no training)')
            label_set = data_loader.get_label_set(config.LABEL_SET)
            images_glob, _ = demo_split('train')
            model_dir.write_model_dir(path, lambda folder: _write_random_model(
                folder, self.network, label_set, images_glob))
        return path

    def saved_model_dir(self):
        """The float SavedModel at IMAGE_SHAPE: float_dir's files, linked, with the shape in
        its configuration (a trained model may have been trained at another)."""
        path = os.path.join(self.work_dir, 'saved_model')
        if not os.path.exists(path):
            source = self.float_dir()
            if not os.path.exists(os.path.join(source, 'saved_model.pb')):
                raise UserError('%s is not a SavedModel' % source)
            os.makedirs(path)
            for name in ('saved_model.pb', 'variables'):
                os.symlink(os.path.abspath(os.path.join(source, name)), os.path.join(path, name))
            self._write_shaped_config(source, path)
        return path

    def checkpoint_dir(self):
        """A checkpoint folder at IMAGE_SHAPE: the SavedModel's variables, which are a
        checkpoint, linked as model.ckpt-0 beside a `checkpoint` file naming it."""
        path = os.path.join(self.work_dir, 'checkpoint')
        if not os.path.exists(path):
            variables = os.path.join(self.saved_model_dir(), 'variables')
            os.makedirs(path)
            for name in os.listdir(variables):
                os.symlink(os.path.realpath(os.path.join(variables, name)), os.path.join(
                    path, name.replace('variables', 'model.ckpt-0', 1)))
            with open(os.path.join(path, 'checkpoint'), 'w') as state:
                state.write('model_checkpoint_path: "model.ckpt-0"\n')
            self._write_shaped_config(self.float_dir(), path)
        return path

    @staticmethod
    def _write_shaped_config(source, folder):
        model_config = model_dir.read_model_config(source)
        helper.write_json(os.path.join(folder, model_dir.CONFIG_FILE),
                          dict(model_config, image_shape=list(IMAGE_SHAPE)))

    def frozen_dir(self):
        path = os.path.join(self.work_dir, 'frozen')
        if not os.path.exists(path):
            measure.log('freezing %s' % self.float_dir())
            started = time.perf_counter()
            # Every exported model runs at the benchmark's shape, whatever it was trained at.
            self.stats['freeze'] = export.freeze(self.float_dir(), path, IMAGE_SHAPE)
            self.stats['freeze']['seconds'] = time.perf_counter() - started
        return path

    def optimised_dir(self):
        path = os.path.join(self.work_dir, 'optimised')
        if not os.path.exists(path):
            frozen = self.frozen_dir()
            measure.log('optimising %s' % frozen)
            started = time.perf_counter()
            self.stats['optimise'] = export.optimise(frozen, path,
                                                     onnx=has_module('tf2onnx'))
            self.stats['optimise']['seconds'] = time.perf_counter() - started
            self._convert_tflite(frozen, os.path.join(path, tflite_model.TFLITE_FILE))
        return path

    def _convert_tflite(self, frozen_dir, tflite_path):
        model_config = model_dir.read_model_config(frozen_dir)
        try:
            calibration = export.calibration_images(model_config, self.calibration_count)
        except UserError:  # the training images are not here: the demo's stand in
            images_glob, _ = demo_split('train')
            calibration = data_loader.find_images(images_glob)[:self.calibration_count]
        measure.log('converting to int8 TFLite, calibrated on %d images' % len(calibration))
        started = time.perf_counter()
        self.stats['tflite'] = tflite_export.convert_int8(
            os.path.join(frozen_dir, model_dir.GRAPH_FILE), tflite_path, IMAGE_SHAPE,
            calibration)
        self.stats['tflite']['seconds'] = time.perf_counter() - started

    def folder(self, kind):
        """The folder of the model of kind 'float', 'saved_model', 'checkpoint' (these two at
        IMAGE_SHAPE), 'frozen', 'optimised', 'tflite' or 'onnx' (the optimised folder holds
        model.tflite and model.onnx), made now if it is not there yet."""
        return {'float': self.float_dir, 'saved_model': self.saved_model_dir,
                'checkpoint': self.checkpoint_dir, 'frozen': self.frozen_dir,
                'optimised': self.optimised_dir, 'tflite': self.optimised_dir,
                'onnx': self.optimised_dir}[kind]()


def load_model(folder, kind, xla=0, precision='fp32'):
    """The model of kind (see Models.folder) in folder, ready to predict at IMAGE_SHAPE."""
    if kind == 'tflite':
        return tflite_model.TFLiteModel(folder)
    if kind == 'onnx':  # on all cores, as TensorFlow's sessions run
        model = onnx_model.ONNXModel(os.path.join(folder, onnx_model.ONNX_FILE),
                                     threads=os.cpu_count())
        model.image_shape = IMAGE_SHAPE
        return model
    model = loader.Model(folder, measure.cpu_config(xla, precision))
    model.image_shape = IMAGE_SHAPE  # a trained model may have been trained at another
    return model
