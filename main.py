"""FCN-8s/VGG16 semantic segmentation of road scenes: the command-line driver.

    python main.py train --dataset demo
    python main.py train --gpu=1 --xla=2 -ep=10 -bs=10 -lr=0.00001
"""
import dataclasses
import glob
import os
import sys
import traceback

# TensorFlow's C++ start-up chatter (CUDA probing, CPU features) hides the tool's own output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def _runs_a_model_only(args):
    """predict, video and evaluate without TensorBoard summaries: they need TensorFlow's
    runtime, not its whole API (see roadseg.tf_runtime)."""
    return args.action in ('predict', 'video', 'evaluate') and not getattr(
        args, 'summary_dir', None)


def _needs_tensorflow(args):
    """False for the TFLite or ONNX model run only, by LiteRT or ONNX Runtime: TensorFlow's
    import would be most of it."""
    model = getattr(args, 'model_dir', None) or ''
    return not (_runs_a_model_only(args) and model.endswith(('.tflite', '.onnx')))


def _start_tensorflow(args):
    """Imports TensorFlow (its runtime alone to run a model), in graph mode (placeholders,
    sessions, Savers)."""
    if _runs_a_model_only(args):
        tf = tf_runtime.install_runtime()
    else:
        tf = tf_runtime.import_tensorflow()
    tf.compat.v1.disable_eager_execution()
    if not args.debug:  # deprecation notices of the tf.compat.v1 API the tool is built on
        tf.get_logger().setLevel('ERROR')


from helper import UserError, quiet_native_logs  # noqa: E402  (after the setting above)
from roadseg import flags, tf_runtime  # noqa: E402
from roadseg.data import datasets  # noqa: E402

def _dataset_defaults(args):
    """The defaults of args.dataset, with its paths; the demo is generated on first use."""
    if args.dataset != 'demo':
        return datasets.DEFAULTS[args.dataset]
    from roadseg.data import demo_data
    root = args.data_root or demo_data.ensure_demo_dataset()
    return dict(datasets.DEMO, root=root, prepared_dir=root.rstrip('/\\') + '_prepared',
                video=demo_data.demo_video_path(root))


def _split_paths(args, split, defaults):
    """(images, labels) globs: -ip/-lp when given, else the dataset's split."""
    if args.images_paths is not None:
        return args.images_paths, args.labels_paths
    return datasets.split_paths(defaults, split, args.data_root, args.label_set)


def _val_fraction(args, defaults):
    fraction = args.val_fraction if args.val_fraction is not None else defaults.get(
        'val_fraction', 0.0)
    if not 0 <= fraction < 1:
        raise UserError('--val_fraction %g is outside [0, 1)' % fraction)
    return fraction


def _holds_out(args, defaults):
    """Whether validation is a held-out part of the training files: a dataset that ships no
    val split, or training files without validation ones and a --val_fraction."""
    if args.images_paths is None and args.val_images_paths is None:
        splits = defaults.get('splits', {})
        return 'val_fraction' in defaults and splits.get('val') == splits.get('train')
    return args.val_images_paths is None and (args.val_fraction is not None
                                              or 'val_fraction' in defaults)


def _pairs(args, images, labels, part=None):
    """(image_paths, label_paths) of globs, folders or a list file, paired by --image_suffix
    and --label_suffix; part 'train' or 'val': that part of them (args.held_out)."""
    import data_loader
    from roadseg import file_pairs
    pairs = data_loader.find_pairs(images, labels, args.image_suffix, args.label_suffix)
    if not part or not args.held_out:
        return pairs
    kept = file_pairs.held_out(*pairs, args.held_out, part)
    if not kept[0]:
        raise UserError('holding out --val_fraction %g of the %d images under %s leaves no '
                        '%s image' % (args.held_out, len(pairs[0]), images, part))
    return kept


def _label_set(args):
    """The label set of --label_set (a name or a table file), reading label files as
    --label_format and --reduce_zero_label say, checked against --dataset."""
    import data_loader
    if args.label_set is None:
        raise UserError('--dataset %s needs --label_set: a table file (.json or .csv) or a '
                        'built-in set' % args.dataset)
    label_set = data_loader.get_label_set(args.label_set)
    allowed = datasets.DEFAULTS[args.dataset]['label_sets']
    if allowed and label_set.name in data_loader.LABEL_SETS and label_set.name not in allowed:
        raise UserError('--label_set %s does not fit --dataset %s (use %s, or a table file)'
                        % (label_set.name, args.dataset, ' or '.join(allowed)))
    return _with_encoding(args, label_set)


def _with_encoding(args, label_set):
    """The label set reading files as --label_format says, else as the dataset stores them."""
    import data_loader
    label_format = (args.label_format if args.label_format != 'auto' else
                    datasets.DEFAULTS[args.dataset].get('label_format'))
    return data_loader.with_encoding(label_set, label_format, args.reduce_zero_label)


def _apply_train_defaults(args):
    """Fills the training flags left unset from the dataset's defaults and checks them."""
    defaults = _dataset_defaults(args)
    for key in ('label_set', 'image_shape', 'scale_range', 'epochs', 'batch_size',
                'learning_rate', 'keep_prob', 'ckpt_dir', 'summary_dir', 'vgg_weights'):
        if getattr(args, key, None) is None:
            setattr(args, key, defaults.get(key))
    flags.check_scale_range(args.scale_range)
    if (args.images_paths is not None and args.labels_paths is None
            and not file_pairs.is_list_file(args.images_paths)):
        raise UserError('-ip/--images_paths given without -lp/--labels_paths')
    args.held_out = _val_fraction(args, defaults) if _holds_out(args, defaults) else 0.0
    if not args.held_out and args.images_paths is None and args.val_images_paths is None:
        args.val_images_paths, args.val_labels_paths = _split_paths(args, 'val', defaults)
    args.images_paths, args.labels_paths = _split_paths(args, 'train', defaults)
    flags.check_positive(args, ('epochs', 'batch_size', 'ckpt_every', 'keep_checkpoints',
                           'summary_every', 'image_summary_every', 'cpu_replicas', 'accumulate'))
    if not 0 < args.keep_prob <= 1:
        raise UserError('--keep_prob %g is outside (0, 1]' % args.keep_prob)
    if args.learning_rate <= 0:
        raise UserError('--learning_rate %g must be positive' % args.learning_rate)
    flags.check_schedule(args)
    return args


def _datasets(args, label_set):
    """(training set, validation set or None) of the filled-in training flags."""
    import data_loader
    import helper
    if args.dataset != 'demo' and not glob.glob(args.images_paths):
        raise UserError('no images match %s: put %s there, pass --data_root or -ip/-lp, or '
                        'train on the embedded demo with --dataset demo'
                        % (args.images_paths, datasets.DEFAULTS[args.dataset]['title']))
    augment = (data_loader.AugmentConfig(tuple(args.scale_range), True, args.photometric)
               if args.augment else None)  # the training set only: validation never augments
    train_set = data_loader.Dataset(
        args.images_paths, args.labels_paths, label_set, args.image_shape, augment,
        args.skip_bad_files, _pairs(args, args.images_paths, args.labels_paths, 'train'))
    val_set = None
    if not args.no_val and (args.val_images_paths or args.held_out):
        try:
            val_images, val_labels = ((args.images_paths, args.labels_paths) if args.held_out
                                      else (args.val_images_paths, args.val_labels_paths))
            val_set = data_loader.Dataset(
                val_images, val_labels, label_set, args.image_shape,
                skip_bad_files=args.skip_bad_files,
                pairs=_pairs(args, val_images, val_labels, 'val'))
        except UserError as error:
            helper.warn('no validation: %s' % error)
    return train_set, val_set


def _seed(args, task):
    """--seed (and deterministic ops), else a fresh one; the workers of a cluster without
    --seed compute the same one, as they must shuffle alike."""
    import numpy as np
    if args.seed is not None:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
        return args.seed
    if task is not None:
        return task.shared_seed()
    return int(np.random.SeedSequence().entropy % 2**31)


def _training_specs(args, network):
    """(Recipe, Logbook, DevicePlan) of the filled-in training flags."""
    from roadseg import specs
    recipe = specs.Recipe(args.epochs, args.batch_size * args.accumulate, args.learning_rate,
                          args.keep_prob,
                          args.weight_decay, args.class_weights, args.pipeline,
                          args.vgg_weights, loss_scaling=args.precision == 'fp16',
                          optimizer=args.optimizer, momentum=args.momentum,
                          lr_schedule=args.lr_schedule, lr_power=args.lr_power,
                          end_learning_rate=args.end_learning_rate,
                          lr_step_epochs=tuple(args.lr_step_epochs or ()),
                          warmup_steps=args.warmup_steps, early_stop=args.early_stop,
                          accumulate=args.accumulate, init_from=args.init_from)
    logbook = specs.Logbook(args.ckpt_dir, args.summary_dir, args.ckpt_every,
                            args.keep_checkpoints, args.summary_every, args.image_summary_every)
    plan = specs.DevicePlan(args.gpu, args.gpu_mem, args.xla, args.precision, args.cpu_replicas)
    return recipe, logbook, plan


def _check_batch_divides(batch_size, parts, what):
    if batch_size % parts:
        raise UserError('--batch_size %d does not divide among %d %s: use a multiple of %d'
                        % (batch_size, parts, what, parts))


def train(args, network=None):
    """Trains (or resumes) and exports a SavedModel. network: a specs.Network other than
    FCN-8s/VGG16's own (the tests' tiny one)."""
    from roadseg import specs
    from roadseg.training import cluster, graph, trainer
    task = cluster.cluster_task(args.ps_hosts, args.worker_hosts, args.job_name,
                                args.task_index, args.cluster_timeout)
    if task is not None and task.job == 'ps':  # holds variables; reads no data
        cluster.serve(task)
        return
    _apply_train_defaults(args)
    import data_loader
    import fcn8vgg16
    import helper
    network = dataclasses.replace(network or specs.Network(),
                                  train_upsampling=args.train_upsampling)
    recipe, logbook, plan = _training_specs(args, network)
    session_config = plan.session_config(
        spread=task is not None or plan.cpu_replicas > 1 or plan.gpu > 1)
    devices = graph.replica_devices(plan)  # after the config, which sets XLA's flags
    if task is not None and devices:
        raise UserError('a cluster task trains on one device: start one worker per GPU '
                        '(--gpu 1, no --cpu_replicas)')
    _check_batch_divides(args.batch_size, *((task.num_workers, 'workers') if task else
                                            (max(len(devices), 1), 'devices')))
    label_set = _label_set(args)
    train_set, val_set = _datasets(args, label_set)
    run_dir = helper.new_run_dir(args.runs_dir)
    config = dict(
        vars(args), seed=_seed(args, task), image_shape=list(train_set.image_shape),
        label_set=label_set.name, label_table=data_loader.custom_table(label_set),
        num_classes=label_set.num_classes, class_names=label_set.class_names,
        **network.config(), input_tensor=fcn8vgg16.INPUT_TENSOR,
        keep_prob_tensor=fcn8vgg16.KEEP_PROB_TENSOR, output_tensor=fcn8vgg16.OUTPUT_TENSOR,
        logits_tensor=fcn8vgg16.LOGITS_TENSOR, saved_model_tag=fcn8vgg16.SAVED_MODEL_TAG,
        signature_key=fcn8vgg16.SIGNATURE_KEY, train_images=len(train_set))
    print('training on %d images (%s, %d classes, %dx%d), run folder %s' % (
        len(train_set), label_set.name, label_set.num_classes, *train_set.image_shape, run_dir))
    folder = args.model_dir or os.path.join(run_dir, 'model')
    logbook = dataclasses.replace(logbook, best_dir=_best_dir(args, run_dir, folder))
    run = trainer.Run(network, recipe, logbook, plan, session_config, task, train_set, val_set,
                      config)
    trainer.train(run, run_dir, folder)


def _best_dir(args, run_dir, folder):
    """Where the best model goes: beside the model, or nowhere (--no_keep_best, --no_val)."""
    if not args.keep_best or args.no_val:
        return None
    if args.model_dir:
        return folder.rstrip('/\\') + '_best'
    return os.path.join(run_dir, 'best_model')


def _load_model(args):
    import helper
    from roadseg import model_dir, specs
    args.inference = specs.Inference(args.scales, args.flip, args.tile, args.tile_overlap,
                                     args.save_probs)  # checked before the model loads
    folder = args.model_dir
    if folder is None:
        configs = sorted(glob.glob(os.path.join(args.runs_dir, '*', 'model',
                                                model_dir.CONFIG_FILE)))
        if not configs:
            raise UserError('no -md/--model_dir given and no trained model under %s'
                            % os.path.join(args.runs_dir, '*', 'model'))
        folder = os.path.dirname(configs[-1])
        print('model: %s (the newest under %s)' % (folder, args.runs_dir))
    if folder.endswith('.tflite'):  # optimised_model/model.tflite: the int8 model
        from roadseg.deploy import tflite_model
        if args.precision != 'fp32':
            helper.warn('--precision %s does not apply to the int8 TFLite model'
                        % args.precision)
        model = tflite_model.TFLiteModel(os.path.dirname(folder) or '.')
    elif folder.endswith('.onnx'):  # optimised_model/model.onnx: float, ONNX Runtime
        from roadseg.deploy import onnx_model
        model = onnx_model.ONNXModel(folder, args.gpu, args.precision)
    else:
        from roadseg import devices
        from roadseg.deploy import loader
        model = loader.Model(folder, devices.session_config(
            args.gpu, args.gpu_mem, args.xla, args.precision), args.allow_any_op)
    print('loaded %s: %s, %d classes, %dx%d' % (model.kind, model.label_set.name,
                                                 model.label_set.num_classes, *model.image_shape))
    args.inference.check_model(model)
    return model


def predict(args):
    """Colour overlays (and label PNGs) of every image into a new run folder."""
    import data_loader
    import helper
    from roadseg.apps import predict as predicting
    flags.check_positive(args, ('batch_size',))
    images_glob, _ = _split_paths(args, args.split or 'test', _dataset_defaults(args))
    image_paths = data_loader.find_images(images_glob)
    model = _load_model(args)
    run_dir = helper.new_run_dir(args.runs_dir)
    result = predicting.predict_images(model, image_paths, run_dir, args.keep_size,
                                       args.batch_size or 1, args.save_labels, args.inference,
                                       images_glob)
    print('%d images: model %.0f ms, overlay and writing %.0f ms per image; written to %s'
          % (result['images'], result['model_ms'], result['write_ms'], run_dir))


def _evaluated_pairs(args):
    """The pairs of --split (val) or -ip/-lp; a dataset's held-out val part as training holds
    it out (or of -ip/-lp with --val_fraction)."""
    defaults = _dataset_defaults(args)
    split = args.split or 'val'
    args.held_out = 0.0
    given = args.images_paths is not None
    if split in ('train', 'val') and _holds_out(args, defaults) and (
            args.val_fraction is not None or not given):  # -ip/-lp alone: all their files
        args.held_out = _val_fraction(args, defaults)
    images_glob, labels_glob = _split_paths(args, 'train' if args.held_out else split,
                                            defaults)
    return _pairs(args, images_glob, labels_glob, split if args.held_out else None)


def _data_label_set(args, model_set):
    """The label set of the evaluated files: --label_set, else the model's when it fits
    --dataset, else the dataset's own; read as --label_format and --reduce_zero_label say."""
    import data_loader
    allowed = datasets.DEFAULTS[args.dataset]['label_sets']
    if args.label_set is not None:
        label_set = data_loader.get_label_set(args.label_set)
    elif allowed is None or model_set.name in allowed or data_loader.custom_table(model_set):
        label_set = model_set
    else:
        label_set = data_loader.get_label_set(datasets.DEFAULTS[args.dataset]['label_set'])
    return _with_encoding(args, label_set)


def _class_mapping(args, model_set, data_set):
    """None when the files are labelled in the model's classes, else how they pair."""
    from roadseg.apps import label_maps
    if (data_set.name, list(data_set.class_names)) == (model_set.name,
                                                       list(model_set.class_names)):
        if args.label_map:
            raise UserError('--label_map: the files are labelled in the model\'s label set %s'
                            % model_set.name)
        return None
    label_map = (label_maps.read_label_map(args.label_map, model_set, data_set)
                 if args.label_map else None)
    mapping = label_maps.class_mapping(model_set, data_set, label_map)
    print('scoring the %s model on %s labels: %d classes with a counterpart'
          % (model_set.name, data_set.name, mapping.label_set.num_classes - 1))
    for what, names in (('data classes without a counterpart, not scored',
                         mapping.unmatched_data),
                        ('model classes without a counterpart, wrong wherever predicted',
                         mapping.unmatched_model)):
        if names:
            print('%s: %s' % (what, ', '.join(names)))
    return mapping


def evaluate(args):
    """Mean IoU and the rest over a labelled split, reported into a new run folder."""
    import helper
    from roadseg.apps import evaluate as evaluating
    from roadseg.apps import label_maps, metrics
    flags.check_positive(args, ('batch_size',))
    image_paths, label_paths = _evaluated_pairs(args)
    model = _load_model(args)
    data_set = _data_label_set(args, model.label_set)
    mapping = _class_mapping(args, model.label_set, data_set)
    run_dir = helper.new_run_dir(args.runs_dir)
    confusion = evaluating.confusion_over(model, image_paths, label_paths, args.keep_size,
                                          args.batch_size or 1, data_set, mapping,
                                          args.inference, run_dir)
    scored = mapping.label_set if mapping else model.label_set
    results = metrics.compute_metrics(confusion, scored)
    if mapping:
        results = label_maps.scored_metrics(results, mapping)
    print(metrics.format_table(results))
    metrics.write_report(run_dir, results, confusion, scored, args.inference.record())
    if args.summary_dir:
        metrics.write_summaries(args.summary_dir, results)
    print('metrics of %d images written to %s' % (len(image_paths), run_dir))


def video(args):
    """Segments every frame of a video into a new video with the same frames, rate and size."""
    import helper
    from roadseg.apps import video as video_io
    flags.check_positive(args, ('batch_size',))
    video_in = args.video_file_in or _dataset_defaults(args).get('video')
    if video_in is None:
        raise UserError('no -vi/--video_file_in given')
    video_io.check_video(video_in)  # before the model loads and a run folder is made
    video_out = args.video_file_out
    if video_out is None:
        stem = os.path.splitext(os.path.basename(video_in))[0]
        video_out = os.path.join(helper.new_run_dir(args.runs_dir), stem + '_segmented.mp4')
    model = _load_model(args)
    result = video_io.segment_video(model, video_in, video_out, args.video_start_second,
                                    args.video_end_second, args.keep_size,
                                    args.batch_size or 1, inference=args.inference)
    print('%d frames at %g fps written to %s' % (result['frames'], result['fps'], video_out))


def _megabytes(size):
    return '%.1f MB' % (size / 1e6)


def freeze(args):
    """Checkpoint (or training SavedModel) -> one constant inference graph."""
    from roadseg.deploy import export
    source = args.model_dir or args.ckpt_dir or _dataset_defaults(args)['ckpt_dir']
    # The weights are read from the checkpoint, not run: no device, and the graph is float32
    # whatever precision the frozen model later runs in.
    with export.said_if_interrupted(args.frozen_model_dir):
        stats = export.freeze(source, args.frozen_model_dir, args.image_shape)
    print('frozen %s into %s: %d ops -> %d ops, %d variables converted to constants, %s -> %s'
          % (source, args.frozen_model_dir, stats['source_ops'], stats['ops'],
             stats['variables'], _megabytes(stats['source_bytes']), _megabytes(stats['bytes'])))


def optimise(args):
    """Frozen graph -> pruned, folded graph with 8-bit weights, int8 TFLite and float ONNX."""
    import data_loader
    from roadseg import model_dir
    from roadseg.deploy import export
    config = model_dir.read_model_config(args.frozen_model_dir)
    calibration = (data_loader.find_images(args.calibration_images)[:100]
                   if args.calibration_images else export.calibration_images(config))
    with export.said_if_interrupted(args.optimised_model_dir):
        stats = export.optimise(args.frozen_model_dir, args.optimised_model_dir, calibration,
                                args.onnx, args.allow_any_op)
    print('optimised %s into %s: %d ops -> %d ops, %d weights stored in 8 bits, %s -> %s '
          '(%.0f%%); %smodel.tflite calibrated on %d images'
          % (args.frozen_model_dir, args.optimised_model_dir, stats['source_ops'], stats['ops'],
             stats['quantized'], _megabytes(stats['source_bytes']), _megabytes(stats['bytes']),
             100 * stats['bytes'] / stats['source_bytes'], 'model.onnx written, ' * args.onnx,
             len(calibration)))


def _prepared_splits(args, defaults):
    """[(split, images glob, labels glob)] that prepare copies: -ip/-lp as --split (train), or
    the dataset's --split, or both that training reads (once if they share their files)."""
    if args.images_paths is not None:
        return [(args.split or 'train', args.images_paths, args.labels_paths)]
    splits = []
    for split in [args.split] if args.split else ['train', 'val']:
        paths = _split_paths(args, split, defaults)
        if all(paths != kept[1:] for kept in splits):
            splits.append((split,) + paths)
    return splits


def _prepare_roots(args, defaults):
    """(source root, output root) of prepare: the copy keeps the files' paths below the
    source root (for -ip/-lp of a folder dataset, the folder holding both)."""
    from roadseg import file_pairs
    source = args.data_root or defaults['root']
    if source is None and args.images_paths is not None:
        folders = [os.path.abspath(file_pairs.folder_of(path))
                   for path in (args.images_paths, args.labels_paths) if path]
        source = os.path.commonpath(folders)
    output = args.prepared_dir or defaults['prepared_dir']
    if output is None:
        raise UserError('--dataset %s needs --prepared_dir: where the copy goes' % args.dataset)
    return source, output


def prepare(args):
    """A resized copy of splits of --dataset, labels as training ids, to train from quickly."""
    import data_loader
    from roadseg.data import prepare as preparing
    defaults = _dataset_defaults(args)
    for key in ('label_set', 'image_shape', 'scale_range'):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    flags.check_scale_range(args.scale_range)
    flags.check_positive(args, ('workers',))
    label_set = _label_set(args)
    cover_shape = args.prepare_shape or preparing.default_cover_shape(
        data_loader.check_image_shape(args.image_shape), args.scale_range)
    source, output = _prepare_roots(args, defaults)
    for split, images_glob, labels_glob in _prepared_splits(args, defaults):
        samples, written = preparing.prepare_split(
            images_glob, labels_glob, source, output, label_set, cover_shape, args.workers,
            desc='Prepare %s' % split, pairs=_pairs(args, images_glob, labels_glob))
        print('%s: %d samples (%d written, %d already done) covering %dx%d, %s training ids, '
              'in %s' % (split, samples, written, samples - written, *cover_shape,
                         label_set.name, output))
    if args.images_paths is not None:
        print('train from the copy with the same flags, -ip and -lp under %s' % output)
    else:
        print('train from the copy with the same flags and --data_root %s' % output)


def labels(args):
    """A label table: --label_set's (or the model's with -md), listed or written to --output
    as a starting point for a table of one's own."""
    import data_loader
    from roadseg import model_dir, table_files
    if args.label_set is None and args.model_dir is None:
        raise UserError('labels needs --label_set NAME or -md MODEL')
    if args.label_set is not None:
        label_set = data_loader.get_label_set(args.label_set)
    else:
        config = model_dir.read_model_config(args.model_dir)
        model_dir.check_config(config, args.model_dir)
        label_set = data_loader.label_set_of_config(
            config, os.path.join(args.model_dir, model_dir.CONFIG_FILE))
    if args.output is None:
        print(table_files.format_table(label_set))
        return
    name = label_set.name if label_set.name not in data_loader.LABEL_SETS else (
        label_set.name + '_custom')
    table_files.write_table(label_set, args.output, name)
    print('%s: %d classes of %s written to %s' % (name, label_set.num_classes, label_set.name,
                                                  args.output))


ACTIONS = {'train': train, 'predict': predict, 'evaluate': evaluate, 'video': video,
           'freeze': freeze, 'optimise': optimise, 'prepare': prepare, 'labels': labels}


# Actions whose files are all written, synced and closed when main() returns: _exit_at_once.
QUICK_EXIT_ACTIONS = ('predict', 'video', 'evaluate')


def parse_args(argv=None):
    return flags.parse_args(ACTIONS, argv)


def _check_flags(args):
    """The flags given, checked before any work (generating the demo, loading a model): one
    line naming the value. The defaults filled in later are checked where they are used."""
    import data_loader
    flags.check_positive(args, ('epochs', 'batch_size', 'ckpt_every', 'keep_checkpoints',
                           'summary_every', 'image_summary_every', 'workers'))
    if not 0 < args.gpu_mem <= 1:
        raise UserError('--gpu_mem %g is outside (0, 1]' % args.gpu_mem)
    if args.image_shape is not None:
        data_loader.check_image_shape(args.image_shape)
    if args.label_set is not None:
        data_loader.get_label_set(args.label_set)


def main(argv=None, network=None):
    """Runs one action; returns the exit code. network: a specs.Network for train other than
    FCN-8s/VGG16's own (the tests' tiny one)."""
    try:
        args = parse_args(argv)
    except UserError as error:
        print('error: %s' % error, file=sys.stderr)
        return 2
    if _needs_tensorflow(args):  # not before: -h and a mistyped flag answer without it
        _start_tensorflow(args)
    try:
        _check_flags(args)
        if args.action == 'train':
            train(args, network)
        else:
            ACTIONS[args.action](args)
    except UserError as error:
        if args.debug:
            traceback.print_exc()
        print('error: %s' % error, file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM while training
        if getattr(interrupt, 'message', None):  # what predict, video, prepare or export wrote
            print(interrupt.message, file=sys.stderr)
        return getattr(interrupt, 'exit_code', 130)
    return 0


def _exit_at_once(code):
    """Ends the process without Python's teardown, which after TensorFlow ran (thousands of
    modules, a session's graph, its thread pools) takes up to a second of a finished job."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == '__main__':
    if '--debug' not in sys.argv[1:]:  # TensorFlow's native start-up chatter stays hidden
        quiet_native_logs()
    exit_code = main()
    if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT_ACTIONS:
        _exit_at_once(exit_code)
    sys.exit(exit_code)
