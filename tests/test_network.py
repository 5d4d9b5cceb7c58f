"""fcn8vgg16.py: shapes, strides, variables, initial values, bilinear upsampling, loss, names.

Every test builds a tiny VGG16 (synthetic.TINY_VGG16) in a fresh graph and runs it on the CPU.
Expected values come from the paper's recipe (/work/shared/reference/fcn8s.md) and are worked
out by hand or with numpy here, never read back from the module.
"""
import numpy as np
import pytest
import tensorflow as tf

import fcn8vgg16
from roadseg import fc_products, tf_runtime
from roadseg.deploy import graph_surgery
from synthetic import TINY_FC_CHANNELS, TINY_VGG16, frozen_tiny_graph

tf1 = tf.compat.v1
NUM_CLASSES = 3
# Bilinear profiles worked out by hand from fcn8s.md: factor = (k + 1) // 2, center = factor - 1
# (k odd) or factor - 0.5 (k even), weight = 1 - |i - center| / factor.
PROFILE_3 = np.array([1, 2, 1]) / 2                          # factor 2, center 1
PROFILE_4 = np.array([1, 3, 3, 1]) / 4                       # factor 2, center 1.5
PROFILE_16 = np.r_[np.arange(1, 16, 2), np.arange(15, 0, -2)] / 16  # factor 8, center 7.5


def _fcn8s(images, num_classes=NUM_CLASSES, encoder=TINY_VGG16, **kwargs):
    return fcn8vgg16.fcn8s(images, num_classes, encoder=encoder,
                           fc_channels=TINY_FC_CHANNELS, **kwargs)


def _images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _diagonal_kernel(profile, channels):
    size = len(profile)
    kernel = np.zeros((size, size, channels, channels))
    for channel in range(channels):
        kernel[:, :, channel, channel] = np.outer(profile, profile)
    return kernel


def _variable(name):
    (variable,) = [v for v in tf1.global_variables() if v.op.name == name]
    return variable


# ---------------------------------------------------------------------------- shapes and strides

@pytest.mark.parametrize('height, width', [(32, 32), (32, 64), (96, 64)])
def test_static_shapes_of_logits_and_end_points(height, width):
    with tf.Graph().as_default():
        images = tf1.placeholder(tf.uint8, [2, height, width, 3])
        logits, end_points = _fcn8s(images)
        assert logits.shape.as_list() == [2, height, width, NUM_CLASSES]
        # TINY_VGG16: pool1 and pool2 have 4 channels, pool3..pool5 8; stride 2 ** block.
        for block, channels in ((1, 4), (2, 4), (3, 8), (4, 8), (5, 8)):
            stride = 2 ** block
            assert end_points['pool%d' % block].shape.as_list() == [
                2, height // stride, width // stride, channels], block
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            value = session.run(logits, {images: _images((2, height, width, 3))})
        assert value.shape == (2, height, width, NUM_CLASSES)
        assert value.dtype == np.float32


@pytest.mark.parametrize('for_training, onednn', [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize('size, height, width, relu', [(7, 8, 16, True), (7, 3, 5, False),
                                                     (7, 1, 2, True), (3, 2, 9, True),
                                                     (1, 4, 6, True)])
def test_conv_as_matmul_computes_the_same_convolution_and_gradients(size, height, width, relu,
                                                                    for_training, onednn,
                                                                    monkeypatch):
    """fc6 and fc7 are computed as matrix products over patches, in one product or, for
    training, in row bands with input gradients computed as Eigen or oneDNN runs them fastest
    (for Eigen, the transpose of weights @ d^T): values and gradients must be those of the SAME
    convolution, for maps smaller than the kernel too (bands that reach no row)."""
    monkeypatch.setattr(tf_runtime, 'onednn_enabled', lambda: onednn)
    rng = np.random.default_rng(size + height)
    with tf.Graph().as_default() as graph:
        inputs = tf1.placeholder(tf.float32, [None, None, None, 5])
        kernel = tf.constant(rng.normal(size=(size, size, 5, 4)).astype(np.float32))
        biases = tf.constant(rng.normal(size=4).astype(np.float32))
        expected = tf.nn.bias_add(tf.nn.conv2d(inputs, kernel, 1, 'SAME'), biases)
        expected = tf.nn.relu(expected) if relu else expected
        outputs = fc_products.conv_as_matmul(inputs, kernel, biases, relu, for_training)
        assert outputs.shape.as_list() == [None, None, None, 4]
        weights = tf.constant(rng.normal(size=(2, height, width, 4)).astype(np.float32))
        gradients = [tf.gradients(tf.reduce_sum(y * weights), [inputs, kernel])
                     for y in (expected, outputs)]
        transposed = [op for op in graph.get_operations() if op.type == 'Transpose']
        assert bool(transposed) == (for_training and not onednn)
        with tf1.Session() as session:
            feed = {inputs: rng.normal(size=(2, height, width, 5)).astype(np.float32)}
            (want, want_grads), (got, got_grads) = session.run(
                [(expected, gradients[0]), (outputs, gradients[1])], feed)
    assert got.shape == (2, height, width, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for got_grad, want_grad in zip(got_grads, want_grads):
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('for_training', [False, True])
def test_fc6_products_skip_the_padding_only_in_row_bands(for_training):
    """On fc6's 8 x 16 map (256 x 512 images) one product multiplies every 7 x 7 patch, zero
    padding included; the row bands are 7 products that reach 5+6+7+8+7+6+5 of the 7 x 8
    (kernel row, output row) pairs."""
    with tf.Graph().as_default() as graph:
        images = tf1.placeholder(tf.uint8, [1, 256, 512, 3])
        _fcn8s(images, for_training=for_training)
        products = [op for op in graph.get_operations()
                    if op.type == 'MatMul' and op.name.startswith('fc6/')]
        multiply_adds = tf.add_n([tf.reduce_prod(tf.shape(op.inputs[0])) for op in products])
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            got = session.run(multiply_adds, {images: _images((1, 256, 512, 3))})
    channels = TINY_VGG16[-1][1]  # per output channel: patch rows x patch length
    assert len(products) == (7 if for_training else 1)
    one_product = (8 * 16) * (7 * 7 * channels)
    assert got == (one_product * 44 // 56 if for_training else one_product)


def test_a_loaded_graph_computes_fc6_in_row_bands_and_the_same_logits():
    """The loader rewrites a frozen graph's one fc6 product into row bands (exports keep the
    one product): 7 products in their own scope, the one product and its patches gone, fc7
    untouched, and the logits those of the graph as frozen, for maps smaller than the kernel
    and batches of more than one image too."""
    frozen = frozen_tiny_graph(NUM_CLASSES)
    banded = tf1.GraphDef()
    banded.CopyFrom(frozen)
    graph_surgery.fc_products_in_row_bands(banded)
    assert [node.name for node in frozen.node if node.op == 'MatMul'] == \
        ['fc6/MatMul', 'fc7/MatMul']
    products = [node.name for node in banded.node if node.op == 'MatMul']
    assert len([name for name in products if name.startswith('fc6/row_bands/')]) == 7
    assert [name for name in products if not name.startswith('fc6/row_bands/')] == \
        ['fc7/MatMul']
    assert not [node.name for node in banded.node if node.op in ('ConcatV2', 'Pad')
                and node.name.startswith('fc6/') and '/row_bands/' not in node.name]
    for shape in ((1, 256, 512, 3), (2, 64, 96, 3), (1, 32, 32, 3)):
        logits = []
        for graph_def in (frozen, banded):
            with tf.Graph().as_default(), tf1.Session() as session:
                tf.graph_util.import_graph_def(graph_def, name='')
                logits.append(session.run(fcn8vgg16.LOGITS_TENSOR,
                                          {fcn8vgg16.INPUT_TENSOR: _images(shape, seed=1)}))
        assert logits[1].shape == shape[:3] + (NUM_CLASSES,)
        scale = np.abs(logits[0]).max()
        assert scale > 0
        np.testing.assert_allclose(logits[1], logits[0], rtol=1e-4, atol=1e-5 * scale)


def test_a_graph_whose_fc6_product_is_not_this_tool_s_is_loaded_as_it_is():
    with tf.Graph().as_default() as graph:
        tf.matmul(tf1.placeholder(tf.float32, [None, 8], name='inputs'),
                  tf1.placeholder(tf.float32, [8, 4], name='weights'), name='fc6/MatMul')
    graph_def = graph.as_graph_def()
    graph_surgery.fc_products_in_row_bands(graph_def)
    assert graph_def == graph.as_graph_def()


def test_fc_layers_are_matrix_products_and_the_encoder_convolutions():
    with tf.Graph().as_default() as graph:
        _fcn8s(tf1.placeholder(tf.uint8, [None, 64, 64, 3]))
        ops = {op.name.split('/')[0]: set() for op in graph.get_operations()}
        for op in graph.get_operations():
            ops[op.name.split('/')[0]].add(op.type)
    assert 'MatMul' in ops['fc6'] and 'Conv2D' not in ops['fc6']
    assert 'MatMul' in ops['fc7'] and 'Conv2D' not in ops['fc7']
    assert 'Conv2D' in ops['conv1_1'] and 'MatMul' not in ops['conv1_1']


def test_dynamic_input_takes_any_multiple_of_32():
    with tf.Graph().as_default():
        images = tf1.placeholder(tf.uint8, [None, None, None, 3])
        logits, end_points = _fcn8s(images)
        assert logits.shape.as_list() == [None, None, None, NUM_CLASSES]
        fetches = [logits, end_points['pool3'], end_points['pool4'], end_points['pool5']]
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            for batch, height, width in ((1, 32, 32), (2, 64, 96), (1, 128, 64)):
                shapes = [v.shape for v in session.run(
                    fetches, {images: _images((batch, height, width, 3))})]
                assert shapes == [(batch, height, width, NUM_CLASSES),
                                  (batch, height // 8, width // 8, 8),     # pool3: 1/8
                                  (batch, height // 16, width // 16, 8),   # pool4: 1/16
                                  (batch, height // 32, width // 32, 8)]   # pool5: 1/32


# --------------------------------------------------------------------------------- variables

def test_variable_names_and_shapes():
    encoder = ((1, 4, 2), (2, 4, 1), (3, 6, 2), (4, 8, 1), (5, 10, 1))
    fc, c = TINY_FC_CHANNELS, NUM_CLASSES
    expected = {
        'conv1_1/filter': [3, 3, 3, 4], 'conv1_1/biases': [4],
        'conv1_2/filter': [3, 3, 4, 4], 'conv1_2/biases': [4],
        'conv2_1/filter': [3, 3, 4, 4], 'conv2_1/biases': [4],
        'conv3_1/filter': [3, 3, 4, 6], 'conv3_1/biases': [6],
        'conv3_2/filter': [3, 3, 6, 6], 'conv3_2/biases': [6],
        'conv4_1/filter': [3, 3, 6, 8], 'conv4_1/biases': [8],
        'conv5_1/filter': [3, 3, 8, 10], 'conv5_1/biases': [10],
        'fc6/weights': [7, 7, 10, fc], 'fc6/biases': [fc],   # 7x7, not cropped to 1x1
        'fc7/weights': [1, 1, fc, fc], 'fc7/biases': [fc],
        'score_fr/weights': [1, 1, fc, c], 'score_fr/biases': [c],
        'score_pool4/weights': [1, 1, 8, c], 'score_pool4/biases': [c],
        'score_pool3/weights': [1, 1, 6, c], 'score_pool3/biases': [c],
        'upscore2/weights': [4, 4, c, c],            # no biases on the upsampling layers
        'upscore_pool4/weights': [4, 4, c, c],
        'upscore8/weights': [16, 16, c, c],
    }
    with tf.Graph().as_default():
        _fcn8s(tf1.placeholder(tf.uint8, [1, 64, 64, 3]), encoder=encoder)
        found = {v.op.name: v.shape.as_list() for v in tf1.global_variables()}
    assert found == expected


@pytest.mark.parametrize('train_upsampling', [False, True])
def test_upsampling_kernels_start_bilinear_and_are_frozen_by_default(train_upsampling):
    upsampling = {'upscore2': PROFILE_4, 'upscore_pool4': PROFILE_4, 'upscore8': PROFILE_16}
    with tf.Graph().as_default():
        _fcn8s(tf1.placeholder(tf.uint8, [1, 32, 32, 3]), train_upsampling=train_upsampling)
        trainable = {v.op.name for v in tf1.trainable_variables()}
        all_names = {v.op.name for v in tf1.global_variables()}
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            for layer, profile in upsampling.items():
                np.testing.assert_allclose(session.run(_variable(layer + '/weights')),
                                           _diagonal_kernel(profile, NUM_CLASSES), atol=1e-7)
    upsampling_names = {layer + '/weights' for layer in upsampling}
    if train_upsampling:
        assert trainable == all_names
    else:
        assert trainable == all_names - upsampling_names


def test_score_layers_start_at_zero_so_initial_logits_are_zero():
    with tf.Graph().as_default():
        tf1.set_random_seed(1)
        images = tf1.placeholder(tf.uint8, [2, 64, 64, 3])
        logits, _ = _fcn8s(images)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            for layer in ('score_fr', 'score_pool4', 'score_pool3'):
                for kind in ('weights', 'biases'):
                    assert not session.run(_variable('%s/%s' % (layer, kind))).any(), layer
            # The encoder itself is randomly initialised (He), not zero.
            assert session.run(_variable('conv1_1/filter')).std() > 0.01
            value = session.run(logits, {images: _images((2, 64, 64, 3))})
    assert np.array_equal(value, np.zeros_like(value))


def test_skip_inputs_are_scaled_as_in_the_at_once_model():
    """score_pool4 sees pool4 x 0.01 and score_pool3 sees pool3 x 0.0001 (fcn8s.md)."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        images = tf1.placeholder(tf.uint8, [1, 64, 64, 3])
        _, end_points = _fcn8s(images)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            values = {}
            for layer in ('score_pool4', 'score_pool3'):
                for kind, shape in (('weights', [1, 1, 8, NUM_CLASSES]), ('biases', [NUM_CLASSES])):
                    values[layer, kind] = rng.normal(size=shape).astype(np.float32)
                    _variable('%s/%s' % (layer, kind)).load(values[layer, kind], session)
            out = session.run(end_points, {images: _images((1, 64, 64, 3))})
    for layer, pool, scale in (('score_pool4', 'pool4', 0.01), ('score_pool3', 'pool3', 1e-4)):
        expected = (np.einsum('bhwi,io->bhwo', out[pool] * scale, values[layer, 'weights'][0, 0])
                    + values[layer, 'biases'])
        np.testing.assert_allclose(out[layer], expected, rtol=1e-4, atol=1e-6, err_msg=layer)


def test_decoder_sums_the_three_score_maps_and_upsamples_each_class_alone():
    """With constant score maps (biases only) the logits' interior is their per-class sum."""
    b_fr = np.array([1.0, -2.0, 0.5], np.float32)
    b_pool4 = np.array([0.25, 0.0, -1.0], np.float32)
    b_pool3 = np.array([0.0, 3.0, 0.125], np.float32)
    with tf.Graph().as_default():
        images = tf1.placeholder(tf.uint8, [1, 128, 128, 3])
        logits, _ = _fcn8s(images)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            for layer, bias in (('score_fr', b_fr), ('score_pool4', b_pool4),
                                ('score_pool3', b_pool3)):
                _variable(layer + '/biases').load(bias, session)
            value = session.run(logits, {images: _images((1, 128, 128, 3))})
    # Borders lose kernel taps; 48..80 is clear of them at every scale (1/16, 1/8, 1).
    interior = value[0, 48:80, 48:80]
    np.testing.assert_allclose(interior, np.broadcast_to(b_fr + b_pool4 + b_pool3, interior.shape),
                               atol=1e-5)


# ---------------------------------------------------------------------------- bilinear kernel

@pytest.mark.parametrize('profile', [PROFILE_3, PROFILE_4, PROFILE_16], ids=['k3', 'k4', 'k16'])
@pytest.mark.parametrize('channels', [1, 3])
def test_bilinear_kernel_matches_the_formula_on_the_diagonal(profile, channels):
    size = len(profile)
    kernel = fcn8vgg16.bilinear_kernel(size, channels)
    assert kernel.shape == (size, size, channels, channels)
    assert kernel.dtype == np.float32
    np.testing.assert_allclose(kernel, _diagonal_kernel(profile, channels), atol=1e-7)


def test_bilinear_kernel_spot_values():
    kernel4 = fcn8vgg16.bilinear_kernel(4, 2)
    assert kernel4[1, 2, 1, 1] == pytest.approx(0.5625)   # 3/4 * 3/4
    assert kernel4[0, 3, 0, 0] == pytest.approx(0.0625)   # 1/4 * 1/4
    assert kernel4[1, 2, 0, 1] == 0 and kernel4[1, 2, 1, 0] == 0
    kernel16 = fcn8vgg16.bilinear_kernel(16, 2)
    assert kernel16[7, 8, 0, 0] == pytest.approx(225 / 256)  # 15/16 * 15/16
    assert kernel16[0, 15, 1, 1] == pytest.approx(1 / 256)
    assert kernel16[:, :, 0, 0].sum() == pytest.approx(64)   # factor ** 2: stride-8 taps sum to 1


@pytest.mark.parametrize('factor', [2, 8])
def test_transposed_conv_with_bilinear_kernel_interpolates(factor):
    """Channel 0 constant -> the same constant; channel 1 a ramp -> the half-pixel bilinear ramp
    (no shift); neither leaks into the other."""
    height, width = 4, 6
    inputs = np.zeros((1, height, width, 2), np.float32)
    inputs[..., 0] = 5.0
    inputs[..., 1] = 3.0 * np.arange(width)
    with tf.Graph().as_default():
        outputs = tf.nn.conv2d_transpose(
            tf.constant(inputs), fcn8vgg16.bilinear_kernel(2 * factor, 2),
            [1, height * factor, width * factor, 2], factor, 'SAME')
        with tf1.Session() as session:
            value = session.run(outputs)[0]
    # The outermost `factor` output pixels lack a kernel tap; look inside them.
    interior = value[factor:(height - 1) * factor, factor:(width - 1) * factor]
    np.testing.assert_allclose(interior[..., 0], 5.0, atol=1e-5)
    columns = np.arange(factor, (width - 1) * factor)
    ramp = 3.0 * ((columns + 0.5) / factor - 0.5)   # output column x sits at input (x + .5)/f - .5
    np.testing.assert_allclose(interior[..., 1], np.broadcast_to(ramp, interior.shape[:2]),
                               atol=1e-5)


# ------------------------------------------------------------------ preprocessing and outputs

def test_preprocess_swaps_to_bgr_and_subtracts_the_imagenet_mean():
    # The mean in BGR order expected by both pretrained weight files (pretrained_vgg16.md).
    blue, green, red = 103.939, 116.779, 123.68
    pixels = np.array([[[[10, 200, 255], [0, 0, 0]]]], np.uint8)  # RGB
    with tf.Graph().as_default(), tf1.Session() as session:
        out = session.run(fcn8vgg16.preprocess(tf.constant(pixels)))
    expected = [[[[255 - blue, 200 - green, 10 - red], [-blue, -green, -red]]]]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_predictions_are_the_argmax_as_uint8_named_output():
    logits = np.array([[[[0.1, 3.0, -1.0, 2.0], [5.0, 4.0, 4.5, -9.0]],
                        [[-1.0, -2.0, -0.5, -3.0], [0.0, 0.0, 0.0, 7.0]]]], np.float32)
    with tf.Graph().as_default() as graph:
        predictions = fcn8vgg16.predictions(tf.constant(logits))
        assert predictions.name == fcn8vgg16.OUTPUT_TENSOR
        assert graph.get_tensor_by_name('predictions:0') is predictions
        with tf1.Session() as session:
            value = session.run(predictions)
    assert value.dtype == np.uint8
    np.testing.assert_array_equal(value, [[[1, 0], [2, 3]]])


def test_interface_tensors_resolve_by_name():
    with tf.Graph().as_default() as graph:
        images = tf1.placeholder(tf.uint8, [None, None, None, 3], name=fcn8vgg16.INPUT_NAME)
        logits, _ = _fcn8s(images)
        predictions = fcn8vgg16.predictions(logits)
        assert graph.get_tensor_by_name(fcn8vgg16.INPUT_TENSOR) is images
        assert graph.get_tensor_by_name(fcn8vgg16.LOGITS_TENSOR) is logits
        assert graph.get_tensor_by_name(fcn8vgg16.OUTPUT_TENSOR) is predictions
        keep_prob = graph.get_tensor_by_name(fcn8vgg16.KEEP_PROB_TENSOR)
        assert keep_prob.dtype == tf.float32 and keep_prob.shape.as_list() == []
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            assert session.run(fcn8vgg16.KEEP_PROB_TENSOR) == 1.0
            out = session.run(fcn8vgg16.OUTPUT_TENSOR,
                              {fcn8vgg16.INPUT_TENSOR: _images((2, 32, 64, 3))})
    assert out.shape == (2, 32, 64) and out.dtype == np.uint8


def test_keep_prob_defaults_to_no_dropout_and_feeding_it_drops():
    with tf.Graph().as_default() as graph:
        tf1.set_random_seed(3)
        images = tf1.placeholder(tf.uint8, [1, 64, 64, 3])
        _, end_points = _fcn8s(images)
        keep_prob = graph.get_tensor_by_name(fcn8vgg16.KEEP_PROB_TENSOR)
        feed = {images: _images((1, 64, 64, 3))}
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            first = session.run(end_points['fc6'], feed)
            second = session.run(end_points['fc6'], feed)
            dropped = session.run(end_points['fc6'], {**feed, keep_prob: 0.5})
    assert first.any()
    np.testing.assert_array_equal(first, second)
    kept = dropped != 0
    assert (first[~kept] != 0).any()  # some activations were dropped ...
    np.testing.assert_allclose(dropped[kept], 2 * first[kept], rtol=1e-5)  # ... the rest / keep


# ------------------------------------------------------------------------------------- losses

def _numpy_xent(logits, labels):
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_softmax, labels[..., None].astype(np.int64), -1)[..., 0]


def _loss(logits, labels, class_weights=None, ignore_id=255):
    with tf.Graph().as_default():
        loss = fcn8vgg16.segmentation_loss(tf.constant(logits), tf.constant(labels), ignore_id,
                                           class_weights)
        with tf1.Session() as session:
            return session.run(loss)


def test_segmentation_loss_by_hand():
    # pixel 0: logits (0, 0), label 1 -> ln 2; pixel 1: logits (0, ln 3), label 0 -> ln 4;
    # pixel 2 is ignored whatever its logits.
    logits = np.array([[[[0.0, 0.0], [0.0, np.log(3.0)], [50.0, -50.0]]]], np.float32)
    labels = np.array([[[1, 0, 255]]], np.uint8)
    assert _loss(logits, labels) == pytest.approx(1.5 * np.log(2), rel=1e-5)
    # Class weights (2, 0.5): (0.5 ln 2 + 2 ln 4) / (0.5 + 2) = 1.8 ln 2.
    assert _loss(logits, labels, [2.0, 0.5]) == pytest.approx(1.8 * np.log(2), rel=1e-5)


def test_segmentation_loss_matches_numpy_and_ignores_255():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 8, 8, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 4, (2, 8, 8)).astype(np.uint8)
    ignored = rng.random((2, 8, 8)) < 0.3
    labels[ignored] = 255
    valid = ~ignored
    expected = _numpy_xent(logits[valid], labels[valid]).mean()
    loss = _loss(logits, labels)
    assert loss == pytest.approx(expected, rel=1e-5)
    changed = logits.copy()
    changed[ignored] = rng.normal(size=(ignored.sum(), 4)) * 100
    assert _loss(changed, labels) == pytest.approx(loss, rel=1e-6)
    changed[valid] += 1.0 * (np.arange(4) == 0)  # sanity: valid pixels do move the loss
    assert _loss(changed, labels) != pytest.approx(loss, rel=1e-3)

    weights = np.array([0.5, 2.0, 1.0, 4.0])
    per_pixel = weights[labels[valid]]
    weighted = (per_pixel * _numpy_xent(logits[valid], labels[valid])).sum() / per_pixel.sum()
    assert _loss(logits, labels, weights.tolist()) == pytest.approx(weighted, rel=1e-5)


def test_segmentation_loss_of_an_all_ignored_batch_is_zero():
    logits = np.ones((1, 2, 2, 3), np.float32)
    labels = np.full((1, 2, 2), 255, np.uint8)
    assert _loss(logits, labels) == 0.0


@pytest.mark.parametrize('train_upsampling', [False, True])
def test_weight_decay_covers_trainable_kernels_only(train_upsampling):
    weight_decay = 5e-4
    kernels = ['conv%d_1/filter' % block for block, _, _ in TINY_VGG16] + [
        'fc6/weights', 'fc7/weights', 'score_fr/weights', 'score_pool4/weights',
        'score_pool3/weights']
    if train_upsampling:
        kernels += ['upscore2/weights', 'upscore_pool4/weights', 'upscore8/weights']
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        _fcn8s(tf1.placeholder(tf.uint8, [1, 32, 32, 3]), train_upsampling=train_upsampling)
        decay = fcn8vgg16.weight_decay_loss(weight_decay)
        with tf1.Session() as session:
            values = {}
            for variable in tf1.global_variables():  # biases and frozen kernels non-zero too
                values[variable.op.name] = rng.normal(size=variable.shape).astype(np.float32)
                variable.load(values[variable.op.name], session)
            result = session.run(decay)
    expected = weight_decay * sum((values[name].astype(np.float64) ** 2).sum() / 2
                                  for name in kernels)
    assert result == pytest.approx(expected, rel=1e-5)


def test_weight_decay_zero_is_zero():
    with tf.Graph().as_default():
        _fcn8s(tf1.placeholder(tf.uint8, [1, 32, 32, 3]))
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            assert session.run(fcn8vgg16.weight_decay_loss(0.0)) == 0.0
            assert session.run(fcn8vgg16.weight_decay_loss(1.0)) > 0.0
