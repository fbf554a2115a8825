"""Deblur your own photos at full resolution.

    python -m ifan_jax.inference --ckpt=ckpt/IFAN photo.jpg more_photos/ --output_dir=sharp/
    python -m ifan_jax.inference --ckpt=IFAN.pytorch --defocus_map photo.jpg
    python -m ifan_jax.inference --ckpt=IFAN.pytorch --keep_bokeh --strength=0.8 --report=r.json photo.jpg

See `python -m ifan_jax.inference --help`. Each INPUT is an image file or a folder (its JPEG, PNG and
TIFF files, not its subfolders). Every output keeps its input's file name, format, size, bit
depth, grey-ness, alpha channel and colour profile (`ifan_jax.image_io`). Large images run as
overlapping tiles sized to the free memory (`ifan_jax.inference.tiling`). A file that cannot be deblurred
gets one line on stderr, `deblur: <file>: <reason>`, and the others still run; the exit status is
1 if any file failed. A usage mistake is one line and exit status 2. Each deblurred file also
gets a readout line (`ifan_jax.inference.intent`: how much of it is out of focus, how much the
output differs from it); --strength and --keep_bokeh blend the output with the input (applied by
`Deblurrer.deblur`, as for the page and the Python API), and --report writes the readouts as JSON.
A photo's files (its maps first, the image last) are written as a set: a failure removes what it
had written, and a run after a kill completes a set whose files are partly there. The last line
says how many were written and where.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys

from absl import logging as absl_logging
from tqdm import tqdm

from ifan_jax import environment, fileio, image_io, inference
from ifan_jax.errors import ArgumentParser, UserError, one_line
from ifan_jax.inference import defocus, intent, tiling

MIN_SIZE = 16  # images smaller than this (either side) are refused as "too small"
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)

DESCRIPTION = """\
Deblur photos with an IFAN checkpoint, at their full resolution.

INPUT: image files (JPEG, PNG, TIFF; 8 or 16 bit; grey, RGB, with or without alpha) or folders
(every such file directly inside; hidden files and subfolders are skipped).

Outputs keep the input's file name, format, size and, unless --bit_depth says otherwise, bit
depth. Grey images are deblurred as RGB and written back grey; an alpha channel is copied
unchanged; EXIF orientation is applied (outputs are stored upright, orientation 1). PNG and
TIFF outputs are lossless; a JPEG output keeps the input's quality (estimated from its
quantisation tables) and chroma subsampling, and is always 8 bit (a PNG or TIFF written as JPEG:
quality 95, no subsampling). Outputs are written under a temporary name and renamed when complete. A
photo whose outputs all exist is skipped (reported on stderr, not counted as a failure) unless
--overwrite. A photo's outputs are a set (with --defocus_map: the two map files, then the image,
written last): when writing one fails (a full disk), the files of the set written so far are
removed; when only some exist (a run that was killed), the missing ones are written and the
existing ones kept. The last line says how many photos were written and to which folders.

Photos larger than --max_pixels (default 100 megapixels) are refused from their header, before
anything is decoded.

A file that cannot be processed (unreadable, truncated, not an image, smaller than 16 x 16, ...)
is reported on stderr as "deblur: FILE: REASON" and the rest still run; the exit status is 1 if
any file failed, else 0.

--defocus_map also writes, beside each output, IFAN's defocus map at the input's size:
NAME_defocus.png (colour-mapped, viridis: dark purple = low, yellow = high, spread between the
map's 1st and 99th percentiles) and NAME_defocus.npy (the values, float32, for computing: the
disparity map estimator's output, upsampled bilinearly from 1/8 resolution).

--strength=S (0 to 1, default 1) writes input + S x (deblurred - input); 0 writes the input's
own pixels (PNG and TIFF: the very values read, at the input's bit depth; JPEG is re-encoded at
the input's quality and subsampling, so its pixels differ from the input file's by one more
JPEG generation).

--keep_bokeh[=LEVEL] deblurs where the photo is mildly out of focus and keeps the input where it
is strongly out of focus: where the 33 x 33 mean of |defocus| (the NAME_defocus.npy values) is at
most LEVEL the output is the full deblur, where it is at least 2 x LEVEL it is the input, with a
smooth ramp between. Without a value the level is chosen per photo (2/3 of Otsu's threshold of
|defocus|) and printed. Needs a model with a disparity map estimator (a variant with D).

Beside each file the command prints a readout: the share of pixels with |defocus| above 0.125,
0.25 and 0.5 (a disparity of 1, 2 and 4 pixels between the dual-pixel views), the median
|defocus|, the PSNR between input and output, and a sentence. --report=PATH.json writes them for
every file, with the strength and level used (and each failed file with its error); an existing
report is kept unless --overwrite.

--ckpt takes a checkpoint directory or an official .pytorch/.pth file; the file is converted once
(no PyTorch needed) into NAME.ifan_jax-HASH/ beside it, or under $IFAN_JAX_CACHE/converted
(default ~/.cache/ifan_jax/converted) when its folder is not writable, and reused after that.
The official files are in codeslake/IFAN's checkpoints.zip (the README links it).
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m ifan_jax.inference", name="deblur", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--ckpt", required=True,
                   help="checkpoint directory (converted official weights or a training "
                        "workdir) or an official .pytorch/.pth file (converted once, cached)")
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
    p.add_argument("--defocus_map", action="store_true",
                   help="also write NAME_defocus.png (colour map) and NAME_defocus.npy (values) "
                        "beside each output")
    p.add_argument("--strength", type=float, default=1.0, metavar="S",
                   help="0 to 1 (default 1): output = input + S x (deblurred - input); 0 writes "
                        "the input's pixels")
    p.add_argument("--keep_bokeh", default=None, metavar="LEVEL",
                   help="keep the input where the 33 x 33 mean |defocus| is >= 2 x LEVEL, deblur "
                        "fully where it is <= LEVEL (a smooth ramp between); without a value: "
                        "automatic per photo (2/3 of Otsu's threshold), printed")
    p.add_argument("--max_pixels", type=int, default=image_io.MAX_PIXELS, metavar="N",
                   help=f"refuse photos of more than N pixels, from their header (default "
                        f"{image_io.MAX_PIXELS:,})")
    p.add_argument("--report", default=None, metavar="PATH.json",
                   help="write every file's readout, strength and keep-bokeh level as JSON")
    p.add_argument("--verbosity", type=int, default=0,
                   help="1 or more: show the libraries' INFO logs (default 0: progress and "
                        "results only)")
    args = p.parse_args(_keep_bokeh_value(sys.argv[1:] if argv is None else list(argv)))
    try:
        intent.check_strength(args.strength)
    except ValueError:
        p.error(f"--strength must be between 0 and 1, got {args.strength:g}")
    if args.keep_bokeh is not None:
        try:
            args.keep_bokeh = intent.check_keep_bokeh(args.keep_bokeh)
        except ValueError:
            p.error(f"--keep_bokeh takes a level > 0 (in the units of NAME_defocus.npy) or no "
                    f"value (automatic), got {args.keep_bokeh!r}")
    if args.report is not None and os.path.exists(args.report) and not args.overwrite:
        p.error(f"--report {args.report} exists (use --overwrite to replace it)")
    if args.report is not None and os.path.isdir(args.report):
        p.error(f"--report {args.report} is a folder; give a file name (PATH.json)")
    try:
        tiling.check_tile(args.tile or 0, args.overlap, flags=True)
    except tiling.TileError as e:
        p.error(str(e))
    if args.max_pixels < 1:
        p.error(f"--max_pixels must be a number of pixels >= 1, got {args.max_pixels}")
    return args


def _keep_bokeh_value(argv: list[str]) -> list[str]:
    """A bare `--keep_bokeh` takes the next argument as its level only if it is a number (else it
    means "auto"), so `--keep_bokeh photo.jpg` leaves photo.jpg an input."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + argv[i:]
        if arg == "--keep_bokeh":
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is not None and _is_number(following):
                out.append(f"--keep_bokeh={following}")
                i += 2
                continue
            arg = "--keep_bokeh=auto"
        out.append(arg)
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def collect_inputs(inputs, report) -> list[str]:
    """Image files named by INPUT arguments (files as given, folders' image files sorted)."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            try:
                names = sorted(os.listdir(item))
            except OSError as e:
                report(item, f"cannot list folder ({e.strerror or e})")
                continue
            files += [os.path.join(item, n) for n in names
                      if not n.startswith(".") and os.path.splitext(n)[1].lower() in image_io.FORMATS
                      and os.path.isfile(os.path.join(item, n))]
        elif os.path.exists(item):
            files.append(item)
        else:
            report(item, "no such file or folder")
    return files


def output_paths(path: str, args) -> list[str]:
    """Files written for input `path`: the deblurred image, then (with --defocus_map) the defocus
    map's colour PNG and raw .npy."""
    out_dir = args.output_dir or os.path.join(os.path.dirname(path), "deblurred")
    out_path = os.path.join(out_dir, os.path.basename(path))
    return [out_path, *defocus.output_paths(out_path)] if args.defocus_map else [out_path]


def load_deblurrer(args, say) -> inference.Deblurrer:
    """The checkpoint (an official file converted once, cached); UserError with one line."""
    deblurrer = inference.Deblurrer.from_checkpoint(args.ckpt, which=args.which,
                                                    iac_variant=args.iac, report=say)
    if deblurrer.needs_dual_pixel:
        raise UserError(f"{args.ckpt}: a dual-pixel-input model needs left/right views; this "
                         f"tool takes single images")
    try:
        if args.defocus_map:
            deblurrer.require_defocus_map("--defocus_map has nothing to write")
        if args.keep_bokeh is not None:
            deblurrer.require_defocus_map("--keep_bokeh has no map to keep the bokeh by")
    except intent.IntentError as e:
        raise UserError(f"{args.ckpt}: {e}") from None
    return deblurrer


def main(argv=None) -> int:
    args = parse_args(argv)
    environment.quiet_libraries(args.verbosity)
    if args.verbosity >= 1:  # as absl's --verbosity does for train.py: library INFO to stderr
        absl_logging.use_absl_handler()
        absl_logging.set_verbosity(absl_logging.INFO)
    failures, entries = [], []
    say = lambda line: tqdm.write(f"deblur: {line}", file=sys.stderr)

    def report(path, reason):
        failures.append(path)
        entries.append({"input": path, "status": "failed", "error": reason})
        say(f"{path}: {reason}")

    files = collect_inputs(args.inputs, report)
    if not files:
        say("no images to process")
        _write_report(args, entries, say)
        return 1
    environment.enable_compilation_cache()
    try:
        deblurrer = load_deblurrer(args, say)
    except UserError as e:
        say(str(e))
        entries += [{"input": f, "status": "failed", "error": str(e)} for f in files]
        _write_report(args, entries, say)
        return 1

    written, skipped, claimed, folders = 0, 0, {}, []
    bar = tqdm(files, desc="deblur", unit="image", file=sys.stderr, dynamic_ncols=True)
    for path in bar:
        outputs = output_paths(path, args)
        keys = [os.path.realpath(p) for p in outputs]
        if os.path.realpath(path) in keys:
            report(path, "the output would replace the input; choose another --output_dir")
            continue
        taken = [claimed[k] for k in keys if k in claimed]
        if taken:
            report(path, f"has the same output name as {taken[0]}")
            continue
        claimed.update(dict.fromkeys(keys, path))
        existing = [] if args.overwrite else [p for p in outputs if os.path.exists(p)]
        if existing and len(existing) == len(outputs):
            skipped += 1
            say(f"{path}: skipped, {existing[0]} exists (use --overwrite)")
            entries.append({"input": path, "status": "skipped",
                            "reason": f"{existing[0]} exists (use --overwrite)"})
            continue
        if existing:  # an incomplete set (a run was killed between its files): complete it
            say(f"{path}: completing its outputs ({', '.join(existing)} kept)")
        try:
            entry = _deblur_file(deblurrer, path, outputs, existing, args)
            written += 1
            entries.append(entry)
            folder = os.path.join(os.path.dirname(outputs[0]), "")
            if folder not in folders:
                folders.append(folder)
            say(f"{path}: {entry['readout_line']}")
        except UserError as e:
            report(path, str(e).removeprefix(f"{path}: "))
        except MemoryError:
            report(path, "out of memory (try a smaller --tile)")
        except Exception as e:  # one line per file, never a traceback; the other files still run
            reason = one_line(e)
            if "RESOURCE_EXHAUSTED" in reason or "out of memory" in reason.lower():
                reason = "out of memory (try a smaller --tile)"
            report(path, reason)
    bar.close()
    print(f"deblur: {summary_line(written, folders, skipped, len(failures))}", file=sys.stderr)
    if not _write_report(args, entries, say):
        return 1
    return 1 if failures else 0


def summary_line(written: int, folders: list[str], skipped: int, failed: int) -> str:
    """"4 written to photos/deblurred/", "3 written to a/deblurred/ and b/deblurred/, 1 skipped",
    ... (at most three folders named, then how many more)."""
    where = folders[:3] + ([f"{len(folders) - 3} more folders"] if len(folders) > 3 else [])
    text = f"{written} written" + (
        f" to {', '.join(where[:-1])} and {where[-1]}" if len(where) > 1 else
        f" to {where[0]}" if where else "")
    return ", ".join([text] + ([f"{skipped} skipped"] if skipped else [])
                     + ([f"{failed} failed"] if failed else []))


def _write_report(args, entries: list[dict], say) -> bool:
    """Write --report (when given) atomically; False (said on stderr) if it cannot be written."""
    if args.report is None:
        return True
    content = {
        "ckpt": args.ckpt,
        "strength": args.strength,
        "keep_bokeh": args.keep_bokeh,
        "constants": intent.page_constants(),
        "files": [{k: v for k, v in e.items() if k != "readout_line"} for e in entries],
    }
    try:
        fileio.atomic_write_text(args.report, json.dumps(content, indent=1, allow_nan=False) + "\n",
                                 overwrite=args.overwrite)
    except (OSError, ValueError) as e:
        say(f"{args.report}: cannot write the report ({one_line(e, with_type=False)})")
        return False
    return True


class OutputError(UserError):
    """An output that cannot be written (a full disk, a folder without permission)."""


def _deblur_file(deblurrer: inference.Deblurrer, path: str, outputs: list[str], existing: list[str],
                 args) -> dict:
    """Deblur one file and write its outputs but `existing` (those are kept); returns its report
    entry (with the readout)."""
    image, info = image_io.read_image(path, max_pixels=args.max_pixels)
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise image_io.ImageError(f"{path}: image too small ({w} x {h} pixels; at least "
                                  f"{MIN_SIZE} x {MIN_SIZE} needed)")
    out_path = outputs[0]
    depth = info.bit_depth if args.bit_depth == "auto" else int(args.bit_depth)
    if image_io.format_for_path(out_path) == "JPEG":
        depth = 8
    schedule = deblurrer.schedule(h, w, args.tile, args.overlap)
    with tqdm(total=schedule.num_tiles, desc=os.path.basename(path), unit="tile", leave=False,
              file=sys.stderr, dynamic_ncols=True, disable=schedule.whole) as tiles:
        result = deblurrer.deblur(image, schedule=schedule, progress=tiles.update,
                                  strength=args.strength, keep_bokeh=args.keep_bokeh)
    del image
    writers = {out_path: lambda p: image_io.write_image(p, result.output, info, bit_depth=depth,
                                                        overwrite=args.overwrite)}
    if args.defocus_map:
        writers[outputs[1]] = lambda p: defocus.write_defocus(p, result.defocus,
                                                              overwrite=args.overwrite)
        writers[outputs[2]] = lambda p: defocus.write_raw(p, result.defocus, overwrite=args.overwrite)
    # The maps first, the image last: a photo's image on disk means its set was written whole.
    write_set([(p, writers[p]) for p in outputs[1:] + outputs[:1] if p not in existing])
    entry = {"input": path, "status": "written", "output": out_path, "strength": result.strength,
             "keep_bokeh": args.keep_bokeh if isinstance(args.keep_bokeh, str) else (
                 None if args.keep_bokeh is None else "given"),
             "keep_bokeh_level": result.level, **result.readout.to_json(),
             "readout_line": result.readout_line()}
    if existing:
        entry["kept"] = list(existing)
    return entry


def write_set(writers: list) -> None:
    """Run `writers` [(path, write(path))] in order, each writing one file atomically; if one fails
    (or the run is interrupted) the files written before it are removed, so a set is never left
    half-written by a failure. A full disk is an OutputError saying so, naming the file."""
    done = []
    try:
        for path, write in writers:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            try:
                write(path)
            except OSError as e:
                if e.errno in FULL_DISK:
                    raise OutputError(f"{path}: the disk is full (no space left on the device); "
                                      f"nothing of this photo was kept") from None
                raise
            done.append(path)
    except BaseException:
        for path in done:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise


def run(argv=None) -> int:
    """`main`, with Ctrl-C ending the run quietly (status 130; no partial output is left)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("\ndeblur: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
