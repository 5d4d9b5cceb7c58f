"""A training run: resume or start its checkpoints, train to the recipe's epochs on one machine
(or hand over to the cluster), export the SavedModel."""
import dataclasses
import os

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import helper
from helper import UserError
from roadseg import model_dir
from roadseg.training import (best, checkpoints, cluster, graph as train_graph, init_from,
                              loop)

tf1 = tf.compat.v1



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


class Run:
    """What one training process is given: the network, the recipe, the logbook, the device
    plan and its session config, the cluster task (None alone), the datasets, and its
    configuration record (the flags and the model's facts, written into every folder it
    makes)."""

    def __init__(self, network, recipe, logbook, plan, session_config, task, train_set, val_set,
                 config):
        self.network, self.recipe, self.logbook, self.plan = network, recipe, logbook, plan
        self.session_config = session_config
        self.task, self.train_set, self.val_set, self.config = task, train_set, val_set, config
        self.steps_per_epoch = train_set.steps_per_epoch(recipe.batch_size)
        self.last_step = self.steps_per_epoch * recipe.epochs
        self.init_plan = None  # an init_from.Plan: the first weights of a fresh training


def train(run, run_dir, folder):
    """Trains to run.recipe.epochs epochs, resuming from the logbook's checkpoints, then
    exports a SavedModel. A cluster's other workers train their share and keep no files but
    their run folder's configuration."""
    if run.task is not None and not run.task.is_chief:
        run.config['class_weights'] = class_weights(run.train_set, run.recipe.class_weights)
        helper.write_json(os.path.join(run_dir, model_dir.CONFIG_FILE), run.config)
        cluster.train_on_cluster(run)
        return
    ckpt_dir = run.logbook.ckpt_dir
    model_dir.check_output_dir(folder)
    checkpoints.check_resumable(ckpt_dir, run.config)
    _plan_init(run, tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None)
    os.makedirs(ckpt_dir, exist_ok=True)
    with helper.folder_lock(ckpt_dir, 'train'):  # a second training of the folder stops here
        _train_and_export(run, run_dir, folder)


def _train_and_export(run, run_dir, folder):
    """train() once the checkpoint folder is this process's."""
    ckpt_dir = run.logbook.ckpt_dir
    resume_from = checkpoints.usable_checkpoint(ckpt_dir)
    seed = run.config['seed']  # every worker's: --seed, or else one computed from the cluster
    if resume_from:  # the same seed and class weights, so the epoch orders and loss go on
        saved = helper.read_json(os.path.join(ckpt_dir, model_dir.CONFIG_FILE))
        run.config.update(seed=saved['seed'], class_weights=saved['class_weights'],
                          summary_run=saved.get('summary_run', ''))
    else:
        run.config['class_weights'] = class_weights(run.train_set, run.recipe.class_weights)
        run.config['summary_run'] = summary_run_name(run.recipe)
        helper.write_json(os.path.join(ckpt_dir, model_dir.CONFIG_FILE), run.config)
    run.logbook = dataclasses.replace(run.logbook, summary_dir=os.path.join(
        run.logbook.summary_dir, run.config['summary_run']))
    helper.write_json(os.path.join(run_dir, model_dir.CONFIG_FILE), run.config)
    start_step = checkpoints.checkpoint_step(resume_from)
    if run.task is not None:  # the chief, even with nothing left to train: the others wait
        cluster.check_chief_seed(run, seed)
        cluster.train_on_cluster(run)
    elif start_step < run.last_step:
        _train_alone(run, resume_from, start_step)
    else:
        print('%s already holds %d steps (%d epochs of %d): nothing to train'
              % (ckpt_dir, start_step, run.recipe.epochs, run.steps_per_epoch))
    checkpoints.export_saved_model(tf.train.latest_checkpoint(ckpt_dir), folder, run.config,
                                   run.network)
    print('model saved to %s' % folder)
    kept = best.summary_line(ckpt_dir)
    if kept:
        print(kept)


def _plan_init(run, resume_from):
    """Plans --init_from for a fresh training and prints its table; a resumed one ignores it."""
    source = run.recipe.init_from
    if source and resume_from:
        helper.warn('%s holds checkpoints: resuming them, --init_from %s ignored'
                    % (run.logbook.ckpt_dir, source))
    elif source:
        run.init_plan = init_from.plan(source, run.config['num_classes'], run.network)
        print('\n'.join(init_from.table(run.init_plan)))


def summary_run_name(recipe):
    """The TensorBoard run of a training: its start time and main settings, as
    20261205-130115_ep10_bs5_lr0.0001_kp0.5 (then the optimiser and schedule if not the
    defaults), so that `tensorboard --logdir` of the summary folder compares runs."""
    name = '%s_ep%d_bs%d_lr%g_kp%g' % (helper.timestamp(), recipe.epochs,
                                       recipe.batch_size, recipe.learning_rate,
                                       recipe.keep_prob)
    name += '_sgd' if recipe.optimizer == 'sgd' else ''
    name += '_acc%d' % recipe.accumulate if recipe.accumulate > 1 else ''
    return name + ('_' + recipe.lr_schedule if recipe.lr_schedule != 'constant' else '')


def _input_tensors(run, start_step):
    """(images, labels, batches): iterator outputs for tf.data, or a python generator to feed."""
    height, width = run.train_set.image_shape
    recipe, seed = run.recipe, run.config['seed']
    if recipe.pipeline == 'tfdata':
        dataset = run.train_set.tf_dataset(recipe.batch_size, recipe.epochs, seed, start_step)
        images, labels = tf1.data.make_one_shot_iterator(dataset).get_next()
        return images, labels, None
    batches = run.train_set.generator(recipe.batch_size, recipe.epochs, seed, start_step)
    return (tf.zeros([0, height, width, 3], tf.uint8), tf.zeros([0, height, width], tf.uint8),
            batches)


def initialise(session, saver, resume_from, init_plan, vgg_source):
    """Restores the last checkpoint, or initialises and loads the --init_from or pretrained
    VGG16 weights."""
    # Both initialisers are built before either runs: an op built on ops a session has run
    # changes them, which TensorFlow warns of.
    initialise_local = tf1.local_variables_initializer()  # the fp16 loss scale, never saved
    initialise_global = None if resume_from else tf1.global_variables_initializer()
    session.run(initialise_local)
    if resume_from:
        saver.restore(session, resume_from)
        return
    session.run(initialise_global)
    init_from.first_weights(session, init_plan, vgg_source)


def _train_alone(run, resume_from, start_step):
    """Training on this machine's device or devices, from start_step to the last step."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(run.config['seed'])
        images, labels, batches = _input_tensors(run, start_step)
        tensors = train_graph.build_train_graph(
            images, labels, run.network, run.recipe, run.train_set.label_set,
            run.config['class_weights'], train_graph.replica_devices(run.plan),
            steps_per_epoch=run.steps_per_epoch)
        saver = tf1.train.Saver(max_to_keep=run.logbook.keep_checkpoints)
    ckpt_dir = run.logbook.ckpt_dir
    checkpoints.remove_partial_saves(ckpt_dir)
    checkpoints.recover_checkpoints(saver, ckpt_dir)
    writer = tf1.summary.FileWriter(run.logbook.summary_dir, graph if not resume_from else None)
    if resume_from:  # TensorBoard drops what a killed run logged past the checkpoint
        writer.add_session_log(tf1.SessionLog(status=tf1.SessionLog.START), start_step + 1)
    with tf1.Session(graph=graph, config=run.session_config) as session:
        initialise(session, saver, resume_from, run.init_plan, run.recipe.vgg_weights)
        if resume_from:
            print('continuing training after %d steps' % start_step)
        loop.run(session, tensors, batches, run.recipe.keep_prob, start_step, run.last_step,
                 loop.EpochBars(run.recipe.epochs, run.steps_per_epoch),
                 loop.Duties.for_run(run, session, tensors, saver, writer), ckpt_dir)

