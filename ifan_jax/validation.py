"""Validation during training: PSNR, SSIM and LPIPS of the model on the validation split, and the
images TensorBoard shows (input, output, sharp, disparity).
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
from ifan_jax import metrics
from ifan_jax.lpips import LPIPS

BATCH_KEYS = ("c", "r", "l", "gt")  # blurred input, right view, left view, sharp target


class ValidationError(ValueError):
    """A validation split that cannot be scored; the message names it."""


def eval_step(apply_fn: Callable, params, batch: dict) -> jax.Array:
    """The deblurred batch (B, H, W, 3) clipped to [0, 1]; "r"/"l" are read if present (dual)."""
    return apply_fn({"params": params}, batch["c"], batch.get("r"), batch.get("l"))["result"]


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
    on its first device, and the sums are combined. Images may differ in size (one compilation
    per size).
    """

    def __init__(self, config: ml_collections.ConfigDict, root: str, apply_fn: Callable):
        self.config = config
        self.root = root
        self.dual = bool(config.model.dual_pixel_input)
        self.load = functools.partial(data_lib.load_split, root, config.dataset, "val",
                                      bit_depth=config.bit_depth)
        self.forward = jax.jit(functools.partial(eval_step, apply_fn))
        self.summary = jax.jit(functools.partial(summary_step, apply_fn))
        self.lpips = None
        if config.get("eval_lpips", True):
            self.lpips = LPIPS()
        self._summary_batch = None

    def examples(self) -> Iterator[dict]:
        limit = self.config.num_eval_images
        for i, ex in enumerate(data_lib.numpy_iterator(self.load())):
            if 0 <= limit <= i:
                break
            if i % jax.process_count() == jax.process_index():
                yield ex

    def __call__(self, params) -> dict[str, float]:
        params = local_copy(params)
        sums = np.zeros(5)  # psnr, ssim, lpips, input psnr, count
        for ex in self.examples():
            batch = {k: ex[k][None] for k in (("c", "r", "l") if self.dual else ("c",))}
            out = np.asarray(self.forward(params, batch))[0]
            gt = ex["gt"]
            sums += [metrics.psnr(out, gt), metrics.ssim(out, gt),
                     float(self.lpips(out, gt)) if self.lpips is not None else 0.0,
                     metrics.psnr(ex["c"], gt), 1.0]
        if jax.process_count() > 1:
            sums = np.asarray(multihost_utils.process_allgather(sums)).sum(axis=0)
        if sums[-1] == 0:
            raise ValidationError(f"{self.root}: the validation split of {self.config.dataset} is empty")
        mean = sums[:-1] / sums[-1]
        out = {"psnr": mean[0], "ssim": mean[1], "input_psnr": mean[3]}
        if self.lpips is not None:
            out["lpips"] = mean[2]
        return {k: float(v) for k, v in out.items()}

    def summary_images(self, params) -> dict[str, np.ndarray]:
        """input, output, sharp, disparity of a fixed central crop of the first validation image."""
        if self._summary_batch is None:
            ex = next(data_lib.numpy_iterator(self.load().take(1)))
            h, w = ex["c"].shape[:2]
            side = min(h, w, self.config.crop_size) // 8 * 8
            top, left = (h - side) // 2 // 8 * 8, (w - side) // 2 // 8 * 8
            self._summary_batch = {k: ex[k][None, top:top + side, left:left + side]
                                   for k in BATCH_KEYS}
        batch = self._summary_batch
        out = jax.device_get(self.summary(local_copy(params), batch))
        images = {"input": batch["c"], "output": out["output"], "sharp": batch["gt"]}
        if "disparity" in out:
            d = out["disparity"]
            d = (d - d.min()) / max(float(d.max() - d.min()), 1e-8)
            images["disparity"] = np.repeat(np.repeat(d, 8, axis=1), 8, axis=2)
        return {k: np.clip(np.asarray(v, np.float32), 0.0, 1.0) for k, v in images.items()}
