"""The command line as a new user meets it: a bare `python main.py`, the flags' other spellings,
the nn_*.sh scripts, and a stderr that holds the tool's own lines, not TensorFlow's chatter."""
import glob
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

import main
from roadseg import flags
from helper import UserError
import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, 'nn_*.sh')))
# What TensorFlow and TensorFlow Lite write to stderr by themselves, on this machine or another.
NATIVE_NOISE = ('absl::InitializeLog', 'cuda', 'cuInit', 'oneDNN', 'XNNPACK', 'fully_quantize')
PROGRESS_BAR = re.compile(r'[\w .-]*: *\d+%\|')


def _foreign_lines(stderr):
    """The lines of stderr that are neither the tool's own (`warning: `, `error: `) nor a
    progress bar (tqdm redraws its bar after a carriage return)."""
    lines = [line.strip() for line in re.split(r'[\r\n]', stderr)]
    return [line for line in lines if line and not line.startswith(('warning: ', 'error: '))
            and not PROGRESS_BAR.match(line)]


def _environment():
    """The user's environment: `python` is this interpreter, and TensorFlow's log level is
    what main.py sets, not the tests' own."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
    env.pop('TF_CPP_MIN_LOG_LEVEL', None)
    return env


def _run(command, cwd, timeout=300):
    return subprocess.run(command, cwd=str(cwd), env=_environment(), capture_output=True,
                          text=True, timeout=timeout)


def _tool(*arguments):
    return [sys.executable, os.path.join(REPO, 'main.py')] + list(arguments)


# --------------------------------------------------------------------------- usage, spellings

def test_no_arguments_print_every_action_and_flag_to_stderr_and_are_an_error(capsys):
    with pytest.raises(UserError, match='^no action given: python main.py ACTION'):
        main.parse_args([])
    out, err = capsys.readouterr()
    assert out == '' and err.startswith('usage: python main.py ACTION [flags]\n')
    for action, what in flags.ACTION_HELP.items():
        assert re.search(r'^  %s +%s$' % (action, re.escape(what)), err, re.MULTILINE), action
    assert '--summary_dir' in err and '--video_file_in' in err  # the flags too


def test_every_action_has_a_line_saying_what_it_does():
    assert set(flags.ACTION_HELP) == set(main.ACTIONS)


@pytest.mark.parametrize('spelling', [['-sd', 'logs'], ['--summary_dir', 'logs'],
                                      ['--summaries_dir', 'logs'], ['--summaries_dir=logs']])
def test_summaries_dir_is_another_spelling_of_summary_dir(spelling):
    assert main.parse_args(['train'] + spelling).summary_dir == 'logs'
    assert main.parse_args(['evaluate'] + spelling).summary_dir == 'logs'


@pytest.mark.end_to_end
def test_python_main_py_without_arguments_prints_the_usage_and_exits_2(tmp_path):
    result = _run(_tool(), tmp_path, timeout=60)
    assert result.returncode == 2 and result.stdout == ''
    lines = result.stderr.splitlines()
    assert lines[0] == 'usage: python main.py ACTION [flags]'
    assert 'actions:' in lines and any(line.startswith('  predict ') for line in lines)
    assert lines[-1].startswith('error: no action given: python main.py ACTION [flags]')
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------- scripts

def test_scripts_are_strict_and_pass_their_arguments_on():
    assert [os.path.basename(path) for path in SCRIPTS] == [
        'nn_evaluate.sh', 'nn_freeze.sh', 'nn_optimise.sh', 'nn_predict.sh', 'nn_prepare.sh',
        'nn_train.sh', 'nn_video.sh']
    for path in SCRIPTS:
        lines = open(path).read().replace('\\\n', ' ').splitlines()  # continuations joined
        assert lines[0] == '#!/usr/bin/env bash', path
        assert 'set -euo pipefail' in lines[1:-1], path
        assert lines[-1].startswith('exec python "$here/main.py" ') and lines[-1].endswith(
            ' "$@"'), path
        assert os.access(path, os.X_OK), path


@pytest.mark.end_to_end
@pytest.mark.parametrize('script', [os.path.basename(path) for path in SCRIPTS])
def test_every_script_answers_help(script, tmp_path):
    result = _run(['bash', os.path.join(REPO, script), '--help'], tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('usage: python main.py ACTION [flags]')


@pytest.mark.end_to_end
@pytest.mark.parametrize('script, action', [('nn_predict.sh', 'predict'),
                                            ('nn_video.sh', 'video'),
                                            ('nn_evaluate.sh', 'evaluate')])
def test_model_scripts_use_the_optimised_model_unless_told_otherwise(script, action, tmp_path):
    """A stand-in `python` echoes what the script runs: the original flags, then the user's,
    which argparse lets win (the last of a flag counts)."""
    (tmp_path / 'python').write_text('#!/bin/sh\nshift\necho "$@"\n')
    (tmp_path / 'python').chmod(0o755)
    env = dict(os.environ, PATH=str(tmp_path) + os.pathsep + os.environ['PATH'])
    env.pop('MODEL_DIR', None)
    path = os.path.join(REPO, script)
    echoed = subprocess.run(['bash', path, '-md', 'mine'], env=env, capture_output=True,
                            text=True, timeout=60, check=True).stdout.split()
    assert echoed == [action, '--gpu=1', '--xla=2', '--model_dir=optimised_model', '-md', 'mine']
    assert main.parse_args(echoed).model_dir == 'mine'
    echoed = subprocess.run(['bash', path], env=dict(env, MODEL_DIR='frozen_model'),
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert echoed.split() == [action, '--gpu=1', '--xla=2', '--model_dir=frozen_model']


# ------------------------------------------------------------------ stderr, with a real model

@pytest.fixture(scope='module')
def optimised(tmp_path_factory, demo_root):
    """(work folder holding optimised_model/ of a tiny trained model, optimise's stderr).
    Training and freezing run in this process; optimise runs main.py as a user would."""
    work = tmp_path_factory.mktemp('work')
    assert main.main(['train', '--dataset', 'demo', '--data_root', demo_root, '--gpu', '0',
                      '--no_val', '-bs', '2', '-ep', '1', '--image_shape', '64', '128',
                      '-cd', str(work / 'ckpt'), '-sd', str(work / 'summaries'),
                      '-rd', str(work / 'runs')], network=synthetic.TINY_NETWORK) == 0
    assert main.main(['freeze', '--gpu', '0', '-cd', str(work / 'ckpt'),
                      '-fd', str(work / 'frozen_model')]) == 0
    calibration = os.path.join(demo_root, 'leftImg8bit', 'train', '*', '*.png')
    result = _run(_tool('optimise', '--gpu', '0', '--calibration_images', calibration),
                  work)
    assert result.returncode == 0, result.stderr[-2000:]
    return work, result.stderr


@pytest.mark.end_to_end
def test_optimise_shows_no_tensorflow_chatter(optimised):
    _, stderr = optimised
    assert [marker for marker in NATIVE_NOISE if marker in stderr] == []
    assert _foreign_lines(stderr) == []


@pytest.mark.end_to_end
def test_predict_shows_its_own_warning_and_none_of_tensorflow_s_chatter(optimised, demo_root):
    """The int8 model under --precision bf16 provokes one of the tool's warnings; TensorFlow
    Lite announces its XNNPACK delegate and TensorFlow probes for CUDA: both hidden."""
    work, _ = optimised
    result = _run(_tool('predict', '--dataset', 'demo', '--data_root', demo_root, '--gpu', '0',
                        '-md', 'optimised_model/model.tflite', '--precision', 'bf16'), work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ('warning: --precision bf16 does not apply to the int8 TFLite model'
            in result.stderr.splitlines())
    assert [marker for marker in NATIVE_NOISE if marker in result.stderr] == []
    assert _foreign_lines(result.stderr) == []


# main.py as `python main.py ...` runs it, with an atexit handler that tells whether Python's
# teardown ran.
_MAIN_WITH_TEARDOWN_MARK = ('import atexit, os, runpy, sys; '
                            'atexit.register(print, "teardown ran"); sys.argv = sys.argv[1:]; '
                            'sys.path.insert(0, os.path.dirname(sys.argv[0])); '
                            'runpy.run_path(sys.argv[0], run_name="__main__")')


@pytest.mark.end_to_end
def test_inference_actions_end_without_python_s_teardown(optimised, demo_root, tmp_path):
    """predict skips Python's teardown once its files are written, with main()'s exit code
    either way; an action outside QUICK_EXIT_ACTIONS ends as usual."""
    work, _ = optimised

    def run(*arguments):
        return _run([sys.executable, '-c', _MAIN_WITH_TEARDOWN_MARK,
                     os.path.join(REPO, 'main.py')] + list(arguments), work)

    done = run('predict', '--dataset', 'demo', '--data_root', demo_root, '--gpu', '0', '-md',
               'optimised_model/model.tflite', '--save_labels', '-rd', str(tmp_path / 'runs'))
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'teardown ran' not in done.stdout and 'written to' in done.stdout
    overlays = glob.glob(str(tmp_path / 'runs' / '*' / 'overlays' / '*.png'))
    labels = glob.glob(str(tmp_path / 'runs' / '*' / 'trainIds' / '*.png'))
    assert len(overlays) == len(labels) == len(glob.glob(os.path.join(
        demo_root, 'leftImg8bit', 'test', '*', '*.png'))) > 0
    for path in overlays + labels:
        Image.open(path).load()  # whole files
    failed = run('predict', '--dataset', 'demo', '--data_root', demo_root, '--gpu', '0',
                 '-md', str(tmp_path / 'no_model'))
    assert failed.returncode == 2 and 'teardown ran' not in failed.stdout
    assert failed.stderr.strip().startswith('error: ')
    listed = run('labels', '--label_set', 'cityscapes')
    assert listed.returncode == 0 and listed.stdout.endswith('teardown ran\n')


@pytest.mark.end_to_end
def test_debug_lets_tensorflow_s_own_lines_through(optimised, demo_root):
    work, _ = optimised
    result = _run(_tool('predict', '--dataset', 'demo', '--data_root', demo_root, '--gpu', '0',
                        '-md', 'optimised_model/model.tflite', '--debug'), work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.' in result.stderr.splitlines()


@pytest.mark.end_to_end
@pytest.mark.parametrize('script, written', [('nn_predict.sh', 'overlays'),
                                             ('nn_evaluate.sh', 'metrics.json')])
def test_scripts_run_the_optimised_model_of_the_current_folder(optimised, demo_root, script,
                                                               written):
    work, _ = optimised
    before = set(glob.glob(str(work / 'runs' / '*')))
    result = _run(['bash', os.path.join(REPO, script), '--dataset', 'demo', '--data_root',
                   demo_root, '--gpu', '0'], work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'loaded optimised' in result.stdout
    (run_dir,) = set(glob.glob(str(work / 'runs' / '*'))) - before
    assert os.path.exists(os.path.join(run_dir, written))
    assert _foreign_lines(result.stderr) == []
