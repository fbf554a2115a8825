"""Our workers for the path a user takes: a converted checkpoint on disk, `Deblurrer.from_checkpoint`,
then deblurring a numpy image, in a fresh process (its peak memory includes restoring the
checkpoint, which the random-weight rows leave out)."""

from __future__ import annotations

import jax
import numpy as np

from benchmarks import probes, specs
from benchmarks.weights import random_params
from ifan_jax import checkpoint
from ifan_jax.inference import Deblurrer
from ifan_jax.models import count_params


def make_checkpoint(job: specs.MakeCheckpoint) -> dict:
    """Write random deblurring-network weights of `job.model` as an inference checkpoint (the
    format `python -m ifan_jax.weights` writes) to `job.path`."""
    model_config = job.model.config(job.dtype)
    params = random_params(model_config)
    checkpoint.save_inference_checkpoint(job.path, params, model_config)
    return {"path": job.path, "num_params": count_params(params)}


def checkpoint_inference(job: specs.CheckpointInference) -> dict:
    """Load the checkpoint, deblur one random H x W x 3 image (`Deblurrer.__call__`, which picks
    whole-image or tiled itself), then time repeats of the same call."""
    deblurrer, load_s = probes.timed_first(lambda: Deblurrer.from_checkpoint(job.checkpoint))
    h, w = job.size
    image = np.random.default_rng(1).random((h, w, 3), np.float32)
    out, first_run_s = probes.timed_first(lambda: deblurrer(image))
    times, reset = probes.steady_runs(lambda: deblurrer(image), job.warmup, job.repeats,
                                      probes.reset_peak_rss)
    tile, batch = deblurrer.plan(h, w)
    return {**probes.summary(times), "load_s": load_s, "first_run_s": first_run_s,
            "peak_rss_mb": probes.peak_rss_mb(), "steady_rss_mb": probes.steady_rss_mb(reset),
            "peak_device_mb": probes.peak_device_mb(), "tile": tile, "tile_batch": batch,
            "backend": jax.default_backend(), "output_finite": bool(np.isfinite(out).all()),
            "num_params": count_params(deblurrer.params)}
