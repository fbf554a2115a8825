"""The checkpoint format shared by training, conversion, evaluation and the deblur tool.

A checkpoint is a directory:

    CKPT/model_config.json          the `model` config (fields of `ifan_jax.models.IFAN`)
    CKPT/checkpoints/<step>/...     orbax CheckpointManager: item "params" (always), and in a
                                    training workdir also "train_state" (optimiser, RNG, step)
    CKPT/best/<step>/...            training only: the checkpoint with the best validation PSNR

A training workdir is such a directory; a converted official checkpoint is one with a single step
0 and no train state. `load_params(CKPT)` reads either.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import orbax.checkpoint as ocp

MODEL_CONFIG_FILE = "model_config.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written; the message names the path."""


def write_model_config(directory: str, model_config: dict) -> None:
    """Write `model_config.json` atomically."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, MODEL_CONFIG_FILE)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model_config.")
    with os.fdopen(fd, "w") as f:
        json.dump(_jsonable(model_config), f, indent=2, sort_keys=True)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the config is as readable as the checkpoint
    os.replace(tmp, path)


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


def _jsonable(cfg) -> dict:
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return {k: (str(v) if not isinstance(v, (int, float, bool, str, type(None), list)) else v)
            for k, v in cfg.items()}


def params_manager(directory: str, subdir: str = CHECKPOINTS_DIR, **options) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(directory, subdir)),
        options=ocp.CheckpointManagerOptions(create=True, **options))


def save_inference_checkpoint(path: str, params, model_config: dict, overwrite: bool = False) -> None:
    """Write params + model config as a one-step checkpoint; all or nothing.

    The directory is assembled under a temporary name beside `path` and renamed into place, so an
    interrupted conversion leaves no partial checkpoint. An existing `path` is an error unless
    `overwrite`.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise CheckpointError(f"{path} already exists (use --overwrite to replace it)")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp")
    try:
        write_model_config(tmp, model_config)
        with params_manager(tmp) as mngr:
            mngr.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
            mngr.wait_until_finished()
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_params(path: str, which: str = "latest", step: int | None = None):
    """Read (model_config dict, params) from a checkpoint directory.

    `which="latest"` takes the newest step of CKPT/checkpoints, `which="best"` the one in CKPT/best
    (training workdirs), `step` a given step.
    """
    if which not in ("latest", "best"):
        raise CheckpointError(f"which must be 'latest' or 'best', got {which!r}")
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint directory")
    model_config = read_model_config(path)
    subdir = BEST_DIR if which == "best" else CHECKPOINTS_DIR
    if not os.path.isdir(os.path.join(path, subdir)):
        raise CheckpointError(f"{path}: has no {subdir}/ folder")
    with ocp.CheckpointManager(os.path.abspath(os.path.join(path, subdir))) as mngr:
        steps = mngr.all_steps()
        if not steps:
            raise CheckpointError(f"{os.path.join(path, subdir)}: holds no saved step")
        if step is None:
            step = max(steps)
        elif step not in steps:
            raise CheckpointError(f"{path}: no step {step} (have {sorted(steps)})")
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
        except Exception as e:
            raise CheckpointError(f"{path}: step {step} could not be read ({type(e).__name__})"
                                  ) from None
    return model_config, restored["params"]
