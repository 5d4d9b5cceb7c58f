"""The benchmark/ folder: its pure parts, and its sections end to end on a tiny network (no
timings)."""
import glob
import itertools
import json
import os
import re
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import step_stats_pb2

import data_loader
import fcn8vgg16
import helper
from helper import UserError
from roadseg import devices, specs
from roadseg.data import demo_data
from roadseg.deploy import export
from benchmark import (config, measure, models, report, sections_cold, sections_inference,
                       sections_memory, sections_peak, sections_training, targets)
from benchmark import __main__ as cli
from benchmark.run import Run
from synthetic import TINY_FC_CHANNELS, TINY_VGG16

tf1 = tf.compat.v1
BF16_CPU = {'avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16'}


@pytest.fixture(autouse=True)
def bf16_cpu(monkeypatch):
    """The report's rows as on a CPU with bf16 and int8 dot-product instructions, whatever this
    one has."""
    monkeypatch.setattr(devices, 'cpu_flags', lambda: BF16_CPU)


def _conv_flops(encoder, fc_channels, num_classes, height, width):
    """2 x multiply-adds of every convolution of FCN-8s, from the encoder table."""
    flops, channels, size = 0, 3, height * width
    for _, filters, convs in encoder:
        for _ in range(convs):
            flops += 2 * size * 9 * channels * filters
            channels = filters
        size //= 4
    flops += 2 * size * (7 * 7 * channels * fc_channels + fc_channels * fc_channels)
    score_inputs = (fc_channels, size), (encoder[3][1], 4 * size), (encoder[2][1], 16 * size)
    return flops + sum(2 * pixels * depth * num_classes for depth, pixels in score_inputs)


def test_model_flops_counts_every_convolution_and_scales_with_pixels():
    flops = measure.model_flops(5, (64, 128), TINY_VGG16, TINY_FC_CHANNELS)
    convs = _conv_flops(TINY_VGG16, TINY_FC_CHANNELS, 5, 64, 128)
    # The rest: bias, pooling, the transposed convolutions (large next to tiny convolutions).
    assert convs <= flops < 2 * convs
    # Twice the pixels, twice the work, but for a few FLOPs of fc6 and fc7's shape arithmetic.
    assert abs(measure.model_flops(5, (64, 256), TINY_VGG16, TINY_FC_CHANNELS) - 2 * flops) < 100
    # The real network at 256x512: VGG16's convolutions and fc6/fc7 are nearly all of it.
    real = measure.model_flops(19, (256, 512), fcn8vgg16.VGG16, fcn8vgg16.FC_CHANNELS)
    assert _conv_flops(fcn8vgg16.VGG16, fcn8vgg16.FC_CHANNELS, 19, 256, 512) <= real < 112e9


def test_target_status_gives_the_gap_in_the_targets_unit():
    share = targets.Target('share', '>=', 0.9, '%')
    assert targets.target_status(0.45, share) == '**missed** by 45.0 points'
    assert targets.target_status(0.95, share) == 'met (5.0 points to spare)'
    memory = targets.Target('rss', '<=', 5.5, 'GB')
    assert targets.target_status(6.0, memory) == '**missed** by 0.50 GB'
    assert targets.target_status(5.5, memory).startswith('met')
    assert targets.target_status(None, memory) == 'not measured'
    speed = targets.Target('speed', '>=', 3.0, 'x')
    assert targets.target_met(3.2, speed) and not targets.target_met(2.9, speed)


def _results(others=0.01, errors=()):
    rows = [report.table_row(['float32', 1, '600'], 0.5, 'inference_fp32', 'fp32, batch 1'),
            report.table_row(['bf16', 1, '300'], 2.0, 'inference_bf16'),
            report.table_row(['frozen', 1, '700'])]
    table = report.Table('Inference', ['model', 'batch', 'ms'], rows, ['A note.'])
    machine = dict(cpu='Test CPU', cores=2, ram_bytes=2 ** 34, tensorflow='2.x',
                   date='2026-01-01 00:00 UTC', load=[0.5, 2.0], others_cpu_share=others)
    return dict(machine=machine, command='python -m benchmark --quick', settings='quick',
                network='256x512 images, real VGG16 widths, 19 Cityscapes classes',
                tables=[table], profile={}, errors=list(errors), raw={})


def test_report_has_machine_targets_and_a_reading_of_what_was_missed():
    text = report.format_report(_results())
    assert text.startswith(report.REPORT_MARK)
    assert '| CPU | Test CPU |' in text and '`python -m benchmark --quick`' in text
    assert 'Numbers of one `python -m benchmark` run' in text
    assert '| fp32, batch 1 | 50.0% | >= 90.0% | **missed** by 40.0 points |' in text
    assert '| bf16 inference, speed-up over float32 | 2.00x | >= 1.50x | met' in text
    assert '| frozen | 1 | 700 |  |  |' in text  # rows without a target keep the columns
    reading = text.split('## Reading the targets')[1]
    assert '- **fp32, batch 1**: 50.0% against >= 90.0%, **missed** by 40.0 points' in reading
    assert 'bf16 inference' not in reading  # met, and nothing more to say about it
    assert 'Preliminary' not in text and 'Failed measurements' not in text


@pytest.mark.parametrize('flags, status', [
    (BF16_CPU, '**missed** by 0.50x'),
    ({'avx2', 'avx512f'}, 'not applicable: this CPU has neither avx512_bf16 nor amx_bf16'),
    ({'avx2', 'fma'}, 'not applicable: this CPU has neither avx512_bf16 nor amx_bf16')])
def test_a_bf16_target_does_not_apply_on_a_cpu_without_bf16_instructions(monkeypatch, flags,
                                                                          status):
    monkeypatch.setattr(devices, 'cpu_flags', lambda: flags)
    row = report.table_row(['bf16', 1, '600'], 1.0, 'training_bf16', rewrites={'bf16': False})
    table = report.Table('Training', ['variant', 'batch', 'ms'], [row], [])
    text = report.format_report(dict(_results(), tables=[table]))
    label = targets.TARGETS['training_bf16'].label
    assert '| %s | 1.00x | >= 1.50x | %s |' % (label, status) in text
    assert '| bf16 | 1 | 600 | >= 1.50x | %s |' % status in text
    assert ('Run again with `--profile DIR`' in text) == status.startswith('**missed**')
    # Without the instructions the row ran float32: no word of a rewrite that failed to run.
    reading = text.split('## Reading the targets')[1]
    assert ('so the row ran float32' in reading) == status.startswith('not applicable')
    assert ('did not reach' in reading) == status.startswith('**missed**')
    # Only the bf16 targets need the instructions.
    assert targets.not_applicable('inference_fp32', flags) is None


def test_the_machine_names_the_cpu_features_the_targets_need():
    cpu = measure.machine_info()['cpu']  # flags as BF16_CPU, in the report's order
    assert cpu.endswith(' (avx2, avx512f, avx512_vnni, avx512_bf16)')


@pytest.mark.parametrize('flags, applies', [
    (BF16_CPU, True), ({'avx2', 'avx_vnni'}, True), ({'avx2', 'avx512f'}, False),
    ({'avx2', 'fma'}, False), (None, True)])
def test_the_int8_speed_up_needs_int8_dot_product_instructions(monkeypatch, flags, applies):
    monkeypatch.setattr(devices, 'cpu_flags', lambda: flags)
    label = targets.TARGETS['tflite_speed'].label
    row = report.table_row(['int8 TFLite', 1, '600'], 2.0, 'tflite_speed', label)
    text = report.format_report(dict(_results(), tables=[
        report.Table('Inference', ['model', 'batch', 'ms'], [row], [])]))
    status = ('**missed** by 1.00x' if applies else
              'not applicable: this CPU has neither avx512_vnni nor avx_vnni')
    assert '| %s | 2.00x | >= 3.00x | %s |' % (label, status) in text
    for other in ('tflite_agreement', 'optimised_time', 'onnx_runtime'):
        assert targets.not_applicable(other, flags) is None


@pytest.mark.parametrize('ratio, onednn', [(0.72, False), (0.72, True), (1.1, False)])
def test_onnx_runtime_is_recommended_where_it_is_the_faster_engine(ratio, onednn):
    onnx = targets.TARGETS['onnx_runtime']
    row = report.table_row(['ONNX Runtime', 1, '900'], ratio, 'onnx_runtime',
                           onnx.label + ', batch 1')
    results = dict(_results(), tables=[report.Table('Inference', ['model', 'batch', 'ms'],
                                                    [row], [])])
    results['machine']['onednn'] = onednn
    text = report.format_report(results)
    assert '| TensorFlow | 2.x, oneDNN ops %s |' % ('on' if onednn else 'off') in text
    reading = text.split('## Reading the targets')[-1]
    recommended = 'ONNX Runtime is the faster float engine on this machine'
    assert (recommended in reading) == (ratio < 1)
    assert ('runs without oneDNN' in reading) == (ratio < 1 and not onednn)


def test_report_says_when_the_machine_was_busy_and_what_failed():
    text = report.format_report(_results(others=0.6, errors=[('training bf16', 'E: x')]))
    assert '**Preliminary**: other processes used 60% of the machine' in text
    assert '- training bf16: `E: x`' in text


def test_the_reading_of_the_targets_comes_from_the_run_s_own_numbers():
    rows = [report.table_row(['float32', 1], 0.8, 'inference_fp32', gflops=380.0,
                             beside_peak=400.0, rewrites={}, trace='inference step'),
            report.table_row(['float32'], 0.7, 'training_fp32', gflops=280.0,
                             beside_peak=400.0, rewrites={}, trace='train step'),
            report.table_row(['--precision bf16'], 1.2, 'training_bf16', gflops=300.0,
                             precision='bf16', rewrites=dict(xla=False, bf16=False)),
            report.table_row(['tf.data'], 1.1, 'tfdata_step'),
            report.table_row(['train'], 4.0, 'train_rss')]
    results = dict(_results(), tables=[report.Table('Rows', ['row'], rows, [])], raw=dict(
        peak_gflops={'fp32': 475.0, 'bf16': 1000.0},
        pipeline_images_per_second={'tf.data': 20.0}, pipeline_step_ms={'in memory': 1000.0}))
    results['profile'] = {
        'inference step': dict(wall_ms=300.0, path='i.json', ops=[
            ('_MklNativeFusedConv2D', 200.0, 0.6), ('_MklNativeFusedMatMul', 100.0, 0.35),
            ('MaxPool', 5.0, 0.05)]),
        'train step': dict(wall_ms=400.0, path='t.json', ops=[], parts=[
            ('forward: convolutions', 100.0, 36.0),
            ('backward: convolutions, filter gradients', 200.0, 48.0),
            ('Adam updates', 100.0, 0.0)])}
    reading = report.format_report(results).split('## Reading the targets')[1]
    assert ('- **float32 inference, share of the float32 matmul peak**: 80.0% against >= 90.0%, '
            '**missed** by 10.0 points; against the run\'s best float32 matmul rate, 475 '
            'GFLOP/s; 95.0% of the rate measured beside it (400 GFLOP/s), against which the '
            'target would be met (5.0 points to spare); in its traced step (300 ms), '
            'convolutions and matrix products took 95.0% of the op time.') in reading
    # The profiled step: 84 GFLOP in 300 ms of products, 280 GFLOP/s, 58.9% of 475.
    assert ('in the profiled step the matrix products together ran at 58.9% of the peak and '
            'took 75.0% of its op time, the other ops 25.0%; the product part furthest below '
            'the peak: backward: convolutions, filter gradients, at 50.5%.') in reading
    assert ('- **bf16 training step, speed-up over float32**: 1.20x against >= 1.50x, **missed** '
            'by 0.30x; no bf16 rewrite ran in its traced step') in reading
    assert ('tf.data alone makes 20.0 images/s, 10.0x the 2.00 images/s a step in memory takes '
            'in, so a slower step comes from the cores its decoding takes') in reading
    assert 'peak RSS' not in reading  # met, and nothing more to say about it


def test_others_cpu_share_leaves_out_this_process():
    start = measure.cpu_seconds()
    sum(i * i for i in range(3 * 10 ** 6))  # busy in this process only
    end = measure.cpu_seconds()
    assert end[1] > start[1]
    # Two cores for ten seconds, of which other processes used 4 CPU seconds besides ours.
    assert measure.others_cpu_share((0.0, 0.0), (6.0, 2.0), 10.0) == pytest.approx(
        4.0 / (10.0 * os.cpu_count()))
    assert measure.others_cpu_share((0.0, 0.0), (1.0, 2.0), 10.0) == 0.0


def test_shares_are_taken_against_the_best_peak_of_the_run(tmp_path):
    run = Run(config.QUICK, str(tmp_path))
    run.raw['peaks_gflops'] = {'fp32': [150.0, 200.0, 180.0], 'bf16': [400.0]}
    columns = ['variant', report.SHARE_COLUMN]
    rows = [report.table_row(['float32', 'n/a'], None, 'training_fp32', gflops=160.0),
            report.table_row(['bf16', 'n/a'], 1.6, 'training_bf16', gflops=300.0,
                             precision='bf16'),
            report.table_row(['failed', ''])]
    run.tables += [report.Table('Model and machine peaks', ['measurement', 'value'], [], []),
                   report.Table('Training', columns, rows, [])]
    sections_peak.finish_peaks(run)
    assert [row['cells'] for row in rows] == [['float32', '80.0%'], ['bf16', '75.0%'],
                                              ['failed', '']]
    assert rows[0]['value'] == 0.8 and rows[1]['value'] == 1.6  # a speed-up stays
    assert [row['cells'] for row in run.tables[0].rows] == [
        ['fp32 matmul peak (2048 x 2048), best of 3', '200 GFLOP/s (all: 150-200)'],
        ['bf16 matmul peak (2048 x 2048), best of 1', '400 GFLOP/s (all: 400-400)']]


def test_rows_note_their_share_of_the_peak_measured_beside_them(tmp_path, monkeypatch):
    run = Run(config.QUICK, str(tmp_path))
    run.raw['peaks_gflops'] = {'fp32': [200.0]}
    rates = iter([150.0, 120.0])
    monkeypatch.setattr(measure, 'matmul_rate', lambda *args: next(rates))
    # Before the first row the run's start (200), after it 150; then 150 and 120.
    assert sections_peak.sample_peak(run, 'fp32') == 200.0
    assert sections_peak.sample_peak(run, 'fp32') == 150.0
    assert run.raw['peaks_gflops']['fp32'] == [200.0, 150.0, 120.0]
    columns = ['variant', report.SHARE_COLUMN, 'notes']
    rows = [report.table_row(['float32', 'n/a', ''], None, 'training_fp32', gflops=120.0),
            report.table_row(['--xla 2', 'n/a', 'XLA'], gflops=90.0)]
    rows[0]['beside_peak'], rows[1]['beside_peak'] = 200.0, 150.0
    run.tables.append(report.Table('Training', columns, rows, []))
    sections_peak.finish_peaks(run)
    assert [row['cells'] for row in rows] == [
        ['float32', '60.0%', '60.0% of the peak beside it (200 GFLOP/s)'],
        ['--xla 2', '45.0%', 'XLA; 60.0% of the peak beside it (150 GFLOP/s)']]
    assert rows[0]['value'] == 0.6  # the target keeps the run's best


def test_each_inference_model_is_timed_at_every_batch_size_by_one_process(tmp_path,
                                                                        monkeypatch):
    settings = config.QUICK._replace(batches=(1, 4))
    run = Run(settings, str(tmp_path))
    run.raw.update(flops_per_image=100e9, peaks_gflops={'fp32': [200.0], 'bf16': [400.0]})
    calls, rates = [], iter(range(100, 1000, 10))
    monkeypatch.setattr(models.Models, 'folder', lambda self, kind: 'models/' + kind)
    monkeypatch.setattr(measure, 'matmul_rate', lambda *args: float(next(rates)))
    monkeypatch.setattr(models, 'has_module', lambda name: True)

    def child(run, function, *args):
        if function is sections_inference.time_tta:
            calls.append((function,))
            return {name: 0.1 * (index + 1)
                    for index, (name, _) in enumerate(sections_inference.TTA_VARIANTS)}
        folder, kind, xla, precision, name, score = args
        calls.append((function, folder, name))
        assert score is None  # no export comparison in this run
        return dict(batches=[[1.0 + len(calls), {}], [0.5 + len(calls), {}]], score=None)
    monkeypatch.setattr(Run, 'in_child', child)
    sections_inference.inference_section(run)
    # The float32 model first runs once untimed, as a warm-up that makes no row.
    assert calls == [(sections_inference.time_inference, 'models/float', 'warm-up')] + [
        (sections_inference.time_inference, 'models/' + kind, name)
        for name, kind, _, _ in sections_inference.INFERENCE_VARIANTS] + [
        (sections_inference.time_tta,)]
    table, augmentation = run.tables
    assert [(row['cells'][0], row['cells'][1], row['cells'][2]) for row in table.rows] == [
        (name, str(batch), '%.0f' % (1000 * (base + index)))
        for index, (name, _, _, _) in enumerate(sections_inference.INFERENCE_VARIANTS, 2)
        for batch, base in ((1, 1.0), (4, 0.5))]
    # One peak after each process: both of its rows are beside it.
    besides = [row['beside_peak'] for row in table.rows]
    assert besides[0::2] == besides[1::2] and len(set(besides)) == len(besides) // 2
    assert len(run.raw['peaks_gflops']['fp32']) + len(run.raw['peaks_gflops']['bf16']) == 2 + 7
    ratio = dict((row['label'], row['value']) for row in table.rows if row['label'])
    assert ratio['bf16 inference, speed-up over float32, batch 4'] == pytest.approx(2.5 / 4.5)
    # ONNX Runtime (7.0 s, 6.5 s per image) against the frozen graph just before it (6.0, 5.5).
    onnx = targets.TARGETS['onnx_runtime']
    assert ratio[onnx.label + ', batch 1'] == pytest.approx(7.0 / 6.0)
    assert ratio[onnx.label + ', batch 4'] == pytest.approx(6.5 / 5.5)
    text = report.format_report(dict(_results(), tables=run.tables))
    assert '| %s, batch 1 | 1.17x | >= 1.00x | met (0.17x to spare) |' % onnx.label in text
    assert not run.errors
    assert '## Test-time augmentation at 256x512, float32, batch 1' in text
    assert '| --flip | 2 | 2.00x | 200 | 2.00x |' in text
    assert augmentation.rows[-1]['cells'][-1] == '4.00x'
    assert run.raw['tta_ms_per_image']['one scale (plain)'] == pytest.approx(100.0)


def test_without_onnxruntime_its_rows_say_so_and_nothing_fails(tmp_path, monkeypatch):
    run = Run(config.QUICK._replace(batches=(1, 4)), str(tmp_path))
    monkeypatch.setattr(models.Models, 'folder', lambda self, kind: 'models/' + kind)
    monkeypatch.setattr(models, 'has_module', lambda name: name != 'onnxruntime')
    kinds = []

    def child(run, function, *args):
        if function is sections_inference.time_tta:
            return {}  # every augmentation row failed
        kinds.append(args[1])
        return dict(batches=[[1.0, {}], [1.0, {}]], score=None)
    monkeypatch.setattr(Run, 'in_child', child)
    sections_inference.inference_section(run)
    assert 'onnx' not in kinds and run.errors == []
    table, augmentation = run.tables
    onnx = [row for row in table.rows if row['cells'][0] == 'ONNX Runtime']
    assert [row['cells'][:3] for row in onnx] == [
        ['ONNX Runtime', str(batch), 'not run: onnxruntime is not installed'] for batch in (1, 4)]
    markdown = report.table_markdown(table)
    assert 'not run: onnxruntime is not installed |  |  |  | >= 1.00x | not measured |' in markdown
    assert [row['cells'][3:] for row in augmentation.rows] == [['failed', '']] * 4
    assert len(augmentation.notes) == 1  # no numbers, nothing read from them


def test_augmentation_rows_give_views_pixels_and_the_multiple_of_the_plain_time():
    plain, flip, scales, both = (name for name, _ in sections_inference.TTA_VARIANTS)
    # The six scales of 256x512: 128x256 ... 448x896, multiples of 32 already.
    pixels = 0.25 + 0.5625 + 1 + 1.5625 + 2.25 + 3.0625
    assert sections_inference.tta_views(sections_inference.TTA_VARIANTS[3][1]) == (
        12, pytest.approx(2 * pixels))
    rows, note = sections_inference.tta_rows({plain: 0.5, flip: 1.0, scales: 4.0, both: 9.0})
    assert [row['cells'] for row in rows] == [
        [plain, '1', '1.00x', '500', '1.00x'], [flip, '2', '2.00x', '1000', '2.00x'],
        [scales, '6', '8.69x', '4000', '8.00x'], [both, '12', '17.38x', '9000', '18.00x']]
    assert all(row['target'] is None for row in rows)  # costs, not targets
    assert note.startswith('In this run --flip costs 2.00x the plain time for 2.00x its pixels '
                           '(1.00x the time per pixel); --scales 0.5 0.75 1 1.25 1.5 1.75 costs '
                           '8.00x the plain time for 8.69x its pixels (0.92x the time per pixel)')
    rows, note = sections_inference.tta_rows({flip: 1.0})  # the plain one failed
    assert rows[1]['cells'][3:] == ['1000', 'n/a'] and note is None


def test_the_processes_that_time_the_exported_models_score_them(tmp_path, monkeypatch):
    run = Run(config.QUICK, str(tmp_path), model_dir='trained')
    run.score_split = (['a.png', 'b.png'], ['a_labels.png', 'b_labels.png'])
    monkeypatch.setattr(models.Models, 'folder', lambda self, kind: 'models/' + kind)
    monkeypatch.setattr(measure, 'matmul_rate', lambda *args: 100.0)
    scored = []

    def child(run, function, folder, kind, xla, precision, name, score):
        assert function is sections_inference.time_inference  # no process of its own to score
        if score:
            assert score[:2] == list(run.score_split)
            scored.append(kind)
            class_id = {'tflite': 1}.get(kind, 0)  # the int8 model disagrees everywhere
            np.savez(score[2], np.full((2, 3), class_id), np.full((2, 3), class_id))
            return dict(batches=[[1.0, {}]], score=[[[12, 0], [0, 0]], 10.0])
        return dict(batches=[[1.0, {}]], score=None)
    monkeypatch.setattr(Run, 'in_child', child)
    sections_inference.inference_section(run)
    assert scored == ['frozen', 'optimised', 'tflite']
    sections_inference.export_section(run)
    rows = {(row['cells'][0], row['target']): row['value'] for row in run.tables[-1].rows}
    assert rows[('optimised', 'optimised_agreement')] == 1.0
    assert rows[('int8 TFLite', 'tflite_agreement')] == 0.0
    assert rows[('optimised', 'optimised_time')] == 1.0


def test_calls_timed_in_turn_share_the_machine_s_changes(monkeypatch):
    order, clock = [], iter(range(1000))
    monkeypatch.setattr(measure.time, 'perf_counter', lambda: float(next(clock)))

    def call(name, ticks):
        def run():
            order.append(name)
            for _ in range(ticks):  # each tick: one second of the fake clock
                next(clock)
        return run
    medians = measure.time_in_turn({'a': call('a', 0), 'b': call('b', 2)}, 1, 3)
    assert order == ['a', 'b'] * 4
    assert medians == {'a': 1.0, 'b': 3.0}


def _step_stats(nodes):
    stats = step_stats_pb2.StepStats()
    device = stats.dev_stats.add(device='/device:CPU:0')
    for name, op, micros in nodes:
        device.node_stats.add(node_name=name, timeline_label='%s = %s(a, b)' % (name, op),
                              all_end_rel_micros=micros)
    return stats


def test_top_ops_sums_by_op_type_and_rewrites_are_recognised():
    stats = _step_stats([('conv1', '_MklNativeFusedConv2D', 3000),
                         ('conv2', '_MklNativeFusedConv2D', 5000), ('pool1', 'MaxPool', 2000)])
    assert measure.top_ops(stats) == [('_MklNativeFusedConv2D', 8.0, 0.8),
                                      ('MaxPool', 2.0, 0.2)]
    assert measure.rewrites_seen(stats) == dict(xla=False, bf16=False)
    stats = _step_stats([('cluster_0', '_XlaRun', 10),
                         ('conv1-0-CastToBf16-AutoMixedPrecision', 'Cast', 1)])
    assert measure.rewrites_seen(stats) == dict(xla=True, bf16=True)


def test_layer_flops_are_the_model_flops_but_bias_pooling_and_argmax():
    flops = measure.layer_flops(5, (64, 128), TINY_VGG16, TINY_FC_CHANNELS)
    assert {'conv1_1', 'conv5_1', 'fc6', 'fc7', 'score_fr', 'upscore8'} <= set(flops)
    assert 'pool1' not in flops and 'ArgMax' not in flops
    total = measure.model_flops(5, (64, 128), TINY_VGG16, TINY_FC_CHANNELS)
    assert 0.9 * total < sum(flops.values()) < total


def test_step_parts_sort_a_training_step_by_what_each_op_computes():
    flops = {'conv1_2': 4e9, 'fc6': 1e9}
    stats = _step_stats([('conv1_2/Relu', '_MklNativeFusedConv2D', 1000),
                         ('fc6/Relu', '_MklNativeFusedMatMul', 500),
                         ('gradients/conv1_2/Conv2D_grad/Conv2DBackpropInput',
                          '_MklNativeConv2DBackpropInput', 2000),
                         ('gradients/conv1_2/Conv2D_grad/Conv2DBackpropFilter',
                          '_MklNativeConv2DBackpropFilter', 3000),
                         ('gradients/fc6/MatMul_grad/MatMul', '_MklMatMul', 700),
                         ('gradients/fc6/MatMul_grad/MatMul_1', '_MklMatMul', 800),
                         ('Adam/update_fc6/weights/ResourceApplyAdam', 'ResourceApplyAdam', 400),
                         ('gradients/conv1_2/Relu_grad/ReluGrad', 'ReluGrad', 100),
                         ('pool1', '_MklNativeMaxPool', 50)])
    parts = measure.step_parts(stats, flops, batch=2)
    assert [name for name, _, _ in parts] == list(measure.STEP_PARTS)
    assert [ms for _, ms, _ in parts] == pytest.approx([1.0, 0.5, 2.0, 3.0, 1.5, 0.4, 0.15])
    assert [gflop for _, _, gflop in parts] == [8.0, 2.0, 8.0, 8.0, 4.0, 0.0, 0.0]
    # fc6 in row bands: several products per pass, the layer's FLOPs counted once.
    stats = _step_stats([('fc6/MatMul', '_MklMatMul', 200), ('fc6/MatMul_1', '_MklMatMul', 300),
                         ('gradients/fc6/IdentityN_grad/MatMul', '_MklMatMul', 200),
                         ('gradients/fc6/IdentityN_grad/MatMul_1', '_MklMatMul', 300),
                         ('gradients/fc6/IdentityN_grad/MatMul_2', '_MklMatMul', 600)])
    parts = measure.step_parts(stats, flops, batch=2)
    assert [ms for _, ms, _ in parts] == pytest.approx([0, 0.5, 0, 0, 1.1, 0, 0])
    assert [gflop for _, _, gflop in parts] == [0.0, 2.0, 0.0, 0.0, 4.0, 0.0, 0.0]


def test_step_parts_table_sums_the_products_and_the_whole_step():
    parts = list(zip(measure.STEP_PARTS, [100, 50, 100, 200, 100, 40, 60],
                     [30, 15, 30, 30, 30, 0, 0]))
    table = sections_training.step_parts_table(parts)
    products, step = table.rows[-2:]
    assert products['cells'][:5] == ['all the products above together', '550', '84.6%', '135.0',
                                     '245']
    assert step['cells'][:5] == ['the whole profiled step', '650', '100.0%', '135.0', '208']
    assert products['gflops'] == pytest.approx(135 / 0.55)
    assert step['gflops'] == pytest.approx(135 / 0.65)
    assert table.rows[5]['gflops'] is None  # Adam: no FLOPs, no share of the peak


def _overlapping_products(session_config):
    """How many of a traced run's matrix products started before the previous one ended, in
    a graph of four independent chains of them."""
    with tf.Graph().as_default() as graph:
        chains = []
        for seed in range(4):
            product = tf.random.normal([400, 400], seed=seed)
            for _ in range(3):
                product = tf.matmul(product, product) * 1e-3
            chains.append(product)
    with tf1.Session(graph=graph, config=session_config) as session:
        session.run(chains)
        stats, _ = measure.traced_run(session, chains, None)
    spans = sorted((node.all_start_micros, node.all_start_micros + node.all_end_rel_micros)
                   for device in stats.dev_stats for node in device.node_stats
                   if node.node_name.startswith('MatMul'))
    assert len(spans) == 12
    return sum(start < previous_end for (_, previous_end), (start, _) in zip(spans, spans[1:]))


def test_a_serial_session_runs_one_op_at_a_time_after_a_parallel_one():
    with tf.Graph().as_default() as graph:
        one = tf.constant(1.0)
    with tf1.Session(graph=graph) as session:
        session.run(one)  # the process's shared inter-op pool exists from here on
    assert _overlapping_products(measure.serial_ops(tf1.ConfigProto())) == 0


def test_sections_are_chosen_by_name_and_peak_comes_with_the_shares():
    assert cli.select_sections(None) == list(cli.SECTIONS)
    assert cli.select_sections('training, memory') == ['peak', 'training', 'memory']
    assert cli.select_sections('pipeline') == ['pipeline']
    with pytest.raises(UserError, match='unknown section speed'):
        cli.select_sections('inference,speed')


def test_outputs_of_someone_else_are_never_replaced(tmp_path):
    markdown, json_path, profile = (str(tmp_path / name) for name in ('r.md', 'r.json', 'p'))
    report.check_outputs(markdown, json_path, profile)  # nothing there yet
    with open(markdown, 'w') as f:
        f.write('# My notes\n')
    with pytest.raises(UserError, match='r.md exists and was not written by python -m benchmark'):
        report.check_outputs(markdown, json_path, profile)
    with open(markdown, 'w') as f:
        f.write(report.format_report(_results()))
    with open(json_path, 'w') as f:
        json.dump({'results': 1}, f)
    with pytest.raises(UserError, match='r.json exists'):
        report.check_outputs(markdown, json_path, profile)
    with open(json_path, 'w') as f:
        json.dump({'written_by': 'python -m benchmark'}, f)
    os.makedirs(profile)
    open(os.path.join(profile, 'train_step.json'), 'w').close()
    report.check_outputs(markdown, json_path, profile)
    open(os.path.join(profile, 'mine.txt'), 'w').close()
    with pytest.raises(UserError, match='holds files not written by python -m benchmark'):
        report.check_outputs(markdown, json_path, profile)


def test_the_files_of_the_single_file_benchmark_before_it_may_be_replaced(tmp_path):
    markdown, json_path = str(tmp_path / 'BENCHMARKS.md'), str(tmp_path / 'BENCHMARKS.json')
    with open(markdown, 'w') as f:
        f.write('<!-- written by benchmark.py; a new run replaces this file -->\n\n# Benchmarks\n')
    with open(json_path, 'w') as f:
        json.dump({'written_by': 'benchmark.py'}, f)
    report.check_outputs(markdown, json_path, None)


def test_peak_rss_is_that_of_the_one_child(tmp_path):
    log = str(tmp_path / 'log')
    big = measure.peak_rss([sys.executable, '-c', 'x = bytearray(300 * 10 ** 6)'], log)
    small = measure.peak_rss([sys.executable, '-c', 'pass'], log)
    assert big > 300e6 and small < 200e6
    with pytest.raises(RuntimeError, match='exited with 3: oops'):
        measure.peak_rss([sys.executable, '-c', 'import sys; print("oops"); sys.exit(3)'],
                           log)


def test_accumulate_s_peak_memory_is_measured_beside_its_batch_and_its_micro_batch(
        tmp_path, monkeypatch):
    run = Run(TINY_QUICK, str(tmp_path))
    monkeypatch.setattr(Run, 'sources', lambda self: ('images/*.png', 'labels'))
    monkeypatch.setattr(models.Models, 'optimised_dir', lambda self: 'optimised')
    commands = []

    def peak_rss(command, log_path):
        commands.append(command[2:])
        if command[2] == 'predict':
            return 1.4e9
        batch, accumulate = command[command.index('-bs') + 1], '--accumulate' in command
        return {('2', False): 4.3e9, ('1', False): 4.1e9, ('1', True): 5.4e9}[batch, accumulate]
    monkeypatch.setattr(measure, 'peak_rss', peak_rss)
    sections_memory.memory_section(run)
    assert [command[0] for command in commands] == ['train', 'train', 'train', 'predict']
    assert commands[2][-2:] == ['--accumulate', '2'] and '--accumulate' not in commands[1]
    checkpoints = {command[command.index('-cd') + 1] for command in commands[:3]}
    assert len(checkpoints) == 3  # no train run resumes from another's checkpoint
    (table,) = run.tables
    assert [row['cells'][1:] for row in table.rows] == [
        ['4.30 GB', '1.00x'], ['4.10 GB', '0.95x'], ['5.40 GB', '1.26x'], ['1.40 GB', '']]
    assert [row['target'] for row in table.rows] == ['train_rss', None, None, 'predict_rss']
    assert ('-bs 1 --accumulate 2 makes the update of a batch of 2: its peak is 5.40 GB, '
            '+1.30 GB from -bs 1 alone and +1.10 GB from the batch of 2 without accumulation, '
            'which itself needs 0.20 GB more than -bs 1.') in table.notes
    assert run.raw['train_accumulate_rss_bytes'] == 5.4e9


class _ConstantModel:
    """predict_batch's interface: every pixel is one class."""

    def __init__(self, label_set, class_id):
        self.label_set, self.image_shape, self.class_id = label_set, (256, 512), class_id

    def predict(self, images):
        return np.full(images.shape[:3], self.class_id, np.uint8)


@pytest.fixture
def demo_split(tmp_path_factory, monkeypatch):
    """models.demo_split on a tiny demo dataset, drawn once for the module."""
    root = str(tmp_path_factory.getbasetemp() / 'benchmark_demo')
    if not os.path.exists(root):
        demo_data.ensure_demo_dataset(root, split_sizes={'train': 3, 'val': 2, 'test': 1},
                                      video_frames=2)
    monkeypatch.setattr(models, 'demo_split',
                        lambda split: demo_data.demo_paths(split, root))


def test_the_video_rows_are_each_model_s_frame_rate_over_the_model_alone_s(tmp_path,
                                                                          monkeypatch):
    run = Run(config.QUICK, str(tmp_path))
    monkeypatch.setattr(models.Models, 'folder', lambda self, kind: 'models/' + kind)
    monkeypatch.setattr(models, 'demo_video', lambda: 'demo/video/drive.mp4')
    calls = []

    def child(run, function, folder, video_in, batch_size, kind):
        calls.append((function, folder, video_in, batch_size, kind))
        if kind == 'tflite':
            raise measure.RowFailed('no interpreter', '')
        return dict(frames=40, model_seconds=10.0, video_seconds=12.5)
    monkeypatch.setattr(Run, 'in_child', child)
    sections_inference.video_section(run)
    time_video = sections_inference.time_video
    assert calls == [(time_video, 'models/float', 'demo/video/drive.mp4', 1, 'float'),
                     (time_video, 'models/tflite', 'demo/video/drive.mp4', 1, 'tflite')]
    (table,) = run.tables
    assert [row['cells'][3:] for row in table.rows] == [
        ['4.00', ''], ['3.20', '80.0%'], ['failed', ''], ['5.00', '']]
    assert (table.rows[1]['target'], table.rows[1]['value']) == ('video_throughput', 0.8)
    assert table.rows[3]['cells'][0].startswith('the original tool')
    assert not targets.target_met(0.8, targets.TARGETS['video_throughput'])
    assert targets.target_met(0.85, targets.TARGETS['video_throughput'])
    assert run.raw['video_frames_per_second'] == {'float': {'model': 4.0, 'video': 3.2}}
    assert run.errors == [('video, int8 TFLite', 'no interpreter')]


def test_the_copy_bandwidth_counts_the_bytes_read_and_written(monkeypatch):
    timed = []

    def once(call, warmup, repeats):
        call()
        timed.append((warmup, repeats))
        return 0.25

    monkeypatch.setattr(measure, 'time_calls', once)
    # 8 MiB read and 8 MiB written in 0.25 s.
    assert measure.copy_bandwidth(8, 1, 3, threads=3) == pytest.approx(
        2 * 8 * 2 ** 20 / 0.25 / 1e9)
    assert timed == [(1, 3)]
    monkeypatch.undo()
    assert 0.1 < measure.copy_bandwidth(8, 0, 1, threads=2) < 10000


def test_the_peak_table_has_the_memory_bandwidth(tmp_path, monkeypatch):
    run = Run(config.QUICK, str(tmp_path))
    monkeypatch.setattr(Run, 'peak', lambda run, precision, warmup, repeats: 100.0)
    monkeypatch.setattr(measure, 'copy_bandwidth', lambda megabytes, warmup, repeats: 12.5)
    sections_peak.peak_section(run)
    (table,) = run.tables
    assert table.rows[-1]['cells'] == [
        'memory bandwidth: a 64 MiB float32 copy on %d threads, median' % os.cpu_count(),
        '12.5 GB/s']
    assert run.raw['copy_gb_per_second'] == 12.5


def test_the_cold_rows_split_the_command_s_time_and_check_time_and_memory(tmp_path,
                                                                          monkeypatch):
    run = Run(config.QUICK, str(tmp_path))
    monkeypatch.setattr(sections_cold, '_one_image', lambda folder: 'image.png')
    monkeypatch.setattr(sections_cold, '_import_seconds', lambda kind, repeats: 0.5 if kind in (
        'tflite', 'onnx') else 3.0)
    timed = {'checkpoint': (9.0, 1.5e9), 'saved_model': (7.0, 2.5e9), 'frozen': (4.5, 1.9e9),
             'optimised': (6.0, 1.3e9), 'onnx': (5.0, 2.1e9), 'tflite': (2.5, 0.9e9)}
    monkeypatch.setattr(sections_cold, 'cold_runs',
                        lambda run, kind, image, folder: timed[kind])
    monkeypatch.setattr(models.Models, 'folder', lambda self, kind: 'models/' + kind)
    # Phases from as many processes as runs (2, QUICK), their medians: 1.0, 1.5 and 0.5.
    phases = itertools.cycle([dict(load=0.5, first=1.0, second=0.25),
                              dict(load=1.5, first=2.0, second=0.75)])
    monkeypatch.setattr(Run, 'in_child', lambda run, function, folder, kind: next(phases))
    sections_cold.cold_section(run)
    times, memory = run.tables
    assert [row['cells'][0] for row in times.rows] == [
        'checkpoint', 'SavedModel', 'frozen', 'optimised (8-bit weights)', 'ONNX Runtime',
        'int8 TFLite']
    # 9.0 s: 3.0 importing, 1.0 loading, 1.5 in the first run, the rest 3.5.
    assert times.rows[0]['cells'][1:] == ['9.00', '3.00', '1.00', '1.50', '0.50', '3.50']
    # The TFLite model's process imports LiteRT, not TensorFlow: 2.5 - 0.5 - 1.0 - 1.5.
    assert times.rows[-1]['cells'][1:] == ['2.50', '0.50', '1.00', '1.50', '0.50', '-0.50']
    def met(table):
        return [targets.target_met(row['value'], targets.TARGETS[row['target']])
                for row in table.rows if row['target']]
    assert [row['target'] for row in times.rows] == [
        'cold_trained', 'cold_trained', 'cold_graph', 'cold_graph', None, 'cold_tflite']
    assert [row['target'] for row in memory.rows] == ['float_predict_rss'] * 5 + [None]
    assert met(times) == [False, True, True, False, False]
    assert met(memory) == [True, False, True, True, False]
    assert run.raw['import_seconds'] == dict(checkpoint=3.0, saved_model=3.0, frozen=3.0,
                                             optimised=3.0, onnx=0.5, tflite=0.5)
    assert run.raw['cold']['frozen'] == dict(seconds=4.5, rss_bytes=1.9e9, phases=dict(
        load=1.0, first=1.5, second=0.5))


@pytest.mark.end_to_end
def test_a_cold_predict_is_timed_and_its_shaped_checkpoint_predicts_as_the_saved_model(
        tmp_path, demo_split, tiny_model):
    run = Run(TINY_QUICK, str(tmp_path), network=tiny_model)
    folder = str(tmp_path / 'cold')
    os.makedirs(folder)
    image = sections_cold._one_image(folder)
    assert data_loader.read_image(image).shape == config.IMAGE_SHAPE + (3,)
    seconds, rss = sections_cold.cold_runs(run, 'checkpoint', image, folder)
    assert 0 < seconds < 120 and rss > 100e6
    # The run that warms the file cache, then the timed ones: an overlay each.
    assert len(glob.glob(os.path.join(folder, 'runs', '*', 'overlays', '*.png'))) == 1 + 1
    for kind in ('saved_model', 'checkpoint'):
        assert helper.read_json(os.path.join(run.models.folder(kind), 'fcn8s_config.json'))[
            'image_shape'] == list(config.IMAGE_SHAPE)
    phases = sections_cold.cold_phases(run, run.models.folder('checkpoint'), 'checkpoint')
    assert all(phases[key] > 0 for key in ('load', 'first', 'second'))
    images, _ = models.random_batch(1, run.label_set.num_classes)
    saved, checkpoint = (models.load_model(run.models.folder(kind), kind)
                         for kind in ('saved_model', 'checkpoint'))
    np.testing.assert_array_equal(saved.predict(images), checkpoint.predict(images))


@pytest.mark.end_to_end
def test_the_video_row_times_the_model_and_the_video_on_the_same_frames(tmp_path, demo_root,
                                                                       tiny_model):
    run = Run(TINY_QUICK, str(tmp_path), network=tiny_model)
    video_in = demo_data.demo_video_path(demo_root)
    reply = sections_inference.time_video(run, run.models.folder('float'), video_in, 1)
    assert reply['frames'] == 4 and reply['model_seconds'] > 0 and reply['video_seconds'] > 0
    assert os.path.getsize(os.path.join(str(tmp_path), 'video.mp4')) > 0


def test_scores_and_agreement_of_exported_models(demo_split):
    image_paths, label_paths = sections_inference.val_pairs(5)
    assert len(image_paths) == 2
    label_set = data_loader.get_label_set('cityscapes')
    road = sections_inference.score_model(_ConstantModel(label_set, 0), image_paths, label_paths)
    sky = sections_inference.score_model(_ConstantModel(label_set, 10), image_paths, label_paths)
    predictions, confusion, _ = road
    assert confusion.sum() == confusion[:, 0].sum() > 0  # every labelled pixel called road
    assert sections_inference.agreement(predictions, predictions) == 1.0
    assert sections_inference.agreement(sky[0], predictions) == 0.0
    rows = sections_inference.export_quality_rows('int8 TFLite', sky, road, 'tflite')
    by_target = {row['target']: row['value'] for row in rows}
    assert by_target['tflite_agreement'] == 0.0
    assert by_target['tflite_miou'] == pytest.approx(
        100 * abs(helper.mean_iou(sky[1]) - helper.mean_iou(road[1])))
    assert set(by_target) == {'tflite_agreement', 'tflite_miou', 'tflite_speed'}


TINY_QUICK = config.QUICK._replace(
    warmup=1, repeats=1, matmul_size=128, sources=2, source_shape=(128, 256),
    pipeline_batches=1, calibration_images=2)


def test_augmentation_and_onnx_runtime_rows_time_a_tiny_network(tmp_path, tiny_model,
                                                                demo_split):
    onnxruntime = pytest.importorskip('onnxruntime')
    run = Run(TINY_QUICK, str(tmp_path), network=tiny_model)
    seconds = sections_inference.time_tta(run)
    assert list(seconds) == [name for name, _ in sections_inference.TTA_VARIANTS]
    assert all(value > 0 for value in seconds.values())
    frozen, optimised = str(tmp_path / 'frozen'), str(tmp_path / 'optimised')
    export.freeze(run.models.folder('float'), frozen, config.IMAGE_SHAPE)
    export.optimise(frozen, optimised)  # model.onnx, without the int8 model's calibration
    model = models.load_model(optimised, 'onnx')
    try:  # on every core, one op at a time, all optimisations on
        options = model.session.get_session_options()
        assert options.intra_op_num_threads == os.cpu_count()
        assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        assert options.graph_optimization_level == \
            onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    finally:
        model.close()
    result = sections_inference.time_inference(run, optimised, 'onnx', 0, 'fp32', 'ONNX Runtime')
    assert [(seconds > 0, rewrites) for seconds, rewrites in result['batches']] == [(True, {})]


def test_each_recipe_s_step_takes_turns_with_adam_s_on_one_batch(tmp_path, tiny_model):
    run = Run(TINY_QUICK, str(tmp_path), network=tiny_model)
    steps = sections_training.recipe_steps(run)
    names = [name for name, _, _ in sections_training.RECIPE_VARIANTS]
    assert list(steps) == names and names[0] == sections_training.ADAM_CONSTANT
    assert all(seconds > 0 for seconds in steps.values())


def test_the_sgd_recipe_s_step_is_checked_against_adam_s_and_a_failed_one_says_so():
    sgd, accumulate = (name for name, _, _ in sections_training.RECIPE_VARIANTS[1:])
    rows = sections_training.recipe_rows({sections_training.ADAM_CONSTANT: 2.0, sgd: 2.1,
                                          accumulate: 2.4})
    assert [row['cells'] for row in rows] == [[sections_training.ADAM_CONSTANT, '2000', '1.00x'],
                                              [sgd, '2100', '1.05x'], [accumulate, '2400', '1.20x']]
    assert [(row['target'], row['value']) for row in rows] == [
        (None, None), ('sgd_poly_step', pytest.approx(1.05)), (None, None)]
    assert targets.target_met(rows[1]['value'], targets.TARGETS['sgd_poly_step'])
    rows = sections_training.recipe_rows({sgd: 2.1})
    assert [row['cells'] for row in rows] == [[sections_training.ADAM_CONSTANT, 'failed', ''],
                                              [sgd, '2100', 'n/a'], [accumulate, 'failed', '']]
    assert rows[1]['value'] is None


@pytest.mark.end_to_end
def test_sections_run_end_to_end_on_a_tiny_network(demo_split, tmp_path, monkeypatch,
                                                    tiny_model):
    monkeypatch.setattr(config, 'QUICK', TINY_QUICK)
    markdown = str(tmp_path / 'BENCH.md')
    assert cli.main(['--quick', '--only', 'inference,training,pipeline',
                     '--report', markdown, '--profile', str(tmp_path / 'profile')],
                    network=tiny_model) == 0
    with open(markdown) as f:
        text = f.read()
    with open(str(tmp_path / 'BENCH.json')) as f:
        raw = json.load(f)
    results = raw['results']
    assert raw['written_by'] == 'python -m benchmark' and raw['errors'] == []
    assert re.search(r'sections peak \(\d+\.\d min\), inference \(\d+\.\d min\), '
                     r'training \(\d+\.\d min\), pipeline \(\d+\.\d min\); \d+\.\d minutes$',
                     raw['settings'])
    assert set(results['inference_ms_per_image']) == {
        '%s, batch 1' % variant[0] for variant in sections_inference.INFERENCE_VARIANTS}
    assert set(results['training_ms_per_image']) == {'float32', '--xla 2', '--precision bf16'}
    assert set(results['recipe_step_ms']) == {
        name for name, _, _ in sections_training.RECIPE_VARIANTS}
    assert set(results['pipeline_step_ms']) == {'in memory', 'tf.data', 'generator'}
    assert set(results['pipeline_images_per_second']) == {'generator', 'tf.data'}
    assert raw['conversions']['tflite']['calibration_images'] == 2
    assert sorted(os.listdir(str(tmp_path / 'profile'))) == ['inference_step.json',
                                                             'train_step.json']
    assert set(results['tta_ms_per_image']) == {
        name for name, _ in sections_inference.TTA_VARIANTS}
    # The peak section's, then one beside each row: 6 inference and 2 training rows in fp32.
    assert len(results['peaks_gflops']['fp32']) == 1 + 6 + 2
    assert len(results['peaks_gflops']['bf16']) == 1 + 1 + 1
    for title in ('## Inference at 256x512', '## Training at 256x512, batch 2',
                  '## Test-time augmentation at 256x512, float32, batch 1',
                  '## Training recipes at 256x512, batch 2',
                  '## Input pipelines', '## Profile', '## Targets',
                  "## Where a float32 training step's time goes", '## Reading the targets'):
        assert title in text
    assert 'float32 training step, share of the peak' in text
    assert '| %s | ' % targets.TARGETS['sgd_poly_step'].label in text  # in the targets' table
    assert '| %s, batch 1 | ' % targets.TARGETS['onnx_runtime'].label in text
    assert 'In this run --flip costs' in text
    assert 'in the profiled step the matrix products together ran at' in text


@pytest.mark.end_to_end
def test_a_row_runs_in_another_process_and_its_trace_comes_back(tmp_path, tiny_model):
    profile = tmp_path / 'profile'
    profile.mkdir()
    run = Run(TINY_QUICK, str(tmp_path), profile_dir=str(profile), network=tiny_model)
    spec = run.row_spec(sections_training.time_training, ['float32', 0, 'fp32'])
    reply = measure.child_reply(json.loads(json.dumps(spec)))  # plain values only
    assert reply['pid'] != os.getpid()
    step, rewrites = reply['result']
    assert step > 0 and rewrites == dict(xla=False, bf16=False)
    trace = reply['profile']['train step']
    assert trace['path'] == str(profile / 'train_step.json') and os.path.getsize(trace['path'])
    assert trace['ops'] and all(len(op) == 3 for op in trace['ops'])
    # The profiled step ran one op at a time: its parts' times add up to about its wall time
    # (cheap ops may run beside another on the calling thread).
    parts = {name: (ms, gflop) for name, ms, gflop in trace['parts']}
    assert sum(ms for ms, _ in parts.values()) <= 1.2 * trace['wall_ms']
    forward, fc_forward, inputs, filters, fc_backward, adam, rest = (
        parts[name] for name in measure.STEP_PARTS)
    flops = measure.model_flops(19, config.IMAGE_SHAPE, TINY_VGG16, TINY_FC_CHANNELS)
    assert 0.9 < (forward[1] + fc_forward[1]) * 1e9 / (config.TRAIN_BATCH * flops) < 1
    assert fc_backward[1] == pytest.approx(2 * fc_forward[1])  # input and weight gradients
    assert 0 < filters[1] < forward[1] and 0 < inputs[1] < forward[1]
    assert adam[0] > 0 and adam[1] == 0 and rest[1] == 0


@pytest.mark.end_to_end
def test_a_failing_row_process_is_one_recorded_line(tmp_path, capsys):
    # Two blocks have no pool3 for the skips: the row process must build this network, not
    # the default VGG16, and fail.
    run = Run(TINY_QUICK, str(tmp_path), debug=True,
              network=specs.Network(TINY_VGG16[:2], TINY_FC_CHANNELS))
    assert run.attempt('training float32', run.in_child, sections_training.time_training,
                       'float32', 0, 'fp32') is None
    assert run.errors == [('training float32', "KeyError: 'pool3'")]
    err = capsys.readouterr().err
    assert "training float32 failed: KeyError: 'pool3'" in err
    assert 'Traceback' in err and 'time_training' in err  # --debug: the row's whole stderr
    # Dying before its own error handling, it leaves Python's traceback: the last line counts.
    with pytest.raises(measure.RowFailed, match='^TypeError: .*must be a mapping'):
        measure.child_reply(dict(run.row_spec(sections_training.time_training, []), settings=None))


def test_export_section_is_skipped_without_a_trained_model(tmp_path):
    run = Run(TINY_QUICK, str(tmp_path))
    sections_inference.export_section(run)
    (table,) = run.tables
    assert 'Skipped: no trained --model_dir given' in report.table_markdown(table)


@pytest.mark.end_to_end
def test_bad_flags_end_with_one_line(tmp_path, capsys):
    assert cli.main(['--only', 'speed', '--report', str(tmp_path / 'r.md')]) == 2
    assert capsys.readouterr().err.strip().startswith('error: --only speed: unknown section')
    assert cli.main(['--model_dir', str(tmp_path / 'none'),
                     '--report', str(tmp_path / 'r.md')]) == 2
    assert 'does not exist' in capsys.readouterr().err
