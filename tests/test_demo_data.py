"""demo_data.py: determinism, the Cityscapes layout, label contents, safety of the folder, video."""
import glob
import os
import re
import shutil

import imageio.v2
import numpy as np
import pytest
from PIL import Image

import cityscape_labels
from roadseg.data import demo_data
from helper import UserError

SMALL_SPLITS = {'train': 8, 'val': 2, 'test': 2}
IMAGE_NAME = re.compile(r'^([a-z]+)_(\d{6})_(\d{6})_leftImg8bit\.png$')


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('first') / 'demo')
    return demo_data.ensure_demo_dataset(root, split_sizes=SMALL_SPLITS)


def _files(root):
    return sorted(os.path.relpath(path, root)
                  for path in glob.glob(os.path.join(root, '**', '*'), recursive=True)
                  if os.path.isfile(path))


def _read(path):
    return np.array(Image.open(path))


def _label_paths(root, split):
    return sorted(glob.glob(os.path.join(root, 'gtFine', split, '*', '*_gtFine_labelIds.png')))


def test_generation_is_deterministic(demo_root, tmp_path):
    other = demo_data.ensure_demo_dataset(str(tmp_path / 'demo'), split_sizes=SMALL_SPLITS)
    assert os.listdir(tmp_path) == ['demo']  # the staging folder was renamed, not left behind
    assert _files(demo_root) == _files(other)
    for name in _files(demo_root):
        if name.endswith('_gtFine_labelIds.png'):
            with open(os.path.join(demo_root, name), 'rb') as first:
                with open(os.path.join(other, name), 'rb') as second:
                    assert first.read() == second.read(), name
        elif name.endswith('.png'):
            np.testing.assert_array_equal(_read(os.path.join(demo_root, name)),
                                          _read(os.path.join(other, name)), err_msg=name)


def test_layout_matches_cityscapes(demo_root):
    cities_per_split = {}
    for split, size in SMALL_SPLITS.items():
        images_glob, labels_dir = demo_data.demo_paths(split, demo_root)
        images = sorted(glob.glob(images_glob))
        assert len(images) == size
        assert labels_dir == os.path.join(demo_root, 'gtFine', split)
        for image_path in images:
            match = IMAGE_NAME.match(os.path.basename(image_path))
            assert match, image_path
            city = match.group(1)
            assert os.path.basename(os.path.dirname(image_path)) == city
            stem = os.path.basename(image_path)[:-len('_leftImg8bit.png')]
            for suffix in ('_gtFine_labelIds.png', '_gtFine_color.png'):
                assert os.path.isfile(os.path.join(labels_dir, city, stem + suffix)), stem + suffix
            assert Image.open(image_path).mode == 'RGB'
            assert Image.open(image_path).size == demo_data.IMAGE_SHAPE[::-1]
        cities_per_split[split] = {os.path.basename(os.path.dirname(path)) for path in images}
        assert len(_label_paths(demo_root, split)) == size
    all_cities = [city for cities in cities_per_split.values() for city in cities]
    assert len(all_cities) == len(set(all_cities)), cities_per_split


def test_labels_are_the_intended_cityscapes_ids(demo_root):
    expected = {cityscape_labels.NAME_TO_LABEL[name].id for name in demo_data.DEMO_CLASSES}
    assert set(demo_data.CLASS_IDS.values()) == expected
    seen = set()
    for split in SMALL_SPLITS:
        for path in _label_paths(demo_root, split):
            label_image = Image.open(path)
            assert label_image.mode == 'L', path
            values = set(np.unique(np.array(label_image)).tolist())
            assert values <= expected, (path, values - expected)
            if split == 'train':
                seen |= values
    assert seen == expected, 'classes missing from train: %s' % sorted(expected - seen)


def test_color_png_matches_the_table(demo_root):
    for path in _label_paths(demo_root, 'train')[:3]:
        label_ids = _read(path)
        colors = _read(path.replace('_gtFine_labelIds.png', '_gtFine_color.png'))
        assert colors.shape == label_ids.shape + (3,)
        for label_id in np.unique(label_ids):
            table_color = cityscape_labels.ID_TO_LABEL[int(label_id)].color
            assert (colors[label_ids == label_id] == table_color).all(), (path, label_id)


def test_folder_without_manifest_raises_and_is_left_alone(tmp_path):
    root = tmp_path / 'demo'
    root.mkdir()
    (root / 'notes.txt').write_text('mine')
    with pytest.raises(UserError, match='exists but is not a complete demo dataset'):
        demo_data.ensure_demo_dataset(str(root), split_sizes=SMALL_SPLITS)
    assert os.listdir(tmp_path) == ['demo']
    assert os.listdir(root) == ['notes.txt']
    assert (root / 'notes.txt').read_text() == 'mine'


def test_other_settings_or_missing_files_raise(demo_root):
    with pytest.raises(UserError, match='other settings'):
        demo_data.ensure_demo_dataset(demo_root, split_sizes={'train': 9, 'val': 2, 'test': 2})
    label_path = _label_paths(demo_root, 'val')[0]
    moved = label_path + '.moved'
    os.rename(label_path, moved)
    try:
        with pytest.raises(UserError, match='missing files of the val split'):
            demo_data.ensure_demo_dataset(demo_root, split_sizes=SMALL_SPLITS)
    finally:
        os.rename(moved, label_path)


def test_a_process_finishing_first_wins_and_nothing_is_left_behind(demo_root, tmp_path,
                                                                   monkeypatch):
    """Two trainings started at once both generate the demo: the second to finish finds the
    first's copy in place, keeps it and removes its own staging folder."""
    target = tmp_path / 'demo'
    write_video = demo_data._write_video

    def first_process_finishes_meanwhile(path, frames):
        write_video(path, frames)
        shutil.copytree(demo_root, target)
        (target / 'theirs').write_text('')

    monkeypatch.setattr(demo_data, '_write_video', first_process_finishes_meanwhile)
    assert demo_data.ensure_demo_dataset(str(target), split_sizes=SMALL_SPLITS) == str(target)
    assert os.listdir(tmp_path) == ['demo']
    assert (target / 'theirs').exists()


def test_second_call_does_not_regenerate(demo_root, capsys):
    def mtimes():
        return {name: os.stat(os.path.join(demo_root, name)).st_mtime_ns
                for name in _files(demo_root)}

    before = mtimes()
    assert demo_data.ensure_demo_dataset(demo_root, split_sizes=SMALL_SPLITS) == demo_root
    after = mtimes()
    assert before == after
    assert capsys.readouterr().out == ''


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_video(path, frames):
        raise UserError('ffmpeg broke')

    monkeypatch.setattr(demo_data, '_write_video', broken_video)
    with pytest.raises(UserError, match='ffmpeg broke'):
        demo_data.ensure_demo_dataset(str(tmp_path / 'demo'), split_sizes={'train': 1})
    assert os.listdir(tmp_path) == []


def test_video_has_the_expected_frames(demo_root):
    reader = imageio.v2.get_reader(demo_data.demo_video_path(demo_root))
    frames = [frame for frame in reader]
    reader.close()
    assert len(frames) == demo_data.VIDEO_FRAMES
    assert all(frame.shape == demo_data.IMAGE_SHAPE + (3,) for frame in frames)
    # Smooth motion: neighbouring frames are closer to each other than to a frame 2 s later.
    step = np.abs(frames[1].astype(int) - frames[0]).mean()
    assert 0 < step < np.abs(frames[20].astype(int) - frames[0]).mean()


def test_draw_scene_depends_on_seed_and_phase_only():
    image, labels = demo_data.draw_scene(np.random.default_rng(3), phase=2.0)
    assert image.dtype == np.uint8 and image.shape == demo_data.IMAGE_SHAPE + (3,)
    assert labels.dtype == np.uint8 and labels.shape == demo_data.IMAGE_SHAPE
    same_image, same_labels = demo_data.draw_scene(np.random.default_rng(3), phase=2.0)
    np.testing.assert_array_equal(image, same_image)
    np.testing.assert_array_equal(labels, same_labels)
    _, moved_labels = demo_data.draw_scene(np.random.default_rng(3), phase=3.0)
    changed = (moved_labels != labels).mean()
    assert 0 < changed < 0.2, changed  # 1 m further: something changed, not everything
    sky = demo_data.CLASS_IDS['sky']
    assert (labels[0] == sky).any() and (labels[-1] != sky).all()
