"""Deblurring images of any size with a trained or converted IFAN.

    from ifan_jax.inference import Deblurrer
    deblur = Deblurrer.from_checkpoint("ckpt/IFAN")
    sharp = deblur(image)          # image: H x W x 3 float32 in [0, 1], any H, W

The image is padded to a multiple of 8 by edge replication, run through the jitted network and
cropped back, so no pixel is lost (the official code crops the remainder away).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from ifan_jax import checkpoint
from ifan_jax.models import IFAN

MULTIPLE = 8


def enable_compilation_cache(path: str | None = None) -> str:
    """Persist XLA compilations on disk so a second run of a tool skips compiling the network."""
    path = path or os.environ.get("IFAN_JAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "ifan_jax", "xla")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def pad_to_multiple(image: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """Edge-pad H x W x C (or N x H x W x C) at the bottom/right to multiples of `multiple`."""
    h, w = image.shape[-3:-1]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return image
    widths = [(0, 0)] * image.ndim
    widths[-3], widths[-2] = (0, ph), (0, pw)
    return np.pad(image, widths, mode="edge")


class Deblurrer:
    """A jitted IFAN forward pass with its parameters, callable on numpy images."""

    def __init__(self, params, model_config: dict, iac_variant: str | None = None,
                 dtype: str | None = None):
        overrides = {}
        if iac_variant is not None:
            overrides["iac_variant"] = iac_variant
        if dtype is not None:
            overrides["dtype"] = dtype
        config = {k: v for k, v in dict(model_config).items()}
        config.update(overrides)
        self.model_config = config
        self.model = IFAN.from_config(config)
        # Inference needs only the deblurring network.
        self.params = jax.device_put({k: v for k, v in params.items() if k != "reblurring_network"})
        self._forward = jax.jit(self._apply)

    @classmethod
    def from_checkpoint(cls, path: str, which: str = "latest", iac_variant: str | None = None,
                        dtype: str | None = None) -> Deblurrer:
        """Load a converted official checkpoint or a training workdir (see `ifan_jax.checkpoint`)."""
        model_config, params = checkpoint.load_params(path, which)
        return cls(params, model_config, iac_variant, dtype)

    @property
    def needs_dual_pixel(self) -> bool:
        return bool(self.model.dual_pixel_input)

    def _apply(self, params, blurred, right=None, left=None):
        return self.model.apply({"params": params}, blurred, right, left)["result"]

    def run_batch(self, blurred: np.ndarray, right=None, left=None) -> jax.Array:
        """N x H x W x 3 with H, W multiples of 8 -> N x H x W x 3 (device array, not waited on)."""
        return self._forward(self.params, blurred, right, left)

    @functools.cached_property
    def num_params(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.params))

    def deblur_whole(self, image: np.ndarray, right=None, left=None) -> np.ndarray:
        """Run the whole image at once: pad to a multiple of 8, run, crop back."""
        image = _as_image(image, "image")
        h, w = image.shape[:2]
        views = [pad_to_multiple(v)[None] if v is not None else None
                 for v in (image, _opt(right, "right"), _opt(left, "left"))]
        out = self.run_batch(*views)
        return np.asarray(out[0, :h, :w], dtype=np.float32)

    def __call__(self, image: np.ndarray, right=None, left=None, tile=None) -> np.ndarray:
        """Deblur an H x W x 3 float image in [0, 1]; returns H x W x 3 float32 in [0, 1].

        `tile=None` runs the whole image at once.
        """
        if self.needs_dual_pixel and (right is None or left is None):
            raise ValueError("this is the dual-pixel-input model: pass right= and left= views")
        if tile is not None:
            raise ValueError("tiled inference is not available in this version")
        return self.deblur_whole(image, right, left)


def _as_image(image, name: str) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name} must be H x W x 3, got shape {image.shape}")
    return image


def _opt(image, name: str):
    return None if image is None else _as_image(image, name)

