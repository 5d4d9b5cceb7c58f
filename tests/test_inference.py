"""predict, evaluate and video end to end through main.main(), on a briefly trained tiny model."""
import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

import data_loader
from roadseg import devices
from roadseg.data import demo_data
from roadseg.deploy import loader
from roadseg.apps import predict
import main
import synthetic



@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(demo root, folder with runs/, ckpt/) of a tiny FCN-8s trained for 3 steps."""
    work = tmp_path_factory.mktemp('work')
    root = demo_data.ensure_demo_dataset(str(work / 'demo'),
                                         split_sizes={'train': 6, 'val': 3, 'test': 2},
                                         video_frames=7)
    code = main.main(['train', '--dataset', 'demo', '--gpu', '0', '--no_val',
                      '-ip', os.path.join(root, 'leftImg8bit/train/*/*.png'),
                      '-lp', os.path.join(root, 'gtFine/train'), '-bs', '2', '-ep', '1',
                      '--image_shape', '64', '128', '-lr', '1e-3',
                      '-cd', str(work / 'ckpt'), '-sd', str(work / 'summaries'),
                      '-rd', str(work / 'runs')], network=synthetic.TINY_NETWORK)
    assert code == 0
    return root, work


def _run(*flags):
    return main.main(list(flags) + ['--gpu', '0'])


def _new_run(work, before):
    (run_dir,) = set(glob.glob(str(work / 'runs' / '*'))) - before
    return run_dir


@pytest.mark.end_to_end
@pytest.mark.parametrize('keep_size', [False, True])
def test_predict_writes_overlays_and_labels(trained, keep_size, capsys):
    root, work = trained
    before = set(glob.glob(str(work / 'runs' / '*')))
    images = os.path.join(root, 'leftImg8bit/test/*/*.png')
    flags = ['predict', '-ip', images, '-rd', str(work / 'runs'), '--save_labels', '-bs', '2']
    assert _run(*flags + (['--keep_size'] if keep_size else [])) == 0
    run_dir = _new_run(work, before)
    out = capsys.readouterr().out.splitlines()
    # The line naming the images and the run folder, before the summary of the same run.
    started = out.index('Predicting on test images %s to: %s' % (images, run_dir))
    assert out[-1].startswith('2 images: model ') and out[-1].endswith('written to ' + run_dir)
    assert started < len(out) - 1
    sources = sorted(glob.glob(os.path.join(root, 'leftImg8bit/test/*/*.png')))
    for source in sources:
        name = os.path.basename(source)
        photo = np.asarray(Image.open(source))
        overlay = np.asarray(Image.open(os.path.join(run_dir, 'overlays', name)))
        train_ids = np.asarray(Image.open(os.path.join(run_dir, 'trainIds', name)))
        label_ids = np.asarray(Image.open(os.path.join(run_dir, 'labelIds', name)))
        assert overlay.shape == photo.shape and train_ids.shape == photo.shape[:2]
        assert train_ids.max() < 19
        # labelIds are the Cityscapes ids of the train ids: road 0 -> 7, sky 10 -> 23, ...
        expected = data_loader.get_label_set('cityscapes').train_id_to_id[train_ids]
        np.testing.assert_array_equal(label_ids, expected)


@pytest.mark.end_to_end
def test_predict_uses_the_newest_model_by_default(trained, capsys):
    root, work = trained
    assert _run('predict', '-ip', os.path.join(root, 'leftImg8bit/test/*/*.png'),
                '-rd', str(work / 'runs')) == 0
    out = capsys.readouterr().out
    assert 'the newest under' in out and 'loaded SavedModel' in out


@pytest.mark.end_to_end
def test_predict_from_a_checkpoint_folder_matches_the_saved_model(trained):
    root, work = trained
    image = np.asarray(Image.open(sorted(glob.glob(
        os.path.join(root, 'leftImg8bit/val/*/*.png')))[0]))
    (saved,) = glob.glob(str(work / 'runs' / '*' / 'model'))
    outputs = []
    for folder in (saved, str(work / 'ckpt')):
        model = loader.Model(folder)
        outputs.append(predict.predict_batch(model, [image])[0])
        model.close()
    np.testing.assert_array_equal(outputs[0], outputs[1])


def _predicted(work, root, *flags):
    """{folder: {file name: array}} of a predict run with --save_labels on the test images."""
    before = set(glob.glob(str(work / 'runs' / '*')))
    assert _run('predict', '-ip', os.path.join(root, 'leftImg8bit/test/*/*.png'),
                '-rd', str(work / 'runs'), '--save_labels', *flags) == 0
    run_dir = _new_run(work, before)
    written = {}
    for folder in os.listdir(run_dir):
        written[folder] = {}
        for name in sorted(os.listdir(os.path.join(run_dir, folder))):
            path = os.path.join(run_dir, folder, name)
            if name.endswith('.npz'):
                with np.load(path) as npz:
                    written[folder][name] = npz['probs']
            else:
                written[folder][name] = np.asarray(Image.open(path))
    return written


@pytest.mark.end_to_end
@pytest.mark.parametrize('default, same', [
    ([], ['--scales', '1', '--tile_overlap', '0.5', '--save_probs']),
    (['--keep_size', '-bs', '2'], ['--keep_size', '--tile', '1024', '1024', '-bs', '2'])])
def test_one_plain_view_predicts_todays_files_bit_for_bit(trained, default, same):
    """--scales 1 (and --save_probs beside it), and with --keep_size one window covering the
    whole image, write the very trainIds, labelIds and overlays of the plain command."""
    root, work = trained
    plain, other = _predicted(work, root, *default), _predicted(work, root, *same)
    for folder in ('overlays', 'trainIds', 'labelIds'):
        assert plain[folder].keys() == other[folder].keys() and plain[folder]
        for name, array in plain[folder].items():
            np.testing.assert_array_equal(other[folder][name], array, err_msg=name)


@pytest.mark.end_to_end
def test_predict_with_scales_flip_and_windows_writes_confidences_and_probabilities(trained):
    """16-bit confidence PNGs and float16 [classes, h, w] probabilities beside the overlays,
    named like them, at the image's size; each pixel's trainId is its most probable class and
    its confidence that class's probability."""
    root, work = trained
    written = _predicted(work, root, '--keep_size', '--scales', '0.75', '1', '--flip',
                         '--tile', '128', '256', '--tile_overlap', '0.25', '-bs', '3',
                         '--save_probs', 'all')
    assert set(written) == {'overlays', 'trainIds', 'labelIds', 'confidences', 'probabilities'}
    for name, ids in written['trainIds'].items():
        probabilities = written['probabilities'][name[:-len('.png')] + '.npz']
        confidence = written['confidences'][name]
        assert probabilities.dtype == np.float16 and probabilities.shape == (19,) + ids.shape
        assert confidence.shape == ids.shape and confidence.max() <= 65535
        np.testing.assert_allclose(probabilities.astype(np.float32).sum(0), 1, atol=0.01)
        chosen = np.take_along_axis(probabilities, ids[None].astype(int), 0)[0]
        assert np.abs(chosen - confidence / 65535).max() < 1e-3  # float16 against 16 bits
        # the most probable class, to float16's rounding (a briefly trained model has ties)
        assert (chosen >= probabilities.max(0) - 1e-3).all()


@pytest.mark.end_to_end
def test_evaluate_reports_metrics(trained, capsys):
    root, work = trained
    before = set(glob.glob(str(work / 'runs' / '*')))
    assert _run('evaluate', '--dataset', 'demo', '-ip',
                os.path.join(root, 'leftImg8bit/val/*/*.png'), '-lp',
                os.path.join(root, 'gtFine/val'), '-rd', str(work / 'runs'),
                '-sd', str(work / 'eval_summaries')) == 0
    run_dir = _new_run(work, before)
    with open(os.path.join(run_dir, 'metrics.json')) as f:
        metrics = json.load(f)
    assert 0 <= metrics['mean_iou'] <= 1 and 0 <= metrics['pixel_accuracy'] <= 1
    assert set(metrics['per_class_iou']) == set(
        data_loader.get_label_set('cityscapes').class_names)
    for name in ('confusion_matrix.csv', 'iou_per_class.png', 'confusion_matrix.png'):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0
    assert glob.glob(str(work / 'eval_summaries' / 'events.*'))
    assert run_dir in capsys.readouterr().out
    assert (metrics['scales'], metrics['flip'], metrics['tile']) == ([1.0], False, None)


@pytest.mark.end_to_end
def test_evaluate_records_its_scales_flip_and_windows(trained):
    root, work = trained
    before = set(glob.glob(str(work / 'runs' / '*')))
    assert _run('evaluate', '--dataset', 'demo', '-ip',
                os.path.join(root, 'leftImg8bit/val/*/*.png'), '-lp',
                os.path.join(root, 'gtFine/val'), '-rd', str(work / 'runs'), '--keep_size',
                '--scales', '0.5', '1.0', '--flip', '--tile', '128', '128', '--save_probs') == 0
    run_dir = _new_run(work, before)
    with open(os.path.join(run_dir, 'metrics.json')) as f:
        metrics = json.load(f)
    assert (metrics['scales'], metrics['flip'], metrics['tile']) == ([0.5, 1.0], True, [128, 128])
    assert metrics['tile_overlap'] == pytest.approx(1 / 3)
    assert 0 <= metrics['mean_iou'] <= 1
    assert len(os.listdir(os.path.join(run_dir, 'confidences'))) == 3


@pytest.mark.end_to_end
def test_video_keeps_frames_rate_and_size(trained, capsys):
    root, work = trained
    import imageio_ffmpeg
    out = str(work / 'segmented.mp4')
    assert _run('video', '-vi', demo_data.demo_video_path(root), '-vo', out,
                '-rd', str(work / 'runs')) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == ['Running on video %s, output to: %s'
                            % (demo_data.demo_video_path(root), out),
                            '7 frames at %g fps written to %s' % (demo_data.VIDEO_FPS, out)]
    frames_in, _ = imageio_ffmpeg.count_frames_and_secs(demo_data.demo_video_path(root))
    frames_out, _ = imageio_ffmpeg.count_frames_and_secs(out)
    assert frames_out == frames_in == 7
    meta = imageio_ffmpeg.read_frames(out).__next__()
    assert tuple(meta['size']) == (512, 256) and meta['fps'] == demo_data.VIDEO_FPS


@pytest.mark.end_to_end
def test_video_with_scales_flip_and_windows_keeps_its_frames(trained):
    root, work = trained
    import imageio_ffmpeg
    out = str(work / 'segmented_tta.mp4')
    assert _run('video', '-vi', demo_data.demo_video_path(root), '-vo', out,
                '-rd', str(work / 'runs'), '--keep_size', '--scales', '0.5', '1', '--flip',
                '--tile', '128', '256', '-bs', '4') == 0
    frames_out, _ = imageio_ffmpeg.count_frames_and_secs(out)
    assert frames_out == 7


def _error(capsys, *flags):
    assert _run(*flags) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.end_to_end
def test_model_errors_are_one_line(trained, tmp_path, capsys):
    root, work = trained
    images = os.path.join(root, 'leftImg8bit/test/*/*.png')
    line = _error(capsys, 'predict', '-ip', images, '-md', str(tmp_path / 'missing'))
    assert line == 'error: model folder %s does not exist' % (tmp_path / 'missing')
    line = _error(capsys, 'predict', '-ip', images, '-md', str(tmp_path))
    assert 'holds no fcn8s_config.json' in line
    line = _error(capsys, 'predict', '-ip', images, '-rd', str(tmp_path / 'empty_runs'))
    assert 'no trained model under' in line
    line = _error(capsys, 'video', '-vi', str(tmp_path / 'none.mp4'), '-rd', str(work / 'runs'))
    assert str(tmp_path / 'none.mp4') in line
    for flags, message in ((['--scales', '1', '0'], '--scales 1 0: each scale must be positive'),
                           (['--tile', '100', '64'], '--tile 100 64: need two sides, each a '
                                                     'positive multiple of 32'),
                           (['--tile', '64', '64', '--tile_overlap', '1'],
                            '--tile_overlap 1 is outside [0, 1)')):
        assert _error(capsys, 'predict', '-ip', images, '-rd', str(work / 'runs'),
                      *flags) == 'error: ' + message
    line = _error(capsys, 'video', '-vi', demo_data.demo_video_path(root), '-vo',
                  str(tmp_path / 'probs.mp4'), '-rd', str(work / 'runs'), '--save_probs')
    assert line == 'error: --save_probs is for predict and evaluate: video writes no probabilities'


def test_models_run_without_grappler_unless_in_mixed_precision():
    fp32 = devices.session_config(0, 0.9, 0)
    lean = loader.model_session_config(fp32)
    assert lean.graph_options.rewrite_options.disable_meta_optimizer
    assert lean.graph_options.place_pruned_graph
    assert not fp32.graph_options.rewrite_options.disable_meta_optimizer  # the caller's is kept
    assert lean.device_count['GPU'] == fp32.device_count['GPU']
    bf16 = loader.model_session_config(devices.session_config(0, 0.9, 0, 'bf16'))
    assert not bf16.graph_options.rewrite_options.disable_meta_optimizer
    assert loader.model_session_config(None).graph_options.rewrite_options \
        .disable_meta_optimizer
