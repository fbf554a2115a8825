"""Training IFAN: the train state, the pure train/eval steps and the training loop.

    python train.py --config=configs/ifan.py --workdir=runs/ifan     # the paper's 600k steps

`train_and_evaluate(config, workdir)` trains data parallel over every device of every host with
`jax.jit` on a one-axis device mesh ("data"): the parameters and the optimiser state are
replicated, the global batch is split along its first axis, and the loss is the mean over the
global batch, so XLA all-reduces the gradients (the mean of the per-device gradients, as
`lax.pmean` under `pmap`). The same compiled step runs on 1 CPU or 8 TPU cores.

The workdir is an `ifan_jax.checkpoint` directory: model_config.json, checkpoints/<step>/ (items
"params" and "train_state" = step, optimiser state, RNG key) and best/<step>/ (the parameters with
the best validation PSNR), plus TensorBoard event files. Restarting with the same workdir resumes
from the latest checkpoint exactly: the batch of step s is a pure function of (seed, s) and the
RNG of step s is fold_in(key, s), so an interrupted run ends with the parameters, bit for bit, of
one that never stopped.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ifan_jax import checkpoint as ckpt_lib
from ifan_jax import environment, losses
from ifan_jax.models import IFAN
from ifan_jax.optimizer import create_optimizer
from ifan_jax.validation import Validator, eval_step, local_copy, summary_step  # noqa: F401

# TensorFlow's oneDNN kernels must be off before it is imported (exact resume; see
# `ifan_jax.environment`); `train.py` does it first thing, importing this module does it too.
_TF_ONEDNN_LATE = environment.tensorflow_was_imported_with_onednn()
environment.configure_tensorflow()

BATCH_KEYS = ("c", "r", "l", "gt")  # blurred input, right view, left view, sharp target
DATA_AXIS = "data"
INIT_SIZE = 16  # image side used to create the parameters (their shapes do not depend on it)


class ConfigError(ValueError):
    """A configuration that cannot be trained; the message names the key."""


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN or infinite; the message names the step."""


class TrainState(train_state.TrainState):
    """step, params, opt_state (flax TrainState) plus the base RNG key of the run.

    Step s (0-based, = `step` before the update) draws its randomness from fold_in(rng, s).
    `learning_rate_fn(step)` is the schedule inside `tx`, for logging.
    """

    rng: jax.Array
    learning_rate_fn: Callable = flax.struct.field(pytree_node=False, default=None)


# --------------------------------------------------------------------------------------------
# State and steps


def create_model(config: ml_collections.ConfigDict) -> IFAN:
    try:
        return IFAN.from_config(config.model)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config.model: {e}") from None


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array | None = None) -> TrainState:
    """A fresh state: IFAN parameters (with the reblurring network) and the optimiser of `config`.

    `rng` (a raw uint32 key) defaults to PRNGKey(config.seed); it is split into the seed of the
    initialisation and the state's base key. The initialisation draws with the "rbg" generator:
    jitted, threefry makes XLA compile far longer on a CPU (measured 90 s against 15 s for a
    tiny IFAN on a busy 2-core machine).
    """
    model = create_model(config)
    rng = jax.random.PRNGKey(config.seed) if rng is None else rng
    init_rng, train_rng = jax.random.split(rng)
    init_key = jax.random.key(jax.random.randint(init_rng, (), 0, 2**31 - 1), impl="rbg")
    x = jnp.zeros((1, INIT_SIZE, INIT_SIZE, 3), jnp.float32)
    params = jax.jit(functools.partial(model.init, train=True))(init_key, x, x, x, x)["params"]
    tx, schedule = create_optimizer(config)
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=train_rng,
                             learning_rate_fn=schedule)


def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One optimiser update on a batch {"c", "r", "l", "gt": (B, H, W, 3) float32 in [0, 1]}.

    Returns the new state and the metrics of this step: loss (the total), loss_deblur,
    loss_disparity / loss_reblur (when the model has them), grad_norm (before clipping) and
    learning_rate (the rate this update used).
    """
    # IFAN has no stochastic layer; the key is there for models that add one (dropout, ...).
    step_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        outputs = state.apply_fn({"params": params}, batch["c"], batch["r"], batch["l"],
                                 batch["gt"], train=True, rngs={"dropout": step_rng})
        terms = losses.ifan_losses(outputs, batch["gt"])
        return terms["total"], terms

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": terms["total"], "grad_norm": optax.global_norm(grads),
               "learning_rate": state.learning_rate_fn(state.step)}
    metrics.update({f"loss_{k}": v for k, v in terms.items() if k != "total"})
    return state.apply_gradients(grads=grads), metrics


# --------------------------------------------------------------------------------------------
# Devices


_DISTRIBUTED_INITIALIZED = False


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """`jax.distributed.initialize()` once, when config.distributed (several hosts)."""
    global _DISTRIBUTED_INITIALIZED
    if config.get("distributed", False) and not _DISTRIBUTED_INITIALIZED:
        jax.distributed.initialize()
        _DISTRIBUTED_INITIALIZED = True


def data_mesh() -> Mesh:
    """All devices of all hosts on one axis, "data"."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def check_config(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Raise ConfigError for settings that cannot train, before anything expensive starts."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    if config.batch_size <= 0 or config.batch_size % num_devices:
        raise ConfigError(f"config.batch_size={config.batch_size} must be a positive multiple of "
                          f"the number of devices ({num_devices}, over {jax.process_count()} "
                          f"host(s)); the global batch is split evenly over them")
    if config.crop_size % 8 or config.crop_size < 16:
        raise ConfigError(f"config.crop_size={config.crop_size} must be a multiple of 8, >= 16")
    for key in ("total_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                "image_summary_every_steps"):
        if int(config[key]) <= 0:
            raise ConfigError(f"config.{key}={config[key]} must be positive")


def compile_train_step(mesh: Mesh) -> Callable:
    """`train_step` jitted for `mesh`: state replicated, batch split on its first axis."""
    replicated = NamedSharding(mesh, P())
    donate = () if jax.default_backend() == "cpu" else (0,)  # CPU cannot donate buffers
    return jax.jit(train_step, in_shardings=(replicated, NamedSharding(mesh, P(DATA_AXIS))),
                   out_shardings=(replicated, replicated), donate_argnums=donate)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """This process's numpy batch -> global arrays split over the mesh's "data" axis."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local_batch[k]))
            for k in BATCH_KEYS}


# --------------------------------------------------------------------------------------------
# Checkpoints


def _train_state_item(state: TrainState) -> dict:
    return {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}


class Checkpoints:
    """The workdir's two orbax CheckpointManagers: checkpoints/ (latest few) and best/ (1, by PSNR).

    orbax writes each step into a temporary directory and renames it when complete, so a run
    killed while saving leaves the previous checkpoints intact (its temporary files are removed at
    the next start).
    """

    def __init__(self, workdir: str, keep: int):
        self.workdir = workdir
        self.latest = ckpt_lib.params_manager(workdir, ckpt_lib.CHECKPOINTS_DIR, max_to_keep=keep,
                                              cleanup_tmp_directories=True)
        self.best = ckpt_lib.params_manager(
            workdir, ckpt_lib.BEST_DIR, max_to_keep=1, best_fn=lambda m: m["psnr"],
            best_mode="max", keep_checkpoints_without_metrics=False, cleanup_tmp_directories=True)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, state: TrainState) -> None:
        step = int(jax.device_get(state.step))
        self.latest.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train_state=ocp.args.StandardSave(_train_state_item(state))), force=True)

    def save_best(self, state: TrainState, psnr: float) -> None:
        step = int(jax.device_get(state.step))
        self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(state.params)),
                       metrics={"psnr": float(psnr)}, force=True)

    def restore(self, state: TrainState, step: int) -> TrainState:
        """`state` (for structure, shapes and shardings) with the values saved at `step`."""
        abstract = functools.partial(jax.tree.map, ocp.utils.to_shape_dtype_struct)
        restored = self.latest.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract(state.params)),
            train_state=ocp.args.StandardRestore(abstract(_train_state_item(state)))))
        item = restored["train_state"]
        return state.replace(step=item["step"], params=restored["params"],
                             opt_state=item["opt_state"], rng=item["rng"])

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Write model_config.json, or check that an existing one is the model of `config`."""
    def normalised(cfg: dict) -> dict:
        return {k: str(v) for k, v in cfg.items()}

    wanted = normalised(config.model.to_dict())
    path = os.path.join(workdir, ckpt_lib.MODEL_CONFIG_FILE)
    if os.path.exists(path):
        existing = normalised(ckpt_lib.read_model_config(workdir))
        differ = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
        if differ:
            raise ConfigError(
                f"{workdir} holds a run of another model (config.model.{differ[0]}: "
                f"{existing.get(differ[0])!r} there, {wanted.get(differ[0])!r} now); use another "
                f"--workdir or the same model config")
    elif jax.process_index() == 0:
        ckpt_lib.write_model_config(workdir, config.model)


# --------------------------------------------------------------------------------------------
# Data and evaluation


def prepare_data(config: ml_collections.ConfigDict, workdir: str) -> str:
    """The data root. `{workdir}` in config.data_dir stands for the workdir. With
    config.synthetic.generate the synthetic DPDD is generated there unless already present
    (`ifan_jax.data.synth.generate` is atomic and keeps an identical earlier set)."""
    root = os.path.abspath(config.data_dir.format(workdir=workdir))
    if config.synthetic.generate:
        if jax.process_index() == 0:
            from ifan_jax.data import synth

            if not os.path.isdir(os.path.join(root, "DPDD")):
                logging.info("Generating the synthetic dual-pixel data set in %s", root)
            try:
                synth.generate(root, num=config.synthetic.num, size=config.synthetic.size,
                               seed=config.seed)
            except ValueError as e:
                raise ConfigError(f"config.synthetic: {e}") from None
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("ifan_jax synthetic data")
    return root


# --------------------------------------------------------------------------------------------
# The loop


class Preemption:
    """Whether to checkpoint and stop now: SIGTERM (the usual pre-emption notice) on one host;
    orbax/JAX's pre-emption sync point, which makes all hosts stop at the same step, on several."""

    def __init__(self, checkpoints: Checkpoints):
        self.checkpoints = checkpoints
        self.signalled = False
        self.installed = False
        self.previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
            self.installed = True

    def _handle(self, signum, frame):
        del signum, frame
        self.signalled = True

    def requested(self, step: int) -> bool:
        if jax.process_count() > 1:
            return self.checkpoints.latest.reached_preemption(step)
        return self.signalled

    def restore(self) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM,
                          signal.SIG_DFL if self.previous is None else self.previous)
            self.installed = False


def _first_non_finite(history: list[tuple[int, dict]]) -> tuple[int, str] | None:
    """(step, description) of the first step whose loss or gradient norm is NaN/inf."""
    for step, m in history:
        for key in ("loss", "grad_norm"):
            value = float(m[key])
            if not np.isfinite(value):
                return step, f"{key} = {value}"
    return None


def _mean_metrics(history: list[tuple[int, dict]]) -> dict[str, float]:
    keys = history[-1][1].keys()
    out = {k: float(np.mean([float(m[k]) for _, m in history])) for k in keys}
    out["learning_rate"] = float(history[-1][1]["learning_rate"])
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train (or resume training) in `workdir`; returns the final state.

    Every log_every_steps: the mean training losses of the interval, the learning rate and the
    gradient norm (TensorBoard and the log); every eval_every_steps and at the end: validation
    PSNR/SSIM/LPIPS, and the best checkpoint; every checkpoint_every_steps and at the end: a
    checkpoint; every image_summary_every_steps: input/output/sharp/disparity images. A NaN or
    infinite loss raises NonFiniteLossError naming the step; no checkpoint is written after it.
    SIGTERM (a pre-emption notice) checkpoints the current step and returns early.
    """
    from clu import metric_writers, periodic_actions  # here: the steps above need no clu/TensorBoard

    maybe_initialize_distributed(config)
    check_config(config)
    if _TF_ONEDNN_LATE:
        logging.warning("TensorFlow was imported before ifan_jax.train with its oneDNN kernels on: "
                        "the training batches may differ in the last bit between runs. Set "
                        "TF_ENABLE_ONEDNN_OPTS=0 for an exact resume.")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    prepare_workdir(config, workdir)
    is_chief = jax.process_index() == 0
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
    root = prepare_data(config, workdir)

    from ifan_jax import data as data_lib

    mesh = data_mesh()
    state = create_train_state(config)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    checkpoints = Checkpoints(workdir, config.keep_checkpoints)
    latest = checkpoints.latest_step()
    if latest is not None:
        state = checkpoints.restore(state, latest)
        logging.info("Resuming from %s/checkpoints/%d", workdir, latest)
    initial_step = int(jax.device_get(state.step))
    total = int(config.total_steps)
    if initial_step >= total:
        logging.info("%s is already trained to step %d (total_steps=%d)", workdir, initial_step, total)
        checkpoints.close()
        return state
    if initial_step == 0:
        writer.write_hparams({k: v for k, v in _flatten(config.to_dict()).items()})

    try:
        train_iter = data_lib.train_dataset(
            root, config.batch_size, crop=config.crop_size, seed=config.seed,
            start_step=initial_step, augment=config.augment, bit_depth=config.bit_depth,
            process_index=jax.process_index(), process_count=jax.process_count(),
            cache=config.get("cache_train_data", False))
    except data_lib.DataError:
        raise
    except ValueError as e:
        raise ConfigError(f"config: {e}") from None
    evaluator = Validator(config, root, state.apply_fn)
    p_train_step = compile_train_step(mesh)
    hooks = [periodic_actions.ReportProgress(num_train_steps=total, writer=writer,
                                             every_steps=config.log_every_steps)] if is_chief else []

    logging.info("Training %d steps from step %d on %d device(s), global batch %d, crop %d",
                 total - initial_step, initial_step, jax.device_count(), config.batch_size,
                 config.crop_size)
    preemption = Preemption(checkpoints)
    unchecked: list[tuple[int, dict]] = []  # device metrics not yet checked for NaN
    since_log: list[tuple[int, dict]] = []
    last_saved = latest
    eval_metrics = None
    start = time.time()
    for step in range(initial_step + 1, total + 1):  # `step` = updates done after this one
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            batch = global_batch(next(train_iter), mesh)
            state, metrics = p_train_step(state, batch)
        unchecked.append((step, metrics))
        for hook in hooks:
            hook(step)
        last = step == total
        stop = not last and preemption.requested(step)
        do_log = step % config.log_every_steps == 0 or last
        do_eval = step % config.eval_every_steps == 0 or last
        do_ckpt = step % config.checkpoint_every_steps == 0 or last or stop
        do_images = step % config.image_summary_every_steps == 0
        if not (do_log or do_eval or do_ckpt or do_images):
            continue

        fetched = jax.device_get(unchecked)
        unchecked = []
        since_log.extend(fetched)
        bad = _first_non_finite(fetched)
        if bad is not None:
            checkpoints.wait()
            checkpoints.close()
            writer.flush()
            kept = (f"the last good checkpoint is {workdir}/checkpoints/{last_saved}"
                    if last_saved is not None else "no checkpoint was written")
            preemption.restore()
            raise NonFiniteLossError(f"non-finite training loss at step {bad[0]} ({bad[1]}); "
                                     f"stopped, {kept}")
        if do_log:
            writer.write_scalars(step, {f"train_{k}" if k.startswith("loss") else k: v
                                        for k, v in _mean_metrics(since_log).items()})
            since_log = []
        if do_images and is_chief:
            writer.write_images(step, evaluator.summary_images(state.params))
        if do_eval:
            with _timed(hooks, "eval"):
                eval_metrics = evaluator(state.params)
            writer.write_scalars(step, {f"val_{k}": v for k, v in eval_metrics.items()})
        if do_ckpt:
            with _timed(hooks, "checkpoint"):
                checkpoints.save(state)
            last_saved = step
        if do_eval:
            checkpoints.save_best(state, eval_metrics["psnr"])
        writer.flush()
        if stop:
            logging.info("Stopped at step %d on a pre-emption notice, checkpoint saved; run again "
                         "with --workdir=%s to resume", step, workdir)
            break

    preemption.restore()
    checkpoints.wait()
    checkpoints.close()
    writer.flush()
    if eval_metrics is not None and is_chief and int(jax.device_get(state.step)) == total:
        minutes = (time.time() - start) / 60
        summary = (f"Validation after step {total} ({minutes:.1f} min): PSNR {eval_metrics['psnr']:.2f} "
                   f"dB (input {eval_metrics['input_psnr']:.2f} dB), SSIM {eval_metrics['ssim']:.4f}")
        if "lpips" in eval_metrics:
            summary += f", LPIPS {eval_metrics['lpips']:.4f}"
        logging.info("%s", summary)
        print(summary, flush=True)
    return state


def _timed(hooks, name: str):
    import contextlib

    return hooks[0].timed(name) if hooks else contextlib.nullcontext()


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
