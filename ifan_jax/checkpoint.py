"""The checkpoint format shared by training, conversion, evaluation and the deblur tool, and the
training workdir's checkpoint managers.

A checkpoint is a directory:

    CKPT/model_config.json          the `model` config (fields of `ifan_jax.models.IFAN`)
    CKPT/checkpoints/<step>/...     orbax CheckpointManager: item "params" (always), and in a
                                    training workdir also "train_state" (optimiser, RNG, step)
    CKPT/best/<step>/...            training only: the checkpoint with the best validation PSNR

A training workdir is such a directory; a converted official checkpoint is one with a single step
0 and no train state. `load_params(CKPT)` reads either, whatever the device count, host count and
platform that wrote it: the tree to restore is built from model_config.json
(`ifan_jax.models.abstract_params`) and read into host numpy arrays, so no mesh of the writer is
needed. Training resumes onto its own mesh (`Checkpoints.restore`), which may have another
number of devices than the one that saved.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from ifan_jax import fileio
from ifan_jax.errors import UserError, one_line
from ifan_jax.models import REBLUR_KEY, abstract_params

MODEL_CONFIG_FILE = "model_config.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"


class CheckpointError(UserError):
    """A checkpoint that cannot be read or written; the message names the path."""


# --------------------------------------------------------------------------------------------
# The model config


# Keys of model_config.json that describe how the model was trained, not its structure:
# "bit_depth" (8 or 16), the depth of the images it was trained on. Older checkpoints lack them.
METADATA_KEYS = ("bit_depth",)


def model_fields(model_config) -> dict:
    """The `IFAN` fields of a model config (model_config.json less its METADATA_KEYS)."""
    return {k: v for k, v in _jsonable(model_config).items() if k not in METADATA_KEYS}


def stored_model_config(config) -> dict:
    """model_config.json of a training run (`config` as configs/ifan.py makes it): the model's
    fields and the training images' bit depth (metadata: evaluation warns when the inputs' differs)."""
    return {**config.model.to_dict(), "bit_depth": int(config.bit_depth)}


def _jsonable(cfg) -> dict:
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return {k: (str(v) if not isinstance(v, (int, float, bool, str, type(None), list)) else v)
            for k, v in cfg.items()}


def write_model_config(directory: str, model_config, *, overwrite: bool = True) -> None:
    """Write `model_config.json` (sorted keys) atomically."""
    text = json.dumps(_jsonable(model_config), indent=2, sort_keys=True)
    fileio.atomic_write_text(os.path.join(directory, MODEL_CONFIG_FILE), text, overwrite=overwrite)


def read_model_config(directory: str) -> dict:
    path = os.path.join(directory, MODEL_CONFIG_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: not an ifan-jax checkpoint ({MODEL_CONFIG_FILE} "
                              f"missing)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def check_workdir(workdir: str, model_config) -> bool:
    """Whether `workdir` already holds a run; a run of another model is a CheckpointError naming
    the first differing key. Creates nothing."""
    path = os.path.join(workdir, MODEL_CONFIG_FILE)
    if not os.path.exists(path):
        return False
    existing = {k: str(v) for k, v in read_model_config(workdir).items()}
    wanted = {k: str(v) for k, v in _jsonable(model_config).items()}
    keys = set(existing) | set(wanted)
    # Training metadata a workdir written before it existed does not record is not a difference.
    keys -= {k for k in METADATA_KEYS if k not in existing or k not in wanted}
    differ = sorted(k for k in keys if existing.get(k) != wanted.get(k))
    if differ:
        raise CheckpointError(
            f"{workdir} holds a run of another model (config.model.{differ[0]}: "
            f"{existing.get(differ[0])!r} there, {wanted.get(differ[0])!r} now); use another "
            f"--workdir or the same model config")
    return True


def prepare_workdir(workdir: str, model_config) -> None:
    """Write model_config.json (process 0), or check that an existing one is this model's."""
    if not check_workdir(workdir, model_config) and jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        write_model_config(workdir, model_config, overwrite=False)


def forget_new_run(workdir: str) -> None:
    """Undo what `Checkpoints.open` wrote into an existing folder for a run that then failed to
    start: its model_config.json and the still empty checkpoints/ and best/ folders."""
    for name in (CHECKPOINTS_DIR, BEST_DIR):
        try:
            os.rmdir(os.path.join(workdir, name))
        except OSError:  # absent, or not empty: keep
            pass
    if not any(os.path.isdir(os.path.join(workdir, n)) for n in (CHECKPOINTS_DIR, BEST_DIR)):
        try:
            os.remove(os.path.join(workdir, MODEL_CONFIG_FILE))
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# Reading and writing parameters


def params_manager(directory: str, subdir: str = CHECKPOINTS_DIR, **options) -> ocp.CheckpointManager:
    """An orbax manager of DIRECTORY/SUBDIR. Its barriers between processes are named after
    `subdir`: the managers of checkpoints/ and best/ save the same step at the same time."""
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(directory, subdir)),
        options=ocp.CheckpointManagerOptions(
            create=True, multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=subdir), **options))


def save_inference_checkpoint(path: str, params, model_config: dict, overwrite: bool = False) -> None:
    """Write params + model config as a one-step checkpoint; all or nothing.

    The directory is assembled under a temporary name beside `path` and renamed into place, so an
    interrupted conversion leaves no partial checkpoint. An existing `path` is an error unless
    `overwrite`.
    """
    path = os.path.abspath(path)
    try:
        with fileio.atomic_directory(path, overwrite=overwrite) as tmp:
            write_model_config(tmp, model_config)
            with params_manager(tmp) as mngr:
                mngr.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
                mngr.wait_until_finished()
    except FileExistsError:
        raise CheckpointError(f"{path} already exists (use --overwrite to replace it)") from None


def _stored_keys(mngr: ocp.CheckpointManager, step: int) -> set[str] | None:
    """Top-level keys of the stored "params" item (None if orbax has no metadata for it)."""
    try:
        tree = mngr.item_metadata(step)["params"]
    except (KeyError, TypeError, ValueError):
        return None
    tree = getattr(tree, "tree", tree)
    return set(tree) if hasattr(tree, "keys") else None


def load_params(path: str, which: str = "latest", step: int | None = None):
    """Read (model_config dict, params) from a checkpoint directory; params are host numpy arrays.

    `which="latest"` takes the newest step of CKPT/checkpoints, `which="best"` the one in CKPT/best
    (training workdirs), `step` a given step. The tree read is `abstract_params(model_config)`
    (with the reblurring network when the checkpoint has one), so any device or host count may
    have written it; an unreadable step is a CheckpointError with orbax's reason on one line.
    """
    if which not in ("latest", "best"):
        raise CheckpointError(f"which must be 'latest' or 'best', got {which!r}")
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: not a checkpoint folder")
    model_config = read_model_config(path)
    subdir = BEST_DIR if which == "best" else CHECKPOINTS_DIR
    if not os.path.isdir(os.path.join(path, subdir)):
        raise CheckpointError(f"{path}: has no {subdir}/ folder")
    handlers = {name: ocp.PyTreeCheckpointHandler() for name in ("params", "train_state")}
    with ocp.CheckpointManager(os.path.abspath(os.path.join(path, subdir)),
                               item_handlers=handlers) as mngr:
        steps = mngr.all_steps()
        if not steps:
            raise CheckpointError(f"{os.path.join(path, subdir)}: holds no saved step")
        if step is None:
            step = max(steps)
        elif step not in steps:
            raise CheckpointError(f"{path}: no step {step} (have {sorted(steps)})")
        stored = _stored_keys(mngr, step)
        try:
            shapes = abstract_params(model_fields(model_config),
                                     with_reblur=stored is None or REBLUR_KEY in stored)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{os.path.join(path, MODEL_CONFIG_FILE)}: not a model "
                                  f"config ({one_line(e)})") from None
        to_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), shapes)
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(
                params=ocp.args.PyTreeRestore(item=shapes, restore_args=to_numpy)))
        except Exception as e:  # orbax/tensorstore raise many types; the message says why
            raise CheckpointError(f"{path}: step {step} could not be read ({one_line(e)})"
                                  ) from None
    params = restored["params"]
    for (key, want), got in zip(jax.tree_util.tree_leaves_with_path(shapes),
                                jax.tree.leaves(params), strict=True):
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(
                f"{path}: parameter {jax.tree_util.keystr(key)} is {tuple(got.shape)} in step "
                f"{step}, but {MODEL_CONFIG_FILE} makes it {tuple(want.shape)}")
    return model_config, params


# --------------------------------------------------------------------------------------------
# A training workdir


def latest_step(workdir: str) -> int | None:
    """The newest complete step in WORKDIR/checkpoints (None if none); creates nothing."""
    directory = os.path.join(workdir, CHECKPOINTS_DIR)
    if not os.path.isdir(directory):
        return None
    with ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(
            read_only=True, create=False)) as mngr:
        return mngr.latest_step()


def _train_state_item(state) -> dict:
    return {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}


class Checkpoints:
    """The workdir's two orbax CheckpointManagers: checkpoints/ (latest few) and best/ (1, by PSNR).

    orbax writes each step into a temporary directory and renames it when complete, so a run
    killed while saving leaves the previous checkpoints intact (its temporary files are removed at
    the next start). With several processes every process calls `save`; orbax writes each array
    once (the replicated parameters from process 0) and process 0 commits the step.
    """

    def __init__(self, workdir: str, keep: int, latest_step: int | None = None):
        self.workdir = workdir
        self.latest_step = latest_step  # the step a run resumes from (None: a new run)
        self.latest = params_manager(workdir, CHECKPOINTS_DIR, max_to_keep=keep,
                                     cleanup_tmp_directories=True)
        self.best = params_manager(
            workdir, BEST_DIR, max_to_keep=1, best_fn=lambda m: m["psnr"],
            best_mode="max", keep_checkpoints_without_metrics=False, cleanup_tmp_directories=True)

    @classmethod
    def open(cls, workdir: str, model_config: dict, keep: int) -> Checkpoints:
        """The workdir of a run training `model_config`, in one call: a workdir holding a run of
        another model is a CheckpointError (`check_workdir`); the step to resume from is read
        (`latest_step`, None for a new run); a new run's model_config.json is written (process
        0) and the managers are opened."""
        check_workdir(workdir, model_config)
        step = latest_step(workdir)
        prepare_workdir(workdir, model_config)
        return cls(workdir, keep, step)

    def save(self, state) -> None:
        step = int(jax.device_get(state.step))
        self.latest.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train_state=ocp.args.StandardSave(_train_state_item(state))), force=True)

    def save_best(self, state, metrics: dict) -> None:
        """Keep `state`'s parameters in best/ if metrics["psnr"] is the best so far; the validation
        metrics are recorded beside them (best/<step>/metrics/metrics)."""
        step = int(jax.device_get(state.step))
        self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(state.params)),
                       metrics={k: float(v) for k, v in metrics.items()}, force=True)

    def restore(self, state, step: int):
        """`state` with the values saved at `step`, placed as `state`'s arrays are (its mesh and
        shardings), whatever the device count of the run that saved them."""
        def abstract(tree):
            return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)

        try:
            restored = self.latest.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract(state.params)),
                train_state=ocp.args.StandardRestore(abstract(_train_state_item(state)))))
        except Exception as e:  # orbax/tensorstore raise many types; the message says why
            raise CheckpointError(f"{self.workdir}/{CHECKPOINTS_DIR}/{step} could not be "
                                  f"restored ({one_line(e)})") from None
        item = restored["train_state"]
        return state.replace(step=item["step"], params=restored["params"],
                             opt_state=item["opt_state"], rng=item["rng"])

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()
