"""The session every action runs in: its devices (--gpu, --gpu_mem), its compiler (--xla) and
its arithmetic (--precision), as one ConfigProto made before anything lists the devices."""
import os

from helper import PRECISIONS, UserError, warn

# x86 instructions that compute in bfloat16; without them oneDNN emulates it, slower than fp32.
BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')
# TensorFlow rewrites a graph to bfloat16 for oneDNN only on CPUs with one of these
# (IsBF16SupportedByOneDNNOnThisCPU); elsewhere the session runs float32.
BF16_REWRITE_CPU_FLAGS = ('avx512f', 'avx_ne_convert')


def session_config(gpu=1, gpu_mem=0.9, xla=0, precision='fp32'):
    """A ConfigProto that applies the --gpu, --gpu_mem, --xla and --precision flags.

    gpu=0 hides every GPU from the session; gpu_mem is the fraction of each GPU's memory the
    process may take, grown on demand; xla 1 or 2 sets the global JIT level (ON_1, ON_2);
    precision fp32, bf16 or fp16 as set_precision() explains.
    """
    import tensorflow as tf
    tf1 = tf.compat.v1
    if not 0 < gpu_mem <= 1:
        raise UserError('--gpu_mem %g is outside (0, 1]' % gpu_mem)
    if xla not in (0, 1, 2):
        raise UserError('--xla %d is not 0, 1 or 2' % xla)
    if precision not in PRECISIONS:
        raise UserError('--precision %s is not fp32, bf16 or fp16' % precision)
    if gpu < 0:
        raise UserError('--gpu %d is negative' % gpu)
    if xla:
        _enable_cpu_jit()  # before the devices are listed, which reads XLA's flags
    available = len(tf.config.list_physical_devices('GPU'))
    if gpu > available:
        warn('%d GPU(s) asked for, %d found: running on %s'
             % (gpu, available, '%d GPU(s)' % available if available else 'the CPU'))
    config = tf1.ConfigProto(allow_soft_placement=True)
    config.device_count['GPU'] = min(gpu, available)
    config.gpu_options.per_process_gpu_memory_fraction = gpu_mem
    config.gpu_options.allow_growth = True
    if xla:
        config.graph_options.optimizer_options.global_jit_level = (
            tf1.OptimizerOptions.ON_1 if xla == 1 else tf1.OptimizerOptions.ON_2)
    set_precision(config, precision)
    return config


def _enable_cpu_jit():
    """On the CPU the session's JIT level alone compiles nothing: XLA also wants this flag,
    read once per process when TensorFlow first lists its devices. With GPUs, the few ops
    left on the CPU are then compiled too."""
    flags = os.environ.get('TF_XLA_FLAGS', '')
    if '--tf_xla_cpu_global_jit' not in flags:
        os.environ['TF_XLA_FLAGS'] = (flags + ' --tf_xla_cpu_global_jit').strip()


def set_precision(config, precision):
    """Turns on the graph rewrite that runs a float32 graph in mixed precision in this session.

    TensorFlow's auto mixed precision rewrite casts convolutions, matrix products and the
    element-wise ops between them to 16 bits as the session optimises the graph (for bf16,
    on CPUs with AVX-512 or AVX-NE-CONVERT only). Variables,
    optimiser updates, the softmax cross-entropy and the loss stay float32 (the rewrite's deny
    list), so every model this tool writes runs in any precision. bf16: oneDNN's bfloat16 on
    the CPU. fp16: float16 on GPUs (the trainer adds loss scaling); without one it warns and
    runs float32.
    """
    from tensorflow.core.protobuf import rewriter_config_pb2
    options = config.graph_options.rewrite_options
    gpus = config.device_count['GPU']
    if precision == 'bf16':
        if gpus:
            warn('--precision bf16 rewrites the CPU\'s ops only: use --precision fp16 on GPUs')
        flags = cpu_flags()
        if flags is not None and not flags & set(BF16_REWRITE_CPU_FLAGS):
            warn('this CPU has neither %s: TensorFlow does not rewrite to bfloat16 here, '
                 '--precision bf16 runs in float32' % ' nor '.join(BF16_REWRITE_CPU_FLAGS))
        elif flags is not None and not flags & set(BF16_CPU_FLAGS):
            warn('this CPU has neither %s: --precision bf16 is emulated, about half as fast '
                 'as fp32' % ' nor '.join(BF16_CPU_FLAGS))
        options.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    elif precision == 'fp16':
        if not gpus:
            warn('--precision fp16 needs a GPU and runs in float32 on the CPU: use --precision '
                 'bf16 there')
            return
        options.auto_mixed_precision = rewriter_config_pb2.RewriterConfig.ON


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (x86 Linux), or None where there are none."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return None

