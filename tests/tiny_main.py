"""main.py with a tiny VGG16, for tests that run the tool in a subprocess (kills, clusters).

    python tests/tiny_main.py train --dataset demo ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fcn8vgg16  # noqa: E402
import main  # noqa: E402

TINY_VGG16 = ((1, 4, 1), (2, 4, 1), (3, 8, 1), (4, 8, 1), (5, 8, 1))

if __name__ == '__main__':
    fcn8vgg16.VGG16 = TINY_VGG16
    fcn8vgg16.FC_CHANNELS = 16
    sys.exit(main.main())
