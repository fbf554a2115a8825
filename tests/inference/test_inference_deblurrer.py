"""`Deblurrer`: what it accepts (uint8 and uint16 at their true scale, floats in [0, 1]; anything
else is one line naming the dtype, shape and range), what it returns (the input's kind, and the
`Deblurred` result with the map, level and readout), a network output that is not finite (an
error, never an image), the compilation cache it turns on, and a missing checkpoint."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ifan_jax import checkpoint
from ifan_jax.inference import DeblurError, Deblurred, Deblurrer, intent, tiling

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
        "deblur": lambda x: d.deblur(x, schedule=d.schedule(H, W, 0)).output,
        "deblur_whole": d.deblur_whole,
        "deblur_tiled": lambda x: d.deblur_tiled(x, tile=32, overlap=16),
    }


@pytest.mark.slow
@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535)])
def test_integer_arrays_are_read_at_their_true_scale(deblurrer, dtype, scale):
    pixels = np.round(_photo() * scale).astype(dtype)
    as_float = pixels.astype(np.float32) * np.float32(1 / scale)
    for name, entry in _entries(deblurrer).items():
        got = entry(pixels).astype(np.float32)
        want = entry(as_float)
        if got.dtype != want.dtype or name.startswith("__call__"):
            want = np.rint(np.clip(want, 0, 1) * scale)  # __call__ gives the input's kind back
        np.testing.assert_array_equal(got, want, err_msg=name)
    # ...and the result is a deblurred photo, not a saturated one (a uint8 array read as floats in
    # [0, 255] came out ~77% white).
    out = deblurrer(as_float)
    assert (out >= 0.999).mean() < 0.1
    assert np.abs(out - as_float).mean() < 0.1


def test_the_input_kind_comes_back_rounded(deblurrer, tmp_path):
    """uint8 in, uint8 out; uint16 in, uint16 out (rounded, not truncated); float in, float32 out.
    So a photo from Pillow goes back to Pillow as it is."""
    photo = _photo()
    result = deblurrer.deblur(photo)
    assert result.image.dtype == np.float32 and result.output.dtype == np.float32
    for dtype, scale in ((np.uint8, 255), (np.uint16, 65535)):
        pixels = np.rint(photo * scale).astype(dtype)
        out = deblurrer(pixels)
        assert out.dtype == dtype and out.shape == (H, W, 3)
        exact = deblurrer.deblur(pixels).output * np.float32(scale)  # as float32 scales it
        np.testing.assert_array_equal(out, np.rint(exact).astype(dtype))
        assert (exact - np.floor(exact) > 0.5).any()  # rounding and truncation differ here
        # Strength 0: the very pixels given.
        np.testing.assert_array_equal(deblurrer(pixels, strength=0), pixels)
    assert deblurrer(photo.astype(np.float64)).dtype == np.float32
    # The README's line: a Pillow photo in, a Pillow photo out.
    path = tmp_path / "photo.png"
    Image.fromarray(np.rint(photo * 255).astype(np.uint8)).save(path)
    sharp = Image.fromarray(deblurrer(np.asarray(Image.open(path))))
    assert sharp.size == (W, H) and sharp.mode == "RGB"
    # return_defocus keeps working: the same image and the result's map.
    pixels = np.rint(photo * 255).astype(np.uint8)
    image, defocus = deblurrer(pixels, return_defocus=True)
    np.testing.assert_array_equal(image, deblurrer(pixels))
    np.testing.assert_array_equal(defocus, deblurrer.deblur(pixels).defocus)
    assert defocus.shape == (H, W) and defocus.dtype == np.float32


def test_the_result_reblends_without_the_network(deblurrer, monkeypatch):
    """`deblur` returns the map, the level, the readout and the strength; `reblend` gives what a new
    `deblur` with those settings gives, without running the network."""
    pixels = np.rint(_photo(1) * 255).astype(np.uint8)
    first = deblurrer.deblur(pixels)
    assert isinstance(first, Deblurred) and first.level is None and first.strength == 1.0
    assert first.defocus.shape == (H, W) and first.image.dtype == np.uint8
    want = deblurrer.deblur(pixels, strength=0.6, keep_bokeh="auto")
    monkeypatch.setattr(deblurrer.forward, "compiled", None)  # no network from here on
    again = first.reblend(strength=0.6, keep_bokeh="auto")
    np.testing.assert_array_equal(again.image, want.image)
    assert again.level == want.level == pytest.approx(intent.auto_level(first.defocus))
    assert again.strength == 0.6 and again.readout == want.readout
    assert again.readout.psnr == pytest.approx(intent.psnr(first.input, again.output))
    assert "keep-bokeh level" in again.readout_line() and "strength 0.6" in again.readout_line()
    # A crop of the result is the same blend of the window, exactly.
    rows, cols = slice(5, 30), slice(10, 50)
    np.testing.assert_array_equal(again.crop(rows, cols).output, again.output[rows, cols])


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
        with pytest.raises(DeblurError) as e:
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


@pytest.mark.slow
def test_an_output_that_is_not_finite_is_an_error_not_an_image(tiny_official_checkpoint):
    """Weights that make the network put out NaN (one damaged tensor of the reconstructor): every
    entry that returns a photo refuses in one line, whole or tiled."""
    config, params = checkpoint.load_params(tiny_official_checkpoint)
    leaf = params["reconstructor"]["conv_out"]
    leaf = {k: np.full_like(np.asarray(v), np.nan) if k == "kernel" else v for k, v in leaf.items()}
    params = {**params, "reconstructor": {**params["reconstructor"], "conv_out": leaf}}
    damaged = Deblurrer(params, config)
    for call in (lambda: damaged(_photo()), lambda: damaged(_photo(), tile=32, overlap=16),
                 lambda: damaged.deblur(_photo(), strength=0.5)):
        with pytest.raises(DeblurError) as e:
            call()
        message = str(e.value)
        assert "\n" not in message and "not finite" in message and "weights" in message, message


def test_a_missing_checkpoint_says_where_the_official_weights_are(tmp_path):
    with pytest.raises(checkpoint.CheckpointError) as e:
        Deblurrer.from_checkpoint(str(tmp_path / "IFAN.pytorch"))
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'IFAN.pytorch'}: no such file or folder; ")
    assert "codeslake/IFAN" in message and "checkpoints.zip" in message and "\n" not in message


_CACHE_PROBE = r"""
import json, sys
import numpy as np
import jax
from jax import monitoring
hits = []
monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
from ifan_jax.inference import Deblurrer
d = Deblurrer.from_checkpoint(sys.argv[1], compile_cache=sys.argv[2] == "on")
d(np.zeros((24, 32, 3), np.float32), tile=0)
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir, "hits": len(hits)}))
"""


@pytest.mark.slow
def test_the_python_api_uses_the_commands_compilation_cache(tiny_official_checkpoint, tmp_path):
    """A new process's Deblurrer finds the compilation of the last one on disk, in the folder the
    deblur command uses ($IFAN_JAX_CACHE/xla); compile_cache=False leaves JAX as it is."""
    env = {**os.environ, "IFAN_JAX_CACHE": str(tmp_path / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def probe(mode):
        proc = subprocess.run([sys.executable, "-c", _CACHE_PROBE, tiny_official_checkpoint, mode],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    off = probe("off")
    assert off["dir"] is None and not (tmp_path / "cache" / "xla").exists()
    first, second = probe("on"), probe("on")
    assert first["dir"] == second["dir"] == str(tmp_path / "cache" / "xla")
    assert os.listdir(tmp_path / "cache" / "xla")
    assert second["hits"] > 0 and second["hits"] >= first["hits"]
    # A directory JAX already has (the user's) is kept.
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "mine")
    assert probe("on")["dir"] == str(tmp_path / "mine")

