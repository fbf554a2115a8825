"""The export command, `python -m ifan_jax.export` (console script `ifan-export`): see `onnx.py`.

    python -m ifan_jax.export --ckpt=IFAN.pytorch --output=ifan.onnx --tile=512 --overlap=64
    python -m ifan_jax.export --ckpt=runs/ifan --which=best --output=ifan.onnx --check
    python -m ifan_jax.export --ckpt=IFAN.pytorch --web=site     # the static page with the model

A usage mistake is one line on stderr and exit status 2; a checkpoint that cannot be read, an
existing output (without --overwrite) or a failed conversion is one line and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

from ifan_jax.errors import ArgumentParser, UserError, one_line

PROG = "python -m ifan_jax.export"
DESCRIPTION = """\
Export IFAN's deblurring network (no reblurring network) to ONNX with jax2onnx.

The model takes `image` float32 NHWC [1, H, W, 3] in [0, 1] (H and W multiples of 8; with
--fixed_shape exactly [1, TILE, TILE, 3]; the dual-pixel model also `right` and `left`) and gives
`deblurred` [1, H, W, 3] and, for models with a disparity map estimator, `defocus` [1, H, W, 1]
and `disparity` [1, H/8, W/8, 1] (the estimator's output before upsampling; tiles' maps blend on it).
Photos run as overlapping TILE x TILE tiles blended outside the model (ifan_jax.inference.tiling);
the tile, overlap, N, IAC variant, bit depth and the source's SHA-256 are in its metadata_props.
"""


def parse_args(argv=None) -> argparse.Namespace:
    from ifan_jax.export.onnx import DEFAULT_OVERLAP, DEFAULT_TILE, PRECISIONS
    from ifan_jax.inference import tiling

    p = ArgumentParser(prog=PROG, name="export", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True,
                   help="an official .pytorch/.pth file, a converted checkpoint folder or a training workdir")
    p.add_argument("--output", help="the .onnx file to write")
    p.add_argument("--web", metavar="DIR",
                   help="write the static web page with the model into DIR (ifan_jax.export.site)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help="tile size the photos are cut into, a multiple of 8 (default %(default)s)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help="overlap of neighbouring tiles in pixels (default %(default)s)")
    p.add_argument("--which", choices=("latest", "best"), default="latest",
                   help="a training workdir's checkpoint (default %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="the graph's float type (default %(default)s)")
    p.add_argument("--fixed_shape", action="store_true",
                   help="fix the input at [1, TILE, TILE, 3] instead of a symbolic height and width")
    p.add_argument("--check", action="store_true",
                   help="run the written model in onnxruntime on a random tile against the JAX forward")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args(argv)
    if (args.output is None) == (args.web is None):
        p.error("give exactly one of --output=FILE.onnx and --web=DIR")
    try:
        tiling.check_tile(args.tile, args.overlap, aligned=True, flags=True)
    except tiling.TileError as e:
        p.error(str(e))
    if not os.path.exists(args.ckpt):
        p.error(f"--ckpt {args.ckpt}: no such file or folder")
    return args


def _site_writer():
    """`ifan_jax.export.site.write_site`, or None where the web page writer is not installed."""
    if importlib.util.find_spec("ifan_jax.export.site") is None:
        return None
    return importlib.import_module("ifan_jax.export.site").write_site


def _quiet() -> None:
    for name in ("jax2onnx", "onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _check(data: bytes, deblurrer, metadata: dict, say) -> None:
    """onnxruntime against the (float32) JAX forward on one random tile: raises if a float32 graph
    differs by more than 2e-4, or a float16 one's deblurred tile is under 40 dB PSNR from it."""
    import numpy as np

    from ifan_jax.export.onnx import cpu_session

    tile = int(metadata["tile"])
    rng = np.random.default_rng(0)
    views = [rng.random((1, tile, tile, 3), np.float32)
             for _ in range(3 if metadata["dual_pixel"] == "true" else 1)]
    session = cpu_session(data)
    feeds = dict(zip([i.name for i in session.get_inputs()], views))
    outputs = session.run(None, feeds)
    ours = np.asarray(deblurrer.run_batch(*views, with_defocus=metadata["has_defocus"] == "true"))
    diffs = [float(np.max(np.abs(outputs[0] - ours[..., :3])))]
    if len(outputs) > 1:
        diffs.append(float(np.max(np.abs(outputs[1] - ours[..., 3:]))))
        # The estimator's 1/8-resolution output, as Deblurrer's tiled path takes it.
        _, low = deblurrer.run_batch_coarse(*views)
        diffs.append(float(np.max(np.abs(outputs[2] - np.asarray(low)))))
    mse = float(np.mean((outputs[0].astype(np.float64) - ours[..., :3]) ** 2))
    psnr = 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")
    say(f"check at {tile}x{tile}: onnxruntime vs JAX max abs " + " / ".join(f"{d:.2e}" for d in diffs)
        + (" (deblurred / defocus / disparity)" if len(diffs) > 1 else "") + f", PSNR {psnr:.1f} dB")
    if metadata["precision"] == "float32" and max(diffs) > 2e-4:
        raise RuntimeError(f"onnxruntime differs from the JAX forward by {max(diffs):.2e} (> 2e-4)")
    if metadata["precision"] != "float32" and psnr < 40:
        raise RuntimeError(f"the {metadata['precision']} graph is {psnr:.1f} dB from the float32 "
                           f"JAX forward (< 40 dB)")


def main(argv=None) -> int:
    args = parse_args(argv)
    say = lambda line: print(f"export: {line}", file=sys.stderr)
    target = args.output if args.output is not None else args.web
    if os.path.exists(target) and not args.overwrite:
        say(f"{target}: exists (not overwritten; pass --overwrite to replace it)")
        return 1
    write_site = None
    if args.web is not None:
        write_site = _site_writer()
        if write_site is None:
            say("the web page writer is not installed (ifan_jax.export.site)")
            return 1
    _quiet()
    from ifan_jax.export import onnx as export_lib
    from ifan_jax.inference import Deblurrer

    try:
        deblurrer = Deblurrer.from_checkpoint(args.ckpt, args.which, report=say)
        digest = export_lib.source_sha256(args.ckpt)
    except (UserError, OSError) as e:
        say(one_line(e, with_type=False) if args.ckpt in str(e) else f"{args.ckpt}: {one_line(e)}")
        return 1
    try:
        data, metadata = export_lib.export_onnx_bytes(
            deblurrer, args.tile, args.overlap, precision=args.precision,
            fixed_shape=args.fixed_shape, source_digest=digest)
        if args.check:
            _check(data, deblurrer, metadata, say)
        if args.output is not None:
            from ifan_jax import fileio

            fileio.atomic_write_bytes(args.output, data, overwrite=args.overwrite)
        else:
            estimator = (export_lib.export_estimator_bytes(deblurrer, precision=args.precision)
                         if deblurrer.has_defocus_map else None)
            write_site(args.web, data, metadata, overwrite=args.overwrite, estimator_bytes=estimator)
    except FileExistsError as e:
        say(f"{e.filename or target}: exists (not overwritten; pass --overwrite to replace it)")
        return 1
    except Exception as e:  # the conversion, onnxruntime or the site writer: one line
        say(f"{target}: {one_line(e)}")
        return 1
    if args.output is not None:
        size = f"{len(data) / 1e6:.1f} MB"
    else:  # what a host serves: the page, the runtime and the model
        from ifan_jax.export.site import site_bytes

        size = f"{site_bytes(args.web) / 1e6:.1f} MB (the model {len(data) / 1e6:.1f} MB)"
    say(f"wrote {target}: {size} in {metadata['export_seconds']} s; "
        f"N={metadata['num_iterations']}, IAC {metadata['iac_variant']}, {metadata['channels']} channels, "
        f"input {metadata['input_shape']}, tile {metadata['tile']}, overlap {metadata['overlap']}, "
        f"defocus {metadata['has_defocus']}, source sha256 {metadata['source_sha256'][:12]}...")
    return 0


def run() -> None:
    """The console script's entry point (`ifan-export`)."""
    sys.exit(main())
