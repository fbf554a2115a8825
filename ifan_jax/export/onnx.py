"""The IFAN deblurring network as an ONNX model, converted by jax2onnx from the export form.

    metadata = export_onnx("IFAN.pytorch", "ifan.onnx", tile=512, overlap=64)
    onnx_bytes, metadata = export_onnx_bytes(deblurrer)        # a Deblurrer, or what it loads
    estimator_bytes = export_estimator_bytes(deblurrer)        # the map of a tiled photo

The graph is `IFAN.export_forward`: the Deblurrer's modules and parameters (no reblurring network),
the same computation with IAC's iterations unrolled and edge padding and the defocus map's
upsampling written as slices and concatenations (`ifan_jax.models.iac.iac_from_head_unrolled`,
`ifan_jax.models.resample.upsample_bilinear`), which jax2onnx converts and the scan, `jnp.pad` and
`jax.image.resize` forms do not. It is written for onnxruntime's CPU speed too: every LeakyReLU is
one LeakyRelu node (fused into the convolution before it), and each of IAC's taps has its filters
from a 1x1 convolution of its own (docs/export.md, "Speed"). Interface (NHWC, float32):

    image     [1, H, W, 3] in [0, 1], H and W multiples of 8 (any: the height and width are
              symbolic; with `fixed_shape` exactly [1, tile, tile, 3])
    right, left  the same shape: the dual-pixel views, only for the dual-pixel-input model
    deblurred [1, H, W, 3] the network's result, clipped to [0, 1] as the JAX forward clips it
    defocus   [1, H, W, 1] the disparity map estimator's output upsampled to H x W, what
              `Deblurrer.run_batch(..., with_defocus=True)` gives as channel 3 (models with D only)
    disparity [1, H/8, W/8, 1] the disparity map estimator's output itself, before upsampling
              (models with D only): the map of a photo run whole
    encoded   [1, H/8, W/8, 4ch] the estimator's input, the filter encoder's output (models with D
              only): what a tiled photo's map is made from. The tiles' `encoded` are blended on the
              1/8 grid where each is exact (`ifan_jax.inference.tiling.deblur_tiled`, reach in the
              metadata's `map_reach`) and the estimator graph (`export_estimator`: `encoded` ->
              `disparity`, any h and w) runs over them (`tiling.estimate_tiled`); a tile's own
              `disparity` is wrong up to 15 pixels of the 1/8 grid inside its edges

Photos larger than a tile run as overlapping tiles outside the graph (`ifan_jax.inference.tiling`);
the tile and overlap to cut them into are recorded in the metadata (`METADATA_KEYS`, string values)
with the model's N, IAC variant, training bit depth, channels, and the SHA-256 of the source
checkpoint (`source_sha256`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable

import numpy as np

from ifan_jax import fileio
from ifan_jax.errors import UserError
from ifan_jax.inference import tiling

MULTIPLE = tiling.ALIGN  # the network's grid: tiles are multiples of it
DEFAULT_TILE = 512
DEFAULT_OVERLAP = tiling.DEFAULT_OVERLAP
OPSET = 21  # onnxruntime >= 1.20 and onnxruntime-web run it
# float16: the weights stored and the convolutions computed in float16; IAC, the input skip and the
# outputs stay float32, as `Deblurrer(dtype="float16")` runs (the model's `dtype`).
PRECISIONS = ("float32", "float16")
METADATA_KEYS = ("ifan_jax_version", "num_iterations", "iac_variant", "bit_depth", "tile", "overlap",
                 "channels", "has_defocus", "dual_pixel", "source_sha256", "map_reach")
# The graph's outputs (a model without a disparity map estimator has the first only).
OUTPUTS = ("deblurred", "defocus", "disparity", "encoded")
# Beyond METADATA_KEYS: how the graph takes its input, and its float type.
EXTRA_METADATA_KEYS = ("input_shape", "precision", "opset", "converter")


class ExportError(UserError):
    """An export that cannot be made as asked (bad tile, unsupported model); one line."""


# --------------------------------------------------------------------------------------------
# The source checkpoint's digest


def _file_sha256(path: str, h=None):
    h = hashlib.sha256() if h is None else h
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


def source_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a checkpoint: of the file's bytes for a file (an official `.pytorch`); for a
    folder (a converted checkpoint or a training workdir), of the concatenation, over its regular
    files in the order of their relative paths ('/'-separated, UTF-8, sorted bytewise), of

        relative path, a NUL byte, the file's size as 8 bytes big-endian, the file's bytes

    so a renamed, moved, added or changed file changes the digest and the folder's own location
    does not."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return _file_sha256(path).hexdigest()
    files = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in names:
            full = os.path.join(root, name)
            if os.path.isfile(full):
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                files.append((rel.encode("utf-8"), full))
    h = hashlib.sha256()
    for rel, full in sorted(files):
        h.update(rel + b"\0" + os.path.getsize(full).to_bytes(8, "big"))
        _file_sha256(full, h)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# The graph


def check_tile(tile: int, overlap: int) -> None:
    """ExportError unless `tile` is a positive multiple of 8 exceeding `overlap` (>= 0) by at least 8
    once the overlap is rounded up to a multiple of 8: `tiling.check_tile`'s rule for a fixed tile."""
    try:
        tiling.check_tile(tile, overlap, aligned=True)
    except tiling.TileError as e:
        raise ExportError(str(e)) from None


def uses_iac(model) -> bool:
    return bool(model.use_filter_prediction) and model.adaptive_conv == "iac"


def export_function(model, params) -> Callable:
    """The function the graph computes: (image[, right, left]) -> (deblurred[, defocus, disparity,
    encoded]), NHWC: `defocus` the 1/8-resolution `disparity` upsampled to the input's size.

    `params` are the deblurring network's (no reblurring network); they become the graph's
    constants."""
    import jax.numpy as jnp

    from ifan_jax.models import IFAN
    from ifan_jax.models.resample import upsample_bilinear

    variables = {"params": params}

    def forward(image, right=None, left=None):
        result, disparity, encoded = model.apply(variables, image, right, left,
                                                 method=IFAN.export_forward)
        if disparity is None:
            return result
        disparity = disparity.astype(jnp.float32)
        return result, upsample_bilinear(disparity), disparity, encoded.astype(jnp.float32)

    return forward


def export_estimator(deblurrer, *, precision: str = "float32", opset: int = OPSET):
    """The disparity map estimator alone as an ONNX model: `encoded` float32 [1, h, w, 4ch] (any h,
    w; the main graph's `encoded`, blended over a tiled photo) -> `disparity` [1, h, w, 1], its
    convolutions zero-padded at the edges of what they are given, as `Deblurrer.estimate`. For a
    Deblurrer of a model with D; `precision` as `export_model`."""
    import jax
    import jax.numpy as jnp

    try:
        import jax2onnx
    except ImportError as e:
        raise ExportError(f"the ONNX export needs the export extra (pip install -e \".[export]\"): "
                          f"{e.name} is not installed") from None
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    model = deblurrer.model
    if not model.use_disparity:
        raise ExportError("this model has no disparity map estimator (a variant without D)")
    params = {"disparity_map_estimator": jax.device_get(deblurrer.params["disparity_map_estimator"])}
    if precision == "float16":
        model = model.clone(dtype=jnp.float16)
        params = jax.tree.map(lambda a: np.asarray(a, np.float16), params)

    def estimate(encoded):
        return model.apply({"params": params}, encoded,
                           method=lambda m, x: m.disparity_map_estimator(x)).astype(jnp.float32)

    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"1, h, w, {model.feature_channels}"),
                                jnp.float32)
    with _quiet_converter():
        return jax2onnx.to_onnx(estimate, [spec], model_name="ifan_estimator", opset=opset,
                                input_names=["encoded"], output_names=["disparity"])


def export_estimator_bytes(deblurrer, **options) -> bytes:
    """`export_estimator`, serialised."""
    return export_estimator(deblurrer, **options).SerializeToString()


def _input_specs(num_inputs: int, tile: int, fixed_shape: bool):
    import jax
    import jax.numpy as jnp

    if fixed_shape:
        shape = (1, tile, tile, 3)
    else:
        # One pair of symbols for all views: they have the same size.
        shape = jax.export.symbolic_shape("1, 8*h, 8*w, 3")
    return [jax.ShapeDtypeStruct(shape, jnp.float32) for _ in range(num_inputs)]


def _resolve(deblurrer_or_ckpt, which: str):
    """(Deblurrer, source digest or None) for a Deblurrer or anything `Deblurrer.from_checkpoint`
    takes."""
    from ifan_jax.inference import Deblurrer

    if isinstance(deblurrer_or_ckpt, Deblurrer):
        return deblurrer_or_ckpt, None
    path = os.fspath(deblurrer_or_ckpt)
    deblurrer = Deblurrer.from_checkpoint(path, which)
    return deblurrer, source_sha256(path)


def _truth(value: bool) -> str:
    return "true" if value else "false"


def _version() -> str:
    import ifan_jax

    return str(getattr(ifan_jax, "__version__", "unknown"))


def export_model(deblurrer_or_ckpt, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, *,
                 which: str = "latest", precision: str = "float32", fixed_shape: bool = False,
                 source_digest: str | None = None, opset: int = OPSET):
    """(onnx.ModelProto, metadata dict of strings) for a Deblurrer or a checkpoint path (an official
    `.pytorch` file, a converted checkpoint folder or a training workdir; `which`: its step).

    `source_digest` overrides the recorded `source_sha256` (computed from the path; for a Deblurrer
    object it is "unknown" unless given)."""
    import jax

    try:
        import jax2onnx
        import onnx
    except ImportError as e:
        raise ExportError(f"the ONNX export needs the export extra (pip install -e \".[export]\"): "
                          f"{e.name} is not installed") from None

    check_tile(tile, overlap)
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    deblurrer, digest = _resolve(deblurrer_or_ckpt, which)
    digest = source_digest or digest or "unknown"
    model = deblurrer.model
    params = jax.device_get(deblurrer.params)
    if model.dtype != jax.numpy.float32:
        raise ExportError(f"the export takes a float32 model (--precision picks the graph's), this "
                          f"one computes in {jax.numpy.dtype(model.dtype).name}")
    if precision == "float16":
        model = model.clone(dtype=jax.numpy.float16)
        params = jax.tree.map(lambda a: np.asarray(a, np.float16), params)
    dual = bool(model.dual_pixel_input)
    has_defocus = bool(model.use_disparity)
    names_in = ["image", "right", "left"] if dual else ["image"]
    names_out = list(OUTPUTS if has_defocus else OUTPUTS[:1])
    fn = export_function(model, params)
    with _quiet_converter():
        proto = jax2onnx.to_onnx(fn, _input_specs(len(names_in), tile, fixed_shape), model_name="ifan",
                                 opset=opset, input_names=names_in, output_names=names_out)
    if not fixed_shape:
        _name_spatial_dims(proto)
    iac = uses_iac(model)
    metadata = {
        "ifan_jax_version": _version(),
        "num_iterations": str(int(model.num_iterations) if iac else 0),
        "iac_variant": str(model.iac_variant) if iac else (
            "fac" if model.use_filter_prediction else "none"),
        "bit_depth": "unknown" if deblurrer.bit_depth is None else str(int(deblurrer.bit_depth)),
        "tile": str(int(tile)),
        "overlap": str(int(overlap)),
        "channels": str(int(model.channels)),
        "has_defocus": _truth(has_defocus),
        "dual_pixel": _truth(dual),
        "source_sha256": digest,
        # How far a tile's edges reach into the map (`IFAN.map_reach`): before, after, estimator.
        "map_reach": ",".join(str(int(r)) for r in model.map_reach()),
        "input_shape": (f"[1, {tile}, {tile}, 3]" if fixed_shape
                        else "[1, H, W, 3], H and W multiples of 8"),
        "precision": precision,
        "opset": str(opset),
        "converter": f"jax2onnx {_package_version('jax2onnx')}",
    }
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = (
        "IFAN defocus deblurring (ifan-jax). NHWC float32 in [0, 1]: inputs "
        + ", ".join(names_in) + " -> " + ", ".join(names_out)
        + f". Tile photos at {tile} px with {overlap} px overlap (ifan_jax.inference.tiling).")
    return proto, metadata


@contextlib.contextmanager
def _quiet_converter():
    """The converter's loggers at ERROR while it runs (onnx_ir warns once per shape value whose
    type it leaves to the runtime: hundreds of lines on the paper's network)."""
    loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _name_spatial_dims(proto) -> None:
    """Give every full-resolution input's and output's height and width the input's symbols
    (jax2onnx names an upsampled output's width `dynamic_<n>`), so the interface reads
    [1, 8*h, 8*w, C] throughout; `disparity` and `encoded` keep jax2onnx's [1, h, w, C]."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    height, width = dims[1].dim_param, dims[2].dim_param
    for value in list(proto.graph.input) + list(proto.graph.output):
        if value.name in ("disparity", "encoded"):
            continue
        shape = value.type.tensor_type.shape.dim
        shape[1].dim_param, shape[2].dim_param = height, width


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def export_onnx_bytes(deblurrer_or_ckpt, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                      **options) -> tuple[bytes, dict]:
    """(serialised ONNX model, metadata) for a site writer to place itself; `options` as
    `export_model`. The metadata is the model's metadata_props (string values) plus
    "export_seconds" (the conversion's wall time) and "size_bytes"."""
    start = time.perf_counter()
    proto, metadata = export_model(deblurrer_or_ckpt, tile, overlap, **options)
    data = proto.SerializeToString()
    return data, {**metadata, "export_seconds": f"{time.perf_counter() - start:.1f}",
                  "size_bytes": str(len(data))}


def export_onnx(deblurrer_or_ckpt, path: str | os.PathLike, tile: int = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, *, overwrite: bool = False, **options) -> dict:
    """Export to `path`, written atomically (`fileio.atomic_file`); an existing `path` is a
    FileExistsError unless `overwrite` (checked before the conversion too). Returns the metadata of
    `export_onnx_bytes`."""
    if not overwrite and os.path.exists(path):
        raise FileExistsError(17, "exists (not overwritten)", os.fspath(path))
    data, metadata = export_onnx_bytes(deblurrer_or_ckpt, tile, overlap, **options)
    fileio.atomic_write_bytes(path, data, overwrite=overwrite)
    return metadata


def cpu_session(model: str | os.PathLike | bytes, config: dict | None = None):
    """An onnxruntime session of an ONNX model (a path or its bytes) on the CPU provider, with
    onnxruntime's default options (every graph optimisation, one thread per physical core) and
    its warnings off; `config`: session config entries to add, e.g.
    {"session.intra_op.allow_spinning": "0"} (waiting threads sleep instead of spinning: the
    cores go back to other processes; docs/export.md, "Speed")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    source = bytes(model) if isinstance(model, (bytes, bytearray)) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def read_metadata(model: str | os.PathLike | bytes) -> dict:
    """The metadata_props of an ONNX model (a path or its bytes) as a dict."""
    import onnx

    if isinstance(model, (bytes, bytearray)):
        proto = onnx.load_model(io.BytesIO(model), load_external_data=False)
    else:
        proto = onnx.load_model(os.fspath(model), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
