"""tests/smoke.sh, the full-size chain and the original tool's command lines, in the suite."""
import os
import subprocess
import sys

import pytest

from roadseg.data import demo_data

SMOKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'smoke.sh')


@pytest.mark.end_to_end
def test_the_full_size_chain_and_the_original_command_lines_run(tmp_path):
    demo_data.ensure_demo_dataset()  # the script reads the default demo folder
    work = tmp_path / 'work'
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
    result = subprocess.run(['bash', SMOKE, str(work)], capture_output=True, text=True,
                            env=env, timeout=3600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert 'smoke test passed in %s' % work in result.stdout
    assert (work / 'original' / 'out.mp4').stat().st_size > 0
