"""The peak section: FLOPs per image and the float32 and bfloat16 matmul rates, measured at the
start and beside every timed row, and the memory bandwidth of a large copy; finish_peaks sets
each row's share of the run's best."""
import os

from benchmark import measure
from benchmark.config import IMAGE_SHAPE
from benchmark.report import SHARE_COLUMN, Table, table_row
from benchmark.targets import format_value

PEAK_TITLE = 'Model and machine peaks'
SHARE_TARGETS = ('inference_fp32', 'training_fp32')  # whose value is the share of the peak
BESIDE_NOTE = ('The notes give the share of the peak beside the row as well: the higher of the '
               'matmul rates measured just before and just after it, which follows the '
               'machine\'s state as the run\'s best does not; the targets use the best.')


def peak_section(run):
    """FLOPs per image, the float32 and bfloat16 matmul rates and the memory bandwidth."""
    settings = run.settings
    flops = measure.model_flops(run.label_set.num_classes, IMAGE_SHAPE, run.network.encoder,
                                run.network.fc_channels)
    run.raw['flops_per_image'] = flops
    rows = [table_row(['FLOPs per image, forward, %dx%d' % IMAGE_SHAPE,
                       '%.1f GFLOP' % (flops / 1e9)])]
    for precision in ('fp32', 'bf16'):
        rate = run.attempt('%s matmul peak' % precision, run.peak, precision,
                           settings.warmup + 1, settings.repeats + 2)
        measure.log('%s matmul: %s GFLOP/s' % (precision,
                                               'failed' if rate is None else '%.0f' % rate))
    bandwidth = run.attempt('memory bandwidth', measure.copy_bandwidth, settings.copy_megabytes,
                            settings.warmup, settings.repeats + 2)
    run.raw['copy_gb_per_second'] = bandwidth
    rows.append(table_row(['memory bandwidth: a %d MiB float32 copy on %d threads, median'
                           % (settings.copy_megabytes, os.cpu_count()),
                           'failed' if bandwidth is None else '%.1f GB/s' % bandwidth]))
    run.tables.append(Table(PEAK_TITLE, ['measurement', 'value'], rows, [
        'The bandwidth counts what the copy reads and writes, as STREAM does.']))


def peak_rows(peaks, size):
    """The best matmul rate of each precision over the run, with the range of all."""
    return [table_row(['%s matmul peak (%d x %d), best of %d' % (precision, size, size,
                                                                 len(rates)),
                       '%.0f GFLOP/s (all: %.0f-%.0f)' % (max(rates), min(rates), max(rates))])
            for precision, rates in sorted(peaks.items(), reverse=True) if rates]


def sample_peak(run, precision):
    """One more peak measurement right after a row, for finish_peaks (bf16, else float32).
    Returns the peak beside the row: the higher of this one and the one before the row."""
    rates = run.raw.get('peaks_gflops', {}).get('bf16' if precision == 'bf16' else 'fp32', [])
    before = rates[-1] if rates else None
    after = run.attempt('%s matmul peak' % precision, run.peak, precision)
    return max(rate for rate in (before, after, 0.0) if rate is not None) or None


def _beside_note(row, table):
    """The row's notes cell with its share of the peak measured beside it added."""
    index = table.columns.index('notes')
    beside = '%s of the peak beside it (%.0f GFLOP/s)' % (
        format_value(row['gflops'] / row['beside_peak'], '%'), row['beside_peak'])
    return '; '.join(cell for cell in (row['cells'][index], beside) if cell)


def finish_peaks(run):
    """Sets every row's share of peak against the best matmul rate of the run: other jobs only
    ever slow a measurement down, and the peak is measured beside every row to catch the
    machine when it is free."""
    peaks = run.raw.get('peaks_gflops', {})
    best = {precision: max(rates) for precision, rates in peaks.items() if rates}
    run.raw['peak_gflops'] = best
    for table in run.tables:
        if table.title == PEAK_TITLE:
            table.rows.extend(peak_rows(peaks, run.settings.matmul_size))
            table.notes.append('The peaks are measured at the start and again beside every '
                               'timed row; each share of peak is taken against the best.')
        for row in table.rows:
            if row['gflops'] is not None and SHARE_COLUMN in table.columns:
                peak = best.get(row['precision'])
                row['share'] = row['gflops'] / peak if peak else None
                row['cells'][table.columns.index(SHARE_COLUMN)] = format_value(row['share'], '%')
                if row['target'] in SHARE_TARGETS:
                    row['value'] = row['share']
            if row.get('beside_peak') and row['gflops'] and 'notes' in table.columns:
                row['cells'][table.columns.index('notes')] = _beside_note(row, table)
