"""Deblur your own photos at full resolution.

    python -m ifan_jax.deblur --ckpt=ckpt/IFAN photo.jpg more_photos/ --output_dir=sharp/

See `python -m ifan_jax.deblur --help`. Each INPUT is an image file or a folder (its JPEG, PNG and
TIFF files, not its subfolders). Every output keeps its input's file name, format, size, bit
depth, grey-ness, alpha channel and colour profile (`ifan_jax.image_io`). Large images run as
overlapping tiles sized to the free memory (`ifan_jax.tiling`). A file that cannot be deblurred
gets one line on stderr, `deblur: <file>: <reason>`, and the others still run; the exit status is
1 if any file failed.
"""

from __future__ import annotations

import argparse
import os
import sys

MIN_SIZE = 16  # images smaller than this (either side) are refused as "too small"

DESCRIPTION = """\
Deblur photos with an IFAN checkpoint, at their full resolution.

INPUT: image files (JPEG, PNG, TIFF; 8 or 16 bit; grey, RGB, with or without alpha) or folders
(every such file directly inside; hidden files and subfolders are skipped).

Outputs keep the input's file name, format, size and, unless --bit_depth says otherwise, bit
depth. Grey images are deblurred as RGB and written back grey; an alpha channel is copied
unchanged; EXIF orientation is applied (outputs are stored upright, orientation 1). PNG and
TIFF outputs are lossless, JPEG outputs are written at quality 95 without chroma subsampling and
are always 8 bit. Outputs are written under a temporary name and renamed when complete. An
existing output is skipped (reported on stderr, not counted as a failure) unless --overwrite.

A file that cannot be processed (unreadable, truncated, not an image, smaller than 16 x 16, ...)
is reported on stderr as "deblur: FILE: REASON" and the rest still run; the exit status is 1 if
any file failed, else 0.
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ifan_jax.deblur", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--ckpt", required=True,
                   help="checkpoint directory (converted official weights or a training workdir)")
    p.add_argument("--output_dir", default=None,
                   help="folder for the outputs (created if needed); default: a 'deblurred' folder "
                        "beside each input file")
    p.add_argument("--tile", type=int, default=None, metavar="PIXELS",
                   help="tile size in pixels (multiple of 8); 0 runs each image whole; default: "
                        "whole when it fits the free memory, else the largest tile that does")
    p.add_argument("--overlap", type=int, default=64, metavar="PIXELS",
                   help="overlap of neighbouring tiles (default 64; more is slower and closer "
                        "to the whole-image result)")
    p.add_argument("--bit_depth", choices=("auto", "8", "16"), default="auto",
                   help="output bits per channel for PNG/TIFF; auto = the input's (default)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--which", choices=("latest", "best"), default="latest",
                   help="checkpoint step of a training workdir (default latest)")
    p.add_argument("--iac", choices=("separable", "official"), default=None,
                   help="override the checkpoint's IAC variant")
    args = p.parse_args(argv)
    if args.tile is not None and args.tile < 0:
        p.error("--tile must be >= 0")
    if args.overlap < 0:
        p.error("--overlap must be >= 0")
    if args.tile and args.tile < args.overlap + 8:
        p.error(f"--tile {args.tile} is too small for --overlap {args.overlap}")
    return args


def collect_inputs(inputs, report) -> list[str]:
    """Image files named by INPUT arguments (files as given, folders' image files sorted)."""
    from ifan_jax.image_io import FORMATS

    files = []
    for item in inputs:
        if os.path.isdir(item):
            try:
                names = sorted(os.listdir(item))
            except OSError as e:
                report(item, f"cannot list folder ({e.strerror or e})")
                continue
            files += [os.path.join(item, n) for n in names
                      if not n.startswith(".") and os.path.splitext(n)[1].lower() in FORMATS
                      and os.path.isfile(os.path.join(item, n))]
        elif os.path.exists(item):
            files.append(item)
        else:
            report(item, "no such file or folder")
    return files


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    failures = []

    def report(path, reason):
        failures.append(path)
        tqdm.write(f"deblur: {path}: {reason}", file=sys.stderr)

    files = collect_inputs(args.inputs, report)
    if not files:
        tqdm.write("deblur: no images to process", file=sys.stderr)
        return 1

    from ifan_jax import checkpoint, image_io
    from ifan_jax.inference import Deblurrer, enable_compilation_cache

    enable_compilation_cache()
    try:
        deblurrer = Deblurrer.from_checkpoint(args.ckpt, which=args.which, iac_variant=args.iac)
    except (checkpoint.CheckpointError, ValueError) as e:
        print(f"deblur: {e}", file=sys.stderr)
        return 1
    if deblurrer.needs_dual_pixel:
        print(f"deblur: {args.ckpt}: a dual-pixel-input model needs left/right views; this tool "
              f"takes single images", file=sys.stderr)
        return 1

    written, skipped, claimed = 0, 0, {}
    bar = tqdm(files, desc="deblur", unit="image", file=sys.stderr, dynamic_ncols=True)
    for path in bar:
        out_dir = args.output_dir or os.path.join(os.path.dirname(path), "deblurred")
        out_path = os.path.join(out_dir, os.path.basename(path))
        key = os.path.realpath(out_path)
        if key == os.path.realpath(path):
            report(path, "the output would replace the input; choose another --output_dir")
            continue
        if key in claimed:
            report(path, f"has the same output name as {claimed[key]}")
            continue
        claimed[key] = path
        if os.path.exists(out_path) and not args.overwrite:
            skipped += 1
            tqdm.write(f"deblur: {path}: skipped, {out_path} exists (use --overwrite)",
                       file=sys.stderr)
            continue
        try:
            _deblur_file(deblurrer, path, out_path, args, image_io, tqdm)
            written += 1
        except image_io.ImageError as e:
            report(path, str(e).removeprefix(f"{path}: "))
        except MemoryError:
            report(path, "out of memory (try a smaller --tile)")
        except Exception as e:  # one line per file, never a traceback; the other files still run
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            if "RESOURCE_EXHAUSTED" in reason or "out of memory" in reason.lower():
                reason = "out of memory (try a smaller --tile)"
            report(path, f"{type(e).__name__}: {reason}" if reason else type(e).__name__)
    bar.close()
    parts = [f"{written} written"] + ([f"{skipped} skipped"] if skipped else []) + (
        [f"{len(failures)} failed"] if failures else [])
    print(f"deblur: {', '.join(parts)}", file=sys.stderr)
    return 1 if failures else 0


def _deblur_file(deblurrer, path, out_path, args, image_io, tqdm) -> None:
    from ifan_jax import tiling

    image, info = image_io.read_image(path)
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise image_io.ImageError(f"{path}: image too small ({w} x {h} pixels; at least "
                                  f"{MIN_SIZE} x {MIN_SIZE} needed)")
    depth = info.bit_depth if args.bit_depth == "auto" else int(args.bit_depth)
    if image_io.format_for_path(out_path) == "JPEG":
        depth = 8
    tile = args.tile
    batch = 1
    if tile is None:
        tile, batch = deblurrer.plan(h, w, args.overlap)
    if tile:
        th, tw = tiling.tile_shape(h, w, tile)
        count = (len(tiling.tile_starts(tiling.round_up(h), th, args.overlap))
                 * len(tiling.tile_starts(tiling.round_up(w), tw, args.overlap)))
        with tqdm(total=count, desc=os.path.basename(path), unit="tile", leave=False,
                  file=sys.stderr, dynamic_ncols=True) as tiles:
            result = deblurrer.deblur_tiled(image, tile=tile, overlap=args.overlap,
                                            batch_size=batch, progress=tiles.update)
    else:
        result = deblurrer.deblur_whole(image)
    del image
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    image_io.write_image(out_path, result, info, bit_depth=depth, overwrite=args.overwrite)


def run(argv=None) -> int:
    """`main`, with Ctrl-C ending the run quietly (status 130; no partial output is left)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("\ndeblur: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
