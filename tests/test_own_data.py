"""Your own data, end to end: a tiny model trains, predicts, evaluates, freezes, optimises and
makes a video on a folder of images and masks with a table of one's own (index, palette and
colour masks), on KITTI Road, CamVid and BDD100K in their real layouts, and across label sets;
what evaluate counts is the truth of the files (devkit-style KITTI, CamVid's void, BDD's 255)."""
import glob
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import data_loader
import helper
import main
import synthetic
import test_video
from roadseg import file_pairs, model_dir
from roadseg.data import demo_layouts

SHAPE = ('--image_shape', '64', '96')


def _main(work, *flags, network=True):
    """main.py with flags, its folders under work; returns the one new run folder."""
    runs = os.path.join(str(work), 'runs')
    before = set(glob.glob(os.path.join(runs, '*')))
    argv = list(flags) + ['--gpu', '0', '-rd', runs, '-cd', os.path.join(str(work), 'ckpt'),
                          '-sd', os.path.join(str(work), 'summaries')]
    assert main.main(argv, network=synthetic.TINY_NETWORK if network else None) == 0
    (run_dir,) = set(glob.glob(os.path.join(runs, '*'))) - before
    return run_dir


def _train(work, *flags):
    model = os.path.join(str(work), 'model')
    _main(work, 'train', *SHAPE, '-ep', '1', '-bs', '2', '--vgg_weights', 'none',
          '--seed', '1', '-md', model, *flags)
    return model


def _metrics(work, *flags):
    run_dir = _main(work, 'evaluate', *flags, network=False)
    return helper.read_json(os.path.join(run_dir, 'metrics.json'))


def _scored_pixels(label_paths, label_set):
    """Pixels of the files that are not ignored, read as the label set says."""
    return sum(int(np.count_nonzero(data_loader.to_train_ids(
        data_loader.read_label(path, label_set), path, label_set) != 255))
        for path in label_paths)


@pytest.mark.end_to_end
@pytest.mark.parametrize('label_format', ['index', 'palette', 'color'])
def test_a_folder_with_a_table_of_ones_own_trains_and_serves_after_the_table_is_gone(
        tmp_path, label_format):
    root = demo_layouts.write_folder(str(tmp_path / 'data'), label_format)
    table = str(tmp_path / 'my_table.json')
    shutil.copy(os.path.join(root, 'table.json'), table)
    images, masks = (os.path.join(root, 'val', folder) for folder in ('images', 'masks'))
    model = _train(tmp_path, '--dataset', 'folder', '--label_set', table,
                   '-ip', os.path.join(root, 'train', 'images'),
                   '-lp', os.path.join(root, 'train', 'masks'),
                   '--val_images_paths', images, '--val_labels_paths', masks)
    label_set = data_loader.get_label_set(table)
    os.remove(table)
    config = model_dir.read_model_config(model)
    assert config['label_set'] == 'my_roads'
    assert [row['name'] for row in config['label_table']['classes']][:3] == ['road', 'car',
                                                                             'sky']
    metrics = _metrics(tmp_path, '--dataset', 'folder', '-md', model, '-ip', images,
                       '-lp', masks)
    assert metrics['class_names'] == ['road', 'car', 'sky']
    assert metrics['num_pixels'] == _scored_pixels(sorted(glob.glob(masks + '/*.png')),
                                                   label_set)
    run_dir = _main(tmp_path, 'predict', '--dataset', 'folder', '-md', model, '-ip', images,
                    network=False)
    assert len(glob.glob(os.path.join(run_dir, 'overlays', '*.png'))) == len(os.listdir(images))


@pytest.mark.end_to_end
def test_a_model_of_ones_own_table_freezes_optimises_and_makes_a_video_without_the_file(
        tmp_path):
    root = demo_layouts.write_folder(str(tmp_path / 'data'), 'color')
    table = str(tmp_path / 'table.json')
    shutil.copy(os.path.join(root, 'table.json'), table)
    model = _train(tmp_path, '--dataset', 'folder', '--label_set', table, '--no_val',
                   '-ip', os.path.join(root, 'train', 'images'),
                   '-lp', os.path.join(root, 'train', 'masks'))
    os.remove(table)
    frozen, optimised = str(tmp_path / 'frozen'), str(tmp_path / 'optimised')
    assert main.main(['freeze', '-md', model, '-fd', frozen, '--gpu', '0']) == 0
    assert main.main(['optimise', '-fd', frozen, '-od', optimised, '--gpu', '0']) == 0
    for folder in (frozen, optimised):
        assert model_dir.read_model_config(folder)['label_table'] == (
            model_dir.read_model_config(model)['label_table'])
    video_in = str(tmp_path / 'drive.mp4')
    test_video.make_video(video_in, frames=3, height=64, width=96)
    video_out = str(tmp_path / 'out.mp4')
    assert main.main(['video', '-md', optimised, '-vi', video_in, '-vo', video_out,
                      '--gpu', '0', '-rd', str(tmp_path / 'runs')]) == 0
    assert os.path.getsize(video_out) > 0


@pytest.mark.end_to_end
def test_kitti_road_holds_out_validation_and_evaluate_scores_only_the_evaluated_area(tmp_path):
    root = demo_layouts.write_kitti_road(str(tmp_path / 'data_road'))
    model = _train(tmp_path, '--dataset', 'kitti_road', '--data_root', root)
    config = model_dir.read_model_config(model)
    truth = sorted(glob.glob(os.path.join(root, 'training', 'gt_image_2', '*_road_*.png')))
    images = sorted(glob.glob(os.path.join(root, 'training', 'image_2', '*.png')))
    val_images, val_truth = file_pairs.held_out(images, truth, 0.1, 'val')
    assert val_images and config['train_images'] == len(images) - len(val_images)
    metrics = _metrics(tmp_path, '--dataset', 'kitti_road', '--data_root', root, '-md', model)
    assert metrics['class_names'] == ['road', 'not road']
    # the devkit's truth: black "don't care" pixels are not scored (not called road)
    assert metrics['num_pixels'] == sum(
        int(np.count_nonzero(demo_layouts.kitti_truth(path) != 255)) for path in val_truth)
    run_dir = _main(tmp_path, 'predict', '--dataset', 'kitti_road', '--data_root', root,
                    '-md', model, network=False)
    testing = glob.glob(os.path.join(root, 'testing', 'image_2', '*.png'))
    assert len(glob.glob(os.path.join(run_dir, 'overlays', '*.png'))) == len(testing)


@pytest.mark.end_to_end
def test_kitti_lane_trains_on_the_um_lane_truth_only(tmp_path):
    root = demo_layouts.write_kitti_road(str(tmp_path / 'data_road'))
    model = _train(tmp_path, '--dataset', 'kitti_road', '--data_root', root,
                   '--label_set', 'kitti_lane', '--val_fraction', '0')
    lanes = glob.glob(os.path.join(root, 'training', 'gt_image_2', 'um_lane_*.png'))
    assert model_dir.read_model_config(model)['train_images'] == len(lanes)


@pytest.mark.end_to_end
def test_camvid_trains_from_its_folders_and_evaluates_from_its_list_file_ignoring_void(
        tmp_path):
    root = demo_layouts.write_camvid(str(tmp_path / 'CamVid'))
    model = _train(tmp_path, '--dataset', 'camvid', '--data_root', root)
    metrics = _metrics(tmp_path, '--dataset', 'camvid', '-md', model,
                       '-ip', os.path.join(root, 'test.txt'))
    annotations = sorted(glob.glob(os.path.join(root, 'testannot', '*.png')))
    assert metrics['num_pixels'] == sum(
        int(np.count_nonzero(np.asarray(Image.open(path)) != demo_layouts.CAMVID_VOID))
        for path in annotations)
    assert len(metrics['per_class_iou']) == 11


@pytest.mark.end_to_end
def test_a_bdd100k_model_evaluates_on_the_legacy_layout_and_on_camvid_through_a_label_map(
        tmp_path):
    model = _train(tmp_path, '--dataset', 'bdd100k', '--data_root',
                   demo_layouts.write_bdd100k(str(tmp_path / 'bdd100k')))
    legacy = demo_layouts.write_bdd100k(str(tmp_path / 'bdd_legacy'), legacy=True)
    metrics = _metrics(tmp_path, '--dataset', 'bdd100k', '--data_root', legacy, '-md', model)
    masks = sorted(glob.glob(os.path.join(legacy, 'seg', 'labels', 'val', '*_train_id.png')))
    assert metrics['num_pixels'] == sum(
        int(np.count_nonzero(np.asarray(Image.open(path)) != 255)) for path in masks)
    camvid = demo_layouts.write_camvid(str(tmp_path / 'CamVid'))
    label_map = str(tmp_path / 'map.json')
    helper.write_json(label_map, {'sidewalk': 'pavement', 'vegetation': 'tree', 'person':
                                  'pedestrian', 'traffic sign': 'sign symbol', 'rider': None})
    metrics = _metrics(tmp_path, '--dataset', 'camvid', '--data_root', camvid, '-md', model,
                       '--label_map', label_map)
    assert 'pavement' in metrics['per_class_iou'] and 'bicyclist' not in metrics['per_class_iou']
    assert metrics['unmatched_data_classes'] == ['bicyclist']
    assert 'rider' in metrics['unmatched_model_classes']
    assert 'terrain' in metrics['unmatched_model_classes']  # no CamVid class of that name


@pytest.mark.end_to_end
def test_prepare_copies_kitti_road_and_a_folder_so_that_training_reads_the_copies(tmp_path):
    kitti = demo_layouts.write_kitti_road(str(tmp_path / 'data_road'))
    copy = str(tmp_path / 'data_road_prepared')
    assert main.main(['prepare', '--dataset', 'kitti_road', '--data_root', kitti,
                      '--prepared_dir', copy, '--image_shape', '64', '192']) == 0
    truth = glob.glob(os.path.join(copy, 'training', 'gt_image_2', '*_road_*_labelTrainIds.png'))
    assert len(truth) == len(glob.glob(os.path.join(kitti, 'training', 'gt_image_2', '*_road_*')))
    model = _train(tmp_path / 'kitti', '--dataset', 'kitti_road', '--data_root', copy)
    assert model_dir.read_model_config(model)['train_images'] == model_dir.read_model_config(
        _train(tmp_path / 'kitti_source', '--dataset', 'kitti_road', '--data_root', kitti)
    )['train_images']
    root = demo_layouts.write_folder(str(tmp_path / 'own'), 'color')
    flags = ['--dataset', 'folder', '--label_set', os.path.join(root, 'table.json'),
             '--image_suffix', '.jpg', '--label_suffix', '.png']
    own_copy = str(tmp_path / 'own_prepared')
    assert main.main(['prepare', *flags, '-ip', os.path.join(root, 'train', 'images'),
                      '-lp', os.path.join(root, 'train', 'masks'),
                      '--prepared_dir', own_copy] + list(SHAPE)) == 0
    masks = glob.glob(os.path.join(own_copy, 'masks', '*_labelTrainIds.png'))
    assert len(masks) == 4
    assert Image.open(masks[0]).mode == 'L'
    _train(tmp_path / 'own', *flags, '--no_val', '-ip', os.path.join(own_copy, 'images'),
           '-lp', os.path.join(own_copy, 'masks'))


@pytest.mark.end_to_end
def test_the_labels_action_writes_a_table_that_trains_and_refuses_to_overwrite(tmp_path,
                                                                              capsys):
    table = str(tmp_path / 'camvid.csv')
    assert main.main(['labels', '--label_set', 'camvid', '--output', table]) == 0
    before = open(table).read()
    assert main.main(['labels', '--label_set', 'camvid', '--output', table]) == 2
    assert open(table).read() == before
    assert '%s exists' % table in capsys.readouterr().err
    root = demo_layouts.write_camvid(str(tmp_path / 'CamVid'))
    model = _train(tmp_path, '--dataset', 'camvid', '--data_root', root, '--label_set', table)
    assert model_dir.read_model_config(model)['label_set'] == 'camvid_custom'  # CSV: no name
    assert main.main(['labels', '-md', model]) == 0
    assert 'pedestrian' in capsys.readouterr().out


@pytest.mark.end_to_end
@pytest.mark.parametrize('table_text, message', [
    ('{"classes": [{"name": "road", "values": [1]}, {"name": "road", "values": [2]}]}',
     'row 2 (road): name already in row 1'),
    ('{"classes": [{"name": "road", "values": [1], "color": "#12345"}]}', 'malformed colour'),
    ('{"classes": [', 'is not valid JSON')])
def test_a_table_that_does_not_parse_stops_train_with_one_line_naming_it(tmp_path, capsys,
                                                                         table_text, message):
    table = str(tmp_path / 'bad.json')
    open(table, 'w').write(table_text)
    root = demo_layouts.write_folder(str(tmp_path / 'own'), 'index')
    code = main.main(['train', '--dataset', 'folder', '--label_set', table, '--gpu', '0',
                      '-ip', os.path.join(root, 'train', 'images'),
                      '-lp', os.path.join(root, 'train', 'masks'), '-rd', str(tmp_path / 'r')])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert table in err and message in err
    assert not os.path.exists(str(tmp_path / 'r'))


@pytest.mark.end_to_end
def test_a_list_file_naming_a_missing_file_stops_evaluate_with_the_line(tmp_path, capsys):
    root = demo_layouts.write_camvid(str(tmp_path / 'CamVid'))
    os.remove(os.path.join(root, 'testannot', sorted(os.listdir(os.path.join(
        root, 'testannot')))[1]))
    code = main.main(['evaluate', '--dataset', 'camvid', '-ip', os.path.join(root, 'test.txt'),
                      '--gpu', '0', '-rd', str(tmp_path / 'r')])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert 'test.txt line 2: label' in err and 'not found' in err
