"""Deblurring with intent: a strength, keeping the bokeh, and a readout of how blurred a photo was.

    from ifan_jax.inference import Deblurrer
    result = deblurrer.deblur(image, strength=0.8, keep_bokeh="auto")   # an intent.Deblurred
    result.image, result.defocus, result.level, result.readout.sentence
    softer = result.reblend(strength=0.5)          # the same photo blended again, no network run

`Deblurred` is the one place the intent is applied: the deblur command, the web page and the Python
API all take their output, level and readout from it (`Deblurrer.deblur` returns one). The pieces
it is made of (`blend`, `keep_mask`, `auto_level`, `readout`) are public for checking them.

x = the input, y = the deblurred image, d = the defocus map (`ifan_jax.inference.defocus`: the
disparity map estimator's output, the disparity between the dual-pixel views in pixels of the
network's 1/8-resolution grid, upsampled to the photo's size). S = strength in [0, 1], L = level > 0:

    a = box mean of |d| over 33 x 33 pixels (radius 16), edges replicated
    t = clip((a - L) / L, 0, 1);  keep = t^2 (3 - 2t)   (smoothstep: 0 where a <= L, 1 where a >= 2L)
    output = x + S (1 - keep) (y - x)                   (S = 0, or keep = 1: exactly x)

The automatic level is L = 2 theta / 3, theta = Otsu's threshold of |d| (256 bins between its min
and max), so the ramp [L, 2L] is centred on theta. The mask is computed from the blended
whole-photo map, so tiled and whole runs give the same mask. The static page (web/src/intent.js)
computes the same from `page_constants()`; docs/intent.md explains the levels.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from scipy import ndimage

from ifan_jax import image_io
from ifan_jax.errors import UserError

BOX_RADIUS = 16  # the mask averages |defocus| over (2 R + 1)^2 = 33 x 33 pixels
OTSU_BINS = 256
AUTO_LEVEL_FACTOR = 2 / 3  # automatic level = 2/3 of Otsu's threshold of |defocus|
# Readout levels of |defocus|, in pixels of the 1/8-resolution grid the disparity map estimator
# works on: 1/8, 1/4 and 1/2 there are a disparity of 1, 2 and 4 full-resolution pixels between
# the dual-pixel views. In the synthetic renderer's thin-lens model (ifan_jax.data.synth) the
# views' half-disc PSFs have centroids 8 r / (3 pi) apart for a circle of confusion of radius r,
# so these levels are blur radii of about 1.2, 2.4 and 4.7 pixels (docs/intent.md). Powers of two:
# exact in float32, so the page's comparisons match these.
LEVELS = (0.125, 0.25, 0.5)
OUT_OF_FOCUS_LEVEL = 0.25  # the readout's "out of focus": |defocus| above this (blur radius ~2.4 px)
MOSTLY_SHARP_SHARE = 0.1  # below this share out of focus, the photo is "mostly in focus"
SENTENCES = {
    "mostly_sharp": "Mostly in focus: little to deblur.",
    "out_of_focus": "{percent}% of the photo is out of focus; deblurred.",
}
# An all-zero map has no Otsu threshold; its automatic level is this (nothing is kept).
_SMALLEST_LEVEL = float(np.finfo(np.float32).tiny)
ROWS = 256  # rows per block: the blend, the mask and the reductions need no photo-sized temporaries
BLOCK = 1 << 20  # values per block of the PSNR's and Otsu's sums
NO_MAP = "this model has no disparity map estimator (a variant without D)"


class IntentError(UserError):
    """A strength or keep-bokeh level that cannot be applied; the message says which and why."""


def no_defocus_map(consequence: str) -> IntentError:
    """The one refusal of a model without a defocus map: `NO_MAP`, then `consequence` ("so
    --defocus_map has nothing to write")."""
    return IntentError(f"{NO_MAP}, so {consequence}")


def check_strength(strength) -> float:
    """`strength` as a float; IntentError (one line) unless it is a number in [0, 1]."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise IntentError(f"strength must be a number between 0 and 1, got {strength!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise IntentError(f"strength must be between 0 and 1, got {strength!r}")
    return value


def check_level(level) -> float:
    """A keep-bokeh level as a float; IntentError (one line) unless it is a finite number > 0."""
    if isinstance(level, bool):
        raise IntentError(f"the keep-bokeh level must be a number > 0 or 'auto', got {level!r}")
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise IntentError(f"the keep-bokeh level must be a number > 0 or 'auto', got {level!r}"
                          ) from None
    if not (value > 0 and math.isfinite(value)):
        raise IntentError(f"the keep-bokeh level must be a finite number > 0, got {level!r}")
    return value


def check_keep_bokeh(keep_bokeh) -> float | str | None:
    """None (off), "auto" or a level > 0 (as a float); IntentError (one line) otherwise."""
    if keep_bokeh is None or (isinstance(keep_bokeh, str) and keep_bokeh.strip().lower() == "auto"):
        return None if keep_bokeh is None else "auto"
    if isinstance(keep_bokeh, bool):
        raise IntentError(f"keep_bokeh must be None, 'auto' or a level > 0, got {keep_bokeh!r}")
    return check_level(keep_bokeh)


def _map(defocus) -> np.ndarray:
    d = np.asarray(defocus, np.float32)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise IntentError(f"a defocus map must be H x W, got shape {d.shape}")
    return d


def smoothed(defocus) -> np.ndarray:
    """a: the box mean of |d| over (2 BOX_RADIUS + 1)^2 pixels, edges replicated (float64)."""
    return ndimage.uniform_filter(np.abs(_map(defocus)), size=2 * BOX_RADIUS + 1, mode="nearest",
                                  output=np.float64)


def ramp(mean, level: float) -> np.ndarray:
    """The keep mask from a box mean a of |defocus| (`box_mean`): H x W float32 in [0, 1],
    smoothstep((a - L) / L): 0 where a <= L, 1 where a >= 2 L. Computed in blocks of rows."""
    level = check_level(level)
    a = np.asarray(mean)
    out = np.empty(a.shape, np.float32)
    for y in range(0, a.shape[0], ROWS):
        t = np.clip((a[y:y + ROWS] - level) / level, 0.0, 1.0)
        out[y:y + ROWS] = t * t * (3.0 - 2.0 * t)
    return out


def box_mean(defocus) -> np.ndarray:
    """`smoothed` as the mask uses it: kept in float32 (a relative error of 6e-8), so that a photo
    held for re-blending costs 4 bytes a pixel for it."""
    return smoothed(defocus).astype(np.float32)


def keep_mask(defocus, level: float) -> np.ndarray:
    """H x W float32 in [0, 1], 1 = keep the input: `ramp` of the box mean of |defocus|."""
    level = check_level(level)
    return ramp(box_mean(defocus), level)


def otsu_threshold(values, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold of `values`: the bin centre (of `bins` equal bins between min and max) that
    maximises the between-class variance, the first if tied (as skimage.filters.threshold_otsu).
    A constant array gives its value. The histogram is summed in blocks (no float64 copy)."""
    v = np.asarray(values).ravel()
    lo, hi, count = math.inf, -math.inf, 0
    for i in range(0, v.size, BLOCK):
        block = v[i:i + BLOCK]
        block = block[np.isfinite(block)]
        if block.size:
            lo, hi, count = min(lo, float(block.min())), max(hi, float(block.max())), count + 1
    if not count:
        raise IntentError("the defocus map has no finite values")
    if not hi > lo:
        return lo
    hist = np.zeros(bins, np.float64)
    for i in range(0, v.size, BLOCK):
        block = np.asarray(v[i:i + BLOCK], np.float64)
        block = block[np.isfinite(block)]
        index = np.minimum(np.floor((block - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
        hist += np.bincount(index, minlength=bins)
    centres = lo + (np.arange(bins) + 0.5) * (hi - lo) / bins
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = np.cumsum(hist * centres) / w1
        m2 = (np.cumsum((hist * centres)[::-1]) / np.cumsum(hist[::-1]))[::-1]
        between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centres[int(np.argmax(np.nan_to_num(between, nan=-1.0)))])


def auto_level(defocus) -> float:
    """The automatic keep-bokeh level: 2/3 of Otsu's threshold of |defocus| (> 0; an all-zero map
    gives the smallest float32 level, which keeps nothing)."""
    level = AUTO_LEVEL_FACTOR * otsu_threshold(np.abs(_map(defocus)))
    return level if level > 0 else _SMALLEST_LEVEL


def resolve_level(defocus, keep_bokeh) -> float | None:
    """The level `keep_bokeh` (None, "auto" or a level) means for this map; None: keep-bokeh off."""
    keep_bokeh = check_keep_bokeh(keep_bokeh)
    if keep_bokeh is None:
        return None
    return auto_level(defocus) if keep_bokeh == "auto" else keep_bokeh


def blend(image, deblurred, strength: float = 1.0, keep=None) -> np.ndarray:
    """x + S (1 - keep) (y - x) as H x W x 3 float32: `image` x where S (1 - keep) is 0 and the
    `deblurred` y where it is 1, exactly. `keep`: H x W in [0, 1] (`keep_mask`) or None (no keep).
    Computed in blocks of rows; at S = 1 without keep it is y itself, at S = 0 x itself (float32
    inputs are not copied)."""
    strength = check_strength(strength)
    x = np.asarray(image, np.float32)
    y = np.asarray(deblurred, np.float32)
    if x.shape != y.shape or x.ndim != 3:
        raise IntentError(f"image {x.shape} and deblurred {y.shape} must be the same H x W x 3")
    if keep is None and strength in (0.0, 1.0):
        return y if strength == 1.0 else x
    if keep is not None:
        keep = np.asarray(keep, np.float32)
        if keep.shape != x.shape[:2]:
            raise IntentError(f"the keep mask {keep.shape} must be the image's H x W {x.shape[:2]}")
    out = np.empty(x.shape, np.float32)
    s0 = np.float32(strength)
    for r in range(0, x.shape[0], ROWS):
        xs, ys = x[r:r + ROWS], y[r:r + ROWS]
        if keep is None:
            out[r:r + ROWS] = xs + s0 * (ys - xs)
            continue
        s = (s0 * (np.float32(1.0) - keep[r:r + ROWS]))[..., None]
        out[r:r + ROWS] = np.where(s == 1.0, ys, np.where(s == 0.0, xs, xs + s * (ys - xs)))
    return out


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each factor x factor block of an H x W (x C) array, float32 (a partial block at
    the bottom/right edge is left out; uint8 is read as / 255), in blocks of rows; `image` itself
    when factor is 1."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    out = np.empty((h, w, *image.shape[2:]), np.float32)
    step = max(1, ROWS // factor)
    for y in range(0, h, step):
        block = np.asarray(image[y * factor:min(y + step, h) * factor, :w * factor], np.float32)
        out[y:y + step] = block.reshape(-1, factor, w, factor, *image.shape[2:]).mean((1, 3))
    if image.dtype == np.uint8:
        out *= np.float32(1 / 255)
    return out


def psnr(a, b) -> float:
    """PSNR in dB (peak 1) between two images; inf when they are equal. Summed in float64 over
    blocks of a million values, so a large photo needs no float64 copy of itself."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise IntentError(f"PSNR of images of different shapes {a.shape} and {b.shape}")
    if not a.size:
        raise IntentError("PSNR of empty images")
    a, b, total = a.reshape(-1), b.reshape(-1), 0.0
    for i in range(0, a.size, BLOCK):
        diff = a[i:i + BLOCK].astype(np.float64) - b[i:i + BLOCK]
        total += float(np.dot(diff, diff))
    mse = total / a.size
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


@dataclasses.dataclass(frozen=True)
class Readout:
    """How much blur a photo had and how much the output differs from it.

    shares: {level: share of pixels with |defocus| > level} for `LEVELS` (None without a map);
    out_of_focus: the share above OUT_OF_FOCUS_LEVEL; median: median |defocus|; psnr: input vs
    output in dB (inf: the output is the input); sentence: one plain sentence."""

    shares: dict[float, float] | None
    out_of_focus: float | None
    median: float | None
    psnr: float
    sentence: str

    def to_json(self) -> dict:
        """A JSON-ready dict (psnr_db null when the output equals the input)."""
        return {
            "out_of_focus_share": self.out_of_focus,
            "out_of_focus_level": OUT_OF_FOCUS_LEVEL,
            "shares_above_level": (None if self.shares is None
                                   else {repr(level): share for level, share in self.shares.items()}),
            "median_abs_defocus": self.median,
            "psnr_db": None if math.isinf(self.psnr) else round(self.psnr, 3),
            "sentence": self.sentence,
        }

    def line(self) -> str:
        """The readout in one line, as the deblur command prints it and the page shows it."""
        change = "output = input" if math.isinf(self.psnr) else f"PSNR input vs output {self.psnr:.1f} dB"
        if self.shares is None:
            return f"{change}; no defocus map (a model without D)"
        shares = ", ".join(f"{100 * s:.0f}% > {level:g}" for level, s in self.shares.items())
        return f"{self.sentence} |defocus|: {shares}, median {self.median:.3f}; {change}"


def sentence(out_of_focus: float) -> str:
    """The readout's sentence for a share of pixels out of focus (as the page words it)."""
    if out_of_focus < MOSTLY_SHARP_SHARE:
        return SENTENCES["mostly_sharp"]
    return SENTENCES["out_of_focus"].format(percent=round(100 * out_of_focus))


def map_readout(defocus) -> dict:
    """The part of the readout that depends on the map alone: {"shares", "out_of_focus",
    "median"} (None values without a map)."""
    if defocus is None:
        return {"shares": None, "out_of_focus": None, "median": None}
    magnitude = np.abs(_map(defocus))
    shares = {level: float(np.count_nonzero(magnitude > np.float32(level)) / magnitude.size)
              for level in LEVELS}
    return {"shares": shares, "out_of_focus": shares[OUT_OF_FOCUS_LEVEL],
            "median": float(np.median(magnitude, overwrite_input=True))}


def make_readout(change: float, of_map: dict) -> Readout:
    """A `Readout` from the PSNR input vs output and `map_readout`'s dict."""
    if of_map["shares"] is None:
        return Readout(None, None, None, change, "No defocus map: the blur is not measured.")
    return Readout(of_map["shares"], of_map["out_of_focus"], of_map["median"], change,
                   sentence(of_map["out_of_focus"]))


def readout(image, output, defocus) -> Readout:
    """The readout of one photo: `image` the input, `output` what is written, `defocus` its map
    (None for a model without one: then only the PSNR)."""
    return make_readout(psnr(image, output), map_readout(defocus))


class _Maps:
    """A photo's defocus map and what keep-the-bokeh and the readout derive from it, computed once
    and shared by the photo's re-blends, crops and reductions. `mean` and `auto` are functions
    giving the box mean of |defocus| (`box_mean`) at this map's scale and the whole photo's
    automatic level."""

    def __init__(self, defocus, mean=None, auto=None):
        self.defocus = None if defocus is None else _map(defocus)
        self._mean = mean or (lambda: box_mean(self.defocus))
        self._auto = auto or (lambda: auto_level(self.defocus))

    @functools.cached_property
    def mean(self) -> np.ndarray:
        return self._mean()

    @functools.cached_property
    def auto_level(self) -> float:
        return self._auto()

    @functools.cached_property
    def of_readout(self) -> dict:
        return map_readout(self.defocus)


class Deblurred:
    """A photo deblurred, with the intent applied: the one place strength and keep-the-bokeh are
    applied (`Deblurrer.deblur` returns one; the deblur command, the web page and the Python API
    read their output, level and readout here). Everything is computed when first asked for.

    image     H x W x 3 in the input's kind: uint8 or uint16 (rounded) or float32 in [0, 1]
    output    the same as float32 in [0, 1] (what the tools write)
    defocus   H x W float32, the blended whole-photo map (None: a model without D)
    strength  S; keep_bokeh: as asked (None, "auto" or a level); level: the level used (None: off)
    keep      the H x W float32 keep mask (None without keep-the-bokeh)
    readout   `Readout` of the input against `output`
    input, sharp  the network's input and output, H x W x 3 float32 in [0, 1]

    `reblend(strength, keep_bokeh)` blends the same photo again (the map, its box mean and its
    automatic level are shared, so only the blend is computed). `crop(rows, cols)` is the same
    blend of a window, exactly; `reduced(factor)` of the photo reduced by block means, the mask
    from the full photo's box mean reduced alike (a preview: its pixels are not exactly a
    reduction of `output`).
    """

    def __init__(self, image, sharp, defocus=None, strength: float = 1.0, keep_bokeh=None,
                 kind=np.float32, maps: _Maps | None = None):
        self.input = np.asarray(image, np.float32)
        self.sharp = np.asarray(sharp, np.float32)
        self._maps = maps if maps is not None else _Maps(defocus)
        self.strength = check_strength(strength)
        self.keep_bokeh = check_keep_bokeh(keep_bokeh)
        if self.keep_bokeh is not None and self.defocus is None:
            raise no_defocus_map("it has no defocus map to keep the bokeh by")
        self.kind = np.dtype(kind)

    @property
    def defocus(self) -> np.ndarray | None:
        return self._maps.defocus

    @property
    def auto_level(self) -> float | None:
        """The photo's automatic keep-bokeh level (None without a map)."""
        return None if self.defocus is None else self._maps.auto_level

    @property
    def level(self) -> float | None:
        """The keep-bokeh level used: the automatic one for "auto"; None when keep-bokeh is off."""
        if self.keep_bokeh is None:
            return None
        return self.auto_level if self.keep_bokeh == "auto" else self.keep_bokeh

    @functools.cached_property
    def keep(self) -> np.ndarray | None:
        level = self.level
        return None if level is None else ramp(self._maps.mean, level)

    @functools.cached_property
    def output(self) -> np.ndarray:
        return blend(self.input, self.sharp, self.strength, self.keep)

    @functools.cached_property
    def image(self) -> np.ndarray:
        if self.kind in (np.dtype(np.uint8), np.dtype(np.uint16)):
            return image_io.quantize(self.output, 8 * self.kind.itemsize)
        return self.output

    @functools.cached_property
    def readout(self) -> Readout:
        return make_readout(psnr(self.input, self.output), self._maps.of_readout)

    def intent_line(self) -> str:
        """The intent in words, "" at full strength without keep-bokeh: "keep-bokeh level 0.0193
        (automatic); strength 0.7"."""
        parts = []
        if self.level is not None:
            how = "automatic" if self.keep_bokeh == "auto" else "given"
            parts.append(f"keep-bokeh level {self.level:.4g} ({how})")
        if self.strength != 1.0:
            parts.append(f"strength {self.strength:g}")
        return "; ".join(parts)

    def readout_line(self) -> str:
        """The readout and the intent in one line, as the deblur command prints it."""
        return "; ".join(p for p in (self.readout.line(), self.intent_line()) if p)

    def prepare(self) -> Deblurred:
        """Compute now what re-blending with keep-the-bokeh needs (the box mean of |defocus| and
        the automatic level), so that later re-blends are quick."""
        if self.defocus is not None:
            _ = self._maps.mean, self._maps.auto_level
        return self

    def reblend(self, strength: float = 1.0, keep_bokeh=None) -> Deblurred:
        """The same photo with another strength and keep-bokeh: no network run, the map's box mean
        and automatic level reused."""
        return Deblurred(self.input, self.sharp, None, strength, keep_bokeh, self.kind, self._maps)

    def crop(self, rows: slice, cols: slice) -> Deblurred:
        """The window [rows, cols] of this photo, blended as the whole photo is (its mask from the
        whole photo's box mean and automatic level)."""
        maps = self._maps
        window = None
        if maps.defocus is not None:
            window = _Maps(maps.defocus[rows, cols], lambda: maps.mean[rows, cols],
                           lambda: maps.auto_level)
        return Deblurred(self.input[rows, cols], self.sharp[rows, cols], None, self.strength,
                         self.keep_bokeh, self.kind, window if window is not None else _Maps(None))

    def reduced(self, factor: int) -> Deblurred:
        """This photo reduced by `factor` (block means of the input, the deblurred image, the map
        and the map's box mean; the whole photo's automatic level), for previews."""
        maps = self._maps
        small = _Maps(None)
        if maps.defocus is not None:
            small = _Maps(block_mean(maps.defocus, factor),
                          lambda: block_mean(maps.mean, factor), lambda: maps.auto_level)
        return Deblurred(block_mean(self.input, factor), block_mean(self.sharp, factor), None,
                         self.strength, self.keep_bokeh, self.kind, small)


def apply(image, deblurred, defocus, strength: float = 1.0, keep_bokeh=None) -> Deblurred:
    """`Deblurred(image, deblurred, defocus, strength, keep_bokeh)`: the input x, the deblurred
    y and the blended whole-photo map (required with keep_bokeh), blended; `.output`, `.keep`,
    `.level`."""
    return Deblurred(image, deblurred, defocus, strength, keep_bokeh)


def page_constants() -> dict:
    """The numbers the static page (and its model.json "intent" entry) uses to compute the same."""
    return {
        "box_radius": BOX_RADIUS,
        "otsu_bins": OTSU_BINS,
        "auto_level_factor": AUTO_LEVEL_FACTOR,
        "levels": list(LEVELS),
        "out_of_focus_level": OUT_OF_FOCUS_LEVEL,
        "mostly_sharp_share": MOSTLY_SHARP_SHARE,
        "sentences": dict(SENTENCES),
    }
