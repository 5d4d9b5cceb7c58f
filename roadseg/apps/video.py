"""The video action: segment every frame of a video and write the class colours over it.

The frames are decoded in order by one ffmpeg process (imageio-ffmpeg), in a thread of their
own, go through the model in a second thread and are drawn over and piped to the encoding ffmpeg
in the caller's, so decoding and encoding overlap the model. moviepy reads the frame rate and
size only: it counts a clip's frames as int(container duration * fps), with the duration rounded
to 1/100 s and stretched by any longer audio track (a 40-frame 30 fps clip iterates 39 frames, a
12-frame clip under 3 s of audio 18). So the frames are counted by decoding them, each decoded
and piped to ffmpeg exactly once, and the output is counted again before it is renamed into
place. Assumes a constant frame rate.
"""
import contextlib
import math
import os
import queue
import threading
import time

import imageio_ffmpeg
import numpy as np
from moviepy.video.io.ffmpeg_reader import ffmpeg_parse_infos
from tqdm import tqdm

import helper
from roadseg.apps import predict
from helper import UserError, overlay

QUALITY = 6  # imageio-ffmpeg's 0-10 scale; 6 is libx264 -crf 20
# Batches waiting between two stages: enough to ride out a slow frame, few enough that a
# 1080p batch of 8 frames (50 MB) is held at most twice per queue.
QUEUE_BATCHES = 2
QUEUE_POLL_SECONDS = 0.1  # how often a stage thread waiting on a queue looks whether to stop


def _count_frames(path):
    """Decodes the whole video stream with ffmpeg: the exact frame count, unlike moviepy's."""
    try:
        frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
    except RuntimeError as error:
        # ffmpeg lists the streams it found ("Stream #0:0 ... Audio"), then says that none
        # matches when there is no video one; a truncated file has none at all.
        if 'matches no streams' not in str(error) or 'Stream #' not in str(error):
            raise UserError('%s is not a readable video' % path) from None
        frames = 0
    if not frames:
        raise UserError('%s holds no video frames' % path)
    return frames


def check_video(path):
    """Fails fast, before a model loads, if path is missing, unreadable or holds no video
    frames. Decodes the header and the first frame only; segment_video counts them all."""
    if not os.path.isfile(path):
        raise UserError('video %s does not exist' % path)
    reader = imageio_ffmpeg.read_frames(path)
    try:
        next(reader)  # the header
        next(reader)  # the first frame
    except StopIteration:
        raise UserError('%s holds no video frames' % path) from None
    except (OSError, RuntimeError):
        _count_frames(path)  # ffmpeg's own words tell a file without a video stream apart
        raise UserError('%s is not a readable video' % path) from None
    finally:
        reader.close()


def _frame_range(path, start, end, frames, fps):
    """Indices [first, stop) of the frames that begin in [start, end) seconds."""
    duration = frames / fps
    start = 0.0 if start is None else start
    end = duration if end is None else end
    if not 0 <= start < end <= duration + 1e-6:
        raise UserError('video start %gs and end %gs: need 0 <= start < end <= %gs, the duration '
                        'of %s' % (start, end, duration, path))
    first = math.ceil(start * fps - 1e-6)  # frame i is shown from i / fps
    stop = min(math.ceil(end * fps - 1e-6), frames)
    if first >= stop:
        raise UserError('video start %gs and end %gs select no frame of %s (%g fps)'
                        % (start, end, path, fps))
    return first, stop


def _refuse_existing(video_out, overwrite):
    if os.path.lexists(video_out) and not overwrite:
        raise UserError('%s already exists; choose another output or overwrite it' % video_out)


def _check_paths(video_in, video_out, overwrite):
    if not os.path.isfile(video_in):
        raise UserError('video %s does not exist' % video_in)
    if os.path.realpath(video_in) == os.path.realpath(video_out):
        raise UserError('video output %s is the input' % video_out)
    if not os.path.splitext(video_out)[1]:
        raise UserError('video output %s has no extension to choose the container by'
                        % video_out)
    _refuse_existing(video_out, overwrite)


def _decoded_batches(path, size, first, stop, batch_size):
    """Yields lists of up to batch_size frames (uint8 [h, w, 3]) of indices [first, stop),
    decoded in order by one ffmpeg process: the frames before `first` are decoded and dropped,
    not sought, so each index is the frame that _count_frames counted."""
    width, height = size
    reader = imageio_ffmpeg.read_frames(path, output_params=['-sws_flags', 'bicubic'])
    try:
        _next_frame(reader, path, -1, stop)  # the header
        batch = []
        for index in range(stop):
            data = _next_frame(reader, path, index, stop)
            if index < first:
                continue
            if len(data) != width * height * 3:
                raise UserError('%s: frame %d holds %d bytes, not the %dx%d RGB its header '
                                'says' % (path, index, len(data), width, height))
            batch.append(np.frombuffer(data, np.uint8).reshape(height, width, 3))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        reader.close()


def _next_frame(reader, path, index, stop):
    try:
        return next(reader)
    except StopIteration:
        raise UserError('%s ended after %d of its %d frames' % (path, max(index, 0), stop)) \
            from None
    except (OSError, RuntimeError):
        raise UserError('%s is not a readable video' % path) from None


class _Failed:
    """An exception of a stage thread, passed down the queues to be raised in the main one."""

    def __init__(self, error):
        self.error = error


_END = object()  # the last item a stage puts on its queue


def _put(out_queue, item, stopping):
    """Puts item on out_queue unless stopping is set first; whether it did."""
    while not stopping.is_set():
        try:
            out_queue.put(item, timeout=QUEUE_POLL_SECONDS)
            return True
        except queue.Full:
            pass
    return False


def _items(in_queue, stopping):
    """Yields the items of a stage's queue up to _END; raises an earlier stage's exception. Ends
    quietly when stopping is set (the main thread's waits are never stopped: Ctrl-C reaches a
    lock wait on POSIX)."""
    while not stopping.is_set():
        try:
            item = in_queue.get(timeout=QUEUE_POLL_SECONDS)
        except queue.Empty:
            continue
        if item is _END:
            return
        if isinstance(item, _Failed):
            raise item.error
        yield item


def _run_stage(items, out_queue, stopping):
    """A stage thread: puts every item of the iterator `items` on out_queue, then _END, or its
    exception as _Failed; closes `items` (an ffmpeg reader with it) however it ends."""
    with contextlib.closing(items):
        try:
            for item in items:
                if not _put(out_queue, item, stopping):
                    return
            _put(out_queue, _END, stopping)
        except BaseException as error:  # raised again in the main thread
            _put(out_queue, _Failed(error), stopping)


def frame_overlays(model, path, size, first, stop, keep_size=False, batch_size=1, alpha=0.5,
                   inference=None):
    """Yields, in order, the overlay of each frame [first, stop) of the video at path (size:
    (width, height)) with the model's classes. Three stages overlap: one thread decodes, one runs
    the model batch_size frames at a time, and the caller's thread draws the overlays (and
    encodes them); QUEUE_BATCHES batches wait between two stages at most. An exception in a
    thread is raised here; closing the generator stops and joins both threads."""
    stopping = threading.Event()
    decoded, predicted = queue.Queue(QUEUE_BATCHES), queue.Queue(QUEUE_BATCHES)

    def predictions():
        for images in _items(decoded, stopping):
            yield images, predict.predict_batch(model, images, keep_size, inference, batch_size)

    threads = [threading.Thread(target=_run_stage, name='video-' + name, daemon=True,
                                args=(items, out_queue, stopping))
               for name, items, out_queue in (
                   ('decode', _decoded_batches(path, size, first, stop, batch_size), decoded),
                   ('model', predictions(), predicted))]
    for thread in threads:
        thread.start()
    try:
        for images, class_ids in _items(predicted, threading.Event()):
            for image, ids in zip(images, class_ids):
                yield overlay(image, ids, model.label_set.colors, alpha)
    finally:
        stopping.set()
        for thread in threads:  # a model call under way ends first
            thread.join()


def _write_overlays(overlays, path, size, fps, count, label):
    """Pipes each overlay to ffmpeg: no resampling in time, no audio."""
    width, height = size
    # libx264 needs even sides for 4:2:0 chroma; odd sizes keep full chroma rather than resize.
    even = width % 2 == 0 and height % 2 == 0
    writer = imageio_ffmpeg.write_frames(
        path, (width, height), fps=fps, codec='libx264', quality=QUALITY,
        macro_block_size=1, pix_fmt_out='yuv420p' if even else 'yuv444p',
        ffmpeg_log_level='error')
    writer.send(None)
    try:
        with contextlib.closing(overlays), tqdm(total=count, unit='frame', desc=label) as bar:
            for image in overlays:
                writer.send(image)
                bar.update(1)
    finally:
        writer.close()


def _write_in_place(video_out, overwrite, frames, write):
    """Calls write(path) on a hidden file beside video_out with the same extension (ffmpeg picks
    the container by it), checks that it holds `frames` frames, and renames it into place."""
    os.makedirs(os.path.dirname(os.path.abspath(video_out)), exist_ok=True)

    def write_and_count(partial):
        write(partial)
        # imageio-ffmpeg ignores ffmpeg's exit status: count what reached the file instead.
        try:
            written, _ = imageio_ffmpeg.count_frames_and_secs(partial)
        except RuntimeError:
            written = 0
        if written != frames:
            raise UserError('ffmpeg wrote %d of %d frames to %s' % (written, frames, video_out))
        _refuse_existing(video_out, overwrite)  # it may have appeared while we worked

    try:
        helper.write_atomically(video_out, write_and_count)
    except OSError as error:  # ffmpeg gone (broken pipe), disk full
        raise UserError('could not write %s: %s' % (video_out, helper.first_line(error))) from None


def segment_video(model, video_in, video_out, start=None, end=None, keep_size=False,
                  batch_size=1, alpha=0.5, overwrite=False, inference=None):
    """Writes video_out: every frame of video_in (or of its [start, end) seconds) overlaid with
    the model's classes, at the input's frame rate and size, without audio.

    model: a loader.Model (or anything with .predict, .image_shape, .label_set); inference: a
    specs.Inference (scales, flip, tiles). Returns {'frames', 'fps', 'size': (width, height),
    'seconds': wall-clock time}.
    """
    if inference is not None:
        inference.check_model(model)
        if inference.save_probs:
            raise UserError('--save_probs is for predict and evaluate: video writes no '
                            'probabilities')
    _check_paths(video_in, video_out, overwrite)
    if batch_size < 1:
        raise UserError('video batch size %d is not positive' % batch_size)
    began = time.time()
    frames = _count_frames(video_in)
    try:
        infos = ffmpeg_parse_infos(video_in)
        fps, size = infos['video_fps'], tuple(infos['video_size'])
    except (OSError, KeyError, ValueError, IndexError, TypeError):
        raise UserError('%s is not a readable video' % video_in) from None
    first, stop = _frame_range(video_in, start, end, frames, fps)
    print('Running on video %s, output to: %s' % (video_in, video_out), flush=True)
    try:
        _write_in_place(video_out, overwrite, stop - first, lambda path: _write_overlays(
            frame_overlays(model, video_in, size, first, stop, keep_size, batch_size, alpha,
                           inference),
            path, size, fps, stop - first, os.path.basename(video_out)))
    except KeyboardInterrupt as interrupt:  # the partial file is gone with write_atomically
        interrupt.message = 'interrupted: %s not written' % video_out
        raise
    return {'frames': stop - first, 'fps': fps, 'size': size,
            'seconds': time.time() - began}
