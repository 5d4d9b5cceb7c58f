"""The command line's flags, in the groups `-h` shows, and the parser that turns them into an
argparse namespace (main.py turns that into specs). Loads no TensorFlow: -h answers at once."""
import argparse
import os
import sys

from helper import PRECISIONS, UserError
from roadseg.data.datasets import DATASETS

OPTIMIZERS = ('adam', 'sgd')
SCHEDULES = ('constant', 'poly', 'cosine', 'step')
PIPELINES = ('tfdata', 'generator')
LABEL_FORMATS = ('auto', 'index', 'palette', 'color', 'kitti', 'train_id')
SAVED_PROBABILITIES = ('confidence', 'all')
# What each action does, as `-h` and a bare `python main.py` list them.
ACTION_HELP = {
    'train': 'trains, resumes, validates every epoch, exports a SavedModel',
    'predict': 'colour overlays and label PNGs of images',
    'evaluate': 'IoU and accuracies over a labelled split, with a report',
    'video': 'a segmented copy of a video',
    'prepare': 'a resized copy of the train and val splits, labels as training ids',
    'freeze': 'a checkpoint or SavedModel as one constant graph',
    'optimise': '8-bit weights and an int8 TFLite model of a frozen graph',
    'labels': 'lists a label table, or writes it to --output as a starting point',
}


class _Parser(argparse.ArgumentParser):
    """argparse whose errors (an unknown action, dataset or choice, a value that is not a
    number) end as the tool's own do: one line, exit code 2, through main()."""

    def error(self, message):
        raise UserError(message)


def _device_flags(parser):
    group = parser.add_argument_group('devices', 'the devices and arithmetic of every action')
    add = group.add_argument
    add('-g', '--gpu', type=int, default=1, help='GPUs to use; 0 runs on the CPU')
    add('-gm', '--gpu_mem', type=float, default=0.9, help='fraction of GPU memory, in (0, 1]')
    add('-x', '--xla', type=int, default=0, choices=(0, 1, 2), help='XLA JIT level')
    add('--precision', default='fp32', choices=PRECISIONS,
        help='train, predict, evaluate, video: fp32, bf16 (CPU mixed precision) or fp16 (GPU '
             'mixed precision); the TFLite model ignores it')
    add('--cpu_replicas', type=int, default=1,
        help='train: replicate over N virtual CPU devices as over N GPUs (no GPU, tests)')


def _data_flags(parser):
    group = parser.add_argument_group('data', 'images, labels and datasets')
    add = group.add_argument
    add('-ip', '--images_paths', help='glob or folder of images (train: training images), or a '
                                      '.txt list of `image label` lines')
    add('-lp', '--labels_paths', help='glob or folder of label images')
    add('--dataset', choices=DATASETS, default='cityscapes',
        help='cityscapes, mapillary, kitti_road, camvid, bdd100k, demo (embedded), or folder '
             '(your own images and masks, named by -ip/-lp)')
    add('--data_root', help='the dataset\'s top folder as it unpacks, or a prepared copy '
                            '(default ../cityscapes/data, ../mapillary, ../data_road, '
                            '../CamVid, ../bdd100k; demo: data/demo)')
    add('--label_set', help='a table file (.json or .csv, see the README) or a built-in set: '
                            'cityscapes (19 classes), cityscapes35 (all labels), mapillary '
                            '(Vistas v1.2, 65 classes), mapillary_v2 (v2.0, 123 classes), '
                            'kitti_road, kitti_lane, camvid')
    add('--label_format', choices=LABEL_FORMATS, default='auto',
        help='how label files mark classes: index (values), palette (PNG palette indices), '
             'color (RGB colours of the table), kitti (the KITTI devkit\'s planes), train_id '
             '(the table\'s training ids, as BDD100K stores them); auto: by the dataset, the '
             'PNG\'s mode and the table')
    add('--reduce_zero_label', action='store_true',
        help='label value 0 means unlabelled: ignore it and shift the other values down by one')
    add('--image_suffix', help='pair images and labels on the name before these suffixes, e.g. '
                               '_leftImg8bit.png or .jpg (default: the extension)')
    add('--label_suffix', help='e.g. _gtFine_labelTrainIds.png or .png (default: the extension '
                               'and the Cityscapes suffixes)')
    add('--val_fraction', type=float,
        help='kitti_road, folder: the part of training held out for validation when no val '
             'split is given (0.1; 0 trains on everything)')
    add('--image_shape', type=int, nargs=2, metavar=('H', 'W'),
        help='network input size, multiples of 32 (cityscapes 256 512, mapillary and folder '
             '384 512, kitti_road 160 576, camvid 352 480, bdd100k 288 512, demo 128 256); '
             'freeze: the size the exported models run at (default: the training size)')
    add('--label_map', help='evaluate: a JSON file {"model class": "data class" or null} pairing '
                            'the model\'s classes with those of --label_set when they differ '
                            '(classes of the same name pair by themselves)')
    add('--split', help='dataset split for predict (test) and evaluate (val)')
    add('--val_images_paths', help='glob or folder of validation images, or a .txt list '
                                   '(default: the val split)')
    add('--val_labels_paths', help='glob or folder of validation labels')
    add('--skip_bad_files', action='store_true',
        help='train: skip unreadable images and labels with a warning instead of stopping')


def _training_flags(parser):
    group = parser.add_argument_group('training', 'train: the recipe')
    add = group.add_argument
    add('-ep', '--epochs', type=int, help='epochs to train to (demo 3, else 10)')
    add('-bs', '--batch_size', type=int, help='images per step (cityscapes 5, mapillary 4, demo 8)')
    add('-lr', '--learning_rate', type=float,
        help='learning rate (1e-4), the start of --lr_schedule')
    add('--optimizer', choices=OPTIMIZERS, default='adam',
        help='adam, or sgd with --momentum')
    add('--momentum', type=float, default=0.9, help='sgd\'s momentum, in [0, 1)')
    add('--lr_schedule', choices=SCHEDULES, default='constant',
        help='the rate over the whole training: constant; poly: (1 - t/T)^--lr_power down to '
             '--end_learning_rate; cosine: half a cosine down to it; step: divided by 10 at '
             'each of --lr_step_epochs')
    add('--lr_power', type=float, default=0.9, help='poly\'s exponent')
    add('--end_learning_rate', type=float, default=0.0, help='where poly and cosine end')
    add('--lr_step_epochs', type=int, nargs='+', metavar='EPOCH',
        help='step: the epochs after which the rate is divided by 10')
    add('--warmup_steps', type=int, default=0,
        help='the rate rises linearly from 0 over the first N steps')
    add('--accumulate', type=int, default=1, metavar='N',
        help='each step runs N batches of -bs images one after another and makes one update of '
             'them all: the update of N x -bs images, the activations of -bs')
    add('-kp', '--keep_prob', type=float, help='dropout keep probability (demo 1.0, else 0.5)')
    add('--pipeline', choices=PIPELINES, default='tfdata', help='input pipeline')
    add('--augment', dest='augment', action='store_true',
        help='train on random scales, crops and flips (the default)')
    add('--no_augment', dest='augment', action='store_false',
        help='train on the centre crop of each image scaled to cover --image_shape')
    group.set_defaults(augment=True)
    add('--scale_range', type=float, nargs=2, metavar=('LO', 'HI'),
        help='random scale on top of covering --image_shape (demo 0.75 1.5, else 0.5 2.0)')
    add('--photometric', action='store_true',
        help='also jitter brightness, contrast and saturation while training')
    add('--vgg_weights', help='Udacity vgg folder, Keras VGG16 .h5, or none (from scratch); '
                              'default: download Udacity vgg.zip (demo: none)')
    add('--init_from', metavar='PATH',
        help='fine-tune: the first weights from a model folder or checkpoint folder this tool '
             'wrote, of any label set (the score layers start afresh for another number of '
             'classes); ignored when --ckpt_dir holds checkpoints to resume')
    add('--weight_decay', type=float, default=5e-4, help='L2 weight decay')
    add('--class_weights', choices=('none', 'inverse_freq', 'median_freq'), default='none')
    add('--train_upsampling', action='store_true',
        help='learn the transposed convolutions instead of keeping them bilinear')
    add('--no_val', action='store_true', help='skip validation at the end of each epoch')
    add('--keep_best', dest='keep_best', action='store_true',
        help='write the best model so far, by val mean IoU, beside the model (the default: '
             'runs/<timestamp>/best_model, or <model_dir>_best with -md)')
    add('--no_keep_best', dest='keep_best', action='store_false', help='do not')
    group.set_defaults(keep_best=True)
    add('--early_stop', type=int, default=0, metavar='N',
        help='stop after N validations without a better val mean IoU (0: never)')
    add('--seed', type=int, help='makes a CPU run reproducible')


def _folder_flags(parser):
    group = parser.add_argument_group('folders', 'where runs, checkpoints, summaries and models go')
    add = group.add_argument
    add('-rd', '--runs_dir', default='runs', help='run folders go here')
    add('-cd', '--ckpt_dir', help='checkpoints (ckpt, ckpt_mapillary, ckpt_demo)')
    add('-sd', '--summary_dir', '--summaries_dir', dest='summary_dir',
        help='TensorBoard logs (summaries, summaries_mapillary, summaries_demo)')
    add('-md', '--model_dir', help='train: SavedModel output (default runs/<timestamp>/model); '
                                   'predict, evaluate, video: the model (default: the newest '
                                   'under runs/)')
    add('-fd', '--frozen_model_dir', default='frozen_model', help='frozen model folder')
    add('-od', '--optimised_model_dir', default='optimised_model',
        help='optimised model folder')
    add('--ckpt_every', type=int, default=500, help='steps between checkpoints')
    add('--keep_checkpoints', type=int, default=3,
        help='checkpoints kept (each holds the weights and Adam\'s two moments: three times '
             'the model\'s size)')
    add('--summary_every', type=int, default=10, help='steps between scalar summaries')
    add('--image_summary_every', type=int, default=200,
        help='steps between image summaries (also at the first step and each epoch\'s end)')


def _cluster_flags(parser):
    group = parser.add_argument_group('cluster', 'train on several machines')
    add = group.add_argument
    add('--ps_hosts', help='train on a cluster: parameter servers, host:port,host:port')
    add('--worker_hosts', help='train on a cluster: workers, host:port,... (the first is the '
                               'chief); default: the TF_CONFIG environment variable')
    add('--job_name', choices=('ps', 'worker'), help='train on a cluster: this task\'s job')
    add('--task_index', type=int, default=0, help='train on a cluster: this task\'s index')
    add('--cluster_timeout', type=float, default=180, metavar='SECONDS',
        help='train on a cluster: a worker whose parameter server has not answered for this '
             'long stops with exit code 2; the same commands resume (default %(default)g)')


def _output_flags(parser):
    group = parser.add_argument_group('predict, video, prepare, optimise, labels',
                                      'what the other actions write')
    add = group.add_argument
    add('--allow_any_op', action='store_true',
        help='load a graph.pb holding operations this tool never writes (file access, '
             'Python): only for a model from a source you trust')
    add('--keep_size', action='store_true',
        help='predict at native resolution (padded to a multiple of 32) instead of resizing')
    add('--save_labels', action='store_true',
        help='predict: also write trainIds (and Cityscapes labelIds) PNGs')
    add('--scales', type=float, nargs='+', default=[1.0], metavar='S',
        help='predict, evaluate, video: run the model at each of these scales of the image '
             '(resized, or native with --keep_size) and average the softmax probabilities')
    add('--flip', action='store_true',
        help='predict, evaluate, video: also run each scale mirrored, and average that too')
    add('--tile', type=int, nargs=2, metavar=('H', 'W'),
        help='predict, evaluate, video: predict in overlapping HxW windows (multiples of 32), '
             'the overlaps\' probabilities averaged: the image is never in the model at once')
    add('--tile_overlap', type=float, default=1 / 3, metavar='F',
        help='the fraction of --tile that neighbouring windows share, in [0, 1) (1/3)')
    add('--save_probs', nargs='?', const='confidence', choices=SAVED_PROBABILITIES,
        help='predict, evaluate: write the predicted class\'s probability as a 16-bit PNG '
             '(confidences/); all: also every class\'s, float16 .npz (probabilities/)')
    add('-vi', '--video_file_in', help='video to segment (demo: the demo video)')
    add('-vo', '--video_file_out',
        help='output video (default runs/<timestamp>/<name>_segmented.mp4)')
    add('-vs', '--video_start_second', type=float, help='start of the sub-clip, seconds')
    add('-ve', '--video_end_second', type=float, help='end of the sub-clip, seconds')
    add('--prepared_dir', help='prepare: output folder (default ../cityscapes_prepared, '
                               '../mapillary_prepared; demo: data/demo_prepared)')
    add('--prepare_shape', type=int, nargs=2, metavar=('H', 'W'),
        help='prepare: resize so that images cover HxW (default: --image_shape times the top '
             'of --scale_range); never enlarged')
    add('--workers', type=int, default=os.cpu_count() or 1,
        help='prepare: images resized in parallel')
    add('--output', help='labels: the .json or .csv file to write the label table to')
    add('--calibration_images', help='optimise: glob of images calibrating the int8 TFLite '
                                     'model (default: 100 training images of the model)')
    add('--no_onnx', dest='onnx', action='store_false',
        help='optimise: write no model.onnx (the float model for ONNX Runtime)')


def check_positive(args, names):
    """Each named flag, when given, is at least 1."""
    for name in names:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError('--%s %d must be at least 1' % (name, getattr(args, name)))


def check_scale_range(scale_range):
    """0 < LO <= HI."""
    low, high = scale_range
    if not 0 < low <= high:
        raise UserError('--scale_range %g %g: need 0 < LO <= HI' % (low, high))


def check_schedule(args):
    """The optimiser's and the schedule's flags, each a one-line error naming the value."""
    if not 0 <= args.momentum < 1:
        raise UserError('--momentum %g is outside [0, 1)' % args.momentum)
    if args.lr_power <= 0:
        raise UserError('--lr_power %g must be positive' % args.lr_power)
    if args.end_learning_rate < 0:
        raise UserError('--end_learning_rate %g is negative' % args.end_learning_rate)
    if args.early_stop < 0:
        raise UserError('--early_stop %d is negative' % args.early_stop)
    if args.early_stop and args.no_val:
        raise UserError('--early_stop needs the validation that --no_val skips')
    if args.warmup_steps < 0:
        raise UserError('--warmup_steps %d is negative' % args.warmup_steps)
    if (args.lr_schedule == 'step') != bool(args.lr_step_epochs):
        raise UserError('--lr_step_epochs goes with --lr_schedule step, and step needs it')
    for epoch in args.lr_step_epochs or ():
        if not 0 < epoch < args.epochs:
            raise UserError('--lr_step_epochs %d is not between 0 and --epochs %d'
                            % (epoch, args.epochs))


def _actions_listing(actions):
    width = max(len(name) for name in actions)
    return 'actions:\n' + '\n'.join('  %-*s  %s' % (width, name, ACTION_HELP[name])
                                     for name in actions)


def parse_args(actions, argv=None):
    """The namespace of argv (default: the command line's) for one of actions, the names
    of ACTION_HELP main.py runs. No arguments at all print the full usage, every action and
    flag, to stderr and are a UserError."""
    parser = _Parser(
        description='Train and run FCN-8s/VGG16 semantic segmentation of road scenes.',
        usage='python main.py ACTION [flags]', epilog=_actions_listing(actions),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=sorted(actions), help='what to do, listed below')
    for add_flags in (_device_flags, _data_flags, _training_flags, _folder_flags,
                      _cluster_flags, _output_flags):
        add_flags(parser)
    parser.add_argument('--debug', action='store_true',
                        help='show full tracebacks and TensorFlow\'s start-up logs')
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help(sys.stderr)
        raise UserError('no action given: python main.py ACTION [flags], ACTION one of %s'
                        % ', '.join(actions))
    return parser.parse_args(argv)
