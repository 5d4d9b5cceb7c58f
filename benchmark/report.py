"""The report of a run: BENCHMARKS.md (machine, targets, each section's table, the profile, and a
reading of the targets generated from the run's own numbers) and BENCHMARKS.json (raw numbers)."""
import collections
import os

import helper
from helper import UserError
from roadseg import devices
from benchmark.config import BUSY_SHARE, TRAIN_BATCH
from benchmark.targets import (TARGETS, format_goal, format_value, not_applicable, target_met,
                               target_status)

WRITER = 'python -m benchmark'
# The single-file tool this folder was before: its reports and JSON may be replaced too.
PREVIOUS_WRITER = 'benchmark.py'
REPORT_MARKS = tuple('<!-- written by %s; a new run replaces this file -->' % writer
                     for writer in (WRITER, PREVIOUS_WRITER))
REPORT_MARK = REPORT_MARKS[0]
SHARE_COLUMN = 'share of peak'  # filled in by sections_peak.finish_peaks at the end of the run
PROFILE_FILES = ('inference_step.json', 'train_step.json')  # what --profile DIR holds

Table = collections.namedtuple('Table', ['title', 'columns', 'rows', 'notes'])


def table_row(cells, value=None, target=None, label=None, gflops=None, precision='fp32',
              beside_peak=None, rewrites=None, trace=None):
    """A report row: its cells, optionally the value checked against TARGETS[target] (unless
    the target does not apply on this machine's CPU), and the GFLOP/s (in precision) whose
    share of the peak goes in its SHARE_COLUMN cell. For the reading of the targets: the
    matmul rate measured beside the row, the graph rewrites its traced run showed, and the
    name of its profiled step."""
    return dict(cells=[str(cell) for cell in cells], value=value, target=target, label=label,
                gflops=gflops, precision=precision, beside_peak=beside_peak, rewrites=rewrites,
                trace=trace, not_applicable=not_applicable(target, devices.cpu_flags()))


def markdown_table(columns, rows):
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    return '\n'.join(lines + ['| ' + ' | '.join(cells) + ' |' for cells in rows])


def table_markdown(table):
    """A section's table, with target and status columns when any row has a target."""
    with_targets = any(row['target'] for row in table.rows)
    rows = []
    for row in table.rows:
        cells = list(row['cells'])
        if with_targets:
            target = TARGETS.get(row['target'])
            cells += [format_goal(target), _status(row, target)] \
                if target else ['', '']
        rows.append(cells)
    columns = list(table.columns) + (['target', 'status'] if with_targets else [])
    text = '## %s\n\n' % table.title
    if rows:
        text += markdown_table(columns, rows) + '\n'
    return text + ''.join('\n%s\n' % note for note in table.notes)


def _target_rows(tables):
    """(label, row, target) of every row with a target, in report order."""
    for table in tables:
        for row in table.rows:
            if row['target']:
                target = TARGETS[row['target']]
                yield row['label'] or target.label, row, target


def _status(row, target):
    return target_status(row['value'], target, row.get('not_applicable'))


def _summary_markdown(tables):
    rows = [[label, format_value(row['value'], target.unit), format_goal(target),
             _status(row, target)] for label, row, target in _target_rows(tables)]
    if not rows:
        return ''
    return '## Targets\n\n' + markdown_table(['target', 'measured', 'goal', 'status'], rows)


# ---------------------------------------------------------------------------- the reading

def _share_reading(row, results):
    """A share-of-peak row against the run's best peak and the peak measured beside it."""
    precision = 'float32' if row['precision'] == 'fp32' else row['precision']
    best = results['raw'].get('peak_gflops', {}).get(row['precision'])
    parts = ['against the run\'s best %s matmul rate, %.0f GFLOP/s' % (precision, best)] \
        if best else []
    if row['gflops'] and row['beside_peak']:
        beside = row['gflops'] / row['beside_peak']
        parts.append('%s of the rate measured beside it (%.0f GFLOP/s), against which the '
                     'target would be %s' % (format_value(beside, '%'), row['beside_peak'],
                                             target_status(beside, TARGETS[row['target']])))
    return parts


def _inference_trace_reading(step):
    """The share of a traced inference step's op time that convolutions and products took."""
    products = sum(share for op, _, share in step['ops'] if 'Conv2D' in op or 'MatMul' in op)
    return ['in its traced step (%.0f ms), convolutions and matrix products took %s of the op '
            'time' % (step['wall_ms'], format_value(products, '%'))]


def _training_trace_reading(parts, peak):
    """Where the profiled training step stands against the peak: all its products together,
    the other ops, and the product part furthest below the peak."""
    whole = sum(ms for _, ms, _ in parts) or 1
    products = [(name, ms, gflop) for name, ms, gflop in parts if gflop and ms]
    if not products or not peak:
        return []
    product_ms = sum(ms for _, ms, _ in products)
    rate = sum(gflop for _, _, gflop in products) / product_ms * 1000
    name, ms, gflop = min(products, key=lambda part: part[2] / part[1])
    return ['in the profiled step the matrix products together ran at %s of the peak and took '
            '%s of its op time, the other ops %s' % (
                format_value(rate / peak, '%'), format_value(product_ms / whole, '%'),
                format_value(1 - product_ms / whole, '%')),
            'the product part furthest below the peak: %s, at %s' % (
                name, format_value(gflop / ms * 1000 / peak, '%'))]


def _bf16_reading(row):
    if row['rewrites'] is not None and not row['rewrites'].get('bf16'):
        if row.get('not_applicable'):  # TensorFlow leaves the graph float32 there
            return ['no bf16 rewrite ran in its traced step: TensorFlow does not rewrite to '
                    'bfloat16 on this CPU, so the row ran float32']
        return ['no bf16 rewrite ran in its traced step: --precision bf16 did not reach the '
                'session']
    if row.get('share') is not None:
        return ['%s of the run\'s best bf16 matmul rate' % format_value(row['share'], '%')]
    return []


def _pipeline_reading(raw):
    """tf.data alone against what a training step in memory takes in."""
    rate = raw.get('pipeline_images_per_second', {}).get('tf.data')
    step_ms = raw.get('pipeline_step_ms', {}).get('in memory')
    if not rate or not step_ms:
        return []
    needed = TRAIN_BATCH / (step_ms / 1000)
    verdict = ('so a slower step comes from the cores its decoding takes, not from waiting '
               'for batches') if rate > needed else 'so the step waits for its batches'
    return ['tf.data alone makes %.1f images/s, %.1fx the %.2f images/s a step in memory takes '
            'in, %s' % (rate, rate / needed, needed, verdict)]


def target_reading(row, results):
    """What the run's own numbers say about a target row besides its status: [clauses]."""
    key, profile = row['target'], results['profile']
    if key in ('inference_fp32', 'training_fp32'):
        parts = _share_reading(row, results)
        step = profile.get(row['trace']) if row['trace'] else None
        if step and step.get('parts'):
            peak = results['raw'].get('peak_gflops', {}).get('fp32')
            parts += _training_trace_reading(step['parts'], peak)
        elif step:
            parts += _inference_trace_reading(step)
        return parts
    if key in ('inference_bf16', 'training_bf16'):
        return _bf16_reading(row)
    if key == 'tfdata_step':
        return _pipeline_reading(results['raw'])
    if key == 'onnx_runtime' and row['value'] is not None and row['value'] < 1:
        return ['ONNX Runtime is the faster float engine on this machine%s: predict with '
                '`optimised_model/model.onnx` here' % (
                    ' (TensorFlow runs without oneDNN\'s ops on this CPU)'
                    if results['machine'].get('onednn') is False else '')]
    return []


def _reading_markdown(results):
    """A bullet for every missed target and every target the run's numbers say more about."""
    bullets, missed = [], False
    for label, row, target in _target_rows(results['tables']):
        reading = target_reading(row, results)
        met = target_met(row['value'], target, row.get('not_applicable'))
        missed = missed or (row['value'] is not None and not met
                            and not row.get('not_applicable'))
        if reading or (row['value'] is not None and not met):
            bullets.append('- **%s**: %s against %s, %s%s.\n' % (
                label, format_value(row['value'], target.unit), format_goal(target),
                _status(row, target), ''.join('; ' + part for part in reading)))
    if not bullets:
        return ''
    text = '## Reading the targets\n\nGenerated from this run\'s numbers.\n\n'
    if missed and not results['profile']:
        text += 'Run again with `--profile DIR` for the top ops of a training and an ' \
                'inference step.\n\n'
    return text + ''.join(bullets)


# ---------------------------------------------------------------------------- the report

def _profile_markdown(profile):
    if not profile:
        return ''
    text = '## Profile\n\nTensorFlow\'s trace of one step (FULL_TRACE; open the JSON files in ' \
           'chrome://tracing or Perfetto). Op time summed over threads, top op types:\n'
    for name, step in profile.items():
        rows = [[op, '%.1f' % ms, '%.1f%%' % (100 * share)] for op, ms, share in step['ops']]
        text += '\n### %s (%.0f ms wall, `%s`)\n\n' % (name, step['wall_ms'], step['path'])
        text += markdown_table(['op', 'ms', 'share'], rows) + '\n'
    return text


def _onednn_text(machine):
    if machine.get('onednn') is None:
        return ''
    return ', oneDNN ops %s' % ('on' if machine['onednn'] else 'off')


def _machine_markdown(machine, settings_text, command):
    rows = [['CPU', machine['cpu']], ['cores', str(machine['cores'])],
            ['RAM', '%.1f GiB' % (machine['ram_bytes'] / 2 ** 30)],
            ['TensorFlow', machine['tensorflow'] + _onednn_text(machine)],
            ['date', machine['date']],
            ['load average (1 min) at start, end', '%.2f, %.2f' % tuple(machine['load'])],
            ['CPU time of other processes during the run',
             '%.0f%% of all cores' % (100 * machine['others_cpu_share'])],
            ['command', '`%s`' % command], ['settings', settings_text]]
    return '## Machine\n\n' + markdown_table(['', ''], rows) + '\n'


def format_report(results):
    """The markdown report of a run: machine, targets, each section's table, profile, and the
    reading of the targets."""
    machine = results['machine']
    parts = [REPORT_MARK, '# Benchmarks', 'Numbers of one `%s` run on the machine below (%s).'
             % (WRITER, results['network'])]
    if machine['others_cpu_share'] > BUSY_SHARE:
        parts.append('**Preliminary**: other processes used %.0f%% of the machine\'s CPU time '
                     'during this run, so its times are noisy and pessimistic. Run it again on '
                     'an idle machine.' % (100 * machine['others_cpu_share']))
    parts += [_machine_markdown(machine, results['settings'], results['command']),
              _summary_markdown(results['tables'])]
    parts += [table_markdown(table) for table in results['tables']]
    parts += [_profile_markdown(results['profile']), _reading_markdown(results)]
    if results['errors']:
        parts.append('## Failed measurements\n\n' + ''.join(
            '- %s: `%s`\n' % (what, error) for what, error in results['errors']))
    return '\n\n'.join(part.strip('\n') for part in parts if part) + '\n'


# ---------------------------------------------------------------------------- the files

def check_outputs(report, json_path, profile_dir):
    """Replaces only a report, JSON or profile folder that the benchmark wrote."""
    if os.path.exists(report):
        with open(report, errors='replace') as f:
            head = f.read(4096)
        if not any(mark in head for mark in REPORT_MARKS):
            raise UserError('%s exists and was not written by %s: choose another --report'
                            % (report, WRITER))
    if os.path.exists(json_path):
        try:
            ours = helper.read_json(json_path).get('written_by') in (WRITER, PREVIOUS_WRITER)
        except (UserError, AttributeError):
            ours = False
        if not ours:
            raise UserError('%s exists and was not written by %s: choose another --json'
                            % (json_path, WRITER))
    if profile_dir and os.path.exists(profile_dir) and (
            not os.path.isdir(profile_dir) or set(os.listdir(profile_dir)) - set(PROFILE_FILES)):
        raise UserError('%s holds files not written by %s: choose another --profile folder'
                        % (profile_dir, WRITER))


def write_outputs(report, json_path, results, conversions):
    """The markdown report and the JSON of the raw numbers, each replaced atomically."""
    tmp = report + '.tmp'
    with open(tmp, 'w') as f:
        f.write(format_report(results))
    os.replace(tmp, report)
    helper.write_json(json_path, dict(
        written_by=WRITER, machine=results['machine'], command=results['command'],
        settings=results['settings'], results=results['raw'], conversions=conversions,
        profile=results['profile'], errors=results['errors']))
