"""Tiled inference: the tile grid, blending weights, and agreement with whole-image inference."""

import numpy as np
import pytest
import skimage.data
import skimage.filters
import skimage.transform

from ifan_jax import inference
from ifan_jax.inference import Deblurrer, tiling


@pytest.mark.parametrize("length,tile,overlap", [
    (64, 64, 16), (72, 64, 16), (720, 256, 64), (1280, 256, 64), (1000, 256, 32),
    (4000, 1024, 64), (136, 64, 48), (2048, 512, 0)])
def test_tile_starts_cover_with_aligned_overlapping_tiles(length, tile, overlap):
    starts = tiling.tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile
    assert all(s % 8 == 0 for s in starts)
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (tile - gaps >= overlap).all()
    assert len(gaps) == 0 or gaps.max() - gaps.min() <= 8


def test_tile_starts_reject_impossible_grids():
    with pytest.raises(ValueError):
        tiling.tile_starts(100, 64, 16)  # not a multiple of 8
    with pytest.raises(ValueError):
        tiling.tile_starts(128, 64, 60)  # overlap rounds up to 64: no room left
    with pytest.raises(ValueError):
        tiling.tile_starts(64, 128, 16)


def test_blend_ramps_partition_unity_across_an_overlap():
    for width in (8, 16, 64, 72):
        ramp = tiling.blend_ramp(width)
        np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-6)
        assert ramp[0] == 0.0 and ramp[-1] == 1.0 and (np.diff(ramp) >= 0).all()


@pytest.mark.parametrize("shape,tile,overlap,batch", [
    ((101, 157), 64, 16, 1), ((101, 157), 64, 16, 3), ((720, 1280), 256, 64, 4), ((40, 300), 64, 24, 2)])
def test_pointwise_network_is_reproduced_exactly(shape, tile, overlap, batch):
    """With a network that works pixel by pixel, tiles and blending must give back its output."""
    image = np.random.default_rng(0).random((*shape, 3), dtype=np.float32)
    calls, done = [], []

    def forward(x, right, left):
        assert right is None and left is None
        calls.append(x.shape)
        return np.sqrt(x)

    out = tiling.deblur_tiled(forward, [image, None, None], tile, overlap, batch, done.append)
    np.testing.assert_allclose(out, np.sqrt(image), rtol=1e-6, atol=1e-6)
    assert out.shape == image.shape and out.dtype == np.float32
    th, tw = tiling.tile_shape(*shape, tile)
    assert set(calls) == {(batch, th, tw, 3)}  # one shape: one compilation
    starts = [tiling.tile_starts(tiling.round_up(n), t, overlap) for n, t in zip(shape, (th, tw))]
    assert sum(done) == len(starts[0]) * len(starts[1])


def test_extra_output_channels_are_blended_alike():
    """A network returning more channels than the image (the defocus map) gets each one blended."""
    image = np.random.default_rng(1).random((75, 130, 3), dtype=np.float32)
    forward = lambda x, right, left: np.concatenate([np.sqrt(x), x[..., :1] ** 2], axis=-1)
    out = tiling.deblur_tiled(forward, [image, None, None], 48, 16, 2)
    assert out.shape == (75, 130, 4)
    np.testing.assert_allclose(out[..., :3], np.sqrt(image), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[..., 3], image[..., 0] ** 2, rtol=1e-5, atol=1e-6)
    assert tiling.num_tiles(75, 130, 48, 16) > 1


def test_choose_tile_from_memory_budget():
    per_pixel = lambda n: 1e6 + 500.0 * n  # about the full model's working set
    assert tiling.choose_tile(720, 1280, per_pixel, budget=8e9) == (0, 1)
    tile, batch = tiling.choose_tile(4000, 6000, per_pixel, budget=1 << 30)
    assert tile == 1024 and batch == 2
    assert per_pixel(batch * tile * tile) <= 1 << 30
    tile, batch = tiling.choose_tile(4000, 6000, per_pixel, budget=1e6)  # nothing fits
    assert tile == min(t for t in tiling.TILE_CANDIDATES if t >= 2 * 64 + 64) and batch == 1


def _photo(height=720, width=1280):
    image = skimage.data.astronaut().astype(np.float32) / 255
    image = skimage.transform.resize(image, (height, width), anti_aliasing=True)
    return np.clip(skimage.filters.gaussian(image, sigma=3, channel_axis=-1), 0, 1).astype(
        np.float32)


def _psnr(a, b):
    return 10 * np.log10(1 / np.mean((a.astype(np.float64) - b) ** 2))


@pytest.fixture(scope="module")
def tiny_deblurrer(tiny_official_checkpoint):
    return Deblurrer.from_checkpoint(tiny_official_checkpoint)


@pytest.mark.slow
def test_tiled_agrees_with_whole_image_at_1280x720(tiny_deblurrer):
    image = _photo()
    whole = tiny_deblurrer(image, tile=0)
    np.testing.assert_array_equal(whole, tiny_deblurrer.deblur_whole(image))
    tiled = tiny_deblurrer(image, tile=256)
    assert tiled.shape == image.shape
    assert _psnr(whole, tiled) >= 40.0
    assert _psnr(whole, image) < 35.0  # the network does change the image


@pytest.mark.slow
def test_automatic_choice_tiles_only_when_memory_is_short(tiny_deblurrer, monkeypatch):
    image = _photo(200, 264)
    whole = tiny_deblurrer.deblur_whole(image)
    monkeypatch.setattr(inference.deblurrer, "auto_memory_budget", lambda: 8e9)
    assert tiny_deblurrer.plan(200, 264) == (0, 1)
    np.testing.assert_array_equal(tiny_deblurrer(image), whole)
    budget = tiny_deblurrer.working_memory(150 * 150)
    monkeypatch.setattr(inference.deblurrer, "auto_memory_budget", lambda: budget)
    tile, batch = tiny_deblurrer.plan(200, 264, overlap=16)
    assert tile == 128 and batch == 1
    assert tiny_deblurrer.working_memory(batch * tile * tile) <= budget
    out = tiny_deblurrer(image, overlap=16)
    assert _psnr(whole, out) >= 40.0 and not np.array_equal(out, whole)


def test_working_memory_grows_with_the_image(tiny_deblurrer):
    small, large = (tiny_deblurrer.working_memory(n) for n in (256 * 256, 1024 * 1024))
    assert 0 < small < large
    with pytest.raises(ValueError, match="tile"):
        tiny_deblurrer(np.zeros((32, 32, 3), np.float32), tile=-1)
    # The default overlap (64) leaves a 64-pixel tile no room to advance: a clear one-line error.
    with pytest.raises(ValueError, match="tile 64 is too small for an overlap of 64: use a tile "
                                         "of at least 72 pixels") as e:
        tiny_deblurrer(np.zeros((200, 300, 3), np.float32), tile=64)
    assert "\n" not in str(e.value)
    assert tiny_deblurrer(np.zeros((200, 300, 3), np.float32), tile=64, overlap=16).shape == (
        200, 300, 3)
