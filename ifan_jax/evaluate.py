"""Evaluate a checkpoint on a test set the way the paper reports it (Tables 2-5).

    from ifan_jax.evaluate import evaluate
    summary = evaluate("ckpt/IFAN", "datasets", "dpdd", "results/IFAN_dpdd", save_images=True)

For every test image, in the official order, the whole image (cropped to a multiple of 8, as the
official evaluation does) runs through the jitted network and is scored against its ground truth:

    OUTPUT_DIR/scores.csv     name,psnr,ssim,mae,lpips,seconds   (one row per image)
    OUTPUT_DIR/summary.json   the means, parameter count, MACs, and what was evaluated
    OUTPUT_DIR/images/*.png   the outputs (with save_images), at the input's bit depth

PSNR, SSIM and MAE are `ifan_jax.metrics`, LPIPS is `ifan_jax.lpips` (AlexNet v0.1), all on the
float output before quantisation, as the official code scores them. `seconds` is the network's
steady-state time for the image: the first image of each shape is run once to compile, then
every image is timed from dispatch to `block_until_ready` with its input already on the device.
Sets without ground truth (PixelDP, CUHK, folder) get outputs and times only: their metric cells
are empty and their means null.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time

import jax
import numpy as np

from ifan_jax import cost, image_io, metrics
from ifan_jax.inference import Deblurrer

COLUMNS = ("name", "psnr", "ssim", "mae", "lpips", "seconds")
METRICS = ("psnr", "ssim", "mae", "lpips")
SCORES_FILE = "scores.csv"
SUMMARY_FILE = "summary.json"
IMAGES_DIR = "images"


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked; the message says why."""


def evaluate(ckpt: str, data_dir: str, dataset: str, output_dir: str, save_images: bool = False,
             iac_variant: str | None = None, which: str = "latest", split: str = "test",
             bit_depth: int | None = None, limit: int | None = None,
             progress: bool = True) -> dict:
    """Score checkpoint `ckpt` on `dataset` under `data_dir`; write scores.csv and summary.json.

    `which`: "latest" or "best" step of a training workdir. `iac_variant` overrides the
    checkpoint's ("official" for converted official weights, which record it already).
    `bit_depth`: None reads each image at its own depth (see `ifan_jax.data.load_split`).
    `limit`: evaluate only the first `limit` images. Returns the summary dict.
    """
    from tqdm import tqdm

    from ifan_jax import data

    deblurrer = Deblurrer.from_checkpoint(ckpt, which=which, iac_variant=iac_variant)
    dataset = dataset.lower()
    examples = data.list_split(data_dir, dataset, split)
    keys = data.KEYS[dataset]
    if deblurrer.needs_dual_pixel and not {"l", "r"} <= set(keys):
        raise EvaluationError(f"{ckpt} is a dual-pixel-input model; {dataset} has no left/right "
                              f"views")
    total = len(examples) if limit is None else min(limit, len(examples))
    if total == 0:
        raise EvaluationError(f"{data_dir}: {dataset} {split} has no images")
    has_gt = "gt" in keys
    rotated = dataset in data.ROTATED_DATASETS
    lpips_model = None
    if has_gt:
        from ifan_jax.lpips import LPIPS

        lpips_model = LPIPS()

    os.makedirs(output_dir, exist_ok=True)
    if save_images:
        os.makedirs(os.path.join(output_dir, IMAGES_DIR), exist_ok=True)
    rows, compiled_shapes, first_shape = [], set(), None
    scores_path = os.path.join(output_dir, SCORES_FILE)
    stream = data.numpy_iterator(data.load_split(data_dir, dataset, split, bit_depth))
    with open(scores_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        bar = tqdm(total=total, desc=f"{dataset} {split}", unit="image", disable=not progress,
                   dynamic_ncols=True)
        for example in stream:
            if len(rows) >= total:
                break
            name = example["name"].decode() if isinstance(example["name"], bytes) else str(
                example["name"])
            views = [example["c"][None]]
            if deblurrer.needs_dual_pixel:
                views += [example["r"][None], example["l"][None]]
            views = [jax.device_put(v) for v in views]
            jax.block_until_ready(views)
            shape = views[0].shape
            first_shape = first_shape or shape
            if shape not in compiled_shapes:  # compile (and run once) outside the timing
                deblurrer.run_batch(*views).block_until_ready()
                compiled_shapes.add(shape)
            start = time.perf_counter()
            out = deblurrer.run_batch(*views).block_until_ready()
            seconds = time.perf_counter() - start
            result = np.asarray(out[0], np.float32)
            if rotated:
                result = np.rot90(result, k=-1)
            row = {"name": name, "seconds": seconds}
            if has_gt:
                gt = example["gt"]
                if rotated:
                    gt = np.rot90(gt, k=-1)
                row.update(psnr=metrics.psnr(result, gt), ssim=metrics.ssim(result, gt),
                           mae=metrics.mae(result, gt), lpips=lpips_model(result, gt))
            if save_images:
                image_io.write_image(os.path.join(output_dir, IMAGES_DIR, f"{name}.png"),
                                     result, bit_depth=int(example["bit_depth"]), overwrite=True)
            writer.writerow([row["name"]] + [_cell(row.get(k)) for k in COLUMNS[1:]])
            f.flush()
            rows.append(row)
            bar.update(1)
            if has_gt:
                bar.set_postfix(psnr=f"{np.mean([r['psnr'] for r in rows]):.3f}")
        bar.close()

    summary = _summary(rows, deblurrer, ckpt, which, data_dir, dataset, split, first_shape)
    with open(os.path.join(output_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return f"{value:.6f}" if math.isfinite(value) else str(value)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    m = float(np.mean(values))
    return m if math.isfinite(m) else None


def _summary(rows, deblurrer: Deblurrer, ckpt, which, data_dir, dataset, split,
             shape) -> dict:
    config = deblurrer.model_config
    height, width = int(shape[1]), int(shape[2])
    macs = cost.count_macs(config, height, width)
    summary = {
        "checkpoint": os.path.abspath(ckpt),
        "which": which,
        "dataset": dataset,
        "split": split,
        "data_dir": os.path.abspath(data_dir),
        "num_images": len(rows),
        **{k: _mean(r.get(k) for r in rows) for k in METRICS},
        "seconds": _mean(r["seconds"] for r in rows),
        "num_params": cost.count_params(deblurrer.params),
        # ptflops convention (as the paper), at the first image's size; the IAC's own per-pixel
        # multiply-adds, which ptflops does not see, separately.
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
    return summary
