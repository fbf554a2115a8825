"""Building blocks shared by the IFAN network and the reblurring network.

All tensors are NHWC. Convolutions use PyTorch's zero padding of (k - 1) // 2 on every side, so
that a stride-2 convolution gives ceil(H / 2) rows exactly as the official code does. Kernels are
stored HWIO (transposed convolutions: HWIO of the equivalent forward convolution, see
`ConvTranspose`), initialised Xavier-uniform with a gain, biases zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

NEGATIVE_SLOPE = 0.1


def leaky_relu(x: jax.Array) -> jax.Array:
    """LeakyReLU with slope 0.1, the only activation in IFAN: x where x >= 0, else 0.1 * x.

    `jax.nn.leaky_relu` computes exactly that (`jnp.where(x >= 0, x, 0.1 * x)`); called through
    it, the ONNX export (jax2onnx) writes one LeakyRelu node, which onnxruntime fuses into the
    convolution before it, instead of GreaterOrEqual, Mul and Where over the whole tensor (the
    Where nodes alone took 39% of onnxruntime's time on the paper's network at 640x360)."""
    return jax.nn.leaky_relu(x, NEGATIVE_SLOPE)


def xavier_uniform(gain: float = 1.0):
    """torch.nn.init.xavier_uniform_(w, gain): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, dtype: Dtype = jnp.float32,
           precision: Any = None) -> jax.Array:
    """NHWC x HWIO convolution with PyTorch's zero padding of (k - 1) // 2 on every side."""
    pad = (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x.astype(dtype), kernel.astype(dtype), window_strides=(stride, stride),
        padding=((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision)


class Pointwise(NamedTuple):
    """A feature map given as a 1x1 convolution not yet computed: `features @ kernel + bias`.

    `features` (B, H, W, D), `kernel` (D, M), `bias` (M,). A `Conv` applied to it composes its
    own kernel with `kernel` instead of forming the M-channel map: IFAN's reblurring network reads
    the 15,232-channel filter map with a 3x3 convolution to 128 channels, which costs 120x the
    multiply-adds of the same convolution on the 128-channel features the map is made from.
    """

    features: jax.Array
    kernel: jax.Array
    bias: jax.Array

    @property
    def channels(self) -> int:
        return self.kernel.shape[-1]

    def materialize(self, dtype: Dtype = jnp.float32, precision: Any = None) -> jax.Array:
        return jnp.einsum("bhwd,dm->bhwm", self.features.astype(dtype), self.kernel.astype(dtype),
                          precision=precision) + self.bias.astype(dtype)

    def conv(self, kernel: jax.Array, stride: int, dtype: Dtype, precision: Any) -> jax.Array:
        """conv2d(features @ self.kernel + self.bias, kernel), without forming the map.

        Exact up to float rounding: conv(F W + b, K) = conv(F, W K) + conv(1, b K), where the
        second term is the bias seen through the zero padding (smaller at the borders).
        """
        hp = jax.lax.Precision.HIGHEST
        composed = jnp.einsum("dm,yxmo->yxdo", self.kernel.astype(jnp.float32),
                              kernel.astype(jnp.float32), precision=hp)
        bias_taps = jnp.einsum("m,yxmo->yxo", self.bias.astype(jnp.float32),
                               kernel.astype(jnp.float32), precision=hp)[:, :, None, :]
        ones = jnp.ones((*self.features.shape[:-1], 1), dtype)
        return (conv2d(self.features, composed, stride, dtype, precision)
                + conv2d(ones, bias_taps, stride, dtype, precision))


class Conv(nn.Module):
    """k x k convolution with bias, PyTorch padding, optional LeakyReLU(0.1) after it.

    The input may be a `Pointwise` (a 1x1 convolution's inputs and weights); the result is the
    same as on the map it stands for.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    activation: bool = True
    gain: float = 1.0
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array | Pointwise) -> jax.Array:
        k = self.kernel_size
        channels = x.channels if isinstance(x, Pointwise) else x.shape[-1]
        kernel = self.param("kernel", xavier_uniform(self.gain), (k, k, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if isinstance(x, Pointwise):
            y = x.conv(kernel, self.stride, self.dtype, self.precision)
        else:
            y = conv2d(x, kernel, self.stride, self.dtype, self.precision)
        y = y + bias.astype(self.dtype)
        return leaky_relu(y) if self.activation else y


class ConvTranspose(nn.Module):
    """4x4 stride-2 transposed convolution (PyTorch padding=1) followed by LeakyReLU(0.1).

    Doubles height and width. The kernel is stored as (kh, kw, in, out), i.e. PyTorch's IOHW
    weight transposed to (2, 3, 0, 1). Computed phase by phase (sub-pixel), which never multiplies
    the zeros of the equivalent dilated convolution: output pixel (2p + a, 2q + b) reads input rows
    {p - 1, p} (a = 0, kernel rows 3, 1) or {p, p + 1} (a = 1, kernel rows 2, 0), and likewise for
    columns, so each of the four phases (a, b) is a stride-1 2x2 convolution; the phases are
    interleaved depth-to-space. This does a quarter of the dilated form's multiplications and its
    gradients are ordinary convolution gradients (the dilated form's kernel gradient is the slowest
    op of a CPU training step).
    """

    features: int
    gain: float = 1.0
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", xavier_uniform(self.gain), (4, 4, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        taps = {0: (3, 1), 1: (2, 0)}  # kernel rows (or columns) read by phase 0 / 1, in order
        pads = {0: (1, 0), 1: (0, 1)}
        x = x.astype(self.dtype)
        rows = []
        for a in (0, 1):
            cols = []
            for b in (0, 1):
                k = kernel[np.array(taps[a])][:, np.array(taps[b])]
                cols.append(jax.lax.conv_general_dilated(
                    x, k.astype(self.dtype), window_strides=(1, 1), padding=(pads[a], pads[b]),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision))
            rows.append(jnp.stack(cols, axis=3))  # (B, H, W, 2 [b], C)
        y = jnp.stack(rows, axis=2)  # (B, H, 2 [a], W, 2 [b], C)
        n, h, _, w, _, c = y.shape
        y = y.reshape(n, 2 * h, 2 * w, c)
        return leaky_relu(y + bias.astype(self.dtype))


class ResidualBlock(nn.Module):
    """`num_units` units of conv-LReLU-conv with a skip and an LReLU after each addition.

    As in the official code, the block adds one more outer skip (input to output) only when it has
    more than one unit.
    """

    num_units: int = 1
    kernel_size: int = 3
    gain: float = 1.0
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        block_input = x
        for i in range(self.num_units):
            conv = lambda name, act: Conv(
                features, self.kernel_size, activation=act, gain=self.gain, dtype=self.dtype,
                precision=self.precision, name=name)
            y = conv(f"unit{i + 1}_conv1", True)(x)
            y = conv(f"unit{i + 1}_conv2", False)(y)
            x = leaky_relu(x + y)
        if self.num_units > 1:
            x = x + block_input
        return x


class ConvResStack(nn.Module):
    """conv -> residual blocks -> conv: the shape of the fusion, disparity, filter and RBN heads.

    `out_kernel_size` and `out_activation` describe the last convolution (the filter head ends in a
    1x1 convolution with no activation, the disparity head in a 3x3 one with no activation).
    """

    features: int
    out_features: int
    num_blocks: int = 2
    units_per_block: int = 2
    kernel_size: int = 3
    out_kernel_size: int = 3
    out_activation: bool = True
    gain: float = 1.0
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(gain=self.gain, dtype=self.dtype, precision=self.precision)
        x = Conv(self.features, self.kernel_size, name="conv_in", **kw)(x)
        for b in range(self.num_blocks):
            x = ResidualBlock(self.units_per_block, self.kernel_size, name=f"res{b + 1}", **kw)(x)
        return Conv(self.out_features, self.out_kernel_size, activation=self.out_activation,
                    name="conv_out", **kw)(x)
