"""Tiled inference: deblur an image of any size through a network of one fixed input shape.

The image (H x W x 3, float32, NHWC without the batch axis) is edge-padded to a multiple of 8 and
covered by tiles of `tile` x `tile` pixels whose corners lie on the 8-pixel grid, so every tile
sees the network's 1/8-resolution grid exactly where the whole image does. Neighbouring tiles
overlap by at least `overlap` pixels. Each output pixel is a weighted mean of the tiles covering it:
a tile's weight is 1 in its inside and falls to 0 across each overlap it shares with a neighbour
(a raised-cosine ramp over the middle half of the overlap; the quarter of the overlap next to a tile
edge, where the tile's zero-padded convolutions see least context, gets weight 0). Image borders
keep weight 1, so every pixel is covered with a positive total weight.

The defocus map is blended one step earlier, in the disparity map estimator's input. A tile's
zero-padded edges change its 1/8-resolution outputs far inside it: the filter encoder's within 5
pixels of the 1/8 grid (40 pixels) of a tile edge, the estimator's ten 3x3 convolutions 10 more (15
in all, 120 pixels; `IFAN.map_reach`), so a tile's own map is wrong across the whole of a 64-pixel
overlap (8 pixels on the 1/8 grid) and no blending of the tiles' maps can hide it. Instead `forward`
returns, beside each tile's output, its filter encoder output (1/8 resolution), and those are
blended on the 1/8 grid with weights that are zero where a tile's value is not exact
(`context_weights`: `reach` pixels inside each edge shared with a neighbour), so wherever two tiles
overlap by at least 5 + 4 pixels of the 1/8 grid (72 pixels) the blended features are the whole
image's; where they overlap by exactly 64 pixels, one row of features per border is taken 4
pixels inside a tile's edge, where its padding still enters it slightly. The estimator then runs
over that map in tiles of its own whose overlap covers its reach on both sides
(`estimate_tiled`): the result equals the whole-image map up to float rounding, and the caller
upsamples it once (`ifan_jax.inference.defocus.upsample_map`).

Tiles run in batches of `batch_size` through one jitted function of one shape, so the network is
compiled once per tile shape whatever the image size. Peak memory is the network's working set for
one batch of tiles (one batch runs at a time) plus the input and one image-sized float buffer for
the weighted sum (the weights' sum is separable, two 1-D arrays); with the defocus map, also the
blended filter encoder output (4 x channels floats per 8 x 8 pixels: 8 bytes per pixel for the
full-size model) and the estimator's working set for one of its tiles (`estimator_tile`).

`choose_tile` picks the tile size from the image size, the network's measured memory per pixel
and the memory available (see `Deblurrer.__call__` in `ifan_jax.inference`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import numpy as np

from ifan_jax.errors import UserError
from ifan_jax.models.resample import SCALE

ALIGN = SCALE  # tile corners and sizes lie on the network's 1/8 grid (`models.resample.SCALE`)
DEFAULT_OVERLAP = 64
MIN_TILE = 64
# Tile sizes the automatic choice considers, largest first.
TILE_CANDIDATES = (2048, 1536, 1024, 768, 512, 384, 256, 192, 128)
MAX_BATCH = 8
ESTIMATOR_MIN_TILE = 64  # `estimator_tile`'s smallest, in pixels of the 1/8 grid


def round_up(x: int, multiple: int = ALIGN) -> int:
    return -(-int(x) // multiple) * multiple


def tile_starts(length: int, tile: int, overlap: int, align: int = ALIGN) -> list[int]:
    """Starts of tiles of size `tile` covering [0, length), adjacent ones overlapping by >= `overlap`.

    `length` and `tile` are multiples of `align` (8: the network's grid; 1 on the 1/8-resolution
    grid) with `tile <= length`; the starts are multiples of `align`, the first is 0 and the last
    `length - tile`, and the gaps between them differ by at most `align`.
    """
    if tile > length:
        raise ValueError(f"tile {tile} is larger than the length {length}")
    if length % align or tile % align:
        raise ValueError(f"length {length} and tile {tile} must be multiples of {align}")
    if tile == length:
        return [0]
    max_step = (tile - round_up(overlap, align)) // align  # in units of `align`
    if max_step < 1:
        raise ValueError(f"tile {tile} leaves no room for an overlap of {overlap}")
    units = (length - tile) // align
    gaps = math.ceil(units / max_step)
    # Spread `units` over `gaps` steps as evenly as integers allow (each <= max_step).
    return [align * (units * i // gaps) for i in range(gaps + 1)]


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


def context_ramp(width: int, before: int, after: int) -> np.ndarray:
    """Weights (float32, length `width`) of the later of two tiles across their overlap of `width`
    pixels, for tiles whose outputs are exact only from `before` pixels after a tile's first edge and
    up to `after` pixels before its last edge; the earlier tile's weights there are 1 minus these.

    Index 0 is the later tile's first pixel: its weight is 0 on the first `before` pixels (where it
    is not exact), 1 on the last `after` (where the earlier tile is not), and a raised cosine
    between. An overlap narrower than `before + after` has no pixel where both are exact: the
    larger margin (`after` on a tie) gives up one pixel at a time until they fit, and the ramp is
    a step.
    """
    low, keep = int(before), int(after)
    while low + keep > width:
        if low > keep:
            low -= 1
        else:
            keep -= 1
    high = width - keep
    k = np.arange(width, dtype=np.float64) + 0.5
    t = np.clip((k - low) / max(high - low, 1), 0.0, 1.0)
    ramp = 0.5 - 0.5 * np.cos(np.pi * t)
    ramp[k >= high] = 1.0
    return ramp.astype(np.float32)


def context_weights(starts: Sequence[int], tile: int, before: int, after: int) -> list[np.ndarray]:
    """1-D blending weights (length `tile`) of each tile along one axis for outputs exact only
    `before` pixels inside a tile's first edge and `after` inside its last (`context_ramp` across
    each overlap with a neighbour; image borders keep weight 1)."""
    out = []
    for i, s in enumerate(starts):
        w = np.ones(tile, np.float32)
        if i > 0:
            width = starts[i - 1] + tile - s
            w[:width] = np.minimum(w[:width], context_ramp(width, before, after))
        if i + 1 < len(starts):
            width = s + tile - starts[i + 1]
            w[tile - width:] = np.minimum(w[tile - width:],
                                          1.0 - context_ramp(width, before, after))
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
                 progress: Callable[[int], None] | None = None,
                 reach: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Run `forward` over overlapping tiles of H x W x 3 `views` and blend the outputs.

    `forward(*batches)` takes one (B, th, tw, 3) float32 array per view (None views are passed as
    None) and returns a (B, th, tw, C) array (a numpy or jax array; it is converted after the next
    batch has been dispatched). `views[0]` is the blurred image; the others (dual-pixel right/left
    views) are cut into the same tiles. Returns H x W x C float32, every channel blended alike.
    `progress(n)` is called with the number of tiles finished after each batch.

    `forward` may instead return a pair: that array and a (B, th/8, tw/8, K) array at 1/8
    resolution (the filter encoder's output); then the result is the pair (H x W x C,
    round_up(H)/8 x round_up(W)/8 x K), the second blended on the 1/8 grid by `context_weights`
    with `reach` = (before, after) (`IFAN.map_reach`): where tiles overlap by at least
    before + after pixels of that grid, it is what the whole image gives.
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
    # The 1/8-resolution outputs (when `forward` returns them): weights zero where inexact.
    cys, cxs = [y // ALIGN for y in ys], [x // ALIGN for x in xs]
    cwy, cwx = context_weights(cys, th // ALIGN, *reach), context_weights(cxs, tw // ALIGN, *reach)
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


def estimator_tile(tile: int) -> int:
    """The tile size, in pixels of the 1/8 grid, `estimate_tiled` runs the disparity map estimator
    in for photos tiled at `tile` pixels: a quarter of it (at least ESTIMATOR_MIN_TILE). The
    estimator's working memory per pixel of its 128-channel input (about 2.6 kB for the full-size
    model, XLA's analysis) is about 7 times the network's per pixel of the photo (380 B), so a
    quarter keeps it under half of the network's for one tile."""
    return max(round_up(tile) // 4, ESTIMATOR_MIN_TILE)


def estimate_tiled(forward: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, tile: int,
                   reach: int) -> np.ndarray:
    """Run `forward` over an h x w x C map in tiles of at most `tile` x `tile` and blend: what
    running it on the whole map gives, up to float rounding.

    `forward` maps (1, th, tw, C) to (1, th, tw, K) with stride-1 convolutions whose output at a
    pixel is exact (as on the whole map) `reach` pixels inside a tile's edges: the disparity map
    estimator on the blended filter encoder output (`IFAN.map_reach`). Tiles overlap by 2 x `reach`
    and are blended by `context_weights`, so each pixel takes only exact values. Returns
    h x w x K float32. One tile runs at a time, of one shape (one compilation).
    """
    h, w = inputs.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, 2 * reach, 1), tile_starts(w, tw, 2 * reach, 1)
    wy, wx = context_weights(ys, th, reach, reach), context_weights(xs, tw, reach, reach)
    out = None
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            result = np.asarray(forward(inputs[None, y:y + th, x:x + tw]), np.float32)[0]
            if out is None:
                out = np.zeros((h, w, result.shape[-1]), np.float32)
            out[y:y + th, x:x + tw] += result * np.outer(wy[i], wx[j])[..., None]
    out /= np.outer(_total(ys, wy, th, h), _total(xs, wx, tw, w))[..., None]
    return out


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
