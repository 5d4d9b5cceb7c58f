"""FCN-8s with a VGG16 encoder, "at-once" variant (Shelhamer, Long, Darrell, arXiv 1605.06211).

Graph building only: `fcn8s()` maps uint8 images to `(logits, end_points)`; the loss and
weight decay are separate functions. Variable names match the pretrained VGG16 weights
(`conv3_2/filter`, `fc6/weights`, ...) so that vgg_weights.py can load them by name.
"""
import zlib

import numpy as np

from roadseg import fc_products

# The graph's interface, used by every action, export and shell script.
INPUT_NAME = 'image_input'          # uint8 [batch, h, w, 3], RGB
KEEP_PROB_NAME = 'keep_prob'        # float32 scalar, defaults to 1.0 (no dropout)
LOGITS_NAME = 'logits'              # float32 [batch, h, w, classes]
OUTPUT_NAME = 'predictions'         # uint8 [batch, h, w], argmax class ids
INPUT_TENSOR = INPUT_NAME + ':0'
KEEP_PROB_TENSOR = KEEP_PROB_NAME + ':0'
LOGITS_TENSOR = LOGITS_NAME + ':0'
OUTPUT_TENSOR = OUTPUT_NAME + ':0'
SAVED_MODEL_TAG = 'serve'           # tf.saved_model.SERVING
SIGNATURE_KEY = 'serving_default'   # tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY

# VGG16: (block, filters, convs). Each block ends in a 2x2 stride-2 max-pool.
VGG16 = ((1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3))
FC_CHANNELS = 4096
FC6_KERNEL = 7  # the ImageNet fc6 weights reshaped to 7x7x512x4096, not cropped
MATMUL_LAYERS = ('fc6', 'fc7')  # convolutions computed as matrix products (fc_products)
STRIDE = 32     # input sides must be multiples of this

# Caffe-mode preprocessing that both pretrained weight files expect: BGR, ImageNet mean
# subtracted, no scaling (Keras vgg16.preprocess_input).
BGR_MEAN = (103.939, 116.779, 123.68)


def bilinear_kernel(size, channels):
    """A [size, size, channels, channels] kernel that upsamples each channel bilinearly.

    Placed on the diagonal: class c upsamples only class c. From the reference
    surgery.upsample_filt (fcn.berkeleyvision.org).
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = np.arange(size)
    profile = 1 - np.abs(grid - center) / factor
    kernel2d = np.outer(profile, profile).astype(np.float32)
    kernel = np.zeros((size, size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = kernel2d[:, :, None]
    return kernel


def preprocess(images):
    """uint8 RGB [batch, h, w, 3] -> float32 BGR with the ImageNet mean removed."""
    import tensorflow as tf
    bgr = tf.reverse(tf.cast(images, tf.float32), axis=[-1])
    return bgr - tf.constant(BGR_MEAN, tf.float32)


def _seed(name):
    """An op seed from the layer's name, so that with a graph seed set the initial weights do
    not depend on how many ops (the input pipeline, say) were built before the network."""
    return zlib.crc32(name.encode()) % 2**31


def _conv(inputs, name, kernel_size, filters, relu=True, zero_init=False,
          kernel_name='filter', for_training=False):
    """SAME convolution with a bias; He initialisation unless zero_init (score layers). fc6
    and fc7 (MATMUL_LAYERS) are computed as matrix products (fc_products); for_training: fc6
    in row bands and the input gradients of fc_products.input_gradient."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    in_channels = inputs.shape[-1]
    initializer = (tf1.zeros_initializer() if zero_init else
                   tf1.variance_scaling_initializer(scale=2.0, mode='fan_in',
                                                    distribution='truncated_normal',
                                                    seed=_seed(name)))
    with tf1.variable_scope(name):
        kernel = tf1.get_variable(kernel_name, [kernel_size, kernel_size, in_channels, filters],
                                  initializer=initializer)
        biases = tf1.get_variable('biases', [filters], initializer=tf1.zeros_initializer())
        if name in MATMUL_LAYERS:
            return fc_products.conv_as_matmul(inputs, kernel, biases, relu, for_training)
        outputs = tf.nn.bias_add(tf.nn.conv2d(inputs, kernel, 1, 'SAME'), biases)
        return tf.nn.relu(outputs) if relu else outputs


def _upsample(inputs, name, factor, like, num_classes, trainable):
    """Transposed convolution, kernel 2 * factor, stride factor, no bias, bilinear start.

    The output takes the spatial size of `like`, so any input that is a multiple of 32 works.
    """
    import tensorflow as tf
    tf1 = tf.compat.v1
    size = 2 * factor
    with tf1.variable_scope(name):
        kernel = tf1.get_variable(
            'weights', initializer=bilinear_kernel(size, num_classes), trainable=trainable)
        like_shape = tf.shape(like)
        output_shape = tf.stack([like_shape[0], like_shape[1], like_shape[2], num_classes])
        outputs = tf.nn.conv2d_transpose(inputs, kernel, output_shape, factor, 'SAME')
        return tf.ensure_shape(outputs, like.shape[:3].concatenate([num_classes]))


def vgg16_encoder(images, keep_prob, encoder=VGG16, fc_channels=FC_CHANNELS,
                  for_training=False):
    """Preprocessed images -> end points pool1..pool5, fc6, fc7 (names as in VGG16)."""
    import tensorflow as tf
    end_points = {}
    net = images
    for block, filters, convs in encoder:
        for conv in range(1, convs + 1):
            net = _conv(net, 'conv%d_%d' % (block, conv), 3, filters)
        net = tf.nn.max_pool2d(net, 2, 2, 'SAME', name='pool%d' % block)
        end_points['pool%d' % block] = net  # stride 2 ** block
    net = _conv(net, 'fc6', FC6_KERNEL, fc_channels, kernel_name='weights',
                for_training=for_training)
    net = end_points['fc6'] = tf.nn.dropout(net, rate=1 - keep_prob, seed=_seed('drop6'))
    net = _conv(net, 'fc7', 1, fc_channels, kernel_name='weights', for_training=for_training)
    end_points['fc7'] = tf.nn.dropout(net, rate=1 - keep_prob, seed=_seed('drop7'))
    return end_points


def fcn8s(images, num_classes, keep_prob=None, encoder=VGG16, fc_channels=FC_CHANNELS,
          train_upsampling=False, for_training=False):
    """FCN-8s at-once: uint8 RGB [batch, h, w, 3] -> (logits [batch, h, w, classes], end_points).

    h and w must be multiples of 32. keep_prob defaults to a placeholder named
    KEEP_PROB_NAME that is 1.0 unless fed. for_training: fc6 as one product per kernel row,
    skipping the zero padding, and fc6's and fc7's input gradients as the CPU's engine runs them
    fastest (fc_products). Exports keep fc6's one product, which their converters expect; the
    loader puts a loaded graph's fc6 product in row bands.
    """
    import tensorflow as tf
    tf1 = tf.compat.v1
    if keep_prob is None:
        keep_prob = tf1.placeholder_with_default(1.0, [], name=KEEP_PROB_NAME)
    end_points = vgg16_encoder(preprocess(images), keep_prob, encoder, fc_channels,
                               for_training)
    pool3, pool4 = end_points['pool3'], end_points['pool4']

    kw = dict(kernel_name='weights', relu=False, zero_init=True)
    score_fr = _conv(end_points['fc7'], 'score_fr', 1, num_classes, **kw)   # 1/32
    upscore2 = _upsample(score_fr, 'upscore2', 2, pool4, num_classes,
                         train_upsampling)                                   # 1/32 -> 1/16
    # The 0.01 and 0.0001 skip scalings let the at-once model train in one stage.
    score_pool4 = _conv(pool4 * 0.01, 'score_pool4', 1, num_classes, **kw)
    upscore_pool4 = _upsample(upscore2 + score_pool4, 'upscore_pool4', 2, pool3, num_classes,
                              train_upsampling)                              # 1/16 -> 1/8
    score_pool3 = _conv(pool3 * 0.0001, 'score_pool3', 1, num_classes, **kw)
    upscore8 = _upsample(upscore_pool4 + score_pool3, 'upscore8', 8, images, num_classes,
                         train_upsampling)                                   # 1/8 -> 1
    logits = tf.identity(upscore8, name=LOGITS_NAME)  # [batch, h, w, classes]
    end_points.update(score_fr=score_fr, upscore2=upscore2, score_pool4=score_pool4,
                      upscore_pool4=upscore_pool4, score_pool3=score_pool3)
    return logits, end_points


def predictions(logits):
    """Argmax class ids, uint8 [batch, h, w], named OUTPUT_NAME."""
    import tensorflow as tf
    return tf.cast(tf.argmax(logits, axis=-1), tf.uint8, name=OUTPUT_NAME)


def inference_graph(num_classes, encoder=VGG16, fc_channels=FC_CHANNELS):
    """The inference-only graph in the default graph: a uint8 placeholder named INPUT_NAME in,
    logits and predictions out, no dropout. Returns (images, logits, predictions)."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    images = tf1.placeholder(tf.uint8, [None, None, None, 3], name=INPUT_NAME)
    logits, _ = fcn8s(images, num_classes, keep_prob=1.0, encoder=encoder,
                      fc_channels=fc_channels)
    return images, logits, predictions(logits)


def segmentation_loss(logits, labels, ignore_id, class_weights=None):
    """Mean per-pixel softmax cross-entropy over the pixels whose label is not ignore_id.

    class_weights: optional float [classes]; the mean is then weighted by the pixels' class
    weights. Computed in float32 whatever the logits' precision.
    """
    import tensorflow as tf
    safe_labels, weights = pixel_weights(labels, ignore_id, class_weights)
    xent = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe_labels, logits=tf.cast(logits, tf.float32))
    return tf.reduce_sum(xent * weights) / tf.maximum(tf.reduce_sum(weights), 1e-6)


def pixel_weights(labels, ignore_id, class_weights=None):
    """(labels with ignore_id made 0, float32 weight of each pixel in the loss): 0 where the
    label is ignore_id, else 1 or its class's weight."""
    import tensorflow as tf
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_id)
    weights = tf.cast(valid, tf.float32)
    safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
    if class_weights is not None:
        weights *= tf.gather(tf.constant(class_weights, tf.float32), safe_labels)
    return safe_labels, weights


def weight_decay_loss(weight_decay):
    """weight_decay * sum(w^2) / 2 over the trainable kernels (not the biases)."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    kernels = [v for v in tf1.trainable_variables()
               if v.op.name.rsplit('/', 1)[-1] in ('filter', 'weights')]
    if not kernels or not weight_decay:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])
