"""The memory section: the peak RSS of the real command lines, `main.py train` and
`main.py predict`, each in a process of its own."""
import os
import shutil
import sys

from benchmark import measure
from benchmark.config import GB, IMAGE_SHAPE, REPO, TRAIN_BATCH
from benchmark.report import Table, table_row

MAIN = os.path.join(REPO, 'main.py')


def _train_command(run, folder):
    images_glob, labels_dir = run.sources()
    return [sys.executable, MAIN, 'train', '--dataset', 'cityscapes',
            '-ip', images_glob, '-lp', labels_dir, '--image_shape', str(IMAGE_SHAPE[0]),
            str(IMAGE_SHAPE[1]), '-bs', str(TRAIN_BATCH), '-ep', '1', '--no_val', '--gpu', '0',
            '--vgg_weights', 'none', '-cd', os.path.join(folder, 'ckpt'),
            '-sd', os.path.join(folder, 'summaries'), '-rd', os.path.join(folder, 'runs'),
            '-md', os.path.join(folder, 'model')]


def _predict_command(run, folder):
    images_glob, _ = run.sources()
    return [sys.executable, MAIN, 'predict', '--gpu', '0',
            '-md', run.models.optimised_dir(), '-ip', images_glob,
            '-rd', os.path.join(folder, 'runs')]


def memory_section(run):
    """Peak RSS of the real command lines, each in its own process."""
    folder = os.path.join(run.work_dir, 'memory')
    os.makedirs(folder, exist_ok=True)
    rows = []
    for name, command, target in (
            ('train (float32, batch %d)' % TRAIN_BATCH, _train_command, 'train_rss'),
            ('predict (optimised model)', _predict_command, 'predict_rss')):
        measure.log('peak memory: %s' % name)
        rss = run.attempt('peak memory of %s' % name, lambda: measure.peak_rss(
            command(run, folder), os.path.join(folder, target + '.log')))
        run.raw[target + '_bytes'] = rss
        rows.append(table_row(['python main.py ' + name,
                               'failed' if rss is None else '%.2f GB' % (rss / GB)],
                              None if rss is None else rss / GB, target))
        measure.log(' | '.join(rows[-1]['cells']))
    shutil.rmtree(folder, ignore_errors=True)  # the train run's checkpoint
    run.tables.append(Table('Peak memory', ['command', 'peak RSS'], rows, [
        'The kernel\'s maximum resident set size of each process (GB = 10^9 bytes): train on '
        'the synthetic sources for one epoch, checkpoint and SavedModel export included; '
        'predict on the same sources, overlays written.']))
