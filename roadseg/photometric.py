"""Photometric augmentation of training images."""
import numpy as np


def jitter(image, rng):
    """Brightness (+-32), contrast and saturation (x0.5-1.5) jitter, each with probability 1/2,
    as mmsegmentation's PhotoMetricDistortion (after SSD, Liu et al., arXiv 1512.02325)."""
    image = image.astype(np.float32)
    if rng.random() < 0.5:
        image += rng.uniform(-32, 32)
    if rng.random() < 0.5:
        image *= rng.uniform(0.5, 1.5)
    if rng.random() < 0.5:
        gray = (image @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        image = gray + (image - gray) * rng.uniform(0.5, 1.5)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
