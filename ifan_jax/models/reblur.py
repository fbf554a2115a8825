"""The reblurring network (RBN, paper Sec. 3.3), used only in training.

It predicts reblurring filters from the deblurring filter map and applies them with IAC (or FAC) to
the 1/8 nearest-downsampled sharp image; the reblurring loss compares the result with the 1/8
area-downsampled blurred input. This ties the deblurring filters to the blur they must invert.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifan_jax.models import iac as iac_lib
from ifan_jax.models.layers import ConvResStack, Pointwise
from ifan_jax.models.resample import nearest_downsample

Dtype = Any


class ReblurringNetwork(nn.Module, kw_only=True):
    """sharp (B, H, W, 3) and deblurring filters (B, H/8, W/8, M) -> reblurred (B, H/8, W/8, 3).

    The filters may come as a `layers.Pointwise` (the 1x1 convolution that makes them, not yet
    computed): the first convolution then reads them without forming the M-channel map. Its
    fields are keyword-only.
    """

    channels: int = 128  # 4 * ch, the width of its convolutions
    res_units: int = 2
    num_iterations: int = 17
    filter_size: int = 3
    adaptive_conv: str = "iac"
    fac_kernel_size: int = 11
    iac_variant: str = "separable"
    gain: float = 1.0
    dtype: Dtype = jnp.float32
    precision: Any = None

    def num_filter_channels(self) -> int:
        if self.adaptive_conv == "fac":
            return 3 * self.fac_kernel_size**2
        return iac_lib.iac_channels(self.num_iterations, 3, self.filter_size)

    @nn.compact
    def __call__(self, sharp: jax.Array, deblur_filters: jax.Array | Pointwise) -> jax.Array:
        sharp_down = nearest_downsample(sharp).astype(jnp.float32)
        filters = ConvResStack(
            self.channels, self.num_filter_channels(), num_blocks=2, units_per_block=self.res_units,
            out_kernel_size=3, out_activation=False, gain=self.gain, dtype=self.dtype,
            precision=self.precision, name="filter_head")(deblur_filters).astype(jnp.float32)
        if self.adaptive_conv == "fac":
            blurred = iac_lib.fac(sharp_down, filters, self.fac_kernel_size, activate_last=False)
        else:
            # Training only: each iteration recomputed in the backward pass (as IFAN's IAC).
            blurred = iac_lib.iac(sharp_down, filters, self.num_iterations, self.filter_size,
                                  activate_last=False, variant=self.iac_variant, remat=True)
        return blurred + sharp_down
