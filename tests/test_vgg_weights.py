"""vgg_weights.py on tiny files written here in the two real layouts; no network (a local
http.server only)."""

import collections
import http.server
import io
import os
import socket
import threading
import zipfile

import h5py
import numpy as np
import pytest
import tensorflow as tf

import fcn8vgg16
from roadseg.training import vgg_weights
from helper import UserError

tf1 = tf.compat.v1

# A tiny VGG16: same layers and names, 4-8 filters, fc width 16.
TINY_ENCODER = ((1, 4, 2), (2, 5, 2), (3, 6, 3), (4, 7, 3), (5, 8, 3))
TINY_FC = 16
DOWNLOAD_ERROR = ('could not download the VGG16 weights from {url} ({reason}); pass a local file '
                  'with --vgg_weights PATH (Udacity vgg folder or Keras vgg16 .h5), or '
                  '--vgg_weights none to train from scratch')


def _tiny_vgg(encoder=TINY_ENCODER, fc=TINY_FC):
    """layer -> (kernel HWIO, bias) in the VGG layout; every number distinct across the whole
    network."""
    shapes, cin = [], 3
    for block, filters, convs in encoder:
        for i in range(1, convs + 1):
            shapes.append(('conv%d_%d' % (block, i), (3, 3, cin, filters)))
            cin = filters
    shapes += [('fc6', (7, 7, cin, fc)), ('fc7', (1, 1, fc, fc))]
    weights = collections.OrderedDict()
    for index, (layer, shape) in enumerate(shapes):
        offset = 10000.0 * (index + 1)
        kernel = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + offset
        weights[layer] = (kernel, -offset - np.arange(shape[-1], dtype=np.float32))
    return weights


def _write_udacity(folder, weights):
    """The Udacity vgg/ SavedModel: tag vgg16, variables conv1_1/filter, fc6/weights, ..., the
    ImageNet fc8."""
    weights = collections.OrderedDict(weights, fc8=(np.ones((1, 1, TINY_FC, 10), np.float32),
                                                    np.ones(10, np.float32)))
    with tf.Graph().as_default(), tf1.Session() as session:
        image_input = tf1.placeholder(tf.float32, [None, None, None, 3], name='image_input')
        tf1.placeholder(tf.float32, name='keep_prob')
        for layer, (kernel, bias) in weights.items():
            with tf1.variable_scope(layer):
                tf1.get_variable('filter' if layer.startswith('conv') else 'weights',
                                 initializer=kernel)
                tf1.get_variable('biases', initializer=bias)
        for name in ('layer3_out', 'layer4_out', 'layer7_out'):
            tf.identity(image_input, name=name)
        session.run(tf1.global_variables_initializer())
        builder = tf1.saved_model.Builder(str(folder))
        builder.add_meta_graph_and_variables(session, ['vgg16'])
        builder.save()
    return str(folder)


def _write_keras(path, weights, top=True, wrapper=False):
    """Keras VGG16 HDF5 in the save_weights() layout (wrapper=True: model.save()'s model_weights
    group)."""
    layers = [('input_1', [])]
    for block, _, convs in TINY_ENCODER:
        for i in range(1, convs + 1):
            layers.append(('block%d_conv%d' % (block, i), weights['conv%d_%d' % (block, i)]))
        layers.append(('block%d_pool' % block, []))
    if top:
        fc6, fc7 = weights['fc6'], weights['fc7']
        # fc1 is the dense layer after Flatten(block5_pool): rows in (h, w, c) order, i.e. a
        # C-order reshape.
        layers += [('flatten', []), ('fc1', (fc6[0].reshape(-1, TINY_FC), fc6[1])),
                   ('fc2', (fc7[0].reshape(TINY_FC, TINY_FC), fc7[1])),
                   ('predictions', (np.ones((TINY_FC, 10), np.float32), np.ones(10, np.float32)))]
    with h5py.File(path, 'w') as f:
        root = f.create_group('model_weights') if wrapper else f
        root.attrs['layer_names'] = np.array([name.encode() for name, _ in layers])
        root.attrs['backend'] = b'tensorflow'
        root.attrs['keras_version'] = b'2.2.4'
        for name, values in layers:
            group = root.create_group(name)
            weight_names = ['%s/%s:0' % (name, kind) for kind in ('kernel', 'bias')][:len(values)]
            group.attrs['weight_names'] = np.array([w.encode() for w in weight_names], dtype='S')
            for weight_name, value in zip(weight_names, values):
                group.create_dataset(weight_name, data=value)
    return str(path)


def _tiny_fcn8s(scope='fcn8s'):
    images = tf1.placeholder(tf.uint8, [1, 32, 32, 3], name=fcn8vgg16.INPUT_NAME)
    with tf1.variable_scope(scope):
        fcn8vgg16.fcn8s(images, 3, encoder=TINY_ENCODER, fc_channels=TINY_FC)


def _model_name(layer, scope='fcn8s'):
    return '%s/%s/%s' % (scope, layer, 'filter' if layer.startswith('conv') else 'weights')


def _load_into_tiny_fcn8s(path):
    """(values before loading, values after, loaded names, layers not in the file) of a fresh tiny
    FCN-8s."""
    weights = vgg_weights.read_vgg_weights(path)
    with tf.Graph().as_default(), tf1.Session() as session:
        _tiny_fcn8s()
        session.run(tf1.global_variables_initializer())
        variables = {v.op.name: v for v in tf1.global_variables()}
        before = session.run(variables)
        loaded, not_in_file = vgg_weights.load_vgg_weights(session, weights)
        return before, session.run(variables), loaded, not_in_file


@pytest.mark.parametrize('layout', ['udacity', 'udacity_parent', 'keras', 'keras_model_weights'])
def test_every_vgg_variable_holds_the_files_tensor(tmp_path, layout):
    expected = _tiny_vgg()
    if layout.startswith('udacity'):
        path = _write_udacity(tmp_path / 'vgg', expected)
        # udacity_parent: the folder vgg.zip unpacks into.
        path = str(tmp_path) if layout == 'udacity_parent' else path
    else:
        path = _write_keras(tmp_path / 'vgg16.h5', expected,
                            wrapper=layout == 'keras_model_weights')
    assert list(vgg_weights.read_vgg_weights(path)) == list(vgg_weights.VGG16_LAYERS)

    before, after, loaded, not_in_file = _load_into_tiny_fcn8s(path)
    names = [name for layer in expected for name in (_model_name(layer), 'fcn8s/%s/biases' % layer)]
    assert sorted(loaded) == sorted(names) and not_in_file == []
    for layer, (kernel, bias) in expected.items():
        np.testing.assert_array_equal(after[_model_name(layer)], kernel)
        np.testing.assert_array_equal(after['fcn8s/%s/biases' % layer], bias)
    decoder = [name for name in after if name not in names]
    assert 'fcn8s/score_fr/weights' in decoder and 'fcn8s/upscore2/weights' in decoder
    for name in decoder:
        np.testing.assert_array_equal(after[name], before[name])


def test_fc1_rows_are_keras_flatten_order(tmp_path):
    path = _write_keras(tmp_path / 'vgg16.h5', _tiny_vgg())
    with h5py.File(path, 'r') as f:
        fc1 = f['fc1']['fc1/kernel:0'][()]  # [7 * 7 * 8, 16] as written
    fc6 = vgg_weights.read_vgg_weights(path)['fc6'][0]
    assert fc1.shape == (392, 16) and fc6.shape == (7, 7, 8, 16)
    # Flatten of a channels-last [7, 7, 8] map puts (h=2, w=5, c=3) at row
    # (2 * 7 + 5) * 8 + 3 = 155.
    assert fc6[2, 5, 3, 7] == fc1[155, 7] == 10000 * 14 + 155 * 16 + 7  # fc6 is the 14th layer
    # Keras' Flatten of a channels-last map is a C-order reshape, so the 7x7 VALID fc6
    # convolution of a pool5 map equals Dense(fc1) of its flattened copy.
    pool5 = np.random.RandomState(0).rand(1, 7, 7, 8).astype(np.float32)
    dense = pool5.reshape(1, -1) @ fc1
    np.testing.assert_allclose(np.einsum('nhwc,hwco->no', pool5, fc6), dense, rtol=1e-5)


def test_notop_file_leaves_fc6_fc7_initialised(tmp_path):
    expected = _tiny_vgg()
    path = _write_keras(tmp_path / 'vgg16_notop.h5', expected, top=False)
    assert list(vgg_weights.read_vgg_weights(path)) == list(vgg_weights.CONV_LAYERS)
    before, after, loaded, not_in_file = _load_into_tiny_fcn8s(path)
    assert not_in_file == ['fc6', 'fc7'] and len(loaded) == 2 * 13
    np.testing.assert_array_equal(after['fcn8s/conv5_3/filter'], expected['conv5_3'][0])
    for name in ('fcn8s/fc6/weights', 'fcn8s/fc6/biases', 'fcn8s/fc7/weights', 'fcn8s/fc7/biases'):
        assert name not in loaded
        np.testing.assert_array_equal(after[name], before[name])


def test_prefixed_ref_variables_and_optimizer_slots(tmp_path):
    # The contract without fcn8vgg16: plain get_variable under an outer scope, old-style ref
    # variables, plus an Adam slot whose name also contains conv1_1/filter.
    weights = _tiny_vgg()
    with tf.Graph().as_default(), tf1.Session() as session:
        with tf1.variable_scope('tower_0'):
            for layer, (kernel, bias) in weights.items():
                with tf1.variable_scope(layer):
                    tf1.get_variable('filter' if layer.startswith('conv') else 'weights',
                                     kernel.shape, use_resource=False)
                    tf1.get_variable('biases', bias.shape, use_resource=False)
            slot = tf1.get_variable('conv1_1/filter/Adam', weights['conv1_1'][0].shape)
        session.run(tf1.global_variables_initializer())
        slot_before = session.run(slot)
        loaded, not_in_file = vgg_weights.load_vgg_weights(session, weights)
        assert len(loaded) == 30 and not_in_file == []
        np.testing.assert_array_equal(session.run('tower_0/fc6/weights:0'), weights['fc6'][0])
        np.testing.assert_array_equal(session.run(slot), slot_before)


def test_ambiguous_model_variables_are_an_error():
    with tf.Graph().as_default(), tf1.Session() as session:
        for replica in ('replica_0', 'replica_1'):
            tf1.get_variable(replica + '/conv1_1/filter', [3, 3, 3, 4])
        with pytest.raises(UserError,
                           match=r'^conv1_1: several model variables match '
                                 r'\(replica_0/conv1_1/filter, replica_1/conv1_1/filter\)$'):
            vgg_weights.load_vgg_weights(session, {'conv1_1': _tiny_vgg()['conv1_1']})


def test_shape_mismatch_names_layer_and_both_shapes_and_loads_nothing():
    weights = _tiny_vgg()
    weights['conv3_1'] = (np.zeros((3, 3, 5, 12), np.float32), np.zeros(12, np.float32))
    with tf.Graph().as_default(), tf1.Session() as session:
        _tiny_fcn8s()
        session.run(tf1.global_variables_initializer())
        conv1_1 = session.run('fcn8s/conv1_1/filter:0')
        with pytest.raises(UserError) as error:
            vgg_weights.load_vgg_weights(session, weights)
        assert str(error.value) == 'conv3_1/filter: file has (3, 3, 5, 12), model has (3, 3, 5, 6)'
        np.testing.assert_array_equal(session.run('fcn8s/conv1_1/filter:0'), conv1_1)


def test_fc_width_mismatch_from_a_keras_file(tmp_path):
    path = _write_keras(tmp_path / 'vgg16.h5', _tiny_vgg())
    weights = vgg_weights.read_vgg_weights(path)
    with tf.Graph().as_default(), tf1.Session() as session:
        images = tf1.placeholder(tf.uint8, [1, 32, 32, 3])
        fcn8vgg16.fcn8s(images, 3, encoder=TINY_ENCODER, fc_channels=32)
        with pytest.raises(UserError, match=r'^fc6/weights: file has \(7, 7, 8, 16\), '
                                            r'model has \(7, 7, 8, 32\)$'):
            vgg_weights.load_vgg_weights(session, weights)


def _truncated_h5(path):
    _write_keras(path, _tiny_vgg())
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


def _without_conv5_3(path):
    _write_keras(path, _tiny_vgg())
    with h5py.File(path, 'r+') as f:
        f.attrs['layer_names'] = np.array([n for n in f.attrs['layer_names']
                                           if n != b'block5_conv3'])


def _vgg19_like(path):
    _write_keras(path, _tiny_vgg())
    with h5py.File(path, 'r+') as f:
        f.attrs['layer_names'] = np.append(f.attrs['layer_names'], b'block3_conv4')


def _corrupt_udacity(folder):
    _write_udacity(folder, _tiny_vgg())
    with open(os.path.join(folder, 'variables', 'variables.index'), 'wb') as f:
        f.write(b'not a checkpoint index' * 10)


@pytest.mark.parametrize('name, make, message', [
    ('notes.txt', lambda p: p.write_text('hello'),
     '{}: not a Udacity VGG SavedModel folder (saved_model.pb + variables/) '
     'or a Keras VGG16 .h5 file'),
    ('empty_folder', lambda p: p.mkdir(),
     '{}: not a Udacity VGG SavedModel folder (saved_model.pb + variables/) '
     'or a Keras VGG16 .h5 file'),
    ('missing.h5', lambda p: None,
     '{}: no such file or folder (expected a Udacity VGG SavedModel folder '
     '(saved_model.pb + variables/) or a Keras VGG16 .h5 file)'),
    ('garbage.h5', lambda p: p.write_bytes(b'\0' * 100), 'cannot read the Keras VGG16 file {} ('),
    ('truncated.h5', _truncated_h5, 'cannot read the Keras VGG16 file {} ('),
    ('no_layer_names.h5', lambda p: h5py.File(p, 'w').close(),
     '{}: no layer_names attribute, not a Keras weights file'),
    ('no_conv5_3.h5', _without_conv5_3, '{}: no VGG16 weights for conv5_3'),
    ('vgg19.h5', _vgg19_like, '{}: has layer block3_conv4, not a VGG16 file (VGG19?)'),
    ('vgg', _corrupt_udacity, 'cannot read the VGG variables in {} ('),
])
def test_unreadable_files_are_one_line_user_errors(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(UserError) as error:
        vgg_weights.read_vgg_weights(str(path))
    assert str(error.value).startswith(message.format(path)) and '\n' not in str(error.value)


# --- download -------------------------------------------------------------------------------------

@pytest.fixture
def http_server():
    """(base url, {path: body} it serves, list of request paths), from 127.0.0.1 in a thread."""
    files, requests = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path not in files:
                return self.send_error(404)
            self.send_response(200)
            self.send_header('Content-Length', str(len(files[self.path])))
            self.end_headers()
            self.wfile.write(files[self.path])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                              daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d' % server.server_port, files, requests
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _zip(folder, prefix):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        for parent, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(parent, name)
                archive.write(path, os.path.join(prefix, os.path.relpath(path, folder)))
    return buffer.getvalue()


def test_download_unzips_and_reuses_the_cache(tmp_path, http_server):
    url, files, requests = http_server
    weights = _tiny_vgg()
    files['/vgg.zip'] = _zip(_write_udacity(tmp_path / 'server' / 'vgg', weights), 'vgg')
    cache = tmp_path / 'data'  # created by the download
    vgg_dir = str(cache / 'vgg')

    assert vgg_weights.maybe_download_vgg(vgg_dir, url + '/vgg.zip') == vgg_dir
    assert os.listdir(cache) == ['vgg'] and requests == ['/vgg.zip']  # no temporary files left
    read = vgg_weights.read_vgg_weights(vgg_dir)
    np.testing.assert_array_equal(read['fc6'][0], weights['fc6'][0])

    assert vgg_weights.maybe_download_vgg(vgg_dir, url + '/vgg.zip') == vgg_dir
    assert requests == ['/vgg.zip']


def _closed_port_url():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return 'http://127.0.0.1:%d/vgg.zip' % s.getsockname()[1]


@pytest.mark.parametrize('case, reason', [
    ('unreachable', 'Connection refused'),
    ('404', 'HTTP Error 404: Not Found'),
    ('bad_zip', 'File is not a zip file'),
    ('zip_without_vgg', 'the zip has no vgg/saved_model.pb and vgg/variables/variables.index'),
])
def test_failed_download_is_one_line_and_leaves_nothing(tmp_path, http_server, case, reason):
    base, files, _ = http_server
    url = _closed_port_url() if case == 'unreachable' else base + '/vgg.zip'
    bodies = {'bad_zip': b'<html>not a zip</html>', 'zip_without_vgg': _zip(str(tmp_path), 'x')}
    if case in bodies:
        files['/vgg.zip'] = bodies[case]
    with pytest.raises(UserError) as error:
        vgg_weights.maybe_download_vgg(str(tmp_path / 'data' / 'vgg'), url)
    message = str(error.value)
    head, tail = DOWNLOAD_ERROR.format(url=url, reason='REASON').split('REASON')
    assert message.startswith(head) and message.endswith(tail) and '\n' not in message
    assert reason in message[len(head):-len(tail)]
    assert os.listdir(tmp_path) == []  # not even the data/ folder it created


def test_download_never_replaces_a_users_folder(tmp_path, http_server):
    url, _, requests = http_server
    (tmp_path / 'vgg').mkdir()
    (tmp_path / 'vgg' / 'notes.txt').write_text('mine')
    with pytest.raises(UserError, match='exists but is not a Udacity VGG SavedModel'):
        vgg_weights.maybe_download_vgg(str(tmp_path / 'vgg'), url + '/vgg.zip')
    assert os.listdir(tmp_path / 'vgg') == ['notes.txt'] and requests == []
