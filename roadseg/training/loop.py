"""One step loop for every way the tool trains: one machine with one device or several, and a
worker of a cluster. Around the steps, Duties does what a process keeps besides training
(summaries, checkpoints, validation): a single machine and a cluster's chief have them, the
other workers of a cluster none."""
import contextlib
import json
import re
import signal
import threading
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import helper
from helper import UserError
from roadseg.training import best, checkpoints
from roadseg.training.graph import VAL_PICTURES

tf1 = tf.compat.v1


def train_step(session, graph, batches, keep_prob, extra_fetches):
    """One optimiser step; returns what it fetched and its wall time in seconds. batches: a
    python generator of (images, labels) to feed, or None when the graph reads tf.data."""
    feed = {graph['keep_prob']: keep_prob}
    if batches is not None:
        feed[graph['images']], feed[graph['labels']] = next(batches)
    # The global step goes up by one per run; fetched in the same run it may be stale.
    fetches = dict(extra_fetches, train=graph['train_op'], loss=graph['loss'],
                   batch_size=graph['batch_size'])
    started = time.perf_counter()
    results = session.run(fetches, feed)
    return results, time.perf_counter() - started


def add_scalar(writer, tag, value, step):
    writer.add_summary(tf1.Summary(value=[tf1.Summary.Value(tag=tag, simple_value=value)]),
                       step)


def validate(session, graph, dataset, batch_size):
    """Confusion matrix of the current model over a whole split (no dropout)."""
    num_classes = dataset.label_set.num_classes
    total = np.zeros((num_classes, num_classes), np.int64)
    for images, labels in dataset.generator(batch_size, shuffle=False):
        total += session.run(graph['confusion'],
                             {graph['images']: images, graph['labels']: labels})
    return total


def config_text(config):
    """The run's configuration as a TensorBoard text summary (the TEXT tab), as JSON."""
    summary = tf1.Summary()
    value = summary.value.add(tag='config')
    value.metadata.plugin_data.plugin_name = 'text'
    text = '\n'.join('    ' + line for line in json.dumps(config, indent=1).splitlines())
    value.tensor.CopyFrom(tf1.make_tensor_proto(text))
    return summary


class Duties:
    """Summaries every logbook.summary_every steps, pictures (input, prediction, truth) at the
    first step, at the end of every epoch and every image_summary_every steps, checkpoints
    every ckpt_every steps and at the end of every epoch (after_step), then validation with
    pictures of the same few val images each time, chosen by seed, and the count of skipped
    files (end_epoch). session: one that runs the graph without a cluster's hooks."""

    def __init__(self, session, graph, saver, logbook, steps_per_epoch, writer, batch_size,
                 train_set, val_set=None, seed=0, keeper=None):
        self.session, self.graph, self.saver, self.logbook = session, graph, saver, logbook
        self.steps_per_epoch, self.writer, self.batch_size = steps_per_epoch, writer, batch_size
        self.train_set, self.val_set = train_set, val_set
        self.val_pictures = sorted(np.random.default_rng(seed).choice(
            len(val_set), min(len(val_set), VAL_PICTURES), replace=False)) if val_set else []
        self.pictured = False
        self.keeper, self.stop = keeper, False  # a best.BestModel; stop: the early stop came

    @classmethod
    def for_run(cls, run, session, graph, saver, writer):
        """The duties of a trainer.Run's process that keeps the checkpoints."""
        writer.add_summary(config_text(run.config), 0)
        keeper = run.val_set and best.BestModel(run.logbook.best_dir, run.logbook.ckpt_dir,
                                                run.config, run.network, run.recipe.early_stop)
        return cls(session, graph, saver, run.logbook, run.steps_per_epoch, writer,
                   run.recipe.micro_batch_size, run.train_set, run.val_set, run.config['seed'],
                   keeper or None)

    def fetches(self, step):
        """What the step after `step` fetches besides training."""
        fetches = {}
        if (step + 1) % self.logbook.summary_every == 0:
            fetches['scalars'] = self.graph['scalars']
        if (not self.pictured or (step + 1) % self.logbook.image_summary_every == 0
                or self.epoch_ended(step, step + 1)):
            fetches['images'] = self.graph['image_summary']
            self.pictured = True
        return fetches

    def save(self):
        return checkpoints.save(self.session, self.saver, self.graph, self.logbook.ckpt_dir)

    def after_step(self, results, speed, step, new_step):
        for key in ('scalars', 'images'):
            if key in results:
                self.writer.add_summary(results[key], new_step)
        if 'scalars' in results:
            add_scalar(self.writer, 'images_per_second', speed, new_step)
        if (self.epoch_ended(step, new_step)
                or new_step // self.logbook.ckpt_every > step // self.logbook.ckpt_every):
            self.save()

    def epoch_ended(self, step, new_step):
        return new_step // self.steps_per_epoch > step // self.steps_per_epoch

    def end_epoch(self, step):
        """Validation and the count of skipped files, once the epoch's checkpoint is saved."""
        if self.val_set is not None:
            self.log_validation(step)
        for name, dataset in (('training', self.train_set), ('validation', self.val_set)):
            if dataset is not None and dataset.skipped:
                print('%d of %d %s samples skipped so far (--skip_bad_files)'
                      % (len(dataset.skipped), len(dataset), name))

    def log_validation(self, step):
        confusion = validate(self.session, self.graph, self.val_set, self.batch_size)
        value = helper.mean_iou(confusion)
        add_scalar(self.writer, 'val/mean_iou', value, step)
        add_scalar(self.writer, 'val/pixel_accuracy', helper.pixel_accuracy(confusion), step)
        self.write_val_pictures(step)
        print('step %d: val mean IoU %.1f%% over %d images'
              % (step, 100 * value, len(self.val_set)))
        if self.keeper:
            self.stop = self.keeper.update(value, step, step // self.steps_per_epoch)
            add_scalar(self.writer, 'val/best_mean_iou', self.keeper.value, step)
        self.writer.flush()

    def write_val_pictures(self, step):
        """The chosen val images with the current model's predictions, side by side."""
        images, labels = zip(*(self.val_set.sample(index) for index in self.val_pictures))
        summary = self.session.run(self.graph['val_image_summary'], {
            self.graph['images']: np.stack(images), self.graph['labels']: np.stack(labels)})
        self.writer.add_summary(summary, step)

    def close(self):
        self.writer.close()


class EpochBars:
    """A progress bar per epoch, as one machine shows its training."""

    def __init__(self, epochs, steps_per_epoch):
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.bar, self.epoch = None, None

    def update(self, step, new_step, postfix):
        epoch = step // self.steps_per_epoch
        if self.bar is None or epoch != self.epoch:
            self.close()
            self.epoch = epoch
            self.bar = tqdm(total=self.steps_per_epoch, initial=step % self.steps_per_epoch,
                            desc='Train Epoch %2d/%d' % (epoch + 1, self.epochs), unit='step')
        self.bar.set_postfix_str(postfix)
        self.bar.update(new_step - step)
        if new_step % self.steps_per_epoch == 0:
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StepBar:
    """One progress bar over the global steps, as a cluster's worker shows its training."""

    def __init__(self, description, step, last_step):
        self.bar = tqdm(total=last_step, initial=step, unit='step', desc=description)

    def update(self, step, new_step, postfix):
        self.bar.set_postfix_str(postfix)
        self.bar.update(new_step - step)

    def close(self):
        self.bar.close()


@contextlib.contextmanager
def sigterm_as_interrupt():
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


def pipeline_error(error):
    """A UserError raised inside tf.data's numpy_function reaches us as an OpError: unwrap it."""
    match = re.search(r'UserError: (.*)', error.message)
    if match:
        return UserError(match.group(1).strip())
    return error


class Speed:
    """Images per second, an exponential average over the steps; workers: the processes that
    each train on a slice of the same global batch."""

    def __init__(self, workers=1):
        self.workers, self.value = workers, None

    def update(self, batch_size, seconds):
        rate = batch_size * self.workers / seconds
        self.value = rate if self.value is None else 0.9 * self.value + 0.1 * rate
        return self.value


def run(session, graph, batches, keep_prob, step, last_step, bar, duties=None, ckpt_dir=None,
        global_step=None, workers=1):
    """Steps from global step `step` to last_step; returns the step reached.

    global_step() reads the global step after each step where other processes move it too (a
    cluster; its end also comes from the chief closing the queue of tokens, OutOfRangeError).
    A loss that is not finite stops training without saving it. Ctrl-C or SIGTERM saves the
    step reached (with duties) and goes on up as KeyboardInterrupt.
    """
    speed = Speed(workers)
    try:
        with sigterm_as_interrupt():
            while step < last_step and not (global_step and session.should_stop()):
                try:
                    results, seconds = train_step(session, graph, batches, keep_prob,
                                                  duties.fetches(step) if duties else {})
                except tf.errors.OutOfRangeError:
                    if global_step is None:
                        raise
                    break  # the chief closed the token queue: training is over
                new_step = global_step() if global_step else step + 1
                _check_loss(results['loss'], new_step, ckpt_dir)
                rate = speed.update(results['batch_size'], seconds)
                if duties:  # a step shows once its checkpoint, if it has one, is saved
                    duties.after_step(results, rate, step, new_step)
                bar.update(step, new_step, 'loss %.3f, %.1f img/s' % (results['loss'], rate))
                if duties and duties.epoch_ended(step, new_step):
                    duties.end_epoch(new_step)
                step = new_step
                if duties and duties.stop:
                    break
    except tf.errors.OpError as error:
        raise pipeline_error(error) from None
    except KeyboardInterrupt as interrupt:
        if duties:
            print('\n%s: checkpoint of step %d saved in %s' % (
                'terminated' if isinstance(interrupt, helper.Terminated) else 'interrupted',
                duties.save(), duties.logbook.ckpt_dir))
        raise
    finally:
        bar.close()
        if duties:
            duties.close()
    return step


def _check_loss(loss, step, ckpt_dir):
    if not np.isfinite(loss):
        raise UserError('the loss is %s at step %d: stopped without saving it, %s keeps the last '
                        'checkpoint; try a lower --learning_rate' % (loss, step, ckpt_dir))
