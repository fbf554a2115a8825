"""What one measurement process does: a typed job, and its JSON form on the worker's command line.

Every job runs in a fresh interpreter (`runner.spawn` -> `worker`), so what a process holds is that
measurement's alone. A job class names the function that measures it for our implementation
(`OURS`) and, where the official code has a counterpart, for the official one (`OFFICIAL`), as
"module:function": the worker imports only that module, so an inference process never loads
TensorFlow or the training code.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar


@dataclasses.dataclass(frozen=True)
class Model:
    """The `IFAN` fields the benchmark varies (see `ifan_jax.models.IFAN.from_config`)."""

    channels: int
    num_iterations: int
    reblur_iterations: int
    iac_variant: str = "official"
    remat: bool = False  # training: recompute activations in the backward pass

    def config(self, dtype: str = "float32") -> dict:
        """A model config dict for `IFAN.from_config` / `abstract_params`."""
        return {**dataclasses.asdict(self), "dtype": dtype}


FULL_MODEL = Model(channels=32, num_iterations=17, reblur_iterations=17)  # the paper's, 10.5 M
TINY_MODEL = Model(channels=8, num_iterations=3, reblur_iterations=3)


@dataclasses.dataclass(frozen=True)
class Job:
    """Where and how often: `warmup` untimed calls, then `repeats` timed ones."""

    OURS: ClassVar[str]
    OFFICIAL: ClassVar[str | None] = None

    platform: str = "cpu"
    dtype: str = "float32"
    warmup: int = 0
    repeats: int = 1


@dataclasses.dataclass(frozen=True)
class Probe(Job):
    """Which backend and device JAX finds (asked in a worker, so the parent never claims a GPU)."""

    OURS: ClassVar[str] = "benchmarks.network:probe"


def parse_size(text: str) -> tuple[int, int]:
    """A command line's "WxH" as (H, W), the order of `Inference.size`."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


@dataclasses.dataclass(frozen=True)
class Inference(Job):
    """The jitted forward pass on one (1, H, W, 3) image, random weights; `cache_dir`: a
    persistent compilation cache to use."""

    OURS: ClassVar[str] = "benchmarks.network:inference"
    OFFICIAL: ClassVar[str | None] = "benchmarks.official:inference"

    model: Model = FULL_MODEL
    size: tuple[int, int] = (360, 640)  # (H, W)
    cache_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class TrainStep(Job):
    """One optimiser update (all three losses, RAdam, clipping) on a random (batch, crop, crop)."""

    OURS: ClassVar[str] = "benchmarks.training:train_step"
    OFFICIAL: ClassVar[str | None] = "benchmarks.official:train_step"

    model: Model = FULL_MODEL
    batch: int = 2
    crop: int = 256
    microbatches: int = 1  # config.microbatches: the batch in this many forward/backward passes


@dataclasses.dataclass(frozen=True)
class Iac(Job):
    """IAC alone on (B, H, W, C) features: `form` "map" (given filter map), "per_pixel" (the gather
    reference) or "head" (filters computed from the predictor's features)."""

    OURS: ClassVar[str] = "benchmarks.network:iac"
    OFFICIAL: ClassVar[str | None] = "benchmarks.official:iac"

    features: tuple[int, int, int, int] = (1, 90, 160, 128)
    iterations: int = 17
    filter_size: int = 3
    form: str = "map"


@dataclasses.dataclass(frozen=True)
class Bf16Psnr(Job):
    """PSNR between the bfloat16 and float32 outputs of one random-weight network on a photo."""

    OURS: ClassVar[str] = "benchmarks.precision:bf16_psnr"

    model: Model = FULL_MODEL
    size: tuple[int, int] = (512, 512)


@dataclasses.dataclass(frozen=True)
class MakeCheckpoint(Job):
    """Write a random-weight inference checkpoint of `model` to `path` (a preparation step)."""

    OURS: ClassVar[str] = "benchmarks.real_path:make_checkpoint"

    model: Model = FULL_MODEL
    path: str = ""


@dataclasses.dataclass(frozen=True)
class CheckpointInference(Job):
    """The path a user takes: `Deblurrer.from_checkpoint(checkpoint)`, then deblur an H x W image."""

    OURS: ClassVar[str] = "benchmarks.real_path:checkpoint_inference"

    checkpoint: str = ""
    size: tuple[int, int] = (360, 640)


@dataclasses.dataclass(frozen=True)
class MakeSite(Job):
    """Export a random-weight `model` (tile, overlap) and write its static web site to `path` (a
    preparation step of the page rows)."""

    OURS: ClassVar[str] = "benchmarks.page:make_site"

    model: Model = FULL_MODEL
    tile: int = 512
    overlap: int = 64
    path: str = ""


@dataclasses.dataclass(frozen=True)
class PageRun(Job):
    """The site at `site` in headless Chromium: `uploads` uploads of an H x W `photo`, on `backend`
    ("wasm", or "webgpu" through SwiftShader) with `threads` WebAssembly threads (0: the page's
    choice, every core); `timeout`: seconds for the page load and for each upload."""

    OURS: ClassVar[str] = "benchmarks.page:page_run"

    site: str = ""
    backend: str = "wasm"
    threads: int = 0
    photo: tuple[int, int] = (512, 512)
    uploads: int = 2
    timeout: float = 1200.0


SOURCES = ("store", "cache", "decode")  # where InputPipeline reads the pixels


@dataclasses.dataclass(frozen=True)
class MakeScenes(Job):
    """Write `scenes` generated DPDD-layout training scenes of `size` (H, W) at `bits` bits under
    `root` and prepare their store with `ifan_jax.data.prepare` (a preparation step)."""

    OURS: ClassVar[str] = "benchmarks.scenes:make_scenes"

    root: str = ""
    scenes: int = 8
    bits: int = 8
    size: tuple[int, int] = (1120, 1680)  # (H, W), DPDD's


@dataclasses.dataclass(frozen=True)
class InputPipeline(Job):
    """`ifan_jax.data.train_dataset` on a DPDD-layout folder, the pixels read from `source`:
    "store" (the prepared tiles, which must exist), "cache" (`cache=True`: every scene decoded into
    RAM first) or "decode" (PNGs decoded for every example). `repeats` batches timed after
    `warmup` ones as training runs the pipeline (all threads), then `one_thread_repeats` after
    `one_thread_warmup` on one thread for the CPU time per example; `bits` is the PNGs' depth and
    the depth they are read at."""

    OURS: ClassVar[str] = "benchmarks.input_pipeline:train_batches"

    data_dir: str = ""
    source: str = "store"
    bits: int = 8
    batch: int = 8
    crop: int = 256
    one_thread_warmup: int = 1
    one_thread_repeats: int = 2

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"InputPipeline source {self.source!r}: expected one of {SOURCES}")


@dataclasses.dataclass(frozen=True)
class FedTrainStep(Job):
    """The training step fed by `train_dataset` on a DPDD-layout folder: how much of the step
    time goes to waiting for input."""

    OURS: ClassVar[str] = "benchmarks.training:fed_train_step"

    model: Model = FULL_MODEL
    batch: int = 8
    crop: int = 256
    microbatches: int = 1
    data_dir: str = ""
    bits: int = 8


@dataclasses.dataclass(frozen=True)
class OnnxVsJax(Job):
    """The ONNX export of `model` run by onnxruntime on the CPU (the session settings named in
    `sessions`, `benchmarks.onnx_rows.SESSIONS`) and our jitted JAX forward on one (1, H, W, 3)
    image, turn by turn in one process: `repeats` rounds after a first call of each."""

    OURS: ClassVar[str] = "benchmarks.onnx_rows:onnx_vs_jax"

    model: Model = FULL_MODEL
    size: tuple[int, int] = (360, 640)  # (H, W)
    sessions: tuple[str, ...] = ("default", "no_spinning")
    tile: int = 512  # recorded in the export's metadata only
    overlap: int = 64
    precision: str = "float32"  # the export's --precision; float16 is also compared with float32


JOBS = {cls.__name__: cls for cls in (Probe, Inference, TrainStep, Iac, Bf16Psnr, MakeCheckpoint,
                                      CheckpointInference, MakeScenes, InputPipeline,
                                      FedTrainStep, OnnxVsJax, MakeSite, PageRun)}


def to_json(job: Job) -> dict:
    """{"job": class name, field: value, ...} (a `Model` as a dict, tuples as lists)."""
    return {"job": type(job).__name__, **dataclasses.asdict(job)}


def from_json(payload: dict) -> Job:
    """The inverse of `to_json`."""
    payload = dict(payload)
    cls = JOBS[payload.pop("job")]
    fields = {}
    for name, value in payload.items():
        if name == "model":
            value = Model(**value)
        elif isinstance(value, list):
            value = tuple(value)
        fields[name] = value
    return cls(**fields)
