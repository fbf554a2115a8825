"""Convert an official IFAN PyTorch checkpoint into an ifan-jax checkpoint, without PyTorch.

    python -m ifan_jax.weights --input=IFAN.pytorch --output=CKPT_DIR [--iac=official]
    cached_conversion("IFAN.pytorch")   # converted once, reused: what the deblur tool does

The `.pytorch`/`.pth` file is read by `ifan_jax.weights.torch_pickle` (NumPy and a restricted unpickler:
no torch, no code run from the file). The mapping itself (`convert_state_dict`) is a function of a
name -> numpy array dict. N, the width and the dual-pixel variant are inferred from the shapes.
Official checkpoints were trained with the IAC whose second pass reuses the first filter, so the
converted model uses `iac_variant="official"` unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from ifan_jax import checkpoint, fileio
from ifan_jax.checkpoint import file_digest
from ifan_jax.errors import ArgumentParser, UserError
from ifan_jax.models import REBLUR_KEY, abstract_params, count_params
from ifan_jax.models.iac import iac_channels
from ifan_jax.weights import torch_pickle

PREFIXES = ("module.", "Network.")

# Official Sequential "stacks" (conv, residual blocks, conv) -> (our module path, index of the
# last conv).
_STACKS = {
    "conv4_4": ("filter_predictor/fusion", 3),
    "conv_res": ("reconstructor/bottleneck", 2),
    "DME": ("disparity_map_estimator", 3),
    "RBF": ("reblurring_network/filter_head", 3),
}


class ConversionError(UserError):
    """A state dict that is not an IFAN checkpoint; the message names the key."""


def _strip(key: str) -> tuple[str, bool]:
    """Remove `module.`/`Network.` prefixes; returns (key, belongs to the reblurring network)."""
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    if key.startswith("reblurNet."):
        return key[len("reblurNet."):], True
    return key, False


def _target(key: str) -> tuple[str, str]:
    """Official key (prefixes stripped) -> (our module path, layer kind: conv|convT|pointwise)."""
    m = re.fullmatch(r"(k?)conv([1-4])_([1-3])\.0", key)
    if m:
        return (f"{'filter_encoder' if m[1] else 'feature_extractor'}/conv{m[2]}_{m[3]}", "conv")
    m = re.fullmatch(r"(conv4_4|conv_res|DME|RBF|F)\.(\d+)(?:\.stem\.(\d+)\.([02])|\.0)?", key)
    if m:
        name, idx, unit, conv = m[1], int(m[2]), m[3], m[4]
        if name == "F":
            base, last = "filter_predictor", 3
            names = {0: "filter_conv_in", last: "filter_conv"}
            res = f"{base}/filter_res{idx}"
            path = f"{base}/{names[idx]}" if idx in names else res
        else:
            base, last = _STACKS[name]
            res = f"{base}/res{idx}"
            path = {0: f"{base}/conv_in", last: f"{base}/conv_out"}.get(idx, res)
        if unit is not None:
            if idx in (0, last):
                raise KeyError(key)
            return f"{res}/unit{int(unit) + 1}_conv{1 if conv == '0' else 2}", "conv"
        if idx not in (0, last):
            raise KeyError(key)
        return path, ("pointwise" if name == "F" and idx == last else "conv")
    m = re.fullmatch(r"conv_DME\.0", key)
    if m:
        return "filter_predictor/disparity_conv", "conv"
    m = re.fullmatch(r"upconv([1-3])_u\.0", key)
    if m:
        return f"reconstructor/up{m[1]}", "convT"
    m = re.fullmatch(r"upconv([1-3])_([12])\.stem\.0\.([02])", key)
    if m:
        return f"reconstructor/up{m[1]}_res{m[2]}/unit1_conv{1 if m[3] == '0' else 2}", "conv"
    if key == "out_res.0":
        return "reconstructor/conv_out", "conv"
    raise KeyError(key)


def _convert_array(kind: str, leaf: str, value: np.ndarray, full_key: str) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if leaf == "bias":
        if value.ndim != 1:
            raise ConversionError(f"{full_key}: a bias must be 1-D, got shape {value.shape}")
        return value
    if value.ndim != 4:
        raise ConversionError(f"{full_key}: a conv weight must be 4-D, got shape {value.shape}")
    if kind == "convT":  # PyTorch IOHW -> (kh, kw, in, out)
        return np.ascontiguousarray(value.transpose(2, 3, 0, 1))
    return np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # OIHW -> HWIO


def infer_model_config(state: Mapping[str, np.ndarray]) -> dict:
    """Model config keys (see configs/ifan.py `model`) implied by the official tensor shapes.

    Width from conv1_1, N from the filter predictor's last conv (k = 3, as in every official
    model), units per residual block from the disparity map estimator, dual-pixel input from
    kconv1_1's input channels, the reblurring network from any `reblurNet.` key.
    """
    shapes, has_rbn = {}, False
    for full_key, value in state.items():
        key, is_rbn = _strip(full_key)
        has_rbn |= is_rbn
        shapes[f"reblurNet.{key}" if is_rbn else key] = tuple(np.shape(value))

    def need(key, ndim=4):
        if key not in shapes:
            raise ConversionError(f"missing key {key!r}: not an official IFAN checkpoint")
        if len(shapes[key]) != ndim:
            raise ConversionError(f"{key}: expected a {ndim}-D tensor, got shape {shapes[key]}")
        return shapes[key]

    k = 3
    ch = need("conv1_1.0.weight")[0]
    c4 = 4 * ch
    in_ch = need("kconv1_1.0.weight")[1]
    if in_ch not in (3, 6):
        raise ConversionError(f"kconv1_1.0.weight: filter encoder input must have 3 or 6 channels, "
                              f"got {in_ch}")
    fs_per = need("F.3.weight")[0]
    if fs_per % (c4 * (2 * k + 1)):
        raise ConversionError(f"F.3.weight: {fs_per} output channels is not N*{c4}*(2k+1) for k=3")
    n = fs_per // (c4 * (2 * k + 1))
    res_units = len({m[1] for key in shapes if (m := re.match(r"DME\.1\.stem\.(\d+)\.", key))})
    if not res_units:
        need("DME.1.stem.0.0.weight")
    cfg = dict(channels=int(ch), num_iterations=int(n), filter_size=k, res_units=res_units,
               dual_pixel_input=in_ch == 6, use_filter_prediction=True, use_disparity=True,
               adaptive_conv="iac", use_reblur=has_rbn, reblur_iterations=int(n),
               reblur_filter_size=k)
    if has_rbn:
        rbn_out = need("reblurNet.RBF.3.weight")[0]
        if rbn_out % (3 * (2 * k + 1)):
            raise ConversionError(f"reblurNet.RBF.3.weight: {rbn_out} output channels is not "
                                  f"N*3*(2k+1) for k=3")
        cfg["reblur_iterations"] = int(rbn_out // (3 * (2 * k + 1)))
    return cfg


def official_shapes(config: Mapping) -> dict[str, tuple[int, ...]]:
    """Every tensor of the official IFAN state dict for `config`, with its PyTorch shape.

    Keys carry no `module.`/`Network.` prefix; those of the reblurring network (present when
    `config["use_reblur"]`) start with `reblurNet.`. Conv weights are OIHW, transposed-conv weights
    IOHW. Only the full model (F, D, IAC) exists as an official checkpoint.
    """
    ch, n, k = config["channels"], config["num_iterations"], config["filter_size"]
    res_units, ks, c4 = config["res_units"], 3, 4 * config["channels"]
    filter_channels = iac_channels(n, c4, k)
    shapes: dict[str, tuple[int, ...]] = {}
    owner = ""  # "reblurNet." while listing the reblurring network

    def conv(name, cin, cout, size=ks):
        shapes[f"{owner}{name}.weight"] = (cout, cin, size, size)
        shapes[f"{owner}{name}.bias"] = (cout,)

    def res_block(name, c, units):
        for u in range(units):
            conv(f"{name}.stem.{u}.0", c, c)
            conv(f"{name}.stem.{u}.2", c, c)

    def stack(name, cin, c, cout, units, out_size=ks, tail=".0"):
        conv(f"{name}.0.0", cin, c)
        res_block(f"{name}.1", c, units)
        if name == "conv_res":  # one residual block of three units, then the last conv
            conv(f"{name}.2.0", c, cout)
            return
        res_block(f"{name}.2", c, units)
        conv(f"{name}.3{tail}", c, cout, out_size)

    for prefix, cin in (("conv", 3), ("kconv", 6 if config.get("dual_pixel_input") else 3)):
        for stage, width in enumerate((ch, 2 * ch, c4, c4), 1):
            for j in (1, 2, 3):
                conv(f"{prefix}{stage}_{j}.0", cin, width)
                cin = width
    stack("conv4_4", 2 * c4, c4, c4, res_units)
    stack("conv_res", c4, c4, c4, 3)
    for level, cin, cout in ((3, c4, c4), (2, c4, 2 * ch), (1, 2 * ch, ch)):
        shapes[f"upconv{level}_u.0.weight"] = (cin, cout, 4, 4)
        shapes[f"upconv{level}_u.0.bias"] = (cout,)
        res_block(f"upconv{level}_1", cout, 1)
        res_block(f"upconv{level}_2", cout, 1)
    conv("out_res.0", ch, 3)
    stack("DME", c4, c4, 1, res_units, tail="")
    conv("conv_DME.0", 1, c4)
    stack("F", c4, c4, filter_channels, res_units, out_size=1, tail="")
    if config.get("use_reblur"):
        owner = "reblurNet."
        rbn_out = iac_channels(config["reblur_iterations"], 3, config["reblur_filter_size"])
        stack("RBF", filter_channels, c4, rbn_out, res_units, tail="")
    return shapes


def convert_state_dict(state: Mapping[str, np.ndarray], iac_variant: str = "official"):
    """Official state dict (name -> array) -> (Flax `params` tree, model config dict).

    Keys may carry `module.` and/or `Network.` prefixes; `reblurNet.` keys become the
    `reblurring_network` subtree. Every tensor is checked against `official_shapes` of the
    inferred config: an unexpected key, a wrong shape or a missing key is a `ConversionError`
    naming the key.
    """
    config = infer_model_config(state)
    config["iac_variant"] = iac_variant
    expected = official_shapes(config)
    summary = (f"an IFAN with ch={config['channels']}, N={config['num_iterations']}"
               + (", dual-pixel input" if config["dual_pixel_input"] else ""))
    flat, seen = {}, {}
    for full_key, value in state.items():
        key, is_rbn = _strip(full_key)
        if key.endswith("num_batches_tracked"):
            continue
        name = f"reblurNet.{key}" if is_rbn else key
        if name not in expected:
            raise ConversionError(f"unexpected key {full_key!r}: not an IFAN parameter")
        if name in seen:
            raise ConversionError(f"key {full_key!r} duplicates {seen[name]!r}")
        seen[name] = full_key
        if tuple(np.shape(value)) != expected[name]:
            raise ConversionError(f"{full_key}: shape {tuple(np.shape(value))}, {summary} needs "
                                  f"{expected[name]}")
        module_key, _, leaf = key.rpartition(".")
        try:
            path, kind = _target(module_key)
        except KeyError:
            raise ConversionError(f"unexpected key {full_key!r}: not an IFAN parameter") from None
        array = _convert_array(kind, leaf, value, full_key)
        name_leaf = "kernel" if leaf == "weight" else "bias"
        flat[tuple(path.split("/")) + (name_leaf,)] = array
    missing = sorted(set(expected) - set(seen))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConversionError(f"missing key {missing[0]!r}{more}: {summary} needs it")
    return unflatten_dict(flat), config


def check_against_model(params, config: dict) -> None:
    """Compare converted shapes with the model's parameter tree; raise naming the first mismatch."""
    expected = flatten_dict(abstract_params(config, with_reblur=bool(config.get("use_reblur", True))))
    got = flatten_dict(params)
    for path in sorted(set(expected) | set(got)):
        name = "/".join(path)
        if path not in got:
            raise ConversionError(f"checkpoint lacks parameter {name}")
        if path not in expected:
            raise ConversionError(f"checkpoint has unexpected parameter {name}")
        if tuple(expected[path].shape) != tuple(got[path].shape):
            raise ConversionError(f"{name}: shape {tuple(got[path].shape)} in the checkpoint, "
                                  f"model needs {tuple(expected[path].shape)}")



def _read(reader, path: str):
    """`reader(path)` (a torch_pickle reader) with its failures as one-line ConversionErrors."""
    try:
        return reader(path)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConversionError(f"{path}: is a directory, not a PyTorch checkpoint file") from None
    except OSError as e:
        raise ConversionError(f"{path}: cannot be read ({e.strerror or e})") from None
    except torch_pickle.TorchPickleError as e:
        raise ConversionError(f"{path}: {e}") from None

def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a PyTorch checkpoint file into a name -> float32 numpy dict (`ifan_jax.weights.torch_pickle`,
    within its limits; a dict wrapping the state dict under "state_dict", "model" or "network" is
    unwrapped). A tensor holding a NaN or an infinity is a ConversionError naming it."""
    obj = _read(torch_pickle.load, path)
    for wrapper in ("state_dict", "model", "network"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path}: does not hold a state dict")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, np.ndarray):
            raise ConversionError(f"{path}: entry {str(k)[:100]!r} is not a tensor")
        out[k] = v.astype(np.float32, copy=False)
    checkpoint.check_finite(out.items(), path, ConversionError)
    return out


def released_bit_depth(path: str) -> int:
    """The bit depth of the images a released file was trained on: 16 for the `IFAN_16bit` release
    (by its name; the tensors are the same as the 8-bit model's), else 8."""
    return 16 if "16bit" in os.path.basename(path).lower() else 8


def convert_file(path: str, iac_variant: str = "official", bit_depth: int | None = None):
    """Official checkpoint file -> (params, model config), checked against the model; errors name
    the file. The config records `bit_depth` (default: `released_bit_depth(path)`)."""
    state = load_torch_state_dict(path)
    try:
        params, config = convert_state_dict(state, iac_variant)
        check_against_model(params, config)
    except ConversionError as e:
        raise ConversionError(f"{path}: {e}") from None
    config["bit_depth"] = released_bit_depth(path) if bit_depth is None else int(bit_depth)
    return params, config


def cache_root() -> str:
    """Where conversions go when the weights' own folder is not writable: $IFAN_JAX_CACHE/converted,
    else ~/.cache/ifan_jax/converted."""
    return fileio.cache_dir("converted")


def cached_conversion(path: str, report: Callable[[str], None] | None = None) -> str:
    """The ifan-jax checkpoint directory of an official weights file, converted on first use.

    The conversion is keyed by the file's content: `<stem>.ifan_jax-<sha256[:16]>/` beside the file
    when its folder is writable, else in `cache_root()`; an existing one is reused. It is written
    all or nothing (`checkpoint.save_inference_checkpoint`), so an interrupted or concurrent
    conversion never leaves a partial one. `report(message)` hears about a conversion.
    """
    _read(torch_pickle.check_file, path)  # before its bytes are hashed: a file, of a sane size
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{stem}.ifan_jax-{file_digest(path)[:16]}"
    folders = [os.path.dirname(os.path.abspath(path)), cache_root()]
    for folder in folders:
        if os.path.isfile(os.path.join(folder, name, checkpoint.MODEL_CONFIG_FILE)):
            return os.path.join(folder, name)
    params, config = convert_file(path)
    for folder in folders:
        target = os.path.join(folder, name)
        if report is not None:
            report(f"converting {path} once into {target}")
        try:
            checkpoint.save_inference_checkpoint(target, params, config)
            return target
        except (OSError, checkpoint.CheckpointError):
            if os.path.isfile(os.path.join(target, checkpoint.MODEL_CONFIG_FILE)):
                return target  # converted meanwhile by another process
    raise ConversionError(f"{path}: could not write its conversion beside it or in {cache_root()}")


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m ifan_jax.weights", name="convert", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="official .pytorch/.pth state dict")
    parser.add_argument("--output", required=True, help="checkpoint directory to create")
    parser.add_argument("--iac", default="official", choices=("official", "separable"),
                        help="IAC variant the converted model runs (default: official, as trained)")
    parser.add_argument("--bit_depth", type=int, choices=(8, 16), default=None,
                        help="bit depth of the images the weights were trained on, recorded for "
                             "evaluation (default: 16 for IFAN_16bit files, else 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        print(f"convert: {args.output} already exists (use --overwrite to replace it)",
              file=sys.stderr)
        return 1
    try:
        params, config = convert_file(args.input, args.iac, args.bit_depth)
        checkpoint.save_inference_checkpoint(args.output, params, config, overwrite=args.overwrite)
    except UserError as e:
        print(f"convert: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: N={config['num_iterations']}, ch={config['channels']}, "
          f"dual_pixel_input={config['dual_pixel_input']}, iac={args.iac}, "
          f"{count_params(params):,} deblurring parameters"
          + (" (+ reblurring network)" if REBLUR_KEY in params else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
