"""Our workers for the training step: `ifan_jax.training.step.train_step` on a random batch, and fed by
the input pipeline (TensorFlow loads only in the latter: `ifan_jax.data` imports it on first
use)."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import probes, specs
from benchmarks.weights import random_params
from ifan_jax import data, environment
from ifan_jax.config import load_config
from ifan_jax.training import distributed, optimizer
from ifan_jax.training import step as step_lib


def train_config(job: specs.TrainStep | specs.FedTrainStep):
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


def compiled_step(job: specs.TrainStep | specs.FedTrainStep):
    """(compiled train step, initial state, compile seconds, the random batch it was compiled
    for) of the job's model, random weights, the paper's optimiser. The step is the one training
    runs (`compile_train_step` on this process's devices: the state donated, so the update reuses
    its buffers), and the state lives on the device only, as in training."""
    config = train_config(job)
    model = step_lib.create_model(config)
    tx, schedule = optimizer.create_optimizer(config)
    state = jax.device_put(step_lib.TrainState.create(
        apply_fn=model.apply, params=random_params(config.model, with_reblur=True), tx=tx,
        rng=jax.random.PRNGKey(0), learning_rate_fn=schedule))
    batch = random_batch(job.batch, job.crop)
    step = step_lib.compile_train_step(distributed.data_mesh(), job.microbatches)
    compiled, compile_s = probes.timed_first(lambda: step.compile(state, batch))
    return compiled, state, compile_s, batch


def stepper(compiled, state, batch):
    """A function running one synchronised step on `batch` and a dict holding state and loss."""
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch)
        holder["loss"] = float(metrics["loss"])  # waits for the step

    return one_step, holder


def train_step(job: specs.TrainStep) -> dict:
    """Compile and run one optimiser update (all losses, RAdam, clipping) repeatedly."""
    compiled, state, compile_s, batch = compiled_step(job)
    one_step, holder = stepper(compiled, state, batch)
    _, first_run_s = probes.timed_first(one_step)
    times, reset = probes.steady_runs(one_step, job.warmup, job.repeats, probes.reset_peak_rss)
    return {**probes.summary(times), "compile_s": compile_s, "first_run_s": first_run_s,
            "peak_rss_mb": probes.peak_rss_mb(), "steady_rss_mb": probes.steady_rss_mb(reset),
            "peak_device_mb": probes.peak_device_mb(), "device_mb": probes.executable_mb(compiled),
            "loss": holder["loss"], "backend": jax.default_backend(),
            "output_finite": math.isfinite(holder["loss"])}


def _run_steps(compiled, state, next_batch, steps: int):
    """`steps` updates on batches from `next_batch()`, dispatched without waiting (the next batch
    is read while the device runs the step before, as in training); returns (state, loss,
    seconds per step, seconds per step inside `next_batch`)."""
    waited, start = 0.0, time.perf_counter()
    for _ in range(steps):
        read = time.perf_counter()
        batch = next_batch()
        waited += time.perf_counter() - read
        state, metrics = compiled(state, batch)
    loss = float(metrics["loss"])  # waits for the last step
    return state, loss, (time.perf_counter() - start) / steps, waited / steps


def fed_train_step(job: specs.FedTrainStep) -> dict:
    """The training step fed by `train_dataset`, against the same loop on one fixed batch: the
    share of the fed time spent waiting for input is 1 - fixed / fed (0 when the pipeline keeps
    up)."""
    compiled, state, _, batch = compiled_step(job)
    state, *_ = _run_steps(compiled, state, lambda: batch, job.warmup + 1)
    state, _, step_s, _ = _run_steps(compiled, state, lambda: batch, job.repeats)
    environment.configure_tensorflow()  # as training does, before the pipeline imports TF
    it = data.train_dataset(job.data_dir, batch_size=job.batch, crop=job.crop, seed=0,
                            bit_depth=job.bits, process_index=0, process_count=1)
    state, *_ = _run_steps(compiled, state, lambda: next(it), job.warmup + 1)  # tf.data start-up
    state, loss, fed_s, next_s = _run_steps(compiled, state, lambda: next(it), job.repeats)
    return {"time_s": fed_s, "step_s": step_s, "input_wait_fraction": max(0.0, 1 - step_s / fed_s),
            "next_batch_s": next_s, "peak_rss_mb": probes.peak_rss_mb(),
            "peak_device_mb": probes.peak_device_mb(), "loss": loss,
            "backend": jax.default_backend(), "output_finite": math.isfinite(loss)}
