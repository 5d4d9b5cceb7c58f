"""The video action: segment every frame of a video and write the class colours over it.

Frames are read with moviepy and written with imageio-ffmpeg. moviepy counts a clip's frames as
int(container duration * fps), with the duration rounded to 1/100 s and stretched by any longer
audio track: a 40-frame 30 fps clip iterates (and `write_videofile` writes) 39 frames, a 12-frame
clip under 3 s of audio iterates 18. So the frames are counted by decoding them, fetched by index,
piped to ffmpeg exactly once each, and the output is counted again before it is renamed into place.
Assumes a constant frame rate.
"""
import math
import os
import time

import imageio_ffmpeg
from moviepy import VideoFileClip
from tqdm import tqdm

import helper
from roadseg.apps import predict
from helper import UserError, overlay

QUALITY = 6  # imageio-ffmpeg's 0-10 scale; 6 is libx264 -crf 20


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


def _write_overlays(clip, model, path, indices, keep_size, batch_size, alpha, label,
                    inference=None):
    """Pipes one overlay per frame index to ffmpeg: no resampling in time, no audio."""
    width, height = clip.size
    # libx264 needs even sides for 4:2:0 chroma; odd sizes keep full chroma rather than resize.
    even = width % 2 == 0 and height % 2 == 0
    writer = imageio_ffmpeg.write_frames(
        path, (width, height), fps=clip.fps, codec='libx264', quality=QUALITY,
        macro_block_size=1, pix_fmt_out='yuv420p' if even else 'yuv444p',
        ffmpeg_log_level='error')
    writer.send(None)
    try:
        with tqdm(total=len(indices), unit='frame', desc=label) as bar:
            for batch_start in range(0, len(indices), batch_size):
                batch = indices[batch_start:batch_start + batch_size]
                images = [clip.get_frame(index / clip.fps) for index in batch]
                class_ids = predict.predict_batch(model, images, keep_size, inference,
                                                  batch_size)
                for image, ids in zip(images, class_ids):
                    writer.send(overlay(image, ids, model.label_set.colors, alpha))
                bar.update(len(batch))
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
        clip = VideoFileClip(video_in, audio=False)
    except (OSError, KeyError, ValueError, IndexError):
        raise UserError('%s is not a readable video' % video_in) from None
    try:
        first, stop = _frame_range(video_in, start, end, frames, clip.fps)
        print('Running on video %s, output to: %s' % (video_in, video_out), flush=True)
        _write_in_place(video_out, overwrite, stop - first, lambda path: _write_overlays(
            clip, model, path, range(first, stop), keep_size, batch_size, alpha,
            os.path.basename(video_out), inference))
    except KeyboardInterrupt as interrupt:  # the partial file is gone with write_atomically
        interrupt.message = 'interrupted: %s not written' % video_out
        raise
    finally:
        clip.close()
    return {'frames': stop - first, 'fps': clip.fps, 'size': tuple(clip.size),
            'seconds': time.time() - began}
