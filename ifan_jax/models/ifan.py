"""The IFAN deblurring network (paper Sec. 3.2, Fig. 3), layer for layer as the official model.

    blurred C ──feature extractor──► e_B (1/8) ──IAC(F_deblur)──► e_BS ──reconstructor──► result
        │                                            ▲
        └──filter encoder──► e_F ──disparity map estimator──► disparity ──┐
                              └──────────────── filter predictor ◄────────┘

Images are NHWC float in [0, 1] with height and width multiples of 8 (`inference.Deblurrer` pads
any size). With `train=False` the call returns {"result"} clipped to [0, 1]. IAC streams the filters
iteration by iteration (`iac.iac_from_head`) and the reblurring network reads them through its
first convolution composed with the 1x1 one that makes them (`layers.Pointwise`), so the full
filter map (M = 15,232 channels) is never formed unless it is read itself. With `train=True` the
call also needs the right/left views and the sharp image and returns what the losses use:

    result         (B, H, W, 3)    unclipped deblurred image
    filters        (B, H/8, W/8, M) the deblurring filter map F_deblur (official channel layout;
                                    formed only if read: jit drops it otherwise)
    disparity      (B, H/8, W/8, 1) disparity of the right view            [use_disparity]
    warped_right   (B, H/8, W/8, 3) right view, 8x8 area mean, warped by it [use_disparity]
    left_down      (B, H/8, W/8, 3) left view, 8x8 area mean                [use_disparity]
    reblurred      (B, H/8, W/8, 3) RBN output on the 1/8 nearest sharp    [use_reblur]
    blurred_down   (B, H/8, W/8, 3) blurred input, 8x8 area mean            [use_reblur]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ifan_jax.models import iac as iac_lib
from ifan_jax.models.layers import (
    Conv,
    ConvResStack,
    ConvTranspose,
    Pointwise,
    ResidualBlock,
    xavier_uniform,
)
from ifan_jax.models.reblur import ReblurringNetwork
from ifan_jax.models.resample import area_downsample, warp_horizontal

Dtype = Any

FILTER_PREDICTOR_GAIN = 1.5  # official `wiF`: Xavier gain of the filter predictor's head
REBLUR_GAIN = 1.0  # official `wiRF`
# The encoders: four stages of three convolutions; each stage's first has this stride.
ENCODER_STRIDES = (1, 2, 2, 2)
ENCODER_CONVS_PER_STAGE = 3
ESTIMATOR_BLOCKS = 2  # residual blocks of the disparity map estimator


class MapReach(NamedTuple):
    """How far a tile's edge reaches into the defocus map's computation, in 1/8-resolution pixels.

    A tile's zero-padded border changes the filter encoder's output (the estimator's input) at the
    1/8-resolution pixels fewer than `before` after the tile's first row (column) or fewer than
    `after` before its last, and the estimator's output `estimator` pixels further in; beyond
    that, a tile's values are exactly the whole image's.
    """

    before: int
    after: int
    estimator: int


class Encoder(nn.Module):
    """Four stages of three 3x3 convs (first stride 1, 2, 2, 2; widths ch, 2ch, 4ch, 4ch).

    The feature extractor and the filter encoder both have this shape. Returns the last feature
    map of every stage, (1, 1/2, 1/4, 1/8) resolution.
    """

    channels: int = 32
    kernel_size: int = 3
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        ch = self.channels
        feats = []
        widths = (ch, 2 * ch, 4 * ch, 4 * ch)
        for stage, (width, stride) in enumerate(zip(widths, ENCODER_STRIDES), 1):
            for j in range(1, ENCODER_CONVS_PER_STAGE + 1):
                x = Conv(width, self.kernel_size, stride if j == 1 else 1, dtype=self.dtype,
                         precision=self.precision, name=f"conv{stage}_{j}")(x)
            feats.append(x)
        return tuple(feats)


class PointwiseConv(nn.Module):
    """The filter predictor's final 1x1 convolution, usable whole or column by column."""

    in_features: int
    features: int
    gain: float = 1.0
    dtype: Dtype = jnp.float32
    precision: Any = None

    def setup(self):
        self.kernel = self.param("kernel", xavier_uniform(self.gain),
                                 (1, 1, self.in_features, self.features))
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,))

    def __call__(self, x):
        return Pointwise(x, *self.matrix()).materialize(self.dtype, self.precision)

    def matrix(self):
        """(kernel (D, M), bias (M,)) for computing a subset of output channels."""
        return self.kernel[0, 0], self.bias


class FilterPredictor(nn.Module):
    """Fuses the filter encoder features with the disparity map and predicts the filter map.

    Official names: `conv_DME` (disparity_conv), `conv4_4` (fusion), `F` (filter_head).
    `__call__` returns the head's last features before its final 1x1 conv; `self.filter_conv`
    turns them into the filter map.
    """

    channels: int  # 4 * ch
    out_channels: int
    res_units: int = 2
    kernel_size: int = 3
    dtype: Dtype = jnp.float32
    precision: Any = None

    def setup(self):
        kw = dict(dtype=self.dtype, precision=self.precision)
        c = self.channels
        self.disparity_conv = Conv(c, 3, **kw)
        self.fusion = ConvResStack(c, c, 2, self.res_units, self.kernel_size, **kw)
        self.filter_conv_in = Conv(c, self.kernel_size, gain=FILTER_PREDICTOR_GAIN, **kw)
        self.filter_res = [ResidualBlock(self.res_units, self.kernel_size, FILTER_PREDICTOR_GAIN,
                                         name=f"filter_res{i + 1}", **kw) for i in range(2)]
        self.filter_conv = PointwiseConv(c, self.out_channels, FILTER_PREDICTOR_GAIN, **kw)

    def __call__(self, encoded, disparity):
        x = self.fusion(jnp.concatenate([encoded, self.disparity_conv(disparity)], axis=-1))
        x = self.filter_conv_in(x)
        for block in self.filter_res:
            x = block(x)
        return x


class Reconstructor(nn.Module):
    """conv + residual block (3 units) + conv, then three 4x4/2 up-steps with skip additions."""

    channels: int = 32
    kernel_size: int = 3
    dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, skips, blurred):
        kw = dict(dtype=self.dtype, precision=self.precision)
        ch = self.channels
        x = ConvResStack(4 * ch, 4 * ch, 1, 3, self.kernel_size, name="bottleneck", **kw)(x)
        for level, width, skip in ((3, 4 * ch, skips[2]), (2, 2 * ch, skips[1]), (1, ch, skips[0])):
            x = ConvTranspose(width, name=f"up{level}", **kw)(x) + skip
            x = ResidualBlock(1, self.kernel_size, name=f"up{level}_res1", **kw)(x)
            x = ResidualBlock(1, self.kernel_size, name=f"up{level}_res2", **kw)(x)
        # The official last conv is followed by a LeakyReLU too, before the input skip.
        x = Conv(3, self.kernel_size, name="conv_out", **kw)(x)
        return x.astype(jnp.float32) + blurred


class IFAN(nn.Module):
    """IFAN and its variants; see the module docstring for inputs and outputs."""

    channels: int = 32
    kernel_size: int = 3
    res_units: int = 2
    num_iterations: int = 17
    filter_size: int = 3
    iac_variant: str = "separable"
    use_filter_prediction: bool = True  # F: filter predictor + IAC (else residual blocks)
    use_disparity: bool = True  # D: disparity map estimator + disparity loss
    use_reblur: bool = True  # R: reblurring network + reblurring loss (training only)
    reblur_iterations: int = 17
    reblur_filter_size: int = 3
    dual_pixel_input: bool = False  # the filter encoder reads the right and left views
    adaptive_conv: str = "iac"  # "iac" or "fac" (paper Table 5)
    fac_kernel_size: int = 11
    remat: bool = False  # training: also recompute each part's activations (IAC's always are)
    dtype: Dtype = jnp.float32
    precision: Any = None

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, **overrides) -> IFAN:
        """Build from a `model` ConfigDict (configs/ifan.py); unknown keys are an error."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
        values = dict(config.to_dict() if hasattr(config, "to_dict") else config)
        values.update(overrides)
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(unknown)}")
        if isinstance(values.get("dtype"), str):
            values["dtype"] = jnp.dtype(values["dtype"])
        return cls(**values)

    @property
    def feature_channels(self) -> int:
        return 4 * self.channels

    def num_filter_channels(self) -> int:
        """Channels of the filter predictor's output (the deblurring filter map)."""
        c = self.feature_channels
        if not self.use_filter_prediction:
            return c
        if self.adaptive_conv == "fac":
            return c * self.fac_kernel_size**2
        return iac_lib.iac_channels(self.num_iterations, c, self.filter_size)

    def map_reach(self) -> MapReach:
        """`MapReach` of this model: its filter encoder's and disparity map estimator's convolutions
        (zero padding of (k - 1) // 2, `layers.conv2d`) followed back from one 1/8-resolution
        pixel to the input pixels it reads."""
        pad, k = (self.kernel_size - 1) // 2, self.kernel_size
        low, high = 0, 0  # the input pixels one output pixel reads, walking back layer by layer
        strides = [s if j == 0 else 1 for s in ENCODER_STRIDES for j in range(ENCODER_CONVS_PER_STAGE)]
        for stride in reversed(strides):
            low, high = stride * low - pad, stride * high - pad + k - 1
        scale = math.prod(ENCODER_STRIDES)
        # Pixel d of a tile reads input pixels scale * d + low ... scale * d + high.
        before = -(low // scale)
        after = max(-(-(high - scale + 1) // scale), 0)
        # conv_in, two convolutions per residual unit, conv_out; stride 1.
        convs = 2 + 2 * ESTIMATOR_BLOCKS * self.res_units
        return MapReach(before, after, convs * pad)

    def setup(self):
        kw = dict(dtype=self.dtype, precision=self.precision)
        c = self.feature_channels
        if self.adaptive_conv not in ("iac", "fac"):
            raise ValueError(f"adaptive_conv must be 'iac' or 'fac', got {self.adaptive_conv!r}")
        # With remat, each part keeps only its inputs and outputs for the backward pass and
        # recomputes its inner activations there (the parameter tree is the same).
        part = nn.remat if self.remat else (lambda cls: cls)
        self.feature_extractor = part(Encoder)(self.channels, self.kernel_size, **kw)
        self.filter_encoder = part(Encoder)(self.channels, self.kernel_size, **kw)
        # Without D the estimator's last layer predicts an ordinary c-channel feature map.
        self.disparity_map_estimator = part(ConvResStack)(
            c, 1 if self.use_disparity else c, ESTIMATOR_BLOCKS, self.res_units, self.kernel_size,
            out_activation=False, **kw)
        self.filter_predictor = part(FilterPredictor)(c, self.num_filter_channels(),
                                                      self.res_units, self.kernel_size, **kw)
        if not self.use_filter_prediction:
            # Ablation (paper Sec. 4.1): residual blocks on concat(e_B, F_deblur) replace IAC.
            self.iac_substitute = part(ConvResStack)(c, c, 2, self.res_units, self.kernel_size,
                                                     **kw)
        self.reconstructor = part(Reconstructor)(self.channels, self.kernel_size, **kw)
        if self.use_reblur:
            self.reblurring_network = ReblurringNetwork(
                channels=c, res_units=self.res_units, num_iterations=self.reblur_iterations,
                filter_size=self.reblur_filter_size, adaptive_conv=self.adaptive_conv,
                fac_kernel_size=self.fac_kernel_size, iac_variant=self.iac_variant,
                gain=REBLUR_GAIN, **kw)

    def _encode(self, image, right, left):
        x = jnp.concatenate([right, left], axis=-1) if self.dual_pixel_input else image
        return self.filter_encoder(x)[-1]

    def _adapt(self, features, head, train: bool, return_filters: bool):
        """Apply the predicted filters to e_B; returns (deblurred features, filters).

        The filters come back as a `layers.Pointwise` (the map as `head @ kernel + bias`) or, where
        it had to be formed anyway, as the map itself. IAC computes each iteration's filters from
        `head` on the fly (`iac.iac_from_head`) and the reblurring network composes its first
        convolution with the 1x1 one (`layers.Pointwise.conv`), so neither needs the full filter
        map (0.9 GB at 1280x720); it is formed only when asked for (`return_filters`, or the
        "filters" output in training, which jit drops when nothing reads it) and for FAC.
        """
        if not self.use_filter_prediction:
            filters = self.filter_predictor.filter_conv(head)
            return self.iac_substitute(jnp.concatenate([features, filters], axis=-1)), filters
        features = features.astype(jnp.float32)
        kernel, bias = self.filter_predictor.filter_conv.matrix()
        factors = Pointwise(head, kernel, bias)
        if self.adaptive_conv == "iac" and not return_filters:
            # Training recomputes each IAC iteration in the backward pass: the scan keeps only
            # its carry instead of a dozen (N, B, H/8, W/8, 4C) stacks of intermediates. Measured
            # on the CPU at 256x256: 195 MB less at batch 2, 817 MB less at batch 8, no slower.
            out = iac_lib.iac_from_head(features, head.astype(jnp.float32), kernel, bias,
                                        self.num_iterations, self.filter_size,
                                        variant=self.iac_variant, precision=self.precision,
                                        remat=train)
            return out, factors
        filters = self.filter_predictor.filter_conv(head).astype(jnp.float32)
        if self.adaptive_conv == "fac":
            return iac_lib.fac(features, filters, self.fac_kernel_size), filters
        return iac_lib.iac(features, filters, self.num_iterations, self.filter_size,
                           variant=self.iac_variant, remat=train), filters

    def disparity(self, blurred, right=None, left=None):
        """The disparity map estimator's output alone, (B, H/8, W/8, 1) for (B, H, W, 3) inputs: the
        filter encoder and the estimator, as `__call__` computes them, without the deblurring
        branch (a fraction of its memory and time; models with D)."""
        return self.disparity_map_estimator(self._encode(blurred, right, left))

    def export_forward(self, blurred, right=None, left=None):
        """The export form of the eval forward (`ifan_jax.export`): (result, disparity, encoded).

        The same modules, parameters and computation as `__call__(blurred, right, left)` with
        `train=False`: `result` (B, H, W, 3) is its clipped "result", `disparity` (B, H/8, W/8, 1)
        the disparity map estimator's output and `encoded` (B, H/8, W/8, 4ch) its input, the filter
        encoder's output (both None without D). Only the adaptive convolution is written otherwise:
        IAC's iterations unrolled, each tap's filters a 1x1 convolution of their own
        (`iac.iac_from_head_unrolled`), and IAC's and FAC's borders padded by
        `iac.edge_pad`, which jax2onnx converts exactly.
        """
        if self.dual_pixel_input and (right is None or left is None):
            raise ValueError("the dual-pixel-input model needs the right and left views")
        f1, f2, f3, features = self.feature_extractor(blurred)
        encoded = self._encode(blurred, right, left)
        disparity = self.disparity_map_estimator(encoded)
        head = self.filter_predictor(encoded, disparity)
        if self.use_filter_prediction and self.adaptive_conv == "iac":
            kernel, bias = self.filter_predictor.filter_conv.matrix()
            deblurred = iac_lib.iac_from_head_unrolled(
                features.astype(jnp.float32), head.astype(jnp.float32), kernel, bias,
                self.num_iterations, self.filter_size, variant=self.iac_variant,
                precision=self.precision)
        elif self.use_filter_prediction:  # FAC, its borders padded by `iac.edge_pad`
            filters = self.filter_predictor.filter_conv(head).astype(jnp.float32)
            deblurred = iac_lib.fac(features.astype(jnp.float32), filters, self.fac_kernel_size,
                                    concat_pad=True)
        else:
            deblurred, _ = self._adapt(features, head, train=False, return_filters=False)
        result = self.reconstructor(deblurred, (f1, f2, f3), blurred.astype(jnp.float32))
        if not self.use_disparity:
            return jnp.clip(result, 0.0, 1.0), None, None
        return jnp.clip(result, 0.0, 1.0), disparity, encoded

    def __call__(self, blurred, right=None, left=None, sharp=None, train: bool = False,
                 return_filters: bool = False):
        if self.dual_pixel_input and (right is None or left is None):
            raise ValueError("the dual-pixel-input model needs the right and left views")
        if train and (right is None or left is None or sharp is None):
            raise ValueError("training needs the right and left views and the sharp image")
        f1, f2, f3, features = self.feature_extractor(blurred)
        encoded = self._encode(blurred, right, left)
        head = self.filter_predictor(encoded, self.disparity_map_estimator(encoded))
        deblurred, filters = self._adapt(features, head, train, return_filters)
        result = self.reconstructor(deblurred, (f1, f2, f3), blurred.astype(jnp.float32))
        if not train:
            out = {"result": jnp.clip(result, 0.0, 1.0)}
            if return_filters:
                out["filters"] = filters
            return out

        if isinstance(filters, Pointwise):
            filters_map = filters.materialize(self.dtype, self.precision).astype(jnp.float32)
        else:
            filters_map = filters
        out = {"result": result, "filters": filters_map}
        if self.use_disparity:
            # The disparity of the right view (the filter encoder reads R in place of C).
            encoded_right = encoded if self.dual_pixel_input else self._encode(right, right, left)
            disparity_right = self.disparity_map_estimator(encoded_right).astype(jnp.float32)
            out["disparity"] = disparity_right
            out["warped_right"] = warp_horizontal(area_downsample(right), disparity_right)
            out["left_down"] = area_downsample(left)
        if self.use_reblur:
            out["reblurred"] = self.reblurring_network(sharp, filters)
            out["blurred_down"] = area_downsample(blurred)
        return out
