"""The defocus map: the disparity map estimator's output, upsampled, tiled, colour-mapped, written."""

import jax
import numpy as np
import pytest

from ifan_jax.config import load_config
from ifan_jax.inference import Deblurrer, defocus, pad_to_multiple
from ifan_jax.models import abstract_params

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def tiny_deblurrer(tiny_official_checkpoint):
    return Deblurrer.from_checkpoint(tiny_official_checkpoint)


def _image(h, w):
    y, x = np.mgrid[0:h, 0:w]
    smooth = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)], -1)
    return np.clip(smooth + 0.05 * RNG.standard_normal((h, w, 3)), 0, 1).astype(np.float32)


def _dme_output(deblurrer, image):
    """The model's own disparity output at 1/8 (training mode, the image as the right view: the
    disparity of that view is the DME's output on it), H/8 x W/8."""
    x = image[None]
    model = deblurrer.model.clone(use_reblur=False)  # the deblurrer keeps no reblurring network
    out = model.apply({"params": deblurrer.params}, x, x, x, x, train=True)
    return np.asarray(out["disparity"][0, ..., 0])


def _bilinear_half_pixel(low, factor=8):
    """Independent reference: bilinear upsampling, pixel centres at (i + 0.5) * factor, edges clamped."""
    def axis(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0, n_in - 1)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0
    h, w = low.shape
    y0, y1, fy = axis(h * factor, h)
    x0, x1, fx = axis(w * factor, w)
    rows = low[y0] * (1 - fy)[:, None] + low[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


@pytest.mark.slow
def test_defocus_is_the_dme_output_upsampled(tiny_deblurrer):
    image = _image(48, 64)
    sharp, dmap = tiny_deblurrer(image, tile=0, return_defocus=True)
    assert dmap.shape == (48, 64) and dmap.dtype == np.float32
    np.testing.assert_array_equal(sharp, tiny_deblurrer(image, tile=0))
    low = _dme_output(tiny_deblurrer, image)
    assert low.shape == (6, 8) and np.ptp(low) > 1e-3  # a map that varies, not a constant
    np.testing.assert_allclose(dmap, _bilinear_half_pixel(low), atol=1e-5)
    # The mean over each 8 x 8 block is close to its low-resolution value (no shift of the grid).
    blocks = dmap.reshape(6, 8, 8, 8).mean(axis=(1, 3))
    assert np.abs(blocks - low).max() < 0.25 * np.ptp(low)


@pytest.mark.slow
def test_defocus_of_any_size_is_padded_and_cropped_like_the_image(tiny_deblurrer):
    image = _image(45, 61)
    sharp, dmap = tiny_deblurrer(image, tile=0, return_defocus=True)
    assert sharp.shape == (45, 61, 3) and dmap.shape == (45, 61)
    low = _dme_output(tiny_deblurrer, pad_to_multiple(image))
    np.testing.assert_allclose(dmap, _bilinear_half_pixel(low)[:45, :61], atol=1e-5)


@pytest.mark.slow
def test_tiled_defocus_is_blended_like_the_image(tiny_deblurrer):
    image = _image(96, 136)
    whole_sharp, whole = tiny_deblurrer(image, tile=0, return_defocus=True)
    done = []
    sharp, tiled = tiny_deblurrer(image, tile=64, overlap=24, progress=done.append,
                                  return_defocus=True)
    assert sum(done) == 6  # 2 x 3 tiles
    np.testing.assert_array_equal(sharp, tiny_deblurrer(image, tile=64, overlap=24))
    assert tiled.shape == whole.shape
    # Away from the image border each tile sees enough context: the maps agree closely.
    error = np.abs(tiled - whole)[8:-8, 8:-8]
    assert error.max() < 0.1 * np.ptp(whole), (error.max(), np.ptp(whole))
    assert np.abs(whole_sharp - sharp).max() < 0.1


@pytest.mark.slow
def test_a_model_without_the_dme_has_no_defocus_map():
    config = load_config("tiny", "variant=F").model
    assert not config.use_disparity
    params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                    abstract_params(config, with_reblur=False))
    deblurrer = Deblurrer(params, config.to_dict())
    with pytest.raises(ValueError, match="no disparity map estimator") as e:
        deblurrer(np.zeros((32, 32, 3), np.float32), return_defocus=True)
    assert "\n" not in str(e.value)


def test_colorize_maps_robust_range_to_viridis():
    ramp = np.tile(np.linspace(-2.0, 3.0, 200, dtype=np.float32), (10, 1))
    ramp[0, 0] = 1e6  # one wild pixel must not squash the map
    rgb = defocus.colorize(ramp)
    assert rgb.shape == (10, 200, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[5, 0], defocus.VIRIDIS[0])
    np.testing.assert_array_equal(rgb[5, -1], defocus.VIRIDIS[-1])
    # Viridis grows in lightness: the luma rises along the ramp.
    luma = rgb[5].astype(float) @ [0.299, 0.587, 0.114]
    assert (np.diff(luma[2:-2]) >= -1).all() and luma[-1] - luma[0] > 150
    assert len(np.unique(rgb[5], axis=0)) > 100  # smoothly interpolated, not 32 bands
    flat = defocus.colorize(np.full((4, 4), 7.0, np.float32))
    assert (flat == flat[0, 0]).all()
    with pytest.raises(ValueError, match="H x W"):
        defocus.colorize(np.zeros((4, 4, 3)))


def test_write_defocus_and_raw(tmp_path):
    from PIL import Image

    dmap = RNG.standard_normal((20, 30)).astype(np.float32)
    png, raw = defocus.output_paths(str(tmp_path / "out" / "photo.jpg"))
    assert png.endswith("photo_defocus.png") and raw.endswith("photo_defocus.npy")
    defocus.write_defocus(png, dmap)
    defocus.write_raw(raw, dmap)
    np.testing.assert_array_equal(np.asarray(Image.open(png)), defocus.colorize(dmap))
    np.testing.assert_array_equal(np.load(raw), dmap)
    with pytest.raises(FileExistsError):
        defocus.write_raw(raw, dmap * 0)
    np.testing.assert_array_equal(np.load(raw), dmap)
