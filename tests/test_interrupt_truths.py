"""Interruptions and faults in the middle of training, proven end to end.

A Ctrl-C at any moment (a training step, the writing of a checkpoint, validation, the export)
leaves a checkpoint folder from which the same command resumes to the very weights, and through
the very batches, of a run that was never stopped. An infinite loss, a checkpoint folder that
turns into a file and a failed export or freeze each end in one line and leave nothing
half-written.

The signals are real: os.kill sends SIGINT to this process from inside the function a moment
runs, and Python's own handler raises KeyboardInterrupt in the main thread, so every signal
lands at the same step of every run. Tiny VGG16, 64x128 images, 6 training images at batch size
2: 3 steps an epoch, 2 epochs.
"""
import contextlib
import hashlib
import os
import resource
import signal
import threading

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management

import fcn8vgg16
import helper
import main
import synthetic
from roadseg import model_dir
from roadseg.training import checkpoints, loop

tf1 = tf.compat.v1
LAST_STEP = 6  # 2 epochs of 3 steps
CKPT_FILES = ('.data-00000-of-00001', '.index', '.meta')


@pytest.fixture(autouse=True)
def _ctrl_c_raises():
    """Python's own SIGINT handler, as in a terminal: a process that a non-interactive shell
    starts in the background (as CI may start the tests) inherits SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _flags(demo_root, folder, *extra):
    """Checkpoints at steps 2, 3 (epoch end), 4 and 6, two kept: old ones get deleted. The
    demo's keep_prob of 1: dropout's masks come from stateful generators that start afresh in
    every process, so with dropout a resumed run does not repeat the uninterrupted one."""
    return synthetic.train_flags(demo_root, folder, '-bs', '2', '-ep', '2', '--seed', '7',
                                 '-lr', '1e-3', '--ckpt_every', '2', '--keep_checkpoints', '2',
                                 '--summary_every', '1', *extra)


def _train(flags):
    """main.main's exit code; an interrupt escaping it would stop the whole test session."""
    try:
        return main.main(flags, network=synthetic.TINY_NETWORK)
    except KeyboardInterrupt:
        pytest.fail('KeyboardInterrupt escaped main.main')


def _record_batches(monkeypatch):
    """A list that receives a fingerprint of the batch of every training step, in order,
    fetched in the step's own session.run (the same way from tf.data and from a feed)."""
    seen = []
    real_step = loop.train_step

    def _step(session, graph, batches, keep_prob, extra_fetches):
        results, seconds = real_step(session, graph, batches, keep_prob, dict(
            extra_fetches, batch=(graph['images'], graph['labels'])))
        images, labels = results['batch']
        seen.append(hashlib.sha1(images.tobytes() + labels.tobytes()).hexdigest())
        return results, seconds

    monkeypatch.setattr(loop, 'train_step', _step)
    return seen


def _ctrl_c():
    """Ctrl-C: a real SIGINT to this process. From the main thread os.kill returns with the
    KeyboardInterrupt raised; from another thread, the main thread raises it when it next runs
    Python code."""
    os.kill(os.getpid(), signal.SIGINT)


def _ctrl_c_in(monkeypatch, owner, name, when, after=False):
    """owner.name sends SIGINT the first time when(*its arguments) holds: before it runs, or
    after it has run (after)."""
    real = getattr(owner, name)
    fired = []

    def _wrapper(*args, **kwargs):
        hit = not fired and when(*args, **kwargs)
        if hit:
            fired.append(True)
            if not after:
                _ctrl_c()
        result = real(*args, **kwargs)
        if hit and after:
            _ctrl_c()
        return result

    monkeypatch.setattr(owner, name, _wrapper)


def _during_step(monkeypatch, step):
    """SIGINT while TensorFlow runs the run's first step, `step`: sent by the batch IoU of its
    scalar summaries (--summary_every 1), a numpy_function TensorFlow calls in one of its own
    threads while the main thread waits in session.run."""
    real = helper.mean_iou
    calls = []

    def _mean_iou(confusion):
        if threading.current_thread() is not threading.main_thread():  # not validation's
            calls.append(confusion)
            if len(calls) == 1:
                _ctrl_c()
        return real(confusion)

    monkeypatch.setattr(helper, 'mean_iou', _mean_iou)


def _while_graph_written(monkeypatch, step):
    """SIGINT as the checkpoint of `step` starts: its graph (.meta) is about to be written."""
    _ctrl_c_in(monkeypatch, tf1.train.Saver, 'export_meta_graph',
               lambda saver, filename=None, **_: str(filename).endswith('-%d.meta' % step))


def _before_named(monkeypatch, step):
    """SIGINT once the files of the checkpoint of `step` are written, before the `checkpoint`
    file names it (and before the Saver deletes the oldest checkpoint)."""
    _ctrl_c_in(monkeypatch, checkpoint_management, 'update_checkpoint_state_internal',
               lambda **kwargs: kwargs['model_checkpoint_path'].endswith('-%d' % step))


def _during_validation(monkeypatch, step):
    """SIGINT once the validation of the epoch ending at `step` has computed its confusion
    matrix, before anything of it is logged."""
    _ctrl_c_in(monkeypatch, loop, 'validate', lambda *args: True, after=True)


# Ctrl-C in turn at each moment, each run resuming the last: (the step the interrupted run's
# last checkpoint holds, how SIGINT is sent).
INTERRUPTIONS = (
    (3, _during_validation),  # at the end of the first epoch
    (4, _before_named),  # a checkpoint in the middle of an epoch; the one of step 2 is deleted
    (5, _during_step),  # the middle step of the second epoch
    (6, _while_graph_written),  # the last checkpoint
)


def _variables(ckpt_dir):
    """{name: value} of every variable of the latest checkpoint, Adam's slots included."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt_dir)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _assert_usable(ckpt_dir, step):
    """The latest checkpoint holds `step` and restores into the graph saved beside it, its
    weights finite; every other file of the folder belongs to a complete checkpoint that the
    `checkpoint` file lists: nothing partial is left."""
    path = tf.train.latest_checkpoint(str(ckpt_dir))
    assert checkpoints.checkpoint_step(path) == step
    with tf.Graph().as_default(), tf1.Session() as session:
        tf1.train.import_meta_graph(path + '.meta').restore(session, path)
        assert session.run(tf1.train.get_global_step()) == step
        values = session.run(tf1.global_variables())
    assert all(np.isfinite(value).all() for value in values if value.dtype.kind == 'f')
    listed = [os.path.basename(p) for p in
              tf.train.get_checkpoint_state(str(ckpt_dir)).all_model_checkpoint_paths]
    assert sorted(os.listdir(ckpt_dir)) == sorted(
        ['checkpoint', model_dir.CONFIG_FILE] + [name + kind for name in listed
                                                 for kind in CKPT_FILES])


def _assert_same_variables(ckpt_dir, expected):
    values = _variables(ckpt_dir)
    assert sorted(values) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(values[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def _files(folder):
    """{path under folder: bytes} of every file below folder."""
    return {os.path.relpath(os.path.join(parent, name), folder):
            open(os.path.join(parent, name), 'rb').read()
            for parent, _, names in os.walk(folder) for name in names}


def _last_error_line(err):
    assert 'Traceback' not in err, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith('error: ')
    return line


@pytest.fixture(scope='module')
def never_stopped(demo_root, tmp_path_factory):
    """The run that was never stopped: the fingerprints of its batches, step by step, and the
    variables of its last checkpoint."""
    folder = tmp_path_factory.mktemp('never_stopped')
    with pytest.MonkeyPatch.context() as monkeypatch:
        seen = _record_batches(monkeypatch)
        assert _train(_flags(demo_root, folder)) == 0
    assert len(seen) == LAST_STEP
    return seen, _variables(folder / 'ckpt')


# ----------------------------------------------------------------------- Ctrl-C, then resume

@pytest.mark.end_to_end
def test_ctrl_c_at_every_moment_in_turn_resumes_to_the_run_never_stopped(
        demo_root, tmp_path, capsys, never_stopped):
    """A real SIGINT during validation, before a checkpoint is named, during a step's
    session.run and as the last checkpoint starts, the same command resuming after each: every
    interrupted run exits with 130 and leaves its latest checkpoint complete, of the step it
    reached, and nothing partial; every resumed run trains on exactly the batches the
    uninterrupted run trained on after that step (none lost, none repeated); the last ends with
    the same global step and the same value of every variable, Adam's slots included."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    reference_batches, reference_variables = never_stopped
    ckpt = tmp_path / 'ckpt'
    flags = _flags(demo_root, tmp_path)
    start = 0
    for step, send_ctrl_c in INTERRUPTIONS:
        with pytest.MonkeyPatch.context() as monkeypatch:
            seen = _record_batches(monkeypatch)
            send_ctrl_c(monkeypatch, step)
            assert _train(flags) == 130, send_ctrl_c.__name__
        out = capsys.readouterr().out
        assert 'interrupted: checkpoint of step %d saved in %s' % (step, ckpt) in out
        assert start == 0 or 'continuing training after %d steps' % start in out
        _assert_usable(ckpt, step)
        # A step interrupted in its session.run is trained and saved, but not recorded here.
        assert start + len(seen) in (step - 1, step), send_ctrl_c.__name__
        assert seen == reference_batches[start:start + len(seen)], send_ctrl_c.__name__
        start = step

    assert _train(flags) == 0
    assert '%s already holds %d steps' % (ckpt, LAST_STEP) in capsys.readouterr().out
    _assert_usable(ckpt, LAST_STEP)
    _assert_same_variables(ckpt, reference_variables)
    assert _variables(ckpt)['global_step'] == LAST_STEP


def _export_flags(demo_root, folder, model):
    return _flags(demo_root, folder, '--no_val', '-md', model)


@contextlib.contextmanager
def _file_size_limit(limit):
    """No file of this process can grow past limit bytes meanwhile: a write past it fails
    (EFBIG) as on a full disk, for root too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _model_writes_limited(monkeypatch, limit):
    """Every model folder is written under _file_size_limit(limit)."""
    real = model_dir.write_model_dir

    def _write_model_dir(*args):
        with _file_size_limit(limit):
            return real(*args)

    monkeypatch.setattr(model_dir, 'write_model_dir', _write_model_dir)


@pytest.mark.end_to_end
def test_an_interrupted_or_failed_export_leaves_the_previous_model_whole(demo_root, tmp_path,
                                                                         capsys):
    """The model folder holds the model of a first run. A second run trains further, and a
    real SIGINT comes once its SavedModel is written, before it takes the folder's place: exit
    code 130. The same command, nothing left to train, then fails to write its export (a file
    size limit below the SavedModel's, as a full disk), and so does a freeze into the folder:
    one line each, exit code 2. So does a freeze into it interrupted as it writes, which says so
    in one line: exit code 130. After each the folder is the first model byte for byte, with no
    temporary folder beside it. A freeze into a new folder interrupted so leaves none; one
    interrupted as its folder takes the old one's place goes on until it has, then says it was
    written. The same command then exports the last checkpoint into the folder."""
    model = tmp_path / 'model'
    flags = _export_flags(demo_root, tmp_path, model)
    assert _train(flags + ['-ep', '1']) == 0
    previous = _files(model)
    folders = sorted(os.listdir(tmp_path))
    with pytest.MonkeyPatch.context() as monkeypatch:
        _ctrl_c_in(monkeypatch, model_dir, 'write_saved_model', lambda *args: True, after=True)
        assert _train(flags) == 130
    assert _files(model) == previous and sorted(os.listdir(tmp_path)) == folders
    _assert_usable(tmp_path / 'ckpt', LAST_STEP)

    limit = min(len(data) for name, data in previous.items()
                if name.startswith(('saved_model', 'variables/variables.data'))) // 2
    freeze = ['freeze', '--gpu', '0', '-cd', tmp_path / 'ckpt', '-fd', model]
    for command in (flags, freeze):
        with pytest.MonkeyPatch.context() as monkeypatch:
            _model_writes_limited(monkeypatch, limit)
            assert _train([str(flag) for flag in command]) == 2
        line = _last_error_line(capsys.readouterr().err)
        assert line.startswith('error: cannot write the model %s (' % model), line
        assert command is freeze or line.endswith(
            '%s keeps the checkpoint of step %d: the same command exports it again'
            % (tmp_path / 'ckpt', LAST_STEP)), line
        assert _files(model) == previous and sorted(os.listdir(tmp_path)) == folders
    with pytest.MonkeyPatch.context() as monkeypatch:
        _ctrl_c_in(monkeypatch, model_dir, 'write_saved_model', lambda *args: True, after=True)
        assert _train([str(flag) for flag in freeze]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'interrupted: %s not written; the model already there is left as it was' % model)
    assert _files(model) == previous and sorted(os.listdir(tmp_path)) == folders
    fresh = tmp_path / 'fresh'
    with pytest.MonkeyPatch.context() as monkeypatch:
        _ctrl_c_in(monkeypatch, model_dir, 'write_saved_model', lambda *args: True, after=True)
        assert _train([str(flag) for flag in freeze[:-1]] + [str(fresh)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == 'interrupted: %s not written' % fresh
    assert sorted(os.listdir(tmp_path)) == folders
    with pytest.MonkeyPatch.context() as monkeypatch:
        _ctrl_c_in(monkeypatch, model_dir, 'move_into_place', lambda *args: True)
        assert _train([str(flag) for flag in freeze]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == 'interrupted: %s written' % model
    assert model_dir.read_model_config(str(model))['model_format'] == 'frozen'
    assert sorted(os.listdir(tmp_path)) == folders

    assert _train(flags) == 0
    assert '%s already holds %d steps' % (tmp_path / 'ckpt', LAST_STEP) in capsys.readouterr().out
    exported = tf.train.load_checkpoint(str(model / 'variables' / 'variables'))
    trained = _variables(tmp_path / 'ckpt')
    for name in exported.get_variable_to_shape_map():
        np.testing.assert_array_equal(exported.get_tensor(name), trained[name], err_msg=name)
    assert os.path.exists(model / model_dir.CONFIG_FILE)


# ------------------------------------------------------------------- faults that end the run

@pytest.mark.end_to_end
def test_an_infinite_loss_stops_naming_the_step_and_keeps_the_checkpoints_before(
        demo_root, tmp_path, capsys, monkeypatch):
    """A loss of +inf (not NaN) at step 3, the weights still finite: one line naming the step,
    exit code 2, and the checkpoint of step 2 stays the latest and complete."""
    real_decay = fcn8vgg16.weight_decay_loss
    steps = []

    def _infinite_from_step_3():
        steps.append(len(steps) + 1)
        return np.float32(np.inf if steps[-1] >= 3 else 0)

    monkeypatch.setattr(fcn8vgg16, 'weight_decay_loss', lambda weight_decay: real_decay(
        weight_decay) + tf.reshape(tf.numpy_function(_infinite_from_step_3, [], tf.float32), []))
    ckpt = tmp_path / 'ckpt'
    assert _train(_flags(demo_root, tmp_path, '--ckpt_every', '1', '--no_val')) == 2
    assert _last_error_line(capsys.readouterr().err) == (
        'error: the loss is inf at step 3: stopped without saving it, %s keeps the last '
        'checkpoint; try a lower --learning_rate' % ckpt)
    assert steps == [1, 2, 3]
    _assert_usable(ckpt, 2)


@pytest.mark.end_to_end
def test_a_checkpoint_folder_turned_into_a_file_is_one_line_and_keeps_the_last(
        demo_root, tmp_path, capsys):
    """The checkpoint folder is a link to a disk. After step 3 has trained, before its
    checkpoint, the disk goes and a file takes the folder's place: root cannot write into a
    file either. One line names the folder and step, exit code 2; the disk keeps step 2's
    checkpoint complete."""
    disk, ckpt = tmp_path / 'disk', tmp_path / 'ckpt'
    disk.mkdir()
    os.symlink(disk, ckpt)
    real_step = loop.train_step
    steps = []

    def _step(*args):
        result = real_step(*args)
        steps.append(result)
        if len(steps) == 3:
            os.remove(ckpt)
            ckpt.write_text('not a folder')
        return result

    flags = _flags(demo_root, tmp_path, '-ep', '1', '--ckpt_every', '1', '--no_val')
    with pytest.MonkeyPatch.context() as hook:
        hook.setattr(loop, 'train_step', _step)
        assert _train(flags) == 2
    line = _last_error_line(capsys.readouterr().err)
    assert line.startswith('error: cannot write the checkpoint of step 3 into %s (' % ckpt)
    os.remove(ckpt)
    os.symlink(disk, ckpt)
    _assert_usable(ckpt, 2)
