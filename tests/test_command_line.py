"""The command line as a new user meets it: a bare `python main.py`, the flags' other
spellings."""
import os
import re
import subprocess
import sys

import pytest

import main
from roadseg import flags
from helper import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
