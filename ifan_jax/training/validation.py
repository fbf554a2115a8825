"""Validation during training: PSNR, SSIM and LPIPS of the model on the validation split (a thin
front-end of the evaluation core, `ifan_jax.evaluation.scorer`), and the images TensorBoard shows (input,
output, sharp, disparity).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ifan_jax import data as data_lib
from ifan_jax.errors import UserError
from ifan_jax.evaluation import scorer
from ifan_jax.inference import Forward, tiling

BATCH_KEYS = ("c", "r", "l", "gt")  # blurred input, right view, left view, sharp target


class ValidationError(UserError):
    """A validation split that cannot be scored; the message names it."""


def summary_step(apply_fn: Callable, params, batch: dict) -> dict:
    """Images for TensorBoard from a training-mode forward pass on a batch with all four views:
    output (clipped), and the disparity map (B, H/8, W/8, 1) when the model predicts one."""
    out = apply_fn({"params": params}, batch["c"], batch["r"], batch["l"], batch["gt"], train=True)
    images = {"output": jnp.clip(out["result"], 0.0, 1.0)}
    if "disparity" in out:
        images["disparity"] = out["disparity"]
    return images


def local_copy(tree):
    """A replicated global pytree -> the same values on this process's first device."""
    return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


class Validator:
    """PSNR, SSIM and LPIPS of the model on the validation split (input PSNR for comparison).

    The images are split over hosts (image i goes to host i mod #hosts); each host runs its share
    on its first device, and the sums are combined, so every image counts once. Images may differ
    in size (one compilation per size).
    """

    def __init__(self, config: ml_collections.ConfigDict, root: str, apply_fn: Callable):
        self.config = config
        self.root = root
        self.load = functools.partial(data_lib.load_split, root, config.dataset, "val",
                                      bit_depth=config.bit_depth)
        names = ("psnr", "ssim") + (("lpips",) if config.get("eval_lpips", True) else ())
        # The forward pass inference and evaluation run, with the training parameters.
        self.scorer = scorer.Scorer(Forward(apply_fn), dual=bool(config.model.dual_pixel_input),
                                    metrics=names, input_metrics=("psnr",))
        self.keys = (*names, scorer.INPUT_PREFIX + "psnr")
        self.summary = jax.jit(functools.partial(summary_step, apply_fn))
        self._summary_batch = None

    def examples(self) -> Iterator[dict]:
        """This host's share of the validation examples (numpy dicts of `load_split`)."""
        limit = self.config.num_eval_images
        for i, ex in enumerate(data_lib.numpy_iterator(self.load())):
            if 0 <= limit <= i:
                break
            if i % jax.process_count() == jax.process_index():
                yield ex

    def __call__(self, params) -> dict[str, float]:
        """{"psnr", "ssim", "input_psnr", ["lpips"]}: means over the whole split, all hosts, and
        "num_images": how many images they average (each image of the split counted once)."""
        scored = self.scorer(local_copy(params), self.examples())
        sums = scorer.totals((s.scores for s in scored), self.keys)
        if jax.process_count() > 1:
            sums = np.asarray(multihost_utils.process_allgather(sums)).sum(axis=0)
        if sums[0, 1] == 0:
            raise ValidationError(f"{self.root}: the validation split of {self.config.dataset} "
                                  f"is empty")
        return {**scorer.means(sums, self.keys), "num_images": int(sums[0, 1])}

    def summary_images(self, params) -> dict[str, np.ndarray]:
        """input, output, sharp, disparity of a fixed central crop of the first validation image."""
        if self._summary_batch is None:
            ex = next(data_lib.numpy_iterator(self.load().take(1)))
            h, w = ex["c"].shape[:2]
            grid = tiling.ALIGN
            side = min(h, w, self.config.crop_size) // grid * grid
            top, left = (h - side) // 2 // grid * grid, (w - side) // 2 // grid * grid
            # A set without dual-pixel views (pairs) shows the blurred input for them.
            self._summary_batch = {k: ex.get(k, ex["c"])[None, top:top + side, left:left + side]
                                   for k in BATCH_KEYS}
        batch = self._summary_batch
        out = jax.device_get(self.summary(local_copy(params), batch))
        images = {"input": batch["c"], "output": out["output"], "sharp": batch["gt"]}
        if "disparity" in out:
            d = out["disparity"]
            d = (d - d.min()) / max(float(d.max() - d.min()), 1e-8)
            images["disparity"] = np.repeat(np.repeat(d, 8, axis=1), 8, axis=2)
        return {k: np.clip(np.asarray(v, np.float32), 0.0, 1.0) for k, v in images.items()}
