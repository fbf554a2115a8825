"""Iterative Adaptive Convolution (IAC, paper Sec. 3.1) and the dense FAC layer it replaces.

Layouts (NHWC throughout):
  features  e:  (B, H, W, C)
  filter map F: (B, H, W, N * 2 * C * k + N * C), the official channel layout: for iteration n the
                block [f_n1 (C*k), f_n2 (C*k)], each channel-major (index c * k + tap), and after
                all N blocks the N bias vectors of C channels each.

One IAC iteration (paper Eq. 1):  e_n = LReLU(e_{n-1} * f_n1 * f_n2 + b_n), where `*` is a
per-pixel, per-channel 1-D convolution: first a vertical k x 1 pass, then a horizontal 1 x k pass,
both reading edge-replicated borders.

Two variants:
  "separable": the horizontal pass uses its own filter f_n2 (the paper's Eq. 1).
  "official":  the horizontal pass reuses f_n1. The released official code has this slip (its
               README says so) and every released checkpoint was trained with it, so converted
               official weights must run this way to reproduce the official outputs.

Internally every pass works on *tap-major* filters, shape (B, H, W, k, C): tap j is then a
contiguous (B, H, W, C) slab and each pass is k shifted multiply-adds over whole arrays. Reading the
taps straight from the channel-major map (a stride-k slice of the channel axis) is many times
slower, which is why `filter_columns_tap_major` exists: it lets the filter predictor produce
tap-major filters directly (see `iac_from_head`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ifan_jax.models.layers import leaky_relu

VARIANTS = ("separable", "official")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"iac variant must be one of {VARIANTS}, got {variant!r}")


def iac_channels(num_iterations: int, channels: int, kernel_size: int) -> int:
    """Number of filter-map channels IAC consumes: N * C * (2k + 1)."""
    return num_iterations * channels * (2 * kernel_size + 1)


def edge_pad(x: jax.Array, pad: int, axis: int) -> jax.Array:
    """`x` with `pad` copies of its first and last slices along `axis` added on either side: the
    same array as `jnp.pad(..., mode="edge")` on that one axis, as one concatenation of slices.

    The export form (`ifan_jax.export`) pads with it. jax2onnx 0.17.1 lowers `jnp.pad`'s edge
    mode into edge slices broadcast also along the unpadded axes, to width 0, through an Expand
    that onnxruntime's shape inference sizes 1 ("Inferred=3 Declared=1" on the Concat); and the
    `jax.lax.concatenate` here keeps symbolic heights and widths, which jnp.concatenate under
    jax2onnx's tracing did not.
    """
    if pad == 0:
        return x
    first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
    last = jax.lax.slice_in_dim(x, x.shape[axis] - 1, x.shape[axis], axis=axis)
    return jax.lax.concatenate([first] * pad + [x] + [last] * pad, axis)


def adaptive_pass(x: jax.Array, taps: jax.Array, axis: int) -> jax.Array:
    """Per-pixel 1-D filtering of `x` (B, H, W, C) along `axis` (1: vertical, 2: horizontal).

    `taps` is (B, H, W, k, C): out[p, c] = sum_j x[p + (j - k//2) * unit(axis), c] * taps[p, j, c],
    with edge-replicated borders.
    """
    k = taps.shape[-2]
    pad = (k - 1) // 2
    widths = [(0, 0)] * 4
    widths[axis] = (pad, pad)
    xp = jnp.pad(x, widths, mode="edge")
    size = x.shape[axis]
    out = jax.lax.slice_in_dim(xp, 0, size, axis=axis) * taps[..., 0, :]
    for j in range(1, k):
        out = out + jax.lax.slice_in_dim(xp, j, j + size, axis=axis) * taps[..., j, :]
    return out


def iac_iteration(x, f1, f2, bias, activate: bool | jax.Array, variant: str):
    """One IAC iteration on tap-major filters f1, f2 (B, H, W, k, C) and bias (B, H, W, C)."""
    y = adaptive_pass(x, f1, axis=1)
    y = adaptive_pass(y, f1 if variant == "official" else f2, axis=2)
    y = y + bias
    return jnp.where(activate, leaky_relu(y), y)


def split_filter_map(filters: jax.Array, num_iterations: int, channels: int, kernel_size: int):
    """Official channel layout -> tap-major arrays f1, f2: (N, B, H, W, k, C), bias: (N, B, H, W, C)."""
    n, c, k = num_iterations, channels, kernel_size
    expected = iac_channels(n, c, k)
    if filters.shape[-1] != expected:
        raise ValueError(f"filter map has {filters.shape[-1]} channels, IAC with N={n}, C={c}, "
                         f"k={k} needs {expected}")
    lead = filters.shape[:-1]
    sep = filters[..., : n * 2 * c * k].reshape(*lead, n, 2, c, k)
    sep = jnp.moveaxis(sep, (-4, -3), (0, 1))  # (N, 2, B, H, W, C, k)
    sep = jnp.swapaxes(sep, -1, -2)  # (N, 2, B, H, W, k, C)
    bias = jnp.moveaxis(filters[..., n * 2 * c * k:].reshape(*lead, n, c), -2, 0)
    return sep[:, 0], sep[:, 1], bias


def iac(features: jax.Array, filters: jax.Array, num_iterations: int, kernel_size: int, *,
        activate_last: bool = True, variant: str = "separable", remat: bool = False) -> jax.Array:
    """Apply IAC to `features` (B, H, W, C) with a filter map in the official layout.

    Returns (B, H, W, C). Every iteration but the last is followed by LeakyReLU(0.1); the last one
    too when `activate_last`. The iterations run in a `lax.scan`: iteration n slices its own
    block [f_n1, f_n2] (2*C*k contiguous channels per pixel) and its bias out of the map and
    rearranges only that block tap-major, so the whole map is never copied or transposed.
    `remat=True` recomputes each iteration in the backward pass instead of keeping its
    intermediates (less memory in training, same numbers).
    """
    _check_variant(variant)
    n, c, k = num_iterations, features.shape[-1], kernel_size
    expected = iac_channels(n, c, k)
    if filters.shape[-1] != expected:
        raise ValueError(f"filter map has {filters.shape[-1]} channels, IAC with N={n}, C={c}, "
                         f"k={k} needs {expected}")
    lead = features.shape[:-1]

    def body(x, i):
        block = jax.lax.dynamic_slice_in_dim(filters, i * 2 * c * k, 2 * c * k, axis=-1)
        block = jnp.swapaxes(block.reshape(*lead, 2, c, k), -1, -2)  # (B, H, W, 2, k, C)
        bias = jax.lax.dynamic_slice_in_dim(filters, n * 2 * c * k + i * c, c, axis=-1)
        activate = (i < n - 1) | activate_last
        f1, f2 = block[..., 0, :, :], block[..., 1, :, :]
        return iac_iteration(x, f1, f2, bias, activate, variant).astype(x.dtype), None

    if remat:
        body = jax.checkpoint(body)
    out, _ = jax.lax.scan(body, features, jnp.arange(n))
    return out


def filter_columns_tap_major(num_iterations: int, channels: int, kernel_size: int,
                             variant: str) -> np.ndarray:
    """Column indices that reorder a filter-map channel axis into per-iteration tap-major blocks.

    Returns an int array (N, M): row n lists, for iteration n, the official channels of
    [f_n1 tap-major (k*C), f_n2 tap-major (k*C) (separable only), b_n (C)], so that
    `filter_map[..., cols[n]]` is the input `iac_iteration` wants, flattened.
    """
    _check_variant(variant)
    n, c, k = num_iterations, channels, kernel_size
    rows = []
    for i in range(n):
        base = i * 2 * c * k
        tap_major = lambda off: (off + np.arange(c)[None, :] * k + np.arange(k)[:, None]).ravel()
        parts = [tap_major(base)]
        if variant == "separable":
            parts.append(tap_major(base + c * k))
        parts.append(n * 2 * c * k + i * c + np.arange(c))
        rows.append(np.concatenate(parts))
    return np.stack(rows)


def iac_from_head(features: jax.Array, head: jax.Array, kernel: jax.Array, bias: jax.Array,
                  num_iterations: int, kernel_size: int, *, activate_last: bool = True,
                  variant: str = "separable", precision: Any = None,
                  remat: bool = False) -> jax.Array:
    """IAC whose filters are computed on the fly from the filter predictor's last features.

    Equal to `iac(features, head @ kernel + bias, ...)`, but the full filter map (N*C*(2k+1)
    channels, 0.9 GB at 1280x720) never exists: a `lax.scan` over the N iterations multiplies
    `head` (B, H, W, D) by the columns of the final 1x1 convolution (`kernel` (D, M), `bias` (M,))
    that belong to one iteration, reordered tap-major, and applies that iteration at once. The
    "official" variant does not even compute the unused f_n2 columns. `remat=True` (training)
    recomputes each iteration's filters in the backward pass instead of keeping all N of them.
    """
    _check_variant(variant)
    n, k = num_iterations, kernel_size
    c = features.shape[-1]
    cols = filter_columns_tap_major(n, c, k, variant)
    w = jnp.moveaxis(kernel[:, cols], 1, 0)  # (N, D, M_iter)
    b = bias[cols]  # (N, M_iter)
    lead = features.shape[:-1]

    def body(x, inputs):
        i, w_i, b_i = inputs
        filt = jnp.einsum("bhwd,dm->bhwm", head, w_i, precision=precision) + b_i
        f1 = filt[..., : k * c].reshape(*lead, k, c)
        if variant == "separable":
            f2 = filt[..., k * c: 2 * k * c].reshape(*lead, k, c)
        else:
            f2 = f1
        bi = filt[..., -c:]
        activate = (i < n - 1) | activate_last
        return iac_iteration(x, f1, f2, bi, activate, variant).astype(x.dtype), None

    if remat:
        body = jax.checkpoint(body)
    out, _ = jax.lax.scan(body, features, (jnp.arange(n), w.astype(head.dtype), b.astype(head.dtype)))
    return out


def adaptive_pass_planar(x: jax.Array, taps: list[jax.Array], axis: int) -> jax.Array:
    """`adaptive_pass` in the export form, on any layout: `x` and each of the k tap filters
    `taps[j]` are arrays of one shape, `axis` the one to filter along; out = sum_j taps[j] * (x
    shifted by j - k//2 along `axis`, its borders replicated by `edge_pad`). The middle tap reads
    `x` itself; the sum runs over the taps in order, as `adaptive_pass` sums them."""
    k = len(taps)
    pad = (k - 1) // 2
    xp = edge_pad(x, pad, axis)
    size = x.shape[axis]
    window = lambda j: x if j == pad else jax.lax.slice_in_dim(xp, j, j + size, axis=axis)
    out = window(0) * taps[0]
    for j in range(1, k):
        out = out + window(j) * taps[j]
    return out


def iac_from_head_unrolled(features: jax.Array, head: jax.Array, kernel: jax.Array,
                           bias: jax.Array, num_iterations: int, kernel_size: int, *,
                           activate_last: bool = True, variant: str = "separable",
                           precision: Any = None) -> jax.Array:
    """The export form of `iac_from_head`: the same computation, laid out for ONNX runtimes.

    `features` (B, H, W, C) and `head` (B, H, W, D) in, (B, H, W, C) out, as `iac_from_head`.
    Inside, the N iterations are unrolled in Python (a straight-line graph with no ONNX Loop,
    each iteration's columns of the 1x1 kernel a constant): each tap's filter and the bias are
    their own 1x1 convolution of `head`, which onnxruntime's CPU runs as its blocked-layout
    convolution, and each pass is k shifted multiply-adds of whole arrays (`adaptive_pass_planar`),
    so no filter is sliced, reshaped or transposed per tap. It stays NHWC: the same form run
    channel-first (B, C, H, W) was as fast on onnxruntime's CPU, but onnxruntime-web's WebGPU
    refused its edge padding ("[Concat] ... non concat dimensions must match"). Inference only (no
    remat); training and `Deblurrer` keep the scan.
    """
    _check_variant(variant)
    n, k = num_iterations, kernel_size
    c = features.shape[-1]
    cols = filter_columns_tap_major(n, c, k, variant)
    x = features

    def pointwise(columns):
        """head (B, H, W, D) -> (B, H, W, len(columns)): the 1x1 convolution by those columns."""
        w = kernel[:, columns].astype(head.dtype)[None, None]  # HWIO
        y = jax.lax.conv_general_dilated(head, w, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=precision)
        return y + bias[columns].astype(head.dtype)

    for i in range(n):
        blocks = [pointwise(cols[i][j * c:(j + 1) * c]) for j in range(len(cols[i]) // c)]
        f1 = blocks[:k]
        f2 = blocks[k:2 * k] if variant == "separable" else f1
        y = adaptive_pass_planar(x, f1, axis=1)
        y = adaptive_pass_planar(y, f2, axis=2) + blocks[-1]
        activate = i < n - 1 or activate_last
        x = (leaky_relu(y) if activate else y).astype(x.dtype)
    return x


def iac_per_pixel(features: jax.Array, filters: jax.Array, num_iterations: int, kernel_size: int,
                  activate_last: bool = True, variant: str = "separable") -> jax.Array:
    """The same IAC written the straightforward way: each pixel's k-tap windows gathered from the
    padded map and dotted with its own filters, `jax.vmap`-ed over pixels.

    This is the unfold formulation of the official code; it is kept as an independent reference for
    the tests and the benchmark (it is slower and materialises the windows).
    """
    _check_variant(variant)
    n, k = num_iterations, kernel_size
    b_, h, w, c = features.shape
    pad = (k - 1) // 2
    f1s, f2s, biases = split_filter_map(filters, n, c, k)

    def one_pass(x, taps, vertical):
        xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)) if vertical
                     else ((0, 0), (0, 0), (pad, pad), (0, 0)), mode="edge")

        def pixel(bi, yi, xi):
            if vertical:
                window = jax.lax.dynamic_slice(xp, (bi, yi, xi, 0), (1, k, 1, c))[0, :, 0]
            else:
                window = jax.lax.dynamic_slice(xp, (bi, yi, xi, 0), (1, 1, k, c))[0, 0]
            return jnp.sum(window * taps[bi, yi, xi], axis=0)

        bb, yy, xx = jnp.meshgrid(jnp.arange(b_), jnp.arange(h), jnp.arange(w), indexing="ij")
        out = jax.vmap(pixel)(bb.ravel(), yy.ravel(), xx.ravel())
        return out.reshape(b_, h, w, c)

    x = features
    for i in range(n):
        y = one_pass(x, f1s[i], vertical=True)
        y = one_pass(y, f1s[i] if variant == "official" else f2s[i], vertical=False)
        y = y + biases[i]
        x = leaky_relu(y) if (i < n - 1 or activate_last) else y
    return x


def fac(features: jax.Array, filters: jax.Array, kernel_size: int,
        activate_last: bool = True, concat_pad: bool = False) -> jax.Array:
    """Filter Adaptive Convolution: one dense k x k filter per pixel and channel (paper Table 5).

    `filters` (B, H, W, C*k*k), channel-major with row-major taps (index c*k*k + dy*k + dx);
    edge-replicated borders like IAC (`concat_pad`: padded by `edge_pad`, the export form); no
    bias. LeakyReLU(0.1) after it when `activate_last`.
    """
    b_, h, w, c = features.shape
    k = kernel_size
    if filters.shape[-1] != c * k * k:
        raise ValueError(f"FAC filter map has {filters.shape[-1]} channels, needs C*k*k = {c * k * k}")
    pad = (k - 1) // 2
    if concat_pad:
        xp = edge_pad(edge_pad(features, pad, 1), pad, 2)
    else:
        xp = jnp.pad(features, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    taps = filters.reshape(b_, h, w, c, k * k)
    out = jnp.zeros_like(features)
    for dy in range(k):
        for dx in range(k):
            window = jax.lax.slice_in_dim(jax.lax.slice_in_dim(xp, dy, dy + h, axis=1), dx, dx + w,
                                          axis=2)  # xp[:, dy:dy + h, dx:dx + w]
            out = out + window * taps[..., dy * k + dx]
    return leaky_relu(out) if activate_last else out
