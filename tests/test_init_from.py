"""--init_from: fine-tuning from a model or checkpoints of this tool, on another label set and
image shape: what is loaded, what starts afresh, what is refused."""
import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import data_loader
import fcn8vgg16
import helper
import main
import synthetic
from roadseg import model_dir, specs
from roadseg.data import demo_data
from roadseg.training import graph as train_graph, init_from, loop

tf1 = tf.compat.v1
ENCODER_LAYERS = ('conv1_1', 'conv3_1', 'conv5_1', 'fc6', 'fc7')
SCORE_LAYERS = ('score_fr', 'score_pool4', 'score_pool3')


@pytest.fixture(scope='module')
def source(demo_root, tmp_path_factory):
    """A tiny model trained on the demo (19 classes): its folder (model, ckpt)."""
    folder = tmp_path_factory.mktemp('source')
    flags = synthetic.train_flags(demo_root, folder, '-ep', '4', '--seed', '3', '-lr', '3e-3',
                                  '--no_keep_best')
    assert main.main(flags, network=synthetic.TINY_NETWORK) == 0
    (model,) = glob.glob(str(folder / 'runs' / '*' / 'model'))
    return dict(model=model, ckpt=str(folder / 'ckpt'))


@pytest.fixture(scope='module')
def vistas_root(tmp_path_factory):
    return demo_data.ensure_mapillary_demo(str(tmp_path_factory.mktemp('vistas') / 'mapillary'),
                                           split_sizes={'training': 4, 'validation': 2})


def _source_values(folder):
    reader = tf.train.load_checkpoint(os.path.join(folder, 'variables', 'variables'))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _record_steps(monkeypatch):
    """The model's variables as the first step finds them, and every step's loss."""
    record = dict(losses=[])
    real_step = loop.train_step

    def _step(session, graph, *args, **kwargs):
        if 'start' not in record:
            variables = session.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
            record['start'] = session.run({variable.op.name: variable for variable in variables})
        results = real_step(session, graph, *args, **kwargs)
        record['losses'].append(float(results[0]['loss']))
        return results

    monkeypatch.setattr(loop, 'train_step', _step)
    return record


def _vistas_flags(root, folder, *extra):
    return ['train', '--dataset', 'mapillary', '--data_root', root, '--image_shape', '64', '96',
            '-bs', '2', '-ep', '1', '--seed', '5', '--vgg_weights', 'none', '--weight_decay', '0',
            '-cd', str(folder / 'ckpt'), '-sd', str(folder / 'summaries'),
            '-rd', str(folder / 'runs'), '--gpu', '0'] + list(extra)


@pytest.mark.end_to_end
@pytest.mark.parametrize('kind', ['model', 'ckpt'])
def test_fine_tuning_on_vistas_loads_the_encoder_and_starts_the_score_layers_afresh(
        source, vistas_root, tmp_path, tiny_model, monkeypatch, capsys, kind):
    record = _record_steps(monkeypatch)
    flags = _vistas_flags(vistas_root, tmp_path, '--init_from', source[kind])
    assert main.main(flags, network=tiny_model) == 0
    out = capsys.readouterr().out
    trained, start = _source_values(source['model']), record['start']
    for layer in ENCODER_LAYERS:
        assert ' %s ' % layer in out
        for name in (name for name in trained if name.startswith(layer + '/')):
            np.testing.assert_array_equal(start[name], trained[name], err_msg=name)
    num_classes = helper.read_json(os.path.join(glob.glob(str(
        tmp_path / 'runs' / '*' / 'model'))[0], model_dir.CONFIG_FILE))['num_classes']
    assert num_classes > 60
    for layer in SCORE_LAYERS:
        assert not start[layer + '/weights'].any() and not start[layer + '/biases'].any()
    assert '  score_fr       re-initialised  [1, 1, 16, 19] -> [1, 1, 16, %d]' % num_classes in out
    np.testing.assert_array_equal(start['upscore8/weights'],
                                  fcn8vgg16.bilinear_kernel(16, num_classes))


@pytest.mark.end_to_end
def test_a_trained_encoder_learns_the_new_classes_faster_than_one_from_scratch(
        source, vistas_root, tmp_path, tiny_model, monkeypatch):
    """Both start with zero score layers, so the first step's loss is the same; on the same
    batches, the steps after it score lower on the encoder that has learnt road scenes."""
    losses = {}
    for name, extra in (('scratch', []), ('fine-tuned', ['--init_from', source['model']])):
        record = _record_steps(monkeypatch)
        flags = _vistas_flags(vistas_root, tmp_path / name, '-ep', '3', '-lr', '3e-3', *extra)
        assert main.main(flags, network=tiny_model) == 0
        monkeypatch.undo()
        losses[name] = record['losses']
    assert losses['fine-tuned'][0] == pytest.approx(losses['scratch'][0], rel=1e-5)
    assert np.mean(losses['fine-tuned'][1:]) < np.mean(losses['scratch'][1:])


@pytest.mark.end_to_end
def test_the_same_classes_at_another_image_shape_start_from_the_trained_model(
        source, demo_root, tmp_path, tiny_model, monkeypatch, capsys):
    losses = {}
    for name, extra in (('scratch', []), ('fine-tuned', ['--init_from', source['model']])):
        record = _record_steps(monkeypatch)
        flags = synthetic.train_flags(demo_root, tmp_path / name, '--image_shape', '96', '160',
                                      '--seed', '5', '--weight_decay', '0', '--no_val', *extra)
        assert main.main(flags, network=tiny_model) == 0
        monkeypatch.undo()
        losses[name] = record['losses'][0]
        assert 're-initialised' not in capsys.readouterr().out
    trained = _source_values(source['model'])
    np.testing.assert_array_equal(record['start']['score_fr/weights'], trained['score_fr/weights'])
    assert losses['fine-tuned'] < losses['scratch']


@pytest.mark.end_to_end
def test_fine_tuning_on_cityscapes35_exports_a_model_of_its_classes(
        source, demo_root, tmp_path, tiny_model, capsys):
    flags = synthetic.train_flags(demo_root, tmp_path, '--label_set', 'cityscapes35',
                                  '--init_from', source['ckpt'], '--no_val')
    assert main.main(flags, network=tiny_model) == 0
    assert 're-initialised  [1, 1, 16, 19] -> [1, 1, 16, 35]' in capsys.readouterr().out
    (model,) = glob.glob(str(tmp_path / 'runs' / '*' / 'model'))
    config = helper.read_json(os.path.join(model, model_dir.CONFIG_FILE))
    assert (config['label_set'], config['num_classes']) == ('cityscapes35', 35)
    assert config['init_from'] == source['ckpt']
    assert _source_values(model)['score_fr/weights'].shape[-1] == 35


@pytest.mark.end_to_end
def test_a_folder_with_checkpoints_resumes_and_ignores_init_from(source, demo_root, tmp_path,
                                                                 tiny_model, capsys):
    assert main.main(synthetic.train_flags(demo_root, tmp_path, '--no_val'),
                     network=tiny_model) == 0
    flags = synthetic.train_flags(demo_root, tmp_path, '--no_val', '-ep', '2',
                                  '--init_from', source['model'])
    assert main.main(flags, network=tiny_model) == 0
    captured = capsys.readouterr()
    assert ('holds checkpoints: resuming them, --init_from %s ignored' % source['model']
            in captured.err)
    assert 'initialising from' not in captured.out
    assert 'continuing training after 2 steps' in captured.out


def _error(capsys, flags, network):
    assert main.main(flags, network=network) != 0
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    (line,) = [line for line in err.splitlines() if line.startswith('error:')]
    return line


@pytest.mark.end_to_end
def test_another_encoder_shape_is_one_line_naming_the_variable_and_nothing_is_written(
        source, demo_root, tmp_path, tiny_model, capsys):
    wider = dataclasses.replace(tiny_model, fc_channels=32)
    flags = synthetic.train_flags(demo_root, tmp_path, '--init_from', source['model'])
    line = _error(capsys, flags, wider)
    assert 'fc6/weights has shape [7, 7, 8, 16] there and [7, 7, 8, 32] in this model' in line
    assert source['model'] in line
    assert not os.path.exists(tmp_path / 'ckpt')


@pytest.mark.end_to_end
def test_a_missing_or_frozen_source_is_one_line(source, demo_root, tmp_path, tiny_model,
                                                capsys):
    missing = str(tmp_path / 'nowhere')
    line = _error(capsys, synthetic.train_flags(demo_root, tmp_path, '--init_from', missing),
                  tiny_model)
    assert line == 'error: --init_from %s does not exist' % missing
    frozen = tmp_path / 'frozen'
    frozen.mkdir()
    helper.write_json(str(frozen / model_dir.CONFIG_FILE), {'label_set': 'cityscapes'})
    (frozen / model_dir.GRAPH_FILE).write_bytes(b'')
    line = _error(capsys, synthetic.train_flags(demo_root, tmp_path, '--init_from',
                                                str(frozen)), tiny_model)
    assert 'a frozen or optimised model, whose weights are constants' in line
    assert not os.path.exists(tmp_path / 'ckpt')


def _checkpoint_folder(folder, num_classes, network):
    """A checkpoint folder of this tool's layout holding a freshly initialised model."""
    with tf.Graph().as_default():
        fcn8vgg16.inference_graph(num_classes, network.encoder, network.fc_channels)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            tf1.train.Saver().save(session, os.path.join(str(folder), 'model.ckpt'), 0)
    helper.write_json(os.path.join(str(folder), model_dir.CONFIG_FILE),
                      {'label_set': 'cityscapes', 'num_classes': num_classes})
    return str(folder)


def test_the_plan_names_each_variable_state(tmp_path, tiny_model):
    folder = _checkpoint_folder(tmp_path, 19, tiny_model)
    plan = init_from.plan(folder, 19, tiny_model)
    assert {state for _, state, _, _ in plan.rows} == {init_from.LOADED}
    assert len(plan.loaded) == len(tf.train.list_variables(folder))
    deeper = dataclasses.replace(tiny_model, encoder=((1, 4, 2),) + tiny_model.encoder[1:])
    states = {name: state for name, state, _, _ in init_from.plan(folder, 7, deeper).rows}
    assert {name for name, state in states.items() if state == init_from.NEW} == {
        'conv1_2/filter', 'conv1_2/biases'}
    assert {name.split('/')[0] for name, state in states.items()
            if state == init_from.REINITIALISED} == set(init_from.CLASS_LAYERS)
    lines = init_from.table(init_from.plan(folder, 7, deeper))
    assert lines[0] == 'initialising from %s (cityscapes, 19 classes):' % folder
    assert '  conv1_2        new             [3, 3, 4, 4]' in lines
    assert '  upscore8       re-initialised  [16, 16, 19, 19] -> [16, 16, 7, 7]' in lines


def test_the_loaded_weights_reach_every_replica(tmp_path, tiny_model):
    folder = _checkpoint_folder(tmp_path, 19, tiny_model)
    saved = tf.train.load_checkpoint(folder).get_tensor('fc7/weights')
    recipe = specs.Recipe(epochs=1, batch_size=4, learning_rate=1e-4)
    with tf.Graph().as_default() as graph:
        tf1.set_random_seed(7)  # other initial weights than the saved ones
        train_graph.build_train_graph(tf.zeros([0, 64, 128, 3], tf.uint8),
                                      tf.zeros([0, 64, 128], tf.uint8), tiny_model, recipe,
                                      data_loader.get_label_set('cityscapes'),
                                      devices=['/cpu:0', '/cpu:1'])
        with tf1.Session(config=tf1.ConfigProto(device_count={'CPU': 2})) as session:
            session.run(tf1.global_variables_initializer())
            init_from.load(session, init_from.plan(folder, 19, tiny_model))
            (variable,) = [v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                           if v.op.name == 'fc7/weights']
            copies = session.run(list(variable.values))
    assert len(copies) == 2 and saved.any()
    for copy in copies:
        np.testing.assert_array_equal(copy, saved)
