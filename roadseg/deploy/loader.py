"""The model loader for every action: a model folder in, a Model that predicts class ids out.

A model folder is anything this tool writes: the SavedModel of `train` (saved_model.pb), a
checkpoint folder (checkpoint + model.ckpt-N), a frozen or optimised folder (graph.pb), each
with the fcn8s_config.json that says its label set, image shape and tensor names.
"""
import ctypes
import os

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import rewriter_config_pb2

import data_loader
import fcn8vgg16
import helper
from roadseg import devices, model_dir, tf_runtime
from roadseg.deploy import graph_file, graph_surgery
from helper import UserError

tf1 = tf.compat.v1

# What loading a damaged or foreign graph, SavedModel or checkpoint raises.
LOAD_ERRORS = (OSError, RuntimeError, ValueError, DecodeError, tf.errors.OpError)
M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number


class Model:
    """A loaded model in its own graph and session: uint8 RGB batches in, class ids out.
    allow_any_op: load a graph.pb with operations outside model_dir.GRAPH_OPS."""

    def __init__(self, folder, session_config=None, allow_any_op=False):
        self.model_dir, self._allow_any_op = folder, allow_any_op
        self.config = model_dir.read_model_config(folder)
        model_dir.check_config(self.config, folder)
        self.label_set = data_loader.label_set_of_config(
            self.config, os.path.join(folder, model_dir.CONFIG_FILE))
        self.image_shape = tuple(self.config['image_shape'])
        self.graph = tf.Graph()
        self.session_config = model_session_config(session_config)
        # Every model loads lean (see _import_graph), unless a mixed precision rewrite is on.
        self._weights_in_variables = not _mixed_precision(self.session_config)
        if self._weights_in_variables:
            _return_large_frees_to_the_system()
        self.session = tf1.Session(graph=self.graph, config=self.session_config)
        try:
            with self.graph.as_default():
                self.kind = self._load()
                self.input = self._tensor('input_tensor')
                self.output = self._tensor('output_tensor')
                self._probabilities = self._softmax_of_logits()
        except BaseException:
            self.session.close()
            raise
        self.graph.finalize()

    def _load(self):
        """Loads whichever model the folder holds; returns what it was."""
        try:
            return self._load_any()
        except KeyError as error:  # a configuration of another format's model
            raise UserError('%s has no %s for the model in %s' % (
                model_dir.CONFIG_FILE, error, self.model_dir)) from None
        except LOAD_ERRORS as error:
            raise UserError('cannot load the model in %s: %s' % (
                self.model_dir, helper.first_line(error))) from None

    def _load_any(self):
        """A trained model (SavedModel, checkpoint) is frozen in memory first (see
        _import_graph for where its weights go)."""
        graph_path = os.path.join(self.model_dir, model_dir.GRAPH_FILE)
        if os.path.exists(graph_path):
            self._import_graph(*graph_file.read_graph_def(graph_path, self._allow_any_op))
            return self.config.get('model_format', 'frozen') + ' graph'
        if os.path.exists(os.path.join(self.model_dir, 'saved_model.pb')):
            prefix, kind = os.path.join(self.model_dir, 'variables', 'variables'), 'SavedModel'
        else:
            prefix = tf.train.latest_checkpoint(self.model_dir)
            if not prefix:
                raise UserError('%s holds neither a SavedModel nor a checkpoint'
                                % self.model_dir)
            kind = 'checkpoint %s' % os.path.basename(prefix)
        if self._weights_in_variables:
            graph_def, weights = graph_surgery.frozen_graph_def_and_matmul_weights(
                self.config, prefix, filters=self._filters_in_variables())
            self._import_graph(graph_def, weights=weights)
        else:
            self._import_graph(graph_surgery.frozen_graph_def(self.config, prefix)[0])
        return kind

    def _import_graph(self, graph_def, contents=None, weights=None):
        """Imports a constant graph; the weights of its matrix products (fc6, fc7: 478 of
        VGG16's 538 MB) go into variables, unless a mixed precision rewrite is on (constant
        folding then casts them once). contents: the tensor contents of graph_def's large
        constants, kept apart by graph_file.read_graph_def; weights: the weights themselves,
        kept apart already (a checkpoint's, see
        graph_surgery.frozen_graph_def_and_matmul_weights).

        A constant is copied several times by the import, the session's copy of the graph,
        its executor and oneDNN's cache of weights in its own layout; a variable holds one
        copy. Convolution filters go into variables too, unless oneDNN runs the convolutions
        (see _filters_in_variables).

        The session dequantizes each 8-bit weight into the buffer its variable keeps, fed the
        8-bit values without a copy (see graph_surgery.split_matmul_weights): no float copy
        of fc6 (411 MB) exists beside its variable. With _lean_session_options and
        _return_large_frees_to_the_system, every model thus keeps a single copy of the fc6
        and fc7 weights in memory, where a session of the constant graph keeps several.
        """
        if weights is None and self._weights_in_variables:
            graph_def, weights = graph_surgery.split_matmul_weights(
                graph_def, contents, filters=self._filters_in_variables())
        elif weights is None:
            graph_file.restore(graph_def, contents or {})
            weights = {}
        if contents:  # its views of the mapped file are its last: the file is unmapped
            contents.clear()
        graph_def = graph_surgery.dequantize_constants(graph_def)
        graph_surgery.fc_products_in_row_bands(graph_def)
        variables, feeds = {}, {}
        with tf1.variable_scope('matmul_weights'):
            for index, (name, weight) in enumerate(sorted(weights.items())):
                stored, initial = _initial_value(weight)
                feeds[stored] = weight.values
                variables[name] = tf1.Variable(initial, name='w%d' % index, trainable=False,
                                               use_resource=True, collections=[])
        del weights
        tf.graph_util.import_graph_def(graph_def, name='', input_map={
            name + ':0': variable.read_value() for name, variable in variables.items()})
        del graph_def
        if variables:  # in one run: the session builds an executor for every set of fetches
            self.session.run([variable.initializer for variable in variables.values()], feeds)

    def _filters_in_variables(self):
        """Whether the convolution filters go into variables: always in the optimised model,
        made for a small footprint, and in every model where Eigen runs the convolutions. As
        constants they are copied by the session's first run, which then takes about twice
        as long, but oneDNN lays constant filters out in its own layout once, variable ones at
        every run (1-2% of the time of an image)."""
        return self.config.get('model_format') == 'optimised' or not tf_runtime.onednn_enabled()

    def _tensor(self, key):
        """The tensor the configuration names under key, e.g. input_tensor: image_input:0."""
        name = self.config[key]
        try:
            return self.graph.get_tensor_by_name(name)
        except (KeyError, ValueError):
            raise UserError('the %s in %s has no tensor %s (the %s of its %s): not a model of '
                            'this tool' % (self.kind, self.model_dir, name, key,
                                           model_dir.CONFIG_FILE)) from None

    def _softmax_of_logits(self):
        """The softmax of the graph's logits (float32 [batch, h, w, classes]), or None for a
        graph without them."""
        name = self.config.get('logits_tensor', fcn8vgg16.LOGITS_TENSOR)
        try:
            logits = self.graph.get_tensor_by_name(name)
        except (KeyError, ValueError):
            return None
        return tf.nn.softmax(tf.cast(logits, tf.float32))

    @property
    def has_logits(self):
        """Whether probabilities() works: every graph this tool exports keeps its logits."""
        return self._probabilities is not None

    def predict(self, images):
        """uint8 [batch, h, w, 3] with h, w multiples of 32 -> uint8 class ids [batch, h, w]."""
        return self.session.run(self.output, {self.input: images})

    def probabilities(self, images, with_class_ids=False):
        """uint8 [batch, h, w, 3] with h, w multiples of 32 -> float32 softmax probabilities
        [batch, h, w, classes]; with_class_ids: (predict()'s class ids, probabilities) of one
        run."""
        if with_class_ids:
            return tuple(self.session.run([self.output, self._probabilities],
                                          {self.input: images}))
        return self.session.run(self._probabilities, {self.input: images})

    def close(self):
        self.session.close()


def model_session_config(session_config):
    """The session config of a loaded model: a copy of session_config (None: the default)
    with _lean_session_options, unless a mixed precision rewrite is on. Then grappler runs
    in full: constant folding casts the weights to 16 bits once instead of at every run."""
    config = tf1.ConfigProto()
    if session_config is not None:
        config.CopyFrom(session_config)
    if not _mixed_precision(config):
        _lean_session_options(config)
    return config


def _mixed_precision(config):
    options = config.graph_options.rewrite_options
    on = rewriter_config_pb2.RewriterConfig.ON
    return on in (options.auto_mixed_precision, options.auto_mixed_precision_onednn_bfloat16)


def _lean_session_options(config):
    """Session options for a graph whose convolution filters are constants and whose matrix
    products read variables.

    Grappler's default passes would copy the whole graph several times, weights included, to
    fold constants that export already folded: the first run would be slow and its memory
    peak at several times the size of the weights.

    Without grappler the session places only the subgraphs it runs, so it keeps one copy of
    the graph instead of two, each with every convolution filter (60 MB in VGG16); nor does it
    keep a copy of each executor's graph for RunOptions.output_partition_graphs. The remapper
    is not missed: oneDNN still fuses each convolution with its bias, its filter constant,
    and its plain matrix product does not lay fc6's variable weights out again at every run
    as the remapper's fused one does; that pays for the ReLUs run apart.
    """
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.place_pruned_graph = True
    config.experimental.disable_output_partition_graphs = True


def _return_large_frees_to_the_system():
    """Fixes glibc's mmap threshold at 256 KB: every block that large is mapped on its own and
    returned to the system when freed.

    glibc raises the threshold, up to 32 MB, whenever it frees a block above it; later blocks
    below it then come from its heap, which it returns to the system only from the top. The
    load frees several copies of the graph and prediction allocates images of a few MB, so the
    heap would go on holding freed memory the process does not use again. Other C libraries
    have no mallopt.
    """
    try:
        mallopt = getattr(ctypes.CDLL(None), 'mallopt', None)
    except (OSError, TypeError):  # no C library to load by the name None (Windows)
        return
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 256 * 1024)


def _initial_value(weight):
    """(placeholder for weight.values, the float32 weights computed from it in the session).

    An 8-bit weight is dequantized with the float32 operations of
    graph_surgery.dequantize_constants, so to the same numbers. Its variable takes over the
    output buffer of the last operation, where a fed float array would be copied into it.
    """
    stored = tf1.placeholder(tf.as_dtype(weight.values.dtype), weight.values.shape)
    if weight.scale is None:
        return stored, stored
    return stored, tf.cast(stored, tf.float32) * weight.scale + weight.low
