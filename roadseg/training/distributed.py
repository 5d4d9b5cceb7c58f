"""Data-parallel training: several devices of one machine, and several machines.

One machine (`--gpu N`, `--cpu_replicas N`): tf.compat.v1.distribute.MirroredStrategy. Every
global batch, from tf.data or the python generator alike, is cut in the graph into one slice
per device; each replica computes its slice's share of the global-batch loss, and the Adam
optimizer sums the replicas' gradients (the v1 optimizers all-reduce through merge_call).
Variable names are those of single-device training, so checkpoints move between the two.

Several machines: between-graph replication on TensorFlow's distributed runtime. Each task is
one `train` process; parameter servers hold the variables (replica_device_setter), workers feed
their share of every global batch, SyncReplicasOptimizer averages one gradient per worker per
step, and worker 0, the chief, initialises, checkpoints, writes summaries and exports.
"""
import collections
import contextlib
import copy
import json
import os
import zlib

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2
from tqdm import tqdm

import fcn8vgg16
import helper
from roadseg.training import trainer
from helper import UserError

tf1 = tf.compat.v1

JOBS = ('ps', 'worker')
DONE_QUEUE_CAPACITY = 1000  # "finished" tokens a parameter server can hold; never reached


# ------------------------------------------------------------------ several devices, one machine

def replica_devices(args):
    """The devices to replicate the model on, or [] to train on one device as before.

    --cpu_replicas N > 1: N virtual CPU devices (session_config must create them, see
    configure). --gpu N > 1: as many of N GPUs as exist (helper.session_config warns when
    there are fewer).
    """
    if args.cpu_replicas > 1:
        return ['/cpu:%d' % index for index in range(args.cpu_replicas)]
    gpus = min(args.gpu, len(tf.config.list_physical_devices('GPU')))
    return ['/gpu:%d' % index for index in range(gpus)] if gpus > 1 else []


def configure(args, session_config, task):
    """Checks that the batch divides among the devices or workers; creates the virtual CPUs."""
    devices = replica_devices(args)
    if task is not None and devices:
        raise UserError('a cluster task trains on one device: start one worker per GPU '
                        '(--gpu 1, no --cpu_replicas)')
    parts, what = ((task.num_workers, 'workers') if task is not None else
                   (max(len(devices), 1), 'devices'))
    if args.batch_size % parts:
        raise UserError('--batch_size %d does not divide among %d %s: use a multiple of %d'
                        % (args.batch_size, parts, what, parts))
    if args.cpu_replicas > 1:
        session_config.device_count['CPU'] = args.cpu_replicas
    if (devices or task is not None) and not session_config.device_count['GPU']:
        # Grappler's memory optimiser moves GPU memory to the host; without a GPU it only
        # logs a cost-estimation warning per op of a graph spread over several devices.
        session_config.graph_options.rewrite_options.memory_optimization = (
            rewriter_config_pb2.RewriterConfig.NO_MEM_OPT)


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


def _pixel_weight(labels, ignore_id, class_weights):
    """The sum of the loss weights of a batch's pixels: segmentation_loss's denominator."""
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_id)
    weights = tf.cast(valid, tf.float32)
    if class_weights is not None:
        weights *= tf.gather(tf.constant(class_weights, tf.float32),
                             tf.where(valid, labels, tf.zeros_like(labels)))
    return tf.reduce_sum(weights)


def _replica_loss(images, labels, keep_prob, total_weight, first, args, label_set, config):
    """One replica's network on its slice; returns (xent share, loss share, predictions).

    The shares add up over the replicas to exactly the single-device loss of the whole batch:
    the slice's weighted cross-entropy sum over the whole batch's weight, and the weight decay
    on the first replica only (the others' copies of the kernels are named .../replica_N).
    The optimizer sums the replicas' gradients, so they add up likewise.
    """
    logits, _ = fcn8vgg16.fcn8s(images, label_set.num_classes, keep_prob,
                                encoder=config['encoder'], fc_channels=config['fc_channels'],
                                train_upsampling=args.train_upsampling, row_bands=True)
    local_weight = _pixel_weight(labels, label_set.ignore_id, config['class_weights'])
    xent = fcn8vgg16.segmentation_loss(logits, labels, label_set.ignore_id,
                                       config['class_weights']) * local_weight / total_weight
    loss = xent + fcn8vgg16.weight_decay_loss(args.weight_decay) if first else xent
    return xent, loss, fcn8vgg16.predictions(logits)


def build_replicated_graph(images, labels, args, label_set, config, devices):
    """trainer.build_train_graph on several devices: the same dict of tensors, the same
    variables; the fed or iterated global batch is sliced among the replicas."""
    strategy = tf1.distribute.MirroredStrategy(devices=devices)
    with strategy.scope():
        images = tf1.placeholder_with_default(images, [None, None, None, 3],
                                              name=fcn8vgg16.INPUT_NAME)
        labels = tf1.placeholder_with_default(labels, [None, None, None], name='labels')
        keep_prob = tf1.placeholder_with_default(1.0, [], name=fcn8vgg16.KEEP_PROB_NAME)
        global_step = tf1.train.get_or_create_global_step()
        learning_rate = tf.constant(args.learning_rate, tf.float32)
        optimizer = tf1.train.AdamOptimizer(learning_rate)
        if getattr(args, 'precision', 'fp32') == 'fp16':
            optimizer = trainer.loss_scaled(optimizer)
        sizes = _split_sizes(tf.shape(images)[0], len(devices))
        image_slices = tf.split(images, sizes, num=len(devices))
        label_slices = tf.split(labels, sizes, num=len(devices))
        total_weight = tf.maximum(
            _pixel_weight(labels, label_set.ignore_id, config['class_weights']), 1e-6)

        def replica_step():
            index = tf.get_static_value(
                tf.distribute.get_replica_context().replica_id_in_sync_group)
            images, labels = _pad_empty(image_slices[index], label_slices[index],
                                        label_set.ignore_id)
            xent, loss, predictions = _replica_loss(images, labels, keep_prob, total_weight,
                                                    index == 0, args, label_set, config)
            return dict(xent=xent, loss=loss,
                        predictions=predictions[:tf.shape(image_slices[index])[0]],
                        train_op=optimizer.minimize(loss, global_step),
                        confusion=trainer.confusion_matrix(labels, predictions,
                                                           label_set.num_classes,
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
                scalars=trainer.scalar_summaries(loss, xent, learning_rate, confusion),
                image_summary=trainer._image_summary(images, predictions, labels,
                                                     label_set.colors))


# ---------------------------------------------------------------------- the cluster and its task

class Task(collections.namedtuple('Task', 'cluster job index')):
    """This process's place in a cluster: cluster {'ps': [host:port], 'worker': [...]}."""

    @property
    def num_workers(self):
        return len(self.cluster['worker'])

    @property
    def is_chief(self):
        return self.job == 'worker' and self.index == 0

    @property
    def address(self):
        return self.cluster[self.job][self.index]

    def device(self):
        return '/job:%s/task:%d' % (self.job, self.index)

    def shared_seed(self):
        """A seed every task computes alike, for runs without --seed: the workers must shuffle
        alike to share out the same batches."""
        return zlib.crc32(','.join(self.cluster['worker']).encode()) % 2**31


def _hosts(value, flag):
    hosts = [host.strip() for host in (value or '').split(',') if host.strip()]
    for host in hosts:
        if not host.rpartition(':')[2].isdigit():
            raise UserError('%s: %r is not host:port' % (flag, host))
    return hosts


def _task_from_tf_config(text):
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config.get('cluster'), tf_config.get('task', {})
        if not cluster:
            return None, None, None
        return ({job: list(hosts) for job, hosts in cluster.items()}, task.get('type'),
                int(task.get('index', 0)))
    except (ValueError, AttributeError, TypeError) as error:
        raise UserError('TF_CONFIG is not {"cluster": {...}, "task": {"type": ..., '
                        '"index": ...}}: %s' % error) from None


def cluster_task(args):
    """This process's Task, from --ps_hosts, --worker_hosts, --job_name and --task_index or
    else the TF_CONFIG environment variable; None when it trains alone."""
    if args.ps_hosts or args.worker_hosts or args.job_name:
        source = '--job_name'
        cluster = {'ps': _hosts(args.ps_hosts, '--ps_hosts'),
                   'worker': _hosts(args.worker_hosts, '--worker_hosts')}
        job, index = args.job_name, args.task_index
    else:
        source = 'TF_CONFIG'
        cluster, job, index = _task_from_tf_config(os.environ.get('TF_CONFIG') or '{}')
        if cluster is None:
            return None
    for name in cluster:
        if name not in JOBS:
            raise UserError('%s: the cluster has a %r job; this tool runs ps and worker jobs '
                            'only (the chief is worker 0)' % (source, name))
    for name in JOBS:
        if not cluster.get(name):
            raise UserError('%s: the cluster has no %s task (--%s_hosts)' % (source, name, name))
    if job not in JOBS:
        raise UserError('%s: the task type is %r, not ps or worker' % (source, job))
    if not 0 <= index < len(cluster[job]):
        raise UserError('%s: task index %d is not among the %d %s tasks'
                        % (source, index, len(cluster[job]), job))
    return Task(cluster, job, index)


def _start_server(task, config=None):
    try:
        return tf.distribute.Server(tf.train.ClusterSpec(task.cluster), job_name=task.job,
                                    task_index=task.index, config=config)
    except tf.errors.OpError as error:
        raise UserError('cannot start %s %d on %s: %s' % (
            task.job, task.index, task.address, error.message.strip().splitlines()[0])) from None


def _done_queue(ps_index, num_workers):
    """The queue on parameter server ps_index into which each worker puts its index when it
    has finished; shared by name between the ps's session and the workers'."""
    with tf.device('/job:ps/task:%d' % ps_index):
        return tf1.FIFOQueue(DONE_QUEUE_CAPACITY, tf.int32, shapes=[[]],
                             shared_name='workers_done_%d' % ps_index,
                             name='workers_done_%d' % ps_index)


def serve(task):
    """A parameter server: serves its share of the variables until every worker has finished.

    A worker killed and restarted says it has finished once, at the end; a worker that says so
    twice counts once.
    """
    server = _start_server(task)
    graph = tf.Graph()
    with graph.as_default():
        next_done = _done_queue(task.index, task.num_workers).dequeue()
    config = tf1.ConfigProto(device_filters=[task.device()])
    print('ps %d serving on %s until the %d workers have finished'
          % (task.index, task.address, task.num_workers), flush=True)
    finished = set()
    with tf1.Session(server.target, graph=graph, config=config) as session:
        while len(finished) < task.num_workers:
            finished.add(int(session.run(next_done)))
    print('ps %d: all %d workers have finished' % (task.index, task.num_workers))


# --------------------------------------------------------------------- training on the cluster

def worker_batches(train_set, batch_size, epochs, seed, start_step, task):
    """This worker's slice of every global batch of Dataset.generator from start_step on.

    Workers that share the seed share out the same batches as one process would train on. One
    epoch more than asked for: a restarted worker can run a step more than the cluster counts.
    An empty slice (a batch shorter than the workers) is one black image, every pixel ignored.
    """
    blank = (np.zeros((1,) + tuple(train_set.image_shape) + (3,), np.uint8),
             np.full((1,) + tuple(train_set.image_shape), train_set.label_set.ignore_id,
                     np.uint8))
    steps = train_set.steps_per_epoch(batch_size)
    first_epoch, skip = divmod(start_step, steps)
    for epoch in range(first_epoch, epochs + 1):
        order = train_set.order(epoch, seed)
        for first in range((skip if epoch == first_epoch else 0) * batch_size, len(order),
                           batch_size):
            mine = np.array_split(order[first:first + batch_size], task.num_workers)[task.index]
            samples = [train_set.sample(index, seed, epoch) for index in mine]
            yield ((np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples]))
                   if samples else blank)


class _WorkerSessionCreator(tf1.train.SessionCreator):
    """tf1.train.WorkerSessionCreator, but checking every second (not every 30) whether the
    chief has initialised the model."""

    def __init__(self, scaffold, master, config):
        self._scaffold, self._master, self._config = scaffold, master, config

    def create_session(self):
        self._scaffold.finalize()
        manager = tf1.train.SessionManager(
            local_init_op=self._scaffold.local_init_op,
            ready_op=self._scaffold.ready_op,
            ready_for_local_init_op=self._scaffold.ready_for_local_init_op,
            graph=tf1.get_default_graph(), recovery_wait_secs=1)
        return manager.wait_for_session(self._master, config=self._config)


class _RawSession(tf1.train.SessionRunHook):
    """Keeps the monitored session's own session, to save and validate without the hooks,
    and its coordinator."""
    session = coord = None

    def after_create_session(self, session, coord):
        self.session, self.coord = session, coord

    def end_sync(self, sync_optimizer):
        """The chief's end: closes the token queue, so that a worker waiting for a token stops,
        then the session, which cancels the sync thread's wait for gradients that will not come
        (cancelled after the monitored session joins its threads, it would raise there)."""
        self.session.run(sync_optimizer.get_chief_queue_runner().cancel_op)
        self.coord.request_stop()
        self.session.close()


def _build_cluster_graph(args, train_set, config, task):
    """The training graph with variables on the parameter servers; (graph, tensors, saver)."""
    height, width = train_set.image_shape
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(config['seed'])
        with tf1.device(tf1.train.replica_device_setter(cluster=task.cluster,
                                                       worker_device=task.device())):
            tensors = trainer.build_train_graph(
                tf.zeros([0, height, width, 3], tf.uint8), tf.zeros([0, height, width], tf.uint8),
                args, train_set.label_set, config,
                wrap_optimizer=lambda adam: tf1.train.SyncReplicasOptimizer(
                    adam, replicas_to_aggregate=task.num_workers,
                    total_num_replicas=task.num_workers))
            tensors['weights_finite'] = trainer._all_finite(tf1.global_variables())
        tensors['done'] = [_done_queue(ps, task.num_workers).enqueue(task.index)
                           for ps in range(len(task.cluster['ps']))]
        saver = tf1.train.Saver(max_to_keep=args.keep_checkpoints, sharded=True)
    return graph, tensors, saver


def _session_creator(args, task, saver, target, config):
    if task.is_chief:  # restores the latest checkpoint, else initialises and loads --vgg_weights
        scaffold = tf1.train.Scaffold(saver=saver, init_fn=lambda _, session:
                                      trainer.load_pretrained(session, args))
        return tf1.train.ChiefSessionCreator(scaffold, target, config,
                                             checkpoint_dir=args.ckpt_dir)
    return _WorkerSessionCreator(tf1.train.Scaffold(saver=saver), target, config)


def train_worker(args, train_set, config, run_dir, task, session_config):
    """A worker other than the chief: trains its share and keeps no checkpoint or summary; its
    run folder records the configuration."""
    config['class_weights'] = trainer.class_weights(train_set, args.class_weights)
    helper.write_json(os.path.join(run_dir, trainer.CONFIG_FILE), config)
    train_on_cluster(args, train_set, None, config, task, session_config)


def train_on_cluster(args, train_set, val_set, config, task, session_config):
    """Runs this worker's part of the cluster's training to args.epochs epochs. The chief also
    checkpoints into args.ckpt_dir, writes summaries and validates."""
    config_with_filters = tf1.ConfigProto()
    config_with_filters.CopyFrom(session_config)
    # Only the parameter servers and this worker: a worker that is down stalls no session.
    config_with_filters.device_filters.extend(['/job:ps', task.device()])
    server = _start_server(task, session_config)
    graph, tensors, saver = _build_cluster_graph(args, train_set, config, task)
    last_step = train_set.steps_per_epoch(args.batch_size) * args.epochs
    raw = _RawSession()
    with graph.as_default():
        hooks = [tensors['optimizer'].make_session_run_hook(task.is_chief, num_tokens=0),
                 tf1.train.StopAtStepHook(last_step=last_step), raw]
        creator = _session_creator(args, task, saver, server.target, config_with_filters)
        print('worker %d of %d: waiting for the cluster' % (task.index, task.num_workers),
              flush=True)
        with tf1.train.MonitoredSession(creator, hooks, stop_grace_period_secs=2) as session:
            chief = task.is_chief and _ChiefDuties(raw, tensors, saver, args, val_set,
                                                   train_set.steps_per_epoch(args.batch_size))
            _cluster_loop(session, raw, tensors, chief, args, train_set, config, task,
                          last_step)
            if chief:
                raw.end_sync(tensors['optimizer'])
        with tf1.Session(server.target, graph=graph, config=config_with_filters) as session:
            session.run(tensors['done'])


def _cluster_loop(session, raw, tensors, chief, args, train_set, config, task, last_step):
    """Steps until the global step reaches last_step; prints how many this worker took."""
    first = step = raw.session.run(tensors['global_step'])
    batches = worker_batches(train_set, args.batch_size, args.epochs, config['seed'], step, task)
    step_args = args if chief else _without_summaries(args)
    taken, speed = 0, None
    with tqdm(total=last_step, initial=step, unit='step',
              desc='Worker %d, global step' % task.index) as bar, _chief_closing(chief):
        while step < last_step and not session.should_stop():
            try:
                results, seconds = trainer._train_step(session, tensors, batches, step_args,
                                                       step)
            except tf.errors.OutOfRangeError:  # the chief closed the token queue: it is over
                break
            new_step = raw.session.run(tensors['global_step'])
            taken += 1
            if not np.isfinite(results['loss']):
                raise UserError('the loss is %s at step %d: stopped; try a lower '
                                '--learning_rate' % (results['loss'], new_step))
            batch_speed = results['batch_size'] * task.num_workers / seconds
            speed = batch_speed if speed is None else 0.9 * speed + 0.1 * batch_speed
            if chief:
                chief.after_step(results, speed, step, new_step)
            bar.set_postfix_str('loss %.3f, %.1f img/s' % (results['loss'], speed))
            bar.update(new_step - step)
            step = new_step
    print('worker %d took %d steps, global step %d -> %d' % (task.index, taken, first, step),
          flush=True)


def _without_summaries(args):
    quiet = copy.copy(args)
    quiet.summary_every = quiet.image_summary_every = 2**62
    return quiet


@contextlib.contextmanager
def _chief_closing(chief):
    """Closes the chief's summaries at the end; saves a checkpoint if interrupted."""
    try:
        yield
    except KeyboardInterrupt:
        if chief:
            print('\ninterrupted: checkpoint of step %d saved in %s'
                  % (chief.save(), chief.args.ckpt_dir))
        raise
    finally:
        if chief:
            chief.writer.close()


class _ChiefDuties:
    """What the chief does besides training: summaries (of its slice of each batch),
    checkpoints every --ckpt_every steps and at the end of every epoch, validation at the end
    of every epoch."""

    def __init__(self, raw, tensors, saver, args, val_set, steps_per_epoch):
        self.raw, self.tensors, self.saver, self.args = raw, tensors, saver, args
        self.val_set, self.steps_per_epoch = val_set, steps_per_epoch
        self.writer = tf1.summary.FileWriter(args.summary_dir)
        trainer._recover_checkpoints(saver, args.ckpt_dir)

    def save(self):
        return trainer._save(self.raw.session, self.saver, self.tensors, self.args.ckpt_dir)

    def after_step(self, results, speed, step, new_step):
        for key in ('scalars', 'images'):
            if key in results:
                self.writer.add_summary(results[key], new_step)
        if 'scalars' in results:
            trainer._add_scalar(self.writer, 'images_per_second', speed, new_step)
        epoch_ended = new_step // self.steps_per_epoch > step // self.steps_per_epoch
        if epoch_ended or new_step // self.args.ckpt_every > step // self.args.ckpt_every:
            self.save()
        if epoch_ended and self.val_set is not None:
            trainer._log_validation(self.raw.session, self.tensors, self.val_set, self.args,
                                    self.writer, new_step)


def check_chief_seed(args, config, task):
    """Warns when the chief resumes checkpoints written with a seed the other workers lack."""
    shared = args.seed if args.seed is not None else task.shared_seed()
    if config['seed'] != shared:
        helper.warn('%s was written with seed %d: start every task with --seed %d so that '
                    'they share out the same batches' % (args.ckpt_dir, config['seed'],
                                                         config['seed']))

