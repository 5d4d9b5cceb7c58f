"""The datasets `--dataset` names: where each one's splits live and how it trains by default.
Plain tables, no imports beyond the standard library: main.py reads them to answer -h."""

# Where each dataset's splits live and how it trains by default. {root} is --data_root or the
# dataset's root; {split} is train, val or test, or the dataset's own name for it ('splits').
CITYSCAPES = dict(
    root='../cityscapes/data', prepared_dir='../cityscapes_prepared',
    images='{root}/leftImg8bit/{split}/*/*_leftImg8bit.png', labels='{root}/gtFine/{split}/',
    label_sets=('cityscapes', 'cityscapes35'), label_set='cityscapes', image_shape=(256, 512),
    scale_range=(0.5, 2.0), epochs=10, batch_size=5, learning_rate=1e-4, keep_prob=0.5,
    ckpt_dir='ckpt', summary_dir='summaries')
# Mapillary Vistas: images of many sizes, mostly 4:3, hence a 4:3 crop of 1.5x Cityscapes' pixels.
MAPILLARY = dict(
    root='../mapillary', prepared_dir='../mapillary_prepared',
    images='{root}/{split}/images/*.jpg', labels='{root}/{split}/labels/',
    splits={'train': 'training', 'val': 'validation', 'test': 'testing'},
    label_sets=('mapillary', 'mapillary_v2'), label_set='mapillary', image_shape=(384, 512),
    scale_range=(0.5, 2.0), epochs=10, batch_size=4, learning_rate=1e-4, keep_prob=0.5,
    ckpt_dir='ckpt_mapillary', summary_dir='summaries_mapillary')
# The demo trains from scratch on 2 CPU cores in minutes: small images, no dropout, and a
# narrower random scale, as three epochs leave little time to learn from much wilder crops.
DEMO = dict(
    images='{root}/leftImg8bit/{split}/*/*.png', labels='{root}/gtFine/{split}/',
    label_sets=('cityscapes', 'cityscapes35'), label_set='cityscapes', image_shape=(128, 256),
    scale_range=(0.75, 1.5), epochs=3, batch_size=8, learning_rate=1e-4, keep_prob=1.0,
    ckpt_dir='ckpt_demo', summary_dir='summaries_demo', vgg_weights='none')
DEFAULTS = {'cityscapes': CITYSCAPES, 'mapillary': MAPILLARY, 'demo': DEMO}
DATASETS = tuple(DEFAULTS)


def split_paths(defaults, split, data_root=None):
    """(images glob, labels glob) of a split ('train', 'val' or 'test') of a dataset whose
    defaults (one of DEFAULTS, with its root) are given; data_root replaces the root."""
    names = dict(root=data_root or defaults['root'],
                 split=defaults.get('splits', {}).get(split, split))
    return defaults['images'].format(**names), defaults['labels'].format(**names)
