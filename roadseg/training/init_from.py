"""--init_from: a new training's first weights from a model or checkpoints this tool wrote,
of any label set, image shape or encoder weights. Every variable whose name and shape match is
loaded; the score layers, and the transposed convolutions (bilinear again), start afresh when
the number of classes differs; any other variable of another shape is an error."""
import dataclasses
import os

import tensorflow as tf

import fcn8vgg16
import helper
from helper import UserError
from roadseg import model_dir
from roadseg.training import vgg_weights

tf1 = tf.compat.v1

# The layers whose shape follows the number of classes: built anew for another count.
CLASS_LAYERS = ('score_fr', 'score_pool4', 'score_pool3', 'upscore2', 'upscore_pool4',
                'upscore8')
LOADED, REINITIALISED, NEW = 'loaded', 're-initialised', 'new'


@dataclasses.dataclass(frozen=True)
class Plan:
    """What --init_from loads: the checkpoint prefix, its configuration, and per model
    variable (name, state, shape in the source or None, shape in the model)."""
    path: str
    prefix: str
    config: dict
    rows: tuple

    @property
    def loaded(self):
        return [name for name, state, _, _ in self.rows if state == LOADED]


def source_checkpoint(path):
    """(checkpoint prefix, configuration) of a model folder or checkpoint folder of this
    tool."""
    if not os.path.exists(path):
        raise UserError('--init_from %s does not exist' % path)
    config = model_dir.read_model_config(path)
    variables = os.path.join(path, 'variables', 'variables')
    if os.path.exists(variables + '.index'):
        return variables, config
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
        kind = ('a frozen or optimised model, whose weights are constants' if os.path.exists(
            os.path.join(path, model_dir.GRAPH_FILE)) else 'neither a model nor checkpoints')
        raise UserError('--init_from %s holds %s: pass the model folder train wrote or its '
                        '--ckpt_dir' % (path, kind))
    return prefix, config


def model_shapes(num_classes, network):
    """{variable name: shape} of the model, as the training graph names them, in its order."""
    with tf.Graph().as_default() as graph:
        fcn8vgg16.inference_graph(num_classes, network.encoder, network.fc_channels)
        return {variable.op.name: tuple(variable.shape.as_list())
                for variable in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)}


def plan(path, num_classes, network):
    """The Plan of --init_from path for a model of num_classes classes; a UserError for a
    variable of another shape outside the class layers."""
    prefix, config = source_checkpoint(path)
    try:
        source = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        raise UserError('--init_from %s: cannot read %s (%s)'
                        % (path, prefix, helper.first_line(error))) from None
    rows = []
    for name, shape in model_shapes(num_classes, network).items():  # in the network's order
        found = tuple(source[name]) if name in source else None
        if found is None:
            state = NEW
        elif found == shape:
            state = LOADED
        elif name.split('/')[0] in CLASS_LAYERS:
            state = REINITIALISED
        else:
            raise UserError('--init_from %s: %s has shape %s there and %s in this model'
                            % (path, name, list(found), list(shape)))
        rows.append((name, state, found, shape))
    return Plan(path, prefix, config, tuple(rows))


def table(init_plan):
    """The plan as the lines of a table, one row per layer."""
    layers = {}
    for name, state, found, shape in init_plan.rows:
        layer = name.split('/')[0]
        old_state, old_found, old_shape = layers.get(layer, (LOADED, found, shape))
        if state != LOADED:
            old_state = state
        if name.endswith(('/weights', '/filter')):
            old_found, old_shape = found, shape
        layers[layer] = (old_state, old_found, old_shape)
    source = init_plan.config
    lines = ['initialising from %s (%s, %s classes):' % (
        init_plan.path, source.get('label_set', '?'), source.get('num_classes', '?')),
        '  %-14s %-15s %s' % ('layer', 'weights', 'shape')]
    for layer, (state, found, shape) in layers.items():
        change = ('%s -> %s' % (list(found), list(shape)) if state == REINITIALISED
                  else list(shape))
        lines.append('  %-14s %-15s %s' % (layer, state, change))
    return lines


def load(session, init_plan, graph=None):
    """Copies the plan's loaded variables into an initialised model (on every device that
    mirrors them), the way vgg_weights loads: each initializer run with its value fed."""
    graph = graph or session.graph
    reader = tf.train.load_checkpoint(init_plan.prefix)
    wanted = set(init_plan.loaded)
    feeds = [(variable, reader.get_tensor(variable.op.name))
             for variable in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
             if variable.op.name in wanted]
    session.run([variable.initializer for variable, _ in feeds],
                {variable.initial_value: value for variable, value in feeds})
    return [variable.op.name for variable, _ in feeds]


def first_weights(session, init_plan, vgg_source):
    """Into a freshly initialised model: the --init_from plan's weights, else --vgg_weights."""
    if init_plan is None:
        vgg_weights.load_pretrained(session, vgg_source)
        return
    print('loaded %d tensors from %s' % (len(load(session, init_plan)), init_plan.path))
