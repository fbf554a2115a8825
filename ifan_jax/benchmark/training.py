"""Our worker for the training step: `ifan_jax.train.train_step` on a random batch."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from configs import load_config
from ifan_jax import optimizer, train
from ifan_jax.benchmark import probes, specs
from ifan_jax.benchmark.weights import random_params


def train_config(job: specs.TrainStep):
    """configs/ifan.py (the paper's optimiser) with the job's model and compute dtype."""
    config = load_config("ifan")
    config.model.update(job.model.config(job.dtype))
    return config


def random_batch(batch: int, crop: int, seed: int = 1) -> dict:
    """{"c", "r", "l", "gt"}: (batch, crop, crop, 3) float32 in [0, 1], "gt" = clip(c + 0.05)."""
    rng = np.random.default_rng(seed)
    out = {k: jnp.asarray(rng.random((batch, crop, crop, 3), np.float32)) for k in ("c", "r", "l")}
    out["gt"] = jnp.clip(out["c"] + 0.05, 0, 1)
    return out


def train_step(job: specs.TrainStep) -> dict:
    """Compile and run one optimiser update (all losses, RAdam, clipping) repeatedly."""
    config = train_config(job)
    model = train.create_model(config)
    params = random_params(config.model, with_reblur=True)
    tx, schedule = optimizer.create_optimizer(config)
    state = train.TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                                    rng=jax.random.PRNGKey(0), learning_rate_fn=schedule)
    batch = random_batch(job.batch, job.crop)
    compiled, compile_s = probes.timed_first(
        lambda: jax.jit(train.train_step).lower(state, batch).compile())
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch)
        holder["loss"] = float(metrics["loss"])  # waits for the step

    _, first_run_s = probes.timed_first(one_step)
    times, reset = probes.steady_runs(one_step, job.warmup, job.repeats, probes.reset_peak_rss)
    return {**probes.summary(times), "compile_s": compile_s, "first_run_s": first_run_s,
            "peak_rss_mb": probes.peak_rss_mb(), "steady_rss_mb": probes.steady_rss_mb(reset),
            "peak_device_mb": probes.peak_device_mb(), "device_mb": probes.executable_mb(compiled),
            "loss": holder["loss"], "backend": jax.default_backend(),
            "output_finite": math.isfinite(holder["loss"])}
