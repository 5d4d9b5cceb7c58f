"""Data-parallel training: virtual CPU devices in this process, a ps and two workers as
subprocesses on 127.0.0.1. Tiny VGG16, 64x128 images, a few steps."""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import data_loader
from roadseg import specs
from roadseg.training import cluster, graph as train_graph
import fcn8vgg16
import main
import synthetic
from roadseg.training import vgg_weights
from helper import UserError

tf1 = tf.compat.v1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300  # seconds a cluster test may take before its processes are killed
_flags = synthetic.train_flags


def checkpoint_values(ckpt_dir):
    """{name: value} of the latest checkpoint, the optimizer's slots included."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt_dir)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def scalar_values(summary_dir, tag):
    """[(step, value)] of a scalar summary, in step order."""
    values = []
    for path in glob.glob(os.path.join(str(summary_dir), '**', 'events.*'), recursive=True):
        for event in tf1.train.summary_iterator(path):
            values += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return sorted(values)


# ------------------------------------------------------------------ several devices, one machine

@pytest.mark.end_to_end
@pytest.mark.parametrize('pipeline', ['tfdata', 'generator'])
def test_two_replicas_follow_one_device(demo_root, tmp_path, tiny_model, pipeline):
    """Global batch 4 as 2 x 2 on two virtual CPUs: the same losses step by step as 4 on one
    device, the short last batch of every epoch (2 images) included, and the same weights."""
    runs = {}
    for replicas in (1, 2):
        folder = tmp_path / str(replicas)
        assert main.main(_flags(demo_root, folder, '-ep', 3, '--seed', 3, '--no_val',
                                '--pipeline', pipeline, '--summary_every', 1,
                                '--cpu_replicas', replicas, '-lr', '1e-3'), network=tiny_model) == 0
        runs[replicas] = (scalar_values(folder / 'summaries', 'loss'),
                          checkpoint_values(folder / 'ckpt'))
    (steps_1, losses_1), (steps_2, losses_2) = (zip(*runs[n][0]) for n in (1, 2))
    assert steps_1 == steps_2 == tuple(range(1, 7))  # the global step goes up by one a step
    np.testing.assert_allclose(losses_2, losses_1, rtol=1e-4)
    assert losses_1[-1] < losses_1[0] - 0.1  # it learned: the comparison is not of constants
    assert sorted(runs[1][1]) == sorted(runs[2][1])  # the very same variable names
    for name, value in runs[1][1].items():
        np.testing.assert_allclose(runs[2][1][name], value, rtol=1e-3, atol=1e-5, err_msg=name)


@pytest.mark.end_to_end
def test_checkpoints_move_between_one_and_two_devices(demo_root, tmp_path, tiny_model,
                                                      capsys):
    """2 devices, then 1, then 2 on the same checkpoints ends where 1 device all along does:
    restoring fills every replica's copy, not only the first."""
    common = ('--seed', 4, '--no_val', '-lr', '1e-3')
    assert main.main(_flags(demo_root, tmp_path / 'one', '-ep', 3, *common),
                     network=tiny_model) == 0
    for epochs, replicas in ((1, 2), (2, 1), (3, 2)):
        assert main.main(_flags(demo_root, tmp_path / 'moved', '-ep', epochs,
                                '--cpu_replicas', replicas, *common), network=tiny_model) == 0
    assert 'continuing training after 4 steps' in capsys.readouterr().out
    assert tf.train.latest_checkpoint(str(tmp_path / 'moved' / 'ckpt')).endswith('-6')
    one, moved = (checkpoint_values(tmp_path / run / 'ckpt') for run in ('one', 'moved'))
    for name, value in one.items():
        np.testing.assert_allclose(moved[name], value, rtol=1e-3, atol=1e-5, err_msg=name)
    model = sorted(glob.glob(str(tmp_path / 'moved' / 'runs' / '*' / 'model')))[-1]
    with tf.Graph().as_default(), tf1.Session() as session:  # the export is the usual graph
        tf1.saved_model.loader.load(session, [fcn8vgg16.SAVED_MODEL_TAG], model)
        output = session.run(fcn8vgg16.OUTPUT_TENSOR,
                             {fcn8vgg16.INPUT_TENSOR: np.zeros((1, 64, 128, 3), np.uint8)})
        assert output.shape == (1, 64, 128)


@pytest.mark.end_to_end
def test_four_replicas_take_a_batch_shorter_than_the_devices(demo_root, tmp_path, tiny_model):
    """6 images at batch 4 on 4 devices: the last batch of 2 leaves two replicas empty."""
    assert main.main(_flags(demo_root, tmp_path, '--cpu_replicas', 4, '--seed', 1,
                            '--summary_every', 1), network=tiny_model) == 0
    losses = scalar_values(tmp_path / 'summaries', 'loss')
    assert [step for step, _ in losses] == [1, 2] and all(np.isfinite(v) for _, v in losses)
    assert scalar_values(tmp_path / 'summaries', 'val/mean_iou')


def test_pretrained_weights_reach_every_replica(tiny_model):
    """load_vgg_weights on a replicated graph fills the copies on every device."""
    label_set = data_loader.get_label_set('cityscapes')
    recipe = specs.Recipe(epochs=1, batch_size=4, learning_rate=1e-4)
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype(np.float32)
    with tf.Graph().as_default() as graph:
        train_graph.build_train_graph(tf.zeros([0, 64, 128, 3], tf.uint8),
                                      tf.zeros([0, 64, 128], tf.uint8), tiny_model, recipe,
                                      label_set, devices=['/cpu:0', '/cpu:1'])
        with tf1.Session(config=tf1.ConfigProto(device_count={'CPU': 2})) as session:
            session.run(tf1.global_variables_initializer())
            vgg_weights.load_vgg_weights(session, {'conv1_1': (kernel, np.ones(4, np.float32))})
            (variable,) = [v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                           if v.op.name == 'conv1_1/filter']
            copies = session.run(list(variable.values))
    assert len(copies) == 2
    for copy in copies:
        np.testing.assert_array_equal(copy, kernel)


def _error(capsys, flags):
    code = main.main(flags, network=synthetic.TINY_NETWORK)
    assert code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.end_to_end
@pytest.mark.parametrize('extra, message', [
    (['--cpu_replicas', '3'], '--batch_size 4 does not divide among 3 devices'),
    (['--cpu_replicas', '0'], '--cpu_replicas 0 must be at least 1'),
    (['--job_name', 'worker', '--worker_hosts', '127.0.0.1:1'],
     'the cluster has no ps task (--ps_hosts)'),
    (['--job_name', 'worker', '--ps_hosts', '127.0.0.1:1', '--worker_hosts', '127.0.0.1:2',
      '--task_index', '1'], 'task index 1 is not among the 1 worker tasks'),
    (['--job_name', 'worker', '--ps_hosts', 'nowhere', '--worker_hosts', '127.0.0.1:2'],
     "--ps_hosts: 'nowhere' is not host:port"),
    (['--job_name', 'worker', '--ps_hosts', '127.0.0.1:1', '--worker_hosts',
      '127.0.0.1:2,127.0.0.1:3,127.0.0.1:4'], '--batch_size 4 does not divide among 3 workers'),
    (['--job_name', 'worker', '--ps_hosts', '127.0.0.1:1', '--worker_hosts', '127.0.0.1:2',
      '--cpu_replicas', '2'], 'a cluster task trains on one device'),
])
def test_bad_flags_are_one_line(demo_root, tmp_path, tiny_model, capsys, extra, message):
    line = _error(capsys, _flags(demo_root, tmp_path, *extra))
    assert line.startswith('error: ') and message in line
    assert not glob.glob(str(tmp_path / 'ckpt' / 'model.ckpt*'))


@pytest.mark.end_to_end
@pytest.mark.parametrize('tf_config, message', [
    ('{"cluster": ', 'TF_CONFIG is not {"cluster"'),
    ('{"cluster": {"chief": ["a:1"], "ps": ["b:2"], "worker": ["c:3"]}, '
     '"task": {"type": "chief", "index": 0}}', "the cluster has a 'chief' job"),
    ('{"cluster": {"ps": ["b:2"], "worker": ["c:3"]}, "task": {"type": "evaluator"}}',
     "the task type is 'evaluator'"),
])
def test_bad_tf_config_is_one_line(demo_root, tmp_path, tiny_model, capsys, monkeypatch,
                                   tf_config, message):
    monkeypatch.setenv('TF_CONFIG', tf_config)
    line = _error(capsys, _flags(demo_root, tmp_path))
    assert line.startswith('error: TF_CONFIG') and message in line


def test_tf_config_and_flags_give_the_same_task(monkeypatch):
    from_flags = cluster.cluster_task('h:1', 'h:2,h:3', 'worker', 1)
    monkeypatch.setenv('TF_CONFIG', '{"cluster": {"ps": ["h:1"], "worker": ["h:2", "h:3"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    assert cluster.cluster_task() == from_flags
    assert from_flags.num_workers == 2 and not from_flags.is_chief
    monkeypatch.delenv('TF_CONFIG')
    assert cluster.cluster_task() is None
    with pytest.raises(UserError):
        cluster.cluster_task('h:1', 'h:2', 'worker', -1)


def test_worker_slices_make_up_the_global_batches(demo_root):
    """The workers' slices of every step, put together, are Dataset.generator's batches."""
    dataset = data_loader.Dataset(os.path.join(demo_root, 'leftImg8bit/train/*/*.png'),
                                  os.path.join(demo_root, 'gtFine/train'),
                                  data_loader.get_label_set('cityscapes'), (64, 128))
    tasks = [cluster.Task({'ps': ['h:1'], 'worker': ['h:2', 'h:3']}, 'worker', index)
             for index in (0, 1)]
    whole = list(dataset.generator(4, epochs=2, seed=7, start_step=1))
    slices = [list(cluster.worker_batches(dataset, 4, 2, 7, 1, task))[:len(whole)]
              for task in tasks]
    for step, (images, labels) in enumerate(whole):
        np.testing.assert_array_equal(
            np.concatenate([slices[0][step][0], slices[1][step][0]]), images)
        np.testing.assert_array_equal(
            np.concatenate([slices[0][step][1], slices[1][step][1]]), labels)


# --------------------------------------------------------------------------- several machines

def _reserved_ports(count):
    """count sockets bound to free loopback ports, with SO_REUSEPORT and never listening. While
    they are open no other process can bind these ports or be given them, yet a TensorFlow
    server started with TF_GRPC_REUSE_PORT=1 binds them too, and being the only one listening,
    it alone takes the connections: no port is left free between its choice and its use."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(('127.0.0.1', 0))
        sockets.append(sock)
    return sockets


class Cluster:
    """A ps and two workers of tests/tiny_main.py on 127.0.0.1, each logging to a file, on
    ports reserved until kill(), which ends all. tf_config: the tasks read the cluster from
    the TF_CONFIG environment variable instead of flags."""

    def __init__(self, demo_root, folder, *extra, tf_config=False):
        self.ports = _reserved_ports(3)
        ps, *workers = ['127.0.0.1:%d' % sock.getsockname()[1] for sock in self.ports]
        self.hosts = {'ps': [ps], 'worker': workers}
        self.flags = _flags(demo_root, folder, *extra)
        self.folder, self.tf_config, self.processes, self.logs = folder, tf_config, {}, {}

    def start(self, name, job, index, **env):
        """Starts a task; env: more environment variables (tiny_main's)."""
        env = dict(os.environ, PYTHONUNBUFFERED='1', TF_GRPC_REUSE_PORT='1', **env)
        env.pop('TF_CONFIG', None)
        flags = list(self.flags)
        if self.tf_config:
            env['TF_CONFIG'] = json.dumps({'cluster': self.hosts,
                                           'task': {'type': job, 'index': index}})
        else:
            flags += ['--ps_hosts', ','.join(self.hosts['ps']), '--worker_hosts',
                      ','.join(self.hosts['worker']), '--job_name', job,
                      '--task_index', str(index)]
        log = self.folder / ('%s.log' % name)
        with open(log, 'w') as output:
            self.processes[name] = subprocess.Popen(
                [sys.executable, os.path.join(REPO, 'tests', 'tiny_main.py')] + flags,
                stdout=output, stderr=subprocess.STDOUT, cwd=str(self.folder), env=env)
        self.logs[name] = log

    def wait(self, name):
        code = self.processes[name].wait(timeout=TIMEOUT)
        assert code == 0, '%s exited with %d:\n%s' % (name, code, self.output(name)[-3000:])
        return self.output(name)

    def output(self, name):
        return self.logs[name].read_text()

    def kill(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for sock in self.ports:
            sock.close()


def took(output, index):
    """(steps taken, first global step, last global step) that worker `index` printed."""
    line = [line for line in output.splitlines() if line.startswith('worker %d took' % index)]
    assert line, output[-3000:]
    words = line[-1].split()
    return int(words[3]), int(words[7]), int(words[9])


@pytest.mark.end_to_end
def test_ps_and_two_workers_train_in_step(demo_root, tmp_path, tiny_model, capsys):
    """6 images at global batch 4 for 3 epochs: 6 global steps; each worker computes every one
    of them (2 images each), the chief checkpoints, summarises and exports; all exit 0. One
    process then resumes the cluster's checkpoints."""
    cluster = Cluster(demo_root, tmp_path, '-ep', 3, '--ckpt_every', 2, '--summary_every', 1)
    try:
        cluster.start('ps', 'ps', 0)
        cluster.start('chief', 'worker', 0)
        cluster.start('worker1', 'worker', 1)
        assert took(cluster.wait('chief'), 0) == (6, 0, 6)
        assert took(cluster.wait('worker1'), 1) == (6, 0, 6)
        assert 'all 2 workers have finished' in cluster.wait('ps')
    finally:
        cluster.kill()
    ckpt = tmp_path / 'ckpt'
    assert tf.train.latest_checkpoint(str(ckpt)).endswith('-6')
    assert sorted(glob.glob(str(ckpt / '*.index'))) == [
        str(ckpt / ('model.ckpt-%d.index' % step)) for step in (2, 4, 6)]
    assert [step for step, _ in scalar_values(tmp_path / 'summaries', 'loss')] == list(range(1, 7))
    assert len(scalar_values(tmp_path / 'summaries', 'val/mean_iou')) == 3  # one per epoch
    assert len(glob.glob(str(tmp_path / 'runs' / '*' / 'model' / 'saved_model.pb'))) == 1
    names = set(checkpoint_values(ckpt))
    assert 'global_step' in names and not [n for n in names if 'sync' in n or 'replica' in n]
    capsys.readouterr()
    assert main.main(_flags(demo_root, tmp_path, '-ep', 4, '--no_val'), network=tiny_model) == 0
    assert 'continuing training after 6 steps' in capsys.readouterr().out
    assert tf.train.latest_checkpoint(str(ckpt)).endswith('-8')


def _losses(path):
    """The losses tiny_main recorded (TINY_MAIN_LOSSES), one a step."""
    return [float(line) for line in open(path).read().split()]


# Augmented crops are padded with ignored pixels, so the workers' slices of a batch can hold
# different numbers of pixels: each worker's loss is its slice's mean and SyncReplicasOptimizer
# averages the workers' gradients, where one device takes the mean over all the batch's pixels.
UNEQUAL_SLICES = ('the cluster averages the workers\' slice means; one device weighs every '
                  'pixel of the batch alike')


@pytest.mark.end_to_end
@pytest.mark.parametrize('augment', [
    '--no_augment',
    pytest.param('--augment', marks=pytest.mark.xfail(strict=True, reason=UNEQUAL_SLICES))])
def test_cluster_from_tf_config_follows_one_device(demo_root, tmp_path, tiny_model, augment):
    """A ps and two workers started from TF_CONFIG alone, each worker training on 2 images of
    every global batch of 4 (1 of the last batch of an epoch, 2 images), against one device
    fed the whole batches: at every step the workers' two losses average to the one device's
    loss of the whole batch, the chief's TensorBoard shows its own, and the variables end the
    same."""
    common = ('-ep', 3, '--seed', 5, '--no_val', '--summary_every', 1, '-lr', '1e-3', augment)
    os.makedirs(tmp_path / 'cluster')
    cluster = Cluster(demo_root, tmp_path / 'cluster', *common, tf_config=True)
    worker_losses = [tmp_path / 'cluster' / ('losses%d.txt' % index) for index in (0, 1)]
    try:
        cluster.start('ps', 'ps', 0)
        for index, name in enumerate(('chief', 'worker1')):
            cluster.start(name, 'worker', index, TINY_MAIN_LOSSES=str(worker_losses[index]))
        assert took(cluster.wait('chief'), 0) == (6, 0, 6)
        assert took(cluster.wait('worker1'), 1) == (6, 0, 6)
        assert 'all 2 workers have finished' in cluster.wait('ps')
    finally:
        cluster.kill()
    assert main.main(_flags(demo_root, tmp_path / 'one', *common), network=tiny_model) == 0
    steps, one_device = zip(*scalar_values(tmp_path / 'one' / 'summaries', 'loss'))
    assert steps == tuple(range(1, 7)) and one_device[-1] < one_device[0] - 0.1  # it learned
    chief, worker1 = (_losses(path) for path in worker_losses)
    np.testing.assert_allclose((np.array(chief) + worker1) / 2, one_device, rtol=1e-5)
    steps, chief_summaries = zip(*scalar_values(tmp_path / 'cluster' / 'summaries', 'loss'))
    assert steps == tuple(range(1, 7))
    np.testing.assert_allclose(chief_summaries, chief, rtol=1e-6)
    cluster_variables = checkpoint_values(tmp_path / 'cluster' / 'ckpt')
    one_variables = checkpoint_values(tmp_path / 'one' / 'ckpt')
    assert sorted(cluster_variables) == sorted(one_variables)
    for name, value in one_variables.items():
        np.testing.assert_allclose(cluster_variables[name], value, rtol=1e-4, atol=1e-5,
                                   err_msg=name)


@pytest.mark.end_to_end
def test_killed_worker_restarts_and_the_run_completes(demo_root, tmp_path):
    """Worker 1 is killed between steps, after its 5th, where tests/tiny_main.py stops it: the
    cluster waits for it (a synchronous step needs both); restarted, it joins at global step 5
    and training completes. (Killed inside a step, after handing in its gradient and before
    taking its token, it leaves that token to the chief, which then goes on alone: not tested
    here, as no moment outside TensorFlow marks it.)"""
    cluster = Cluster(demo_root, tmp_path, '-ep', 8, '--ckpt_every', 2, '--no_val')
    try:
        _start_with_one_stopped(cluster, tmp_path, 'worker1')
        cluster.processes['worker1'].send_signal(signal.SIGKILL)
        assert cluster.processes['worker1'].wait(timeout=TIMEOUT) == -signal.SIGKILL
        cluster.start('worker1_again', 'worker', 1)
        taken, first, last = took(cluster.wait('worker1_again'), 1)
        assert (first, last) == (5, 16) and taken >= last - first
        assert took(cluster.wait('chief'), 0)[2] == 16
        assert 'all 2 workers have finished' in cluster.wait('ps')
    finally:
        cluster.kill()
    assert tf.train.latest_checkpoint(str(tmp_path / 'ckpt')).endswith('-16')


def _start_with_one_stopped(cluster, tmp_path, stopped):
    """Starts the ps, the chief and worker 1; returns once `stopped` (chief or worker1) waits
    after its 5th step, where tests/tiny_main.py stops it."""
    marker = tmp_path / (stopped + '.marker')
    cluster.start('ps', 'ps', 0)
    for name, index in (('chief', 0), ('worker1', 1)):
        stop = dict(TINY_MAIN_STOP_AT='step:5', TINY_MAIN_MARKER=str(marker))
        cluster.start(name, 'worker', index, **(stop if name == stopped else {}))
    _wait_for_marker(marker, cluster.processes[stopped], cluster.logs[stopped])


def _wait_for_marker(marker, process, log):
    """Waits until the process has written the marker file, where tiny_main stops it."""
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, 'the process never reached its moment'
        time.sleep(0.05)


def _latest_step(ckpt_dir):
    return int(tf.train.latest_checkpoint(str(ckpt_dir)).rpartition('-')[2])


@pytest.mark.end_to_end
def test_killed_ps_ends_the_workers_in_one_line_and_the_same_commands_resume(demo_root,
                                                                             tmp_path):
    """The ps is killed while worker 1 waits after its 5th step (tests/tiny_main.py stops it
    there): within --cluster_timeout both workers end with exit code 2 and one line naming the
    ps. The same three commands again resume from the chief's last checkpoint and complete."""
    timeout = 10
    cluster = Cluster(demo_root, tmp_path, '-ep', 8, '--ckpt_every', 2, '--no_val',
                      '--cluster_timeout', timeout)
    try:
        _start_with_one_stopped(cluster, tmp_path, 'worker1')
        cluster.processes['ps'].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert cluster.processes['ps'].wait(timeout=TIMEOUT) == -signal.SIGKILL
        for name in ('chief', 'worker1'):
            assert cluster.processes[name].wait(timeout=TIMEOUT) == 2, cluster.output(name)
            last = cluster.output(name).strip().splitlines()[-1]
            assert last.startswith("error: the cluster's ps 0 (%s) has not answered for 10 s: "
                                   % cluster.hosts['ps'][0]), cluster.output(name)[-3000:]
        assert time.monotonic() - killed < 3 * timeout  # no wait for TIMEOUT
        saved = _latest_step(tmp_path / 'ckpt')
        assert 2 <= saved < 8
        cluster.start('ps_again', 'ps', 0)
        cluster.start('chief_again', 'worker', 0)
        cluster.start('worker1_again', 'worker', 1)
        assert took(cluster.wait('chief_again'), 0)[1:] == (saved, 16)
        assert took(cluster.wait('worker1_again'), 1)[1:] == (saved, 16)
        assert 'all 2 workers have finished' in cluster.wait('ps_again')
    finally:
        cluster.kill()
    assert _latest_step(tmp_path / 'ckpt') == 16


@pytest.mark.end_to_end
def test_killed_chief_restarts_and_the_run_completes(demo_root, tmp_path):
    """The chief is killed between steps, after its 5th: worker 1 waits for it (its ps still
    answers, so --cluster_timeout does not end it); restarted, the chief resumes from its
    last checkpoint and both workers train to the end."""
    cluster = Cluster(demo_root, tmp_path, '-ep', 8, '--ckpt_every', 2, '--no_val',
                      '--cluster_timeout', 10)
    try:
        _start_with_one_stopped(cluster, tmp_path, 'chief')
        cluster.processes['chief'].send_signal(signal.SIGKILL)
        assert cluster.processes['chief'].wait(timeout=TIMEOUT) == -signal.SIGKILL
        saved = _latest_step(tmp_path / 'ckpt')
        assert 2 <= saved < 8
        time.sleep(15)  # longer than --cluster_timeout: worker 1 waits all the same
        assert cluster.processes['worker1'].poll() is None, cluster.output('worker1')[-3000:]
        cluster.start('chief_again', 'worker', 0)
        assert took(cluster.wait('chief_again'), 0)[1:] == (saved, 16)
        assert took(cluster.wait('worker1'), 1)[2] == 16
        assert 'all 2 workers have finished' in cluster.wait('ps')
    finally:
        cluster.kill()
    assert _latest_step(tmp_path / 'ckpt') == 16


def test_ps_watch_counts_a_ps_silent_only_while_it_refuses():
    """A ps that refuses connections is silent from its first refusal until it answers; the
    watch re-raises a worker's lost connection once every ps answers."""
    listening, refusing = _reserved_ports(2)
    listening.listen()
    task = cluster.Task({'ps': ['127.0.0.1:%d' % sock.getsockname()[1]
                                for sock in (listening, refusing)],
                         'worker': ['127.0.0.1:1']}, 'worker', 0, timeout=60)
    watch = cluster.PsWatch(task)
    try:
        watch.check()
        assert list(watch.silent_since) == [1]
        refusing.listen()
        watch.check()
        assert watch.silent_since == {}
        with pytest.raises(tf.errors.UnavailableError):
            watch.verdict(tf.errors.UnavailableError(None, None, 'lost'))
    finally:
        listening.close()
        refusing.close()


@pytest.mark.end_to_end
def test_ps_watch_ends_the_worker_in_one_line_after_the_timeout():
    (refusing,) = _reserved_ports(1)
    address = '127.0.0.1:%d' % refusing.getsockname()[1]
    code = ('import sys, time; sys.path.insert(0, %r)\n'
            'from roadseg.training import cluster\n'
            'task = cluster.Task({"ps": [%r], "worker": ["127.0.0.1:1"]}, "worker", 0, 0.5)\n'
            'with cluster.PsWatch(task, period=0.1):\n'
            '    time.sleep(30)\n' % (REPO, address))
    try:
        done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                              timeout=TIMEOUT)
    finally:
        refusing.close()
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "error: the cluster's ps 0 (%s) has not answered for 0.5 s: " % address)
