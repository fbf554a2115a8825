"""Deblurring with intent: a strength, keeping the bokeh, and a readout of how blurred a photo was.

    from ifan_jax.inference import intent
    sharp, d = deblurrer(image, return_defocus=True)      # the blended whole-photo map d
    level = intent.auto_level(d)                           # or a level of your own, in d's units
    out = intent.blend(image, sharp, strength=0.8, keep=intent.keep_mask(d, level))
    print(intent.readout(image, out, d).sentence)
    out = deblurrer(image, strength=0.8, keep_bokeh="auto")  # the same in one call

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
import math

import numpy as np
from scipy import ndimage

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


def check_strength(strength) -> float:
    """`strength` as a float; ValueError (one line) unless it is a number in [0, 1]."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"strength must be a number between 0 and 1, got {strength!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"strength must be between 0 and 1, got {strength!r}")
    return value


def check_level(level) -> float:
    """A keep-bokeh level as a float; ValueError (one line) unless it is a finite number > 0."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"the keep-bokeh level must be a number > 0 or 'auto', got {level!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"the keep-bokeh level must be a finite number > 0, got {level!r}")
    return value


def check_keep_bokeh(keep_bokeh) -> float | str | None:
    """None (off), "auto" or a level > 0 (as a float); ValueError (one line) otherwise."""
    if keep_bokeh is None or (isinstance(keep_bokeh, str) and keep_bokeh.strip().lower() == "auto"):
        return None if keep_bokeh is None else "auto"
    if isinstance(keep_bokeh, bool):
        raise ValueError(f"keep_bokeh must be None, 'auto' or a level > 0, got {keep_bokeh!r}")
    return check_level(keep_bokeh)


def _map(defocus) -> np.ndarray:
    d = np.asarray(defocus, np.float32)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"a defocus map must be H x W, got shape {d.shape}")
    return d


def smoothed(defocus) -> np.ndarray:
    """a: the box mean of |d| over (2 BOX_RADIUS + 1)^2 pixels, edges replicated (float64)."""
    return ndimage.uniform_filter(np.abs(_map(defocus)), size=2 * BOX_RADIUS + 1, mode="nearest",
                                  output=np.float64)


def keep_mask(defocus, level: float) -> np.ndarray:
    """H x W float32 in [0, 1], 1 = keep the input: smoothstep((a - L) / L) of the box mean a of
    |defocus| (`smoothed`): 0 where a <= L, 1 where a >= 2 L."""
    level = check_level(level)
    t = np.clip((smoothed(defocus) - level) / level, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def otsu_threshold(values, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold of `values`: the bin centre (of `bins` equal bins between min and max) that
    maximises the between-class variance, the first if tied (as skimage.filters.threshold_otsu).
    A constant array gives its value."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        raise ValueError("the defocus map has no finite values")
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return lo
    index = np.minimum(np.floor((v - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    hist = np.bincount(index, minlength=bins).astype(np.float64)
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
    `deblurred` y where it is 1, exactly. `keep`: H x W in [0, 1] (`keep_mask`) or None (no keep)."""
    strength = check_strength(strength)
    x = np.asarray(image, np.float32)
    y = np.asarray(deblurred, np.float32)
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"image {x.shape} and deblurred {y.shape} must be the same H x W x 3")
    if keep is None:
        if strength == 1.0:
            return y.copy()
        if strength == 0.0:
            return x.copy()
        return x + np.float32(strength) * (y - x)
    keep = np.asarray(keep, np.float32)
    if keep.shape != x.shape[:2]:
        raise ValueError(f"the keep mask {keep.shape} must be the image's H x W {x.shape[:2]}")
    s = (np.float32(strength) * (np.float32(1.0) - keep))[..., None]
    out = x + s * (y - x)
    return np.where(s == 1.0, y, np.where(s == 0.0, x, out))


@dataclasses.dataclass(frozen=True)
class Applied:
    """What `apply` did: the output, the keep mask (None without keep-bokeh) and the level used."""

    output: np.ndarray
    keep: np.ndarray | None
    level: float | None
    strength: float


def apply(image, deblurred, defocus, strength: float = 1.0, keep_bokeh=None) -> Applied:
    """Blend with a strength and, with `keep_bokeh` ("auto" or a level), keep the bokeh of `defocus`
    (the blended whole-photo map; required with keep_bokeh)."""
    strength = check_strength(strength)
    keep_bokeh = check_keep_bokeh(keep_bokeh)
    if keep_bokeh is not None and defocus is None:
        raise ValueError("keep-bokeh needs the defocus map (a model with a disparity map estimator)")
    level = None if keep_bokeh is None else resolve_level(defocus, keep_bokeh)
    keep = None if level is None else keep_mask(defocus, level)
    return Applied(blend(image, deblurred, strength, keep), keep, level, strength)


def psnr(a, b) -> float:
    """PSNR in dB (peak 1) between two images; inf when they are equal. Summed in float64 over
    blocks of a million values, so a large photo needs no float64 copy of itself."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"PSNR of images of different shapes {a.shape} and {b.shape}")
    if not a.size:
        raise ValueError("PSNR of empty images")
    a, b, total, step = a.reshape(-1), b.reshape(-1), 0.0, 1 << 20
    for i in range(0, a.size, step):
        diff = a[i:i + step].astype(np.float64) - b[i:i + step].astype(np.float64)
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
        """The readout in one line, as the deblur command prints it."""
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


def readout(image, output, defocus) -> Readout:
    """The readout of one photo: `image` the input, `output` what is written, `defocus` its map
    (None for a model without one: then only the PSNR)."""
    change = psnr(image, output)
    if defocus is None:
        return Readout(None, None, None, change, "No defocus map: the blur is not measured.")
    magnitude = np.abs(_map(defocus))
    shares = {level: float(np.count_nonzero(magnitude > np.float32(level)) / magnitude.size)
              for level in LEVELS}
    out_of_focus = float(np.count_nonzero(magnitude > np.float32(OUT_OF_FOCUS_LEVEL)) / magnitude.size)
    return Readout(shares, out_of_focus, float(np.median(magnitude)), change, sentence(out_of_focus))


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
