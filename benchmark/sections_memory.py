"""The memory section: the peak RSS of the real command lines, `main.py train` (at the batch,
at its micro-batch, and at the micro-batch with --accumulate) and `main.py predict`, each in a
process of its own."""
import functools
import os
import shutil
import sys

from benchmark import measure
from benchmark.config import ACCUMULATE, GB, IMAGE_SHAPE, REPO, TRAIN_BATCH
from benchmark.report import Table, table_row
from benchmark.targets import format_value

MAIN = os.path.join(REPO, 'main.py')
MICRO_BATCH = TRAIN_BATCH // ACCUMULATE
# The command lines measured: (row, raw key, -bs, --accumulate or None, target).
TRAIN_ROWS = (('train (float32, batch %d)' % TRAIN_BATCH, 'train_rss', TRAIN_BATCH, None,
               'train_rss'),
              ('train -bs %d (float32, the micro-batch alone)' % MICRO_BATCH,
               'train_micro_rss', MICRO_BATCH, None, None),
              ('train -bs %d --accumulate %d (float32, the update of batch %d)' % (
                  MICRO_BATCH, ACCUMULATE, TRAIN_BATCH), 'train_accumulate_rss', MICRO_BATCH,
               ACCUMULATE, None))


def _train_command(run, folder, batch, accumulate):
    images_glob, labels_dir = run.sources()
    return [sys.executable, MAIN, 'train', '--dataset', 'cityscapes',
            '-ip', images_glob, '-lp', labels_dir, '--image_shape', str(IMAGE_SHAPE[0]),
            str(IMAGE_SHAPE[1]), '-bs', str(batch), '-ep', '1', '--no_val', '--gpu', '0',
            '--vgg_weights', 'none', '-cd', os.path.join(folder, 'ckpt'),
            '-sd', os.path.join(folder, 'summaries'), '-rd', os.path.join(folder, 'runs'),
            '-md', os.path.join(folder, 'model')] + (
                ['--accumulate', str(accumulate)] if accumulate else [])


def _predict_command(run, folder):
    images_glob, _ = run.sources()
    return [sys.executable, MAIN, 'predict', '--gpu', '0',
            '-md', run.models.optimised_dir(), '-ip', images_glob,
            '-rd', os.path.join(folder, 'runs')]


def _command_rows(run, folder):
    """(row name, raw key, command(), target) of every command line measured: making the
    command may draw the sources or export the model, which the measurement's attempt covers."""
    for name, key, batch, accumulate, target in TRAIN_ROWS:
        # A folder each: a train run in the same one would resume from the last's checkpoint.
        yield name, key, functools.partial(_train_command, run, os.path.join(folder, key),
                                           batch, accumulate), target
    yield ('predict (optimised model)', 'predict_rss',
           functools.partial(_predict_command, run, folder), 'predict_rss')


def _against_batch(rss, key, batch_rss):
    """A train row's peak over that of the batch without accumulation."""
    if rss is None or not batch_rss or not key.startswith('train'):
        return ''
    return format_value(rss / batch_rss, 'x')


def accumulate_note(raw):
    """What the run's numbers say of --accumulate's memory, or '' without them."""
    batch, micro, accumulated = (raw.get(key + '_bytes') for key in (
        'train_rss', 'train_micro_rss', 'train_accumulate_rss'))
    if not (batch and micro and accumulated):
        return ''
    return ('-bs %d --accumulate %d makes the update of a batch of %d: its peak is %.2f GB, '
            '%+.2f GB from -bs %d alone and %+.2f GB from the batch of %d without accumulation, '
            'which itself needs %.2f GB more than -bs %d.' % (
                MICRO_BATCH, ACCUMULATE, TRAIN_BATCH, accumulated / GB,
                (accumulated - micro) / GB, MICRO_BATCH, (accumulated - batch) / GB,
                TRAIN_BATCH, (batch - micro) / GB, MICRO_BATCH))


def memory_section(run):
    """Peak RSS of the real command lines, each in its own process."""
    folder = os.path.join(run.work_dir, 'memory')
    os.makedirs(folder, exist_ok=True)
    rows = []
    for name, key, command, target in _command_rows(run, folder):
        measure.log('peak memory: %s' % name)
        rss = run.attempt('peak memory of %s' % name, lambda: measure.peak_rss(
            command(), os.path.join(folder, key + '.log')))
        run.raw[key + '_bytes'] = rss
        rows.append(table_row(['python main.py ' + name,
                               'failed' if rss is None else '%.2f GB' % (rss / GB),
                               _against_batch(rss, key, run.raw.get('train_rss_bytes'))],
                              None if rss is None or not target else rss / GB, target))
        measure.log(' | '.join(rows[-1]['cells']))
    shutil.rmtree(folder, ignore_errors=True)  # the train runs' checkpoints
    notes = ['The kernel\'s maximum resident set size of each process (GB = 10^9 bytes): train '
             'on the synthetic sources for one epoch, checkpoint and SavedModel export '
             'included; predict on the same sources, overlays written.']
    run.tables.append(Table('Peak memory', ['command', 'peak RSS', 'of batch %d\'s' %
                                            TRAIN_BATCH], rows,
                            notes + [note for note in [accumulate_note(run.raw)] if note]))
