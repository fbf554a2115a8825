"""Convert an official IFAN PyTorch checkpoint into an ifan-jax checkpoint.

    python -m ifan_jax.convert_torch --input=IFAN.pytorch --output=CKPT_DIR [--iac=official]

The mapping itself (`convert_state_dict`) is a function of a name -> numpy array dict, so it runs
without PyTorch (the tests feed it the reference .npz files); only reading a `.pytorch` file needs
torch (`pip install ifan-jax[torch]`). N, the width and the dual-pixel variant are inferred from
the shapes. Official checkpoints were trained with the IAC whose second pass reuses the first
filter, so the converted model uses `iac_variant="official"` unless told otherwise.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

import numpy as np

from ifan_jax.models.iac import iac_channels

PREFIXES = ("module.", "Network.")

# Official Sequential "stacks" (conv, residual blocks, conv) -> (our module path, index of the
# last conv).
_STACKS = {
    "conv4_4": ("filter_predictor/fusion", 3),
    "conv_res": ("reconstructor/bottleneck", 2),
    "DME": ("disparity_map_estimator", 3),
    "RBF": ("reblurring_network/filter_head", 3),
}


class ConversionError(ValueError):
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
    from flax.traverse_util import unflatten_dict

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
    """Compare converted shapes with a freshly built model; raise naming the first mismatch."""
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict

    from ifan_jax.models import IFAN

    model = IFAN.from_config(config)
    x = jnp.zeros((1, 64, 64, 3))
    expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, x, x, x, train=True))
    expected = flatten_dict(expected["params"])
    got = flatten_dict(params)
    if not config.get("use_reblur", True):
        expected = {k: v for k, v in expected.items() if k[0] != "reblurring_network"}
    for path in sorted(set(expected) | set(got)):
        name = "/".join(path)
        if path not in got:
            raise ConversionError(f"checkpoint lacks parameter {name}")
        if path not in expected:
            raise ConversionError(f"checkpoint has unexpected parameter {name}")
        if tuple(expected[path].shape) != tuple(got[path].shape):
            raise ConversionError(f"{name}: shape {tuple(got[path].shape)} in the checkpoint, "
                                  f"model needs {tuple(expected[path].shape)}")


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a PyTorch checkpoint file into a name -> numpy dict (needs torch)."""
    try:
        import torch
    except ImportError:
        raise ConversionError("reading .pytorch files needs PyTorch: pip install 'ifan-jax[torch]'"
                              ) from None
    if os.path.isdir(path):
        raise ConversionError(f"{path}: is a directory, not a PyTorch checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except Exception as e:  # torch raises many kinds for a corrupt file
        reason = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}"
                              f"{': ' + reason[:120] if reason else ''})") from None
    for wrapper in ("state_dict", "model", "network"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path}: does not hold a state dict")
    out = {}
    for k, v in obj.items():
        if not hasattr(v, "detach"):
            raise ConversionError(f"{path}: entry {k!r} is not a tensor")
        out[k] = v.detach().float().numpy()
    return out


def main(argv=None) -> int:
    import argparse

    from ifan_jax import checkpoint

    parser = argparse.ArgumentParser(prog="python -m ifan_jax.convert_torch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="official .pytorch state dict")
    parser.add_argument("--output", required=True, help="checkpoint directory to create")
    parser.add_argument("--iac", default="official", choices=("official", "separable"),
                        help="IAC variant the converted model runs (default: official, as trained)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        print(f"convert_torch: error: {args.output} already exists (use --overwrite to replace it)",
              file=sys.stderr)
        return 1
    try:
        state = load_torch_state_dict(args.input)
        params, config = convert_state_dict(state, args.iac)
        check_against_model(params, config)
        checkpoint.save_inference_checkpoint(args.output, params, config, overwrite=args.overwrite)
    except (ConversionError, checkpoint.CheckpointError) as e:
        print(f"convert_torch: error: {e}", file=sys.stderr)
        return 1
    n_params = sum(int(np.prod(leaf.shape)) for name, sub in params.items()
                   if name != "reblurring_network" for leaf in _leaves(sub))
    print(f"wrote {args.output}: N={config['num_iterations']}, ch={config['channels']}, "
          f"dual_pixel_input={config['dual_pixel_input']}, iac={args.iac}, "
          f"{n_params:,} deblurring parameters"
          + (" (+ reblurring network)" if config["use_reblur"] else ""))
    return 0


def _leaves(tree):
    if isinstance(tree, Mapping):
        for value in tree.values():
            yield from _leaves(value)
    else:
        yield tree


if __name__ == "__main__":
    sys.exit(main())
