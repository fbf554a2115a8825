"""The training loop: `train_and_evaluate(config, workdir)` (the train state and the pure train step
are in `step.py`).

    python train.py --config=configs/ifan.py --workdir=runs/ifan     # the paper's 600k steps

`train_and_evaluate(config, workdir)` trains data parallel over every device of every process
with `jax.jit` on a one-axis mesh (`ifan_jax.training.distributed`): the parameters and the optimiser state
are replicated, the global batch is split along its first axis, and the loss is the mean over the
global batch, so XLA all-reduces the gradients. The same compiled step runs on 1 CPU or 8 TPU cores.

The workdir is an `ifan_jax.checkpoint` directory. Restarting with the same workdir resumes from
the latest checkpoint, on any number of devices: the batch of step s is a pure function of (seed,
s, global batch size) and the RNG of step s is fold_in(key, s), so on the same devices an
interrupted run ends with the parameters, bit for bit, of one that never stopped (on other devices
they agree to rounding: the gradient is summed in another order).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metric_writers

from ifan_jax import checkpoint as ckpt_lib
from ifan_jax import data as data_lib
from ifan_jax import environment
from ifan_jax.errors import UserError
from ifan_jax.models.resample import SCALE
from ifan_jax.training import distributed
from ifan_jax.training.console import TrainProgress
from ifan_jax.training.step import (
    DUAL_PIXEL_VIEWS,
    TrainState,
    compile_train_step,
    create_model,
    create_train_state,
)
from ifan_jax.training.validation import Validator

INTERVALS = {"log": "log_every_steps", "eval": "eval_every_steps",
             "checkpoint": "checkpoint_every_steps", "images": "image_summary_every_steps"}


class ConfigError(UserError):
    """A configuration that cannot be trained; the message names the key."""


class NonFiniteLossError(UserError, RuntimeError):
    """The loss or the gradient became NaN or infinite; the message names the step."""


# --------------------------------------------------------------------------------------------
# Checks before anything is created


def dataset_views(config: ml_collections.ConfigDict) -> set[str]:
    """The images each example of config.dataset has ("c", "gt", and "l", "r" if dual-pixel)."""
    try:
        return set(data_lib.KEYS[str(config.dataset).lower()])
    except KeyError:
        raise ConfigError(f"config.dataset={config.dataset!r}: unknown data set (known: "
                          f"{', '.join(sorted(data_lib.KEYS))})") from None


def check_config(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Raise ConfigError for settings that cannot train, before anything expensive starts."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    if config.batch_size <= 0 or config.batch_size % num_devices:
        raise ConfigError(f"config.batch_size={config.batch_size} must be a positive multiple of "
                          f"the number of devices ({num_devices}, over {jax.process_count()} "
                          f"host(s)); the global batch is split evenly over them")
    microbatches = config.get("microbatches", 1)
    if microbatches <= 0 or (config.batch_size // num_devices) % microbatches:
        raise ConfigError(f"config.microbatches={microbatches} must be a positive divisor of each "
                          f"device's share of the batch (config.batch_size={config.batch_size} "
                          f"over {num_devices} device(s))")
    if config.crop_size % SCALE or config.crop_size < 2 * SCALE:
        raise ConfigError(f"config.crop_size={config.crop_size} must be a multiple of {SCALE}, "
                          f">= {2 * SCALE}")
    for key in (*INTERVALS.values(), "total_steps"):
        if int(config[key]) <= 0:
            raise ConfigError(f"config.{key}={config[key]} must be positive")
    views = dataset_views(config)
    if not {"c", "gt"} <= views:
        raise ConfigError(f"config.dataset={config.dataset!r} has no sharp targets to train on")
    if config.model.dual_pixel_input and not DUAL_PIXEL_VIEWS <= views:
        raise ConfigError(f"config.model.dual_pixel_input=True needs dual-pixel views, which "
                          f"config.dataset={config.dataset!r} does not have")
    problem = ckpt_lib.model_config_problem(config.model.to_dict())  # as model_config.json is
    if problem is not None:
        raise ConfigError(f"config.model.{problem}")
    try:
        create_model(config)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config.model: {e}") from None


def prepare_data(config: ml_collections.ConfigDict, workdir: str) -> str:
    """The data root. `{workdir}` in config.data_dir stands for the workdir. With
    config.synthetic.generate the synthetic DPDD is generated there unless already present
    (`ifan_jax.data.synth.generate` is atomic and keeps an identical earlier set)."""
    root = os.path.abspath(config.data_dir.format(workdir=workdir))
    if config.synthetic.generate and jax.process_index() == 0:
        from ifan_jax.data import synth  # deferred: scikit-image's photos, only for this

        if not os.path.isdir(os.path.join(root, "DPDD")):
            print(f"Generating the synthetic dual-pixel data set in {root}", flush=True)
        try:
            synth.generate(root, num=config.synthetic.num, size=config.synthetic.size,
                           seed=config.seed)
        except ValueError as e:
            raise ConfigError(f"config.synthetic: {e}") from None
    distributed.sync("ifan_jax data")
    for split in ("train", "val"):
        data_lib.list_split(root, config.dataset, split)  # DataError naming what is missing
    return root


# --------------------------------------------------------------------------------------------
# The run


class Run:
    """Everything a training run holds (state, data, checkpoints, writer, console), created on
    construction in an order that checks before it creates, and released by `close`. A
    construction that fails releases what it had created and raises."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config, self.workdir = config, workdir
        self.is_chief = jax.process_index() == 0
        self.closers: list[Callable[[], Any]] = []
        self.validation: dict | None = None
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        config, workdir = self.config, self.workdir
        check_config(config)
        self.dual = DUAL_PIXEL_VIEWS <= dataset_views(config)
        self.checkpoints = ckpt_lib.Checkpoints.open(
            workdir, ckpt_lib.stored_model_config(config), config.keep_checkpoints,
            report=lambda line: print(line, flush=True) if self.is_chief else None,
            sync=distributed.sync)
        self.closers += [self.checkpoints.close, self.checkpoints.wait]
        self.last_saved = self.checkpoints.latest_step
        self.first = self.last_saved or 0
        self.progress = TrainProgress(self.first, int(config.total_steps), enabled=self.is_chief)
        self.closers.append(self.progress.close)
        self.root = prepare_data(config, workdir)
        self.data = data_lib.train_dataset(  # reads every file's header: DataError naming it
            self.root, config.batch_size, crop=config.crop_size, seed=config.seed,
            start_step=self.first, augment=config.augment, bit_depth=config.bit_depth,
            process_index=jax.process_index(), process_count=jax.process_count(),
            cache=config.get("cache_train_data", False), dataset=config.dataset)
        self.closers.append(self.data.close)
        self.mesh = distributed.data_mesh()
        state = jax.device_put(create_train_state(config), distributed.replicated(self.mesh))
        if self.last_saved is not None:
            state = self.checkpoints.restore(state, self.last_saved)
        self.state = state
        self.writer = metric_writers.create_default_writer(workdir, just_logging=not self.is_chief)
        self.closers.append(self.writer.close)
        self.validator = Validator(config, self.root, state.apply_fn)
        self.step_fn = compile_train_step(self.mesh, config.get("microbatches", 1))
        self.preemption = distributed.Preemption()
        self.closers.append(self.preemption.close)

    def close(self) -> None:
        """Release everything the constructor created, newest first (pending checkpoint writes finish)."""
        while self.closers:
            self.closers.pop()()

    def say(self, text: str, *, every_process: bool = False) -> None:
        """A console line from the chief process (or from each, prefixed with its index)."""
        if every_process and jax.process_count() > 1:
            text = f"[process {jax.process_index()}] {text}"
        elif not self.is_chief:
            return
        if self.is_chief:
            self.progress.line(text)  # clears the live line first
        else:
            print(text, flush=True)

    def announce(self) -> None:
        config, total = self.config, int(self.config.total_steps)
        if self.last_saved is not None:
            self.say(f"Resuming from {self.workdir}/checkpoints/{self.last_saved}")
        if not self.dual:
            self.say(f"config.dataset={config.dataset!r} has no dual-pixel views: the disparity "
                     f"loss is off")
        if self.first == 0:
            self.writer.write_hparams(_flatten(config.to_dict()))
        parts = config.get("microbatches", 1)
        passes = f" in {parts} passes per device" if parts > 1 else ""
        self.say(f"Training steps {self.first + 1}-{total} on {jax.device_count()} device(s) "
                 f"({jax.process_count()} process(es)), global batch {config.batch_size}{passes}, "
                 f"crop {config.crop_size}; workdir {self.workdir}")
        if jax.process_count() > 1:
            local = config.batch_size // jax.process_count()
            first = jax.process_index() * local
            self.say(f"reads rows {first}-{first + local - 1} of each global batch, on "
                     f"{jax.local_device_count()} device(s)", every_process=True)

    def check_finite(self, fetched: list[tuple[int, dict]]) -> None:
        for step, m in fetched:
            for key in ("loss", "grad_norm"):
                if not np.isfinite(float(m[key])):
                    kept = (f"the last good checkpoint is {self.workdir}/checkpoints/"
                            f"{self.last_saved}" if self.last_saved is not None
                            else "no checkpoint was written")
                    raise NonFiniteLossError(f"non-finite training loss at step {step} ({key} = "
                                             f"{float(m[key])}); stopped, {kept}")

    def log(self, step: int, history: list[tuple[int, dict]]) -> None:
        means = {k: float(np.mean([float(m[k]) for _, m in history])) for k in history[-1][1]}
        means["learning_rate"] = float(history[-1][1]["learning_rate"])
        rate = self.progress.steps_per_second(step)
        scalars = {f"train_{k}" if k.startswith("loss") else k: v for k, v in means.items()}
        self.writer.write_scalars(step, {**scalars, **({"steps_per_sec": rate} if rate else {})})
        self.progress.interval(step, means)

    def validate(self, state: TrainState, step: int, *, last: bool) -> None:
        self.validation = self.validator(state.params)
        self.writer.write_scalars(step, {f"val_{k}": v for k, v in self.validation.items()})
        if not last:  # the final one is printed once, after the last checkpoint
            self.say(f"step {step}/{self.config.total_steps}  validation {self.summary()}")

    def summary(self) -> str:
        v = self.validation
        text = (f"PSNR {v['psnr']:.2f} dB (input {v['input_psnr']:.2f} dB), "
                f"SSIM {v['ssim']:.4f}")
        return text + (f", LPIPS {v['lpips']:.4f}" if "lpips" in v else "")

    def save(self, state: TrainState, step: int) -> None:
        self.checkpoints.save(state)
        self.last_saved = step


def _due(config: ml_collections.ConfigDict, step: int, last: bool) -> dict[str, bool]:
    return {name: last or step % int(config[key]) == 0 for name, key in INTERVALS.items()}


def train_loop(run: Run) -> TrainState:
    """Steps first+1 .. total_steps of a started `Run`; returns the last state."""
    config, state, total = run.config, run.state, int(run.config.total_steps)
    pending: list[tuple[int, dict]] = []  # device metrics not yet fetched (and checked)
    since_log: list[tuple[int, dict]] = []
    for step in range(run.first + 1, total + 1):  # `step` = updates done after this one
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            state, metrics = run.step_fn(state, distributed.global_batch(next(run.data), run.mesh))
        pending.append((step, metrics))
        run.progress.step_done(step, lambda m=metrics: float(m["loss"]))
        last = step == total
        stop = not last and run.preemption.requested(step)
        due = _due(config, step, last)
        if not (stop or any(due.values())):
            continue
        fetched, pending = jax.device_get(pending), []
        run.progress.finished(step)
        run.check_finite(fetched)
        since_log += fetched
        if due["log"]:
            run.log(step, since_log)
            since_log = []
        if due["images"] and run.is_chief:
            run.writer.write_images(step, run.validator.summary_images(state.params))
        if due["eval"]:
            run.validate(state, step, last=last)
        if due["checkpoint"] or stop:
            run.save(state, step)
        if due["eval"]:
            run.checkpoints.save_best(state, run.validation)
        run.writer.flush()
        if stop:
            run.say(f"Stopped at step {step} on a pre-emption notice, checkpoint saved; run again "
                    f"with --workdir={run.workdir} to resume", every_process=True)
            break
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train (or resume training) in `workdir`; returns the final state.

    Every log_every_steps: the mean training losses of the interval, the learning rate and the
    gradient norm (TensorBoard and a console line); every eval_every_steps and at the end:
    validation PSNR/SSIM/LPIPS, and the best checkpoint; every checkpoint_every_steps and at the
    end: a checkpoint; every image_summary_every_steps: input/output/sharp/disparity images. A NaN
    or infinite loss raises NonFiniteLossError naming the step; no checkpoint is written after it.
    SIGTERM (a pre-emption notice) checkpoints the current step and returns early. A start that
    fails (bad config, data or workdir) leaves no new workdir behind.
    """
    if environment.tensorflow_was_imported_with_onednn():
        print("Warning: TensorFlow was imported with its oneDNN kernels on: the training batches "
              "may differ in the last bit between runs. Call "
              "ifan_jax.environment.configure_tensorflow() before anything imports TensorFlow "
              "(train.py does) for an exact resume.", flush=True)
    workdir = os.path.abspath(workdir)
    existed = os.path.exists(workdir)
    had_run = os.path.exists(os.path.join(workdir, ckpt_lib.MODEL_CONFIG_FILE))
    try:
        run = Run(config, workdir)
    except BaseException:
        if jax.process_index() == 0 and not existed:
            shutil.rmtree(workdir, ignore_errors=True)
        elif jax.process_index() == 0 and not had_run:
            ckpt_lib.forget_new_run(workdir)
        raise
    try:
        if run.first >= int(config.total_steps):
            run.say(f"{workdir} is already trained to step {run.first} (total_steps="
                    f"{config.total_steps})")
            return run.state
        run.announce()
        state = train_loop(run)
    finally:
        run.close()
    if run.validation is not None and int(jax.device_get(state.step)) == int(config.total_steps):
        run.say(f"Validation after step {config.total_steps} ({run.progress.elapsed()}): "
                f"{run.summary()}")
    return state


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
