"""Deblurring images of any size with a trained or converted IFAN.

    from ifan_jax.inference import Deblurrer
    deblur = Deblurrer.from_checkpoint("ckpt/IFAN")   # or "IFAN.pytorch" (converted once, cached)
    sharp = deblur(image)          # image: H x W x 3 uint8, uint16 or float in [0, 1], any H, W;
                                   # sharp: the same kind (uint8 in, uint8 out; float in, float32 out)
    result = deblur.deblur(image, strength=0.8, keep_bokeh="auto")  # an intent.Deblurred:
    result.image, result.defocus, result.level, result.readout, result.reblend(strength=0.5)
    sharp = deblur(image, tile=0)  # the whole image at once; tile=256: 256 x 256 tiles

The image is padded to a multiple of 8 by edge replication, run through the jitted network and
cropped back, so no pixel is lost (the official code crops the remainder away). Large images run
as overlapping tiles blended across their seams (`ifan_jax.inference.tiling`), in memory bounded by the tile
size; by default (`tile=None`) the whole image runs at once when the network's working set for it
fits the memory budget (`auto_memory_budget`), else the largest tile that fits.

`Forward` is the one forward pass: the deblurrer runs it, and so do evaluation and training's
validation (`ifan_jax.evaluation.scorer`), with their own parameters. The first `Deblurrer` of a
process turns on the on-disk compilation cache the tools use (`environment.use_compilation_cache`;
`compile_cache=False` leaves JAX as it is).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import psutil

from ifan_jax import checkpoint, environment
from ifan_jax.compiled import INFERENCE_CPU_OPTIONS, AheadOfTime, release_freed_memory
from ifan_jax.errors import UserError
from ifan_jax.inference import defocus as defocus_lib
from ifan_jax.inference import intent, tiling
from ifan_jax.inference.tiling import ALIGN, DEFAULT_OVERLAP, check_tile
from ifan_jax.models import IFAN, REBLUR_KEY
from ifan_jax.weights import load_weights

# Automatic tiling: the network may use this share of the free memory, and on the CPU at most
# CPU_MEMORY_CAP bytes, one tile at a time (a 24-megapixel photo then peaks at about 2 GB of RAM).
MEMORY_FRACTION = 0.5
CPU_MEMORY_CAP = 3 << 29  # 1.5 GiB
# On the CPU the estimate is scaled by this. With XLA's default options the process grew by
# 1.23-1.37x what XLA's memory analysis reports for a forward pass (the full model, 512^2 and
# 1024^2 tiles); compiled with `compiled.INFERENCE_CPU_OPTIONS` it grows by 0.82x and 0.96x
# (2026-11-29). The factor is kept as a margin, so tile choices stay as measured in the README.
CPU_MEMORY_OVERHEAD = 1.4
# Where the official weights are published (the official repository's README links it).
OFFICIAL_WEIGHTS = ("the official weights, IFAN.pytorch and the others, are in codeslake/IFAN's "
                    "checkpoints.zip: https://www.dropbox.com/s/qohhmr9p81u0syi/checkpoints.zip?dl=1")
ROWS = 512  # rows per block of the finiteness check


class DeblurError(UserError):
    """An image or a request the deblurrer cannot run, or a network output that is not finite."""


def pad_to_multiple(image: np.ndarray, multiple: int = ALIGN) -> np.ndarray:
    """Edge-pad H x W x C (or N x H x W x C) at the bottom/right to multiples of `multiple`."""
    h, w = image.shape[-3:-1]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return image
    widths = [(0, 0)] * image.ndim
    widths[-3], widths[-2] = (0, ph), (0, pw)
    return np.pad(image, widths, mode="edge")


def eval_step(apply_fn: Callable, params, batch: dict) -> jax.Array:
    """The deblurred batch (B, H, W, 3) in [0, 1] of the eval-mode network for the blurred batch["c"]
    (B, H, W, 3), H and W multiples of 8; batch["r"] and batch["l"] (the right and left views) are
    passed when present (the dual-pixel model). `Forward` jits it."""
    return apply_fn({"params": params}, batch["c"], batch.get("r"), batch.get("l"))["result"]


class Forward:
    """The one eval-mode forward pass of IFAN, a pure function of its parameters, jitted and
    compiled ahead of time with the inference CPU options (`compiled.INFERENCE_CPU_OPTIONS`), once
    per input shape. `Deblurrer` runs it with its parameters; evaluation and training's validation
    (`ifan_jax.evaluation.scorer.Scorer`) with theirs.

        forward = Forward(model.apply)
        views = forward.prepare(image)               # padded to multiples of 8: (1, H8, W8, 3)
        sharp = forward(params, *views)[0, :h, :w]   # a device array

    `apply_fn`: a flax `IFAN.apply` (`model.apply`, a training state's `apply_fn`)."""

    def __init__(self, apply_fn: Callable):
        self.apply_fn = apply_fn
        self.compiled = AheadOfTime(
            jax.jit(self._apply, static_argnames=("with_defocus", "coarse", "features")),
            INFERENCE_CPU_OPTIONS)
        self.compiled_estimator = AheadOfTime(jax.jit(self._apply_estimator), INFERENCE_CPU_OPTIONS)

    def _apply(self, params, blurred, right=None, left=None, with_defocus=False, coarse=False,
               features=False):
        if not with_defocus:
            return eval_step(self.apply_fn, params, {"c": blurred, "r": right, "l": left})
        out, state = self.apply_fn({"params": params}, blurred, right, left,
                                   capture_intermediates=_is_map_module,
                                   mutable=["intermediates"])
        if features:
            encoded = state["intermediates"]["filter_encoder"]["__call__"][0][-1]
            return out["result"], encoded.astype(jnp.float32)
        disparity = state["intermediates"]["disparity_map_estimator"]["__call__"][0]
        if coarse:
            return out["result"], disparity.astype(jnp.float32)
        defocus = defocus_lib.upsample(disparity, *blurred.shape[1:3])
        return jnp.concatenate([out["result"], defocus], axis=-1)

    def __call__(self, params, blurred, right=None, left=None, *, with_defocus: bool = False,
                 coarse: bool = False, features: bool = False):
        """N x H x W x 3 views (H, W multiples of 8; `right`/`left` for the dual-pixel model) ->
        the deblurred N x H x W x 3 (a device array, not waited on). `with_defocus`: N x H x W x 4,
        the disparity map estimator's output upsampled as channel 3; with `coarse` instead the pair
        (deblurred, N x H/8 x W/8 x 1 estimator output); with `features` the pair (deblurred,
        N x H/8 x W/8 x 4ch filter encoder output: the estimator's input)."""
        return self.compiled(params, blurred, right, left, with_defocus=with_defocus, coarse=coarse,
                             features=features)

    def _apply_estimator(self, params, encoded):
        return self.apply_fn({"params": params}, encoded, method=_estimate).astype(jnp.float32)

    def estimate(self, params, encoded) -> jax.Array:
        """N x h x w x 4ch filter encoder output -> N x h x w x 1: the disparity map estimator's
        output (its convolutions zero-pad at the edges of what they are given)."""
        return self.compiled_estimator(params, encoded)

    @staticmethod
    def prepare(*views) -> list:
        """H x W x 3 views (None stays None) as the forward takes a whole image: float32, edge-padded
        at the bottom/right to multiples of 8 (`pad_to_multiple`), a batch of one, on the device."""
        return [None if v is None else jax.device_put(pad_to_multiple(np.asarray(v, np.float32))[None])
                for v in views]


def check_finite(what: str, *arrays) -> None:
    """DeblurError (one line) if any of `arrays` (None skipped) holds a NaN or an infinity: a network
    output that is not finite is never written or scored. Checked in blocks of rows."""
    for array in arrays:
        if array is None:
            continue
        bad = sum(int(np.count_nonzero(~np.isfinite(array[y:y + ROWS])))
                  for y in range(0, array.shape[0], ROWS))
        if bad:
            raise DeblurError(f"{what} has {bad} values that are not finite (NaN or infinity): the "
                              f"checkpoint's weights may be damaged; nothing was written for it")


class Schedule(NamedTuple):
    """How an image runs: `tile` 0 = the whole image at once (then `num_tiles` is 1)."""

    tile: int
    overlap: int
    batch_size: int
    num_tiles: int

    @property
    def whole(self) -> bool:
        return self.num_tiles == 1


class Deblurrer:
    """A jitted IFAN forward pass with its parameters, callable on numpy images.

    `compile_cache`: turn on the on-disk compilation cache of the tools on first use
    (`environment.use_compilation_cache`: $IFAN_JAX_CACHE/xla, default ~/.cache/ifan_jax/xla, unless
    JAX already has a cache directory), so a new process does not compile the network again;
    False leaves JAX's configuration alone."""

    def __init__(self, params, model_config: dict, iac_variant: str | None = None,
                 dtype: str | None = None, bit_depth: int | None = None, compile_cache: bool = True):
        overrides = {}
        if iac_variant is not None:
            overrides["iac_variant"] = iac_variant
        if dtype is not None:
            overrides["dtype"] = dtype
        config = {**checkpoint.model_fields(model_config), **overrides}
        self.model_config = config
        # The bit depth of the images the model was trained on (8 or 16; None: not recorded).
        self.bit_depth = bit_depth
        self.model = IFAN.from_config(config)
        if compile_cache:
            environment.use_compilation_cache()
        # Inference needs only the deblurring network.
        self.params = jax.device_put({k: v for k, v in params.items() if k != REBLUR_KEY})
        self.forward = Forward(self.model.apply)

    @classmethod
    def from_checkpoint(cls, path: str, which: str = "latest", iac_variant: str | None = None,
                        dtype: str | None = None, report: Callable[[str], None] | None = None,
                        compile_cache: bool = True) -> Deblurrer:
        """Load a converted official checkpoint, a training workdir or an official
        `.pytorch`/`.pth` file (converted once into a cache): `ifan_jax.weights.load_weights`,
        whose `report(message)` hears about a conversion. Errors: `checkpoint.CheckpointError`
        (a path that does not exist: with where the official weights are published)."""
        try:
            weights = load_weights(path, which, report=report)
        except checkpoint.CheckpointError as e:
            if isinstance(path, str) and not os.path.lexists(path):
                raise checkpoint.CheckpointError(f"{e}; {OFFICIAL_WEIGHTS}") from None
            raise
        return cls(weights.params, weights.model_config, iac_variant, dtype, weights.bit_depth,
                   compile_cache)

    @property
    def needs_dual_pixel(self) -> bool:
        return bool(self.model.dual_pixel_input)

    @property
    def has_defocus_map(self) -> bool:
        """Whether the model has a disparity map estimator (variants with D) to return a map from."""
        return bool(self.model.use_disparity)

    def require_defocus_map(self, consequence: str) -> None:
        """The refusal of a model without a defocus map (`intent.no_defocus_map`), one line ending
        "so <consequence>"."""
        if not self.has_defocus_map:
            raise intent.no_defocus_map(consequence)

    def run_batch(self, blurred: np.ndarray, right=None, left=None,
                  with_defocus: bool = False) -> jax.Array:
        """N x H x W x 3 with H, W multiples of 8 -> N x H x W x 3 (device array, not waited on).

        With `with_defocus`, N x H x W x 4: the deblurred image and, as channel 3, the disparity map
        estimator's output upsampled to H x W (`ifan_jax.inference.defocus.upsample`)."""
        return self.forward(self.params, blurred, right, left, with_defocus=with_defocus)

    def run_batch_coarse(self, blurred: np.ndarray, right=None, left=None):
        """N x H x W x 3 (H, W multiples of 8) -> (N x H x W x 3 deblurred, N x H/8 x W/8 x 1: the
        disparity map estimator's output before upsampling, what tiles blend the map from);
        device arrays, not waited on."""
        return self.forward(self.params, blurred, right, left, with_defocus=True, coarse=True)

    def run_batch_features(self, blurred: np.ndarray, right=None, left=None):
        """N x H x W x 3 (H, W multiples of 8) -> (N x H x W x 3 deblurred, N x H/8 x W/8 x 4ch: the
        filter encoder's output, the disparity map estimator's input, what tiles blend the map
        from); device arrays, not waited on."""
        return self.forward(self.params, blurred, right, left, with_defocus=True, features=True)

    def estimate(self, encoded: np.ndarray) -> jax.Array:
        """N x h x w x 4ch filter encoder output -> N x h x w x 1: the disparity map estimator's
        output (`Forward.estimate`)."""
        return self.forward.estimate(self.params, encoded)

    def deblur_whole(self, image: np.ndarray, right=None, left=None,
                     return_defocus: bool = False):
        """The network over the whole image at once: pad to a multiple of 8, run, crop back.

        Returns H x W x 3 float32, or (that, H x W float32 defocus map) with `return_defocus`: the
        estimator's 1/8-resolution map upsampled (`defocus.upsample_map`, as for tiles), so no
        H x W x 4 output is split into copies. No intent, no checks of the output: `deblur`."""
        image = _as_image(image, "image")
        if return_defocus:
            self.require_defocus_map("it has no defocus map to return")
        h, w = image.shape[:2]
        views = self.forward.prepare(image, _opt(right, "right"), _opt(left, "left"))
        if not return_defocus:
            return np.asarray(self.run_batch(*views)[0, :h, :w], dtype=np.float32)
        sharp, low = self.run_batch_coarse(*views)
        sharp = np.asarray(sharp)[0]
        sharp = sharp if sharp.shape[:2] == (h, w) else np.array(sharp[:h, :w])
        return sharp, defocus_lib.upsample_map(np.asarray(low)[0, ..., 0], h, w)

    def deblur_tiled(self, image: np.ndarray, right=None, left=None, tile: int = 512,
                     overlap: int = DEFAULT_OVERLAP, batch_size: int = 1,
                     progress: Callable[[int], None] | None = None, return_defocus: bool = False):
        """The network over overlapping `tile` x `tile` tiles in batches, blended
        (`ifan_jax.inference.tiling`). The defocus map (with `return_defocus`): the tiles' filter
        encoder outputs blended on the 1/8 grid where each is exact, the disparity map estimator run
        over that (`tiling.estimate_tiled`) and the whole map upsampled once
        (`defocus.upsample_map`); blending the tiles' own maps left lines at tile borders. No
        intent, no checks of the output: `deblur`."""
        if return_defocus:
            self.require_defocus_map("it has no defocus map to return")
        check_tile(tile, overlap)
        views = [_as_image(image, "image"), _opt(right, "right"), _opt(left, "left")]
        if not return_defocus:
            return tiling.deblur_tiled(self.run_batch, views, tile, overlap, batch_size, progress)
        reach = self.model.map_reach()
        sharp, encoded = tiling.deblur_tiled(self.run_batch_features, views, tile, overlap,
                                             batch_size, progress, reach[:2])
        low = tiling.estimate_tiled(self.estimate, encoded, tiling.estimator_tile(tile),
                                    reach.estimator)
        return sharp, defocus_lib.upsample_map(low[..., 0], *views[0].shape[:2])

    def deblur(self, image: np.ndarray, right=None, left=None, *, tile: int | None = None,
               overlap: int = DEFAULT_OVERLAP, schedule: Schedule | None = None,
               progress: Callable[[int], None] | None = None, strength: float = 1.0,
               keep_bokeh: float | str | None = None) -> intent.Deblurred:
        """Deblur an H x W x 3 image (uint8, uint16 or float in [0, 1]) and apply the intent:
        an `intent.Deblurred`, whose `.image` is in the input's kind (uint8 in, uint8 out; uint16
        in, uint16 out, rounded; float in, float32 out), `.defocus` the H x W float32 map (None for
        a model without one), `.level`, `.strength`, `.readout`, and `.reblend(...)` to blend again
        without running the network.

        `tile=None` chooses: the whole image at once when it fits the memory budget, else tiles of
        the largest size that fits (`plan`). `tile=0` forces the whole image at once; an int > 0
        runs tiles of that many pixels (rounded up to a multiple of 8) overlapping by `overlap`
        (`tile` must exceed the overlap by 8 pixels: `tiling.check_tile`). `schedule` (from
        `schedule()`, for callers that size a progress bar from it) replaces `tile` and `overlap`.
        `progress(n)` is called as tiles finish.

        Intent (`ifan_jax.inference.intent`): the output is input + strength x (1 - keep) x
        (deblurred - input), `strength` in [0, 1] (0: the input exactly); `keep_bokeh` (a level > 0
        in the map's units, or "auto") keeps the input where the whole-photo map's 33 x 33 mean
        |defocus| is >= 2 x level (a smooth ramp from level); it needs the defocus map.

        Errors, one line each (`UserError`s, so also ValueErrors): an image that is not one of the
        kinds above, a bad tile, strength or level, keep_bokeh without a map, and a network output
        with a NaN or an infinity (`DeblurError`: the weights are damaged).
        """
        kind = np.asarray(image).dtype
        image = _as_image(image, "image")
        strength = intent.check_strength(strength)
        keep_bokeh = intent.check_keep_bokeh(keep_bokeh)
        if keep_bokeh is not None:
            self.require_defocus_map("it has no defocus map to keep the bokeh by")
        if self.needs_dual_pixel and (right is None or left is None):
            raise DeblurError("this is the dual-pixel-input model: pass right= and left= views")
        if schedule is None:
            schedule = self.schedule(*image.shape[:2], tile, overlap)
        with_map = self.has_defocus_map
        if schedule.whole:
            out = self.deblur_whole(image, right, left, with_map)
        else:
            out = self.deblur_tiled(image, right, left, schedule.tile, schedule.overlap,
                                    schedule.batch_size, progress, with_map)
        sharp, dmap = out if with_map else (out, None)
        check_finite("the deblurred image", sharp)
        check_finite("the defocus map", dmap)
        return intent.Deblurred(image, sharp, dmap, strength, keep_bokeh,
                                kind if kind in (np.uint8, np.uint16) else np.float32)

    def __call__(self, image: np.ndarray, right=None, left=None, tile: int | None = None,
                 overlap: int = DEFAULT_OVERLAP,
                 progress: Callable[[int], None] | None = None, return_defocus: bool = False,
                 strength: float = 1.0, keep_bokeh: float | str | None = None):
        """`deblur(...).image`: the deblurred H x W x 3 image in the input's kind (uint8 in, uint8
        out; uint16 in, uint16 out; float in, float32 out in [0, 1]). With `return_defocus=True`
        the pair `(image, defocus)`, `defocus` the H x W float32 map (a model without one: one-line
        error). Arguments as `deblur`."""
        if return_defocus:
            self.require_defocus_map("it has no defocus map to return")
        result = self.deblur(image, right, left, tile=tile, overlap=overlap, progress=progress,
                             strength=strength, keep_bokeh=keep_bokeh)
        return (result.image, result.defocus) if return_defocus else result.image

    def schedule(self, height: int, width: int, tile: int | None = None,
                 overlap: int = DEFAULT_OVERLAP) -> Schedule:
        """How `deblur` runs an H x W image: the one place that decides whole or tiles.
        `tile=None` chooses (`plan`); errors as `tiling.check_tile`."""
        if tile is None:
            check_tile(0, overlap)
            tile, batch_size = self.plan(height, width, overlap)
        else:
            batch_size = 1
        check_tile(tile, overlap)
        if tile == 0:
            return Schedule(0, overlap, 1, 1)
        return Schedule(tile, overlap, batch_size, tiling.num_tiles(height, width, tile, overlap))

    def plan(self, height: int, width: int, overlap: int = DEFAULT_OVERLAP,
             budget: float | None = None) -> tuple[int, int]:
        """(tile, batch size) that `tile=None` uses for an image: tile 0 means the whole image."""
        budget = auto_memory_budget() if budget is None else budget
        # Batches of tiles help accelerators; on the CPU they only add memory.
        max_batch = 1 if _on_cpu() else tiling.MAX_BATCH
        return tiling.choose_tile(height, width, self.working_memory, budget, overlap, max_batch)

    def working_memory(self, num_pixels: int) -> float:
        """Estimated bytes the jitted network needs for inputs holding `num_pixels` pixels (XLA's
        memory analysis; on the CPU times `CPU_MEMORY_OVERHEAD`, the measured growth of the process)."""
        fixed, per_pixel = self._memory_model
        return fixed + per_pixel * num_pixels

    @functools.cached_property
    def _memory_model(self) -> tuple[float, float]:
        """(fixed bytes, bytes per pixel) of the network, from XLA's memory analysis at 2 sizes."""
        sizes, used = (256, 512), []
        try:
            for s in sizes:
                views = [jax.ShapeDtypeStruct((1, s, s, 3), np.float32)] * (
                    3 if self.needs_dual_pixel else 1)
                stats = self.forward.compiled.compile_uncached(self.params, *views).memory_analysis()
                used.append(stats.temp_size_in_bytes + stats.argument_size_in_bytes
                            + stats.output_size_in_bytes)
        except Exception:  # no memory analysis on this backend: a generous rule of thumb
            return 64e6, 24.0 * 4 * int(self.model_config.get("channels", 32))
        finally:
            release_freed_memory()  # the two compilations' heap
        per_pixel = (used[1] - used[0]) / (sizes[1] ** 2 - sizes[0] ** 2)
        fixed = max(used[0] - per_pixel * sizes[0] ** 2, 0.0)
        scale = CPU_MEMORY_OVERHEAD if _on_cpu() else 1.0
        return scale * fixed, scale * per_pixel


def _is_map_module(module, method_name: str) -> bool:
    """The modules whose outputs the map needs: the filter encoder's (the estimator's input) and
    the disparity map estimator's."""
    return module.name in ("filter_encoder", "disparity_map_estimator") and method_name == "__call__"


def _estimate(model, encoded):
    return model.disparity_map_estimator(encoded)


def _on_cpu() -> bool:
    return jax.local_devices()[0].platform == "cpu"


def auto_memory_budget() -> float:
    """Bytes the automatic tiling lets the network use on the default device.

    GPU/TPU: half of the device memory not in use. CPU: half of the available RAM (psutil), at
    most `CPU_MEMORY_CAP`.
    """
    device = jax.local_devices()[0]
    if not _on_cpu():
        try:
            stats = device.memory_stats()
            return MEMORY_FRACTION * (stats["bytes_limit"] - stats["bytes_in_use"])
        except Exception:
            pass
    return min(MEMORY_FRACTION * psutil.virtual_memory().available, CPU_MEMORY_CAP)


# Integer images are read at their true scale: uint8 / 255, uint16 / 65535.
INTEGER_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _as_image(image, name: str) -> np.ndarray:
    """An H x W x 3 image as float32 in [0, 1]: uint8 (/ 255), uint16 (/ 65535), or a float array
    already in [0, 1] (float32 is not copied). Anything else is a one-line DeblurError naming the
    dtype, shape and, for floats, the range that was given."""
    array = np.asarray(image)
    expected = "an H x W x 3 array of uint8, uint16 or floats in [0, 1]"
    if array.ndim != 3 or array.shape[-1] != 3 or 0 in array.shape:
        raise DeblurError(f"{name} must be {expected}; got {array.dtype} of shape {array.shape}")
    if array.dtype in INTEGER_SCALES:
        return np.multiply(array, np.float32(1.0 / INTEGER_SCALES[array.dtype]), dtype=np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise DeblurError(f"{name} must be {expected}; got {array.dtype} of shape {array.shape} "
                          f"(convert it, e.g. image.astype(np.float32) / its maximum value)")
    given = array.dtype
    array = np.asarray(array, dtype=np.float32)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if not (low >= 0.0 and high <= 1.0):  # NaN fails both comparisons
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        hint = (" and NaN" if np.isnan(array).any() else
                " (8-bit values? divide by 255)" if low >= 0 and high <= 255 else
                " (16-bit values? divide by 65535)" if low >= 0 and high <= 65535 else "")
        raise DeblurError(f"{name} must be {expected}; got {given} of shape "
                          f"{array.shape} with values in [{low:.6g}, {high:.6g}]{hint}")
    return array


def _opt(image, name: str):
    return None if image is None else _as_image(image, name)

