"""Deblurring with intent: the blend, the keep-bokeh mask, the automatic level, the
readout, and Deblurrer's strength / keep_bokeh on the tiny model (whole and tiled)."""

import json
import math

import jax
import numpy as np
import pytest
from official_reference import reference_state_dict
from scipy import ndimage

from ifan_jax.config import load_config
from ifan_jax.inference import Deblurrer, intent
from ifan_jax.models import abstract_params

RNG = np.random.default_rng(24)


def _pair(h=40, w=56):
    return RNG.random((h, w, 3), dtype=np.float32), RNG.random((h, w, 3), dtype=np.float32)


# --------------------------------------------------------------------------- the blend

def test_strength_zero_is_the_input_and_one_the_deblurred_exactly():
    x, y = _pair()
    keep = RNG.random(x.shape[:2]).astype(np.float32)
    np.testing.assert_array_equal(intent.blend(x, y, 0.0), x)
    np.testing.assert_array_equal(intent.blend(x, y, 0.0, keep), x)
    np.testing.assert_array_equal(intent.blend(x, y, 1.0), y)
    np.testing.assert_array_equal(intent.blend(x, y), y)
    # keep = 1 is the input, keep = 0 at strength 1 the deblurred image, bit for bit.
    ones, zeros = np.ones(x.shape[:2], np.float32), np.zeros(x.shape[:2], np.float32)
    np.testing.assert_array_equal(intent.blend(x, y, 0.7, ones), x)
    np.testing.assert_array_equal(intent.blend(x, y, 1.0, zeros), y)
    # 8-bit inputs stay their own values when quantised back.
    pixels = RNG.integers(0, 256, x.shape).astype(np.uint8)
    x8 = pixels.astype(np.float32) * np.float32(1 / 255)
    assert (np.rint(intent.blend(x8, y, 0.0) * 255).astype(np.uint8) == pixels).all()


def test_blend_between_is_the_formula():
    x, y = _pair()
    keep = RNG.random(x.shape[:2]).astype(np.float32)
    got = intent.blend(x, y, 0.6, keep)
    np.testing.assert_allclose(got, x + 0.6 * (1 - keep[..., None]) * (y - x), atol=1e-6)
    np.testing.assert_allclose(intent.blend(x, y, 0.25), x + 0.25 * (y - x), atol=1e-6)
    assert got.dtype == np.float32 and got.shape == x.shape


@pytest.mark.parametrize("strength", [-0.01, 1.01, float("nan"), "strong", None])
def test_bad_strength_is_one_line(strength):
    x, y = _pair(8, 8)
    with pytest.raises(ValueError) as e:
        intent.blend(x, y, strength)
    assert "strength" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("level", [0, -0.5, float("inf"), float("nan"), "high", True])
def test_bad_level_is_one_line(level):
    with pytest.raises(ValueError) as e:
        intent.check_keep_bokeh(level)
    assert "level" in str(e.value) and "\n" not in str(e.value)
    if not isinstance(level, (str, bool)):
        with pytest.raises(ValueError):
            intent.keep_mask(np.ones((4, 4), np.float32), level)


def test_keep_bokeh_values():
    assert intent.check_keep_bokeh(None) is None
    assert intent.check_keep_bokeh("auto") == intent.check_keep_bokeh(" AUTO ") == "auto"
    assert intent.check_keep_bokeh("0.3") == 0.3 and intent.check_keep_bokeh(2) == 2.0


# --------------------------------------------------------------------------- the mask

def test_ramp_matches_its_definition():
    h, w, level = 70, 90, 0.4
    yy, xx = np.mgrid[0:h, 0:w]
    # |d| rising left to right with a sign pattern (the mask uses |d|) and a bright square.
    d = (0.01 * xx * np.sign(np.sin(yy / 3 + 0.2))).astype(np.float32)
    d[20:30, 60:75] = -3.0
    keep = intent.keep_mask(d, level)
    a = ndimage.uniform_filter(np.abs(d).astype(np.float64), size=33, mode="nearest")
    t = np.clip((a - level) / level, 0, 1)
    np.testing.assert_allclose(keep, t * t * (3 - 2 * t), atol=1e-6)
    assert keep.dtype == np.float32 and keep.shape == (h, w)
    assert (keep[a <= level] == 0).all() and (keep[a >= 2 * level] == 1).all()
    between = (a > level * 1.05) & (a < level * 1.95)
    assert between.any() and ((keep[between] > 0) & (keep[between] < 1)).all()
    # The same mask, computed with a box of my own: 33 x 33 window, edges replicated.
    padded = np.pad(np.abs(d).astype(np.float64), 16, mode="edge")
    box = np.lib.stride_tricks.sliding_window_view(padded, (33, 33)).mean(axis=(-1, -2))
    np.testing.assert_allclose(intent.smoothed(d), box, atol=1e-12)


def test_mask_values_on_constant_maps_and_window_reach():
    level = 0.2
    for value, expected in [(0.1, 0.0), (0.2, 0.0), (0.3, 0.5), (0.4, 1.0), (2.0, 1.0)]:
        keep = intent.keep_mask(np.full((20, 30), -value, np.float32), level)
        np.testing.assert_allclose(keep, expected, atol=1e-6)  # t = (v - L) / L; smoothstep(0.5) = 0.5
    # One strong pixel reaches 16 pixels, not 17: the 33 x 33 window.
    d = np.zeros((81, 81), np.float32)
    d[40, 40] = 33 * 33 * 1.0  # its box mean is 1.0 inside the window
    keep = intent.keep_mask(d, 0.5)
    assert keep[40 - 16, 40 + 16] == 1.0 and keep[40, 40 + 17] == 0.0 and keep[40 - 17, 40] == 0.0


def test_auto_level_is_two_thirds_of_otsu():
    from skimage.filters import threshold_otsu

    h, w = 60, 80
    near = np.abs(RNG.normal(0.05, 0.03, (h, w)))
    far = np.abs(RNG.normal(0.7, 0.1, (h, w)))
    d = np.where(np.arange(w)[None] > 50, far, near).astype(np.float32) * np.sign(RNG.normal(size=(h, w)))
    theta = threshold_otsu(np.abs(d), nbins=256)
    assert intent.otsu_threshold(np.abs(d)) == pytest.approx(theta, rel=1e-6)
    assert intent.auto_level(d) == pytest.approx(2 * theta / 3, rel=1e-6)
    assert 0.05 < theta < 0.7  # between the two populations
    level = intent.resolve_level(d, "auto")
    keep = intent.keep_mask(d, level)
    assert keep[:, 70:].min() > 0.99 and keep[:, :20].max() == 0.0  # far kept, near deblurred
    # An all-zero map keeps nothing; a constant map has its value as Otsu's threshold.
    zero = np.zeros((10, 10), np.float32)
    assert intent.auto_level(zero) > 0 and (intent.keep_mask(zero, intent.auto_level(zero)) == 0).all()
    assert intent.otsu_threshold(np.full(7, 0.3)) == pytest.approx(0.3)


def test_apply_reports_the_level_and_needs_a_map():
    x, y = _pair(48, 48)
    d = np.where(np.arange(48)[None] > 24, 1.0, 0.05) * np.ones((48, 1), np.float32)
    done = intent.apply(x, y, d, 0.5, "auto")
    assert done.level == pytest.approx(intent.auto_level(d))
    np.testing.assert_array_equal(done.output, intent.blend(x, y, 0.5, intent.keep_mask(d, done.level)))
    assert intent.apply(x, y, d, 1.0, 0.3).level == 0.3
    assert intent.apply(x, y, None).keep is None
    with pytest.raises(ValueError, match="defocus map"):
        intent.apply(x, y, None, 1.0, "auto")


# --------------------------------------------------------------------------- the readout

def test_readout_content():
    h, w = 50, 40
    x, y = _pair(h, w)
    d = np.zeros((h, w), np.float32)
    d[:10] = 0.6   # 20% above 0.5
    d[10:24] = -0.3  # 28% more above 0.25 (|d|)
    d[24:30] = 0.2   # 12% more above 0.125
    r = intent.readout(x, y, d)
    assert r.shares == {0.125: pytest.approx(0.6), 0.25: pytest.approx(0.48), 0.5: pytest.approx(0.2)}
    assert r.out_of_focus == pytest.approx(0.48)
    assert r.median == pytest.approx(0.2)  # sorted |d|: 20 rows of 0, 6 of 0.2, 14 of 0.3, 10 of 0.6
    mse = np.mean((x.astype(np.float64) - y) ** 2)
    assert r.psnr == pytest.approx(-10 * np.log10(mse))
    assert r.sentence == "48% of the photo is out of focus; deblurred."
    data = json.loads(json.dumps(r.to_json(), allow_nan=False))
    assert data["out_of_focus_share"] == pytest.approx(0.48) and data["out_of_focus_level"] == 0.25
    assert data["shares_above_level"] == {"0.125": pytest.approx(0.6), "0.25": pytest.approx(0.48),
                                          "0.5": pytest.approx(0.2)}
    assert data["median_abs_defocus"] == pytest.approx(0.2)
    assert data["psnr_db"] == pytest.approx(r.psnr, abs=1e-3)
    assert "48% of the photo" in r.line() and "PSNR input vs output" in r.line()
    # Unchanged output: psnr inf (null in JSON); mostly in focus below the share.
    calm = np.full((h, w), 0.01, np.float32)
    calm[:4] = 1.0  # 8% out of focus
    r = intent.readout(x, x, calm)
    assert math.isinf(r.psnr) and r.to_json()["psnr_db"] is None
    assert r.sentence == "Mostly in focus: little to deblur." and "output = input" in r.line()
    assert intent.readout(x, y, None).shares is None


def test_page_constants_are_the_module_numbers():
    c = intent.page_constants()
    assert c["box_radius"] == 16 and c["otsu_bins"] == 256 and c["auto_level_factor"] == pytest.approx(2 / 3)
    assert c["levels"] == [0.125, 0.25, 0.5] and c["out_of_focus_level"] in c["levels"]
    assert c["mostly_sharp_share"] == intent.MOSTLY_SHARP_SHARE
    assert "{percent}" in c["sentences"]["out_of_focus"] and c["sentences"]["mostly_sharp"]
    # The levels are exact in float32: the page's Float32Array comparisons match these.
    assert all(float(np.float32(v)) == v for v in c["levels"])
    json.dumps(c, allow_nan=False)


# --------------------------------------------------------------------------- Deblurrer, tiny model

@pytest.fixture(scope="module")
def tiny():
    from ifan_jax.weights.convert import convert_state_dict

    params, config = convert_state_dict(reference_state_dict("official"), "official")
    return Deblurrer(params, config)


def _photo(h=96, w=160):
    """Smooth on the left, noisy on the right: the tiny model's map differs between the halves."""
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)], -1)
    noisy = np.clip(image + 0.3 * np.random.default_rng(1).standard_normal(image.shape), 0, 1)
    return np.where((x > w // 2)[..., None], noisy, image).astype(np.float32)


def _level(dmap):
    a = intent.smoothed(dmap)
    assert a.max() > 2.2 * a.min()  # the map has both a mild and a strong part
    return float(a.min() + a.max()) / 3


@pytest.mark.slow
def test_deblurrer_strength_and_keep_bokeh_tiled_and_whole(tiny):
    image = _photo()
    sharp, dmap = tiny(image, tile=0, return_defocus=True)
    np.testing.assert_array_equal(tiny(image, tile=0, strength=0.0), image)
    np.testing.assert_array_equal(tiny(image, tile=0, strength=1.0), sharp)
    level = _level(dmap)
    whole, whole_map = tiny(image, tile=0, keep_bokeh=level, return_defocus=True)
    np.testing.assert_array_equal(whole_map, dmap)
    np.testing.assert_array_equal(whole, intent.blend(image, sharp, 1.0, intent.keep_mask(dmap, level)))

    # Tiled: the mask comes from the blended whole-photo map, not tile by tile.
    tiled_sharp, tiled_map = tiny(image, tile=64, overlap=16, return_defocus=True)
    tiled = tiny(image, tile=64, overlap=16, keep_bokeh=level, strength=0.8)
    np.testing.assert_array_equal(
        tiled, intent.blend(image, tiled_sharp, 0.8, intent.keep_mask(tiled_map, level)))
    # ... and agrees with the whole-photo run (as the plain outputs do).
    whole8 = tiny(image, tile=0, keep_bokeh=level, strength=0.8)
    assert intent.psnr(whole8, tiled) > 40
    keep_whole, keep_tiled = intent.keep_mask(dmap, level), intent.keep_mask(tiled_map, level)
    # The masks differ only as the tiled and whole maps do (seams of small tiles): little.
    assert np.abs(keep_whole - keep_tiled).mean() < 0.02
    assert (keep_whole == 1).mean() > 0.1 and (keep_whole == 0).mean() > 0.005  # both ends used
    auto = tiny(image, tile=64, overlap=16, keep_bokeh="auto")
    keep = intent.keep_mask(tiled_map, intent.auto_level(tiled_map))
    np.testing.assert_array_equal(auto, intent.blend(image, tiled_sharp, 1.0, keep))


def test_deblurrer_bad_intent_values_and_a_model_without_the_dme(tiny):
    image = _photo(32, 32)
    with pytest.raises(ValueError, match="strength"):
        tiny(image, tile=0, strength=2.0)
    with pytest.raises(ValueError, match="level"):
        tiny(image, tile=0, keep_bokeh=-1)
    config = load_config("tiny", "variant=F").model.to_dict()
    params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                    abstract_params(config, with_reblur=False))
    no_map = Deblurrer(params, {**config, "use_reblur": False})
    with pytest.raises(ValueError) as e:
        no_map(image, tile=0, keep_bokeh="auto")
    assert "no disparity map estimator" in str(e.value) and "\n" not in str(e.value)
