"""*_gtFine_labelTrainIds.png files read with cityscapes35: the original tool's (all 35 labels,
train id = label id, with its bilinear resize's leftovers) train; the official 19-class ones,
and those whose values cannot tell the two apart, are refused with one line.

The three kinds share a name; their values tell them apart (data_loader.label_tables).
"""
import glob
import os

import numpy as np
import pytest
from PIL import Image

import data_loader
from roadseg.apps import evaluate
import main
from roadseg.data import prepare
import synthetic
from helper import UserError

HEIGHT, WIDTH = 64, 128
LEFTOVER = 40  # no Cityscapes label has this id: a bilinear resize made it between two


def original_label(seed=0):
    """Label ids 0-33, leftovers along the right edge and a few ignored pixels."""
    label = np.resize(np.arange(34, dtype=np.uint8), (HEIGHT, WIDTH))
    label = np.roll(label, seed, axis=1)
    label[:, -2:] = LEFTOVER
    label[0, :4] = 255
    return label


def original_train_ids(seed=0):
    """What training sees of original_label: label ids as they are, leftovers ignored."""
    train_ids = original_label(seed)
    train_ids[train_ids == LEFTOVER] = 255
    return train_ids


def official_label():
    label = np.resize(np.arange(19, dtype=np.uint8), (HEIGHT, WIDTH))
    label[:, -2:] = 255
    return label


def ambiguous_label():
    return np.resize(np.arange(19, dtype=np.uint8), (HEIGHT, WIDTH))


def write_split(root, labels, split='train'):
    """One sample per label, aachen_00000i, named as Cityscapes' train-id files."""
    paths = [synthetic.write_sample(root, 'aachen', seq, synthetic.random_image(HEIGHT, WIDTH, seq),
                                    label, split, kind='labelTrainIds')
             for seq, label in enumerate(labels)]
    return (os.path.join(str(root), 'leftImg8bit', split),
            os.path.join(str(root), 'gtFine', split), paths)


def dataset_of(root, labels, label_set='cityscapes35', **kwargs):
    images, label_folder, _ = write_split(root, labels)
    return data_loader.Dataset(images, label_folder, data_loader.get_label_set(label_set),
                               (HEIGHT, WIDTH), **kwargs)


def official_message(label_path, label_set='cityscapes35'):
    return ('%s holds the 19 Cityscapes benchmark classes, not the %s label set: use the '
            '*_gtFine_labelIds.png files' % (label_path, label_set))


# ------------------------------------------------------------------------------ data_loader

def test_original_files_train_with_cityscapes35_and_leftovers_are_ignored_with_a_warning(
        tmp_path, capsys):
    dataset = dataset_of(tmp_path, [original_label()])
    _, label = dataset.sample(0)
    np.testing.assert_array_equal(label, original_train_ids())
    np.testing.assert_array_equal(dataset.label(0), original_train_ids())
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == ['warning: label %s holds values outside the label set: %d; they are '
                        'ignored (255)' % (dataset.label_paths[0], LEFTOVER)]  # once per file


def test_original_files_without_leftovers_or_ignored_pixels_train_without_a_warning(tmp_path,
                                                                                  capsys):
    label = np.resize(np.arange(34, dtype=np.uint8), (HEIGHT, WIDTH))
    _, train_ids = dataset_of(tmp_path, [label]).sample(0)
    np.testing.assert_array_equal(train_ids, label)
    assert capsys.readouterr().err == ''


def test_official_files_with_cityscapes35_are_refused_with_the_message_of_their_name(tmp_path):
    with pytest.raises(UserError) as error:  # the first file's values, before any step
        dataset_of(tmp_path / 'first', [official_label()])
    (path,) = glob.glob(str(tmp_path / 'first' / 'gtFine' / '*' / '*' / '*.png'))
    assert str(error.value) == official_message(path)
    dataset = dataset_of(tmp_path / 'later', [original_label(), official_label()])
    with pytest.raises(UserError) as error:
        dataset.sample(1)
    assert str(error.value) == official_message(dataset.label_paths[1])
    with pytest.raises(UserError) as error:
        dataset.label(1)
    assert str(error.value) == official_message(dataset.label_paths[1])


def test_files_holding_only_benchmark_train_ids_cannot_tell_and_are_refused(tmp_path):
    with pytest.raises(UserError) as error:
        dataset_of(tmp_path / 'first', [ambiguous_label()])
    dataset = dataset_of(tmp_path / 'later', [original_label(), ambiguous_label()])
    with pytest.raises(UserError) as later:
        dataset.sample(1)
    for message, path in ((str(error.value), None), (str(later.value), dataset.label_paths[1])):
        if path:
            assert message.startswith(path + ' cannot tell ')
        assert 'only values 0-18' in message
        assert '--label_set cityscapes,' in message and '*_gtFine_labelIds.png' in message


def test_original_files_with_the_19_class_set_are_refused_naming_cityscapes35(tmp_path):
    with pytest.raises(UserError) as error:
        dataset_of(tmp_path, [original_label()], 'cityscapes')
    (path,) = glob.glob(str(tmp_path / 'gtFine' / '*' / '*' / '*.png'))
    assert str(error.value) == (
        "%s holds label ids 19, 20, 21, 22, 23, ... of the original tool's 35-label files, not "
        "the 19 Cityscapes benchmark classes: pass --label_set cityscapes35" % path)


def test_a_file_that_cannot_tell_is_skipped_like_a_bad_file_with_skip_bad_files(tmp_path,
                                                                                capsys):
    dataset = dataset_of(tmp_path, [original_label(), ambiguous_label()], skip_bad_files=True)
    _, labels = next(dataset.generator(2, shuffle=False))
    np.testing.assert_array_equal(labels[0], original_train_ids())
    assert (labels[1] == 255).all() and dataset.skipped == {1}
    assert 'skipped (--skip_bad_files): %s cannot tell' % dataset.label_paths[1] in \
        capsys.readouterr().err


def test_official_files_with_cityscapes_train_as_they_always_did(tmp_path):
    _, label = dataset_of(tmp_path, [official_label()], 'cityscapes').sample(0)
    np.testing.assert_array_equal(label, official_label())


def test_other_label_sets_refuse_gtfine_train_id_files_by_name_before_reading_them(tmp_path):
    images, labels, paths = write_split(tmp_path, [original_label()])
    with pytest.raises(UserError) as error:
        data_loader.Dataset(images, labels, data_loader.get_label_set('mapillary'), (32, 64))
    assert str(error.value) == official_message(paths[0][1], 'mapillary')


def test_generator_and_tf_data_give_identical_batches_of_original_files(tmp_path):
    dataset = dataset_of(tmp_path, [original_label(seed) for seed in range(3)],
                         augment=data_loader.AugmentConfig(photometric=True))
    generated = list(dataset.generator(2, epochs=2, seed=5))
    assert len(generated) == 4 and not (generated[0][1] == LEFTOVER).any()
    synthetic.assert_same_batches(generated, synthetic.tf_batches(dataset, 2, epochs=2, seed=5))


# ------------------------------------------------------------------------- evaluate, prepare

class _ConstantModel:
    """predict_batch's interface: every pixel is class 26 (car)."""
    image_shape = (HEIGHT, WIDTH)

    def __init__(self, label_set):
        self.label_set = label_set

    def predict(self, images):
        return np.full(images.shape[:3], 26, np.uint8)


def test_evaluation_scores_original_files_against_their_label_ids(tmp_path):
    _, _, paths = write_split(tmp_path, [original_label(), original_label(1)])
    image_paths, label_paths = [image for image, _ in paths], [label for _, label in paths]
    label_set = data_loader.get_label_set('cityscapes35')
    confusion = evaluate.confusion_over(_ConstantModel(label_set), image_paths, label_paths)
    truth = np.concatenate([original_train_ids().ravel(), original_train_ids(1).ravel()])
    expected = np.bincount(truth[truth != 255], minlength=label_set.num_classes)
    np.testing.assert_array_equal(confusion[:, 26], expected)
    assert confusion.sum() == expected.sum()


def test_evaluation_refuses_official_files_with_cityscapes35(tmp_path):
    _, _, [(image_path, label_path)] = write_split(tmp_path, [official_label()])
    model = _ConstantModel(data_loader.get_label_set('cityscapes35'))
    with pytest.raises(UserError) as error:
        evaluate.confusion_over(model, [image_path], [label_path])
    assert str(error.value) == official_message(label_path)


def test_prepare_writes_the_train_ids_of_original_files_which_then_train(tmp_path, capsys):
    source, out = tmp_path / 'source', tmp_path / 'prepared'
    images, labels, paths = write_split(source, [original_label()])
    label_set = data_loader.get_label_set('cityscapes35')
    assert prepare.prepare_split(images, labels, str(source), str(out), label_set,
                                 (HEIGHT, WIDTH), workers=1) == (1, 1)
    assert 'values outside the label set: %d' % LEFTOVER in capsys.readouterr().err
    (prepared,) = glob.glob(str(out / 'gtFine' / 'train' / '*' / '*_labelTrainIds.png'))
    np.testing.assert_array_equal(np.asarray(Image.open(prepared)), original_train_ids())
    dataset = data_loader.Dataset(str(out / 'leftImg8bit' / 'train'), str(out / 'gtFine'),
                                  label_set, (HEIGHT, WIDTH))
    np.testing.assert_array_equal(dataset.sample(0)[1], original_train_ids())


# ---------------------------------------------------------------------------------- main.py

def _train_flags(root, folder, *extra):
    return ['train', '-ip', os.path.join(str(root), 'leftImg8bit', 'train', '*', '*.png'),
            '-lp', os.path.join(str(root), 'gtFine', 'train'), '--label_set', 'cityscapes35',
            '--vgg_weights', 'none', '-ep', '1', '-bs', '2', '--image_shape', str(HEIGHT),
            str(WIDTH), '-cd', str(folder / 'ckpt'), '-sd', str(folder / 'summaries'),
            '-rd', str(folder / 'runs'), '--gpu', '0'] + list(extra)


@pytest.mark.end_to_end
def test_train_on_original_files_with_cityscapes35_exits_0(tmp_path, tiny_model, capsys):
    root = tmp_path / 'data'
    write_split(root, [original_label(seed) for seed in range(2)])
    _, val_labels, _ = write_split(root, [original_label(2)], 'val')
    flags = _train_flags(root, tmp_path, '--val_images_paths',
                         os.path.join(str(root), 'leftImg8bit', 'val', '*', '*.png'),
                         '--val_labels_paths', val_labels)
    assert main.main(flags, network=tiny_model) == 0
    output = capsys.readouterr().out
    assert 'training on 2 images (cityscapes35, 35 classes, %dx%d)' % (HEIGHT, WIDTH) in output
    assert 'val mean IoU' in output


@pytest.mark.end_to_end
def test_train_on_official_files_with_cityscapes35_exits_2_with_one_line(tmp_path, tiny_model,
                                                                         capsys):
    root = tmp_path / 'data'
    _, _, [(_, label_path)] = write_split(root, [official_label()])
    assert main.main(_train_flags(root, tmp_path, '--no_val'), network=tiny_model) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        'error: ' + official_message(label_path)
