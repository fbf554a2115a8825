"""Down-sampling and the disparity warp used by the training losses (NHWC, float)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The network's grid: the filter map and the disparity map live at 1/8 of the input resolution, so
# inputs are multiples of 8 (padded or cropped to it) and tiles start on it. Declared here only;
# `inference.tiling.ALIGN`, the data pipeline, the training crops and the cost model take it.
SCALE = 8


def _check_multiple(x: jax.Array, factor: int) -> None:
    if x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(f"height and width must be multiples of {factor}, got {x.shape[1:3]}")


def area_downsample(x: jax.Array, factor: int = SCALE) -> jax.Array:
    """Mean over non-overlapping factor x factor blocks (PyTorch `interpolate(mode='area')`)."""
    _check_multiple(x, factor)
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def nearest_downsample(x: jax.Array, factor: int = SCALE) -> jax.Array:
    """Top-left pixel of every factor x factor block (PyTorch `interpolate(mode='nearest')`)."""
    _check_multiple(x, factor)
    return x[:, ::factor, ::factor, :]


def warp_horizontal(image: jax.Array, disparity: jax.Array) -> jax.Array:
    """Backward-warp `image` (B, h, w, C) by a horizontal `disparity` (B, h, w, 1) in pixels.

    out[y, x] = bilinear sample of image at (y, x + disparity[y, x]), with zeros outside the
    image. This is the official spatial transformer (`grid_sample`, corner-aligned grid, zero
    padding) with the vertical displacement fixed at zero.
    """
    b, h, w, c = image.shape
    xs = jnp.arange(w, dtype=image.dtype)[None, None, :] + disparity[..., 0].astype(image.dtype)
    x0 = jnp.floor(xs)
    frac = (xs - x0)[..., None]
    x0 = x0.astype(jnp.int32)

    def sample(xi):
        valid = ((xi >= 0) & (xi < w))[..., None]
        idx = jnp.clip(xi, 0, w - 1)
        gathered = jnp.take_along_axis(image, jnp.broadcast_to(idx[..., None], (b, h, w, c)), axis=2)
        return jnp.where(valid, gathered, 0.0)

    return sample(x0) * (1.0 - frac) + sample(x0 + 1) * frac


def _edge_extend(x: jax.Array, axis: int) -> jax.Array:
    """`x` with its first and last slices along `axis` repeated once on either side."""
    n = x.shape[axis]
    first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
    last = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
    return jax.lax.concatenate([first, x, last], axis)


def _upsample_axis(x: jax.Array, factor: int, axis: int) -> jax.Array:
    b = x.shape[axis]
    xp = _edge_extend(x, axis)
    before = jax.lax.slice_in_dim(xp, 0, b, axis=axis)
    after = jax.lax.slice_in_dim(xp, 2, b + 2, axis=axis)
    phases = []
    for p in range(factor):
        # Output pixel factor*i + p samples the input at i + (p + 1/2) / factor - 1/2.
        offset = (p + 0.5) / factor - 0.5
        neighbour = before if offset < 0 else after
        d = abs(offset)
        phases.append(x * (1.0 - d) + neighbour * d)
    out = jnp.stack(phases, axis=axis + 1)  # (..., b, factor, ...)
    shape = list(x.shape)
    shape[axis] = shape[axis] * factor
    return out.reshape(shape)


def upsample_bilinear(x: jax.Array, factor: int = SCALE) -> jax.Array:
    """(B, h, w, C) -> (B, factor*h, factor*w, C), bilinear with half-pixel centres and clamped
    edges: `jax.image.resize(x, ..., "bilinear")` by a whole factor, as `factor` fixed-weight
    phases per axis interleaved by a reshape.

    The export form of the defocus map's upsampling (`ifan_jax.export`): it uses only slices,
    concatenations and reshapes, which jax2onnx converts with symbolic height and width, where
    `jax.image.resize` needs the output size as constants. Equal to it to float rounding.
    """
    x = x.astype(jnp.float32)
    return _upsample_axis(_upsample_axis(x, factor, 1), factor, 2)
