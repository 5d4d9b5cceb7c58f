"""Evaluating a model on a dataset labelled in another label set: which model class counts as
which class of the data, and the metrics in the data's classes that have a counterpart.

Classes pair by name (case, spaces, '_' and '-' aside), and a --label_map file of
{"model class": "data class" or null} overrides or adds pairs; several model classes may count
as one data class (truck and bus as car). Data classes without a counterpart are left out of
the scores (their pixels are not counted), model classes without one count as wrong wherever
they are predicted; both are reported.
"""
import collections

import numpy as np

import helper
from cityscape_labels import IGNORE_ID
from helper import UserError

OTHER = '(model classes without a counterpart)'

Mapping = collections.namedtuple('Mapping', [
    'label_set',  # the scored classes: the data's classes with a counterpart, then OTHER
    'truth',  # uint8 [256]: data training id -> scored id (IGNORE_ID without a counterpart)
    'predictions',  # uint8 [256]: model training id -> scored id (OTHER's without one)
    'unmatched_data', 'unmatched_model'])


def _key(name):
    return ' '.join(name.lower().replace('_', ' ').replace('-', ' ').split())


def read_label_map(path, model_set, data_set):
    """{model class: data class or None} of a JSON file, every name checked."""
    table = helper.read_json(path)
    if not isinstance(table, dict):
        raise UserError('label map %s is not a JSON object of {"model class": "data class"}'
                        % path)
    for model_name, data_name in table.items():
        if model_name not in model_set.class_names:
            raise UserError('label map %s: %r is not a class of the model\'s label set %s'
                            % (path, model_name, model_set.name))
        if data_name is not None and data_name not in data_set.class_names:
            raise UserError('label map %s: %r is not a class of the data\'s label set %s'
                            % (path, data_name, data_set.name))
    return table


def class_mapping(model_set, data_set, label_map=None):
    """The Mapping of model_set's classes onto data_set's: by name, then label_map's pairs."""
    by_key = {_key(name): name for name in data_set.class_names}
    pairs = {name: by_key.get(_key(name)) for name in model_set.class_names}
    pairs.update(label_map or {})
    matched = [name for name in data_set.class_names if name in pairs.values()]
    if not matched:
        raise UserError('no class of the model\'s label set %s has a counterpart in %s: give '
                        '--label_map' % (model_set.name, data_set.name))
    scored = {name: index for index, name in enumerate(matched)}
    truth = np.full(256, IGNORE_ID, np.uint8)
    for train_id, name in enumerate(data_set.class_names):
        truth[train_id] = scored.get(name, IGNORE_ID)
    predictions = np.full(256, len(matched), np.uint8)
    for train_id, name in enumerate(model_set.class_names):
        if pairs[name] is not None:
            predictions[train_id] = scored[pairs[name]]
    colors = [data_set.colors[data_set.class_names.index(name)] for name in matched]
    label_set = data_set._replace(
        name='%s as %s' % (model_set.name, data_set.name), class_names=matched + [OTHER],
        colors=np.array(colors + [(0, 0, 0)], np.uint8), categories=None)
    return Mapping(label_set, truth, predictions,
                   [name for name in data_set.class_names if name not in scored],
                   [name for name in model_set.class_names if pairs[name] is None])


def scored_metrics(metrics, mapping):
    """The metrics without OTHER, which has no ground truth: means over the data's classes
    with a counterpart, and the classes without one listed."""
    per_class_iou = {name: value for name, value in metrics['per_class_iou'].items()
                     if name != OTHER}
    per_class_accuracy = {name: value for name, value in metrics['per_class_accuracy'].items()
                          if name != OTHER}
    defined = [value for value in per_class_iou.values() if value is not None]
    accuracies = [value for value in per_class_accuracy.values() if value is not None]
    return dict(metrics, per_class_iou=per_class_iou, per_class_accuracy=per_class_accuracy,
                mean_iou=float(np.mean(defined)) if defined else None,
                mean_class_accuracy=float(np.mean(accuracies)) if accuracies else None,
                unmatched_data_classes=mapping.unmatched_data,
                unmatched_model_classes=mapping.unmatched_model)
