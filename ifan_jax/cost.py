"""Parameter and MAC counts of an IFAN model, comparable with the paper's Tables 1, 4 and 5.

    python -m ifan_jax.cost --config=configs/ifan.py --height=720 --width=1280 [--json=PATH]
    python -m ifan_jax.cost --config=configs/ifan.py:N=26

The paper reports parameters and MACs at 1280 x 720 as measured by ptflops, a PyTorch counter
that hooks `nn.Module`s. For the official network that sum is, per hooked module:

  * Conv2d:           output elements x (k * k * in_channels) multiply-accumulates,
                      plus one operation per output element for the bias;
  * ConvTranspose2d:  input elements x (k * k * out_channels) multiply-accumulates (every input
                      pixel scatters into a k x k window; no products with inserted zeros),
                      plus one per output element for the bias;
  * nn.LeakyReLU:     one operation per output element. Only the activations that are modules in
                      the official code count: the one after an ordinary conv or transposed conv
                      and the one inside each residual unit. The LeakyReLU applied after a
                      residual addition is a function call there (`F.leaky_relu`), so it is not
                      counted, and neither are additions, clipping or resampling.

The IAC layer is a plain function in the official code, not a module, so ptflops never saw its
per-pixel multiply-adds (N * 2k per channel and pixel at 1/8 resolution, 0.19 B for N=17 at
1280 x 720). `count_macs` reports them separately as `adaptive` and leaves them out of `total`.

The count is exact and structural: the model's forward pass is traced abstractly
(`jax.eval_shape`, no arithmetic), with a Flax method interceptor recording the input and output
shape of every `Conv`, `ConvTranspose` and the filter predictor's final 1x1 convolution. The
full-size model is counted in about a second on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ifan_jax.config import load_config
from ifan_jax.errors import ArgumentParser, UserError
from ifan_jax.models import IFAN, REBLUR_KEY, abstract_params, count_params
from ifan_jax.models.ifan import PointwiseConv
from ifan_jax.models.layers import Conv, ConvTranspose
from ifan_jax.models.resample import SCALE

__all__ = ["LayerCost", "MacCount", "adaptive_macs", "count_macs", "main", "summarize"]


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One convolution of the traced forward pass (shapes NHWC)."""

    path: str  # module path, e.g. "feature_extractor/conv1_1"
    kind: str  # "conv", "conv_transpose" or "pointwise"
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int  # multiply-accumulates
    bias: int  # bias additions (one per output element)
    activation: int  # outputs of a LeakyReLU module after it (0 when it has none)


@dataclasses.dataclass(frozen=True)
class MacCount:
    """MACs of one forward pass of the deblurring network (inference; no reblurring network).

    `conv`, `bias` and `activation` are what ptflops counts, so `total` is comparable with the
    paper. `adaptive` is the per-pixel multiply-accumulate count of the IAC (or FAC) layer, which
    ptflops did not see and which is not in `total`.
    """

    conv: int
    bias: int
    activation: int
    adaptive: int
    height: int
    width: int
    layers: tuple[LayerCost, ...] = ()

    @property
    def total(self) -> int:
        return self.conv + self.bias + self.activation

    def by_module(self) -> dict[str, int]:
        """conv + bias + activation per top-level module (feature_extractor, ...), in order."""
        out: dict[str, int] = {}
        for layer in self.layers:
            top = layer.path.split("/")[0]
            out[top] = out.get(top, 0) + layer.macs + layer.bias + layer.activation
        return out


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0 or height % SCALE or width % SCALE:
        raise UserError(f"height and width must be positive multiples of {SCALE}, got {height}x{width}")


def adaptive_macs(model, height: int, width: int) -> int:
    """Per-pixel multiply-accumulates of the model's IAC (or FAC) layer at 1/8 resolution.

    IAC: N iterations of a vertical and a horizontal k-tap pass per channel (the official variant
    still does both passes, it only reuses the first filter); FAC: k * k taps per channel.
    """
    if not model.use_filter_prediction:
        return 0
    pixels = (height // SCALE) * (width // SCALE) * model.feature_channels
    if model.adaptive_conv == "fac":
        return pixels * model.fac_kernel_size**2
    return pixels * model.num_iterations * 2 * model.filter_size


def count_macs(model_config, height: int, width: int) -> MacCount:
    """Count the MACs of one inference pass on a (1, height, width, 3) image, ptflops-style.

    `model_config` is the `model` section of a config (ConfigDict or dict). See the module
    docstring for what is counted; the result is exact for the given size.
    """
    _check_size(height, width)
    model = IFAN.from_config(model_config)
    layers: list[LayerCost] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name != "__call__" or not isinstance(
                module, (Conv, ConvTranspose, PointwiseConv)):
            return out
        x_shape, y_shape = tuple(args[0].shape), tuple(out.shape)
        out_elements = int(np.prod(y_shape))
        if isinstance(module, ConvTranspose):
            kind = "conv_transpose"
            kernel = module.variables["params"]["kernel"].shape  # (kh, kw, in, out)
            macs = int(np.prod(x_shape)) * kernel[0] * kernel[1] * y_shape[-1]
            activation = out_elements
        elif isinstance(module, PointwiseConv):
            kind = "pointwise"
            macs = out_elements * x_shape[-1]
            activation = 0
        else:
            kind = "conv"
            macs = out_elements * module.kernel_size**2 * x_shape[-1]
            activation = out_elements if module.activation else 0
        layers.append(LayerCost("/".join(module.path), kind, x_shape, y_shape, macs,
                                out_elements, activation))
        return out

    image = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    views = (image, image) if model.dual_pixel_input else (None, None)

    def forward(blurred, right, left):
        with nn.intercept_methods(record):
            # The plain (non-streaming) path calls the final 1x1 conv as a module, so it is seen.
            return model.init_with_output(jax.random.PRNGKey(0), blurred, right, left,
                                          return_filters=True)

    jax.eval_shape(forward, image, *views)
    return MacCount(
        conv=sum(layer.macs for layer in layers),
        bias=sum(layer.bias for layer in layers),
        activation=sum(layer.activation for layer in layers),
        adaptive=adaptive_macs(model, height, width),
        height=height, width=width, layers=tuple(layers))


def load_model_config(spec: str):
    """The `model` section of the config `path/to/config.py[:arg]` (or a named config, see
    `configs.load_config`); a config without one is taken to be a model config itself. Any
    failure is a UserError naming the config."""
    try:
        config = load_config(spec)
    except ValueError:
        raise
    except Exception as e:  # a user's config file that does not run
        raise UserError(f"{spec}: could not be loaded ({type(e).__name__}: {e})") from None
    return config.model if "model" in config else config


def summarize(model_config, height: int, width: int) -> dict:
    """Parameters and MACs as a JSON-able dict (what the CLI prints)."""
    _check_size(height, width)
    shapes = abstract_params(model_config)
    macs = count_macs(model_config, height, width)
    reblur = count_params(shapes[REBLUR_KEY]) if REBLUR_KEY in shapes else None
    return {
        "height": height,
        "width": width,
        "params_deblurring": count_params(shapes),
        "params_reblurring": reblur,
        "macs_total": macs.total,
        "macs_conv": macs.conv,
        "macs_bias": macs.bias,
        "macs_activation": macs.activation,
        "macs_adaptive_not_in_total": macs.adaptive,
        "macs_by_module": macs.by_module(),
    }


def format_summary(summary: dict, title: str) -> str:
    b = lambda n: f"{n / 1e9:9.3f} B"
    lines = [
        f"{title} at {summary['width']}x{summary['height']}",
        f"parameters, deblurring network  {summary['params_deblurring']:>12,} "
        f"({summary['params_deblurring'] / 1e6:.2f} M)",
    ]
    if summary["params_reblurring"] is not None:
        lines.append(f"parameters, reblurring network  {summary['params_reblurring']:>12,} "
                     f"({summary['params_reblurring'] / 1e6:.2f} M, training only)")
    lines += [
        f"MACs (ptflops convention, as in the paper) {b(summary['macs_total'])}",
        f"  convolutions + transposed convs          {b(summary['macs_conv'])}",
        f"  bias additions                           {b(summary['macs_bias'])}",
        f"  LeakyReLU modules                        {b(summary['macs_activation'])}",
        "  adaptive conv (IAC/FAC) multiply-adds,",
        f"    not seen by ptflops, not in the total  {b(summary['macs_adaptive_not_in_total'])}",
        "  by module:",
    ]
    lines += [f"    {name:<36} {b(n)}" for name, n in summary["macs_by_module"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m ifan_jax.cost", name="cost", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="ifan",
                        help="config name or file, optionally with an argument: ifan:N=26, "
                             "configs/ifan.py:N=26 (default: ifan, the paper's model)")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        summary = summarize(load_model_config(args.config), args.height, args.width)
    except UserError as e:
        print(f"cost: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary, args.config))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump({"config": args.config, **summary}, f, indent=2)
        except OSError as e:
            print(f"cost: {args.json}: {e.strerror}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
