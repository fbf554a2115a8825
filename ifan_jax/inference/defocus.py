"""IFAN's defocus map: upsampling the disparity map estimator's output, colour-mapping and writing it.

    sharp, defocus = deblurrer(image, return_defocus=True)   # defocus: H x W float32
    rgb = colorize(defocus)                                    # H x W x 3 uint8 (viridis)
    write_defocus("photo_defocus.png", defocus)                # the colour map, a PNG
    write_raw("photo_defocus.npy", defocus)                    # the values, float32 .npy

The disparity map estimator (DME) predicts, at 1/8 of the input's resolution, the disparity between
the dual-pixel views that the blurred image would have had; its magnitude grows with the defocus
blur and its sign says on which side of the focal plane a point lies. `upsample` brings it to the
input's size: bilinear with half-pixel centres (low-resolution pixel (i, j) sits at the centre of the
8 x 8 block it summarises, edges clamped), computed at the padded size (a multiple of 8) and cropped
back like the deblurred image. A tiled photo's tiles are blended at 1/8 resolution and the whole map
upsampled once (`upsample_map`; `ifan_jax.inference.tiling`), so tile borders leave no seam.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from ifan_jax import fileio
from ifan_jax.inference import tiling

SCALE = tiling.ALIGN  # the DME works at 1/8 of the input's resolution
# Viridis (van der Walt & Smith, CC0), 32 colours evenly spaced along the map; `colorize`
# interpolates linearly between them.
_VIRIDIS_HEX = (
    "440154470e61481a6c482575472f7d443a834144873d4e8a39568c35608d31688e2d708e2a788e27818e23888e"
    "21918d1f988b1fa08822a8842ab07f35b77943bf7154c56866cc5d7ad1518fd744a5db36bcdf27d2e21be9e51a"
    "fde725")
VIRIDIS = np.frombuffer(bytes.fromhex(_VIRIDIS_HEX), np.uint8).reshape(-1, 3)
# `colorize` maps these percentiles of the values to the ends of the colour map (robust to a few
# extreme pixels).
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.0
ROWS = 256  # `colorize` maps a large map in blocks of this many rows


def upsample(disparity: jax.Array, height: int, width: int) -> jax.Array:
    """(B, h, w, 1) map at 1/8 resolution -> (B, height, width, 1), bilinear, half-pixel centres.

    `height` and `width` are the padded input's (8h, 8w); crop afterwards to the unpadded size.
    """
    b, _, _, c = disparity.shape
    return jax.image.resize(disparity.astype(jnp.float32), (b, height, width, c), "bilinear")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _upsample_2d(low: jax.Array, height: int, width: int) -> jax.Array:
    return upsample(low[None, ..., None], height, width)[0, ..., 0]


def upsample_map(low: np.ndarray, height: int, width: int) -> np.ndarray:
    """A whole photo's map at 1/8 resolution (ceil(height / 8) x ceil(width / 8), e.g. tiles blended on
    that grid) -> height x width float32: `upsample` to 8x its size, cropped to the photo's."""
    low = np.asarray(low, np.float32)
    out = _upsample_2d(low, SCALE * low.shape[0], SCALE * low.shape[1])
    return np.array(out[:height, :width], np.float32)


def normalize(defocus: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Values -> [0, 1]: `low`/`high` (default the 1st/99th percentiles of the finite values) to 0/1,
    clipped. A constant map becomes 0.5 everywhere."""
    values = np.asarray(defocus, np.float32)
    if low is None or high is None:
        lo, hi = _percentiles(values)
        low = lo if low is None else low
        high = hi if high is None else high
    if not high > low:
        return np.full(values.shape, 0.5, np.float32)
    out = (np.nan_to_num(values, nan=low) - low) / (high - low)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def colorize(defocus: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """H x W defocus map -> H x W x 3 uint8 RGB with the viridis colour map (dark purple = low,
    yellow = high), the values normalised by `normalize`."""
    defocus = np.asarray(defocus)
    if defocus.ndim == 3 and defocus.shape[-1] == 1:
        defocus = defocus[..., 0]
    if defocus.ndim != 2:
        raise ValueError(f"a defocus map must be H x W, got shape {defocus.shape}")
    if low is None or high is None:  # the percentiles once, then the map in blocks of rows
        lo, hi = _percentiles(defocus)
        low = lo if low is None else low
        high = hi if high is None else high
    out = np.empty((*defocus.shape, 3), np.uint8)
    table = VIRIDIS.astype(np.float32)
    for y in range(0, defocus.shape[0], ROWS):
        t = normalize(defocus[y:y + ROWS], low, high) * (len(VIRIDIS) - 1)
        i = np.minimum(t.astype(np.int32), len(VIRIDIS) - 2)
        frac = (t - i)[..., None]
        out[y:y + ROWS] = np.rint(table[i] * (1.0 - frac) + table[i + 1] * frac)
    return out


def _percentiles(defocus: np.ndarray) -> tuple[float, float]:
    """The LOW_/HIGH_PERCENTILE of the finite values (0, 0 when there are none)."""
    values = np.asarray(defocus, np.float32)
    if not np.isfinite(values).all():
        values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 0.0
    lo, hi = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    return float(lo), float(hi)


def write_defocus(path: str, defocus: np.ndarray, *, overwrite: bool = False) -> None:
    """Write the colour-mapped defocus map (`colorize`) as an 8-bit RGB PNG, atomically."""
    with fileio.atomic_file(path, overwrite=overwrite) as f:
        Image.fromarray(colorize(defocus), "RGB").save(f, format="PNG")


def write_raw(path: str, defocus: np.ndarray, *, overwrite: bool = False) -> None:
    """Write the defocus values as an H x W float32 `.npy` array (`numpy.load` reads it), atomically."""
    with fileio.atomic_file(path, overwrite=overwrite) as f:
        np.save(f, np.asarray(defocus, np.float32), allow_pickle=False)


def output_paths(image_path: str) -> tuple[str, str]:
    """(colour PNG, raw .npy) paths written beside a deblurred image: `<name>_defocus.png/.npy`."""
    stem = os.path.splitext(image_path)[0]
    return f"{stem}_defocus.png", f"{stem}_defocus.npy"
