"""PSNR, SSIM and MAE against hand-computed values and scikit-image."""

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from ifan_jax.evaluation import metrics


def _constant(value, shape=(16, 24, 3)):
    return np.full(shape, value, np.float32)


def test_psnr_hand_computed():
    # MSE 0.01 over every pixel and channel -> 10 log10(1 / 0.01) = 20 dB exactly.
    assert metrics.psnr(_constant(0.5), _constant(0.6)) == pytest.approx(20.0, abs=1e-5)
    # One channel off by 0.3, the others exact: MSE = 0.09 / 3 = 0.03.
    a, b = _constant(0.2), _constant(0.2)
    b[..., 1] = 0.5
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(1 / 0.03), abs=1e-4)


def test_psnr_identical_is_infinite():
    a = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    assert metrics.psnr(a, a) == math.inf


def test_mae_is_the_mean_of_per_channel_means():
    a = _constant(0.0)
    b = np.concatenate([_constant(0.1, (16, 24, 1)), _constant(0.2, (16, 24, 1)),
                        _constant(0.6, (16, 24, 1))], axis=-1)
    assert metrics.mae(a, b) == pytest.approx((0.1 + 0.2 + 0.6) / 3, abs=1e-6)
    assert metrics.mae(b, a) == pytest.approx(0.3, abs=1e-6)


def test_ssim_of_constant_images_hand_computed():
    # Constant windows: variances and covariance are 0, so SSIM = (2 x y + C1) / (x^2 + y^2 + C1),
    # C1 = (0.01 * data_range)^2, at every pixel.
    x, y, c1 = 0.3, 0.5, 0.01**2
    expected = (2 * x * y + c1) / (x**2 + y**2 + c1)
    assert metrics.ssim(_constant(x), _constant(y)) == pytest.approx(expected, rel=1e-5)
    assert metrics.ssim(_constant(x), _constant(x)) == pytest.approx(1.0)


def test_ssim_matches_scikit_image_call_of_the_official_evaluation():
    rng = np.random.default_rng(1)
    a = rng.random((40, 56, 3), dtype=np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape).astype(np.float32), 0, 1)
    expected = structural_similarity(a, b, data_range=1, channel_axis=-1)
    assert metrics.ssim(a, b) == expected
    assert 0.0 < metrics.ssim(a, b) < 1.0


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(_constant(0.1, (8, 8, 3)), _constant(0.1, (8, 9, 3)))
    with pytest.raises(ValueError, match="H x W x 3"):
        metrics.mae(_constant(0.1, (8, 8)), _constant(0.1, (8, 8)))
