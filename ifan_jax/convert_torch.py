"""Convert an official IFAN PyTorch checkpoint into an ifan-jax checkpoint.

    python -m ifan_jax.convert_torch --input=IFAN.pytorch --output=CKPT_DIR [--iac=official]

The mapping itself (`convert_state_dict`) is a function of a name -> numpy array dict, so it runs
without PyTorch (the tests feed it the reference .npz files); only reading a `.pytorch` file needs
torch (`pip install ifan-jax[torch]`). N, the width and the dual-pixel variant are inferred from
the shapes. Official checkpoints were trained with the IAC whose second pass reuses the first
filter, so the converted model uses `iac_variant="official"` unless told otherwise.
"""

from __future__ import annotations

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
    """Model config keys (see configs/ifan.py `model`) implied by the official tensor shapes."""
    shapes = {_strip(k)[0] + ("@rbn" if _strip(k)[1] else ""): np.shape(v) for k, v in state.items()}

    def need(key):
        if key not in shapes:
            raise ConversionError(f"missing key {key!r}: not an official IFAN checkpoint")
        return shapes[key]

    ch = need("conv1_1.0.weight")[0]
    c4 = 4 * ch
    in_ch = need("kconv1_1.0.weight")[1]
    if in_ch not in (3, 6):
        raise ConversionError(f"kconv1_1.0.weight: filter encoder input must have 3 or 6 channels, "
                              f"got {in_ch}")
    fs_per = need("F.3.weight")[0]
    k = 3
    if fs_per % (c4 * (2 * k + 1)):
        raise ConversionError(f"F.3.weight: {fs_per} output channels is not N*{c4}*(2k+1) for k=3")
    n = fs_per // (c4 * (2 * k + 1))
    res_units = len({m[1] for key in shapes if (m := re.match(r"DME\.1\.stem\.(\d+)\.", key))})
    cfg = dict(channels=int(ch), num_iterations=int(n), filter_size=k, res_units=res_units,
               dual_pixel_input=in_ch == 6, use_filter_prediction=True, use_disparity=True,
               adaptive_conv="iac")
    rbn_out = shapes.get("RBF.3.weight@rbn")
    cfg["use_reblur"] = rbn_out is not None
    if rbn_out is not None:
        if rbn_out[0] % (3 * (2 * k + 1)):
            raise ConversionError(f"reblurNet.RBF.3.weight: {rbn_out[0]} output channels is not "
                                  f"N*3*(2k+1)")
        cfg["reblur_iterations"] = int(rbn_out[0] // (3 * (2 * k + 1)))
        cfg["reblur_filter_size"] = k
    else:
        cfg["reblur_iterations"] = int(n)
    assert iac_channels(n, c4, k) == fs_per
    return cfg


def convert_state_dict(state: Mapping[str, np.ndarray], iac_variant: str = "official"):
    """Official state dict (name -> array) -> (Flax `params` tree, model config dict).

    Keys may carry `module.` and/or `Network.` prefixes; `reblurNet.` keys become the
    `reblurring_network` subtree. Any key that is not an IFAN parameter is an error naming it.
    """
    from flax.traverse_util import unflatten_dict

    config = infer_model_config(state)
    config["iac_variant"] = iac_variant
    flat = {}
    for full_key, value in state.items():
        key, is_rbn = _strip(full_key)
        if key.endswith("num_batches_tracked"):
            continue
        module_key, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias") or (is_rbn != module_key.startswith("RBF")):
            raise ConversionError(f"unexpected key {full_key!r}: not an IFAN parameter")
        try:
            path, kind = _target(module_key)
        except KeyError:
            raise ConversionError(f"unexpected key {full_key!r}: not an IFAN parameter") from None
        array = _convert_array(kind, leaf, value, full_key)
        name = "kernel" if leaf == "weight" else "bias"
        flat[tuple(path.split("/")) + (name,)] = array
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
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except Exception as e:  # torch raises many kinds for a corrupt file
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
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
    try:
        state = load_torch_state_dict(args.input)
        params, config = convert_state_dict(state, args.iac)
        check_against_model(params, config)
        checkpoint.save_inference_checkpoint(args.output, params, config, overwrite=args.overwrite)
    except (ConversionError, checkpoint.CheckpointError) as e:
        print(f"convert_torch: error: {e}", file=sys.stderr)
        return 1
    n_params = sum(int(np.prod(v.shape)) for k, v in
                   __import__("flax").traverse_util.flatten_dict(params).items()
                   if k[0] != "reblurring_network")
    print(f"wrote {args.output}: N={config['num_iterations']}, ch={config['channels']}, "
          f"dual_pixel_input={config['dual_pixel_input']}, iac={args.iac}, "
          f"{n_params:,} deblurring parameters"
          + (" (+ reblurring network)" if config["use_reblur"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
