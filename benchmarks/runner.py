"""Running jobs in fresh processes, and what several rows share: a scratch folder, a random-weight
checkpoint, generated data folders with their prepared stores, the page rows' web site, and the
results measured so far."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from benchmarks import specs


def spawn(job: specs.Job, timeout: float, impl: str = "ours", checkout: str | None = None) -> dict:
    """Measure `job` in a fresh interpreter; returns its result (plus "process_s", the process's
    wall time as seen from here) or {"error": its last error line}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        payload = {"impl": impl, "checkout": checkout, "out": out, "job": specs.to_json(job)}
        cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps(payload)]
        env = dict(os.environ)
        if job.platform == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        process_s = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.exists(out):
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", ln)]
            return {"error": (errors or lines or [f"exit status {proc.returncode}"])[-1]}
        with open(out) as f:
            return {**json.load(f), "process_s": process_s}


class Runner:
    """Runs the rows' jobs; a context manager owning the scratch folder of what rows prepare."""

    def __init__(self, timeout: float, log: Callable[[str], None] = print):
        self.timeout = timeout
        self.log = log
        self.results: dict[str, dict] = {}  # row key -> its result, as rows finish
        self._scratch = tempfile.TemporaryDirectory(prefix="ifan-benchmark-")
        self._prepared: dict[object, dict] = {}

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self._scratch.cleanup()

    def folder(self, name: str) -> str:
        """A fresh folder in the scratch space."""
        path = os.path.join(self._scratch.name, name)
        os.makedirs(path)
        return path

    def run(self, job: specs.Job, impl: str = "ours", checkout: str | None = None,
            timeout: float | None = None) -> dict:
        """`spawn(job)` with this runner's timeout, or `timeout` where that is longer."""
        return spawn(job, max(self.timeout, timeout or 0), impl, checkout)

    def checkpoint(self, model: specs.Model, platform: str) -> dict:
        """{"path": ...} of a random-weight inference checkpoint of `model` (written once, in a
        worker), or {"error": ...}."""
        key = ("checkpoint", model)
        if key not in self._prepared:
            self.log(f"  preparing: a random-weight checkpoint of {model}")
            path = os.path.join(self._scratch.name, f"checkpoint_{len(self._prepared)}")
            self._prepared[key] = self.run(specs.MakeCheckpoint(model=model, path=path,
                                                                platform=platform))
        return self._prepared[key]

    def site(self, model: specs.Model, tile: int, overlap: int) -> dict:
        """{"path": ..., "export_s", "model_bytes", "site_bytes"} of the static web site of a
        random-weight `model` exported at `tile` / `overlap` (written once, in a worker), or
        {"error": ...}."""
        key = ("site", model, tile, overlap)
        if key not in self._prepared:
            self.log(f"  preparing: the web site of a random-weight {model}, tile {tile}")
            path = os.path.join(self._scratch.name, f"site_{len(self._prepared)}")
            self._prepared[key] = self.run(specs.MakeSite(model=model, tile=tile, overlap=overlap,
                                                          path=path))
        return self._prepared[key]

    def dataset(self, num: int, bits: int, size: tuple[int, int]) -> dict:
        """{"path": ...} of a DPDD-layout folder of `num` generated training scenes of `size` at
        `bits` bits with its store prepared by `ifan_jax.data.prepare` (written once, in a
        worker; see `scenes`), or {"error": ...}."""
        key = ("dataset", num, bits, size)
        if key not in self._prepared:
            self.log(f"  preparing: {num} scenes of {size[1]}x{size[0]} {bits}-bit PNGs and "
                     f"their store")
            root = self.folder(f"dpdd_{bits}bit_{size[1]}x{size[0]}")
            self._prepared[key] = self.run(specs.MakeScenes(root=root, scenes=num, bits=bits,
                                                            size=size))
        return self._prepared[key]
