"""The benchmark's command line: `python -m benchmark [flags]` runs the chosen sections and
writes the report; `python -m benchmark --row SPEC` is a row process (see Run.in_child)."""
import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

import tensorflow as tf

from helper import UserError
from roadseg import model_dir, specs
from benchmark import config, measure, report
from benchmark.run import Run
from benchmark.sections_cold import cold_phases, cold_section
from benchmark.sections_inference import (export_section, inference_section, score_kind,
                                          time_inference, time_tta, time_video, val_pairs,
                                          video_section)
from benchmark.sections_memory import memory_section
from benchmark.sections_peak import finish_peaks, peak_section
from benchmark.sections_training import (pipeline_section, pipeline_steps, recipe_steps,
                                         time_training, training_section)

tf1 = tf.compat.v1

SECTION_FUNCTIONS = collections.OrderedDict((  # in report order
    ('peak', peak_section), ('inference', inference_section), ('training', training_section),
    ('pipeline', pipeline_section), ('video', video_section), ('memory', memory_section),
    ('cold', cold_section), ('export', export_section)))
SECTIONS = tuple(SECTION_FUNCTIONS)
# What a row process may be asked to run (see Run.in_child).
ROW_FUNCTIONS = {function.__name__: function for function in (
    time_inference, time_tta, time_training, recipe_steps, pipeline_steps, score_kind,
    time_video, cold_phases)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m benchmark',
        description='Measure FCN-8s speed, memory and exported models on this machine; '
                    'writes a markdown report and a JSON of the raw numbers.')
    parser.add_argument('--quick', action='store_true',
                        help='small settings: fewer repeats, batch 1 only, smaller sources')
    parser.add_argument('--only', metavar='SECTION[,SECTION]',
                        help='run only these sections: %s' % ', '.join(SECTIONS))
    parser.add_argument('-md', '--model_dir',
                        help='a trained model (train\'s SavedModel or a checkpoint folder): '
                             'the export comparison needs one; without it models have '
                             'random weights')
    parser.add_argument('--calibration_images', type=int,
                        help='images calibrating the int8 TFLite model (default 20; quick 4)')
    parser.add_argument('--report', default='BENCHMARKS.md', help='markdown report')
    parser.add_argument('--json', help='raw numbers (default: the report\'s name with .json)')
    parser.add_argument('--profile', metavar='DIR',
                        help='write TensorFlow traces of a training and an inference step here '
                             'and summarise their top ops in the report')
    parser.add_argument('--debug', action='store_true',
                        help='print the traceback of each failed measurement')
    parser.add_argument('--row', help=argparse.SUPPRESS)  # a row process's JSON spec
    return parser.parse_args(argv)


def select_sections(only):
    """The sections to run, in report order; the peaks come along with inference or training,
    whose shares of the peak need them."""
    if not only:
        return list(SECTIONS)
    chosen = {name.strip() for name in only.split(',') if name.strip()}
    unknown = sorted(chosen - set(SECTIONS))
    if unknown or not chosen:
        raise UserError('--only %s: unknown section %s (choose from %s)' % (
            only, ', '.join(unknown) or "''", ', '.join(SECTIONS)))
    if chosen & {'inference', 'training'}:
        chosen.add('peak')
    return [name for name in SECTIONS if name in chosen]


def _settings_text(settings, section_seconds, seconds):
    """The settings of a run, with the minutes each section (name: seconds) and all took."""
    return ('%s: %d warm-up run(s), then the median of %d; inference batch %s; matmul %d; %d '
            'sources of %dx%d; %d demo val images; int8 calibrated on up to %d images; '
            'sections %s; %.1f minutes' % (
                settings.name, settings.warmup, settings.repeats,
                ' and '.join(map(str, settings.batches)), settings.matmul_size,
                settings.sources, settings.source_shape[1], settings.source_shape[0],
                settings.val_images, settings.calibration_images,
                ', '.join('%s (%.1f min)' % (name, section / 60)
                          for name, section in section_seconds.items()),
                seconds / 60))


def _settings(args):
    settings = config.QUICK if args.quick else config.FULL
    if args.calibration_images is None:
        return settings
    if args.calibration_images < 1:
        raise UserError('--calibration_images %d is not positive' % args.calibration_images)
    return settings._replace(calibration_images=args.calibration_images)


def _run_sections(run, sections):
    """Runs the sections in order; returns {section: seconds it took}."""
    section_seconds = collections.OrderedDict()
    for section in sections:
        measure.log('== %s' % section)
        started = time.time()
        SECTION_FUNCTIONS[section](run)
        section_seconds[section] = time.time() - started
    return section_seconds


def run_benchmark(args, command, network=None):
    """Runs the chosen sections in a temporary work folder; writes the report and the JSON."""
    settings = _settings(args)
    sections = select_sections(args.only)
    json_path = args.json or os.path.splitext(args.report)[0] + '.json'
    report.check_outputs(args.report, json_path, args.profile)
    if args.model_dir:
        model_dir.read_model_config(args.model_dir)  # fails now, not after minutes of work
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    machine, started, cpu_at_start = measure.machine_info(), time.time(), measure.cpu_seconds()
    work_dir = tempfile.mkdtemp(prefix='fcn8s-benchmark-')
    try:
        run = Run(settings, work_dir, args.model_dir, args.profile, args.debug, network=network)
        if 'export' in sections and args.model_dir:
            run.score_split = val_pairs(settings.val_images)
        section_seconds = _run_sections(run, sections)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    machine['load'][1] = os.getloadavg()[0]
    finish_peaks(run)
    machine['others_cpu_share'] = measure.others_cpu_share(cpu_at_start, measure.cpu_seconds(),
                                                           time.time() - started)
    network = '%dx%d images, real VGG16 widths, %d %s classes' % (
        config.IMAGE_SHAPE + (run.label_set.num_classes, config.LABEL_SET.capitalize()))
    results = dict(machine=machine, command=command, network=network, tables=run.tables,
                   profile=run.profile, errors=run.errors, raw=run.raw,
                   settings=_settings_text(settings, section_seconds, time.time() - started))
    report.write_outputs(args.report, json_path, results, run.models.stats)
    print('report written to %s, raw numbers to %s' % (args.report, json_path))


def run_row(spec_json):
    """A row process: builds the parent's Run and network from the spec, runs one measurement
    and prints its reply as one JSON line. A failure ends with its one-line error on stderr."""
    spec = json.loads(spec_json)
    run = Run(config.Settings(**spec['settings']), spec['work_dir'], spec['model_dir'],
              spec['profile_dir'], sources=spec['sources'],
              network=specs.Network.from_config(spec['network']))
    try:
        result = ROW_FUNCTIONS[spec['function']](run, *spec['args'])
    except Exception as error:
        traceback.print_exc()
        print(measure.error_line(error), file=sys.stderr)
        return 1
    print(measure.ROW_REPLY + json.dumps(dict(pid=os.getpid(), result=result,
                                              profile=run.profile)), flush=True)
    return 0


def main(argv=None, network=None):
    args = parse_args(argv)
    tf1.disable_eager_execution()  # graph mode, as the tool
    tf.get_logger().setLevel('ERROR')
    if args.row:
        return run_row(args.row)
    command = 'python -m benchmark ' + ' '.join(sys.argv[1:] if argv is None else argv)
    try:
        run_benchmark(args, command.strip(), network)
    except UserError as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
