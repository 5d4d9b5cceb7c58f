"""main.py with a tiny VGG16, for tests that run the tool in a subprocess (kills, clusters).

    python tests/tiny_main.py train --dataset demo ...

Two environment variables give a test fixed moments to act on instead of guessed times:

    TINY_MAIN_STOP_AT=<moment>:<n> TINY_MAIN_MARKER=<file>
        at the n-th such moment of this process, writes what it is doing into <file> and waits
        there (to be killed; after STOP_SECONDS it exits with code 3). Moments:
        step            a training step has run (the update is made), nothing after it yet
        save-graph      inside a save: the checkpoint's graph (.meta) is written, its
                        variables not yet
        save-variables  inside a save: the variables (.index, .data) are written, the
                        `checkpoint` file does not name them yet
        delete-index    inside the deletion of an old checkpoint: its graph and index are
                        deleted, its data not yet
        predict         predict's model is about to run on a batch (in the main thread,
                        where Ctrl-C lands), the batches before it handed to the writer
        prepare-write   a prepare worker thread has written a file under its temporary
                        name, not yet renamed into place; unlike the moments above, it goes
                        on once the test deletes the marker file
    TINY_MAIN_LOSSES=<file>
        appends the loss of every training step this process runs to <file>, one repr a line.

The wrappers live here, around the tool's and TensorFlow's functions, not in the tool.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # the tool, and synthetic.py beside this file

import main  # noqa: E402
from roadseg import tf_runtime  # noqa: E402
from synthetic import TINY_NETWORK  # noqa: E402

STOP_SECONDS = 300  # a test kills the process long before; this only ends a forgotten one


def _stop_here(what):
    """Writes `what` into the marker file (renamed into place: never read half-written), then
    waits to be killed."""
    marker = os.environ['TINY_MAIN_MARKER']
    with open(marker + '.tmp', 'w') as f:
        f.write(what)
    os.rename(marker + '.tmp', marker)
    time.sleep(STOP_SECONDS)
    print('tiny_main: nobody killed the process stopped at %s' % what, flush=True)
    os._exit(3)


def _pause_here(what):
    """Writes `what` into the marker file, then waits until the test deletes it."""
    marker = os.environ['TINY_MAIN_MARKER']
    with open(marker + '.tmp', 'w') as f:
        f.write(what)
    os.rename(marker + '.tmp', marker)
    deadline = time.monotonic() + STOP_SECONDS
    while os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.05)


def _pausing_save(save, count):
    """prepare's _save, pausing its count-th file between writing and renaming it."""
    calls = [0]

    def wrapper(write, path):
        calls[0] += 1
        if calls[0] != count:
            return save(write, path)

        def paused_write(temporary):
            write(temporary)
            _pause_here('prepare-write:%d %s' % (count, path))

        return save(paused_write, path)

    return wrapper


def _stopping(function, moment, count, describe, before):
    """function, stopping before or after its count-th call that describe(*args, **kwargs)
    counts (returns a description of, not None)."""
    calls = [0]

    def wrapper(*args, **kwargs):
        what = describe(*args, **kwargs)
        calls[0] += what is not None
        stopping = what is not None and calls[0] == count
        if stopping and before:
            _stop_here('%s:%d %s' % (moment, count, what))
        result = function(*args, **kwargs)
        if stopping:
            _stop_here('%s:%d %s' % (moment, count, what))
        return result

    return wrapper


def _install_stop(moment, count):
    """Wraps what the moment happens in: (owner, attribute, describe, before)."""
    import tensorflow as tf
    from tensorflow.python.checkpoint import checkpoint_management  # what the Saver calls
    from roadseg.apps import predict
    from roadseg.data import prepare
    from roadseg.training import loop

    if moment == 'prepare-write':
        prepare._save = _pausing_save(prepare._save, count)
        return

    places = {
        'predict': (predict, 'predict_outputs', lambda *args, **kwargs: 'batch', True),
        'step': (loop, 'train_step', lambda *args, **kwargs: 'done', False),
        'save-graph': (tf.compat.v1.train.Saver, 'save',
                       lambda self, session, prefix, step=None, **kwargs:
                       '%s-%s' % (prefix, step), True),
        'save-variables': (checkpoint_management, 'update_checkpoint_state_internal',
                           lambda *args, **kwargs: kwargs.get('model_checkpoint_path', '?'),
                           True),
        'delete-index': (checkpoint_management, '_delete_file_if_exists',
                         lambda spec: spec[:-len('.index')] if spec.endswith('.index') else None,
                         False),
    }
    owner, name, describe, before = places[moment]
    setattr(owner, name, _stopping(getattr(owner, name), moment, count, describe, before))


def _install_loss_log(path):
    from roadseg.training import loop
    train_step = loop.train_step

    def logged(*args, **kwargs):
        results, seconds = train_step(*args, **kwargs)
        with open(path, 'a') as f:
            f.write('%r\n' % float(results['loss']))
        return results, seconds

    loop.train_step = logged


if __name__ == '__main__':
    if os.environ.get('TINY_MAIN_STOP_AT') or os.environ.get('TINY_MAIN_LOSSES'):
        tf_runtime.import_tensorflow()  # as main.main would, before the wrappers import it
    if os.environ.get('TINY_MAIN_STOP_AT'):
        moment, count = os.environ['TINY_MAIN_STOP_AT'].rsplit(':', 1)
        _install_stop(moment, int(count))
    if os.environ.get('TINY_MAIN_LOSSES'):
        _install_loss_log(os.environ['TINY_MAIN_LOSSES'])
    sys.exit(main.main(network=TINY_NETWORK))
