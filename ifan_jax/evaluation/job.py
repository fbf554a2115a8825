"""Evaluate a checkpoint on a test set the way the paper reports it (Tables 2-5).

    from ifan_jax.evaluation.job import evaluate
    summary = evaluate("ckpt/IFAN", "datasets", "dpdd", "results/IFAN_dpdd", save_images=True,
                       subsets="indoor=indoor_labels.npy,outdoor=outdoor_labels.npy")

Sets with ground truth (DPDD, RealDOF) are scored as the official evaluation does: each image,
cropped from the top-left to a multiple of 8, runs whole through the checkpoint's `Deblurrer`'s
forward pass (`ifan_jax.inference.Forward`, by `ifan_jax.evaluation.scorer.Scorer`) and is scored
against its ground truth on the float output:

    OUTPUT_DIR/scores.csv     name,psnr,ssim,mae,lpips,seconds   (one row per image)
    OUTPUT_DIR/summary.json   the means (of the whole set and of each subset), the input's and
                              the model's bit depth, parameter count, MACs, what was evaluated
    OUTPUT_DIR/images/*.png   the outputs (with save_images), at the input's bit depth

Sets without ground truth (PixelDP, CUHK, folder) get outputs and times only (empty metric
cells, null means); their images are written by default, at the input's full size (padded to a
multiple of 8 by edge replication and cropped back, as the deblur tool does).

`seconds` is the network's steady-state time for the image: the first image of each shape is run
once to compile, then every image is timed from dispatch to `block_until_ready` with its input
already on the device. Nothing is overwritten unless asked: scores.csv and summary.json are
written when the run is complete, and images/ is assembled under a temporary name and renamed.

A damaged data folder: files are paired by name (`data.pair_split`), never by position, so a
missing file cannot shift the others' pairs. Each pair that cannot be scored (a file missing from
one of the folders, images of one pair that differ in size, a truncated, corrupt or forged file,
a file that is not an image, one beyond the pixel limit) is reported once, `bad_pair(name,
reason)`, and left out; the others are scored and written, and summary.json lists the failed
pairs under "failed". A missing folder, or no pair left to score, stops the run before anything
is written.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterator

import jax
import numpy as np
from tqdm import tqdm

from ifan_jax import cost, data, fileio, image_io, models
from ifan_jax.data.decode import check_example, decode_file, find_broken, read_depth
from ifan_jax.data.layouts import canonical_dataset
from ifan_jax.errors import UserError
from ifan_jax.evaluation import scorer, subsets
from ifan_jax.inference import Deblurrer, tiling

METRICS = scorer.METRICS
COLUMNS = ("name", *METRICS, "seconds")
SCORES_FILE = "scores.csv"
SUMMARY_FILE = "summary.json"
IMAGES_DIR = "images"
# Optional key of model_config.json: the bit depth (8 or 16) the model was trained at. It is not
# a field of the network; `load_model` takes it out and reports it.
UNKNOWN = "unknown"


class EvaluationError(UserError):
    """An evaluation that cannot run as asked; the message says why."""


def load_model(ckpt: str, which: str = "latest",
               iac_variant: str | None = None) -> tuple[Deblurrer, int | str]:
    """(Deblurrer, the bit depth the model was trained at: 8, 16 or "unknown") of a checkpoint
    directory, a training workdir or an official `.pytorch`/`.pth` file (`load_weights`).

    The depth is model_config.json's optional "bit_depth" key; checkpoints without it (training
    workdirs written before it existed) say "unknown".
    """
    try:
        deblurrer = Deblurrer.from_checkpoint(ckpt, which, iac_variant)
    except UserError:
        raise
    except (TypeError, ValueError) as e:
        raise EvaluationError(f"{ckpt}: {e}") from None
    return deblurrer, UNKNOWN if deblurrer.bit_depth is None else deblurrer.bit_depth


def full_size_examples(examples: list[dict], headers: list[dict], keys, bit_depth: int | None,
                       rotated: bool, fail: Callable[[str, str], None] | None = None
                       ) -> Iterator[dict]:
    """Examples {"name", keys..., "bit_depth"} at their full size (float32 H x W x 3 in [0, 1],
    read as `data.load_split` reads them but not cropped), rotated 90 degrees counter-clockwise
    when `rotated`; `headers` are `data.check_examples(examples, keys)`. An example whose file
    cannot be decoded is a DataError, or with `fail` is left out after `fail(name, reason)`."""
    for example, hdrs in zip(examples, headers, strict=True):
        out = {"name": example["name"], "bit_depth": read_depth(hdrs[keys[0]].bit_depth, bit_depth)}
        try:
            for key in keys:
                h = hdrs[key]
                image = decode_file(h.path, h.format_code, read_depth(h.bit_depth, bit_depth),
                                    h.orientation, (h.height, h.width))
                out[key] = np.rot90(image, k=1) if rotated else image
        except data.DataError as e:
            if fail is None:
                raise
            fail(example["name"], str(e))
            continue
        yield out


def _matched(stream, examples: list[dict], files: list, fail: Callable[[str, str], None]
             ) -> Iterator[dict]:
    """The elements of `stream` (the decoded `examples` in their order, those that failed to
    decode left out by `ignore_errors`), each matched to its example by name; each example left
    out gets `fail(name, reason)`, the reason from decoding its `files` again (`find_broken`)."""
    pending = iter(zip(examples, files, strict=True))
    for element in stream:
        name = element["name"].decode() if isinstance(element["name"], bytes) else element["name"]
        for example, example_files in pending:
            if example["name"] == name:
                break
            fail(example["name"], _why_broken(example_files))
        else:  # tf.data keeps the order; an unknown name would be a pairing error
            raise EvaluationError(f"{name}: decoded out of order")
        yield element
    for example, example_files in pending:
        fail(example["name"], _why_broken(example_files))


def _why_broken(files) -> str:
    broken = find_broken(files)
    return str(broken) if broken is not None else "cannot be decoded"


def evaluate(ckpt: str, data_dir: str, dataset: str, output_dir: str,
             save_images: bool | None = None, iac_variant: str | None = None,
             which: str = "latest", split: str = "test", bit_depth: int | None = None,
             limit: int | None = None, subset_files: str | dict[str, str] | None = None,
             overwrite: bool = False, progress: bool = True,
             warn: Callable[[str], None] | None = None,
             bad_pair: Callable[[str, str], None] | None = None,
             max_pixels: int | None = image_io.MAX_PIXELS) -> dict:
    """Score checkpoint `ckpt` on `dataset` under `data_dir`; write scores.csv and summary.json.

    `which`: "latest" or "best" step of a training workdir. `iac_variant` overrides the
    checkpoint's ("official" for converted official weights, which record it already).
    `save_images`: write the outputs (None: only for sets without ground truth). `bit_depth`:
    None reads 16-bit PNGs at the model's training depth when the checkpoint records it, else at
    their own depth (see `ifan_jax.data.load_split`). `limit`: only the first `limit` images.
    `subset_files`: "NAME=PATH,..." or {name: path} of `ifan_jax.evaluation.subsets` files, whose means are
    reported beside the whole set's. `warn(message)` receives warnings (default: stderr).
    `bad_pair(name, reason)` receives each pair that cannot be scored (default: stderr), which is
    left out and listed in the summary's "failed". `max_pixels`: the pixel limit of every file
    (`image_io.MAX_PIXELS`; None: none). Returns the summary dict.
    """
    warn = warn or _print_warning
    bad_pair = bad_pair or _print_bad_pair
    deblurrer, model_depth = load_model(ckpt, which, iac_variant)
    dataset = canonical_dataset(dataset)
    keys = data.KEYS[dataset]
    if deblurrer.needs_dual_pixel and not {"l", "r"} <= set(keys):
        raise EvaluationError(f"{ckpt} is a dual-pixel-input model; {dataset} has no left/right "
                              f"views")
    pairing = data.pair_split(data_dir, dataset, split)
    groups = {} if subset_files is None else subsets.read_subsets(subset_files, pairing.names)
    names = pairing.names[:limit] if limit is not None else pairing.names
    if not names:
        raise EvaluationError(f"{data_dir}: {dataset} {split} has no images to evaluate")
    has_gt = "gt" in keys
    save_images = (not has_gt) if save_images is None else save_images
    if bit_depth is None and model_depth != UNKNOWN:
        bit_depth = model_depth
    _check_outputs(output_dir, save_images, overwrite)

    failed: dict[str, str] = {}

    def fail(name: str, reason: str) -> None:
        failed[name] = reason
        bad_pair(name, reason)

    complete = {e["name"]: e for e in pairing.examples}
    examples, headers = [], []
    for name in names:
        if name not in complete:
            fail(name, pairing.bad[name])
            continue
        try:
            headers.append(check_example(complete[name], keys, max_pixels=max_pixels))
        except data.DataError as e:
            fail(name, str(e))
            continue
        examples.append(complete[name])
    if limit is None:  # names with no combined image (a target alone) are no example either
        for name in sorted(set(pairing.bad) - set(names)):
            fail(name, pairing.bad[name])
    if not examples:
        raise EvaluationError(f"{data_dir}: nothing to score in {dataset} {split}: each of its "
                              f"{len(failed)} pairs is damaged or incomplete")
    input_depths = sorted({read_depth(h[keys[0]].bit_depth, bit_depth) for h in headers})
    warnings = _depth_warnings(ckpt, model_depth, input_depths)
    for message in warnings:
        warn(message)

    rotated = dataset in data.ROTATED_DATASETS
    if has_gt:  # the official evaluation: cropped to a multiple of 8
        files = [[(h[key], read_depth(h[key].bit_depth, bit_depth)) for key in keys]
                 for h in headers]
        loaded = data.load_examples(examples, headers, dataset, bit_depth).ignore_errors()
        stream = _matched(data.numpy_iterator(loaded), examples, files, fail)
    else:  # full size: padded to a multiple of 8 and cropped back
        stream = full_size_examples(examples, headers, keys, bit_depth, rotated, fail)
    score = scorer.Scorer(deblurrer.forward, dual=deblurrer.needs_dual_pixel,
                          metrics=METRICS if has_gt else (), rotated=rotated, timed=True)
    images_dir = os.path.join(output_dir, IMAGES_DIR)
    rows, shape = [], None
    with contextlib.ExitStack() as stack:
        staging = stack.enter_context(fileio.atomic_directory(images_dir, overwrite=overwrite)
                                      ) if save_images else None
        bar = stack.enter_context(tqdm(total=len(examples), desc=f"{dataset} {split}",
                                       unit="image", disable=not progress, dynamic_ncols=True))
        for scored in score(deblurrer.params, stream):
            if shape is None:  # the size that ran (before rotating back)
                shape = scored.output.shape[1::-1] if rotated else scored.output.shape[:2]
            rows.append({"name": scored.name, **scored.scores})
            if staging is not None:
                path = os.path.join(staging, f"{scored.name}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                image_io.write_image(path, scored.output, bit_depth=scored.bit_depth)
            bar.update(1)
            if has_gt:
                bar.set_postfix(psnr=f"{np.mean([r['psnr'] for r in rows]):.3f}")
        if not rows:  # inside the block: the staged images/ folder is removed
            raise EvaluationError(f"{data_dir}: nothing to score in {dataset} {split}: none of "
                                  f"its {len(failed)} pairs could be decoded")

    summary = {
        **_what(ckpt, which, data_dir, dataset, split, has_gt),
        **_means(rows),
        "subsets": {name: {"num_listed": len(members), **_means(_members(rows, members))}
                    for name, members in groups.items()},
        "input_bit_depth": input_depths[0] if len(input_depths) == 1 else input_depths,
        "model_bit_depth": model_depth,
        "warnings": warnings,
        **_model_facts(deblurrer, shape),
        "images": os.path.abspath(images_dir) if save_images else None,
        "failed": dict(sorted(failed.items())),
    }
    fileio.atomic_write_text(os.path.join(output_dir, SCORES_FILE), _csv(rows),
                             overwrite=overwrite)
    fileio.atomic_write_text(os.path.join(output_dir, SUMMARY_FILE),
                             json.dumps(summary, indent=2) + "\n", overwrite=overwrite)
    return summary


def _print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _print_bad_pair(name: str, reason: str) -> None:
    tqdm.write(f"{name}: {reason}", file=sys.stderr)


def _depth_warnings(ckpt: str, model_depth, input_depths: list[int]) -> list[str]:
    """A warning when a model trained at one bit depth is scored on inputs read at another."""
    if model_depth == UNKNOWN:
        return []
    other = [d for d in input_depths if d != model_depth]
    if not other:
        return []
    hint = " (--bit_depth=8 reads 16-bit PNGs as it was trained)" if model_depth == 8 else ""
    return [f"{ckpt} was trained on {model_depth}-bit images but is scored on {other[0]}-bit "
            f"inputs: its scores are not those of its own protocol{hint}"]


def _check_outputs(output_dir: str, save_images: bool, overwrite: bool) -> None:
    """Refuse, before any work, to replace earlier results unless `overwrite`."""
    if overwrite:
        return
    ours = [SCORES_FILE, SUMMARY_FILE] + ([IMAGES_DIR] if save_images else [])
    for name in ours:
        path = os.path.join(output_dir, name)
        if os.path.exists(path):
            raise EvaluationError(f"{path} exists (not overwritten; pass --overwrite to replace "
                                  f"the results in {output_dir})")


def _means(rows: list[dict]) -> dict:
    """{"num_images", metric means..., "seconds"}: null where no row has a value or the mean is
    not finite (JSON has no infinity)."""
    keys = (*METRICS, "seconds")
    means = scorer.means(scorer.totals(rows, keys), keys)
    return {"num_images": len(rows),
            **{k: v if v is not None and math.isfinite(v) else None for k, v in means.items()}}


def _members(rows: list[dict], names: list[str]) -> list[dict]:
    names = set(names)
    return [r for r in rows if r["name"] in names]


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row["name"]] + [_cell(row.get(k)) for k in COLUMNS[1:]])
    return out.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.6f}" if math.isfinite(value) else str(value)


def _what(ckpt, which, data_dir, dataset, split, has_gt) -> dict:
    return {
        "checkpoint": os.path.abspath(ckpt),
        "which": which,
        "dataset": dataset,
        "split": split,
        "data_dir": os.path.abspath(data_dir),
        "image_size": "cropped to a multiple of 8 (the official evaluation)" if has_gt else
                      "full size (padded to a multiple of 8 and cropped back)",
    }


def _model_facts(deblurrer: Deblurrer, shape) -> dict:
    config = deblurrer.model_config
    # MACs at the first image's size as it ran (padded to a multiple of 8).
    height, width = (tiling.round_up(n) for n in shape)
    macs = cost.count_macs(config, height, width)
    return {
        "num_params": models.count_params(deblurrer.params),
        # ptflops convention (as the paper); the IAC's own per-pixel multiply-adds, which ptflops
        # does not see, separately.
        "macs": macs.total,
        "adaptive_macs": macs.adaptive,
        "macs_height": height,
        "macs_width": width,
        "iac_variant": config.get("iac_variant"),
        "model_config": config,
        "lpips_model": "LPIPS v0.1, AlexNet, net-lin, on [-1, 1] inputs",
        "device": str(jax.devices()[0].device_kind),
        "timing": "steady-state seconds per image of the jitted network (compilation excluded, "
                  "input on device, block_until_ready)",
    }

