"""The evaluation core: run the network over the examples of a split and score each image.

    scorer = Scorer(Forward(model.apply), dual=False, metrics=("psnr", "ssim"), input_metrics=("psnr",))
    scored = list(scorer(params, examples))        # examples: numpy dicts of a split
    sums = totals([s.scores for s in scored], ("psnr", "ssim", "input_psnr"))
    print(means(sums, ("psnr", "ssim", "input_psnr")))

Both front-ends use it: validation inside training (`ifan_jax.training.validation.Validator`, which sums
`totals` over hosts) and `ifan_jax.evaluation.job` (scores.csv, summary.json, images, timing). Both
run the one forward pass of inference, `ifan_jax.inference.Forward` (the `Deblurrer`'s, for a
checkpoint; a pure function of the parameters, so validation passes the training parameters),
with its padding (`Forward.prepare`: edge replication to a multiple of 8, cropped back after; a
no-op for the official evaluation's images, which the loader crops to a multiple of 8) and the
whole image at once, as the official evaluation runs it. `Scorer` rotates the outputs of rotated
data sets back and scores them against the ground truth with the named metrics of `METRICS`; an
output with a NaN or an infinity is a one-line error, never a score.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import jax
import numpy as np

from ifan_jax.evaluation import lpips, metrics
from ifan_jax.inference import Forward, check_finite

METRICS = ("psnr", "ssim", "mae", "lpips")  # the named metrics, in the order reports list them
INPUT_PREFIX = "input_"  # input_psnr: a metric of the blurred input against the ground truth
DUAL_KEYS = ("c", "r", "l")  # the views the dual-pixel model reads, in its argument order


def metric_functions(names: Sequence[str]) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """{name: f(output, sharp) -> float} for metric names of `METRICS` (H x W x 3 in [0, 1])."""
    table = {"psnr": metrics.psnr, "ssim": metrics.ssim, "mae": metrics.mae}
    out = {}
    for name in names:
        if name == "lpips":
            out[name] = lpips.default()  # AlexNet weights loaded once per process
        elif name in table:
            out[name] = table[name]
        else:
            raise ValueError(f"unknown metric {name!r}; expected one of {METRICS}")
    return out


@dataclasses.dataclass(frozen=True)
class Scored:
    """One evaluated image: its name, the output (H x W x 3 float32 in [0, 1], rotated back for
    rotated data sets) and its scores ({metric: value}; no metrics without ground truth; "seconds"
    when timed)."""

    name: str
    output: np.ndarray
    scores: dict[str, float]
    bit_depth: int | None = None  # the depth the input was read at, when the example says


class Scorer:
    """The forward pass (`forward`, an `ifan_jax.inference.Forward`) plus named metrics, applied
    image by image to a split, each image whole.

    `dual`: feed the right/left views (the dual-pixel model). `metrics`: names of `METRICS`
    computed against example["gt"] when present; `input_metrics`: the same for the blurred input
    (reported as "input_<name>"). `rotated`: the examples come rotated 90 degrees
    counter-clockwise (PixelDP); outputs and ground truth are rotated back before scoring.
    `timed`: add "seconds", the steady-state time of the forward (the first image of each shape
    runs once to compile; then it is timed from dispatch to `block_until_ready`, input on device).
    """

    def __init__(self, forward: Forward, *, dual: bool, metrics: Sequence[str] = METRICS,
                 input_metrics: Sequence[str] = (), rotated: bool = False, timed: bool = False):
        self.forward_pass = forward
        self.keys = DUAL_KEYS if dual else ("c",)
        self.metrics = metric_functions(metrics)
        self.input_metrics = metric_functions(input_metrics)
        self.rotated = rotated
        self.timed = timed
        self._compiled: set[tuple] = set()

    def forward(self, params, example: dict) -> tuple[np.ndarray, float | None]:
        """(output H x W x 3 float32 at the input's size, seconds or None) for one example."""
        h, w = example["c"].shape[:2]
        views = self.forward_pass.prepare(*(example[k] for k in self.keys))
        seconds = None
        if self.timed:
            jax.block_until_ready(views)
            shape = views[0].shape
            if shape not in self._compiled:  # compile (and run once) outside the timing
                self.forward_pass(params, *views).block_until_ready()
                self._compiled.add(shape)
            start = time.perf_counter()
            out = self.forward_pass(params, *views).block_until_ready()
            seconds = time.perf_counter() - start
        else:
            out = self.forward_pass(params, *views)
        output = np.asarray(out[0, :h, :w], np.float32)
        check_finite(f"the output for {_text(example.get('name', 'an image'))}", output)
        return output, seconds

    def score(self, params, example: dict) -> Scored:
        """Run and score one example {"name", "c", ["r", "l"], ["gt"], ["bit_depth"]}."""
        output, seconds = self.forward(params, example)
        blurred, gt = example["c"], example.get("gt")
        if self.rotated:
            output, blurred = _unrotate(output), _unrotate(blurred)
            gt = None if gt is None else _unrotate(gt)
        scores = {}
        if gt is not None:
            scores.update({k: float(f(output, gt)) for k, f in self.metrics.items()})
            scores.update({INPUT_PREFIX + k: float(f(blurred, gt))
                           for k, f in self.input_metrics.items()})
        if seconds is not None:
            scores["seconds"] = seconds
        depth = example.get("bit_depth")
        return Scored(_text(example["name"]), output, scores,
                      None if depth is None else int(depth))

    def __call__(self, params, examples: Iterable[dict]) -> Iterator[Scored]:
        """`score` each example in turn."""
        for example in examples:
            yield self.score(params, example)


def totals(rows: Iterable[dict], keys: Sequence[str]) -> np.ndarray:
    """(len(keys), 2) float64 array: per key the sum of the rows' values and how many rows have
    one. Sums of several hosts add up to the sums of all their rows."""
    out = np.zeros((len(keys), 2))
    for row in rows:
        for i, key in enumerate(keys):
            value = row.get(key)
            if value is not None:
                out[i] += (value, 1.0)
    return out


def means(sums: np.ndarray, keys: Sequence[str]) -> dict[str, float | None]:
    """{key: mean} from `totals`; None for a key no row has."""
    return {key: float(s / n) if n else None for key, (s, n) in zip(keys, sums, strict=True)}


def _unrotate(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(image, k=-1))


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)
