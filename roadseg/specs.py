"""What a run is made of, as small frozen records: main.py makes them from the flags once, and
nothing below it sees the flags.

- Network: the shape of FCN-8s/VGG16 (the encoder table, fc6/fc7's channels).
- Recipe: how to train (epochs, batch, optimiser, regularisation, input pipeline, start).
- Logbook: where and how often training writes checkpoints and summaries.
- DevicePlan: the devices a session runs on and in what arithmetic.
- Inference: how predict, evaluate and video run a model over an image (scales, flip, tiles)
  and which of its probabilities they write.

A model folder's configuration (model_dir.CONFIG_FILE) is the JSON of these plus the flags of
the run; Network.from_config reads the network back from any folder the tool ever wrote.
"""
import dataclasses

import fcn8vgg16
from helper import UserError
from roadseg import devices


@dataclasses.dataclass(frozen=True)
class Network:
    """FCN-8s with a VGG16-shaped encoder: ((block, filters, convs), ...) and fc6/fc7's width."""
    encoder: tuple = fcn8vgg16.VGG16
    fc_channels: int = fcn8vgg16.FC_CHANNELS
    train_upsampling: bool = False  # learn the transposed convolutions instead of bilinear

    def __post_init__(self):  # lists from JSON become the hashable table
        object.__setattr__(self, 'encoder', tuple(tuple(block) for block in self.encoder))

    def config(self):
        """The keys a model configuration stores for the network."""
        return dict(encoder=[list(block) for block in self.encoder],
                    fc_channels=self.fc_channels, train_upsampling=self.train_upsampling)

    @classmethod
    def from_config(cls, config):
        return cls(config['encoder'], config['fc_channels'],
                   bool(config.get('train_upsampling', False)))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train: steps of batch_size images for epochs epochs, the optimizer's rate
    following lr_schedule over the whole training. With accumulate N, a step's batch goes
    through the network as N micro-batches one after another, their gradients summed into the
    one update of the whole batch: the memory of a micro-batch, the update of the batch."""
    epochs: int
    batch_size: int
    learning_rate: float
    keep_prob: float = 1.0
    weight_decay: float = 5e-4
    class_weights: str = 'none'        # none, inverse_freq or median_freq
    pipeline: str = 'tfdata'           # tfdata or generator
    vgg_weights: str = None            # a file or folder, 'none', or None: download
    loss_scaling: bool = False         # dynamic loss scaling, for float16 (--precision fp16)
    optimizer: str = 'adam'            # adam or sgd (with momentum)
    momentum: float = 0.9
    lr_schedule: str = 'constant'      # constant, poly, cosine or step
    lr_power: float = 0.9              # poly's exponent
    end_learning_rate: float = 0.0     # where poly and cosine end
    lr_step_epochs: tuple = ()         # step: the rate is divided by 10 at each of these epochs
    warmup_steps: int = 0              # the rate rises linearly from 0 over these first steps
    accumulate: int = 1                # each batch is cut into these micro-batches, run in turn
    init_from: str = None              # a model or checkpoint folder: the first weights
    early_stop: int = 0                # stop after this many validations without improvement

    @property
    def micro_batch_size(self):
        """The images that go through the network at once (also when validating)."""
        return max(1, self.batch_size // self.accumulate)


@dataclasses.dataclass(frozen=True)
class Logbook:
    """Where training keeps its checkpoints and TensorBoard summaries, and how often."""
    ckpt_dir: str
    summary_dir: str
    ckpt_every: int = 500
    keep_checkpoints: int = 3
    summary_every: int = 10
    image_summary_every: int = 200
    best_dir: str = None               # the best model's SavedModel goes here (None: not kept)


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """The session's devices and arithmetic: --gpu, --gpu_mem, --xla, --precision and, to try
    the multi-device path without a GPU, --cpu_replicas virtual CPUs."""
    gpu: int = 1
    gpu_mem: float = 0.9
    xla: int = 0
    precision: str = 'fp32'
    cpu_replicas: int = 1

    def session_config(self, spread=False):
        """The session's ConfigProto; spread: the graph spans several devices or a cluster.
        Made before anything lists the devices, which reads XLA's flags (--xla)."""
        from tensorflow.core.protobuf import rewriter_config_pb2
        config = devices.session_config(self.gpu, self.gpu_mem, self.xla, self.precision)
        if self.cpu_replicas > 1:
            config.device_count['CPU'] = self.cpu_replicas
        if spread and not config.device_count['GPU']:
            # Grappler's memory optimiser moves GPU memory to the host; without a GPU it only
            # logs a cost-estimation warning per op of a graph spread over several devices.
            config.graph_options.rewrite_options.memory_optimization = (
                rewriter_config_pb2.RewriterConfig.NO_MEM_OPT)
        return config


@dataclasses.dataclass(frozen=True)
class Inference:
    """How predict, evaluate and video run the model over an image: at each of `scales` of it,
    with `flip` mirrored too, in `tile` (h, w) windows overlapping by `tile_overlap` of their
    size, the softmax probabilities of every view averaged (roadseg/apps/tta.py). The default,
    one plain view, is the model's own argmax. save_probs: None, 'confidence' (the predicted
    class's probability) or 'all' (every class's) written beside the overlays."""
    scales: tuple = (1.0,)
    flip: bool = False
    tile: tuple = None
    tile_overlap: float = 1 / 3
    save_probs: str = None

    def __post_init__(self):  # lists from argparse become tuples; bad values one line each
        object.__setattr__(self, 'scales', tuple(float(scale) for scale in self.scales))
        if self.tile is not None:
            object.__setattr__(self, 'tile', tuple(int(side) for side in self.tile))
        if not self.scales or min(self.scales) <= 0:
            raise UserError('--scales %s: each scale must be positive'
                            % ' '.join('%g' % scale for scale in self.scales))
        if self.tile is not None and (len(self.tile) != 2 or min(self.tile) < fcn8vgg16.STRIDE
                                      or any(side % fcn8vgg16.STRIDE for side in self.tile)):
            raise UserError('--tile %s: need two sides, each a positive multiple of %d'
                            % (' '.join(map(str, self.tile)), fcn8vgg16.STRIDE))
        if not 0 <= self.tile_overlap < 1:
            raise UserError('--tile_overlap %g is outside [0, 1)' % self.tile_overlap)

    @property
    def averages(self):
        """Whether the prediction is an average of views rather than one run's argmax."""
        return self.scales != (1.0,) or self.flip or self.tile is not None

    def check_model(self, model):
        """A one-line refusal for a model that outputs class ids only (the int8 TFLite one)."""
        if (self.averages or self.save_probs) and not getattr(model, 'has_logits', False):
            raise UserError('the %s model outputs class ids only: --scales, --flip, --tile and '
                            '--save_probs need its probabilities (use a SavedModel, checkpoint, '
                            'frozen or optimised folder)' % model.kind)

    def record(self):
        """What metrics.json keeps of it."""
        return dict(scales=list(self.scales), flip=self.flip,
                    tile=list(self.tile) if self.tile else None,
                    tile_overlap=self.tile_overlap if self.tile else None)
