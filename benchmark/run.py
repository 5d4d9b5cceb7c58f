"""What one benchmark run has measured so far, and what it has made to measure it; the rows that
time a model run in a fresh process each (Run.in_child)."""
import os
import sys
import traceback

import numpy as np
import tensorflow as tf
from PIL import Image

import data_loader
from roadseg import specs
from roadseg.data import demo_data
from benchmark import config, measure
from benchmark.models import Models


class Run:
    """What one benchmark run has measured so far, and what it has made to measure it."""

    def __init__(self, settings, work_dir, model_dir=None, profile_dir=None, debug=False,
                 sources=None, network=None):
        self.settings, self.work_dir, self.profile_dir = settings, work_dir, profile_dir
        self.debug = debug
        self.network = network or specs.Network()  # the tests time a tiny one
        self.models = Models(work_dir, model_dir, settings.calibration_images, self.network)
        self.label_set = data_loader.get_label_set(config.LABEL_SET)
        self.raw, self.tables, self.errors, self.profile = {}, [], [], {}
        # (image paths, label paths) the export section compares the exported models on; once
        # set, the processes that time those models score them too (into self.scores).
        self.score_split, self.scores = None, {}
        self._sources = sources

    def peak(self, precision, warmup=1, repeats=3):
        """GFLOP/s of a matrix product in bfloat16 (precision bf16) or float32, measured now."""
        dtype = tf.bfloat16 if precision == 'bf16' else tf.float32
        rate = measure.matmul_rate(dtype, self.settings.matmul_size, warmup, repeats)
        self.raw.setdefault('peaks_gflops', {}).setdefault(
            'bf16' if precision == 'bf16' else 'fp32', []).append(rate)
        return rate

    def attempt(self, what, function, *args, **kwargs):
        """function(*args, **kwargs), or None with the error recorded for the report."""
        try:
            return function(*args, **kwargs)
        except Exception as error:  # one failed measurement must not end the run
            failed_row = isinstance(error, measure.RowFailed)
            line = str(error) if failed_row else measure.error_line(error)
            print('%s failed: %s' % (what, line), file=sys.stderr)
            if self.debug:
                print(error.stderr if failed_row else traceback.format_exc(),
                      file=sys.stderr, end='')
            self.errors.append((what, line))
            return None

    def row_spec(self, function, args):
        """What a row process needs to run function(run, *args) as this run would: plain
        values only, the network's shape included."""
        return dict(function=function.__name__, args=list(args),
                    settings=self.settings._asdict(), work_dir=self.work_dir,
                    model_dir=self.models.model_dir, profile_dir=self.profile_dir,
                    sources=self._sources, network=self.network.config())

    def in_child(self, function, *args):
        """function(self, *args) run by a fresh Python process, as a user's `main.py predict`
        runs one model per process: oneDNN's cache of convolution primitives is process-wide,
        and the first model of a process decides how later convolutions of the same shapes
        run. Returns function's JSON-able result; its profile joins self.profile."""
        reply = measure.child_reply(self.row_spec(function, args))
        self.profile.update(reply['profile'])
        return reply['result']

    def trace(self, session, fetches, feed, name=None, flops=None, batch=1):
        """A traced run: the rewrites it shows. With --profile and a name, also its Chrome
        trace in the profile folder and its top ops for the report; given layer_flops, also
        its step_parts for a batch of that many images."""
        path = os.path.join(self.profile_dir, name.replace(' ', '_') + '.json') \
            if self.profile_dir and name else None
        step_stats, seconds = measure.traced_run(session, fetches, feed, path)
        if path:
            self.profile[name] = dict(path=path, wall_ms=1000 * seconds,
                                      ops=measure.top_ops(step_stats))
            if flops:
                self.profile[name]['parts'] = measure.step_parts(step_stats, flops, batch)
        return measure.rewrites_seen(step_stats)

    def sources(self):
        """(images glob, labels folder) of synthetic Cityscapes-layout sources, written once."""
        if self._sources is None:
            root = os.path.join(self.work_dir, 'sources')
            height, width = self.settings.source_shape
            measure.log('drawing %d sources of %dx%d' % (self.settings.sources, width, height))
            for index in range(self.settings.sources):
                image, labels = demo_data.draw_scene(np.random.default_rng(index), height, width)
                stem = 'benchtown_%06d_000019' % index
                _save_png(image, root, 'leftImg8bit', stem + '_leftImg8bit.png')
                _save_png(labels, root, 'gtFine', stem + '_gtFine_labelIds.png')
            self._sources = (os.path.join(root, 'leftImg8bit', 'train', '*', '*.png'),
                             os.path.join(root, 'gtFine', 'train'))
        return self._sources


def _save_png(array, root, kind, name):
    folder = os.path.join(root, kind, 'train', 'benchtown')
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(array).save(os.path.join(folder, name))
