"""The report of a run: BENCHMARKS.md (machine, targets, each section's table, the profile, and
where to look next for a missed target) and BENCHMARKS.json (the raw numbers)."""
import collections
import os

import helper
from helper import UserError
from benchmark.config import BUSY_SHARE
from benchmark.targets import TARGETS, format_goal, format_value, target_met, target_status

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
              beside_peak=None):
    """A report row: its cells, optionally the value checked against TARGETS[target], and
    the GFLOP/s (in precision) whose share of the peak goes in its SHARE_COLUMN cell, with the
    matmul rate measured beside the row."""
    return dict(cells=[str(cell) for cell in cells], value=value, target=target, label=label,
                gflops=gflops, precision=precision, beside_peak=beside_peak)


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
            cells += [format_goal(target), target_status(row['value'], target)] \
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


def _summary_markdown(tables):
    rows = [[label, format_value(row['value'], target.unit), format_goal(target),
             target_status(row['value'], target)] for label, row, target in _target_rows(tables)]
    if not rows:
        return ''
    return '## Targets\n\n' + markdown_table(['target', 'measured', 'goal', 'status'], rows)


def _next_steps_markdown(tables, profile):
    """For each missed target: what to look at next (once per target)."""
    missed = []
    for _, row, target in _target_rows(tables):
        if row['value'] is not None and not target_met(row['value'], target) \
                and target.next_steps and target not in missed:
            missed.append(target)
    if not missed:
        return ''
    text = '## Missed targets: where to look next\n\n'
    if not profile:
        text += 'Run again with `--profile DIR` for the top ops of a training and an ' \
                'inference step.\n\n'
    return text + ''.join('- **%s**: %s\n' % (target.label, target.next_steps)
                          for target in missed)


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


def _machine_markdown(machine, settings_text, command):
    rows = [['CPU', machine['cpu']], ['cores', str(machine['cores'])],
            ['RAM', '%.1f GiB' % (machine['ram_bytes'] / 2 ** 30)],
            ['TensorFlow', machine['tensorflow']], ['date', machine['date']],
            ['load average (1 min) at start, end', '%.2f, %.2f' % tuple(machine['load'])],
            ['CPU time of other processes during the run',
             '%.0f%% of all cores' % (100 * machine['others_cpu_share'])],
            ['command', '`%s`' % command], ['settings', settings_text]]
    return '## Machine\n\n' + markdown_table(['', ''], rows) + '\n'


def format_report(results):
    """The markdown report of a run: machine, targets, each section's table, profile, steps."""
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
    parts += [_profile_markdown(results['profile']),
              _next_steps_markdown(results['tables'], results['profile'])]
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
