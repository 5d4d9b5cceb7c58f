"""Training on several machines: between-graph replication on TensorFlow's distributed runtime.

Each task is one `train` process; parameter servers hold the variables
(replica_device_setter), workers feed their share of every global batch, SyncReplicasOptimizer
averages one gradient per worker per step, and worker 0, the chief, initialises, checkpoints,
writes summaries, validates and exports. Every worker runs the step loop of loop.py; only the
chief has its duties.
"""
import collections
import json
import os
import socket
import sys
import threading
import time
import zlib

import numpy as np
import tensorflow as tf

import helper
from helper import UserError
from roadseg.training import checkpoints, graph as train_graph, init_from, loop

tf1 = tf.compat.v1

JOBS = ('ps', 'worker')
DONE_QUEUE_CAPACITY = 1000  # "finished" tokens a parameter server can hold; never reached
CLUSTER_TIMEOUT = 180  # seconds a worker waits for a parameter server that does not answer


# ---------------------------------------------------------------------- the cluster and its task

class Task(collections.namedtuple('Task', 'cluster job index timeout',
                                  defaults=(CLUSTER_TIMEOUT,))):
    """This process's place in a cluster: cluster {'ps': [host:port], 'worker': [...]};
    timeout: the seconds a worker waits for a parameter server that does not answer."""

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


def cluster_task(ps_hosts=None, worker_hosts=None, job_name=None, task_index=0,
                 timeout=CLUSTER_TIMEOUT):
    """This process's Task, from --ps_hosts, --worker_hosts, --job_name and --task_index or
    else the TF_CONFIG environment variable; None when it trains alone. timeout:
    --cluster_timeout."""
    if not timeout > 0:
        raise UserError('--cluster_timeout %g must be positive' % timeout)
    if ps_hosts or worker_hosts or job_name:
        source = '--job_name'
        cluster = {'ps': _hosts(ps_hosts, '--ps_hosts'),
                   'worker': _hosts(worker_hosts, '--worker_hosts')}
        job, index = job_name, task_index
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
    return Task(cluster, job, index, timeout)


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


# ------------------------------------------------------------- a parameter server that is gone

class PsWatch:
    """Ends this worker, with one line and exit code 2, once a parameter server has not
    accepted a TCP connection for task.timeout seconds.

    A thread of its own, not a deadline on TensorFlow's calls: a worker waiting for a dead
    ps may be inside any of them (creating a session, which retries without end; a step
    waiting for a gradient or a token; MonitoredSession recreating its session after an
    UnavailableError), and a thread cannot interrupt C++ code in the main thread. So it ends
    the process as kill -9 would, which the checkpoints are made to survive; the chief's last
    checkpoint is where the same commands resume. A connect says nothing of a ps that accepts
    and then hangs: operation_timeout_in_ms would, but also ends a step that is merely slow.
    """

    def __init__(self, task, period=None):
        self.task = task
        self.period = period or min(5.0, task.timeout / 10)
        self.silent_since = {}  # ps index -> when it first failed to answer, while it fails
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name='ps-watch')

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()

    def check(self):
        """Tries every ps once; ends the process if one has been silent for too long."""
        for index, address in enumerate(self.task.cluster['ps']):
            host, _, port = address.rpartition(':')
            try:
                with socket.create_connection((host, int(port)), timeout=self.period):
                    self.silent_since.pop(index, None)
            except OSError as error:
                since = self.silent_since.setdefault(index, time.monotonic())
                if time.monotonic() - since >= self.task.timeout and not self.stopped.is_set():
                    self._end(index, address, error)

    def verdict(self, error):
        """After error, a lost connection that reached the main thread: waits while a ps is
        silent (check() ends the process with its line), and raises error once every ps
        answers."""
        self.check()
        while self.silent_since:
            time.sleep(self.period)
            self.check()
        raise error

    def _watch(self):
        while not self.stopped.wait(self.period):
            self.check()

    def _end(self, index, address, error):
        print("\nerror: the cluster's ps %d (%s) has not answered for %g s: %s; start it and "
              'run the same commands again to resume from the last checkpoint'
              % (index, address, self.task.timeout, helper.first_line(error)),
              file=sys.stderr, flush=True)
        os._exit(2)


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


def _build_cluster_graph(run):
    """The training graph with variables on the parameter servers; (graph, tensors, saver)."""
    height, width = run.train_set.image_shape
    task = run.task
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(run.config['seed'])
        with tf1.device(tf1.train.replica_device_setter(cluster=task.cluster,
                                                       worker_device=task.device())):
            tensors = train_graph.build_train_graph(
                tf.zeros([0, height, width, 3], tf.uint8), tf.zeros([0, height, width], tf.uint8),
                run.network, run.recipe, run.train_set.label_set, run.config['class_weights'],
                wrap_optimizer=lambda adam: tf1.train.SyncReplicasOptimizer(
                    adam, replicas_to_aggregate=task.num_workers,
                    total_num_replicas=task.num_workers), steps_per_epoch=run.steps_per_epoch)
        tensors['done'] = [_done_queue(ps, task.num_workers).enqueue(task.index)
                           for ps in range(len(task.cluster['ps']))]
        saver = tf1.train.Saver(max_to_keep=run.logbook.keep_checkpoints, sharded=True)
    return graph, tensors, saver


def _session_creator(run, saver, target, config):
    if run.task.is_chief:  # restores the latest checkpoint, else initialises, loads the weights
        scaffold = tf1.train.Scaffold(saver=saver, init_fn=lambda _, session:
                                      init_from.first_weights(session, run.init_plan,
                                                              run.recipe.vgg_weights))
        return tf1.train.ChiefSessionCreator(scaffold, target, config,
                                             checkpoint_dir=run.logbook.ckpt_dir)
    return _WorkerSessionCreator(tf1.train.Scaffold(saver=saver), target, config)


def train_on_cluster(run):
    """Runs this worker's part of the cluster's training to the recipe's epochs. The chief also
    checkpoints, writes summaries and validates."""
    task = run.task
    config_with_filters = tf1.ConfigProto()
    config_with_filters.CopyFrom(run.session_config)
    # Only the parameter servers and this worker: a worker that is down stalls no session.
    config_with_filters.device_filters.extend(['/job:ps', task.device()])
    server = _start_server(task, run.session_config)
    graph, tensors, saver = _build_cluster_graph(run)
    raw = _RawSession()
    with graph.as_default(), PsWatch(task) as watch:
        hooks = [tensors['optimizer'].make_session_run_hook(task.is_chief, num_tokens=0),
                 tf1.train.StopAtStepHook(last_step=run.last_step), raw]
        creator = _session_creator(run, saver, server.target, config_with_filters)
        print('worker %d of %d: waiting for the cluster' % (task.index, task.num_workers),
              flush=True)
        try:
            with tf1.train.MonitoredSession(creator, hooks, stop_grace_period_secs=2) as session:
                _worker_steps(run, session, raw, tensors, saver)
                if task.is_chief:
                    raw.end_sync(tensors['optimizer'])
            with tf1.Session(server.target, graph=graph, config=config_with_filters) as session:
                session.run(tensors['done'])
        except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
            watch.verdict(error)  # a dead ps: its one line, not this error


def _worker_steps(run, session, raw, tensors, saver):
    """Steps until the global step reaches the last; prints how many this worker took."""
    task = run.task
    first = raw.session.run(tensors['global_step'])
    batches = worker_batches(run.train_set, run.recipe.batch_size, run.recipe.epochs,
                             run.config['seed'], first, task)
    duties = None
    if task.is_chief:
        checkpoints.recover_checkpoints(saver, run.logbook.ckpt_dir)
        duties = loop.Duties.for_run(run, raw.session, tensors, saver,
                                     tf1.summary.FileWriter(run.logbook.summary_dir))
    taken = [0]

    def global_step():
        taken[0] += 1
        return raw.session.run(tensors['global_step'])

    step = loop.run(session, tensors, batches, run.recipe.keep_prob, first, run.last_step,
                    loop.StepBar('Worker %d, global step' % task.index, first, run.last_step),
                    duties, run.logbook.ckpt_dir, global_step, task.num_workers)
    print('worker %d took %d steps, global step %d -> %d' % (task.index, taken[0], first, step),
          flush=True)


def check_chief_seed(run, shared):
    """Warns when the chief resumes checkpoints written with a seed other than the one every
    worker was started with (shared: --seed, or else the one computed from the cluster)."""
    if run.config['seed'] != shared:
        helper.warn('%s was written with seed %d: start every task with --seed %d so that '
                    'they share out the same batches' % (run.logbook.ckpt_dir,
                                                         run.config['seed'], run.config['seed']))
