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

Integrity. Every file written carries its SHA-256, checked before it is read: CKPT/SHA256SUMS
lists model_config.json, and each step's <step>/SHA256SUMS every file of that step but orbax's
_CHECKPOINT_METADATA (timestamps, which orbax rewrites as it commits the step). The step's list is
written into orbax's temporary folder before orbax renames it into place, so a step is committed
with its checksums or not at all. The lists have the format of `sha256sum` (`cd CKPT/checkpoints/0
&& sha256sum -c SHA256SUMS` checks one by hand). A file that differs from its checksum, or is
missing, is a CheckpointError naming it. Checkpoints written before checksums existed have no
lists and are read as before, without a word. A training run whose newest step is damaged moves
it aside (`<step>.damaged`), says so and resumes from the newest intact step (`Checkpoints.open`).

What a checkpoint says about itself is checked before anything is built or read:
model_config.json against the ranges of a real IFAN (`model_config_problem`; at most
`MAX_PARAMETERS` parameters), the stored arrays' shapes against those the config makes, and the
parameters read for being finite.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from ifan_jax import fileio
from ifan_jax.errors import UserError, one_line
from ifan_jax.models import IFAN, REBLUR_KEY, abstract_params, count_params

MODEL_CONFIG_FILE = "model_config.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"


class CheckpointError(UserError):
    """A checkpoint that cannot be read or written; the message names the path."""


class DamagedFileError(CheckpointError):
    """A file of a checkpoint that differs from its recorded checksum, or is missing: `path`,
    and `reason`, what is wrong with it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


# --------------------------------------------------------------------------------------------
# The model config


# Keys of model_config.json that describe how the model was trained, not its structure:
# "bit_depth" (8 or 16), the depth of the images it was trained on. Older checkpoints lack them.
METADATA_KEYS = ("bit_depth",)


def model_fields(model_config) -> dict:
    """The `IFAN` fields of a model config (model_config.json less its METADATA_KEYS)."""
    return {k: v for k, v in _jsonable(model_config).items() if k not in METADATA_KEYS}


# What a real IFAN has, per key of model_config.json. The official models: ch 32, k 3, 2 units per
# residual block, N 8..44, IAC (FAC k 11 in the paper's Table 5), 8 or 16 bit. The ranges allow
# every config of configs/ and widths, depths and filters beyond them; "odd" sizes keep the
# convolutions' (k - 1) // 2 padding symmetric.
_INTEGERS = {  # key: (smallest, largest, odd only)
    "channels": (1, 128, False), "kernel_size": (1, 7, True), "res_units": (1, 8, False),
    "num_iterations": (1, 64, False), "filter_size": (1, 7, True),
    "reblur_iterations": (1, 64, False), "reblur_filter_size": (1, 7, True),
    "fac_kernel_size": (1, 15, True),
}
_BOOLEANS = ("use_filter_prediction", "use_disparity", "use_reblur", "dual_pixel_input", "remat")
_CHOICES = {
    "iac_variant": ("separable", "official"), "adaptive_conv": ("iac", "fac"),
    "dtype": ("float32", "bfloat16", "float16"),
    "precision": (None, "default", "high", "highest", "DEFAULT", "HIGH", "HIGHEST"),
    "bit_depth": (8, 16),
}
# Four times the largest official IFAN (IFAN_44 with the dual-pixel filter encoder and the
# reblurring network, 61,261,248; the limit of `weights.torch_pickle` is derived from the same
# count): room for a ch=64, N=44 IFAN with its reblurring network (242.8M), and a bound on what a
# model_config.json can make this process allocate (0.9 GiB of float32).
LARGEST_OFFICIAL_PARAMETERS = 61_261_248
MAX_PARAMETERS = 4 * LARGEST_OFFICIAL_PARAMETERS


def model_shapes(model_config, with_reblur: bool = True) -> dict:
    """`models.abstract_params` of a model config's `model_fields`, traced once per config (the
    check of model_config.json and the read of the parameters share it)."""
    shapes = _model_shapes(json.dumps(model_fields(model_config), sort_keys=True))
    return shapes if with_reblur else {k: v for k, v in shapes.items() if k != REBLUR_KEY}


@functools.lru_cache(maxsize=8)
def _model_shapes(fields: str) -> dict:
    return abstract_params(json.loads(fields))


def model_config_problem(model_config) -> str | None:
    """What is wrong with a model config (model_config.json, or a training config's `model`), as
    `KEY=VALUE: must be ...`; None if every key is one of `IFAN`'s (or METADATA_KEYS) with a value
    a real IFAN has (integers in their ranges, booleans that are booleans, known names) and the
    model has at most MAX_PARAMETERS parameters (its reblurring network included). Builds
    nothing bigger than that."""
    if not isinstance(model_config, dict):
        return f"{type(model_config).__name__}: must be a JSON object of the model's keys"
    known = {f for f in IFAN.__dataclass_fields__ if f not in ("parent", "name")}
    for key, value in model_config.items():
        if key not in known | set(METADATA_KEYS):
            return f"{str(key)[:40]}: not a key of an IFAN model config"
        if key in _INTEGERS:
            low, high, odd = _INTEGERS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high \
                    or (odd and value % 2 == 0):
                return (f"{key}={str(value)[:40]}: must be an {'odd ' if odd else ''}integer from "
                        f"{low} to {high}")
        elif key in _BOOLEANS and not isinstance(value, bool):
            return f"{key}={str(value)[:40]}: must be true or false"
        elif key in _CHOICES and not any(value == c and type(value) is type(c)
                                         for c in _CHOICES[key]):
            names = ", ".join("null" if c is None else repr(c) for c in _CHOICES[key])
            return f"{key}={str(value)[:40]}: must be one of {names}"
    try:
        count = count_params(model_shapes(model_config), include_reblur=True)
    except (TypeError, ValueError) as e:
        return f"not a model config ({one_line(e)})"
    if count > MAX_PARAMETERS:
        return (f"makes an IFAN of {count:,} parameters, more than the {MAX_PARAMETERS:,} "
                f"allowed (four times the largest official model)")
    return None


def stored_model_config(config) -> dict:
    """model_config.json of a training run (`config` as configs/ifan.py makes it): the model's
    fields and the training images' bit depth (metadata: evaluation warns when the inputs' differs)."""
    return {**config.model.to_dict(), "bit_depth": int(config.bit_depth)}


def _jsonable(cfg) -> dict:
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return {k: (str(v) if not isinstance(v, (int, float, bool, str, type(None), list)) else v)
            for k, v in cfg.items()}


def write_model_config(directory: str, model_config, *, overwrite: bool = True) -> None:
    """Write `model_config.json` (sorted keys) atomically, then DIRECTORY/SHA256SUMS with its
    checksum."""
    text = json.dumps(_jsonable(model_config), indent=2, sort_keys=True)
    fileio.atomic_write_text(os.path.join(directory, MODEL_CONFIG_FILE), text, overwrite=overwrite)
    write_checksums(directory, [MODEL_CONFIG_FILE])


MAX_MODEL_CONFIG_BYTES = 64 << 10  # a real one has about 500 bytes


def read_model_config(directory: str) -> dict:
    """DIRECTORY/model_config.json, checked: against its checksum (where one was recorded), as
    JSON, and against the ranges of a real IFAN (`model_config_problem`). A CheckpointError names
    the file and what is wrong."""
    path = os.path.join(directory, MODEL_CONFIG_FILE)
    try:
        if os.path.getsize(path) > MAX_MODEL_CONFIG_BYTES:
            raise CheckpointError(f"{path}: {os.path.getsize(path):,} bytes, not a model config "
                                  f"(at most {MAX_MODEL_CONFIG_BYTES:,})")
        verify_checksums(directory)
        with open(path, "rb") as f:
            config = json.loads(f.read(MAX_MODEL_CONFIG_BYTES + 1))
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: not an ifan-jax checkpoint ({MODEL_CONFIG_FILE} "
                              f"missing)") from None
    except (ValueError, RecursionError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not valid JSON ({one_line(e, with_type=False)})") from None
    problem = model_config_problem(config)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    return config


# --------------------------------------------------------------------------------------------
# Checksums


CHECKSUMS_FILE = "SHA256SUMS"
# Written by orbax as it commits a step, after the step's checksums: not listed.
UNLISTED = (CHECKSUMS_FILE, "_CHECKPOINT_METADATA")
MAX_CHECKSUMS_BYTES = 1 << 20


def file_digest(path: str) -> str:
    """SHA-256 of a file's content, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(directory: str, names: list[str] | None = None) -> None:
    """Write DIRECTORY/SHA256SUMS (atomically): `HEX  RELATIVE/PATH` lines (`sha256sum`'s format),
    for `names` or, by default, every file under DIRECTORY but those named UNLISTED."""
    if names is None:
        names = []
        for root, dirs, files in os.walk(directory):
            dirs.sort()
            rel = os.path.relpath(root, directory)
            names += [os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/")
                      for f in sorted(files) if not (root == directory and f in UNLISTED)]
    lines = [f"{file_digest(os.path.join(directory, n))}  {n}\n" for n in names]
    fileio.atomic_write_text(os.path.join(directory, CHECKSUMS_FILE), "".join(lines),
                             overwrite=True)


def verify_checksums(directory: str) -> bool:
    """Check every file DIRECTORY/SHA256SUMS lists against its SHA-256; False if there is no list
    (a checkpoint written before checksums existed). A damaged or missing file, or a damaged list,
    is a CheckpointError naming it."""
    sums = os.path.join(directory, CHECKSUMS_FILE)
    try:
        if os.path.getsize(sums) > MAX_CHECKSUMS_BYTES:
            raise DamagedFileError(sums, "damaged (larger than any checksum list)")
        with open(sums, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return False
    for number, line in enumerate(text.split(b"\n")[:-1], 1):
        digest, _, name = line.partition(b"  ")
        try:
            name = name.decode("utf-8")
            parts = name.split("/")
            if len(digest) != 64 or int(digest, 16) < 0 or name.startswith("/") or ".." in parts \
                    or not name:
                raise ValueError
        except ValueError:
            raise DamagedFileError(sums, f"damaged (line {number} is not 'SHA-256  file')"
                                   ) from None
        path = os.path.join(directory, *parts)
        try:
            if file_digest(path) != digest.decode("ascii"):
                raise DamagedFileError(path, "damaged (its SHA-256 differs from the one recorded "
                                             "when it was written)")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise DamagedFileError(path, f"missing (listed in {CHECKSUMS_FILE})") from None
    if not text.endswith(b"\n") and text:
        raise DamagedFileError(sums, "damaged (its last line is cut)")
    return True


def check_finite(named_arrays, where: str, error: type[UserError] = CheckpointError) -> None:
    """An `error` (CheckpointError) naming the first (name, array) pair with a NaN or an
    infinity, as `WHERE: parameter NAME holds NaN`; the weights of a real model are finite."""
    for name, array in named_arrays:
        array = np.asarray(array)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            what = "NaN" if np.isnan(array).any() else "an infinity"
            raise error(f"{where}: parameter {name} holds {what}; the weights of a trained "
                        f"model are finite")


def check_workdir(workdir: str, model_config) -> bool:
    """Whether `workdir` already holds a run; a run of another model is a CheckpointError naming
    the first differing key. Creates nothing."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise CheckpointError(f"{workdir}: is a file, not a folder; --workdir takes a folder (a "
                              f"new one, or one holding a run to resume)")
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
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as e:  # a file on the way, no permission, a full disk
            raise CheckpointError(f"{workdir}: cannot be created ({e.strerror or e})") from None
        try:
            write_model_config(workdir, model_config, overwrite=False)
        except OSError as e:
            why = "the disk is full" if disk_full(e) else (e.strerror or str(e))
            raise CheckpointError(f"{os.path.join(workdir, MODEL_CONFIG_FILE)}: cannot be "
                                  f"written ({why})") from None


def forget_new_run(workdir: str) -> None:
    """Undo what `Checkpoints.open` wrote into an existing folder for a run that then failed to
    start: its model_config.json, its SHA256SUMS and the still empty checkpoints/ and best/
    folders."""
    for name in (CHECKPOINTS_DIR, BEST_DIR):
        try:
            os.rmdir(os.path.join(workdir, name))
        except OSError:  # absent, or not empty: keep
            pass
    if not any(os.path.isdir(os.path.join(workdir, n)) for n in (CHECKPOINTS_DIR, BEST_DIR)):
        for name in (MODEL_CONFIG_FILE, CHECKSUMS_FILE):
            try:
                os.remove(os.path.join(workdir, name))
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# Reading and writing parameters


class _Manager(ocp.CheckpointManager):
    """An orbax CheckpointManager whose steps are committed with their SHA256SUMS: orbax calls
    `_write_step_checksums` (its post-finalization callback, on the primary process, once every
    process has written) in the step's temporary folder, before renaming it into place."""

    def __init__(self, directory: str, options: ocp.CheckpointManagerOptions):
        self._saving: int | None = None
        options.async_options = ocp.AsyncOptions(
            post_finalization_callback=self._write_step_checksums)
        super().__init__(directory, options=options)
        # orbax removes a killed run's temporary folders in a thread it waits for only at the
        # first save; a run that fails to start and removes its workdir would race it.
        await_cleanup = getattr(self, "_maybe_await_cleanup_tmp_directory", None)
        if await_cleanup is not None:
            await_cleanup()

    def save(self, step: int, *args, **kwargs) -> bool:
        self.wait_until_finished()  # the previous step's callback has run
        self._saving = int(step)
        return super().save(step, *args, **kwargs)

    def _write_step_checksums(self) -> None:
        directory = os.fspath(self.directory)
        tmp = os.path.join(directory, f"{self._saving}{ORBAX_TMP_SUFFIX}")
        if not os.path.isdir(tmp):  # orbax names its temporary folders otherwise: stop loudly
            raise CheckpointError(f"{directory}: the temporary folder of step {self._saving} is "
                                  f"not {tmp}; its checksums cannot be written")
        write_checksums(tmp)


ORBAX_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's temporary name of a step being written


def params_manager(directory: str, subdir: str = CHECKPOINTS_DIR, **options) -> ocp.CheckpointManager:
    """An orbax manager of DIRECTORY/SUBDIR whose steps carry their checksums (SHA256SUMS). Its
    barriers between processes are named after `subdir`: the managers of checkpoints/ and best/
    save the same step at the same time."""
    return _Manager(
        os.path.abspath(os.path.join(directory, subdir)),
        ocp.CheckpointManagerOptions(
            create=True, multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=subdir), **options))


def save_inference_checkpoint(path: str, params, model_config: dict, overwrite: bool = False) -> None:
    """Write params + model config as a one-step checkpoint, with the checksums of its files; all
    or nothing.

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


def _stored_shapes(mngr: ocp.CheckpointManager, step: int) -> dict[str, tuple] | None:
    """The stored "params" item's shapes by parameter (`jax.tree_util.keystr` of its path), from
    orbax's metadata; None if orbax has none for it."""
    try:
        tree = mngr.item_metadata(step)["params"]
        tree = getattr(tree, "tree", tree)
        leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
        return {jax.tree_util.keystr(key): tuple(leaf.shape) for key, leaf in leaves}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _parameter_name(key) -> str:
    """A parameter's path as `feature_extractor/conv1_1/kernel`."""
    return "/".join(str(getattr(k, "key", k)) for k in key)


def load_params(path: str, which: str = "latest", step: int | None = None):
    """Read (model_config dict, params) from a checkpoint directory; params are host numpy arrays.

    `which="latest"` takes the newest step of CKPT/checkpoints, `which="best"` the one in CKPT/best
    (training workdirs), `step` a given step. Before anything is read: model_config.json and the
    step's files against their checksums (where recorded; `verify_checksums`), the config against
    the ranges of a real IFAN (`read_model_config`), and the stored arrays' shapes (orbax's
    metadata) against those it makes. The tree read is `abstract_params(model_config)` (with the
    reblurring network when the checkpoint has one), so any device or host count may have written
    it; every parameter read must be finite. Any failure is a CheckpointError on one line naming
    the file, the key or the parameter (an unreadable step: with orbax's reason).
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
        verify_checksums(os.path.join(path, subdir, str(step)))
        stored = _stored_shapes(mngr, step)
        with_reblur = stored is None or any(k.startswith(f"['{REBLUR_KEY}']") for k in stored)
        try:
            shapes = model_shapes(model_config, with_reblur=with_reblur)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{os.path.join(path, MODEL_CONFIG_FILE)}: not a model "
                                  f"config ({one_line(e)})") from None
        expected = {jax.tree_util.keystr(key): tuple(leaf.shape)
                    for key, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
        for name, shape in (stored or {}).items():  # nothing of another size is read
            if name not in expected:
                raise CheckpointError(f"{path}: step {step} holds a parameter {name} that "
                                      f"{MODEL_CONFIG_FILE} does not make")
            if shape != expected[name]:
                raise CheckpointError(f"{path}: parameter {name} is {shape} in step {step}, but "
                                      f"{MODEL_CONFIG_FILE} makes it {expected[name]}")
        to_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), shapes)
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(
                params=ocp.args.PyTreeRestore(item=shapes, restore_args=to_numpy)))
        except Exception as e:  # orbax/tensorstore raise many types; the message says why
            raise CheckpointError(f"{path}: step {step} could not be read ({one_line(e)})"
                                  ) from None
    params = restored["params"]
    leaves = jax.tree_util.tree_leaves_with_path(params)
    for (key, got), want in zip(leaves, jax.tree.leaves(shapes), strict=True):
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(
                f"{path}: parameter {jax.tree_util.keystr(key)} is {tuple(got.shape)} in step "
                f"{step}, but {MODEL_CONFIG_FILE} makes it {tuple(want.shape)}")
    check_finite(((_parameter_name(key), leaf) for key, leaf in leaves),
                 os.path.join(path, subdir, str(step)))
    return model_config, params


# --------------------------------------------------------------------------------------------
# A training workdir


def saved_steps(directory: str) -> list[int]:
    """The complete steps of an orbax manager's DIRECTORY, newest first; creates nothing."""
    if not os.path.isdir(directory):
        return []
    # (Not read_only=True: orbax warns on the console about every read-only manager.)
    with ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(
            create=False)) as mngr:
        return sorted(mngr.all_steps(), reverse=True)


def latest_step(workdir: str) -> int | None:
    """The newest complete step in WORKDIR/checkpoints (None if none); creates nothing."""
    steps = saved_steps(os.path.join(workdir, CHECKPOINTS_DIR))
    return steps[0] if steps else None


DAMAGED_SUFFIX = ".damaged"  # a step set aside; orbax does not take it for a step


def set_aside_damaged(workdir: str, report: Callable[[str], None],
                      sync: Callable[[str], None] = lambda name: None) -> int | None:
    """The newest intact step of WORKDIR/checkpoints (None if it holds none), after moving the
    newer, damaged ones aside (`<step>.damaged`, beside them: nothing is deleted) and those of
    best/ that are damaged; `report(line)` hears one line per step moved.

    A step is damaged when a file differs from its checksum (`verify_checksums`; steps written
    before checksums existed count as intact). Every process checks, then process 0 moves the
    damaged steps (`sync(name)`: a barrier of all processes). If every step of checkpoints/ is
    damaged, nothing is moved and a CheckpointError says so: training would start again from
    step 0 without them.
    """
    damaged, resume = [], None
    for step in saved_steps(os.path.join(workdir, CHECKPOINTS_DIR)):
        folder = os.path.join(workdir, CHECKPOINTS_DIR, str(step))
        try:
            verify_checksums(folder)
        except DamagedFileError as e:
            damaged.append((folder, e))
            continue
        resume = step
        break
    if damaged and resume is None:
        raise CheckpointError(f"{os.path.join(workdir, CHECKPOINTS_DIR)}: every saved step is "
                              f"damaged (the oldest: {damaged[-1][1]}); move the folder away to "
                              f"train from the start")
    for step in saved_steps(os.path.join(workdir, BEST_DIR)):
        folder = os.path.join(workdir, BEST_DIR, str(step))
        try:
            verify_checksums(folder)
        except DamagedFileError as e:
            damaged.append((folder, e))
    sync("ifan_jax checkpoints verified")
    if jax.process_index() == 0:
        for folder, reason in damaged:
            aside = folder + DAMAGED_SUFFIX
            n = 1
            while os.path.exists(aside):
                n += 1
                aside = f"{folder}{DAMAGED_SUFFIX}-{n}"
            os.replace(folder, aside)
            then = (f"resuming from step {resume}" if folder.startswith(
                os.path.join(workdir, CHECKPOINTS_DIR, "")) else "the best parameters start over")
            report(f"{folder}: {os.path.relpath(reason.path, folder)} is {reason.reason}; "
                   f"moved to {os.path.basename(aside)}, {then}")
    sync("ifan_jax damaged checkpoints set aside")
    return resume


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
        self.step = latest_step or 0  # the training step of the newest save asked for
        self.failure: CheckpointError | None = None  # a failed save, once said
        with self._writing():
            self.latest = params_manager(workdir, CHECKPOINTS_DIR, max_to_keep=keep,
                                         cleanup_tmp_directories=True)
            self.best = params_manager(
                workdir, BEST_DIR, max_to_keep=1, best_fn=lambda m: m["psnr"], best_mode="max",
                keep_checkpoints_without_metrics=False, cleanup_tmp_directories=True)
        # orbax logs a failed save's traceback at ERROR from its threads before raising it here;
        # the failure is said in one line (`_writing`), so those logs need --verbosity=1.
        self._quiet = _QuietOrbaxErrors()
        logging.getLogger("absl").addFilter(self._quiet)

    @classmethod
    def open(cls, workdir: str, model_config: dict, keep: int,
             report: Callable[[str], None] = print,
             sync: Callable[[str], None] = lambda name: None) -> Checkpoints:
        """The workdir of a run training `model_config`, in one call: a workdir holding a run of
        another model, or a file, is a CheckpointError (`check_workdir`); the step to resume from
        is the newest intact one (`set_aside_damaged`: damaged newer steps are moved aside and
        `report(line)` says so; None for a new run); a new run's model_config.json is written
        (process 0) and the managers are opened. `sync(name)`: a barrier of all processes."""
        check_workdir(workdir, model_config)
        step = set_aside_damaged(workdir, report, sync)
        prepare_workdir(workdir, model_config)
        return cls(workdir, keep, step)

    def save(self, state) -> None:
        """Start writing `state` as step state.step (asynchronously: the files are written while
        training goes on; a failure shows at the next save, `wait` or `close`)."""
        self.step = int(jax.device_get(state.step))
        with self._writing():
            self.latest.save(self.step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(state.params),
                train_state=ocp.args.StandardSave(_train_state_item(state))), force=True)

    def save_best(self, state, metrics: dict) -> None:
        """Keep `state`'s parameters in best/ if metrics["psnr"] is the best so far; the validation
        metrics are recorded beside them (best/<step>/metrics/metrics). A step best/ already holds
        (a run resumed from before it, its newer steps having been damaged) is kept as it is."""
        self.step = int(jax.device_get(state.step))
        if self.step in self.best.all_steps():
            return
        with self._writing():
            self.best.save(self.step,
                           args=ocp.args.Composite(params=ocp.args.StandardSave(state.params)),
                           metrics={k: float(v) for k, v in metrics.items()}, force=True)

    @contextlib.contextmanager
    def _writing(self):
        """Turn a failed write into one CheckpointError: the disk is full (or the quota
        reached), or orbax's reason; training stopped at `self.step`, and the newest step on disk
        is the last good checkpoint. The failed step's temporary folders are removed (the space
        they hold is what the disk lacks). Said once: later failures of the same write pass."""
        if self.failure is not None:
            raise self.failure
        try:
            yield
        except Exception as e:  # orbax, tensorstore and the file system raise many types
            directory = os.path.join(self.workdir, CHECKPOINTS_DIR)
            partial = []  # the steps being written
            for sub in (CHECKPOINTS_DIR, BEST_DIR):
                folder = os.path.join(self.workdir, sub)
                for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
                    if ORBAX_TMP_SUFFIX in name:
                        partial.append(name.split(".")[0])
                        if jax.process_index() == 0:
                            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            try:
                steps = saved_steps(directory)
            except Exception:  # noqa: BLE001  (the message stands without it)
                steps = []
            kept = (f"the last good checkpoint is {directory}/{steps[0]}" if steps
                    else "no checkpoint was written")
            saving = f" while saving step {partial[0]}" if partial else ""
            why = (f"the disk is full{saving}" if disk_full(e) else
                   f"a checkpoint could not be written{saving} ({one_line(e, limit=200)})")
            self.failure = CheckpointError(f"{self.workdir}: {why}; training stopped at step "
                                           f"{self.step}, {kept}")
            raise self.failure from None

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
        # Replicated: each process's first shard is the whole parameter.
        check_finite(((_parameter_name(key), np.asarray(leaf.addressable_data(0)))
                      for key, leaf in jax.tree_util.tree_leaves_with_path(restored["params"])),
                     f"{self.workdir}/{CHECKPOINTS_DIR}/{step}")
        item = restored["train_state"]
        return state.replace(step=item["step"], params=restored["params"],
                             opt_state=item["opt_state"], rng=item["rng"])

    def wait(self) -> None:
        """Wait for the files of every save to be written (a failed one: CheckpointError)."""
        if self.failure is None:
            with self._writing():
                self.latest.wait_until_finished()
                self.best.wait_until_finished()

    def close(self) -> None:
        """Finish the saves and release both managers; a failed save not yet said is raised as
        one CheckpointError."""
        first = None
        for manager in (self.latest, self.best):
            try:
                manager.close()
            except Exception as e:  # noqa: BLE001  (orbax re-raises a failed save here)
                first = first or e
        logging.getLogger("absl").removeFilter(self._quiet)
        if first is not None and self.failure is None:
            with self._writing():
                raise first


class _QuietOrbaxErrors(logging.Filter):
    """Drops orbax's ERROR records (a failed save's tracebacks) unless absl logs INFO
    (--verbosity=1 and up): the failure itself is raised as one CheckpointError."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "orbax" not in record.pathname or record.levelno < logging.ERROR:
            return True
        return logging.getLogger("absl").getEffectiveLevel() <= logging.INFO


def disk_full(error: BaseException) -> bool:
    """Whether `error` (or one it was raised from) says the disk is full or the quota is reached:
    an OSError with errno ENOSPC or EDQUOT, or tensorstore's message of one
    ("No space left on device [os_error_code='28']")."""
    codes = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in codes:
            return True
        if any(f"os_error_code='{code}'" in str(error) for code in codes):
            return True
        error = error.__cause__ or error.__context__
    return False
