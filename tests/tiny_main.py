"""main.py with a tiny VGG16, for tests that run the tool in a subprocess (kills, clusters).

    python tests/tiny_main.py train --dataset demo ...
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # the tool, and synthetic.py beside this file

import main  # noqa: E402
from synthetic import TINY_NETWORK  # noqa: E402

if __name__ == '__main__':
    sys.exit(main.main(network=TINY_NETWORK))
