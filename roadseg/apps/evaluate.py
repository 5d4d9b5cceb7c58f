"""The evaluate action: one confusion matrix of a model's predictions over a labelled split,
which metrics turns into the report."""
import os

import numpy as np
from tqdm import tqdm

import data_loader
from roadseg import specs
from roadseg.apps import metrics
from roadseg.apps import predict
from helper import UserError


def confusion_over(model, image_paths, label_paths, keep_size=False, batch_size=1,
                   label_set=None, mapping=None, inference=None, out_dir=None):
    """One confusion matrix over a labelled split, at each label image's own resolution.
    label_set: the label files' (the model's by default, maybe in another format); mapping: a
    label_maps.Mapping when it is not the model's, whose scored classes the matrix counts;
    inference: a specs.Inference, whose save_probs files go into out_dir as predict's do."""
    inference = inference or specs.Inference()
    inference.check_model(model)
    for folder in predict.probability_folders(inference.save_probs):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    label_set = label_set or model.label_set
    scored = mapping.label_set if mapping else label_set
    # (None, None) for the files whose stored values decide them, as they are read
    tables = {path: data_loader.label_tables(path, label_set) for path in label_paths}
    labels_of = dict(zip(image_paths, label_paths))
    confusion = np.zeros((scored.num_classes, scored.num_classes), np.int64)
    loaded = predict.read_ahead(image_paths, data_loader.read_image, 2 * batch_size)
    with tqdm(total=len(image_paths), desc='Evaluate', unit='img') as bar:
        for batch in predict.same_size_batches(loaded, batch_size, lambda item: item[1].shape):
            outputs = predict.predict_outputs(model, [image for _, image in batch], keep_size,
                                              inference, batch_size)
            for (path, image), (class_ids, probabilities) in zip(batch, outputs):
                if inference.save_probs:
                    predict.write_probabilities(out_dir, os.path.splitext(os.path.basename(
                        path))[0], class_ids, probabilities, inference.save_probs)
                label_path = labels_of[path]
                label = data_loader.to_train_ids(data_loader.read_label(label_path, label_set),
                                                 label_path, label_set, *tables[label_path])
                if label.shape != class_ids.shape:
                    raise UserError('label %s is %dx%d but its image %s is %dx%d' % (
                        label_path, label.shape[1], label.shape[0], path, image.shape[1],
                        image.shape[0]))
                if mapping:
                    label, class_ids = mapping.truth[label], mapping.predictions[class_ids]
                metrics.accumulate(confusion, label, class_ids, scored.num_classes,
                                   scored.ignore_id)
            bar.update(len(batch))
    return confusion
