"""The embedded demo dataset: procedurally drawn road scenes in the Cityscapes on-disk layout.

`python main.py train --dataset demo` trains on it with no download. Scenes live in a pinhole
world measured in metres (X right, Y up, Z forward from the camera): a point projects to
x = vanish_x + focal * X / Z, y = horizon + focal * (camera_height - Y) / Z, so sizes shrink
with depth and driving forward by `phase` metres slides everything toward the viewer.
"""
import collections
import glob
import hashlib
import json
import os
import shutil
import tempfile
import zlib

import imageio.v2
import imageio_ffmpeg
import numpy as np
from PIL import Image

import cityscape_labels
import helper
import mapillary_labels

DEFAULT_DEMO_ROOT = os.path.join(helper.TOOL_DIR, 'data', 'demo')
SPLIT_SIZES = {'train': 160, 'val': 32, 'test': 16}
IMAGE_SHAPE = (256, 512)  # height, width: Cityscapes' 1:2 aspect
VIDEO_FPS = 10
VIDEO_FRAMES = 40
MANIFEST_VERSION = 1
DEMO_CLASSES = ('road', 'sidewalk', 'building', 'pole', 'traffic light', 'traffic sign',
                'vegetation', 'terrain', 'sky', 'person', 'car')
CLASS_IDS = {name: cityscape_labels.NAME_TO_LABEL[name].id for name in DEMO_CLASSES}

_CITIES = {'train': ('demoville', 'pixelburg'), 'val': ('valtown',), 'test': ('testham',)}
_FRAME = 19  # Cityscapes annotates the 20th frame of each 30-frame snippet
_CAMERA_HEIGHT = 1.4
# Objects sit at depths [near, near + loop); those the camera passes wrap round to the far end.
_NEAR, _LOOP = 4.0, 80.0
_DASH_PERIOD, _DASH_LENGTH = 9.0, 3.0  # German urban lane dashes: 3 m line, 6 m gap
_METRES_PER_FRAME = 1.0  # video speed 10 m/s at 10 fps
_CAR_COLORS = np.array([(230, 230, 230), (30, 30, 35), (160, 165, 170), (170, 30, 30),
                        (30, 60, 150), (40, 90, 60)], np.float32)
_FACADES = np.array([(200, 180, 150), (150, 80, 60), (130, 130, 135), (210, 205, 195),
                     (190, 150, 90), (100, 80, 70), (150, 170, 180)], np.float32)

_PALETTE = np.zeros((256, 3), np.uint8)  # label id -> colour, for the gtFine_color images
_PALETTE[[label.id for label in cityscape_labels.LABELS if label.id >= 0]] = [
    label.color for label in cityscape_labels.LABELS if label.id >= 0]

_Camera = collections.namedtuple('_Camera', ['horizon', 'vanish_x', 'focal'])


def _id(name):
    return CLASS_IDS[name]


def _project(camera, x_world, y_world, depth):
    """Screen x, screen y and pixels per metre of a world point."""
    scale = camera.focal / depth
    return (camera.vanish_x + x_world * scale,
            camera.horizon + (_CAMERA_HEIGHT - y_world) * scale, scale)


def _span(start, stop, size):
    """Pixel slice covering [start, stop), at least one pixel so far objects stay visible."""
    first = int(np.floor(start))
    return slice(min(max(first, 0), size), min(max(int(np.ceil(stop)), first + 1, 0), size))


def _draw_sky(image, labels, rng, camera):
    height, width = labels.shape
    top = rng.uniform([50, 100, 180], [100, 150, 230])
    low = rng.uniform([160, 190, 215], [200, 220, 245])
    fade = np.clip(np.arange(height, dtype=np.float32) / camera.horizon, 0, 1)[:, None, None]
    image[:] = top * (1 - fade) + low * fade
    labels[:] = _id('sky')
    for _ in range(rng.integers(0, 4)):  # soft clouds, still labelled sky
        cx, cy = rng.uniform(0, width), rng.uniform(0.1, 0.6) * camera.horizon
        rx, ry = rng.uniform(25, 70), rng.uniform(6, 14)
        rows, cols = _span(cy - ry, cy + ry, height), _span(cx - rx, cx + rx, width)
        ys, xs = np.ogrid[rows, cols]
        alpha = np.clip(1.5 - 1.5 * ((xs - cx) / rx) ** 2 - 1.5 * ((ys - cy) / ry) ** 2, 0, 0.9)
        alpha = alpha[..., None]
        image[rows, cols] = image[rows, cols] * (1 - alpha) + 240 * alpha


def _draw_skyline(image, labels, rng, camera):
    """Distant blocks along the horizon: far enough away not to move with the camera."""
    height, width = labels.shape
    block_ends = np.cumsum(rng.integers(8, 40, width // 8 + 1))
    block = np.searchsorted(block_ends, np.arange(width), side='right')
    tops = camera.horizon - rng.uniform(0.02, 0.15, block_ends.size)[block] * height
    colors = rng.uniform(110, 160, (block_ends.size, 1)) * np.array([0.95, 0.98, 1.05])
    ys = np.arange(height)[:, None] + 0.5
    mask = (ys >= tops) & (ys < camera.horizon + 2)
    image[mask] = np.broadcast_to(colors[block], (height, width, 3))[mask]
    labels[mask] = _id('building')


def _draw_ground(image, labels, camera, road, phase, marking_id=None):
    """Road, kerbs, sidewalks and grass, classified per pixel by its ground-plane position.

    Painted lane lines are road in Cityscapes; with marking_id they are labelled marking_id.
    """
    height, width = labels.shape
    top = int(camera.horizon) + 1
    rows = np.arange(top, height)[:, None] + 0.5
    depth = camera.focal * _CAMERA_HEIGHT / (rows - camera.horizon)  # [rows, 1]
    lateral = (np.arange(width) + 0.5 - camera.vanish_x) * depth / camera.focal  # [rows, width]
    offset = lateral - road['center']
    along = depth + phase  # distance along the street, fixed to the ground as the camera moves
    from_kerb = np.abs(offset) - road['half_width']
    sidewalk_width = np.where(offset > 0, road['sidewalks'][1], road['sidewalks'][0])
    patch = (along / 15.0 + (offset > 0) * 0.5) % 1.0  # 15 m lawns between paved stretches
    grass = (from_kerb > sidewalk_width) & (patch < road['grass'])
    kind = np.where(from_kerb < 0, 0, np.where(grass, 2, 1))  # 0 road, 1 sidewalk, 2 terrain
    colors = np.array([road['asphalt'], road['paving'], road['lawn']], np.float32)[kind]
    tiles = (kind == 1) & (((along % 0.9) < 0.08) | ((offset % 0.9) < 0.08))
    colors[tiles] *= 0.85
    colors[(from_kerb >= 0) & (from_kerb < 0.2)] = 190  # kerb stone
    dashes = (along % _DASH_PERIOD) < _DASH_LENGTH
    painted = (from_kerb > -0.4) & (from_kerb < -0.25)  # solid edge lines
    colors[painted] = 215
    for boundary in road['lanes']:
        dashed = (np.abs(offset - boundary) < 0.08) & dashes
        colors[dashed] = 225
        painted |= dashed
    image[top:] = colors
    labels[top:] = np.array([_id('road'), _id('sidewalk'), _id('terrain')], np.uint8)[kind]
    if marking_id is not None:
        labels[top:][painted] = marking_id


def _random_side(rng, count=24):
    """Building and hedge segments along one side of the street; they repeat every loop."""
    lengths = rng.uniform(8, 25, count)
    hedge = rng.random(count) < 0.3
    colors = _FACADES[rng.integers(0, len(_FACADES), count)] + rng.uniform(-15, 15, (count, 3))
    colors[hedge] = rng.uniform([40, 80, 25], [80, 120, 45], (hedge.sum(), 3))
    return {'ends': np.cumsum(lengths), 'hedge': hedge, 'colors': colors,
            'heights': np.where(hedge, rng.uniform(3, 7, count), rng.uniform(6, 22, count))}


def _draw_side(image, labels, camera, plane_x, side, phase):
    """Facades and hedges on the vertical plane X = plane_x, parallel to the road."""
    height, width = labels.shape
    cols = np.flatnonzero((np.arange(width) + 0.5 - camera.vanish_x) * np.sign(plane_x) > 1)
    if cols.size == 0:
        return
    cols = slice(cols[0], cols[-1] + 1)
    depth = camera.focal * plane_x / (np.arange(width)[cols] + 0.5 - camera.vanish_x)  # [cols]
    along = depth + phase
    segment = np.searchsorted(side['ends'], along % side['ends'][-1], side='right')
    u = side['ends'][segment] - along % side['ends'][-1]  # metres to the segment's end
    hedge = side['hedge'][segment]
    bumps = 0.5 * np.sin(along * 1.3) + 0.3 * np.sin(along * 3.7)  # ragged hedge tops
    tops = side['heights'][segment] + hedge * bumps
    rows = np.arange(height)[:, None] + 0.5
    v = _CAMERA_HEIGHT - (rows - camera.horizon) * depth / camera.focal  # height above ground
    mask = (v >= 0) & (v < tops)  # [rows, cols]
    windows = (~hedge & ((u % 2.6) > 0.9) & ((v % 3.2) > 1.0) & ((v % 3.2) < 2.4)
               & (v > 2) & (v < tops - 1))  # 3.2 m storeys, 2.6 m window bays
    colors = np.repeat(side['colors'][segment][None], height, axis=0)
    leaves = 0.85 + 0.15 * np.sin(along * 3.1) * np.sin(v * 2.3)
    colors *= np.where(hedge, leaves, 1.0)[..., None]
    colors[windows] = (45, 55, 70)
    image[:, cols][mask] = colors[mask]
    kind = np.where(hedge, _id('vegetation'), _id('building')).astype(np.uint8)
    labels[:, cols][mask] = np.broadcast_to(kind, mask.shape)[mask]


def _draw_parts(image, labels, camera, x_world, depth, parts):
    """Draws an upright object standing on the ground at (x_world, depth).

    parts: ('rect', left, bottom, right, top, colour, label id) or
    ('ellipse', centre x, centre y, radius x, radius y, colour, label id), in metres from the foot.
    """
    x, ground, scale = _project(camera, x_world, 0.0, depth)
    for shape, left, bottom, right, top, color, label_id in parts:
        if shape == 'ellipse':
            left, bottom, right, top = left - right, bottom - top, left + right, bottom + top
        x0, x1 = x + left * scale, x + right * scale
        y0, y1 = ground - top * scale, ground - bottom * scale
        rows, cols = _span(y0, y1, labels.shape[0]), _span(x0, x1, labels.shape[1])
        inside = slice(None)
        if shape == 'ellipse':
            ys, xs = np.ogrid[rows, cols]
            rx, ry = max(x1 - x0, 1.2) / 2, max(y1 - y0, 1.2) / 2
            inside = (((xs + 0.5 - (x0 + x1) / 2) / rx) ** 2
                      + ((ys + 0.5 - (y0 + y1) / 2) / ry) ** 2 <= 1)
        image[rows, cols][inside] = color
        labels[rows, cols][inside] = label_id


def _car(rng):
    """Seen from behind: wheels, body, narrower cabin with a dark rear window, tail lights."""
    half, height, car = rng.uniform(0.85, 0.98), rng.uniform(1.4, 1.6), _id('car')
    color = _CAR_COLORS[rng.integers(len(_CAR_COLORS))] + rng.uniform(-15, 15, 3)
    return [('rect', -0.9 * half, 0, -0.55 * half, 0.4, 25, car),
            ('rect', 0.55 * half, 0, 0.9 * half, 0.4, 25, car),
            ('rect', -half, 0.3, half, 0.95, color, car),
            ('rect', -0.8 * half, 0.9, 0.8 * half, height, color, car),
            ('rect', -0.68 * half, 1.02, 0.68 * half, height - 0.08, (40, 50, 60), car),
            ('rect', -half, 0.65, -0.8 * half, 0.8, (200, 30, 30), car),
            ('rect', 0.8 * half, 0.65, half, 0.8, (200, 30, 30), car)]


def _person(rng):
    height, person = rng.uniform(1.55, 1.9), _id('person')
    trousers, shirt = rng.uniform(20, 90, 3), rng.uniform(30, 220, 3)
    skin = rng.uniform([150, 100, 80], [230, 180, 150])
    return [('rect', -0.16, 0, -0.03, 0.48 * height, trousers, person),
            ('rect', 0.03, 0, 0.16, 0.48 * height, trousers, person),
            ('rect', -0.25, 0.47 * height, 0.25, 0.82 * height, shirt, person),
            ('ellipse', 0, 0.91 * height, 0.11, 0.09 * height, skin, person)]


def _sign(rng):
    """A pole with a round red or a square blue sign on top (the whole panel is 'traffic sign')."""
    height, sign = rng.uniform(2.4, 3.0), _id('traffic sign')
    parts = [('rect', -0.05, 0, 0.05, height, (150, 150, 150), _id('pole'))]
    if rng.random() < 0.5:
        return parts + [('ellipse', 0, height, 0.35, 0.35, (200, 30, 30), sign),
                        ('ellipse', 0, height, 0.25, 0.25, (235, 235, 235), sign)]
    return parts + [('rect', -0.35, height - 0.35, 0.35, height + 0.35, (30, 80, 180), sign),
                    ('rect', -0.1, height - 0.2, 0.1, height + 0.2, (235, 235, 235), sign)]


def _light(rng):
    """A pole carrying a dark box with red, amber and green lamps, one of them lit."""
    height, lit, light = rng.uniform(3.0, 3.8), rng.integers(3), _id('traffic light')
    parts = [('rect', -0.07, 0, 0.07, height, (120, 120, 115), _id('pole')),
             ('rect', -0.19, height, 0.19, height + 1.0, (35, 35, 30), light)]
    for lamp, color in enumerate([(255, 40, 30), (255, 190, 0), (40, 230, 90)]):
        color = np.array(color) * (1.0 if lamp == lit else 0.3)
        parts.append(('ellipse', 0, height + 0.8 - 0.3 * lamp, 0.11, 0.11, color, light))
    return parts


def _tree(rng):
    """Trunk and crown with a lighter highlight, all 'vegetation' as in Cityscapes."""
    trunk, radius, tree = rng.uniform(1.5, 3.0), rng.uniform(1.2, 2.5), _id('vegetation')
    color, crown = rng.uniform([35, 80, 20], [80, 130, 50]), trunk + 0.8 * radius
    return [('rect', -0.15, 0, 0.15, trunk, (90, 65, 40), tree),
            ('ellipse', 0, crown, radius, 1.1 * radius, color, tree),
            ('ellipse', -0.3 * radius, crown + 0.3 * radius, 0.5 * radius, 0.5 * radius,
             1.2 * color, tree)]


def _random_road(rng):
    """The street cross-section in metres; the camera (X = 0) always drives on the road."""
    half = rng.uniform(4.0, 8.0)
    lanes = max(2, int(round(2 * half / 3.5)))
    return {'center': rng.uniform(2.0 - half, half - 2.0), 'half_width': half,
            'lane_count': lanes, 'lanes': half * (2 * np.arange(1, lanes) / lanes - 1),
            'sidewalks': rng.uniform(2.0, 4.5, 2), 'verges': rng.uniform(0.0, 5.0, 2),
            'grass': rng.uniform(0.4, 0.9), 'asphalt': rng.uniform(75, 115) + rng.uniform(-4, 4, 3),
            'paving': rng.uniform(140, 180) + rng.uniform([-5, -5, -10], [10, 5, 0]),
            'lawn': rng.uniform([90, 130, 45], [130, 170, 75])}


def _roadside_x(rng, road, spot):
    """X of a spot beside a random kerb: 'kerb' (0.5 m in), 'walk' (on the sidewalk) or 'verge'."""
    side = rng.integers(2)
    sidewalk, verge = road['sidewalks'][side], road['verges'][side]
    from_kerb = {'kerb': 0.5, 'walk': rng.uniform(0.6, sidewalk - 0.3),
                 'verge': sidewalk + verge / 2 if verge > 1.5 else sidewalk - 0.5}[spot]
    return road['center'] + (2 * side - 1) * (road['half_width'] + from_kerb)


def _depths(rng, count):
    """Depths at phase 0, denser near the camera; the first is mid-range so it is in view."""
    depths = _NEAR + _LOOP * rng.random(count) ** 1.5
    depths[0] = rng.uniform(18, 45)
    return depths


def _random_objects(rng, road):
    """(depth at phase 0, speed as a fraction of the camera's, X, parts) for every object."""
    half, lanes = road['half_width'], road['lane_count']
    centres = road['center'] - half + (np.arange(lanes) + 0.5) * 2 * half / lanes
    spots = [x for x in centres if abs(x) > 2.2]  # stopped traffic stays out of the camera's lane
    kerbside = road['center'] + np.array([1.1 - half, half - 1.1])
    spots += [x for x in kerbside if abs(x) > 2.2]  # parked
    objects = [(depth, 0.0, spots[rng.integers(len(spots))], _car(rng))
               for depth in _depths(rng, rng.integers(2, 8))]
    if rng.random() < 0.7:  # a car ahead in our lane, driving at our speed
        own_lane = centres[np.argmin(np.abs(centres))]
        objects.append((rng.uniform(10, 30), 1.0, own_lane, _car(rng)))
    for make, counts, spot in [(_person, (1, 6), 'walk'), (_sign, (1, 4), 'kerb'),
                               (_light, (1, 3), 'kerb'), (_tree, (1, 6), 'verge')]:
        objects += [(depth, 0.0, _roadside_x(rng, road, spot), make(rng))
                    for depth in _depths(rng, rng.integers(*counts))]
    return objects


def draw_scene(rng, height=IMAGE_SHAPE[0], width=IMAGE_SHAPE[1], phase=0.0, marking_id=None):
    """One street scene and its exact labels: (uint8 [h, w, 3] RGB, uint8 [h, w] Cityscapes ids).

    The layout depends only on rng; phase is how many metres the camera has driven forward, so
    drawing with equal seeds and growing phases gives the frames of a smooth video. With
    marking_id, painted lane lines are labelled marking_id instead of road.
    """
    camera = _Camera(horizon=rng.uniform(0.36, 0.46) * height,
                     vanish_x=rng.uniform(0.42, 0.58) * width, focal=0.8 * width)
    road = _random_road(rng)
    image = np.empty((height, width, 3), np.float32)
    labels = np.empty((height, width), np.uint8)
    _draw_sky(image, labels, rng, camera)
    _draw_skyline(image, labels, rng, camera)
    _draw_ground(image, labels, camera, road, phase, marking_id)
    for side in (0, 1):  # left, right
        beyond_kerb = road['sidewalks'][side] + road['verges'][side]
        plane_x = road['center'] + (2 * side - 1) * (road['half_width'] + beyond_kerb)
        _draw_side(image, labels, camera, plane_x, _random_side(rng), phase)
    placed = [(_NEAR + (depth - (1 - speed) * phase - _NEAR) % _LOOP, x_world, parts)
              for depth, speed, x_world, parts in _random_objects(rng, road)]
    for depth, x_world, parts in sorted(placed, key=lambda item: -item[0]):  # far to near
        _draw_parts(image, labels, camera, x_world, depth, parts)
    # Exposure, white balance and sensor noise, so that colour alone is not a perfect classifier.
    image *= rng.uniform(0.75, 1.2) * rng.uniform(0.94, 1.06, 3).astype(np.float32)
    image += 6.0 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def demo_paths(split, root=DEFAULT_DEMO_ROOT):
    """(glob of the split's images, its gtFine folder), as for real Cityscapes."""
    return (os.path.join(root, 'leftImg8bit', split, '*', '*_leftImg8bit.png'),
            os.path.join(root, 'gtFine', split))


def demo_video_path(root=DEFAULT_DEMO_ROOT):
    return os.path.join(root, 'video', 'demo_drive.mp4')


def _write_split(root, split, count):
    """Writes one split in the Cityscapes layout, seeded by split and index."""
    cities = _CITIES[split]
    for index in range(count):
        city = cities[index % len(cities)]
        stem = f'{city}_{index // len(cities):06d}_{_FRAME:06d}'
        image, labels = draw_scene(np.random.default_rng([zlib.crc32(split.encode()), index]))
        image_dir = os.path.join(root, 'leftImg8bit', split, city)
        label_dir = os.path.join(root, 'gtFine', split, city)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        Image.fromarray(image).save(os.path.join(image_dir, stem + '_leftImg8bit.png'))
        Image.fromarray(labels).save(os.path.join(label_dir, stem + '_gtFine_labelIds.png'))
        Image.fromarray(_PALETTE[labels]).save(os.path.join(label_dir, stem + '_gtFine_color.png'))


def _file_counts(root, split):
    images_glob, labels_dir = demo_paths(split, root)
    return {'images': len(glob.glob(images_glob)),
            'labelIds': len(glob.glob(os.path.join(labels_dir, '*', '*_gtFine_labelIds.png'))),
            'color': len(glob.glob(os.path.join(labels_dir, '*', '*_gtFine_color.png')))}


def _write_video(path, frames):
    """A straight drive through one scene: the same seed every frame, only the phase grows."""
    os.makedirs(os.path.dirname(path))
    seed = zlib.crc32(b'video')
    try:
        with imageio.v2.get_writer(path, fps=VIDEO_FPS, codec='libx264', macro_block_size=16,
                                   ffmpeg_log_level='error') as writer:
            for frame in range(frames):
                image, _ = draw_scene(np.random.default_rng(seed), phase=frame * _METRES_PER_FRAME)
                writer.append_data(image)
        # imageio-ffmpeg ignores ffmpeg's exit status, so count the frames that reached the file.
        written, _ = imageio_ffmpeg.count_frames_and_secs(path)
    except (OSError, RuntimeError) as error:
        raise helper.UserError(f'could not write the demo video {path}: {error}') from error
    if written != frames:
        raise helper.UserError(f'demo video {path} has {written} frames, expected {frames}')


def _check_existing(root, settings):
    """Raises UserError unless root holds a complete demo dataset made with these settings."""
    try:
        with open(os.path.join(root, 'manifest.json')) as manifest_file:
            manifest = json.load(manifest_file)
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or 'file_counts' not in manifest:
        raise helper.UserError(f'{root} exists but is not a complete demo dataset; move it away')
    found = {key: manifest.get(key) for key in settings}
    if found != settings:
        raise helper.UserError(f'{root} holds a demo dataset made with other settings '
                               f'({found}, wanted {settings}); move it away')
    for split, counts in manifest['file_counts'].items():
        if _file_counts(root, split) != counts:
            raise helper.UserError(f'{root} is missing files of the {split} split (manifest: '
                                   f'{counts}, found: {_file_counts(root, split)}); move it away')
    if not os.path.isfile(demo_video_path(root)):
        raise helper.UserError(f'{root} is missing {demo_video_path(root)}; move it away')


def _move_into_place(staging, target):
    """Renames the finished staging folder to target; when another process has put its own
    copy there meanwhile, that copy stands and staging is removed."""
    try:
        os.rename(staging, target)
    except OSError:
        if not os.path.isdir(target):
            raise
        shutil.rmtree(staging, ignore_errors=True)


def ensure_demo_dataset(root=DEFAULT_DEMO_ROOT, split_sizes=None, video_frames=VIDEO_FRAMES):
    """Generates the demo dataset under root unless it is already there; returns root.

    Everything is written to a temporary sibling folder and renamed into place after the manifest,
    so an interrupted run never leaves a half-made root, and nothing already at root is touched.
    """
    settings = {'version': MANIFEST_VERSION, 'split_sizes': dict(split_sizes or SPLIT_SIZES),
                'image_shape': list(IMAGE_SHAPE), 'video_frames': video_frames}
    if os.path.lexists(root):  # lexists: even a dangling symlink is the user's, not ours to replace
        _check_existing(root, settings)
        return root
    target = os.path.abspath(root)  # also drops a trailing slash, which would empty basename()
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    print(f'generating demo dataset in {os.path.relpath(root)} '
          f'({sum(settings["split_sizes"].values())} images) ...', flush=True)
    staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}-partial-', dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the renamed root should not be
    try:
        for split, size in settings['split_sizes'].items():
            _write_split(staging, split, size)
        counts = {split: _file_counts(staging, split) for split in settings['split_sizes']}
        _write_video(demo_video_path(staging), video_frames)
        with open(os.path.join(staging, 'manifest.json'), 'w') as manifest_file:
            json.dump(dict(settings, file_counts=counts), manifest_file, indent=2)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _check_existing(root, settings)  # the copy of another process, when it won the race
    return root


# The Mapillary Vistas variant: the same scenes at varied sizes in the Vistas v1.2 layout.
MAPILLARY_SPLIT_SIZES = {'training': 8, 'validation': 4}
# 4:3 (most Vistas images), 16:9, square and portrait 3:4; drawn at index % len.
MAPILLARY_IMAGE_SIZES = ((240, 320), (216, 384), (256, 256), (320, 240))
MAPILLARY_CLASSES = {
    'road': 'construction--flat--road', 'sidewalk': 'construction--flat--sidewalk',
    'building': 'construction--structure--building', 'pole': 'object--support--pole',
    'traffic light': 'object--traffic-light', 'traffic sign': 'object--traffic-sign--front',
    'vegetation': 'nature--vegetation', 'terrain': 'nature--terrain', 'sky': 'nature--sky',
    'person': 'human--person', 'car': 'object--vehicle--car'}
_LANE_MARKING = 250  # drawn into the Cityscapes-id labels, where no label has this value


def _mapillary_tables():
    """(uint8 [256] Cityscapes demo id -> Vistas v1.2 index, flat 768-entry palette)."""
    index = {label.name: i for i, label in enumerate(mapillary_labels.LABELS_V12)}
    table = np.full(256, index[mapillary_labels.UNLABELED], np.uint8)
    for name, vistas_name in MAPILLARY_CLASSES.items():
        table[_id(name)] = index[vistas_name]
    table[_LANE_MARKING] = index['marking--general']
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(index)] = [label.color for label in mapillary_labels.LABELS_V12]
    return table, palette.ravel().tolist()


def _mapillary_config():
    """config.json as the dataset ships it (minus the per-label 'instances' flag)."""
    return {'version': '1.2', 'mapping': 'public',
            'folder_structure': '{split}/{content}/{key:.{22}}.{ext}',
            'labels': [{'name': label.name, 'readable': label.readable, 'color': list(label.color),
                        'evaluate': label.name != mapillary_labels.UNLABELED}
                       for label in mapillary_labels.LABELS_V12]}


def ensure_mapillary_demo(root, split_sizes=None, image_sizes=MAPILLARY_IMAGE_SIZES):
    """Demo scenes in the Mapillary Vistas v1.2 layout under root (unless already there).

    {split}/images/<key>.jpg in varied sizes and aspects, {split}/labels/<key>.png palette PNGs
    of v1.2 indices (painted lane lines are 'marking--general'), config.json at the root.
    Written into a staging folder renamed into place, as ensure_demo_dataset.
    """
    if os.path.lexists(root):
        if not os.path.isfile(os.path.join(root, 'config.json')):
            raise helper.UserError(f'{root} exists but is not a Mapillary demo; move it away')
        return root
    target = os.path.abspath(root)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}-partial-',
                               dir=os.path.dirname(target))
    table, palette = _mapillary_tables()
    try:
        for split, count in (split_sizes or MAPILLARY_SPLIT_SIZES).items():
            for folder in ('images', 'labels'):
                os.makedirs(os.path.join(staging, split, folder))
            for index in range(count):
                key = hashlib.sha1(f'{split}-{index}'.encode()).hexdigest()[:22]
                height, width = image_sizes[index % len(image_sizes)]
                rng = np.random.default_rng([zlib.crc32(split.encode()), index])
                image, labels = draw_scene(rng, height, width, marking_id=_LANE_MARKING)
                Image.fromarray(image).save(os.path.join(staging, split, 'images', key + '.jpg'),
                                            quality=90)
                label_image = Image.fromarray(table[labels])
                label_image.putpalette(palette)
                label_image.save(os.path.join(staging, split, 'labels', key + '.png'))
        with open(os.path.join(staging, 'config.json'), 'w') as config_file:
            json.dump(_mapillary_config(), config_file, indent=2)
        os.chmod(staging, 0o755)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
