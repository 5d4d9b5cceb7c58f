"""Checkpoints: saved so that a kill at any moment leaves the last complete one the latest,
cleaned of what a kill left, resumed, and exported as the SavedModel of a run."""
import os
import re

import tensorflow as tf

import fcn8vgg16
import helper
from helper import UserError
from roadseg import model_dir

tf1 = tf.compat.v1

CKPT_NAME = 'model.ckpt'
# What a checkpoint folder must agree on with the run that resumes it.
RESUME_KEYS = ('dataset', 'label_set', 'label_table', 'num_classes', 'encoder', 'fc_channels',
               'train_upsampling', 'optimizer')
# What a resumed run may change, with a warning: the rate's curve from there on.
SCHEDULE_KEYS = ('learning_rate', 'momentum', 'lr_schedule', 'lr_power', 'end_learning_rate',
                 'lr_step_epochs', 'warmup_steps')
# The values of keys that folders written before them did not record.
OLD_DEFAULTS = {'optimizer': 'adam', 'lr_schedule': 'constant'}


def checkpoint_step(path):
    """The global step of a checkpoint prefix (model.ckpt-N), 0 for None."""
    return int(path.rsplit('-', 1)[1]) if path else 0


def usable_checkpoint(ckpt_dir):
    """The newest checkpoint of ckpt_dir whose every tensor reads back intact (their
    checksums hold), or None if it lists none. A damaged one is passed over with a warning
    naming it, and the `checkpoint` file made to name the usable one as the latest: the
    training goes on from there, and nothing is deleted. None usable is a UserError."""
    state = tf.train.get_checkpoint_state(ckpt_dir)
    if state is None:
        return None
    paths = [path if os.path.isabs(path) else os.path.join(ckpt_dir, path)
             for path in list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]]
    for index in reversed(range(len(paths))):
        damage = _damage(paths[index])
        if damage is None:
            if index < len(paths) - 1:
                tf1.train.update_checkpoint_state(ckpt_dir, paths[index], paths[:index + 1])
            return paths[index]
        helper.warn('the checkpoint %s is damaged (%s): %s' % (
            paths[index], damage, 'passed over' if index else 'no earlier one'))
    raise UserError('no usable checkpoint in %s (each is damaged, see above); nothing was '
                    'deleted: move the folder away, or use another --ckpt_dir' % ckpt_dir)


def _damage(prefix):
    """Why the checkpoint prefix cannot be restored, None if it can."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError) as error:
        return helper.first_line(error)
    return None


def check_resumable(ckpt_dir, config):
    """A checkpoint folder written for another label set, model or optimiser (whose slots
    would not match) cannot be resumed; another rate or schedule goes on with a warning."""
    path = os.path.join(ckpt_dir, model_dir.CONFIG_FILE)
    if not os.path.exists(path):
        return
    saved = dict(OLD_DEFAULTS, **helper.read_json(path))
    for key in RESUME_KEYS:
        if saved.get(key) != config.get(key):
            raise UserError('%s was written with %s=%r, this run has %s=%r: use another '
                            '--ckpt_dir' % (ckpt_dir, key, saved.get(key), key, config.get(key)))
    changed = ['%s %r -> %r' % (key, saved[key], config.get(key)) for key in SCHEDULE_KEYS
               if key in saved and saved[key] != config.get(key)]
    if changed:
        helper.warn('resuming %s with another learning rate: %s' % (ckpt_dir, ', '.join(changed)))


def save(session, saver, graph, ckpt_dir):
    """Checkpoints the current step, unless it is saved already; returns the step.

    Refuses weights that are not finite. The Saver writes each file to a temporary name and
    renames it when complete, the graph (.meta, which freeze reads) first here, and only then
    names the checkpoint in the `checkpoint` file, itself replaced atomically: a kill or a
    failed write at any moment leaves the last complete checkpoint the latest.
    """
    step, finite = session.run([graph['global_step'], graph['weights_finite']])
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest and checkpoint_step(latest) == step:
        return step
    kept = ('the checkpoint of step %d there is intact' % checkpoint_step(latest) if latest
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
                        % (step, ckpt_dir, helper.first_line(error), kept)) from None
    return step


def remove_partial_saves(ckpt_dir):
    """Deletes what a kill in the middle of a save, or of the deletion of an old checkpoint,
    left behind (a data file is as large as a checkpoint): temporary files, the files of
    checkpoints without an index, which nothing can restore, and checkpoints older than the
    oldest one the `checkpoint` file keeps, which the Saver had dropped from it and was
    deleting. Only names our Saver gives, and only in a folder with our configuration:
    another tool's files are never touched."""
    if not os.path.exists(os.path.join(ckpt_dir, model_dir.CONFIG_FILE)):
        return
    names = os.listdir(ckpt_dir)
    indexed = {name[:-len('.index')] for name in names if name.endswith('.index')}
    state = tf.train.get_checkpoint_state(ckpt_dir)
    listed = [checkpoint_step(path) for path in state.all_model_checkpoint_paths] if state else []
    ours = re.compile(r'(%s-(\d+))\.(index|meta|data-\d+-of-\d+)(\.tempstate\d+|\.tmp\w+)?$'
                      % re.escape(CKPT_NAME))
    for name in names:
        match = ours.match(name)
        if (match and (match.group(4) or match.group(1) not in indexed
                       or listed and int(match.group(2)) < min(listed))
                or name.startswith('checkpoint.tmp')):
            os.remove(os.path.join(ckpt_dir, name))


def recover_checkpoints(saver, ckpt_dir):
    """Tells a new Saver the checkpoints of earlier runs, so that --keep_checkpoints holds
    across restarts: it deletes only the ones it knows of."""
    state = tf.train.get_checkpoint_state(ckpt_dir)
    if state is not None:
        saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))


def export_saved_model(checkpoint, folder, config, network):
    """An inference-only SavedModel (uint8 images in, class ids and logits out) of a checkpoint,
    with the model's configuration. A failed write (a full disk) leaves folder as it was."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)  # initialisers never run, but determinism mode asks for a seed
        fcn8vgg16.inference_graph(config['num_classes'], network.encoder, network.fc_channels)
        saver = tf1.train.Saver()

    def _write(destination):
        with tf1.Session(graph=graph) as session:
            saver.restore(session, checkpoint)
            model_dir.write_saved_model(session, destination)
        helper.write_json(os.path.join(destination, model_dir.CONFIG_FILE), config)

    try:
        model_dir.write_model_dir(folder, _write)
    except (tf.errors.OpError, OSError) as error:
        raise UserError('cannot write the model %s (%s); %s keeps the checkpoint of step %d: '
                        'the same command exports it again'
                        % (folder, helper.first_line(error), os.path.dirname(checkpoint),
                           checkpoint_step(checkpoint))) from None

