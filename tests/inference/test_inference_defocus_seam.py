"""A tiled photo's defocus map shows no line at the tile borders.

A tile's zero-padded edges change the disparity map estimator's output up to 15 pixels of its 1/8
grid (120 pixels) inside the tile, more than a 64-pixel overlap, so the tiles' own maps cannot be
blended without a line. The tiles' filter encoder outputs (exact 5 pixels of that grid inside a
tile) are blended instead and the estimator runs over the blended map. A model with random weights
(ch=8, N=3) has a map far from smooth and strong border effects: the hard case.

The checks (`benchmarks.defocus_seams`, which measures a 12-megapixel photo the same way), on the
map's values at full resolution, against the whole photo's map:
  * PSNR of the two colour maps (both coloured with the whole map's range) >= 40 dB;
  * border step: the largest |difference between neighbouring rows (columns)| of the tiled map
    across a tile overlap (widened by 8 pixels), in excess of the whole map's own difference there,
    is at most the typical step: the median |difference between neighbouring rows (columns)| of the
    whole map 24 pixels or more away from any overlap. (The 99th percentile, set by the map's real
    edges, would let a line through a flat region pass: the former blending measured 0.2 of it on a
    12-megapixel photo with lines of 52/255 in its colour map.)
"""

import jax
import numpy as np
import pytest
import skimage.data
import skimage.transform

from benchmarks.defocus_seams import border_steps, colour_psnr
from ifan_jax.config import load_config
from ifan_jax.inference import Deblurrer, defocus, tiling
from ifan_jax.models import IFAN

H, W = 512, 768


@pytest.fixture(scope="module")
def random_deblurrer():
    config = dict(load_config("tiny").model)
    x = np.zeros((1, 64, 64, 3), np.float32)
    params = IFAN.from_config(config).init(jax.random.PRNGKey(2), x, x, x, x, train=True)["params"]
    return Deblurrer(params, config)


@pytest.fixture(scope="module")
def photo():
    image = skimage.data.astronaut().astype(np.float32) / 255
    return np.clip(skimage.transform.resize(image, (H, W), anti_aliasing=True), 0, 1).astype(
        np.float32)


@pytest.fixture(scope="module")
def whole(random_deblurrer, photo):
    return random_deblurrer(photo, tile=0, return_defocus=True)


@pytest.mark.slow
@pytest.mark.parametrize("tile,overlap", [(128, 64), (256, 64), (256, 96)])
def test_tiled_defocus_map_has_no_line_at_tile_borders(random_deblurrer, photo, whole, tile,
                                                       overlap):
    sharp_whole, map_whole = whole
    sharp, tiled = random_deblurrer(photo, tile=tile, overlap=overlap, return_defocus=True)
    assert tiled.shape == (H, W) and tiled.dtype == np.float32
    assert tiling.num_tiles(H, W, tile, overlap) >= 12
    psnr, _ = colour_psnr(map_whole, tiled)
    # Before (the tiles' own maps blended on the 1/8 grid): 36.0 dB, steps 1.2 / 1.8 x the typical
    # one (128, 64); 48.9 dB, 0.6 / 1.0 x (256, 64); 58.2 dB (256, 96).
    assert psnr >= 40.0, psnr
    for axis, (excess, typical, _) in zip(("row", "column"), border_steps(map_whole, tiled, tile,
                                                                            overlap)):
        assert excess <= typical, f"a {axis} step at a tile border {excess / typical:.2f} x typical"
    if overlap >= 72:  # every overlap holds the encoder's reach: the whole photo's map
        np.testing.assert_allclose(tiled, map_whole, rtol=0, atol=1e-5 * np.ptp(map_whole))
    # The image is blended as before: exactly the tiled image without the map.
    np.testing.assert_array_equal(sharp, random_deblurrer(photo, tile=tile, overlap=overlap))


def test_context_ramps_give_weight_only_where_a_tile_is_exact():
    for width, before, after in ((9, 5, 4), (12, 5, 4), (32, 5, 4), (20, 10, 10), (8, 0, 0)):
        ramp = tiling.context_ramp(width, before, after)
        assert ramp.dtype == np.float32 and (np.diff(ramp) >= 0).all()
        # The later tile has no weight within `before` of its edge, the earlier one none within
        # `after` of its own (the overlap's last pixels).
        assert (ramp[:before] == 0).all() and (ramp[width - after:] == 1).all()
    # Too narrow for both margins: the larger gives up a pixel at a time (`after` on a tie).
    np.testing.assert_array_equal(tiling.context_ramp(8, 5, 4), [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(tiling.context_ramp(7, 5, 4), [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(tiling.context_ramp(3, 5, 4), [0, 0, 1])


@pytest.mark.parametrize("before,after", [(5, 4), (10, 10), (0, 0)])
def test_context_weights_cover_every_pixel_with_exact_tiles(before, after):
    """Any grid: a positive total weight everywhere; where every overlap holds both margins, each
    pixel is weighted only by tiles it lies `before` inside the first and `after` inside the last
    edge of (where the tile has a neighbour there)."""
    for length in (9, 16, 40, 63, 130, 500):
        for tile in (9, 11, 16, 24, 33, 64):
            for overlap in (0, 4, 8, 9, 15, 20):
                if tile > length or tile - overlap < 1:
                    continue
                starts = tiling.tile_starts(length, tile, overlap, 1)
                weights = tiling.context_weights(starts, tile, before, after)
                total = np.zeros(length)
                for i, (s, w) in enumerate(zip(starts, weights)):
                    total[s:s + tile] += w
                    if max(np.diff(starts), default=0) <= tile - before - after:
                        inside = np.arange(tile)
                        ok = ((inside >= before) | (i == 0)) & (
                            (inside < tile - after) | (i == len(starts) - 1))
                        assert (w[~ok] == 0).all(), (length, tile, overlap, i)
                assert total.min() > 0, (length, tile, overlap)


def test_estimate_tiled_equals_the_network_on_the_whole_map():
    """Three zero-padded 3x3 convolutions (reach 3) in 16 x 16 tiles give the whole map's output."""
    rng = np.random.default_rng(5)
    kernels = [rng.standard_normal((3, 3, 4, 4)).astype(np.float32) for _ in range(3)]

    def network(x):
        for k in kernels:
            x = jax.nn.relu(jax.lax.conv_general_dilated(
                x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return x[..., :2]

    inputs = rng.standard_normal((37, 53, 4)).astype(np.float32)
    calls = []
    out = tiling.estimate_tiled(lambda x: calls.append(x.shape) or network(x), inputs, 16, 3)
    assert out.shape == (37, 53, 2) and out.dtype == np.float32
    assert len(calls) > 9 and set(calls) == {(1, 16, 16, 4)}
    np.testing.assert_allclose(out, np.asarray(network(inputs[None]))[0], rtol=1e-5, atol=1e-5)
    # A map smaller than a tile runs whole.
    np.testing.assert_allclose(tiling.estimate_tiled(network, inputs[:10, :12], 16, 3),
                               np.asarray(network(inputs[None, :10, :12]))[0], atol=1e-6)


def test_coarse_outputs_are_blended_on_the_eighth_grid():
    """A network whose 1/8 output is pointwise at 1/8 (the 8x8 block mean) gets it back exactly,
    for any grid of tiles and any reach: the weights sum to a positive total everywhere."""
    image = np.random.default_rng(3).random((101, 157, 3), dtype=np.float32)
    padded = np.pad(image, ((0, 3), (0, 3), (0, 0)), mode="edge")
    block = lambda x: x.reshape(*x.shape[:-3], x.shape[-3] // 8, 8, x.shape[-2] // 8, 8, 3).mean(
        (-4, -2))

    def forward(x, right, left):
        return np.sqrt(x), block(x)

    for tile, overlap, reach in ((64, 16, (5, 4)), (48, 24, (5, 4)), (104, 32, (0, 0)),
                                 (72, 64, (5, 4))):
        out, low = tiling.deblur_tiled(forward, [image, None, None], tile, overlap, 2,
                                       reach=reach)
        np.testing.assert_allclose(out, np.sqrt(image), rtol=1e-6, atol=1e-6)
        assert low.shape == (13, 20, 3)
        np.testing.assert_allclose(low, block(padded), rtol=1e-5, atol=1e-6)


def test_the_map_of_a_pointwise_estimator_is_the_whole_maps_upsampling():
    low = np.random.default_rng(4).random((13, 20), dtype=np.float32)
    up = defocus.upsample_map(low, 101, 157)
    assert up.shape == (101, 157) and up.dtype == np.float32
    full = np.asarray(defocus.upsample(low[None, ..., None], 104, 160))[0, :101, :157, 0]
    np.testing.assert_array_equal(up, full)
