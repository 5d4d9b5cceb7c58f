"""The stand-in for TensorFlow's public API that predict, video and evaluate start with: every
name it serves is TensorFlow's own, every model format predicts through it what it predicts
through the real API, and a name it lacks still works."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import main
from roadseg import tf_runtime
import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run in a fresh process: main.main over the arguments in sys.argv[1] (a JSON list of argument
# lists), then a JSON line saying whether tensorflow is the stand-in and whether any module
# of the public API was imported.
_RUN_ACTIONS = '''
import json, os, sys
sys.path.insert(0, %r)
import main
from roadseg import tf_runtime
for arguments in json.loads(sys.argv[1]):
    assert main.main(arguments) == 0, arguments
api = sorted(name for name in sys.modules if name.startswith('tensorflow._api'))
print(json.dumps(dict(stand_in=tf_runtime.is_stand_in(sys.modules['tensorflow']), api=api)))
''' % REPO


def _public(path):
    value = tf
    for part in path.split('.'):
        value = getattr(value, part)
    return value


def _in_fresh_process(script, *arguments, env=None):
    """The JSON of the last line script prints, run as main.py would be: without the
    TF2_BEHAVIOR that this process's import of TensorFlow set."""
    env = dict(env or os.environ)
    env.pop('TF2_BEHAVIOR', None)
    result = subprocess.run([sys.executable, '-c', script] + list(arguments), cwd=REPO,
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_name_the_stand_in_serves_is_tensorflows_own():
    stand_in = tf_runtime.make_stand_in(importlib.util.find_spec('tensorflow'))
    for path in tf_runtime.API:
        value = stand_in
        for part in path.split('.'):
            value = getattr(value, part)
        assert value is _public(path), path


@pytest.fixture(scope='module')
def formats(tmp_path_factory, demo_root):
    """{format: what -md names} of one tiny trained model: its checkpoint, SavedModel, frozen
    and optimised graphs."""
    work = tmp_path_factory.mktemp('runtime')
    assert main.main(['train', '--dataset', 'demo', '--data_root', demo_root, '--gpu', '0',
                      '--no_val', '-bs', '2', '-ep', '2', '-lr', '1e-3', '--seed', '3',
                      '--image_shape', '64', '128', '-cd', str(work / 'ckpt'),
                      '-sd', str(work / 'summaries'), '-rd', str(work / 'runs')],
                     network=synthetic.TINY_NETWORK) == 0
    assert main.main(['freeze', '--gpu', '0', '-cd', str(work / 'ckpt'),
                      '-fd', str(work / 'frozen')]) == 0
    assert main.main(['optimise', '--gpu', '0', '-fd', str(work / 'frozen'),
                      '-od', str(work / 'optimised'), '--calibration_images',
                      os.path.join(demo_root, 'leftImg8bit', 'train', '*', '*.png')]) == 0
    (saved_model,) = glob.glob(str(work / 'runs' / '*' / 'model'))
    return dict(checkpoint=str(work / 'ckpt'), saved_model=saved_model,
                frozen=str(work / 'frozen'), optimised=str(work / 'optimised'))


def _predict_arguments(model, images, runs):
    return ['predict', '--gpu', '0', '-md', model, '--save_labels', '--save_probs', '-ip',
            images, '-rd', runs]


def _written(runs, folder):
    """The images predict wrote to folder (trainIds, confidences) of its run in runs."""
    (run,) = glob.glob(os.path.join(runs, '*'))
    paths = sorted(glob.glob(os.path.join(run, folder, '*.png')))
    assert paths
    return np.stack([np.asarray(Image.open(path)) for path in paths])


@pytest.mark.end_to_end
def test_every_model_format_predicts_through_the_runtime_alone_as_through_tensorflow(
        formats, demo_root, tmp_path):
    """predict of each format, evaluate and video run in a fresh process as main.py runs
    them, without a module of TensorFlow's public API; the labels and confidences are those
    of this process, which imported the real TensorFlow."""
    images = os.path.join(demo_root, 'leftImg8bit', '*', '*', '*.png')
    fresh = [_predict_arguments(model, images, str(tmp_path / 'fresh' / kind))
             for kind, model in formats.items()]
    fresh.append(['evaluate', '--gpu', '0', '-md', formats['frozen'],
                  '--data_root', demo_root, '--dataset', 'demo',
                  '-rd', str(tmp_path / 'evaluate')])
    video = str(tmp_path / 'video.mp4')
    fresh.append(['video', '--gpu', '0', '-md', formats['optimised'], '--dataset', 'demo',
                  '--data_root', demo_root, '-vo', video])
    modules = _in_fresh_process(_RUN_ACTIONS, json.dumps(fresh))
    assert modules == dict(stand_in=True, api=[])
    assert glob.glob(str(tmp_path / 'evaluate' / '*' / 'metrics.json'))
    assert os.path.getsize(video) > 0
    for kind, model in formats.items():
        here = str(tmp_path / 'here' / kind)
        assert main.main(_predict_arguments(model, images, here)) == 0
        for folder in ('trainIds', 'confidences'):
            expected = _written(here, folder)
            np.testing.assert_array_equal(_written(str(tmp_path / 'fresh' / kind), folder),
                                          expected, err_msg='%s %s' % (kind, folder))
        assert len(np.unique(_written(here, 'confidences'))) > 1


# As main.py runs a model: the stand-in in graph mode, a graph made; then a name it lacks.
_LACKED_NAME = '''
import json, sys
sys.path.insert(0, %r)
from roadseg import tf_runtime
stand_in = tf_runtime.install_runtime()
stand_in.compat.v1.disable_eager_execution()
graph = stand_in.Graph()
with graph.as_default():
    doubled = stand_in.constant([1, 2]) * 2
dataset = stand_in.data.Dataset.range(3)
import tensorflow as tf
with stand_in.compat.v1.Session(graph=graph) as session:
    values = session.run(doubled).tolist()
print(json.dumps(dict(real=not tf_runtime.is_stand_in(tf),
                      same=stand_in.data.Dataset is tf.data.Dataset,
                      eager=tf.executing_eagerly(), values=values)))
''' % REPO


@pytest.mark.end_to_end
def test_a_name_the_stand_in_lacks_imports_the_real_tensorflow_in_graph_mode():
    assert _in_fresh_process(_LACKED_NAME) == dict(real=True, same=True, eager=False,
                                                   values=[2, 4])


_INSTALL = '''
import json, sys
sys.path.insert(0, %r)
from roadseg import tf_runtime
print(json.dumps(dict(stand_in=tf_runtime.is_stand_in(tf_runtime.install_runtime()))))
''' % REPO


@pytest.mark.end_to_end
def test_a_tensorflow_plugin_folder_gets_the_real_import(tmp_path):
    """TensorFlow's own import loads the plugins of a site-packages/tensorflow-plugins."""
    if tf_runtime.has_plugins(importlib.util.find_spec('tensorflow')):
        pytest.skip('TensorFlow finds plugins on this machine')
    site = tmp_path / 'site-packages'
    (site / 'tensorflow-plugins').mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(site), os.environ.get('PYTHONPATH')])))
    assert _in_fresh_process(_INSTALL, env=env) == dict(stand_in=False)
    assert _in_fresh_process(_INSTALL) == dict(stand_in=True)
