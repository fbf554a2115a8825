"""Image quality metrics as the official IFAN evaluation computes them.

All functions take two H x W x 3 float arrays in [0, 1] (the deblurred image and the sharp ground
truth, in either order) and return a Python float. LPIPS is in `ifan_jax.evaluation.lpips`.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

PEAK = 1.0


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected H x W x 3 images, got shape {a.shape}")
    return a, b


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(1 / MSE), MSE over all pixels and channels.

    Identical images give +inf.
    """
    a, b = _pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK**2 / mse)


def ssim(a, b) -> float:
    """Mean SSIM: scikit-image `structural_similarity(a, b, data_range=1, channel_axis=-1)`.

    That is the official evaluation's call (7 x 7 uniform window, per channel, then averaged);
    the arrays are used at their own float precision, as there.
    """
    a, b = _pair(a, b)
    return float(structural_similarity(a, b, data_range=PEAK, channel_axis=-1))


def mae(a, b) -> float:
    """Mean absolute error, the mean over the three channels of each channel's mean |a - b|."""
    a, b = _pair(a, b)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.mean(diff.mean(axis=(0, 1))))
