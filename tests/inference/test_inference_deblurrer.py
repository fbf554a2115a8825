"""What `Deblurrer` accepts as an image array: uint8 and uint16 at their true scale, floats in [0, 1];
anything else is a one-line ValueError naming the dtype, shape and range that were given."""

import numpy as np
import pytest

from ifan_jax.inference import Deblurrer, tiling

H, W = 40, 56


@pytest.fixture(scope="module")
def deblurrer(tiny_official_checkpoint):
    return Deblurrer.from_checkpoint(tiny_official_checkpoint)


def _photo(seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W] / W
    base = np.stack([0.5 + 0.4 * np.sin(7 * x + c) * np.cos(5 * y - c) for c in range(3)], -1)
    return np.clip(base + 0.03 * rng.standard_normal((H, W, 3)), 0, 1)


def _entries(d):
    """Every public entry that takes an image array, as image -> H x W x 3 output."""
    return {
        "__call__": lambda x: d(x),
        "__call__ tiled": lambda x: d(x, tile=32, overlap=16),
        "run": lambda x: d.run(x, d.schedule(H, W, 0)),
        "deblur_whole": d.deblur_whole,
        "deblur_tiled": lambda x: d.deblur_tiled(x, tile=32, overlap=16),
    }


@pytest.mark.slow
@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535)])
def test_integer_arrays_are_read_at_their_true_scale(deblurrer, dtype, scale):
    pixels = np.round(_photo() * scale).astype(dtype)
    as_float = pixels.astype(np.float32) * np.float32(1 / scale)
    for name, entry in _entries(deblurrer).items():
        got = entry(pixels)
        assert got.shape == (H, W, 3) and got.dtype == np.float32, name
        np.testing.assert_array_equal(got, entry(as_float), err_msg=name)
    # ...and the result is a deblurred photo, not a saturated one (a uint8 array read as floats in
    # [0, 255] came out ~77% white).
    out = deblurrer(pixels)
    assert (out >= 0.999).mean() < 0.1
    assert np.abs(out - as_float).mean() < 0.1


def test_float64_in_range_is_accepted_like_float32(deblurrer):
    image = _photo()
    np.testing.assert_array_equal(deblurrer(image), deblurrer(image.astype(np.float32)))
    defocus = deblurrer(image, return_defocus=True)[1]
    assert defocus.shape == (H, W)


@pytest.mark.parametrize("make,words", [
    (lambda x: x * 255.0, ["float64", f"({H}, {W}, 3)", "[0, 1]", "values in [", "255"]),
    (lambda x: x - 0.75, ["float64", "values in [-0.7"]),
    (lambda x: np.where(x > 0.5, np.nan, x), ["NaN"]),
    (lambda x: (x * 1000).astype(np.int32), ["int32", f"({H}, {W}, 3)"]),
    (lambda x: x > 0.5, ["bool"]),
    (lambda x: x[..., 0], ["float64", f"({H}, {W})", "H x W x 3"]),
    (lambda x: np.concatenate([x, x[..., :1]], -1), [f"({H}, {W}, 4)"]),
    (lambda x: x[None], [f"(1, {H}, {W}, 3)"]),
])
def test_anything_else_is_a_one_line_error_naming_what_was_given(deblurrer, make, words):
    bad = make(_photo())
    for name, entry in _entries(deblurrer).items():
        with pytest.raises(ValueError) as e:
            entry(bad)
        message = str(e.value)
        assert "\n" not in message and message.startswith("image must be"), (name, message)
        for word in words:
            assert word in message, (name, word, message)


def test_dual_pixel_views_are_checked_by_name(deblurrer):
    with pytest.raises(ValueError, match=r"^right must be .* uint8, uint16 .*float32 of shape \(4"):
        deblurrer.deblur_whole(_photo(), right=np.full((4, 4, 3), 2.0, np.float32))


def test_tiling_is_unchanged_for_float32(deblurrer):
    """The checks copy nothing and change nothing for the float32 images the tools pass."""
    image = _photo().astype(np.float32)
    forward = lambda x, right, left: deblurrer.run_batch(x)
    expected = tiling.deblur_tiled(forward, [image, None, None], 32, 16)
    np.testing.assert_array_equal(deblurrer.deblur_tiled(image, tile=32, overlap=16), expected)
