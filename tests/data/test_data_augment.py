"""The paper's training augmentations (ifan_jax.data.augment): each one's probability over many
seeded draws, and its effect, against numpy references of the official loader's operations."""

import math

import numpy as np
import pytest
import tensorflow as tf

from ifan_jax.data import augment
from ifan_jax.data.pipeline import example_key

DRAWS = 4000


def _gray_reference(image):
    """The official loader's grayscale, in float64."""
    lin = 0.2126 * image[..., 0] + 0.7152 * image[..., 1] + 0.07228 * image[..., 2]
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
    return np.repeat(srgb[..., None], 3, axis=-1)


def _area_matrix(n_in, n_out):
    """cv2.INTER_AREA's weights along one axis: box [i s, (i+1) s), s = n_in / n_out, cut pixels
    weighted by the fraction inside, normalised by s."""
    s = n_in / n_out
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        a, b = i * s, (i + 1) * s
        for j in range(math.floor(a), min(math.ceil(b), n_in)):
            weights[i, j] = min(j + 1, b) - max(j, a)
    return weights / s


def _area_reference(image, height, width):
    wy, wx = _area_matrix(image.shape[0], height), _area_matrix(image.shape[1], width)
    return np.einsum("ih,hwc,jw->ijc", wy, image.astype(np.float64), wx)


def _image(seed, height=40, width=44):
    rng = np.random.default_rng(seed)
    return rng.random((height, width, 3)).astype(np.float32)


def test_grayscale_matches_official_formula():
    image = _image(0)
    image[0, :4] = [[0, 0, 0], [0.001, 0.002, 0.003], [1, 1, 1], [0.0031, 0.0031, 0.0031]]
    got = augment.to_grayscale(tf.constant(image)).numpy()
    np.testing.assert_allclose(got, _gray_reference(image.astype(np.float64)), atol=2e-6)
    assert np.all(got[..., 0] == got[..., 1]) and np.all(got[..., 1] == got[..., 2])


@pytest.mark.parametrize("factor", [0.7, 0.73, 0.8, 0.91, 1.0])
def test_area_rescale_matches_cv2_inter_area_rule(factor):
    image = _image(1, 37, 53)
    h, w = augment.scaled_size(37, 53, factor, 8)
    h, w = int(h), int(w)
    assert (h, w) == (int(37 * factor), int(53 * factor))
    got = augment.rescale_area(tf.constant(image), h, w).numpy()
    np.testing.assert_allclose(got, _area_reference(image, h, w), atol=1e-5)  # float32 sums
    # Never below the crop size.
    assert tuple(int(v) for v in augment.scaled_size(37, 53, 0.5, 30)) == (30, 30)


def _params(cfg, seed=0, n=DRAWS):
    ds = tf.data.Dataset.range(n).map(lambda i: augment.sample_params(example_key(seed, i), cfg))
    return next(ds.batch(n).as_numpy_iterator())


def _within(count, n, p, sigmas=5.0):
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_probabilities_and_ranges_over_many_draws():
    cfg = augment.augment_config(None)
    params = _params(cfg)
    assert _within(params["noise"].sum(), DRAWS, 0.05)
    assert _within(params["gray"].sum(), DRAWS, 0.3)
    assert _within(params["scale"].sum(), DRAWS, 0.5)
    sigma, factor = params["sigma"], params["factor"]
    assert sigma.min() >= 0.001 and sigma.max() <= math.sqrt(0.005)
    assert abs(sigma.mean() - (0.001 + math.sqrt(0.005)) / 2) < 0.002  # uniform
    assert factor.min() >= 0.7 and factor.max() <= 1.0 and abs(factor.mean() - 0.85) < 0.01
    # The gates are independent draws.
    both = (params["gray"] & params["scale"]).sum()
    assert _within(both, DRAWS, 0.15)
    # Other settings, and the extremes.
    params = _params(augment.augment_config(dict(noise_prob=1.0, gray_prob=0.0, scale_prob=0.9)))
    assert params["noise"].all() and not params["gray"].any()
    assert _within(params["scale"].sum(), DRAWS, 0.9)
    with pytest.raises(ValueError, match="unknown key"):
        augment.augment_config({"blur_prob": 0.1})
    with pytest.raises(ValueError, match="scale_min"):
        augment.augment_config({"scale_min": 0.0})


def _run(images, cfg, crop, n, seed=0):
    consts = {k: tf.constant(v) for k, v in images.items()}
    ds = tf.data.Dataset.range(n).map(
        lambda i: augment.augment_example(consts, example_key(seed, i), cfg, crop, True))
    return list(ds.as_numpy_iterator())


@pytest.mark.slow
def test_effects_over_many_draws_match_references():
    """Noise only on c/l/r, grayscale on all four, area rescale then one crop at the same place:
    every output equals the numpy reference rebuilt from its draws."""
    image = _image(3)
    outs = _run({k: image for k in ("c", "l", "r", "gt")}, augment.augment_config(None), 24, 300)
    seen = {"noise": 0, "gray": 0, "scale": 0}
    for out in outs:
        np.testing.assert_array_equal(out["c"], out["l"])
        np.testing.assert_array_equal(out["c"], out["r"])
        assert bool(np.any(out["c"] != out["gt"])) == bool(out["noise"])  # gt never noisy
        channels_equal = np.all(out["gt"] == out["gt"][..., :1])
        assert bool(channels_equal) == bool(out["gray"])
        expected = _gray_reference(image.astype(np.float64)) if out["gray"] else image
        h, w = image.shape[:2]
        nh, nw = int(h * np.float64(out["factor"])), int(w * np.float64(out["factor"]))
        if out["scale"] and (nh, nw) != (h, w):
            expected = _area_reference(expected, nh, nw)
        top, left = out["top"], out["left"]
        assert 0 <= top <= expected.shape[0] - 24 and 0 <= left <= expected.shape[1] - 24
        np.testing.assert_allclose(out["gt"], expected[top:top + 24, left:left + 24], atol=1e-5)
        for key in seen:
            seen[key] += bool(out[key])
    assert seen["noise"] > 0 and 30 < seen["gray"] < 150 and 90 < seen["scale"] < 210
    tops = {int(o["top"]) for o in outs if not o["scale"]}
    assert tops == set(range(40 - 24 + 1))  # every offset is reachable, edges included


@pytest.mark.slow
def test_noise_is_shared_by_c_l_r_with_the_drawn_sigma_and_clipped():
    cfg = augment.augment_config(dict(noise_prob=1.0, gray_prob=0.0, scale_prob=0.0))
    grey = np.full((64, 64, 3), 0.5, np.float32)
    images = {"c": grey, "l": grey * 0.9, "r": grey * 1.1, "gt": grey}
    for out in _run(images, cfg, 64, 20):
        noise = out["c"] - 0.5
        np.testing.assert_allclose(out["l"] - 0.45, noise, atol=1e-6)
        np.testing.assert_allclose(out["r"] - 0.55, noise, atol=1e-6)
        np.testing.assert_array_equal(out["gt"], grey)
        assert abs(noise.std() / out["sigma"] - 1) < 0.05
    ones = np.ones((16, 16, 3), np.float32)
    (out,) = _run({k: ones for k in ("c", "l", "r", "gt")}, cfg, 16, 1)
    assert out["c"].max() == 1.0 and out["c"].min() < 1.0


def test_same_key_same_example_other_key_other_example():
    image = _image(4)
    images = {k: image for k in ("c", "l", "r", "gt")}
    cfg = augment.augment_config(None)
    a, b = _run(images, cfg, 16, 8, seed=5), _run(images, cfg, 16, 8, seed=5)
    c = _run(images, cfg, 16, 8, seed=6)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x["gt"], z["gt"]) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("factor,top,left", [(0.7, 0, 0), (0.73, 5, 9), (0.91, 3, 20)])
def test_windowed_area_resample_equals_whole_image_rescale(factor, top, left):
    image = _image(6, 37, 53)
    h, w = int(37 * factor), int(53 * factor)
    whole = augment.rescale_area(tf.constant(image), h, w).numpy()[top:top + 8, left:left + 8]
    sh, sw = 37 / h, 53 / w
    r0, r1 = math.floor(top * sh), min(37, math.ceil((top + 8) * sh))
    c0, c1 = math.floor(left * sw), min(53, math.ceil((left + 8) * sw))
    window = tf.constant(image[r0:r1, c0:c1])
    x = augment.area_resample(window, 0, top, 8, sh, r0, taps=4)
    x = augment.area_resample(x, 1, left, 8, sw, c0, taps=4).numpy()
    np.testing.assert_allclose(x, whole, atol=1e-5)
