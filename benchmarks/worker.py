"""One measurement process: `python -m benchmarks.worker PAYLOAD_JSON`.

The payload is {"impl": "ours" | "official", "checkout": official checkout or null, "out": result
path, "job": `specs.to_json(job)`}; the result dict is written as JSON to "out". Only the module
that measures the job is imported (`importlib`, by the "module:function" the job class names), so
a process holds that measurement's libraries and no others (no TensorFlow in an inference row).
"""

from __future__ import annotations

import importlib
import json
import sys

from benchmarks import specs


def measure_function(job: specs.Job, impl: str):
    """The function measuring `job` for `impl` ("ours" or "official")."""
    target = job.OURS if impl == "ours" else job.OFFICIAL
    if target is None:
        raise ValueError(f"{type(job).__name__} has no {impl} implementation")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run(payload: dict) -> dict:
    """Measure the payload's job and return the result."""
    job = specs.from_json(payload["job"])
    fn = measure_function(job, payload["impl"])
    return fn(job, payload["checkout"]) if payload["impl"] == "official" else fn(job)


def main(argv=None) -> None:
    payload = json.loads((argv or sys.argv[1:])[0])
    result = run(payload)
    with open(payload["out"], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
