"""Training: loss, optimiser, metrics, summaries, checkpoints, resume and the session loop."""
import contextlib
import functools
import os
import re
import signal
import threading
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import fcn8vgg16
import helper
from roadseg.model_dir import CONFIG_FILE, check_output_dir, write_model_dir, write_saved_model
from helper import UserError

tf1 = tf.compat.v1

CKPT_NAME = 'model.ckpt'


def confusion_matrix(labels, predictions, num_classes, ignore_id):
    """int64 [classes, classes] confusion (rows: truth, columns: prediction), ignored pixels out."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
    valid = tf.not_equal(labels, ignore_id)
    return tf.math.confusion_matrix(tf.boolean_mask(labels, valid),
                                    tf.boolean_mask(predictions, valid),
                                    num_classes=num_classes, dtype=tf.int64)


def class_weights(dataset, method):
    """Per-class loss weights from the training labels: None, inverse_freq or median_freq.

    inverse_freq: total / (classes * count_c), as sklearn's 'balanced'. median_freq (Eigen and
    Fergus, arXiv 1411.4734): median(freq) / freq_c, freq_c counted over the images holding c.
    Classes that never occur get weight 0.
    """
    if method == 'none':
        return None
    num_classes = dataset.label_set.num_classes
    counts = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for index in tqdm(range(len(dataset)), desc='Class frequencies', leave=False):
        label = dataset.label(index)
        per_class = np.bincount(label.ravel(), minlength=256)[:num_classes]
        counts += per_class
        image_pixels[per_class > 0] += label.size
    present = counts > 0
    weights = np.zeros(num_classes)
    if method == 'inverse_freq':
        weights[present] = counts.sum() / (present.sum() * counts[present])
    elif method == 'median_freq':
        freq = counts[present] / image_pixels[present]
        weights[present] = np.median(freq) / freq
    else:
        raise UserError('unknown --class_weights %r (none, inverse_freq, median_freq)' % method)
    return weights.tolist()


def _image_summary(images, predictions, labels, colors, max_outputs=2):
    """Input, coloured prediction and coloured ground truth side by side."""
    table = tf.constant(helper.colorize(np.arange(256, dtype=np.uint8), colors))
    side_by_side = tf.concat(
        [images, tf.gather(table, tf.cast(predictions, tf.int32)),
         tf.gather(table, tf.cast(labels, tf.int32))], axis=2)
    return tf1.summary.image('input_prediction_truth', side_by_side, max_outputs=max_outputs)


def scalar_summaries(loss, xent, learning_rate, confusion):
    """The merged scalar summaries of a training step."""
    return tf1.summary.merge([
        tf1.summary.scalar('loss', loss),
        tf1.summary.scalar('cross_entropy', xent),
        tf1.summary.scalar('learning_rate', learning_rate),
        tf1.summary.scalar('batch_mean_iou', tf.numpy_function(
            lambda c: np.float32(helper.mean_iou(c)), [confusion], tf.float32))])


def build_train_graph(images, labels, args, label_set, config, wrap_optimizer=None):
    """The training graph on `images`, `labels`; returns a dict of the tensors the loop runs.

    Replicated over several devices when distributed.replica_devices asks for them.
    wrap_optimizer(adam) returns the optimizer to use instead (a cluster's synchronous one).
    """
    from roadseg.training import distributed
    devices = distributed.replica_devices(args)
    if devices:
        return distributed.build_replicated_graph(images, labels, args, label_set, config,
                                                  devices)
    images = tf1.placeholder_with_default(images, [None, None, None, 3],
                                          name=fcn8vgg16.INPUT_NAME)
    labels = tf1.placeholder_with_default(labels, [None, None, None], name='labels')
    keep_prob = tf1.placeholder_with_default(1.0, [], name=fcn8vgg16.KEEP_PROB_NAME)
    logits, _ = fcn8vgg16.fcn8s(images, label_set.num_classes, keep_prob,
                                encoder=config['encoder'], fc_channels=config['fc_channels'],
                                train_upsampling=args.train_upsampling, row_bands=True)
    predictions = fcn8vgg16.predictions(logits)
    xent = fcn8vgg16.segmentation_loss(logits, labels, label_set.ignore_id,
                                       config['class_weights'])
    loss = xent + fcn8vgg16.weight_decay_loss(args.weight_decay)
    global_step = tf1.train.get_or_create_global_step()
    learning_rate = tf.constant(args.learning_rate, tf.float32)
    optimizer = tf1.train.AdamOptimizer(learning_rate)
    if getattr(args, 'precision', 'fp32') == 'fp16':
        optimizer = loss_scaled(optimizer)
    if wrap_optimizer is not None:
        optimizer = wrap_optimizer(optimizer)
    train_op = optimizer.minimize(loss, global_step)
    confusion = confusion_matrix(labels, predictions, label_set.num_classes,
                                 label_set.ignore_id)
    scalars = scalar_summaries(loss, xent, learning_rate, confusion)
    return dict(images=images, labels=labels, keep_prob=keep_prob, loss=loss,
                batch_size=tf.shape(images)[0], optimizer=optimizer,
                train_op=train_op, global_step=global_step, confusion=confusion,
                scalars=scalars,
                image_summary=_image_summary(images, predictions, labels, label_set.colors))


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


def _check_resumable(ckpt_dir, config):
    """A checkpoint folder written for another label set or model cannot be resumed."""
    path = os.path.join(ckpt_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    saved = helper.read_json(path)
    for key in ('dataset', 'label_set', 'num_classes', 'encoder', 'fc_channels',
                'train_upsampling'):
        if saved.get(key) != config.get(key):
            raise UserError('%s was written with %s=%r, this run has %s=%r: use another '
                            '--ckpt_dir' % (ckpt_dir, key, saved.get(key), key, config.get(key)))


def _initialise(session, saver, args, resume_from):
    """Restores the last checkpoint, or initialises and loads the pretrained VGG16 weights."""
    # Both initialisers are built before either runs: an op built on ops a session has run
    # changes them, which TensorFlow warns of.
    initialise_local = tf1.local_variables_initializer()  # the fp16 loss scale, never saved
    initialise_global = None if resume_from else tf1.global_variables_initializer()
    session.run(initialise_local)
    if resume_from:
        saver.restore(session, resume_from)
        return
    session.run(initialise_global)
    load_pretrained(session, args)


def load_pretrained(session, args):
    """Loads --vgg_weights (downloading Udacity's by default) into the initialised model."""
    if args.vgg_weights is not None and args.vgg_weights.lower() == 'none':
        print('training from scratch: --vgg_weights none')
        return
    from roadseg.training import vgg_weights
    path = args.vgg_weights or vgg_weights.maybe_download_vgg(vgg_weights.DEFAULT_VGG_DIR,
                                                              vgg_weights.UDACITY_VGG_URL)
    loaded, missing = vgg_weights.load_vgg_weights(session, vgg_weights.read_vgg_weights(path))
    print('loaded %d VGG16 tensors from %s' % (len(loaded), path)
          + ('; %s not in the file: initialised randomly' % ', '.join(missing) if missing else ''))


def validate(session, graph, dataset, batch_size):
    """Confusion matrix of the current model over a whole split (no dropout)."""
    num_classes = dataset.label_set.num_classes
    total = np.zeros((num_classes, num_classes), np.int64)
    for images, labels in dataset.generator(batch_size, shuffle=False):
        total += session.run(graph['confusion'],
                             {graph['images']: images, graph['labels']: labels})
    return total


def _add_scalar(writer, tag, value, step):
    writer.add_summary(tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=value)]),
                       step)


def _pipeline_error(error):
    """A UserError raised inside tf.data's numpy_function reaches us as an OpError: unwrap it."""
    match = re.search(r'UserError: (.*)', error.message)
    if match:
        return UserError(match.group(1).strip())
    return error


def _checkpoint_step(path):
    return int(path.rsplit('-', 1)[1]) if path else 0


def _input_tensors(args, train_set, start_step, seed):
    """(images, labels, batches): iterator outputs for tf.data, or a python generator to feed."""
    height, width = train_set.image_shape
    if args.pipeline == 'tfdata':
        dataset = train_set.tf_dataset(args.batch_size, args.epochs, seed, start_step)
        images, labels = tf1.data.make_one_shot_iterator(dataset).get_next()
        return images, labels, None
    batches = train_set.generator(args.batch_size, args.epochs, seed, start_step)
    return (tf.zeros([0, height, width, 3], tf.uint8), tf.zeros([0, height, width], tf.uint8),
            batches)


def train(args, train_set, val_set, config, run_dir, model_dir, session_config):
    """Trains to args.epochs epochs, resuming from args.ckpt_dir, then exports a SavedModel."""
    from roadseg.training import distributed
    task = distributed.cluster_task(args)
    if task is not None and not task.is_chief:  # the chief keeps the checkpoints and the model
        distributed.train_worker(args, train_set, config, run_dir, task, session_config)
        return
    check_output_dir(model_dir)
    os.makedirs(args.ckpt_dir, exist_ok=True)
    _check_resumable(args.ckpt_dir, config)
    resume_from = tf.train.latest_checkpoint(args.ckpt_dir)
    if resume_from:  # the same seed and class weights, so the epoch orders and loss go on
        saved = helper.read_json(os.path.join(args.ckpt_dir, CONFIG_FILE))
        config.update(seed=saved['seed'], class_weights=saved['class_weights'])
    else:
        config['class_weights'] = class_weights(train_set, args.class_weights)
        helper.write_json(os.path.join(args.ckpt_dir, CONFIG_FILE), config)
    helper.write_json(os.path.join(run_dir, CONFIG_FILE), config)
    start_step = _checkpoint_step(resume_from)
    steps_per_epoch = train_set.steps_per_epoch(args.batch_size)
    if task is not None:  # the chief, even with nothing left to train: the others wait for it
        distributed.check_chief_seed(args, config, task)
        distributed.train_on_cluster(args, train_set, val_set, config, task, session_config)
    elif start_step < steps_per_epoch * args.epochs:
        _train_loop(args, train_set, val_set, config, resume_from, start_step, steps_per_epoch,
                    session_config)
    else:
        print('%s already holds %d steps (%d epochs of %d): nothing to train'
              % (args.ckpt_dir, start_step, args.epochs, steps_per_epoch))
    export_saved_model(tf.train.latest_checkpoint(args.ckpt_dir), model_dir, config)
    print('model saved to %s' % model_dir)


def _train_loop(args, train_set, val_set, config, resume_from, start_step, steps_per_epoch,
                    session_config):
    label_set = train_set.label_set
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(config['seed'])
        images, labels, batches = _input_tensors(args, train_set, start_step, config['seed'])
        tensors = build_train_graph(images, labels, args, label_set, config)
        tensors['weights_finite'] = _all_finite(tf1.global_variables())
        saver = tf1.train.Saver(max_to_keep=args.keep_checkpoints)
    _remove_partial_saves(args.ckpt_dir)
    _recover_checkpoints(saver, args.ckpt_dir)
    writer = tf1.summary.FileWriter(args.summary_dir, graph if not resume_from else None)
    if resume_from:  # TensorBoard drops what a killed run logged past the checkpoint
        writer.add_session_log(tf1.SessionLog(status=tf1.SessionLog.START), start_step + 1)
    with tf1.Session(graph=graph, config=session_config) as session:
        _initialise(session, saver, args, resume_from)
        if resume_from:
            print('continuing training after %d steps' % start_step)
        save = functools.partial(_save, session, saver, tensors, args.ckpt_dir)
        try:
            with _sigterm_as_interrupt():
                _train_epochs(session, tensors, batches, writer, save, args, train_set,
                              val_set, start_step, steps_per_epoch)
        except tf.errors.OpError as error:
            raise _pipeline_error(error) from None
        except KeyboardInterrupt as interrupt:
            step = save()
            print('\n%s: checkpoint of step %d saved in %s' % (
                'terminated' if isinstance(interrupt, helper.Terminated) else 'interrupted',
                step, args.ckpt_dir))
            raise
        finally:
            writer.close()


def _train_epochs(session, tensors, batches, writer, save, args, train_set, val_set,
                  start_step, steps_per_epoch):
    step = start_step
    for epoch in range(start_step // steps_per_epoch, args.epochs):
        step = _train_epoch(session, tensors, batches, writer, save, args, epoch, step,
                            steps_per_epoch)
        save()
        if val_set is not None:
            _log_validation(session, tensors, val_set, args, writer, step)
        for name, dataset in (('training', train_set), ('validation', val_set)):
            if dataset is not None and dataset.skipped:
                print('%d of %d %s samples skipped so far (--skip_bad_files)'
                      % (len(dataset.skipped), len(dataset), name))


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (kill, a batch scheduler's stop) takes the path of Ctrl-C while training: the
    current step is saved before the process ends. The previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():  # signal() would refuse
        yield
        return

    def _raise(signum, frame):
        raise helper.Terminated()

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _all_finite(variables):
    """A bool tensor: every float variable (the weights and Adam's moments) is finite."""
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(variable))
                                   for variable in variables
                                   if variable.dtype.base_dtype.is_floating]))


def _error_text(error):
    text = getattr(error, 'message', None) or getattr(error, 'strerror', None) or str(error)
    return (text.strip().splitlines() or [type(error).__name__])[0]


def _save(session, saver, tensors, ckpt_dir):
    """Checkpoints the current step, unless it is saved already; returns the step.

    Refuses weights that are not finite. The Saver writes each file to a temporary name and
    renames it when complete, the graph (.meta, which freeze reads) first here, and only then
    names the checkpoint in the `checkpoint` file, itself replaced atomically: a kill or a
    failed write at any moment leaves the last complete checkpoint the latest.
    """
    step, finite = session.run([tensors['global_step'], tensors['weights_finite']])
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest and _checkpoint_step(latest) == step:
        return step
    kept = ('the checkpoint of step %d there is intact' % _checkpoint_step(latest) if latest
            else 'it holds no earlier checkpoint')
    if not finite:
        raise UserError('a weight is not finite at step %d: not saved into %s, %s; try a '
                        'lower --learning_rate' % (step, ckpt_dir, kept))
    prefix = os.path.join(ckpt_dir, CKPT_NAME)
    try:
        with session.graph.as_default():
            saver.export_meta_graph('%s-%d.meta' % (prefix, step))
        saver.save(session, prefix, step, write_meta_graph=False)
    except (tf.errors.OpError, OSError, ValueError) as error:
        raise UserError('cannot write the checkpoint of step %d into %s (%s); %s'
                        % (step, ckpt_dir, _error_text(error), kept)) from None
    return step


def _remove_partial_saves(ckpt_dir):
    """Deletes what a kill in the middle of a save, or of the deletion of an old checkpoint,
    left behind (a data file is as large as a checkpoint): temporary files, the files of
    checkpoints without an index, which nothing can restore, and checkpoints older than the
    oldest one the `checkpoint` file keeps, which the Saver had dropped from it and was
    deleting. Only names our Saver gives, and only in a folder with our configuration:
    another tool's files are never touched."""
    if not os.path.exists(os.path.join(ckpt_dir, CONFIG_FILE)):
        return
    names = os.listdir(ckpt_dir)
    indexed = {name[:-len('.index')] for name in names if name.endswith('.index')}
    state = tf.train.get_checkpoint_state(ckpt_dir)
    listed = [_checkpoint_step(path) for path in state.all_model_checkpoint_paths] if state else []
    ours = re.compile(r'(%s-(\d+))\.(index|meta|data-\d+-of-\d+)(\.tempstate\d+|\.tmp\w+)?$'
                      % re.escape(CKPT_NAME))
    for name in names:
        match = ours.match(name)
        if (match and (match.group(4) or match.group(1) not in indexed
                       or listed and int(match.group(2)) < min(listed))
                or name.startswith('checkpoint.tmp')):
            os.remove(os.path.join(ckpt_dir, name))


def _recover_checkpoints(saver, ckpt_dir):
    """Tells a new Saver the checkpoints of earlier runs, so that --keep_checkpoints holds
    across restarts: it deletes only the ones it knows of."""
    state = tf.train.get_checkpoint_state(ckpt_dir)
    if state is not None:
        saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))


def _train_step(session, tensors, batches, args, step):
    """One optimiser step; returns what it fetched and its wall time in seconds."""
    feed = {tensors['keep_prob']: args.keep_prob}
    if batches is not None:
        feed[tensors['images']], feed[tensors['labels']] = next(batches)
    # The global step goes up by one per run; fetched in the same run it may be stale.
    fetches = {'train': tensors['train_op'], 'loss': tensors['loss'],
               'batch_size': tensors['batch_size']}
    if (step + 1) % args.summary_every == 0:
        fetches['scalars'] = tensors['scalars']
    if (step + 1) % args.image_summary_every == 0:
        fetches['images'] = tensors['image_summary']
    started = time.perf_counter()
    results = session.run(fetches, feed)
    return results, time.perf_counter() - started


def _train_epoch(session, tensors, batches, writer, save, args, epoch, step, steps_per_epoch):
    """One epoch with a progress bar; returns the global step at its end. save() checkpoints."""
    end = (epoch + 1) * steps_per_epoch
    speed = None
    with tqdm(total=steps_per_epoch, initial=step - epoch * steps_per_epoch,
              desc='Train Epoch %2d/%d' % (epoch + 1, args.epochs), unit='step') as bar:
        while step < end:
            results, seconds = _train_step(session, tensors, batches, args, step)
            step += 1
            if not np.isfinite(results['loss']):
                raise UserError('the loss is %s at step %d: stopped without saving it, %s keeps '
                                'the last checkpoint; try a lower --learning_rate'
                                % (results['loss'], step, args.ckpt_dir))
            batch_speed = results['batch_size'] / seconds
            speed = batch_speed if speed is None else 0.9 * speed + 0.1 * batch_speed
            for key in ('scalars', 'images'):
                if key in results:
                    writer.add_summary(results[key], step)
            if 'scalars' in results:
                _add_scalar(writer, 'images_per_second', speed, step)
            if step % args.ckpt_every == 0:
                save()
            bar.set_postfix_str('loss %.3f, %.1f img/s' % (results['loss'], speed))
            bar.update(1)
    return step


def _log_validation(session, tensors, val_set, args, writer, step):
    confusion = validate(session, tensors, val_set, args.batch_size)
    value = helper.mean_iou(confusion)
    _add_scalar(writer, 'val/mean_iou', value, step)
    _add_scalar(writer, 'val/pixel_accuracy', helper.pixel_accuracy(confusion), step)
    writer.flush()
    print('step %d: val mean IoU %.1f%% over %d images' % (step, 100 * value, len(val_set)))


def export_saved_model(checkpoint, model_dir, config):
    """An inference-only SavedModel (uint8 images in, class ids and logits out) of a checkpoint,
    with the model's configuration."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)  # initialisers never run, but determinism mode asks for a seed
        fcn8vgg16.inference_graph(config['num_classes'], config['encoder'],
                                  config['fc_channels'])
        saver = tf1.train.Saver()

    def _write(folder):
        with tf1.Session(graph=graph) as session:
            saver.restore(session, checkpoint)
            write_saved_model(session, folder)
        helper.write_json(os.path.join(folder, CONFIG_FILE), config)

    write_model_dir(model_dir, _write)
