"""The rows of a benchmark report, typed: what each row measures and how.

A row holds its job(s) and, once measured, `result` = {"ours": {...}, "official": {...}} (the
workers' JSON dicts; "official" only where the official code was measured or, for the checkpoint
rows, is the baseline they are compared with). `report` turns rows into table lines per type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import ClassVar

from benchmarks import specs
from benchmarks.runner import Runner


@dataclasses.dataclass(kw_only=True)
class Row:
    """One row: `key` (stable, for targets), `name` (for people) and what it measured."""

    KIND: ClassVar[str]

    key: str
    name: str
    result: dict = dataclasses.field(default_factory=dict)

    def measure(self, runner: Runner) -> None:
        raise NotImplementedError

    def results(self) -> Iterator[tuple[str, dict]]:
        """(label, result dict) of every process this row ran."""
        yield from self.result.items()

    def jobs(self) -> dict:
        """The row's jobs as JSON (what exactly ran)."""
        return {}

    def to_json(self) -> dict:
        return {"key": self.key, "name": self.name, "kind": self.KIND, **self.jobs(),
                "result": self.result}


@dataclasses.dataclass(kw_only=True)
class Compared(Row):
    """A job measured for ours and, given a `checkout` of the official code, for it too; or,
    with a `baseline` row, a variant of ours (a setting the official code does not have) set
    beside the official result of that row, which measured the same work."""

    job: specs.Job
    checkout: str | None = None
    baseline: str | None = None

    def measure(self, runner: Runner) -> None:
        self.result = {"ours": runner.run(self.job)}
        if self.baseline:
            official = runner.results.get(self.baseline, {}).get("official")
            if official:
                self.result["official"] = official
        elif self.checkout:
            self.result["official"] = runner.run(self.job, "official", self.checkout)

    def results(self) -> Iterator[tuple[str, dict]]:
        yield from ((k, v) for k, v in self.result.items()
                    if k == "ours" or not self.baseline)  # a baseline's result is its row's

    def jobs(self) -> dict:
        return {"ours": specs.to_json(self.job), "official_checkout": self.checkout,
                "official_from": self.baseline}


@dataclasses.dataclass(kw_only=True)
class InferenceRow(Compared):
    """The forward pass on random weights (`specs.Inference`)."""

    KIND: ClassVar[str] = "inference"


@dataclasses.dataclass(kw_only=True)
class TrainRow(Compared):
    """One optimiser update (`specs.TrainStep`)."""

    KIND: ClassVar[str] = "train"


@dataclasses.dataclass(kw_only=True)
class IacRow(Compared):
    """IAC alone (`specs.Iac`)."""

    KIND: ClassVar[str] = "iac"


@dataclasses.dataclass(kw_only=True)
class CacheRow(Row):
    """The same inference job in two processes sharing a fresh persistent compilation cache:
    the second loads the executable instead of compiling it."""

    KIND: ClassVar[str] = "cache"

    job: specs.Inference

    def measure(self, runner: Runner) -> None:
        job = dataclasses.replace(self.job, cache_dir=runner.folder(f"cache_{self.key}"))
        self.result = {"ours": {"cold": runner.run(job), "warm": runner.run(job)}}

    def results(self) -> Iterator[tuple[str, dict]]:
        for when, res in self.result.get("ours", {}).items():
            yield f"ours, {when}", res

    def jobs(self) -> dict:
        return {"ours": specs.to_json(self.job)}


@dataclasses.dataclass(kw_only=True)
class PsnrRow(Row):
    """bfloat16 against float32 output (`specs.Bf16Psnr`)."""

    KIND: ClassVar[str] = "psnr"

    job: specs.Bf16Psnr

    def measure(self, runner: Runner) -> None:
        self.result = {"ours": runner.run(self.job)}

    def jobs(self) -> dict:
        return {"ours": specs.to_json(self.job)}


@dataclasses.dataclass(kw_only=True)
class CheckpointRow(Row):
    """The real inference path: a fresh process loads a random-weight checkpoint of `model`
    (written once per run) with `Deblurrer.from_checkpoint` and deblurs `job.size`. Its
    "official" result is the official measurement of row `baseline` (an inference row of the same
    size), when that row has one: the official code loads its weights in the same process."""

    KIND: ClassVar[str] = "checkpoint"

    model: specs.Model
    job: specs.CheckpointInference
    baseline: str | None = None

    def measure(self, runner: Runner) -> None:
        made = runner.checkpoint(self.model, self.job.platform)
        if "error" in made:
            self.result = {"ours": {"error": f"making the checkpoint: {made['error']}"}}
            return
        self.result = {"ours": runner.run(dataclasses.replace(self.job,
                                                              checkpoint=made["path"]))}
        official = runner.results.get(self.baseline, {}).get("official")
        if official:
            self.result["official"] = official

    def results(self) -> Iterator[tuple[str, dict]]:
        yield from ((k, v) for k, v in self.result.items() if k == "ours")  # baseline: its row's

    def jobs(self) -> dict:
        return {"ours": specs.to_json(self.job), "model": dataclasses.asdict(self.model),
                "official_from": self.baseline}


@dataclasses.dataclass(kw_only=True)
class InputRow(Row):
    """`train_dataset` throughput on `scenes` generated DPDD-layout scenes of `image_size` (their
    store prepared; the job's source says whether it reads it)."""

    KIND: ClassVar[str] = "input"

    job: specs.InputPipeline | specs.FedTrainStep
    scenes: int
    image_size: tuple[int, int]

    def measure(self, runner: Runner) -> None:
        made = runner.dataset(self.scenes, self.job.bits, self.image_size)
        if "error" in made:
            self.result = {"ours": {"error": f"preparing the data folder: {made['error']}"}}
            return
        self.result = {"ours": runner.run(dataclasses.replace(self.job, data_dir=made["path"]))}

    def jobs(self) -> dict:
        return {"ours": specs.to_json(self.job), "scenes": self.scenes,
                "image_size": list(self.image_size)}


@dataclasses.dataclass(kw_only=True)
class FedTrainRow(InputRow):
    """The training step fed by the input pipeline on generated scenes (`specs.FedTrainStep`)."""

    KIND: ClassVar[str] = "fed_train"


@dataclasses.dataclass(kw_only=True)
class PageRow(Row):
    """The static page in headless Chromium (`specs.PageRun`) on the site of a random-weight
    `model` exported at `tile` / `overlap` (written once per run). With `relative_to` (the key of
    another page row), its result also has "time_vs_relative": its time per tile over that row's."""

    KIND: ClassVar[str] = "page"

    model: specs.Model
    tile: int
    overlap: int
    job: specs.PageRun
    relative_to: str | None = None

    def measure(self, runner: Runner) -> None:
        made = runner.site(self.model, self.tile, self.overlap)
        if "error" in made:
            self.result = {"ours": {"error": f"making the site: {made['error']}"}}
            return
        # The page's own timeouts (loading, each upload), and time to start the browser.
        timeout = self.job.timeout * (self.job.uploads + 1) + 120
        ours = runner.run(dataclasses.replace(self.job, site=made["path"]), timeout=timeout)
        if "error" not in ours:
            ours.update(export_s=made["export_s"], site_bytes=made["site_bytes"],
                        model_bytes=made["model_bytes"])
            base = runner.results.get(self.relative_to or "", {}).get("ours", {}).get("time_s")
            if base:
                ours["time_vs_relative"] = ours["time_s"] / base
        self.result = {"ours": ours}

    def jobs(self) -> dict:
        return {"ours": specs.to_json(self.job), "model": dataclasses.asdict(self.model),
                "tile": self.tile, "overlap": self.overlap, "relative_to": self.relative_to}


@dataclasses.dataclass(kw_only=True)
class PagePhotoRow(PageRow):
    """A photo of many tiles through the page end to end (a kind of its own: it takes long)."""

    KIND: ClassVar[str] = "page_photo"


@dataclasses.dataclass(kw_only=True)
class WebGpuRow(PageRow):
    """The page on WebGPU (a kind of its own: on SwiftShader, a software GPU, it takes long)."""

    KIND: ClassVar[str] = "webgpu"


@dataclasses.dataclass(kw_only=True)
class OnnxRow(Row):
    """The ONNX export run by onnxruntime on the CPU against our JAX forward, in one process
    (`specs.OnnxVsJax`, `benchmarks.onnx_rows`); nothing of the official code."""

    KIND: ClassVar[str] = "onnx"

    job: specs.OnnxVsJax

    def measure(self, runner: Runner) -> None:
        self.result = {"ours": runner.run(self.job)}

    def jobs(self) -> dict:
        return {"ours": specs.to_json(self.job)}


KINDS = tuple(cls.KIND for cls in (InferenceRow, CheckpointRow, CacheRow, TrainRow, IacRow, PsnrRow,
                                   InputRow, FedTrainRow, OnnxRow, PageRow, PagePhotoRow,
                                   WebGpuRow))  # what --rows selects


def measure(rows: list[Row], runner: Runner) -> list[Row]:
    """Measure every row in order (a row may use the results of the rows before it)."""
    for row in rows:
        row.measure(runner)
        runner.results[row.key] = row.result
        runner.log(f"  measured: {row.name}")
    return rows
