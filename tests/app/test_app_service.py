"""The web page's request processing (`ifan_jax.app.service`) and example photos, without a server."""

import os

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from ifan_jax import image_io
from ifan_jax.app import examples, service
from ifan_jax.data import synth
from ifan_jax.inference import Deblurrer, tiling

H, W = 72, 90  # not multiples of 8: the padding and cropping are exercised


@pytest.fixture(scope="module")
def deblurrer(tiny_official_checkpoint):
    return Deblurrer.from_checkpoint(tiny_official_checkpoint)


def _photo(seed=0, h=H, w=W):
    """A smooth colour image with fine detail, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.4 * np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], -1)
    return np.clip(base + 0.05 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("name,depth", [("p16.png", 16), ("t16.tif", 16), ("p8.png", 8),
                                        ("j8.jpg", 8)])
@pytest.mark.slow
def test_download_keeps_size_format_and_bit_depth_and_equals_deblurrer(
        tmp_path, deblurrer, name, depth):
    path = str(tmp_path / name)
    image_io.write_image(path, _photo(), bit_depth=depth)
    image, _ = image_io.read_image(path)
    result = service.Service(deblurrer, str(tmp_path / "work")).process(path)

    assert os.path.basename(result.output) == name.replace(".", "_deblurred.")
    out, info = image_io.read_image(result.output)
    assert out.shape == (H, W, 3) and info.bit_depth == depth
    assert info.format == image_io.format_for_path(path)
    expected, defocus = deblurrer(image, return_defocus=True)
    if name.endswith(".jpg"):  # lossy: exactly Deblurrer's output encoded as write_image encodes
        reference = str(tmp_path / "reference.jpg")
        image_io.write_image(reference, expected, image_io.read_image(path)[1])
        np.testing.assert_array_equal(out, image_io.read_image(reference)[0])
    else:  # lossless: exactly Deblurrer's output, quantised as write_image quantises
        stored = tifffile.imread(result.output) if name.endswith(".tif") else None
        got = image_io.quantize(out, depth) if stored is None else stored
        np.testing.assert_array_equal(got, image_io.quantize(expected, depth))
        # ...and within one quantisation step of the plain call (no defocus map requested).
        plain = image_io.quantize(deblurrer(image), depth).astype(np.int64)
        assert np.abs(got.astype(np.int64) - plain).max() <= 1
    with Image.open(result.defocus) as im:
        assert im.size == (W, H) and im.mode == "RGB"
    with Image.open(result.after) as im:
        assert im.size == (W, H)
    assert f"{W} x {H} pixels, {depth}-bit" in result.summary


def test_a_file_named_for_another_format_keeps_its_own_format_and_bits(tmp_path, deblurrer):
    path = str(tmp_path / "scan.tif")
    image_io.write_image(path, _photo(), bit_depth=16)
    misnamed = tmp_path / "scan.jpg"
    os.rename(path, misnamed)
    result = service.Service(deblurrer, str(tmp_path / "work")).process(str(misnamed))
    assert os.path.basename(result.output) == "scan_deblurred.tif"
    assert image_io.read_image(result.output)[1].bit_depth == 16


def test_progress_counts_every_tile_and_previews_are_bounded(tmp_path, deblurrer):
    h, w = 100, 150
    path = str(tmp_path / "big.png")
    image_io.write_image(path, _photo(1, h, w))
    calls = []
    svc = service.Service(deblurrer, str(tmp_path / "work"), tile=48, overlap=16, preview=64,
                          crop=40)
    result = svc.process(path, progress=lambda done, total: calls.append((done, total)))
    total = tiling.num_tiles(h, w, 48, 16)
    assert total > 4
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    with Image.open(result.before) as im:
        assert max(im.size) == 64
    with Image.open(result.crop_after) as im:
        assert im.size == (40, 40)
    assert f"{total} tiles" in result.summary


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"), (b"hello, not a photo", "not an image"),
    (None, "truncated or corrupt"), ("small", "image too small")])
def test_bad_uploads_are_one_line_errors_naming_the_file(tmp_path, deblurrer, content, reason):
    path = tmp_path / "upload_dir" / "photo.png"
    path.parent.mkdir()
    if content is None:
        Image.fromarray((_photo() * 255).astype(np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "small":
        Image.fromarray(np.zeros((8, 40, 3), np.uint8)).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(service.UploadError) as e:
        service.Service(deblurrer, str(tmp_path / "work")).process(str(path))
    message = str(e.value)
    assert message.startswith("photo.png: ") and reason in message
    assert "upload_dir" not in message and "\n" not in message


def test_crop_goes_where_the_defocus_map_is_largest_among_windows_that_show_something():
    """The largest |defocus| of this map is on a flat black patch (what the page's crop once
    showed: a near-black square); the crop goes to the most out-of-focus window with content."""
    h, w = 300, 500
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w]
    image = (0.5 + 0.3 * np.sin(xx / 3.0)[..., None] * np.cos(yy / 5.0)[..., None]
             + 0.05 * rng.standard_normal((h, w, 3))).astype(np.float32)
    image[:120, 300:] = 0.01  # a flat, nearly black corner
    defocus = np.zeros((h, w), np.float32)
    defocus[:120, 300:] = 5.0  # the map is largest there
    defocus[200:270, 40:110] = -4.5  # in front of the focal plane: negative, large magnitude
    row, col = service.crop_centre(image, defocus, 64)
    assert 200 <= row < 270 and 40 <= col < 110
    rows, cols = service.crop_window(h, w, (row, col), 64)
    assert image[rows, cols].std() > 0.1  # the crop shows something
    # The map alone would have picked the black corner.
    blur = ndimage.uniform_filter(np.abs(defocus), 64, mode="constant")
    assert np.unravel_index(np.argmax(blur), blur.shape)[1] >= 300
    # Without a map: the window with the most spread, never the flat corner.
    row, col = service.crop_centre(image, None, 64)
    assert not (row < 120 and col >= 300)
    rows, cols = service.crop_window(300, 500, (295, 2), 64)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (236, 300, 0, 64)
    rows, cols = service.crop_window(30, 500, (15, 250), 64)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (30, 64)


def test_only_the_newest_request_folders_are_kept(tmp_path, deblurrer):
    path = str(tmp_path / "p.png")
    image_io.write_image(path, _photo())
    work = tmp_path / "work"
    svc = service.Service(deblurrer, str(work), keep=2)
    outputs = [svc.process(path).output for _ in range(4)]
    assert len(os.listdir(work)) == 2
    assert [os.path.exists(p) for p in outputs] == [False, False, True, True]


@pytest.mark.slow
def test_examples_are_rendered_once_and_blurred(tmp_path):
    folder = tmp_path / "examples"
    found = examples.ensure_examples(str(folder))
    assert [label for _, label in found][0] == "Motorcycle (measured depth)"
    for path, _ in found:
        with Image.open(path) as im:
            assert im.size == (examples.SIZE, examples.SIZE) and im.mode == "RGB"
    stamps = [os.stat(p).st_mtime_ns for p, _ in found]
    assert examples.ensure_examples(str(folder)) == found
    assert [os.stat(p).st_mtime_ns for p, _ in found] == stamps  # reused, not rendered again
    # The first example is the synthetic renderer's blurred view of its scene, and that scene's
    # sharp photo has clearly more detail.
    photo = {p.name: p for p in synth.load_photos()}[examples.EXAMPLES[0][0]]
    scene = synth.make_scene(photo, np.random.default_rng([examples.SEED, 0]), examples.SIZE,
                             examples.MAX_COC)
    blurred = np.asarray(Image.open(found[0][0]), np.float32) / 255
    np.testing.assert_allclose(blurred, scene["c"], atol=0.5 / 255 + 1e-6)
    detail = lambda im: np.abs(np.diff(im, axis=1)).mean()
    assert detail(blurred) < 0.8 * detail(scene["gt"])

    other = tmp_path / "mine"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not an examples folder"):
        examples.ensure_examples(str(other))
    assert (other / "holiday.jpg").exists()


@pytest.mark.slow
def test_examples_follow_ifan_jax_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IFAN_JAX_CACHE", str(tmp_path / "cache"))
    assert examples.default_dir() == str(tmp_path / "cache" / "app_examples")
    found = examples.ensure_examples()
    assert all(path.startswith(str(tmp_path / "cache" / "app_examples") + os.sep)
               for path, _ in found)
    assert not (tmp_path / "home").exists()
    monkeypatch.delenv("IFAN_JAX_CACHE")
    assert examples.default_dir() == str(tmp_path / "home" / ".cache" / "ifan_jax" / "app_examples")


@pytest.mark.slow
def test_controls_reblend_the_last_photo_without_the_network(tmp_path, deblurrer, monkeypatch):
    """Strength and keep-bokeh: `reblend` makes the previews only, `download` then writes the full
    resolution file, exactly what `Deblurrer.deblur` gives with those settings; no network run."""
    from ifan_jax.inference import intent

    path = str(tmp_path / "p16.png")
    image_io.write_image(path, _photo(2), bit_depth=16)
    image, _ = image_io.read_image(path)
    svc = service.Service(deblurrer, str(tmp_path / "work"))
    first = svc.process(path)
    sharp, dmap = deblurrer(image, return_defocus=True)
    assert first.readout.sentence == intent.readout(image, sharp, dmap).sentence
    assert first.readout_text == first.readout.line() and "median" in first.readout_text
    assert first.auto_level == pytest.approx(intent.auto_level(dmap))  # ready for the switch

    monkeypatch.setattr(deblurrer.forward, "compiled", None)  # no network run from here on
    half = svc.reblend(first.key, strength=0.5)
    assert half.output is None and half.readout is None  # the previews only, at once
    assert half.after != first.after and half.before == first.before
    half = svc.download(half)
    expected = intent.blend(image, sharp, 0.5)
    got = image_io.read_image(half.output)[0]
    np.testing.assert_array_equal(image_io.quantize(got, 16), image_io.quantize(expected, 16))
    assert os.path.basename(half.output) == "p16_deblurred.png" and half.output != first.output
    zero = svc.download(svc.reblend(first.key, strength=0.0))  # the input exactly, at its depth
    np.testing.assert_array_equal(image_io.read_image(zero.output)[0], image)
    assert zero.readout.psnr == float("inf") and "output = input" in zero.readout_text
    with Image.open(zero.after) as after, Image.open(zero.before) as before:
        np.testing.assert_array_equal(np.asarray(after), np.asarray(before))
    level = float(np.median(np.abs(dmap)))
    kept = svc.download(svc.reblend(first.key, strength=0.8, keep_bokeh=level))
    applied = intent.Deblurred(image, sharp, dmap, 0.8, level)
    np.testing.assert_array_equal(image_io.quantize(image_io.read_image(kept.output)[0], 16),
                                  image_io.quantize(applied.output, 16))
    assert kept.level == level and f"{level:.4g}" in kept.summary
    auto = svc.reblend(first.key, keep_bokeh="auto")
    assert auto.level == auto.auto_level == pytest.approx(intent.auto_level(dmap))
    assert "(automatic)" in auto.summary
    # A download the page no longer wants (a newer blend was asked for) is skipped.
    svc.reblend(first.key, strength=0.3)
    assert svc.download(auto) is None

    # ...and a fresh run with the same controls gives the same download.
    monkeypatch.undo()
    again = service.Service(deblurrer, str(tmp_path / "work2")).process(path, strength=0.8,
                                                                         keep_bokeh=level)
    np.testing.assert_array_equal(image_io.read_image(again.output)[0],
                                  image_io.read_image(kept.output)[0])
    # A newer photo replaces the held one: the old key is refused in one line.
    svc.process(path)
    with pytest.raises(service.UploadError, match="no longer held") as e:
        svc.reblend(first.key, strength=0.5)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="strength"):
        svc.reblend(first.key, strength=2)


def test_an_oversized_upload_is_refused_from_its_header_and_the_next_one_runs(tmp_path, deblurrer):
    """A 0.8 MB tiled TIFF that declares 16384 x 16384 pixels: one line at once, with next to no
    memory (the photo would be 3.2 GB as floats); then a photo is served as usual."""
    import tracemalloc
    import zlib

    big = tmp_path / "huge.tif"
    tile = zlib.compress(np.zeros((512, 512, 3), np.uint8).tobytes(), 9)
    with tifffile.TiffWriter(big) as tif:
        tif.write((tile for _ in range(32 * 32)), shape=(16384, 16384, 3), dtype=np.uint8,
                  tile=(512, 512), compression="zlib", photometric="rgb")
    svc = service.Service(deblurrer, str(tmp_path / "work"))
    tracemalloc.start()
    try:
        with pytest.raises(service.UploadError) as e:
            svc.process(str(big))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value) == ("huge.tif: 16384 x 16384 pixels (268.4 megapixels) is more than the "
                            "limit of 100 megapixels (--max_pixels)")
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MB"
    path = str(tmp_path / "p.png")
    image_io.write_image(path, _photo())
    assert os.path.exists(svc.process(path).output)
    # The limit is the service's: a lower one refuses that photo too.
    with pytest.raises(service.UploadError, match="p.png: 90 x 72 pixels"):
        service.Service(deblurrer, str(tmp_path / "w2"), max_pixels=1000).process(path)


def test_previews_of_a_large_photo_are_reduced_in_blocks():
    from ifan_jax.inference import intent

    rng = np.random.default_rng(5)
    image = rng.random((1030, 2050, 3), dtype=np.float32)
    small = intent.block_mean(image, 4)
    assert small.shape == (257, 512, 3)
    np.testing.assert_allclose(small, image[:1028, :2048].reshape(257, 4, 512, 4, 3).mean((1, 3)),
                               rtol=1e-5, atol=1e-6)
    colour = (image * 255).astype(np.uint8)
    np.testing.assert_allclose(intent.block_mean(colour, 2),
                               colour[:1030, :2050].reshape(515, 2, 1025, 2, 3).mean((1, 3)) / 255,
                               rtol=1e-5, atol=1e-6)
    keep = rng.random((1030, 2050), dtype=np.float32)
    np.testing.assert_allclose(intent.blend(image, image[::-1], 0.3, keep),
                               image + 0.3 * (1 - keep[..., None]) * (image[::-1] - image),
                               atol=1e-6)


@pytest.mark.slow
def test_a_large_photo_costs_little_beyond_the_deblurrers_arrays(tmp_path):
    """Everything the service allocates for one request (numpy, traced), the photo read included,
    with a network that returns ready arrays: at most 3 x the photo's float32 size. The previews,
    the colour map and the blend go in blocks of rows (before: 7.4 x, from full-size float
    temporaries of the colour map and the previews; then 2.3 x; with the map's box mean and
    automatic level computed for quick re-blends, 2.7 x)."""
    import tracemalloc

    from ifan_jax.inference import intent
    from ifan_jax.inference.deblurrer import Schedule

    h, w = 1500, 2000
    rng = np.random.default_rng(0)

    class Ready:
        has_defocus_map = True
        sharp = rng.random((h, w, 3), dtype=np.float32)
        defocus = rng.standard_normal((h, w), dtype=np.float32)

        def schedule(self, height, width, tile, overlap):
            return Schedule(0, overlap, 1, 1)

        def deblur(self, image, schedule=None, progress=None):
            return intent.Deblurred(image, self.sharp, self.defocus)

    path = str(tmp_path / "large.png")
    image_io.write_image(path, rng.random((h, w, 3), dtype=np.float32))
    svc = service.Service(Ready(), str(tmp_path / "work"))
    tracemalloc.start()
    try:
        result = svc.process(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert os.path.exists(result.output) and os.path.exists(result.defocus)
    assert peak <= 3 * h * w * 3 * 4, f"{peak / 2**20:.0f} MB"


def test_the_server_returns_large_blocks_to_the_os():
    import ctypes.util

    from ifan_jax.app import cli

    has_glibc = bool(ctypes.util.find_library("c")) and os.uname().sysname == "Linux"
    assert cli.return_large_blocks_to_the_os() is has_glibc
