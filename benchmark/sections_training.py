"""The training section (a step of float32, --xla 2 and bf16 on a batch in memory, where a
profiled float32 step's time goes, and the step of other recipes against Adam's) and the pipeline
section (the python generator and tf.data
alone, and a training step fed by each against one fed in memory)."""
import functools
import time

import tensorflow as tf

import data_loader
from roadseg import specs
from roadseg.data import datasets
from roadseg.training import graph as train_graph
from benchmark import measure, models
from benchmark.config import ACCUMULATE, IMAGE_SHAPE, KEEP_PROB, TRAIN_BATCH
from benchmark.report import SHARE_COLUMN, Table, table_row
from benchmark.sections_peak import BESIDE_NOTE, sample_peak
from benchmark.targets import format_value

tf1 = tf.compat.v1

TRAINING_VARIANTS = (('float32', 0, 'fp32'), ('--xla 2', 2, 'fp32'),  # (name, xla, precision)
                     ('--precision bf16', 0, 'bf16'))
TRAINING_TRACE = 'train step'  # the profiled float32 step
# The recipes whose steps take turns with Adam's at a constant rate: (name, the Recipe's fields
# that differ from _train_recipe's, the target of the step's time over Adam's).
ADAM_CONSTANT = 'Adam, constant rate'
RECIPE_VARIANTS = (
    (ADAM_CONSTANT, {}, None),
    ('SGD, momentum 0.9, poly schedule, 100 warm-up steps',
     dict(optimizer='sgd', momentum=0.9, learning_rate=0.01, lr_schedule='poly',
          warmup_steps=100), 'sgd_poly_step'),
    ('Adam, --accumulate %d' % ACCUMULATE, dict(accumulate=ACCUMULATE), None))
SCHEDULE_STEPS = 1000  # a schedule's steps per epoch: its rate still moves in the timed steps


def _train_recipe(precision, **changes):
    """The recipe of `main.py train --gpu 0 --precision P` at Cityscapes' defaults, with
    changes to its fields (another optimiser, a schedule, accumulation)."""
    fields = dict(epochs=1, batch_size=TRAIN_BATCH, learning_rate=1e-4, keep_prob=KEEP_PROB,
                  loss_scaling=precision == 'fp16')
    return specs.Recipe(**{**fields, **changes})


def _train_session(run, precision, xla, make_inputs=None, serial=False, recipe=None):
    """(session, tensors) of graph.build_train_graph, initialised. make_inputs() builds the
    (images, labels) the graph reads unless fed; by default every step is fed. serial: the
    session runs one op at a time. recipe: _train_recipe(precision) unless given."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        if make_inputs:
            images, labels = make_inputs()
        else:  # empty defaults, as with the generator pipeline
            images = tf.zeros((0,) + IMAGE_SHAPE + (3,), tf.uint8)
            labels = tf.zeros((0,) + IMAGE_SHAPE, tf.uint8)
        tensors = train_graph.build_train_graph(
            images, labels, run.network, recipe or _train_recipe(precision), run.label_set,
            steps_per_epoch=SCHEDULE_STEPS)
        init = tf1.global_variables_initializer()
    session_config = measure.cpu_config(xla, precision)
    if serial:
        measure.serial_ops(session_config)
    session = tf1.Session(graph=graph, config=session_config)
    session.run(init)
    return session, tensors


def time_training(run, name, xla, precision):
    """(seconds per step, rewrites seen) of training steps on a batch already in memory (a row
    process)."""
    session, tensors = _train_session(run, precision, xla)
    try:
        images, labels = models.random_batch(TRAIN_BATCH, run.label_set.num_classes)
        feed = {tensors['images']: images, tensors['labels']: labels,
                tensors['keep_prob']: KEEP_PROB}
        rewrites = run.trace(session, tensors['train_op'], feed)
        step = measure.time_calls(lambda: session.run(tensors['train_op'], feed),
                                  run.settings.warmup, run.settings.repeats)
    finally:
        session.close()
    if name == 'float32' and run.profile_dir:
        _profile_training(run, images, labels)
    return step, rewrites


def _profile_training(run, images, labels):
    """The profile of a float32 step run one op at a time, so that each op's time is its own:
    the timed steps run two ops at once, and on 2 cores they take each other's time."""
    session, tensors = _train_session(run, 'fp32', 0, serial=True)
    try:
        feed = {tensors['images']: images, tensors['labels']: labels,
                tensors['keep_prob']: KEEP_PROB}
        session.run(tensors['train_op'], feed)  # warm-up: oneDNN's primitives
        run.trace(session, tensors['train_op'], feed, TRAINING_TRACE, batch=TRAIN_BATCH,
                  flops=measure.layer_flops(run.label_set.num_classes, IMAGE_SHAPE,
                                            run.network.encoder, run.network.fc_channels))
    finally:
        session.close()


def _training_row(run, name, precision, result, steps):
    """A training variant's row: its share of the peak (float32, set by finish_peaks) or its
    speed-up over float32 (bf16), with the peak measured beside it."""
    step, rewrites = result
    flops = run.raw.get('flops_per_image')
    work = 3 * flops * TRAIN_BATCH if flops else None  # forward + 2x for the backward
    gflops = work / step / 1e9 if work else None
    beside = sample_peak(run, precision) if gflops else None
    value, target = None, 'training_fp32'
    if name != 'float32':
        value, target = (steps['float32'] / step if 'float32' in steps else None,
                         'training_bf16' if 'bf16' in name else None)
    return table_row([name, '%.0f' % (1000 * step / TRAIN_BATCH),
                      '%.0f' % gflops if gflops else '', 'n/a',
                      measure.rewrite_note(name, rewrites)], value, target,
                     gflops=gflops, precision=precision, beside_peak=beside, rewrites=rewrites,
                     trace=TRAINING_TRACE if name == 'float32' else None)


def training_section(run):
    rows, steps = [], {}
    for name, xla, precision in TRAINING_VARIANTS:
        measure.log('training %s' % name)
        result = run.attempt('training %s' % name, run.in_child, time_training, name, xla,
                             precision)
        if result is None:
            rows.append(table_row([name, 'failed', '', '', '']))
            continue
        steps[name] = result[0]
        rows.append(_training_row(run, name, precision, result, steps))
        measure.log(' | '.join(rows[-1]['cells']))
    run.raw['training_ms_per_image'] = {name: 1000 * step / TRAIN_BATCH
                                        for name, step in steps.items()}
    run.tables.append(Table(
        'Training at %dx%d, batch %d' % (IMAGE_SHAPE[0], IMAGE_SHAPE[1], TRAIN_BATCH),
        ['variant', 'ms per image', 'GFLOP/s', SHARE_COLUMN, 'notes'], rows,
        ['A step is forward, backward and Adam on a batch already in memory, dropout on; '
         'its work is counted as 3x the forward FLOPs of the model as the profiler counts the '
         'inference graph. The training graph computes fc6 in row bands that skip the zero '
         'padding, so a step does a little less work than counted. '
         'The bf16 row\'s target is its speed-up over float32. Each row runs in a fresh '
         'process. ' + BESIDE_NOTE]))
    parts = run.profile.get(TRAINING_TRACE, {}).get('parts')
    if parts:
        run.tables.append(step_parts_table(parts))
    recipes_table(run)


def recipe_steps(run):
    """{recipe: seconds per training step} of each of RECIPE_VARIANTS on one float32 batch in
    memory, a step of each in turn (a row process): what another optimiser, a schedule or
    accumulation costs a step, with any change in the machine's speed falling on all alike."""
    images, labels = models.random_batch(TRAIN_BATCH, run.label_set.num_classes)
    sessions, calls = [], {}
    try:
        for name, changes, _ in RECIPE_VARIANTS:
            session, tensors = _train_session(run, 'fp32', 0,
                                              recipe=_train_recipe('fp32', **changes))
            sessions.append(session)
            feed = {tensors['images']: images, tensors['labels']: labels,
                    tensors['keep_prob']: KEEP_PROB}
            calls[name] = functools.partial(session.run, tensors['train_op'], feed)
        return measure.time_in_turn(calls, run.settings.warmup, run.settings.repeats)
    finally:
        for session in sessions:
            session.close()


def recipe_rows(steps):
    """A row per recipe: ms per step and the step over Adam's at a constant rate."""
    rows, adam = [], steps.get(ADAM_CONSTANT)
    for name, _, target in RECIPE_VARIANTS:
        if name not in steps:
            rows.append(table_row([name, 'failed', '']))
            continue
        ratio = steps[name] / adam if adam else None
        rows.append(table_row([name, '%.0f' % (1000 * steps[name]), format_value(ratio, 'x')],
                              ratio if target else None, target))
    return rows


def recipes_table(run):
    measure.log('training recipes: %s, in turn' % ', '.join(
        name for name, _, _ in RECIPE_VARIANTS))
    steps = run.attempt('training recipes', run.in_child, recipe_steps) or {}
    run.raw['recipe_step_ms'] = {name: 1000 * seconds for name, seconds in steps.items()}
    rows = recipe_rows(steps)
    for row in rows:
        measure.log(' | '.join(row['cells']))
    run.tables.append(Table(
        'Training recipes at %dx%d, batch %d' % (IMAGE_SHAPE[0], IMAGE_SHAPE[1], TRAIN_BATCH),
        ['recipe', 'ms per step', 'step / %s' % ADAM_CONSTANT], rows,
        ['One fresh process builds the float32 training graph of each recipe and runs a step '
         'of each in turn on the same batch in memory, dropout on, %d rounds after %d untimed '
         '(medians). The schedule spreads over %d steps an epoch, so its rate still moves '
         'in the timed steps. --accumulate %d runs the batch of %d as %d micro-batches one '
         'after another and makes one update of them all; its peak memory is in the memory '
         'section.' % (run.settings.repeats, run.settings.warmup, SCHEDULE_STEPS, ACCUMULATE,
                       TRAIN_BATCH, ACCUMULATE)]))


def step_parts_table(parts):
    """Where a float32 training step's time goes, from its profile (step_parts), with two
    summary rows: all its products together, and the whole step."""
    whole = sum(ms for _, ms, _ in parts) or 1
    products = [(ms, gflop) for _, ms, gflop in parts if gflop]
    summary = [('all the products above together', sum(ms for ms, _ in products),
                sum(gflop for _, gflop in products)),
               ('the whole profiled step', whole, sum(gflop for _, gflop in products))]
    rows = [table_row([name, '%.0f' % ms, '%.1f%%' % (100 * ms / whole),
                       '%.1f' % gflop if gflop else '', '%.0f' % (gflop / ms * 1000)
                       if gflop and ms else '', 'n/a'],
                      gflops=gflop / ms * 1000 if gflop and ms else None)
            for name, ms, gflop in list(parts) + summary]
    return Table('Where a float32 training step\'s time goes', [
        'part', 'ms', 'share of the step', 'GFLOP', 'GFLOP/s', SHARE_COLUMN], rows, [
        'From the profiled step (--profile), run one op at a time so that each op\'s time is '
        'its own. GFLOP: the forward FLOPs of the layers each part computes, as the profiler '
        'counts them, for the batch (a backward product does as many as its forward one). The '
        'products\' share of the peak is the most a step could reach if every other op took '
        'no time.'])


# ---------------------------------------------------------------------------- input pipelines

def _augmenting_dataset(run):
    """The synthetic sources as training reads them: Cityscapes' augmentation, 256x512."""
    images_glob, labels_dir = run.sources()
    augment = data_loader.AugmentConfig(tuple(datasets.CITYSCAPES['scale_range']), True,
                                        False)
    return data_loader.Dataset(images_glob, labels_dir, run.label_set, IMAGE_SHAPE, augment)


def _epochs_for(dataset, batches):
    return -(-batches // dataset.steps_per_epoch(TRAIN_BATCH)) + 1


def _images_per_second(next_batch, batches):
    next_batch()  # warm-up: starts the pipeline
    started = time.perf_counter()
    for _ in range(batches):
        next_batch()
    return batches * TRAIN_BATCH / (time.perf_counter() - started)


def _pipeline_rates(run, dataset):
    """Images per second of the python generator and of tf.data, alone."""
    batches = run.settings.pipeline_batches
    generator = dataset.generator(TRAIN_BATCH, _epochs_for(dataset, batches + 1), seed=0)
    rates = {'generator': _images_per_second(lambda: next(generator), batches)}
    with tf.Graph().as_default():
        tf1.set_random_seed(0)
        next_batch = tf1.data.make_one_shot_iterator(dataset.tf_dataset(
            TRAIN_BATCH, _epochs_for(dataset, batches + 1), seed=0)).get_next()
        with tf1.Session(config=measure.cpu_config()) as session:
            rates['tf.data'] = _images_per_second(lambda: session.run(next_batch), batches)
    return rates


PIPELINE_MODES = ('in memory', 'tf.data', 'generator')


def pipeline_steps(run):
    """{mode: seconds per training step} fed in memory, by tf.data and by the generator, one
    step of each in turn (a row process): the ratios of the modes do not move with the
    machine's speed.

    Every mode runs the same graph, which reads tf.data unless its inputs are fed, as
    graph.build_train_graph wraps them. Between its own steps the tf.data pipeline only
    fills its prefetch buffer, and stops once it is full: the batch a tf.data step takes is
    made again during that step, as in training.
    """
    settings = run.settings
    dataset = _augmenting_dataset(run)
    epochs = _epochs_for(dataset, settings.warmup + settings.repeats + 2)
    generator = dataset.generator(TRAIN_BATCH, epochs, seed=1)
    in_memory = next(generator)
    session, tensors = _train_session(run, 'fp32', 0, lambda: tf1.data.make_one_shot_iterator(
        dataset.tf_dataset(TRAIN_BATCH, epochs, seed=0)).get_next())
    inputs = (tensors['images'], tensors['labels'])
    feeds = {'in memory': lambda: dict(zip(inputs, in_memory)), 'tf.data': dict,
             'generator': lambda: dict(zip(inputs, next(generator)))}  # decoding is timed

    def step(feed):
        return lambda: session.run(tensors['train_op'], {**feed(), tensors['keep_prob']:
                                                          KEEP_PROB})
    try:
        return measure.time_in_turn({mode: step(feeds[mode]) for mode in PIPELINE_MODES},
                                    settings.warmup, settings.repeats)
    finally:
        session.close()


def _pipeline_rows(rates, steps):
    rows = [table_row(['%s alone' % name, '%.1f images/s' % rate]) for name, rate in rates.items()]
    for mode, seconds in steps.items():
        ratio = seconds / steps['in memory'] if 'in memory' in steps else None
        rows.append(table_row(['training step, %s' % mode, '%.0f ms (%s the in-memory step)'
                               % (1000 * seconds, format_value(ratio, 'x'))],
                              ratio, 'tfdata_step' if mode == 'tf.data' else None))
    if 'tf.data' in steps and 'generator' in steps:
        rows.append(table_row(['training step, generator / tf.data',
                               format_value(steps['generator'] / steps['tf.data'], 'x')]))
    return rows


def pipeline_section(run):
    dataset = _augmenting_dataset(run)
    rates = run.attempt('input pipelines alone', _pipeline_rates, run, dataset) or {}
    measure.log('training steps: %s, in turn' % ', '.join(PIPELINE_MODES))
    steps = run.attempt('training steps with each pipeline', run.in_child, pipeline_steps) or {}
    run.raw['pipeline_images_per_second'] = rates
    run.raw['pipeline_step_ms'] = {mode: 1000 * seconds for mode, seconds in steps.items()}
    height, width = run.settings.source_shape
    low, high = dataset.augment.scale_range
    run.tables.append(Table('Input pipelines', ['measurement', 'value'],
                            _pipeline_rows(rates, steps), [
        '%d synthetic Cityscapes-layout PNG sources of %dx%d, augmented as in training (random '
        'scale %g-%g, crop, flip) to %dx%d, batch %d. Alone: images per second over %d '
        'batches after a first one. The training steps run in one fresh process, a step '
        'of each in turn, %d rounds after %d untimed; the generator\'s steps include its '
        'decoding.' % (
            len(dataset), width, height, low, high, IMAGE_SHAPE[0], IMAGE_SHAPE[1],
            TRAIN_BATCH, run.settings.pipeline_batches, run.settings.repeats,
            run.settings.warmup)]))
