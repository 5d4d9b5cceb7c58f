"""TensorFlow's runtime without its public API, for the actions that only run a model.

`import tensorflow` imports the whole public API, about 2,300 modules: most of a cold predict
on a small CPU. install_runtime() instead puts a stand-in named tensorflow in sys.modules. It
serves the public names the model-running code uses (API), each from the TensorFlow module that
defines it, imported on first use. Any other name imports the real TensorFlow and comes from
it: a name missing from API makes the start slower, never wrong.
"""
import importlib
import importlib.util
import os
import site
import sys
import sysconfig
import types

# Modules `import tensorflow` loads only to register Keras' optimisers for Keras SavedModels.
KERAS_EAGER_IMPORTS = ('keras.src.optimizers', 'tf_keras.src.optimizers')

# Imported with the stand-in for what importing them registers: the Tensor's operators
# (x + 1, x[:, 2]) and the variable class tf.compat.v1.get_variable makes.
REGISTERING_MODULES = ('tensorflow.python.ops.math_ops', 'tensorflow.python.ops.array_ops',
                       'tensorflow.python.ops.variable_v1')

# Public name -> the TensorFlow module that defines it (':its name there' where it differs).
# tests/test_tf_runtime.py checks every entry against the real tensorflow.
_OPS, _ARRAY, _MATH = ('tensorflow.python.framework.ops', 'tensorflow.python.ops.array_ops',
                       'tensorflow.python.ops.math_ops')
_DTYPES, _NN = 'tensorflow.python.framework.dtypes', 'tensorflow.python.ops.nn_ops'
API = {
    '__version__': 'tensorflow.python.framework.versions',
    'Graph': _OPS,
    'as_dtype': _DTYPES, 'float32': _DTYPES, 'int32': _DTYPES, 'int64': _DTYPES,
    'uint8': _DTYPES, 'quint8': _DTYPES,
    'add_n': _MATH, 'cast': _MATH, 'matmul': _MATH, 'not_equal': _MATH, 'reduce_max': _MATH,
    'reduce_sum': _MATH, 'argmax': _MATH + ':argmax_v2',
    'maximum': 'tensorflow.python.ops.gen_math_ops',
    'minimum': 'tensorflow.python.ops.gen_math_ops',
    'concat': _ARRAY, 'fill': _ARRAY, 'identity': _ARRAY, 'reshape': _ARRAY, 'reverse': _ARRAY,
    'gather': _ARRAY + ':gather_v2', 'pad': _ARRAY + ':pad_v2', 'shape': _ARRAY + ':shape_v2',
    'where': _ARRAY + ':where_v2', 'zeros_like': _ARRAY + ':zeros_like_v2',
    'stack': 'tensorflow.python.ops.array_ops_stack',
    'unstack': 'tensorflow.python.ops.array_ops_stack',
    'constant': 'tensorflow.python.framework.constant_op',
    'convert_to_tensor':
        'tensorflow.python.framework.tensor_conversion:convert_to_tensor_v2_with_dispatch',
    'custom_gradient': 'tensorflow.python.ops.custom_gradient',
    'ensure_shape': 'tensorflow.python.ops.check_ops',
    'make_ndarray': 'tensorflow.python.framework.tensor_util:MakeNdarray',
    'make_tensor_proto': 'tensorflow.python.framework.tensor_util',
    'get_logger': 'tensorflow.python.platform.tf_logging',
    'nn.bias_add': _NN, 'nn.max_pool2d': _NN,
    'nn.conv2d': _NN + ':conv2d_v2', 'nn.conv2d_transpose': _NN + ':conv2d_transpose_v2',
    'nn.dropout': _NN + ':dropout_v2', 'nn.softmax': _NN + ':softmax_v2',
    'nn.sparse_softmax_cross_entropy_with_logits':
        _NN + ':sparse_softmax_cross_entropy_with_logits_v2',
    'nn.l2_loss': 'tensorflow.python.ops.gen_nn_ops',
    'nn.relu': 'tensorflow.python.ops.gen_nn_ops',
    'errors.OpError': 'tensorflow.python.framework.errors_impl',
    'graph_util.import_graph_def': 'tensorflow.python.framework.importer',
    'train.latest_checkpoint': 'tensorflow.python.checkpoint.checkpoint_management',
    'train.load_checkpoint': 'tensorflow.python.training.checkpoint_utils',
    'saved_model.SERVING': 'tensorflow.python.saved_model.tag_constants',
    'saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY':
        'tensorflow.python.saved_model.signature_constants',
    'config.list_physical_devices': 'tensorflow.python.framework.config',
    'compat.v1.ConfigProto': 'tensorflow.core.protobuf.config_pb2',
    'compat.v1.OptimizerOptions': 'tensorflow.core.protobuf.config_pb2',
    'compat.v1.GraphDef': 'tensorflow.core.framework.graph_pb2',
    'compat.v1.Session': 'tensorflow.python.client.session',
    'compat.v1.Variable': 'tensorflow.python.ops.variable_v1:VariableV1',
    'compat.v1.placeholder': _ARRAY, 'compat.v1.placeholder_with_default': _ARRAY,
    'compat.v1.disable_eager_execution': _OPS, 'compat.v1.name_scope': _OPS + ':name_scope_v1',
    'compat.v1.get_variable': 'tensorflow.python.ops.variable_scope',
    'compat.v1.variable_scope': 'tensorflow.python.ops.variable_scope',
    'compat.v1.global_variables': 'tensorflow.python.ops.variables',
    'compat.v1.trainable_variables': 'tensorflow.python.ops.variables',
    'compat.v1.set_random_seed': 'tensorflow.python.framework.random_seed',
    'compat.v1.variance_scaling_initializer': 'tensorflow.python.ops.init_ops',
    'compat.v1.zeros_initializer': 'tensorflow.python.ops.init_ops',
    'compat.v1.graph_util.extract_sub_graph': 'tensorflow.python.framework.graph_util_impl',
    'compat.v1.graph_util.remove_training_nodes': 'tensorflow.python.framework.graph_util_impl',
}


def import_tensorflow():
    """Imports the real TensorFlow without the Keras optimisers it loads eagerly, which no
    graph here uses (it ignores the ImportError; tf.keras and the TFLite converter import them
    when asked). Replaces the stand-in, if installed, in the stand-in's execution mode."""
    if not is_stand_in(sys.modules.get('tensorflow')):
        return _import_without_keras_optimisers()
    del sys.modules['tensorflow']
    context = importlib.import_module('tensorflow.python.eager.context')
    graph_mode = context.default_execution_mode == context.GRAPH_MODE
    # TensorFlow's __init__ turns eager execution on, which fails once a graph was made in
    # graph mode; it skips that in eager mode, and graph mode is turned on again after it.
    context.default_execution_mode = context.EAGER_MODE
    try:
        return _import_without_keras_optimisers()
    finally:
        if graph_mode:
            importlib.import_module('tensorflow.python.framework.ops').disable_eager_execution()


def _import_without_keras_optimisers():
    skipped = [name for name in KERAS_EAGER_IMPORTS if name not in sys.modules]
    for name in skipped:
        sys.modules[name] = None  # makes `import name` raise ImportError
    try:
        return importlib.import_module('tensorflow')
    finally:
        for name in skipped:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def install_runtime():
    """Puts the stand-in in sys.modules unless TensorFlow is imported already or would load
    plugins (has_plugins); returns the tensorflow module in place."""
    if is_stand_in(sys.modules.get('tensorflow')):
        return sys.modules['tensorflow']
    spec = importlib.util.find_spec('tensorflow')
    if 'tensorflow' in sys.modules or spec is None or has_plugins(spec):
        return import_tensorflow()
    stand_in = make_stand_in(spec)
    sys.modules['tensorflow'] = stand_in
    # What TensorFlow's __init__ does first, in its order: its library, then v2 behaviour
    # (resource variables, control flow v2, v2 tensor shapes) before the modules that read it.
    importlib.import_module('tensorflow.python.pywrap_tensorflow')
    os.environ['TF2_BEHAVIOR'] = '1'
    importlib.import_module('tensorflow.python.tf2').enable()
    importlib.import_module('tensorflow.python.compat.v2_compat').enable_v2_behavior()
    for name in REGISTERING_MODULES:
        importlib.import_module(name)
    return stand_in


def make_stand_in(spec):
    """A stand-in for the tensorflow package of spec, its submodules found where TensorFlow's
    are."""
    stand_in = _StandIn('tensorflow', '')
    stand_in.__path__ = list(spec.submodule_search_locations)
    stand_in.__file__, stand_in.__spec__ = spec.origin, spec
    return stand_in


def is_stand_in(module):
    return isinstance(module, _StandIn)


def has_plugins(spec):
    """Whether TensorFlow's __init__ would load kernels, devices or file systems beside its
    API: from the folders it searches (every site-packages, the user's own), or as the
    environment asks."""
    if os.environ.get('TF_PLUGGABLE_DEVICE_LIBRARY_PATH') or os.environ.get(
            'TF_USE_MODULAR_FILESYSTEM') in ('true', '1'):
        return True
    sites = {path for path in sys.path if 'site-packages' in path}
    sites.update(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        sites.add(site.getusersitepackages())
    for scheme in sysconfig.get_scheme_names():
        sites.update(sysconfig.get_path(kind, scheme) for kind in ('purelib', 'platlib'))
    folders = [os.path.join(site_dir, 'tensorflow-plugins') for site_dir in sites if site_dir]
    folders.append(os.path.join(os.path.dirname(spec.origin), 'core', 'kernels'))
    return any(os.path.exists(folder) for folder in folders)


class _StandIn(types.ModuleType):
    """tensorflow or one of its namespaces (prefix 'nn.', 'compat.v1.')."""

    def __init__(self, name, prefix):
        super().__init__(name)
        self._prefix = prefix

    def __getattr__(self, name):
        path = self._prefix + name
        if path in API:
            module, _, attribute = API[path].partition(':')
            value = getattr(importlib.import_module(module), attribute or name)
        elif any(key.startswith(path + '.') for key in API):
            value = _StandIn('%s.%s' % (self.__name__, name), path + '.')
        elif name.startswith('__'):  # what inspect, pickle or copy ask any module
            raise AttributeError(name)
        else:
            value = import_tensorflow()
            for part in path.split('.'):
                value = getattr(value, part)
        setattr(self, name, value)
        return value


def onednn_enabled():
    """Whether TensorFlow runs its CPU convolutions and matrix products with oneDNN, as it
    does by default on CPUs with AVX-512 and never on AVX2-only ones (TF_ENABLE_ONEDNN_OPTS
    overrides); elsewhere Eigen runs them."""
    from tensorflow.python.util import _pywrap_util_port
    return bool(_pywrap_util_port.IsMklEnabled())
