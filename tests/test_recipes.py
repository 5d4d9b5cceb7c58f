"""Training recipes: SGD or Adam, the learning-rate schedules over the whole training (so that a
resumed run goes on along the same curve), warm-up, and what a resume may change."""
import dataclasses
import glob
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import data_loader
import helper
import main
import synthetic
from roadseg import devices, model_dir, specs
from roadseg import flags as flags_module
from roadseg.apps import metrics
from roadseg.deploy import loader
from roadseg.training import graph as train_graph

tf1 = tf.compat.v1
STEPS_PER_EPOCH = 10


def _rates(steps, **recipe):
    """The schedule's rate at each of steps, for 4 epochs of STEPS_PER_EPOCH steps."""
    recipe = specs.Recipe(epochs=4, batch_size=1, learning_rate=0.01, **recipe)
    with tf.Graph().as_default():
        step = tf1.placeholder(tf.int64, [])
        rate = train_graph.learning_rate(recipe, step, STEPS_PER_EPOCH)
        with tf1.Session() as session:
            return [session.run(rate, {step: value}) for value in steps]


def test_constant_rate_stays():
    np.testing.assert_allclose(_rates([0, 17, 40, 99]), [0.01] * 4, rtol=1e-6)


def test_poly_falls_as_the_power_of_what_is_left_to_its_end_and_stays():
    rates = _rates([0, 10, 20, 39, 40, 55], lr_schedule='poly', lr_power=0.9,
                   end_learning_rate=0.001)
    expected = [0.009 * (1 - min(step, 40) / 40) ** 0.9 + 0.001
                for step in (0, 10, 20, 39, 40, 55)]
    np.testing.assert_allclose(rates, expected, rtol=1e-5)


def test_cosine_falls_along_half_a_cosine():
    steps = [0, 10, 20, 30, 40]
    expected = [0.5 * 0.01 * (1 + math.cos(math.pi * step / 40)) for step in steps]
    np.testing.assert_allclose(_rates(steps, lr_schedule='cosine'), expected, rtol=1e-5,
                               atol=1e-9)


def test_step_divides_by_ten_after_each_listed_epoch():
    rates = _rates([0, 19, 20, 29, 30, 39], lr_schedule='step', lr_step_epochs=(3, 2))
    np.testing.assert_allclose(rates, [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001], rtol=1e-5)


def test_warmup_rises_linearly_then_follows_the_schedule():
    rates = _rates([0, 1, 4, 5, 20], lr_schedule='poly', lr_power=1.0, warmup_steps=5)
    poly = [0.01 * (1 - step / 40) for step in (0, 1, 4, 5, 20)]
    np.testing.assert_allclose(rates, [poly[0] / 5, poly[1] * 2 / 5, poly[2], poly[3], poly[4]],
                               rtol=1e-5)


@pytest.mark.parametrize('optimizer, slots', [('adam', {'Adam', 'Adam_1'}),
                                              ('sgd', {'Momentum'})])
def test_the_optimizer_s_slots_are_in_the_graph(optimizer, slots, tiny_model):
    recipe = specs.Recipe(epochs=1, batch_size=2, learning_rate=1e-3, optimizer=optimizer)
    with tf.Graph().as_default():
        train_graph.build_train_graph(tf.zeros([0, 64, 128, 3], tf.uint8),
                                      tf.zeros([0, 64, 128], tf.uint8), tiny_model, recipe,
                                      data_loader.get_label_set('cityscapes'))
        names = {variable.op.name.rsplit('/', 1)[-1] for variable in tf1.global_variables()
                 if variable.op.name.startswith('conv1_1/filter/')}
    assert names == slots


def _scalars(summary_dir, tag, by_step=False):
    """A scalar's values in step order, or {step: value}."""
    values = {}
    for path in glob.glob(os.path.join(str(summary_dir), '**', 'events.*'), recursive=True):
        for event in tf1.train.summary_iterator(path):
            values.update((event.step, value.simple_value) for value in event.summary.value
                          if value.tag == tag)
    return values if by_step else [values[step] for step in sorted(values)]


@pytest.mark.end_to_end
def test_an_interrupted_sgd_poly_run_resumes_along_the_same_curve(demo_root, tmp_path,
                                                                   tiny_model, monkeypatch):
    """SGD with a warmed-up poly schedule, stopped mid-epoch and resumed: the same rates at
    every step and the same weights at the end as the run that was never stopped."""
    recipe = ('-ep', '2', '--seed', '7', '--no_val', '--summary_every', '1', '--optimizer',
              'sgd', '--momentum', '0.9', '-lr', '0.05', '--lr_schedule', 'poly',
              '--warmup_steps', '2')
    whole = synthetic.train_flags(demo_root, tmp_path / 'whole', *recipe)
    assert main.main(whole, network=tiny_model) == 0
    cut = synthetic.train_flags(demo_root, tmp_path / 'cut', *recipe)
    restore = synthetic.interrupt_after(monkeypatch, 3)
    assert main.main(cut, network=tiny_model) == 130
    restore()
    assert main.main(cut, network=tiny_model) == 0
    rates = _scalars(tmp_path / 'whole' / 'summaries', 'learning_rate', by_step=True)
    assert sorted(rates) == [1, 2, 3, 4]
    assert rates[1] < rates[2] > rates[3] > rates[4]  # warm-up, then poly
    # The interrupted step's summary was never written; every other step's rate is the same.
    cut_rates = _scalars(tmp_path / 'cut' / 'summaries', 'learning_rate', by_step=True)
    assert {1, 2, 4} <= set(cut_rates)
    # The resumed training went on in the TensorBoard run it started.
    assert len(glob.glob(str(tmp_path / 'cut' / 'summaries' / '*'))) == 1
    for step, rate in cut_rates.items():
        assert rate == pytest.approx(rates[step], rel=1e-6), step
    readers = [tf.train.load_checkpoint(
        tf.train.latest_checkpoint(str(tmp_path / run / 'ckpt'))) for run in ('whole', 'cut')]
    names = readers[0].get_variable_to_shape_map()
    assert any(name.endswith('/Momentum') for name in names)
    for name in names:
        np.testing.assert_allclose(readers[1].get_tensor(name), readers[0].get_tensor(name),
                                   rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.end_to_end
def test_a_resume_may_change_the_rate_with_a_warning_but_not_the_optimizer(
        demo_root, tmp_path, tiny_model, capsys):
    flags = synthetic.train_flags(demo_root, tmp_path, '--no_val')
    assert main.main(flags, network=tiny_model) == 0
    capsys.readouterr()
    assert main.main(flags + ['-ep', '2', '-lr', '1e-3', '--lr_schedule', 'cosine'],
                     network=tiny_model) == 0
    err = capsys.readouterr().err
    assert ("warning: resuming %s with another learning rate: learning_rate 0.0001 -> 0.001, "
            "lr_schedule 'constant' -> 'cosine'" % (tmp_path / 'ckpt')) in err
    assert main.main(flags + ['-ep', '3', '--optimizer', 'sgd'], network=tiny_model) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line == ("error: %s was written with optimizer='adam', this run has "
                    "optimizer='sgd': use another --ckpt_dir" % (tmp_path / 'ckpt'))


STEP_EPOCHS = '--lr_step_epochs goes with --lr_schedule step, and step needs it'


@pytest.mark.parametrize('flags, message', [
    (['--momentum', '1'], '--momentum 1 is outside [0, 1)'),
    (['--lr_schedule', 'step'], STEP_EPOCHS),
    (['--lr_step_epochs', '1'], STEP_EPOCHS),
    (['--lr_schedule', 'step', '--lr_step_epochs', '3'],
     '--lr_step_epochs 3 is not between 0 and --epochs 3'),
    (['--warmup_steps', '-1'], '--warmup_steps -1 is negative'),
    (['--lr_power', '0'], '--lr_power 0 must be positive'),
    (['--end_learning_rate=-1e-5'], '--end_learning_rate -1e-05 is negative'),
    (['--early_stop', '-1'], '--early_stop -1 is negative'),
    (['--early_stop', '2', '--no_val'], '--early_stop needs the validation that --no_val skips')])
def test_bad_recipe_flags_are_one_line(flags, message):
    args = main.parse_args(['train', '--dataset', 'demo', '-ep', '3'] + flags)
    with pytest.raises(main.UserError) as error:
        flags_module.check_schedule(args)
    assert str(error.value) == message


def _run_folder(folder):
    (run,) = glob.glob(os.path.join(str(folder), 'runs', '*'))
    return run


@pytest.mark.end_to_end
def test_the_best_model_is_the_checkpoint_of_the_best_validation(demo_root, tmp_path,
                                                                 tiny_model, capsys):
    flags = synthetic.train_flags(demo_root, tmp_path, '-ep', '4', '--seed', '3', '-lr', '3e-3')
    assert main.main(flags, network=tiny_model) == 0
    scores = _scalars(tmp_path / 'summaries', 'val/mean_iou')
    best_so_far = _scalars(tmp_path / 'summaries', 'val/best_mean_iou')
    assert len(scores) == 4 and best_so_far == list(np.maximum.accumulate(scores))
    best_epoch = int(np.argmax(scores)) + 1
    folder = os.path.join(_run_folder(tmp_path), 'best_model')
    config = helper.read_json(os.path.join(folder, model_dir.CONFIG_FILE))
    assert (config['best_epoch'], config['best_step']) == (best_epoch, 2 * best_epoch)
    assert config['best_val_mean_iou'] == pytest.approx(max(scores), abs=1e-6)
    # It is that checkpoint's model: scored on the val split as validation scores.
    label_set = data_loader.get_label_set('cityscapes')
    val = data_loader.Dataset(os.path.join(demo_root, 'leftImg8bit/val/*/*.png'),
                              os.path.join(demo_root, 'gtFine/val'), label_set, (64, 128))
    model = loader.Model(folder, devices.session_config(gpu=0))
    confusion = np.zeros((label_set.num_classes,) * 2, np.int64)
    for images, labels in val.generator(4, shuffle=False):
        metrics.accumulate(confusion, labels, model.predict(images), label_set.num_classes)
    model.close()
    assert helper.mean_iou(confusion) == pytest.approx(max(scores), abs=1e-6)
    assert ('best model: %s (val mean IoU %.1f%% at epoch %d, step %d)'
            % (os.path.abspath(folder), 100 * max(scores), best_epoch, 2 * best_epoch)
            in capsys.readouterr().out)


@pytest.mark.end_to_end
def test_early_stop_ends_after_validations_without_improvement(demo_root, tmp_path,
                                                               tiny_model, capsys):
    """A rate too small to change the predictions: the first validation is the best, the
    next one is not better, and --early_stop 1 ends training there, exported as usual."""
    flags = synthetic.train_flags(demo_root, tmp_path, '-ep', '5', '--seed', '3', '-lr',
                                  '1e-12', '--early_stop', '1', '--no_keep_best')
    assert main.main(flags, network=tiny_model) == 0
    out = capsys.readouterr().out
    assert 'no better val mean IoU in 1 validations: stopping early' in out
    assert tf.train.latest_checkpoint(str(tmp_path / 'ckpt')).endswith('-4')  # 2 epochs of 2
    run = _run_folder(tmp_path)
    assert os.path.exists(os.path.join(run, 'model', 'saved_model.pb'))
    assert not os.path.exists(os.path.join(run, 'best_model'))


def _one_update(network, recipe, images, labels, start=None):
    """The trainable weights after one training step on images, labels from start (the
    weights of a first graph's initialisation when None), and those starting weights."""
    label_set = data_loader.get_label_set('cityscapes')
    with tf.Graph().as_default():
        tf1.set_random_seed(1)
        tensors = train_graph.build_train_graph(tf.constant(images), tf.constant(labels),
                                                network, recipe, label_set)
        variables = tf1.trainable_variables()
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            if start is not None:
                for variable, value in zip(variables, start):
                    variable.load(value, session)
            before = session.run(variables)
            session.run(tensors['train_op'])
            return session.run(variables), before


@pytest.mark.parametrize('optimizer', ['sgd', 'adam'])
def test_accumulated_micro_batches_make_the_update_of_one_batch_of_them_all(tiny_model,
                                                                           optimizer):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 96, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, (4, 64, 96), dtype=np.uint8)
    labels[:2, :20] = 255  # micro-batches of different weights: shares of the whole batch
    recipe = specs.Recipe(epochs=1, batch_size=4, learning_rate=0.1, optimizer=optimizer,
                          momentum=0.0)
    _, initial = _one_update(tiny_model, recipe, images, labels)
    # away from the zero score layers of a fresh start, so that every gradient is alive
    start = [value + rng.normal(0, 0.05, value.shape).astype(value.dtype) for value in initial]
    whole, _ = _one_update(tiny_model, recipe, images, labels, start)
    accumulated, _ = _one_update(tiny_model, dataclasses.replace(recipe, accumulate=2),
                                 images, labels, start)
    assert all(np.abs(after - before).max() > 1e-6 for after, before in zip(whole, start))
    for after_whole, after_accumulated in zip(whole, accumulated):
        np.testing.assert_allclose(after_accumulated, after_whole, rtol=1e-4, atol=1e-6)
    halves, _ = _one_update(tiny_model, recipe, images[:2], labels[:2], start)
    assert max(np.abs(a - b).max() for a, b in zip(halves, whole)) > 1e-4  # not one half's
