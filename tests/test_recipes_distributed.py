"""The training recipes beyond one device: SGD with a warmed-up poly schedule and accumulated
micro-batches on two virtual CPUs, and on a ps and two workers the chief's best model, its one
TensorBoard run and the early stop. Tiny VGG16, 64x128 images, a few steps."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import helper
import main
import synthetic
from roadseg import model_dir
from test_distributed import Cluster, checkpoint_values, scalar_values, took

tf1 = tf.compat.v1
_flags = synthetic.train_flags
SGD_POLY = ('--optimizer', 'sgd', '--momentum', '0.9', '-lr', '0.01', '--lr_schedule', 'poly',
            '--warmup_steps', '2')


def _poly_rates(steps, total, base=0.01, warmup=2, power=0.9):
    """The rate each step of SGD_POLY is taken with (its global step before the update), as
    the summary of that step's end shows it."""
    return [base * (1 - (step - 1) / total) ** power * min(1.0, step / warmup)
            for step in steps]


def _events(summary_dir):
    """{run folder: [event]} of every event file under summary_dir."""
    runs = {}
    for path in glob.glob(os.path.join(str(summary_dir), '**', 'events.*'), recursive=True):
        runs.setdefault(os.path.dirname(path), []).extend(tf1.train.summary_iterator(path))
    return runs


@pytest.mark.end_to_end
def test_two_replicas_follow_one_device_with_sgd_poly_and_accumulation(demo_root, tmp_path,
                                                                        tiny_model):
    """Batches of 4 as 2 micro-batches of 2, on one device and as 2 x (2 micro-batches of 1)
    on two virtual CPUs: the same losses and weights, and the learning rate of each step in
    the one TensorBoard run of each training is the schedule's."""
    runs = {}
    for replicas in (1, 2):
        folder = tmp_path / str(replicas)
        assert main.main(_flags(demo_root, folder, '-ep', 2, '-bs', 2, '--accumulate', 2,
                                '--seed', 3, '--no_val', '--summary_every', 1,
                                '--cpu_replicas', replicas, *SGD_POLY), network=tiny_model) == 0
        (run,) = glob.glob(str(folder / 'summaries' / '*'))
        assert run.endswith('_ep2_bs4_lr0.01_kp1_sgd_acc2_poly')
        runs[replicas] = (scalar_values(run, 'loss'), scalar_values(run, 'learning_rate'),
                          checkpoint_values(folder / 'ckpt'))
    for replicas in (1, 2):
        steps, rates = zip(*runs[replicas][1])
        assert steps == (1, 2, 3, 4)
        np.testing.assert_allclose(rates, _poly_rates(steps, total=4), rtol=1e-5)
    (steps_1, losses_1), (steps_2, losses_2) = (zip(*runs[n][0]) for n in (1, 2))
    assert steps_1 == steps_2 == (1, 2, 3, 4)
    np.testing.assert_allclose(losses_2, losses_1, rtol=1e-4)
    assert losses_1[-1] < losses_1[0] - 0.1  # it learned: the comparison is not of constants
    one, two = runs[1][2], runs[2][2]
    assert sorted(one) == sorted(two) and any(name.endswith('/Momentum') for name in one)
    for name, value in one.items():
        np.testing.assert_allclose(two[name], value, rtol=1e-3, atol=1e-5, err_msg=name)


def _train_on_cluster(demo_root, folder, *extra):
    """A ps and two workers train with flags extra; returns the two workers' outputs."""
    cluster = Cluster(demo_root, folder, *extra)
    try:
        cluster.start('ps', 'ps', 0)
        cluster.start('chief', 'worker', 0)
        cluster.start('worker1', 'worker', 1)
        outputs = cluster.wait('chief'), cluster.wait('worker1')
        assert 'all 2 workers have finished' in cluster.wait('ps')
    finally:
        cluster.kill()
    return outputs


@pytest.mark.end_to_end
def test_the_cluster_s_chief_keeps_the_best_model_and_one_tensorboard_run(demo_root, tmp_path,
                                                                         tiny_model):
    """SGD with a warmed-up poly schedule, batches of 4 as 2 workers x 2 micro-batches of 1, on
    a ps and two workers validated every epoch: the weights of one device fed the whole
    batches; the chief writes best_model/ beside its model, and one TensorBoard run with the
    schedule's rates, the validations, the best so far and the configuration; the other
    worker writes no summaries."""
    recipe = ('-ep', 3, '-bs', 2, '--accumulate', 2, '--seed', 3, '--no_augment', *SGD_POLY)
    folder = tmp_path / 'cluster'
    os.makedirs(folder)
    chief, worker1 = _train_on_cluster(demo_root, folder, *recipe, '--summary_every', 1)
    assert took(chief, 0) == took(worker1, 1) == (6, 0, 6)
    assert main.main(_flags(demo_root, tmp_path / 'one', *recipe, '--no_val'),
                     network=tiny_model) == 0
    one, trained = (checkpoint_values(tmp_path / run / 'ckpt') for run in ('one', 'cluster'))
    assert sorted(one) == sorted(trained)
    for name, value in one.items():
        np.testing.assert_allclose(trained[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    runs = _events(folder / 'summaries')
    (run,) = runs  # one run folder, the chief's: every event file is in it
    assert os.path.dirname(run) == str(folder / 'summaries')
    assert os.path.basename(run).endswith('_ep3_bs4_lr0.01_kp1_sgd_acc2_poly')
    values = {value.tag: value for event in runs[run] for value in event.summary.value}
    assert {'learning_rate', 'val/mean_iou', 'val/pixel_accuracy', 'val/best_mean_iou',
            'config'} <= set(values)
    config_text = tf.make_ndarray(values['config'].tensor).item().decode()
    assert '"optimizer": "sgd"' in config_text and '"accumulate": 2' in config_text
    steps, rates = zip(*scalar_values(run, 'learning_rate'))
    assert steps == tuple(range(1, 7))
    np.testing.assert_allclose(rates, _poly_rates(steps, total=6), rtol=1e-5)
    scores = [value for _, value in scalar_values(run, 'val/mean_iou')]
    best_so_far = [value for _, value in scalar_values(run, 'val/best_mean_iou')]
    assert len(scores) == 3 and best_so_far == list(np.maximum.accumulate(scores))
    # The chief's run folder holds the model and the best one; the other worker's, its
    # configuration only.
    (best,) = glob.glob(str(folder / 'runs' / '*' / 'best_model'))
    assert os.path.exists(os.path.join(os.path.dirname(best), 'model', 'saved_model.pb'))
    assert len(glob.glob(str(folder / 'runs' / '*' / 'model'))) == 1
    config = helper.read_json(os.path.join(best, model_dir.CONFIG_FILE))
    best_epoch = int(np.argmax(scores)) + 1
    assert (config['best_epoch'], config['best_step']) == (best_epoch, 2 * best_epoch)
    assert config['best_val_mean_iou'] == pytest.approx(max(scores), abs=1e-6)
    assert 'best model: %s' % best in chief


@pytest.mark.end_to_end
def test_early_stop_ends_the_cluster_s_training(demo_root, tmp_path):
    """A rate too small to change the predictions: the chief's second validation is not
    better, and --early_stop 1 ends every task's training there, exported as usual."""
    chief, worker1 = _train_on_cluster(demo_root, tmp_path, '-ep', 5, '--seed', 3, '-lr',
                                       '1e-12', '--early_stop', 1, '--no_keep_best')
    assert 'no better val mean IoU in 1 validations: stopping early' in chief
    assert took(chief, 0)[2] == took(worker1, 1)[2] == 4  # 2 epochs of 2 steps
    assert 'stopping early' not in worker1
    assert tf.train.latest_checkpoint(str(tmp_path / 'ckpt')).endswith('-4')
    assert len(glob.glob(str(tmp_path / 'runs' / '*' / 'model' / 'saved_model.pb'))) == 1
    assert not glob.glob(str(tmp_path / 'runs' / '*' / 'best_model'))


@pytest.mark.end_to_end
def test_two_replicas_keep_the_best_model_and_stop_early(demo_root, tmp_path, tiny_model,
                                                        capsys):
    """On two virtual CPUs, a rate too small to change the predictions: the first validation
    is the best, kept as best_model/ of step 2, and --early_stop 1 ends training after the
    second, in one TensorBoard run that shows both."""
    assert main.main(_flags(demo_root, tmp_path, '-ep', 5, '--seed', 3, '-lr', '1e-12',
                            '--early_stop', 1, '--cpu_replicas', 2), network=tiny_model) == 0
    assert 'no better val mean IoU in 1 validations: stopping early' in capsys.readouterr().out
    assert tf.train.latest_checkpoint(str(tmp_path / 'ckpt')).endswith('-4')  # 2 epochs of 2
    (run,) = _events(tmp_path / 'summaries')
    scores = scalar_values(run, 'val/mean_iou')
    assert [step for step, _ in scores] == [2, 4]
    assert scalar_values(run, 'val/best_mean_iou') == [(2, scores[0][1]), (4, scores[0][1])]
    (best,) = glob.glob(str(tmp_path / 'runs' / '*' / 'best_model'))
    config = helper.read_json(os.path.join(best, model_dir.CONFIG_FILE))
    assert (config['best_epoch'], config['best_step']) == (1, 2)
    assert config['best_val_mean_iou'] == pytest.approx(scores[0][1], abs=1e-6)
