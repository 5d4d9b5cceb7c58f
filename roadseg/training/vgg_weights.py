"""Pretrained VGG16 encoder weights: download the Udacity SavedModel, read it or a Keras HDF5
file, load them into the graph's `conv1_1 .. conv5_3`, `fc6`, `fc7` variables. The facts:
/work/shared/reference/pretrained_vgg16.md."""

import collections
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

import h5py
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import helper
from helper import UserError

UDACITY_VGG_URL = 'https://s3-us-west-1.amazonaws.com/udacity-selfdrivingcar/vgg.zip'
DEFAULT_VGG_DIR = os.path.join(helper.TOOL_DIR, 'data', 'vgg')

# VGG16: (block, convs); the pretrained files and fcn8vgg16.py both name layers conv{block}_{i}.
_VGG16_BLOCKS = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
CONV_LAYERS = tuple('conv%d_%d' % (b, i)
                    for b, convs in _VGG16_BLOCKS for i in range(1, convs + 1))
FC_LAYERS = ('fc6', 'fc7')
VGG16_LAYERS = CONV_LAYERS + FC_LAYERS

_FORMATS = ('a Udacity VGG SavedModel folder (saved_model.pb + variables/) '
            'or a Keras VGG16 .h5 file')
# "<anything>/conv3_1/filter": the Udacity file says filter/weights,
# Keras and tf.layers say kernel.
_VARIABLE_RE = re.compile(r'(?:^|/)(conv\d+_\d+|fc\d+)/(filter|weights|kernel|biases|bias)$')
_KERNEL, _BIAS = ('filter', 'weights', 'kernel'), ('biases', 'bias')


def _is_savedmodel(folder):
    return (os.path.isfile(os.path.join(folder, 'saved_model.pb'))
            and os.path.isfile(os.path.join(folder, 'variables', 'variables.index')))


def read_vgg_weights(path):
    """Udacity SavedModel folder (or the folder holding its `vgg/`) or Keras VGG16 .h5 ->
    OrderedDict layer -> (kernel HWIO, bias), conv1_1 .. conv5_3 then fc6, fc7 if the file has
    them."""
    if os.path.isdir(path):
        folder = path if _is_savedmodel(path) else os.path.join(path, 'vgg')  # as vgg.zip unpacks
        if _is_savedmodel(folder):
            return _read_savedmodel(folder)
    elif os.path.isfile(path) and (h5py.is_hdf5(path)
                                   or path.lower().endswith(('.h5', '.hdf5'))):
        return _read_keras_h5(path)
    elif not os.path.exists(path):
        raise UserError('%s: no such file or folder (expected %s)' % (path, _FORMATS))
    raise UserError('%s: not %s' % (path, _FORMATS))


def _read_savedmodel(folder):
    # The variables are a plain checkpoint: no need to import the graph.
    try:
        reader = tf.train.load_checkpoint(os.path.join(folder, 'variables', 'variables'))
        tensors = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except (tf.errors.OpError, ValueError) as error:
        raise UserError('cannot read the VGG variables in %s (%s)'
                        % (folder, _one_line(error))) from None
    layers = collections.defaultdict(dict)
    for name, value in sorted(tensors.items()):
        match = _VARIABLE_RE.search(name)
        # The Udacity file also holds fc8 (the ImageNet classifier): FCN-8s never uses it.
        if match and match.group(1) in VGG16_LAYERS:
            layer, part = match.group(1), 'kernel' if match.group(2) in _KERNEL else 'bias'
            if part in layers[layer]:
                raise UserError('%s: more than one %s %s variable' % (folder, layer, part))
            layers[layer][part] = value
    for layer, parts in layers.items():
        if len(parts) != 2:
            raise UserError('%s: %s has only a %s' % (folder, layer, *parts))
    return _in_order(folder, {layer: (parts['kernel'], parts['bias'])
                              for layer, parts in layers.items()})


def _read_keras_h5(path):
    try:
        with h5py.File(path, 'r') as f:
            # model.save() wraps the weights in 'model_weights'; save_weights() and the
            # published files do not.
            root = f['model_weights'] if 'model_weights' in f else f
            if 'layer_names' not in root.attrs:
                raise UserError('%s: no layer_names attribute, not a Keras weights file' % path)
            layers = {}
            for keras_name in map(_text, root.attrs['layer_names']):
                layer = _keras_to_vgg(path, keras_name)
                if layer:
                    group = root[keras_name]
                    # weight_names gives the order Keras saved them in: kernel, then bias.
                    names = [_text(name) for name in group.attrs['weight_names']]
                    if len(names) != 2:
                        raise UserError('%s: %s holds %d weights %s, expected kernel and bias'
                                        % (path, keras_name, len(names), names))
                    kernel, bias = np.array(group[names[0]]), np.array(group[names[1]])
                    layers[layer] = (_dense_to_conv(path, layer, kernel), bias)
    except (OSError, KeyError, ValueError) as error:
        raise UserError('cannot read the Keras VGG16 file %s (%s)'
                        % (path, _one_line(error))) from None
    return _in_order(path, layers)


def _keras_to_vgg(path, keras_name):
    """block3_conv2 -> conv3_2, fc1 -> fc6, fc2 -> fc7; None for layers without VGG weights
    (pools, predictions)."""
    match = re.match(r'block(\d+)_conv(\d+)$', keras_name)
    if match:
        layer = 'conv%s_%s' % match.groups()
        if layer not in CONV_LAYERS:
            raise UserError('%s: has layer %s, not a VGG16 file (VGG19?)' % (path, keras_name))
        return layer
    return {'fc1': 'fc6', 'fc2': 'fc7'}.get(keras_name)


def _dense_to_conv(path, layer, kernel):
    """Keras dense kernels [in, out] -> fc6 [7, 7, C, out] and fc7 [1, 1, in, out] convolution
    kernels."""
    if layer == 'fc7':
        return kernel.reshape((1, 1) + kernel.shape)
    if layer != 'fc6':
        return kernel
    # fc1 sees Flatten(block5_pool [7, 7, C]). The *_tf_dim_ordering_tf_kernels files are
    # channels-last, where Flatten is a C-order reshape: row (h * 7 + w) * C + c holds pixel
    # (h, w), channel c. A C-order reshape to [7, 7, C, out] therefore puts it at kernel[h, w, c].
    # (Caffe's original fc6 was flattened channels-first, (c * 7 + h) * 7 + w; Keras converted
    # the published weights, so no transpose here.)
    if kernel.ndim != 2 or kernel.shape[0] % 49:
        raise UserError('%s: fc1 kernel %s is not [7 * 7 * channels, units]'
                        % (path, kernel.shape))
    return kernel.reshape((7, 7, kernel.shape[0] // 49, kernel.shape[1]))


def _in_order(path, layers):
    missing = [layer for layer in CONV_LAYERS if layer not in layers]
    if missing:
        raise UserError('%s: no VGG16 weights for %s' % (path, ', '.join(missing)))
    for layer, (kernel, bias) in layers.items():
        if bias.ndim != 1 or kernel.ndim != 4 or kernel.shape[-1] != bias.shape[0]:
            raise UserError('%s: %s kernel %s and bias %s do not fit together'
                            % (path, layer, kernel.shape, bias.shape))
    return collections.OrderedDict((layer, layers[layer])
                                   for layer in VGG16_LAYERS if layer in layers)


def _text(name):
    return name.decode('utf8') if isinstance(name, bytes) else str(name)


def _one_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _find_variable(variables, layer, spellings):
    pattern = re.compile(r'(?:^|/)%s/(?:%s)$' % (layer, '|'.join(spellings)))
    found = [variable for variable in variables if pattern.search(variable.op.name)]
    if len(found) > 1:
        raise UserError('%s: several model variables match (%s)'
                        % (layer, ', '.join(v.op.name for v in found)))
    return found[0] if found else None


def load_vgg_weights(session, weights, graph=None):
    """Copy `weights` (from read_vgg_weights) into the graph's global variables
    `.../conv1_1/filter`, `.../biases`... Returns (loaded variable names, VGG layers the model has
    but the file lacks: they keep their initialisation)."""
    graph = graph or session.graph
    variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
    feeds = []
    for layer, values in weights.items():
        for spellings, value in zip((_KERNEL, _BIAS), values):
            variable = _find_variable(variables, layer, spellings)
            if variable is None:
                raise UserError('the model has no variable %s/%s for the file\'s %s weights'
                                % (layer, '|'.join(spellings), layer))
            model_shape = tuple(variable.shape.as_list())
            if tuple(value.shape) != model_shape:
                name = '%s/%s' % (layer, variable.op.name.rsplit('/', 1)[-1])
                raise UserError('%s: file has %s, model has %s'
                                % (name, tuple(value.shape), model_shape))
            feeds.append((variable, np.asarray(value, variable.dtype.base_dtype.as_numpy_dtype)))
    # Run each variable's initializer with its initial value fed (what Variable.load does), all in
    # one run: the ~500 MB of weights never become graph constants, no op is added, so a finalized
    # graph works too. The copies of a variable mirrored on several devices start from its initial
    # value as well: one feed loads them all.
    session.run([variable.initializer for variable, _ in feeds],
                {variable.initial_value: value for variable, value in feeds})
    not_in_file = [layer for layer in VGG16_LAYERS
                   if layer not in weights
                   and _find_variable(variables, layer, _KERNEL) is not None]
    return [variable.op.name for variable, _ in feeds], not_in_file


def maybe_download_vgg(vgg_dir=DEFAULT_VGG_DIR, url=UDACITY_VGG_URL):
    """Path of the Udacity VGG16 SavedModel in vgg_dir, downloading and unzipping vgg.zip first if
    it is not there."""
    if _is_savedmodel(vgg_dir):
        return vgg_dir
    if os.path.exists(vgg_dir):
        raise UserError('%s exists but is not a Udacity VGG SavedModel (saved_model.pb + '
                        'variables/); move it away or pass --vgg_weights PATH' % vgg_dir)
    # Everything happens in a temporary folder beside vgg_dir, renamed into place only when
    # complete (same file system, so the rename is atomic); it goes whatever happens, even on
    # Ctrl-C.
    parent = os.path.dirname(os.path.abspath(vgg_dir))
    parent_existed = os.path.isdir(parent)
    try:
        os.makedirs(parent, exist_ok=True)
        work = tempfile.mkdtemp(prefix='.vgg-download-', dir=parent)
    except OSError as error:
        raise UserError('cannot write the VGG16 weights to %s (%s)'
                        % (parent, _one_line(error))) from None
    try:
        zip_path = os.path.join(work, 'vgg.zip')
        _download(url, zip_path)
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(os.path.join(work, 'unzipped'))
        unzipped = os.path.join(work, 'unzipped', 'vgg')
        if not _is_savedmodel(unzipped):
            raise ValueError('the zip has no vgg/saved_model.pb and '
                             'vgg/variables/variables.index')
        os.rename(unzipped, vgg_dir)
    except (OSError, ValueError, http.client.HTTPException, zipfile.BadZipFile,
            EOFError) as error:
        # URLError (refused, no DNS) and HTTPError (404) are OSErrors; str(URLError) wraps its
        # reason in <...>.
        if (isinstance(error, urllib.error.URLError)
                and not isinstance(error, urllib.error.HTTPError)):
            error = error.reason
        raise UserError('could not download the VGG16 weights from %s (%s); pass a local file '
                        'with --vgg_weights PATH (Udacity vgg folder or Keras vgg16 .h5), or '
                        '--vgg_weights none to train from scratch'
                        % (url, _one_line(error))) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        # On failure, no empty folder of ours is left either.
        if not parent_existed and not os.listdir(parent):
            os.rmdir(parent)
    return vgg_dir


def _download(url, path):
    with urllib.request.urlopen(url, timeout=60) as response, open(path, 'wb') as out:
        size = int(response.headers.get('Content-Length') or 0) or None
        with tqdm(total=size, unit='B', unit_scale=True, desc=os.path.basename(url),
                  disable=size is None) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b''):
                out.write(chunk)
                bar.update(len(chunk))
        if size is not None and out.tell() != size:
            raise ValueError('got %d of %d bytes' % (out.tell(), size))


def load_pretrained(session, source):
    """Loads the --vgg_weights source into an initialised model: a file or folder, 'none' to
    train from scratch, or None to download Udacity's weights once into DEFAULT_VGG_DIR."""
    if source is not None and source.lower() == 'none':
        print('training from scratch: --vgg_weights none')
        return
    path = source or maybe_download_vgg(DEFAULT_VGG_DIR, UDACITY_VGG_URL)
    loaded, missing = load_vgg_weights(session, read_vgg_weights(path))
    print('loaded %d VGG16 tensors from %s' % (len(loaded), path)
          + ('; %s not in the file: initialised randomly' % ', '.join(missing) if missing else ''))
