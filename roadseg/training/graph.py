"""The training graph, one builder for one device or several: one device is one replica.

Every global batch, fed or from tf.data, is cut in the graph into one slice per replica; each
replica computes its slice's share of the global batch's loss, and the optimizer sums the
replicas' gradients into one Adam step. On several devices of one machine the replicas run
under tf.compat.v1.distribute.MirroredStrategy (the v1 optimizers all-reduce through
merge_call), on one under the default strategy. Variable names are the same either way, so
checkpoints move between one device and several.
"""
import numpy as np
import tensorflow as tf

import fcn8vgg16
import helper

tf1 = tf.compat.v1

LABELS_NAME = 'labels'  # the fed or iterated label batch
# The val images shown in TensorBoard at every validation, the same ones each time.
VAL_PICTURES = 3


def confusion_matrix(labels, predictions, num_classes, ignore_id):
    """int64 [classes, classes] confusion (rows: truth, columns: prediction), ignored pixels out."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
    valid = tf.not_equal(labels, ignore_id)
    return tf.math.confusion_matrix(tf.boolean_mask(labels, valid),
                                    tf.boolean_mask(predictions, valid),
                                    num_classes=num_classes, dtype=tf.int64)


def image_summary(images, predictions, labels, colors, max_outputs=2,
                  tag='input_prediction_truth'):
    """Input, coloured prediction and coloured ground truth side by side."""
    table = tf.constant(helper.colorize(np.arange(256, dtype=np.uint8), colors))
    side_by_side = tf.concat(
        [images, tf.gather(table, tf.cast(predictions, tf.int32)),
         tf.gather(table, tf.cast(labels, tf.int32))], axis=2)
    return tf1.summary.image(tag, side_by_side, max_outputs=max_outputs)


def scalar_summaries(loss, xent, learning_rate, confusion):
    """The merged scalar summaries of a training step."""
    return tf1.summary.merge([
        tf1.summary.scalar('loss', loss),
        tf1.summary.scalar('cross_entropy', xent),
        tf1.summary.scalar('learning_rate', learning_rate),
        tf1.summary.scalar('batch_mean_iou', tf.numpy_function(
            lambda c: np.float32(helper.mean_iou(c)), [confusion], tf.float32))])


def loss_scaled(optimizer):
    """optimizer with dynamic loss scaling, for --precision fp16.

    float16 gradients underflow: the loss is scaled up, the gradients back down, and steps whose
    scaled gradients overflow are skipped (Micikevicius et al., arXiv 1710.03740). The scale's
    state is made a local variable, kept out of checkpoints, so that checkpoints are alike in
    every precision; a resumed run starts again from the initial scale, which adapts in a few
    steps.
    """
    global_variables = tf1.get_collection_ref(tf1.GraphKeys.GLOBAL_VARIABLES)
    count = len(global_variables)
    scaled = tf1.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, 'dynamic')
    for variable in global_variables[count:]:  # the scale and its count of good steps
        tf1.add_to_collection(tf1.GraphKeys.LOCAL_VARIABLES, variable)
    del global_variables[count:]
    return scaled


def replica_devices(plan):
    """The devices of a DevicePlan to replicate the model on, or [] for the session's one.

    cpu_replicas N > 1: N virtual CPU devices (plan.session_config() creates them). gpu N > 1:
    as many of N GPUs as exist (devices.session_config warns when there are fewer).
    """
    if plan.cpu_replicas > 1:
        return ['/cpu:%d' % index for index in range(plan.cpu_replicas)]
    gpus = min(plan.gpu, len(tf.config.list_physical_devices('GPU')))
    return ['/gpu:%d' % index for index in range(gpus)] if gpus > 1 else []


def _split_sizes(batch_size, parts):
    """Sizes of `parts` consecutive slices of a batch: equal, or (an epoch's short last batch)
    the first ones one image larger."""
    base, extra = batch_size // parts, batch_size % parts
    return base + tf.cast(tf.range(parts) < extra, tf.int32)


def _pad_empty(images, labels, ignore_id):
    """An empty slice (a batch shorter than the replicas) as one black image whose pixels are
    all ignored: it adds nothing to the loss or the gradients, and the network never sees an
    empty batch, which CPU kernels reject."""
    missing = tf.maximum(1 - tf.shape(images)[0], 0)
    return (tf.pad(images, [[0, missing], [0, 0], [0, 0], [0, 0]]),
            tf.pad(labels, [[0, missing], [0, 0], [0, 0]], constant_values=ignore_id))


def pixel_weight(labels, ignore_id, class_weights):
    """The sum of the loss weights of a batch's pixels: segmentation_loss's denominator."""
    return tf.reduce_sum(fcn8vgg16.pixel_weights(labels, ignore_id, class_weights)[1])


def _replica_loss(images, labels, keep_prob, total_weight, first, network, recipe, label_set,
                  class_weights):
    """One replica's network on its slice; returns (xent share, loss share, predictions).

    The shares add up over the replicas to exactly the loss of the whole batch: the slice's
    weighted cross-entropy sum over the whole batch's weight, and the weight decay on the first
    replica only (the others' copies of the kernels are named .../replica_N).
    """
    logits, _ = fcn8vgg16.fcn8s(images, label_set.num_classes, keep_prob,
                                encoder=network.encoder, fc_channels=network.fc_channels,
                                train_upsampling=network.train_upsampling, for_training=True)
    local_weight = pixel_weight(labels, label_set.ignore_id, class_weights)
    xent = fcn8vgg16.segmentation_loss(logits, labels, label_set.ignore_id,
                                       class_weights) * local_weight / total_weight
    loss = xent + fcn8vgg16.weight_decay_loss(recipe.weight_decay) if first else xent
    return xent, loss, fcn8vgg16.predictions(logits)


def _accumulated_step(images, labels, keep_prob, total_weight, first, network, recipe, label_set,
                      class_weights, optimizer, global_step):
    """A replica's slice cut into recipe.accumulate micro-batches that run one after another
    (each starts once the previous one's gradients exist, so only one micro-batch's
    activations are alive), their gradients summed into one update. Each micro-batch's loss is
    its share of the whole batch's (over total_weight), and the weight decay is added once: the
    sum is the gradient of one batch of them all. Returns (xent, loss, predictions, train_op).
    """
    parts = recipe.accumulate
    sizes = _split_sizes(tf.shape(images)[0], parts)
    image_parts, label_parts = tf.split(images, sizes, num=parts), tf.split(labels, sizes,
                                                                            num=parts)
    xents, losses, predictions, summed, previous = [], [], [], None, []
    for part in range(parts):
        with tf.control_dependencies(previous):
            part_images, part_labels = (tf.identity(tensor) for tensor in _pad_empty(
                image_parts[part], label_parts[part], label_set.ignore_id))
        with tf1.variable_scope(tf1.get_variable_scope(), reuse=tf1.AUTO_REUSE):
            xent, loss, part_predictions = _replica_loss(
                part_images, part_labels, keep_prob, total_weight, first and part == parts - 1,
                network, recipe, label_set, class_weights)
        gradients = optimizer.compute_gradients(loss)
        summed = gradients if summed is None else [
            (total + gradient, variable) for (total, _), (gradient, variable)
            in zip(summed, gradients)]
        previous = [gradient for gradient, _ in gradients]
        xents.append(xent)
        losses.append(loss)
        predictions.append(part_predictions[:tf.shape(image_parts[part])[0]])
    train_op = optimizer.apply_gradients(summed, global_step)
    return tf.add_n(xents), tf.add_n(losses), tf.concat(predictions, 0), train_op


def learning_rate(recipe, global_step, steps_per_epoch):
    """The rate at global_step: recipe.lr_schedule over the whole training (epochs x
    steps_per_epoch steps), so that a resumed run goes on along the same curve, times a
    linear warm-up over the first recipe.warmup_steps steps."""
    base, end = recipe.learning_rate, recipe.end_learning_rate
    total = float(max(recipe.epochs * steps_per_epoch, 1))
    step = tf.cast(global_step, tf.float32)
    done = tf.minimum(step, total) / total  # the share of training behind us
    if recipe.lr_schedule == 'poly':
        rate = (base - end) * (1.0 - done) ** recipe.lr_power + end
    elif recipe.lr_schedule == 'cosine':
        rate = end + (base - end) * 0.5 * (1.0 + tf.cos(np.pi * done))
    elif recipe.lr_schedule == 'step':
        # piecewise_constant changes value past a boundary: from the epoch's first step on
        boundaries = [epoch * steps_per_epoch - 1 for epoch in sorted(recipe.lr_step_epochs)]
        rate = tf1.train.piecewise_constant(
            tf.cast(global_step, tf.int64), [np.int64(b) for b in boundaries],
            [base * 0.1 ** index for index in range(len(boundaries) + 1)])
    else:
        rate = tf.constant(base)
    if recipe.warmup_steps:
        rate *= tf.minimum(1.0, (step + 1.0) / recipe.warmup_steps)
    return tf.cast(rate, tf.float32, name='learning_rate')


def _optimizer(recipe, wrap_optimizer, global_step, steps_per_epoch):
    rate = learning_rate(recipe, global_step, steps_per_epoch)
    if recipe.optimizer == 'sgd':
        optimizer = tf1.train.MomentumOptimizer(rate, recipe.momentum)
    else:
        optimizer = tf1.train.AdamOptimizer(rate)
    if recipe.loss_scaling:
        optimizer = loss_scaled(optimizer)
    return rate, wrap_optimizer(optimizer) if wrap_optimizer else optimizer


def build_train_graph(images, labels, network, recipe, label_set, class_weights=None,
                      devices=(), wrap_optimizer=None, steps_per_epoch=1):
    """The training graph on the batch `images`, `labels` (fed instead when a feed names
    them); returns a dict of the tensors the step loop runs.

    devices: replicate over these (replica_devices), else one replica on the session's device.
    wrap_optimizer(adam) returns the optimizer to use instead (a cluster's synchronous one).
    steps_per_epoch: what the learning-rate schedule spreads its curve over, with the epochs.
    """
    strategy = (tf1.distribute.MirroredStrategy(devices=list(devices)) if devices
                else tf.distribute.get_strategy())
    parts = max(len(devices), 1)
    with strategy.scope():
        images = tf1.placeholder_with_default(images, [None, None, None, 3],
                                              name=fcn8vgg16.INPUT_NAME)
        labels = tf1.placeholder_with_default(labels, [None, None, None], name=LABELS_NAME)
        keep_prob = tf1.placeholder_with_default(1.0, [], name=fcn8vgg16.KEEP_PROB_NAME)
        global_step = tf1.train.get_or_create_global_step()
        rate, optimizer = _optimizer(recipe, wrap_optimizer, global_step, steps_per_epoch)
        sizes = _split_sizes(tf.shape(images)[0], parts)
        image_slices = tf.split(images, sizes, num=parts)
        label_slices = tf.split(labels, sizes, num=parts)
        total_weight = tf.maximum(pixel_weight(labels, label_set.ignore_id, class_weights), 1e-6)

        def replica_step():
            index = tf.get_static_value(
                tf.distribute.get_replica_context().replica_id_in_sync_group)
            images, labels = _pad_empty(image_slices[index], label_slices[index],
                                        label_set.ignore_id)
            if recipe.accumulate > 1:
                xent, loss, predictions, train_op = _accumulated_step(
                    images, labels, keep_prob, total_weight, index == 0, network, recipe,
                    label_set, class_weights, optimizer, global_step)
            else:
                xent, loss, predictions = _replica_loss(images, labels, keep_prob, total_weight,
                                                        index == 0, network, recipe, label_set,
                                                        class_weights)
                train_op = optimizer.minimize(loss, global_step)
            return dict(xent=xent, loss=loss,
                        predictions=predictions[:tf.shape(image_slices[index])[0]],
                        train_op=train_op,
                        confusion=confusion_matrix(labels, predictions, label_set.num_classes,
                                                   label_set.ignore_id))

        replicas = strategy.extended.call_for_each_replica(replica_step)
        xent, loss, confusion = (strategy.reduce(tf.distribute.ReduceOp.SUM, replicas[key],
                                                 axis=None)
                                 for key in ('xent', 'loss', 'confusion'))
        predictions = tf.concat(strategy.experimental_local_results(replicas['predictions']), 0)
        train_op = strategy.group(replicas['train_op'])
    return dict(images=images, labels=labels, keep_prob=keep_prob, loss=loss,
                batch_size=tf.shape(images)[0], train_op=train_op, global_step=global_step,
                confusion=confusion, optimizer=optimizer,
                scalars=scalar_summaries(loss, xent, rate, confusion),
                image_summary=image_summary(images, predictions, labels, label_set.colors),
                val_image_summary=image_summary(images, predictions, labels, label_set.colors,
                                                VAL_PICTURES, 'val/input_prediction_truth'),
                weights_finite=all_finite(tf1.global_variables()))


def all_finite(variables):
    """A bool tensor: every float variable (the weights and Adam's moments) is finite."""
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(variable))
                                   for variable in variables
                                   if variable.dtype.base_dtype.is_floating]))
