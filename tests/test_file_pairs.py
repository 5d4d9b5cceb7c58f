"""roadseg/file_pairs.py: pairing images with labels by suffixes the user gives, by BDD100K's and
Cityscapes' names, or by a list file of pairs (SegNet's CamVid lists among them), and the hashed
held-out part of a dataset that ships no validation split. Pairing reads names only: the files
are empty unless a layout of roadseg/data/demo_layouts.py writes them."""
import os

import pytest

from helper import UserError
from roadseg import file_pairs
from roadseg.data import demo_layouts


def _touch(folder, *names):
    """Empty files under folder (made as needed); their paths."""
    paths = []
    for name in names:
        path = os.path.join(str(folder), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, 'w').close()
        paths.append(path)
    return paths


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def _pairs_error(*args, **kwargs):
    with pytest.raises(UserError) as error:
        file_pairs.find_pairs(*args, **kwargs)
    message = str(error.value)
    assert '\n' not in message
    return message


# ---------------------------------------------------------------------------------- by suffixes

def test_suffixes_pair_x_img_jpg_with_x_mask_png_and_leave_other_files_out(tmp_path):
    folder = str(tmp_path / 'data')
    images = _touch(folder, 'b_img.jpg', 'a_img.jpg')
    masks = _touch(folder, 'a_mask.png', 'b_mask.png')
    # Neither ends with a suffix: a preview and an overlay beside the pairs are not used.
    _touch(folder, 'a_preview.jpg', 'b_overlay.png')
    assert file_pairs.find_pairs(folder, folder, '_img.jpg', '_mask.png') == (
        sorted(images), masks)
    assert file_pairs.find_pairs(os.path.join(folder, '*.jpg'), os.path.join(folder, '*.png'),
                                 '_img.jpg', '_mask.png') == (sorted(images), masks)


def test_suffix_pairing_reports_an_image_without_its_mask(tmp_path):
    folder = str(tmp_path / 'data')
    _touch(folder, 'a_img.jpg', 'b_img.jpg', 'c_img.jpg', 'a_mask.png', 'b_mask.png')
    assert _pairs_error(folder, folder, '_img.jpg', '_mask.png') == (
        '1 of 3 images have no label under %s, e.g. c_img.jpg' % folder)


@pytest.mark.parametrize('image_suffix, label_suffix, expected', [
    ('_image.jpg', '_mask.png', 'none of the 4 images under {} ends with _image.jpg'),
    ('_img.jpg', '_label.png', 'none of the 4 label images under {} ends with _label.png'),
])
def test_a_suffix_no_file_ends_with_is_an_error_naming_the_suffix_and_the_folder(
        tmp_path, image_suffix, label_suffix, expected):
    folder = str(tmp_path / 'data')
    _touch(folder, 'a_img.jpg', 'b_img.jpg', 'a_mask.png', 'b_mask.png')
    assert _pairs_error(folder, folder, image_suffix, label_suffix) == expected.format(folder)


def test_default_pairing_strips_bdds_legacy_train_id_suffix(tmp_path):
    root = demo_layouts.write_bdd100k(str(tmp_path / 'bdd100k'), {'train': 3}, legacy=True)
    seg = os.path.join(root, 'seg')
    images, labels = file_pairs.find_pairs(os.path.join(seg, 'images', 'train'),
                                           os.path.join(seg, 'labels', 'train'))
    assert len(images) == len(labels) == 3
    for image, label in zip(images, labels):
        assert os.path.basename(label) == file_pairs.stem(image) + '_train_id.png'


def test_same_named_frames_of_two_sequences_are_never_silently_dropped(tmp_path):
    names = [os.path.join(sequence, frame) for sequence in ('seq1', 'seq2')
             for frame in ('000001.png', '000002.png')]
    _touch(tmp_path / 'images', *names)
    _touch(tmp_path / 'labels', *names)
    try:
        images, labels = file_pairs.find_pairs(str(tmp_path / 'images'),
                                               str(tmp_path / 'labels'))
    except UserError as error:
        assert '000001.png' in str(error)
    else:
        assert [os.path.relpath(path, str(tmp_path / 'images')) for path in images] == names
        assert [os.path.relpath(path, str(tmp_path / 'labels')) for path in labels] == names


# ------------------------------------------------------------------------------------ list files

def test_a_list_file_pairs_its_lines_as_written_in_their_order(tmp_path):
    images = _touch(tmp_path / 'img', 'b.jpg', 'a.jpg')
    labels = _touch(tmp_path / 'lab', 'b.png', 'a.png')
    list_path = _write(str(tmp_path / 'lists' / 'train.txt'),
                       '# image label\n\n%s %s\n%s %s  # the second\n'
                       % (images[0], labels[0], images[1], labels[1]))
    assert file_pairs.find_pairs(list_path, None) == (images, labels)
    assert file_pairs.find_images(list_path) == images


def test_a_list_file_pairs_paths_relative_to_its_folder(tmp_path, monkeypatch):
    root = tmp_path / 'dataset'
    images = _touch(root, 'img/a.jpg', 'img/b.jpg')
    labels = _touch(root, 'lab/a.png', 'lab/b.png')
    list_path = _write(str(root / 'train.txt'), 'img/a.jpg lab/a.png\nimg/b.jpg lab/b.png\n')
    elsewhere = tmp_path / 'elsewhere'  # where img/a.jpg, as written, names nothing
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found_images, found_labels = file_pairs.find_pairs(list_path, None)
    assert [os.path.realpath(path) for path in found_images + found_labels] == [
        os.path.realpath(path) for path in images + labels]


def test_segnets_camvid_lists_pair_under_their_folder(tmp_path):
    root = demo_layouts.write_camvid(str(tmp_path / 'CamVid'), {'train': 3, 'val': 1})
    with open(os.path.join(root, 'train.txt')) as f:
        lines = [line.split() for line in f]
    assert all(image.startswith('/SegNet/CamVid/train/') for image, _ in lines)
    images, labels = file_pairs.find_pairs(os.path.join(root, 'train.txt'), None)
    assert images == [os.path.join(root, 'train', os.path.basename(image))
                      for image, _ in lines]
    assert labels == [os.path.join(root, 'trainannot', os.path.basename(label))
                      for _, label in lines]
    assert all(os.path.isfile(path) for path in images + labels)


@pytest.mark.parametrize('missing', ['image', 'label'])
def test_a_list_line_naming_a_missing_file_is_an_error_naming_the_list_line_and_path(
        tmp_path, missing):
    root = tmp_path / 'dataset'
    _touch(root, 'img/a.jpg', 'lab/a.png', 'img/b.jpg', 'lab/b.png')
    second = {'image': 'img/c.jpg lab/b.png', 'label': 'img/b.jpg lab/c.png'}[missing]
    list_path = _write(str(root / 'train.txt'), 'img/a.jpg lab/a.png\n%s\n' % second)
    path = {'image': 'img/c.jpg', 'label': 'lab/c.png'}[missing]
    assert _pairs_error(list_path, None) == '%s line 2: %s %s not found (nor under %s)' % (
        list_path, missing, path, root)


@pytest.mark.parametrize('line', ['img/a.jpg', 'img/a.jpg lab/a.png lab/a_color.png'])
def test_a_list_line_of_one_or_three_fields_is_an_error_naming_the_line(tmp_path, line):
    root = tmp_path / 'dataset'
    _touch(root, 'img/a.jpg', 'lab/a.png', 'lab/a_color.png')
    list_path = _write(str(root / 'train.txt'), '# pairs\n%s\n' % line)
    assert _pairs_error(list_path, None) == (
        "%s line 2: expected `image label`, got '%s'" % (list_path, line))


@pytest.mark.parametrize('text', ['', '\n# no pairs yet\n\n'])
def test_a_list_file_of_no_pairs_is_an_error(tmp_path, text):
    list_path = _write(str(tmp_path / 'train.txt'), text)
    assert _pairs_error(list_path, None) == 'list file %s names no pairs' % list_path


# -------------------------------------------------------------------------------------- held_out

def _names(count, start=0):
    images = ['/data/images/scene_%04d.jpg' % index for index in range(start, start + count)]
    return images, [path.replace('images', 'masks').replace('.jpg', '.png') for path in images]


@pytest.mark.parametrize('fraction', [0.1, 0.2, 0.5])
def test_held_out_splits_pairs_into_disjoint_train_and_val_parts(fraction):
    images, labels = _names(200)
    train = file_pairs.held_out(images, labels, fraction, 'train')
    val = file_pairs.held_out(images, labels, fraction, 'val')
    assert not set(train[0]) & set(val[0])
    assert sorted(train[0] + val[0]) == images
    assert sorted(train[1] + val[1]) == labels
    for image, label in zip(train[0] + val[0], train[1] + val[1]):
        assert file_pairs.stem(image) == file_pairs.stem(label)
    assert abs(len(val[0]) - fraction * 200) <= 20, len(val[0])


def test_held_out_keeps_each_file_on_its_side_when_others_are_added():
    images, labels = _names(200)
    val = set(file_pairs.held_out(images, labels, 0.2, 'val')[0])
    more_images, more_labels = _names(300, start=100)
    grown = file_pairs.held_out(images + more_images[100:], labels + more_labels[100:], 0.2,
                                'val')[0]
    assert {path for path in grown if path in images} == val
    shuffled = file_pairs.held_out(images[::-1], labels[::-1], 0.2, 'val')[0]
    assert set(shuffled) == val


def test_held_out_of_nothing_or_everything():
    images, labels = _names(50)
    assert file_pairs.held_out(images, labels, 0.0, 'val') == ([], [])
    assert file_pairs.held_out(images, labels, 1.0, 'val') == (images, labels)
    assert file_pairs.held_out(images, labels, 0.0, 'train') == (images, labels)
