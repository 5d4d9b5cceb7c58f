"""video.py: frame counts, rates and sizes survive, sub-clips, the overlay arithmetic, errors.

A fake model (class = brightness band) stands in for the network except in one test, which runs
a tiny real checkpoint through loader.Model.
"""
import _thread
import os
import subprocess
import signal
import threading
import time

import imageio.v2
import imageio_ffmpeg
import numpy as np
import pytest
import tensorflow as tf
from moviepy import VideoFileClip
from moviepy.video.io.ffmpeg_reader import ffmpeg_parse_infos

import data_loader
import fcn8vgg16
import helper
from roadseg import model_dir
from roadseg.data import demo_data
from roadseg.deploy import loader
from roadseg.apps import predict, video
from helper import UserError

tf1 = tf.compat.v1
LABEL_SET = data_loader.get_label_set('cityscapes')
TINY_ENCODER = ((1, 4, 1), (2, 4, 1), (3, 8, 1), (4, 8, 1), (5, 8, 1))


class FakeModel:
    """loader.Model's interface without TensorFlow: the class of a pixel is its brightness
    band (0..7), so the expected output is a known function of the frame."""
    image_shape = (64, 128)
    label_set = LABEL_SET

    def __init__(self):
        self.batch_shapes = []

    def predict(self, images):
        assert images.dtype == np.uint8 and images.shape[1] % 32 == images.shape[2] % 32 == 0
        self.batch_shapes.append(images.shape)
        return fake_class_ids(images)


def fake_class_ids(images):
    return (images.mean(-1) // 32).astype(np.uint8)


def input_frame(index, height, width):
    """Frame `index` of a test video: a horizontal ramp whose brightness grows with the index,
    so every frame has several classes and frames can be told apart after compression."""
    ramp = np.linspace(0, 120, width, dtype=np.float32)[None, :, None]
    return np.ascontiguousarray(np.broadcast_to(ramp + 10 * index, (height, width, 3)), np.uint8)


def make_video(path, frames=12, fps=6, height=64, width=128, audio_seconds=None):
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec='libx264',
                                         quality=8, macro_block_size=1, ffmpeg_log_level='error')
    writer.send(None)
    for index in range(frames):
        writer.send(input_frame(index, height, width))
    writer.close()
    if audio_seconds:  # a sine track, longer than the video to upset duration-based counting
        silent = str(path) + '.silent.mp4'
        os.rename(path, silent)
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-v', 'error', '-i', silent, '-f', 'lavfi',
                        '-i', 'sine=frequency=440:duration=%g' % audio_seconds, '-c:v', 'copy',
                        '-c:a', 'aac', str(path)], check=True)
        os.remove(silent)
    return str(path)


def read_back(path):
    """(frames, fps, (width, height), has_audio, decoded frames) of a written video."""
    frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
    with imageio.v2.get_reader(path) as reader:
        meta = reader.get_meta_data()
        images = [image for image in reader]
    return frames, meta['fps'], tuple(meta['size']), ffmpeg_parse_infos(path)['audio_found'], images


def test_overlay_blends_by_hand():
    image = np.array([[[0, 0, 0], [255, 255, 255], [10, 200, 30]],
                      [[100, 50, 25], [255, 255, 255], [7, 8, 9]]], np.uint8)
    class_ids = np.array([[0, 1, 255], [2, 1, 3]], np.uint8)
    colors = np.array([[255, 0, 0], [255, 255, 255], [0, 0, 200]], np.uint8)
    for alpha in (0.5, 0.3, 0.0, 1.0):
        blended = helper.overlay(image, class_ids, colors, alpha)
        assert blended.dtype == np.uint8 and blended.shape == image.shape
        for y, x in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            expected = (1 - alpha) * image[y, x] + alpha * colors[class_ids[y, x]].astype(float)
            np.testing.assert_allclose(blended[y, x], expected, atol=1)
        # Ids past the colour table (255, and 3 here) keep the photo exactly.
        np.testing.assert_array_equal(blended[0, 2], image[0, 2])
        np.testing.assert_array_equal(blended[1, 2], image[1, 2])
    # White over white at any alpha must not wrap round past 255.
    assert (helper.overlay(image, class_ids, colors, 0.5)[:, 1] == 255).all()
    np.testing.assert_array_equal(helper.overlay(image, class_ids, colors, 0.5)[0, 0],
                                  [128, 0, 0])
    with pytest.raises(UserError, match='alpha 1.5'):
        helper.overlay(image, class_ids, colors, 1.5)


def test_overlay_matches_float_reference_on_a_large_frame():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 300, 3), dtype=np.uint8)  # 300 wide: uneven bands
    class_ids = rng.integers(0, LABEL_SET.num_classes, (100, 300), dtype=np.uint8)
    class_ids[::7, ::5] = 255
    blended = helper.overlay(image, class_ids, LABEL_SET.colors, 0.4)
    reference = 0.6 * image + 0.4 * LABEL_SET.colors[np.minimum(class_ids, 18)]
    reference[class_ids == 255] = image[class_ids == 255]
    assert np.abs(blended - reference).max() <= 1


@pytest.mark.end_to_end
def test_whole_video_keeps_count_rate_size_and_drops_audio(tmp_path):
    # 3 s of audio over 2 s of video: moviepy alone would iterate 18 frames.
    video_in = make_video(tmp_path / 'drive.mp4', frames=12, fps=6, audio_seconds=3)
    assert ffmpeg_parse_infos(video_in)['audio_found']
    model = FakeModel()
    result = video.segment_video(model, video_in, str(tmp_path / 'out.mp4'), batch_size=5)
    frames, fps, size, has_audio, images = read_back(str(tmp_path / 'out.mp4'))
    assert (frames, fps, size, has_audio) == (12, 6, (128, 64), False)
    assert result['frames'] == 12 and result['fps'] == 6 and result['size'] == (128, 64)
    assert [shape[0] for shape in model.batch_shapes] == [5, 5, 2]
    assert sorted(os.listdir(tmp_path)) == ['drive.mp4', 'out.mp4']  # no partial file left


@pytest.mark.end_to_end
@pytest.mark.parametrize('frames, fps', [(40, 30), (7, 30000 / 1001)])
def test_exact_count_where_moviepy_rounds_the_duration(tmp_path, frames, fps):
    # The container says 1.33 s and 0.23 s: int(duration * fps) is one frame short.
    video_in = make_video(tmp_path / 'in.mp4', frames=frames, fps=fps, height=32, width=64)
    video.segment_video(FakeModel(), video_in, str(tmp_path / 'out.mp4'))
    written, written_fps, _, _, _ = read_back(str(tmp_path / 'out.mp4'))
    assert written == frames
    assert written_fps == pytest.approx(fps, abs=0.01)


@pytest.mark.end_to_end
@pytest.mark.parametrize('start, end, first, count', [
    (0.5, 1.5, 3, 6), (1.0, None, 6, 6), (None, 0.5, 0, 3), (0.55, 0.7, 4, 1)])
def test_subclip_writes_the_frames_that_start_inside_it(tmp_path, start, end, first, count):
    video_in = make_video(tmp_path / 'in.mp4', frames=12, fps=6)
    video.segment_video(FakeModel(), video_in, str(tmp_path / 'out.mp4'), start=start, end=end,
                        batch_size=4)
    frames, _, _, _, images = read_back(str(tmp_path / 'out.mp4'))
    assert frames == len(images) == count
    # Each output frame is the overlay of the right input frame (up to compression).
    for offset, image in enumerate(images):
        original = input_frame(first + offset, 64, 128)
        expected = helper.overlay(original, fake_class_ids(original[None])[0], LABEL_SET.colors)
        errors = [np.abs(image.astype(int) - helper.overlay(
            input_frame(index, 64, 128), fake_class_ids(input_frame(index, 64, 128)[None])[0],
            LABEL_SET.colors)).mean() for index in range(12)]
        assert np.argmin(errors) == first + offset
        assert np.abs(image.astype(int) - expected).mean() < 4


@pytest.mark.end_to_end
@pytest.mark.parametrize('keep_size, network_shape', [(True, (64, 96)), (False, (64, 128))])
def test_keep_size_and_resize_both_keep_the_video_size(tmp_path, keep_size, network_shape):
    video_in = make_video(tmp_path / 'in.mp4', frames=4, fps=6, height=48, width=80)
    model = FakeModel()
    result = video.segment_video(model, video_in, str(tmp_path / 'out.mp4'),
                                 keep_size=keep_size, batch_size=4)
    assert model.batch_shapes == [(4,) + network_shape + (3,)]
    frames, _, size, _, _ = read_back(str(tmp_path / 'out.mp4'))
    assert (frames, size, result['size']) == (4, (80, 48), (80, 48))


@pytest.mark.end_to_end
def test_real_tiny_checkpoint(tmp_path):
    folder = str(tmp_path / 'model')
    os.makedirs(folder)
    with tf.Graph().as_default():
        images = tf1.placeholder(tf.uint8, [None, None, None, 3], name=fcn8vgg16.INPUT_NAME)
        logits, _ = fcn8vgg16.fcn8s(images, LABEL_SET.num_classes, encoder=TINY_ENCODER,
                                    fc_channels=16)
        fcn8vgg16.predictions(logits)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            tf1.train.Saver().save(session, os.path.join(folder, 'model.ckpt'), global_step=0)
    helper.write_json(os.path.join(folder, model_dir.CONFIG_FILE), {
        'label_set': 'cityscapes', 'num_classes': LABEL_SET.num_classes,
        'image_shape': [64, 128], 'encoder': TINY_ENCODER, 'fc_channels': 16,
        'input_tensor': fcn8vgg16.INPUT_TENSOR, 'output_tensor': fcn8vgg16.OUTPUT_TENSOR,
        'saved_model_tag': fcn8vgg16.SAVED_MODEL_TAG})
    model = loader.Model(folder)
    try:
        video_in = make_video(tmp_path / 'in.mp4', frames=12, fps=6)
        result = video.segment_video(model, video_in, str(tmp_path / 'out.mp4'), batch_size=4)
    finally:
        model.close()
    frames, fps, size, has_audio, _ = read_back(str(tmp_path / 'out.mp4'))
    assert (frames, fps, size, has_audio) == (12, 6, (128, 64), False)
    assert result['frames'] == 12


@pytest.mark.end_to_end
def test_missing_and_unreadable_inputs(tmp_path):
    with pytest.raises(UserError, match='missing.mp4 does not exist'):
        video.segment_video(FakeModel(), str(tmp_path / 'missing.mp4'), str(tmp_path / 'o.mp4'))
    text = tmp_path / 'notes.mp4'
    text.write_text('not a video\n')
    with pytest.raises(UserError, match='notes.mp4 is not a readable video'):
        video.segment_video(FakeModel(), str(text), str(tmp_path / 'o.mp4'))
    sound = str(tmp_path / 'sound.mp4')  # a container with audio and no video frames
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-v', 'error', '-f', 'lavfi', '-i',
                    'sine=duration=1', '-c:a', 'aac', sound], check=True)
    with pytest.raises(UserError, match='sound.mp4 holds no video frames'):
        video.segment_video(FakeModel(), sound, str(tmp_path / 'o.mp4'))
    assert not os.path.exists(tmp_path / 'o.mp4')


@pytest.mark.end_to_end
@pytest.mark.parametrize('start, end, message', [
    (-1, None, 'start -1s and end 2s'), (1.5, 0.5, 'start 1.5s and end 0.5s'),
    (0, 3, 'start 0s and end 3s: need 0 <= start < end <= 2s'), (1, 1, 'start 1s and end 1s'),
    (0.51, 0.55, 'select no frame')])
def test_bad_start_and_end(tmp_path, start, end, message):
    video_in = make_video(tmp_path / 'in.mp4', frames=12, fps=6, height=32, width=64)
    with pytest.raises(UserError, match=message):
        video.segment_video(FakeModel(), video_in, str(tmp_path / 'out.mp4'), start=start,
                            end=end)
    assert os.listdir(tmp_path) == ['in.mp4']


@pytest.mark.end_to_end
def test_existing_output_is_refused_unless_overwrite(tmp_path):
    video_in = make_video(tmp_path / 'in.mp4', frames=3, fps=6, height=32, width=64)
    video_out = tmp_path / 'out.mp4'
    video_out.write_bytes(b'the user\'s file')
    with pytest.raises(UserError, match='out.mp4 already exists'):
        video.segment_video(FakeModel(), video_in, str(video_out))
    assert video_out.read_bytes() == b'the user\'s file'
    with pytest.raises(UserError, match='in.mp4 is the input'):
        video.segment_video(FakeModel(), video_in, video_in, overwrite=True)
    video.segment_video(FakeModel(), video_in, str(video_out), overwrite=True)
    assert read_back(str(video_out))[0] == 3


@pytest.mark.end_to_end
def test_failure_midway_leaves_no_partial_file(tmp_path):
    class FailingModel(FakeModel):
        def predict(self, images):
            if self.batch_shapes:
                raise RuntimeError('out of memory')
            return super().predict(images)

    video_in = make_video(tmp_path / 'in.mp4', frames=6, fps=6, height=32, width=64)
    with pytest.raises(RuntimeError, match='out of memory'):
        video.segment_video(FailingModel(), video_in, str(tmp_path / 'out.mp4'), batch_size=2)
    assert os.listdir(tmp_path) == ['in.mp4']
    with pytest.raises(UserError, match='no extension'):
        video.segment_video(FakeModel(), video_in, str(tmp_path / 'out'))


def _stage_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith('video-')]


@pytest.mark.end_to_end
@pytest.mark.parametrize('first, stop, batch_size', [(0, 12, 5), (3, 11, 4)])
def test_pipelined_overlays_are_the_frame_by_frame_reader_s_exactly(tmp_path, first, stop,
                                                                      batch_size):
    # The demo video (512x256, 10 fps) read in order by the pipeline, against moviepy fetching
    # each frame by its time as the video action did: the same pixels, the same class ids.
    root = demo_data.ensure_demo_dataset(str(tmp_path / 'demo'), video_frames=12,
                                         split_sizes={'train': 1, 'val': 1, 'test': 1})
    video_in = demo_data.demo_video_path(root)
    model = FakeModel()
    overlays = list(video.frame_overlays(model, video_in, (512, 256), first, stop,
                                         batch_size=batch_size, alpha=0.4))
    assert len(overlays) == stop - first
    assert [shape[0] for shape in model.batch_shapes] == [
        min(batch_size, stop - start) for start in range(first, stop, batch_size)]
    with VideoFileClip(video_in, audio=False) as clip:
        for index, image in zip(range(first, stop), overlays):
            frame = clip.get_frame(index / clip.fps)
            expected = helper.overlay(frame, predict.predict_batch(model, [frame])[0],
                                      LABEL_SET.colors, 0.4)
            np.testing.assert_array_equal(image, expected, err_msg='frame %d' % index)
    assert not _stage_threads()


@pytest.mark.end_to_end
def test_an_error_in_either_thread_reaches_the_caller_and_both_threads_end(tmp_path):
    class RefusingModel(FakeModel):
        def predict(self, images):
            if self.batch_shapes:
                raise UserError('model refuses frame batch 2')
            return super().predict(images)

    video_in = make_video(tmp_path / 'in.mp4', frames=12, fps=6, height=32, width=64)
    with pytest.raises(UserError, match='^model refuses frame batch 2$'):
        video.segment_video(RefusingModel(), video_in, str(tmp_path / 'out.mp4'), batch_size=2)
    assert os.listdir(tmp_path) == ['in.mp4'] and not _stage_threads()
    # The decoding thread's error: frames of another size than the header's.
    with pytest.raises(UserError, match='frame 0 holds 6144 bytes, not the 64x64 RGB'):
        list(video.frame_overlays(FakeModel(), video_in, (64, 64), 0, 12))
    assert not _stage_threads()


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler, as in a fresh `python main.py video`: interrupt_main does
    nothing when SIGINT is left at SIG_DFL or SIG_IGN, which another test may have done."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.end_to_end
def test_ctrl_c_while_the_model_runs_stops_at_once_and_leaves_no_partial_file(tmp_path,
                                                                            python_sigint):
    calls = []

    class SlowModel(FakeModel):
        def predict(self, images):
            calls.append(time.monotonic())
            if len(calls) == 3:  # Ctrl-C arrives while the model thread computes a batch
                _thread.interrupt_main()  # SIGINT's effect in the main thread
            time.sleep(0.3)  # as a network call would hold its thread
            return super().predict(images)

    video_in = make_video(tmp_path / 'in.mp4', frames=40, fps=6, height=32, width=64)
    with pytest.raises(KeyboardInterrupt) as interrupt:
        video.segment_video(SlowModel(), video_in, str(tmp_path / 'out.mp4'))
    # 40 frames would take 12 s: the interrupt ends it within a model call or two of arriving.
    assert len(calls) < 8 and time.monotonic() - calls[2] < 3
    assert interrupt.value.message == 'interrupted: %s not written' % (tmp_path / 'out.mp4')
    assert os.listdir(tmp_path) == ['in.mp4'] and not _stage_threads()
