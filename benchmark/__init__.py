"""Speed, memory and export quality of FCN-8s on this machine, written to BENCHMARKS.md.

    python -m benchmark --quick                                   # small settings, a check
    python -m benchmark --model_dir runs/<timestamp>/model --profile profile   # the full run

One run measures, at 256x512 with the real VGG16 widths and the 19 Cityscapes classes:
- peak: the model's FLOPs per image (TensorFlow's profiler) and this machine's float32 and
  bfloat16 matrix-multiply rates: the limits the speed targets are measured against;
- inference: ms per image of the float32 model, --xla 2, --precision bf16, the frozen graph,
  its ONNX copy run by ONNX Runtime, the optimised and the int8 TFLite model, at batch 1 and 4;
  and the float32 model's cost with --flip, six --scales and both (test-time augmentation);
- training: ms per image of a training step at batch 2 (forward, backward and Adam), and the
  step of SGD with momentum and a poly schedule and of --accumulate 2 against Adam's, in turn;
- pipeline: the python generator and tf.data alone on Cityscapes-sized 2048x1024 sources, and a
  training step fed by each against one fed batches already in memory;
- video: frames per second of `main.py video`'s segment_video on the demo video against the
  float model alone on the same frames;
- memory: peak RSS of `main.py train` at batch 2, at -bs 1 and at -bs 1 --accumulate 2, and of
  `main.py predict` with the optimised model;
- cold: `main.py predict` of one image in a fresh process for every model format (checkpoint,
  SavedModel, frozen, optimised, ONNX, int8 TFLite): seconds from the command to its exit, where
  they go, and the process's peak RSS;
- export: frozen vs optimised vs int8 TFLite on the demo val split (needs a trained --model_dir).
Each time is the median of several runs after warm-up runs, and every row that times a model
runs in a fresh Python process (Run.in_child). Without --model_dir the models have random
weights: right for speed, meaningless for accuracy.

Its modules, from the command line down (each imports only those below it):
    __main__.py            the flags, the section runner, a row process's entry
    sections_inference.py  every model kind's inference; the exported models compared
    sections_training.py   training steps, where a step's time goes, the input pipelines
    sections_memory.py     peak RSS of the real command lines
    sections_cold.py       the first prediction of every model format, cold, and its memory
    sections_peak.py       FLOPs per image and the matmul peaks the shares are taken against
    run.py                 what one run has measured and made; rows run in fresh processes
    models.py              the model folders a run times, made on first use
    report.py              BENCHMARKS.md and BENCHMARKS.json, and their reading of the targets
    measure.py             timing, FLOPs, matmul rates, traces, processes, memory
    targets.py             the targets, one line each
    config.py              the fixed shapes and the full and quick settings
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# XLA reads its flags once per process, at the first device listing, so CPU JIT is allowed from
# the start, here and in the row processes, which run this package too. It acts only where a
# session sets a JIT level, as devices.session_config does for --xla.
if '--tf_xla_cpu_global_jit' not in os.environ.get('TF_XLA_FLAGS', ''):
    os.environ['TF_XLA_FLAGS'] = (os.environ.get('TF_XLA_FLAGS', '')
                                  + ' --tf_xla_cpu_global_jit').strip()
