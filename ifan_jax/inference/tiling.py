"""Tiled inference: deblur an image of any size through a network of one fixed input shape.

The image (H x W x 3, float32, NHWC without the batch axis) is edge-padded to a multiple of 8 and
covered by tiles of `tile` x `tile` pixels whose corners lie on the 8-pixel grid, so every tile
sees the network's 1/8-resolution grid exactly where the whole image does. Neighbouring tiles
overlap by at least `overlap` pixels. Each output pixel is a weighted mean of the tiles covering it:
a tile's weight is 1 in its inside and falls to 0 across each overlap it shares with a neighbour
(a raised-cosine ramp over the middle half of the overlap; the quarter of the overlap next to a tile
edge, where the tile's zero-padded convolutions see least context, gets weight 0). Image borders
keep weight 1, so every pixel is covered with a positive total weight.

The defocus map is blended the same way one level down, on the network's 1/8-resolution grid:
`forward` may return, beside each tile's full-resolution output, its 1/8-resolution output (the
disparity map estimator's), and those are blended with the same rule at 1/8 scale (tile starts and
size divided by 8, ramps across the overlap's width / 8) into one map of the padded image's size / 8,
which the caller upsamples once (`ifan_jax.inference.defocus.upsample`). Blending the per-tile
upsampled maps instead left a seam: the estimator works at 1/8 resolution, so a tile's border
effects reach 8x further in pixels, and each tile's upsampling clamps at the tile's edge.

Tiles run in batches of `batch_size` through one jitted function of one shape, so the network is
compiled once per tile shape whatever the image size. Peak memory is the network's working set for
one batch of tiles (one batch runs at a time) plus the input and one image-sized float buffer for
the weighted sum (the weights' sum is separable, two 1-D arrays).

`choose_tile` picks the tile size from the image size, the network's measured memory per pixel
and the memory available (see `Deblurrer.__call__` in `ifan_jax.inference`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import numpy as np

from ifan_jax.errors import UserError

ALIGN = 8  # tile corners and sizes lie on the network's 1/8 grid
DEFAULT_OVERLAP = 64
MIN_TILE = 64
# Tile sizes the automatic choice considers, largest first.
TILE_CANDIDATES = (2048, 1536, 1024, 768, 512, 384, 256, 192, 128)
MAX_BATCH = 8


def round_up(x: int, multiple: int = ALIGN) -> int:
    return -(-int(x) // multiple) * multiple


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of size `tile` covering [0, length), adjacent ones overlapping by >= `overlap`.

    `length` and `tile` are multiples of 8 with `tile <= length`; the starts are multiples of 8,
    the first is 0 and the last `length - tile`, and the gaps between them differ by at most 8.
    """
    if tile > length:
        raise ValueError(f"tile {tile} is larger than the length {length}")
    if length % ALIGN or tile % ALIGN:
        raise ValueError(f"length {length} and tile {tile} must be multiples of {ALIGN}")
    if tile == length:
        return [0]
    max_step = (tile - round_up(overlap)) // ALIGN  # in units of ALIGN
    if max_step < 1:
        raise ValueError(f"tile {tile} leaves no room for an overlap of {overlap}")
    units = (length - tile) // ALIGN
    gaps = math.ceil(units / max_step)
    # Spread `units` over `gaps` steps as evenly as integers allow (each <= max_step).
    return [ALIGN * (units * i // gaps) for i in range(gaps + 1)]


def blend_ramp(width: int) -> np.ndarray:
    """Weights (float32, length `width`) rising from 0 to 1 across an overlap of `width` pixels.

    Index 0 is at the tile's edge. The outer quarter is 0, the middle half a raised cosine, the inner
    quarter 1; a tile's ramp and its neighbour's mirrored ramp sum to 1 across the overlap.
    """
    d = (np.arange(width, dtype=np.float64) + 0.5) / max(width, 1)  # position in (0, 1)
    t = np.clip((d - 0.25) / 0.5, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def axis_weights(starts: Sequence[int], tile: int) -> list[np.ndarray]:
    """1-D blending weights (length `tile`) of each tile along one axis."""
    out = []
    for i, s in enumerate(starts):
        w = np.ones(tile, np.float32)
        if i > 0:
            width = starts[i - 1] + tile - s
            w[:width] = np.minimum(w[:width], blend_ramp(width))
        if i + 1 < len(starts):
            width = s + tile - starts[i + 1]
            w[tile - width:] = np.minimum(w[tile - width:], blend_ramp(width)[::-1])
        out.append(w)
    return out


def tile_shape(height: int, width: int, tile: int) -> tuple[int, int]:
    """The network input shape used for an image: `tile` x `tile`, or less where the image is."""
    tile = round_up(tile)
    return min(tile, round_up(height)), min(tile, round_up(width))


def num_tiles(height: int, width: int, tile: int, overlap: int = DEFAULT_OVERLAP) -> int:
    """How many tiles `deblur_tiled` runs for an H x W image."""
    th, tw = tile_shape(height, width, tile)
    return (len(tile_starts(round_up(height), th, overlap))
            * len(tile_starts(round_up(width), tw, overlap)))


def deblur_tiled(forward: Callable[..., np.ndarray], views: Sequence[np.ndarray | None], tile: int,
                 overlap: int = DEFAULT_OVERLAP, batch_size: int = 1,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Run `forward` over overlapping tiles of H x W x 3 `views` and blend the outputs.

    `forward(*batches)` takes one (B, th, tw, 3) float32 array per view (None views are passed as
    None) and returns a (B, th, tw, C) array (a numpy or jax array; it is converted after the next
    batch has been dispatched). `views[0]` is the blurred image; the others (dual-pixel right/left
    views) are cut into the same tiles. Returns H x W x C float32, every channel blended alike.
    `progress(n)` is called with the number of tiles finished after each batch.

    `forward` may instead return a pair: that array and a (B, th/8, tw/8, K) array at 1/8
    resolution; then the result is the pair (H x W x C, round_up(H)/8 x round_up(W)/8 x K), the
    second blended on the 1/8 grid with the same rule at 1/8 scale (`coarse_weights`).
    """
    image = views[0]
    h, w = image.shape[:2]
    th, tw = tile_shape(h, w, tile)
    ys, xs = tile_starts(round_up(h), th, overlap), tile_starts(round_up(w), tw, overlap)
    wy, wx = axis_weights(ys, th), axis_weights(xs, tw)
    corners = [(i, j) for i in range(len(ys)) for j in range(len(xs))]

    acc = None  # H x W x C, allocated when the first batch tells C
    # The total weight at (y, x) is sum_ij wy_i(y) wx_j(x) = Wy(y) Wx(x): two 1-D sums suffice.
    total_y, total_x = _total(ys, wy, th, round_up(h)), _total(xs, wx, tw, round_up(w))
    # The 1/8-resolution outputs (when `forward` returns them): the same rule at 1/8 scale.
    cys, cwy = coarse_weights(ys, th)
    cxs, cwx = coarse_weights(xs, tw)
    coarse = None  # round_up(H)/8 x round_up(W)/8 x K

    def gather(batch):
        out = []
        for v in views:
            if v is None:
                out.append(None)
                continue
            # Tiles reaching past the image are edge-padded, as the whole-image path pads.
            tiles = [_pad_edge(np.asarray(v[ys[i]:ys[i] + th, xs[j]:xs[j] + tw], np.float32),
                               th, tw) for i, j in batch]
            tiles += [tiles[-1]] * (batch_size - len(tiles))  # fixed shape: one compilation
            out.append(np.stack(tiles))
        return out

    def scatter(batch, result):
        nonlocal acc, coarse
        if isinstance(result, tuple):
            result, low = result
            low = np.asarray(low, np.float32)
            cth, ctw = th // ALIGN, tw // ALIGN
            if coarse is None:
                coarse = np.zeros((round_up(h) // ALIGN, round_up(w) // ALIGN, low.shape[-1]),
                                  np.float32)
            for k, (i, j) in enumerate(batch):
                y, x = cys[i], cxs[j]
                coarse[y:y + cth, x:x + ctw] += low[k] * np.outer(cwy[i], cwx[j])[..., None]
        result = np.asarray(result, np.float32)
        if acc is None:
            acc = np.zeros((h, w, result.shape[-1]), np.float32)
        for k, (i, j) in enumerate(batch):
            y, x = ys[i], xs[j]
            ch, cw = min(th, h - y), min(tw, w - x)
            weight = np.outer(wy[i][:ch], wx[j][:cw])
            acc[y:y + ch, x:x + cw] += result[k, :ch, :cw] * weight[..., None]
        if progress is not None:
            progress(len(batch))

    batches = [corners[k:k + batch_size] for k in range(0, len(corners), batch_size)]
    pending = None
    for batch in batches:
        if pending is not None:
            # One network execution at a time (two in flight would double the working memory),
            # but blend the finished batch while the next one runs.
            jax.block_until_ready(pending[1])
        result = forward(*gather(batch))
        if pending is not None:
            scatter(*pending)
        pending = (batch, result)
    scatter(*pending)
    for y in range(0, h, 256):
        rows = acc[y:y + 256]
        rows /= (total_y[y:y + rows.shape[0], None] * total_x[None, :w])[..., None]
    if coarse is None:
        return acc
    coarse /= np.outer(_total(cys, cwy, th // ALIGN, coarse.shape[0]),
                       _total(cxs, cwx, tw // ALIGN, coarse.shape[1]))[..., None]
    return acc, coarse


def coarse_weights(starts: Sequence[int], tile: int) -> tuple[list[int], list[np.ndarray]]:
    """The tiles of one axis on the 1/8-resolution grid: their starts (`starts` / 8) and 1-D
    blending weights (`axis_weights` of those starts and `tile` / 8: ramps across each overlap's
    width / 8, outer quarter 0)."""
    low = [s // ALIGN for s in starts]
    return low, axis_weights(low, tile // ALIGN)


def _total(starts: Sequence[int], weights: Sequence[np.ndarray], tile: int, length: int
           ) -> np.ndarray:
    total = np.zeros(length, np.float32)
    for s, weight in zip(starts, weights):
        total[s:s + tile] += weight
    return total


def _pad_edge(image: np.ndarray, height: int, width: int) -> np.ndarray:
    ph, pw = height - image.shape[0], width - image.shape[1]
    if not (ph or pw):
        return image
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")


def choose_tile(height: int, width: int, bytes_for_pixels: Callable[[int], float], budget: float,
                overlap: int = DEFAULT_OVERLAP, max_batch: int = MAX_BATCH) -> tuple[int, int]:
    """(tile, batch_size) for an image: tile 0 (the whole image at once) when it fits `budget`.

    `bytes_for_pixels(n)` estimates the network's working memory for a batch holding n pixels.
    Otherwise the largest candidate tile (>= 2 * overlap + 64) whose single-tile working set fits
    the budget, with as many tiles per batch as also fit (at most `max_batch`, and no more than
    there are tiles). When nothing fits, the smallest candidate.
    """
    if bytes_for_pixels(round_up(height) * round_up(width)) <= budget:
        return 0, 1
    smallest = max(MIN_TILE, round_up(2 * overlap + 64))
    candidates = [t for t in TILE_CANDIDATES if t >= smallest] or [smallest]
    for tile in candidates:
        th, tw = tile_shape(height, width, tile)
        if bytes_for_pixels(th * tw) <= budget:
            break
    else:
        tile = candidates[-1]
        th, tw = tile_shape(height, width, tile)
    count = num_tiles(height, width, tile, overlap)
    batch = 1
    while (batch < min(max_batch, count)
           and bytes_for_pixels((batch + 1) * th * tw) <= budget):
        batch += 1
    return tile, batch


class TileError(UserError):
    """A tile size or overlap that cannot tile an image; the message says which and why."""


def check_tile(tile: int, overlap: int, *, aligned: bool = False, flags: bool = False) -> None:
    """The one tile rule: TileError (one line) unless `tile` is 0 (the whole image) or exceeds
    `overlap` (>= 0) by at least ALIGN pixels once both are rounded up to multiples of ALIGN (a tile
    must advance past its overlap). `aligned`: `tile` must itself be a positive multiple of ALIGN
    (a fixed network input: the ONNX export and its page). `flags`: the message names the command
    line's --tile and --overlap."""
    name, other = ("--tile", "--overlap") if flags else ("tile", "overlap")
    for value, what in ((tile, name), (overlap, other)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TileError(f"{what} must be an integer, got {value!r}")
    if overlap < 0:
        raise TileError(f"{other} must be >= 0, got {overlap}")
    if aligned and (tile <= 0 or tile % ALIGN):
        raise TileError(f"{name} must be a positive multiple of {ALIGN}, got {tile}")
    if tile < 0:
        raise TileError(f"{name} must be >= 0 (0: the whole image at once), got {tile}")
    if tile and round_up(tile) - round_up(overlap) < ALIGN:
        smallest = round_up(overlap) + ALIGN
        raise TileError(f"{name} {tile} is too small for " + (
            f"--overlap {overlap}" if flags else f"an overlap of {overlap}")
            + f": use a tile of at least {smallest} pixels or a smaller overlap")
