"""The best model of a training, not only the last: a SavedModel written whenever the val mean
IoU improves, and the early stop after validations without improvement. The best value so far
is recorded beside the checkpoints, so that a resumed training goes on comparing with it."""
import os

import tensorflow as tf

import helper
from roadseg.training import checkpoints

RECORD_FILE = 'best_model.json'  # in the checkpoint folder


class BestModel:
    """folder: where the best SavedModel goes (None: none is written); patience: stop after
    that many validations without improvement (0: never)."""

    def __init__(self, folder, ckpt_dir, config, network, patience=0):
        self.folder, self.ckpt_dir, self.patience = folder, ckpt_dir, patience
        self.config, self.network = config, network
        self.record_path = os.path.join(ckpt_dir, RECORD_FILE)
        self.record = read_record(ckpt_dir)

    @property
    def value(self):
        return max(self.record['val_mean_iou'], 0.0)

    def update(self, value, step, epoch):
        """Records the validation of the checkpoint of `step`, the last saved; writes the best
        model when value improves. Returns True when training should stop early."""
        value, step, epoch = float(value), int(step), int(epoch)  # a cluster's step is numpy's
        if value > self.record['val_mean_iou']:
            self.record = dict(val_mean_iou=value, step=step, epoch=epoch, validations_since=0,
                               folder=self.folder and os.path.abspath(self.folder))
            if self.folder:
                checkpoints.export_saved_model(
                    tf.train.latest_checkpoint(self.ckpt_dir), self.folder,
                    dict(self.config, best_epoch=epoch, best_step=step,
                         best_val_mean_iou=value), self.network)
                print('best val mean IoU so far: model saved to %s' % self.folder)
        else:
            self.record['validations_since'] += 1
        helper.write_json(self.record_path, self.record)
        if self.patience and self.record['validations_since'] >= self.patience:
            print('no better val mean IoU in %d validations: stopping early (best %.1f%% at '
                  'step %d)' % (self.patience, 100 * self.record['val_mean_iou'],
                                self.record['step']))
            return True
        return False



def read_record(ckpt_dir):
    """The best validation recorded in a checkpoint folder, or a record that any beats."""
    path = os.path.join(ckpt_dir, RECORD_FILE)
    if os.path.exists(path):
        return helper.read_json(path)
    return dict(val_mean_iou=-1.0, validations_since=0)


def summary_line(ckpt_dir):
    """One line on the best model of the training so far, or None before any validation."""
    record = read_record(ckpt_dir)
    if 'step' not in record:
        return None
    where = record.get('folder') or 'not kept (--no_keep_best)'
    return 'best model: %s (val mean IoU %.1f%% at epoch %d, step %d)' % (
        where, 100 * record['val_mean_iou'], record['epoch'], record['step'])
