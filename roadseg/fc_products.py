"""fc6 and fc7 of FCN-8s as matrix products: the same SAME convolutions, computed the way a
CPU runs them fastest on the small 1/32 map they see.

fcn8vgg16.py calls conv_as_matmul for both layers (the training graph's switch is its
`for_training` argument); the TFLite and ONNX exports turn the products back into convolutions,
and the model loader puts fc6's one product of a loaded graph in row bands (row_band_product;
deploy/graph_surgery).
"""
from roadseg import tf_runtime


def conv_as_matmul(inputs, kernel, biases, relu, for_training=False):
    """The same SAME convolution as one matrix product over the k x k patches of the input.

    For fc6 and fc7, whose maps are small (8 x 16 at 256 x 512) and kernels large, oneDNN's
    convolution runs far below the machine's matrix-multiply rate, and with a variable kernel
    (training, a SavedModel) it also re-lays out fc6's 411 MB of weights at every run; its
    matrix product does neither. The patches are built from k + k slices of the padded input,
    ordered (row, column, channel) as the kernel's [k, k, in, out] flattens. for_training: a
    k x k kernel's product as k, one per kernel row (see _row_band_products), and the input
    gradients as input_gradient computes them.
    """
    import tensorflow as tf
    size, in_channels, filters = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    static_shape = inputs.shape[:3].concatenate([filters])
    if size > 1 and for_training:
        outputs = tf.nn.bias_add(_row_band_products(_column_patches(inputs, size), kernel),
                                 biases)
        return tf.ensure_shape(tf.nn.relu(outputs) if relu else outputs, static_shape)
    shape = tf.shape(inputs)
    height, width = shape[1], shape[2]
    if size > 1:
        pad = size // 2
        padded = tf.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        columns = tf.concat([padded[:, :, dx:dx + width] for dx in range(size)], axis=-1)
        inputs = tf.concat([columns[:, dy:dy + height] for dy in range(size)], axis=-1)
    flat = tf.reshape(inputs, [-1, size * size * in_channels])
    weights = tf.reshape(kernel, [-1, filters])
    eigen_training = for_training and not tf_runtime.onednn_enabled()
    product = _product(flat, weights) if eigen_training else tf.matmul(flat, weights)
    outputs = tf.nn.bias_add(product, biases)
    if relu:
        outputs = tf.nn.relu(outputs)
    return tf.ensure_shape(tf.reshape(outputs, tf.stack([shape[0], height, width, filters])),
                           static_shape)


def _column_patches(inputs, size):
    """[batch, h, w, in] -> [batch, h, w, size * in]: each pixel's row of size SAME-padded
    neighbours, from size slices of the padded input."""
    import tensorflow as tf
    pad, width = size // 2, tf.shape(inputs)[2]
    padded = tf.pad(inputs, [[0, 0], [0, 0], [pad, pad], [0, 0]])
    return tf.concat([padded[:, :, dx:dx + width] for dx in range(size)], axis=-1)


def row_band_product(inputs, weights, size):
    """The product of an fc layer's k x k patches of inputs [batch, h, w, in] with its
    flattened weights [k * k * in, out], as conv_as_matmul(for_training=True) computes it, without
    its written-out gradient: [batch * h * w, out] rows, as the one product's. Shapes may be
    unknown but the kernel size: the loader puts fc6 of a frozen graph in row bands with it."""
    import tensorflow as tf
    filters = tf.shape(weights)[-1]
    columns = _column_patches(inputs, size)
    # unstack along the first axis shares the weights' buffer: no copy of fc6's weights.
    row_kernels = tf.unstack(tf.reshape(weights, tf.stack([size, -1, filters])), num=size)
    return tf.reshape(_band_sum(columns, row_kernels, size // 2), tf.stack([-1, filters]))


def _bands(height, pad):
    """(first input row, first output row, rows) of each kernel row's band."""
    import tensorflow as tf
    return [(tf.minimum(max(0, shift), height), tf.minimum(max(0, -shift), height),
             tf.maximum(height - abs(shift), 0)) for shift in range(-pad, pad + 1)]


def _band_sum(columns, row_kernels, pad):
    """[batch, h, w, out]: the sum over the kernel rows of each one's product with the column
    patches of its band of output rows."""
    import tensorflow as tf
    shape = tf.shape(columns)
    batch, height, width = shape[0], shape[1], shape[2]
    channels = columns.shape[-1] if columns.shape[-1] is not None else shape[3]
    filters = row_kernels[0].shape[-1]
    filters = filters if filters is not None else tf.shape(row_kernels[0])[-1]
    outputs = []
    for (first_in, first_out, rows), row_kernel in zip(_bands(height, pad), row_kernels):
        band = tf.reshape(columns[:, first_in:first_in + rows], tf.stack([-1, channels]))
        product = tf.reshape(tf.matmul(band, row_kernel),
                             tf.stack([batch, rows, width, filters]))
        outputs.append(tf.pad(product, [[0, 0], [first_out, height - first_out - rows],
                                        [0, 0], [0, 0]]))
    return tf.add_n(outputs)


def _row_band_products(columns, kernel):
    """[batch, h, w, k * in] column patches -> [batch, h, w, out]: the sum over the kernel's k
    rows of one product each, over only the output rows whose input row under that kernel row
    lies in the image, so that no product multiplies SAME's zero padding: on fc6's 8 x 16 map at
    256 x 512 they do 44 of the 56 row multiply-adds of one product over all patches.

    The gradient is written out: the input's by bands as well, the kernel's as one product over
    all patches, zeros included. Per band, the kernel's gradient would be k products that each
    write a k-th of fc6's 411 MB, then a copy of all of them into one tensor.
    """
    import tensorflow as tf
    size, filters = kernel.shape[0], kernel.shape[3]
    pad = size // 2

    @tf.custom_gradient
    def products(columns, kernel):
        shape = tf.shape(columns)
        batch, height, width = shape[0], shape[1], shape[2]
        # unstack along the first axis shares the kernel's buffer: no copy of fc6's weights.
        row_kernels = [tf.reshape(row, [-1, filters]) for row in tf.unstack(kernel)]

        def gradient(d_outputs):
            d_columns = []
            for (first_in, first_out, rows), row_kernel in zip(_bands(height, pad),
                                                               row_kernels):
                d_band = tf.reshape(d_outputs[:, first_out:first_out + rows], [-1, filters])
                d_product = tf.reshape(input_gradient(d_band, row_kernel),
                                       tf.stack([batch, rows, width, columns.shape[-1]]))
                d_columns.append(tf.pad(d_product, [[0, 0], [first_in, height - first_in - rows],
                                                    [0, 0], [0, 0]]))
            padded = tf.pad(columns, [[0, 0], [pad, pad], [0, 0], [0, 0]])
            patches = tf.concat([padded[:, dy:dy + height] for dy in range(size)], axis=-1)
            d_kernel = tf.matmul(tf.reshape(patches, [-1, size * columns.shape[-1]]),
                                 tf.reshape(d_outputs, [-1, filters]), transpose_a=True)
            return tf.add_n(d_columns), tf.reshape(d_kernel, kernel.shape)

        return _band_sum(columns, row_kernels, pad), gradient

    return products(columns, tf.convert_to_tensor(kernel))


def _product(inputs, weights):
    """inputs @ weights, whose input gradient input_gradient computes: for Eigen only, as with
    oneDNN it would be TensorFlow's own, and the custom gradient's IdentityN would keep grappler
    from fusing the product with its bias and ReLU."""
    import tensorflow as tf

    @tf.custom_gradient
    def product(inputs, weights):
        def gradient(d_outputs):
            return (input_gradient(d_outputs, weights),
                    tf.matmul(inputs, d_outputs, transpose_a=True))

        return tf.matmul(inputs, weights), gradient

    return product(inputs, weights)


def input_gradient(d_outputs, weights):
    """d_outputs @ weights^T, the gradient of a product's inputs [rows, in] from that of its
    outputs [rows, out], with weights [in, out].

    Eigen, which runs TensorFlow's products where oneDNN does not (AVX2-only CPUs), multiplies
    by the transpose of a large right operand at a third of its rate on fc6's and fc7's shapes
    (a few hundred rows, 4096 outputs): there it computes (weights @ d_outputs^T)^T, whose
    transpose is of the small result only. oneDNN runs the plain product as fast or faster. On
    a GPU the choice follows the CPU's engine: the other form costs one small transpose there.
    """
    import tensorflow as tf
    if tf_runtime.onednn_enabled():
        return tf.matmul(d_outputs, weights, transpose_b=True)
    return tf.transpose(tf.matmul(weights, d_outputs, transpose_b=True))
