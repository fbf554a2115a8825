"""The ONNX rows of the benchmark (benchmarks/onnx_rows.py): planned where they mean something,
measured turn by turn in one process, reported and checked against their targets.

No timing assertions: only properties that hold however fast the machine is.
"""

import argparse
import json
import os

import pytest
from repo import ROOT as REPO

from benchmarks import cli, onnx_rows, plan, report, rows, runner, specs, targets


def _args(**overrides):
    return argparse.Namespace(**{"tiny": False, "platform": "cpu", "dtype": "float32",
                                 "official": None, "rows": None, **overrides})


def test_rounds_take_turns_and_reverse_their_order():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in ("jax", "a", "b")}
    times = onnx_rows.interleaved(runs, 3)
    assert calls == ["jax", "a", "b", "b", "a", "jax", "jax", "a", "b"]
    assert {name: len(t) for name, t in times.items()} == {"jax": 3, "a": 3, "b": 3}
    assert all(wall >= 0 and cpu >= 0 for t in times.values() for wall, cpu in t)


def test_the_ratio_pairs_each_round():
    """A load that halves the speed of the last rounds moves both sides of each round alike (the
    two medians, 2.0 and 1.25 here, would say 1.6)."""
    ours = [(1.0, 0), (1.0, 0), (2.0, 0), (2.0, 0), (2.0, 0)]
    theirs = [(1.25, 0), (1.25, 0), (1.25, 0), (2.5, 0), (2.5, 0)]  # slowed one round later
    assert onnx_rows.paired_ratio(ours, theirs) == pytest.approx(0.8)


def test_the_job_survives_the_worker_command_line_and_the_table_its_json(tmp_path):
    job = specs.OnnxVsJax(model=specs.TINY_MODEL, size=(64, 96), sessions=("no_spinning",))
    assert specs.from_json(json.loads(json.dumps(specs.to_json(job)))) == job
    # The committed run's table comes back from its JSON (python -m benchmarks --from_json).
    name = os.path.join(REPO, "benchmarks", "results", "2026-12-04_intel-xeon-2cpu_onnx")
    cli.main([f"--from_json={name}.json", f"--markdown={tmp_path / 'table.md'}"])
    with open(name + ".md") as f:
        assert (tmp_path / "table.md").read_text() == f.read()


def test_planned_on_the_cpu_for_our_float32_runs_only():
    """Both sizes with both sessions, and the float16 export at the smaller size (its time, file
    and PSNR against float32); none on a GPU, in bfloat16 or for the tiny model."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("jax2onnx")
    planned = [row for row in plan.plan(_args()) if row.KIND == "onnx"]
    assert [row.key for row in planned] == ["onnx_640x360", "onnx_1280x720", "onnx_float16_640x360"]
    assert [row.job.size for row in planned] == [(360, 640), (720, 1280), (360, 640)]
    assert [row.job.precision for row in planned] == ["float32", "float32", "float16"]
    assert all(row.job.model == specs.FULL_MODEL for row in planned)
    assert [row.job.sessions for row in planned] == [("default", "no_spinning")] * 2 + [("default",)]
    for other in (_args(platform="gpu"), _args(dtype="bfloat16"), _args(tiny=True)):
        assert not [row for row in plan.plan(other) if row.KIND == "onnx"]
    assert {row.KIND for row in plan.plan(_args(rows=("onnx",)))} == {"onnx"}


def _measured_row(ratio_default, ratio_no_spinning):
    job = specs.OnnxVsJax(size=(360, 640))
    result = {"jax": {"time_s": 2.0, "cpu_s": 3.5}, "export_s": 20.0, "size_mb": 43.9,
              "onnxruntime_default": {"time_s": 2.0 * ratio_default, "cpu_s": 3.0,
                                      "ratio": ratio_default, "max_abs_vs_jax": 4e-7},
              "onnxruntime_no_spinning": {"time_s": 2.0 * ratio_no_spinning, "cpu_s": 2.5,
                                          "ratio": ratio_no_spinning, "max_abs_vs_jax": 4e-7}}
    return rows.OnnxRow(key="onnx_640x360", name="ONNX model 640x360", job=job,
                        result={"ours": result})


def test_table_lines_and_the_committed_target():
    row = _measured_row(1.1, 0.9)
    lines = report.summarize([row], "cpu")
    assert [(line["measure"], line["ours"]) for line in lines] == [
        ("our JAX forward (s)", 2.0), ("  CPU time, all threads (s)", 3.5),
        ("onnxruntime, default session (s)", 2.2), ("  CPU time, all threads (s)", 3.0),
        ("  time onnxruntime / JAX", 1.1),
        ("onnxruntime, no spinning session (s)", 1.8), ("  CPU time, all threads (s)", 2.5),
        ("  time onnxruntime / JAX", 0.9),
        ("max abs, onnxruntime vs JAX", 4e-7), ("export (s)", 20.0), ("file (MB)", 43.9)]
    assert all(line["official"] is None and line["ratio"] is None for line in lines)
    committed = targets.load_targets(os.path.join(REPO, "benchmarks", "targets.json"))
    checked = targets.check([row], committed, "cpu")
    assert [(c["value"], c["met"]) for c in checked] == [(1.1, True)]
    assert targets.check([_measured_row(1.3, 0.9)], committed, "cpu")[0]["met"] is False
    assert targets.check([row], committed, "gpu") == []  # a CPU target
    text = report.markdown({"date": "d", "machine": {"cpu": "c", "usable_cpus": 2, "logical_cpus": 2,
                                                     "memory_gb": 1, "os": "o", "python": "p",
                                                     "jax": "j", "flax": "f", "torch": "t"},
                            "mode": "full", "dtype": "float32", "load_average_start": [1.0],
                            "load_average_end": [1.0], "seconds": 1, "table": lines,
                            "errors": [], "targets": checked, "targets_file": "targets.json"})
    assert "| ONNX model 640x360 | onnxruntime, default session (s) | 2.2 |" in text
    assert "onnx_640x360 time onnxruntime (default session) / JAX <= 1.2 | 1.1 | yes |" in text


@pytest.mark.slow
def test_the_tiny_model_measured_in_a_worker():
    """The worker exports the tiny network, runs both sessions and JAX on one image in a fresh
    process and returns their timings, the ratios they imply and the outputs' agreement."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("jax2onnx")
    job = specs.OnnxVsJax(model=specs.TINY_MODEL, size=(64, 96), repeats=2, tile=64, overlap=16)
    result = runner.spawn(job, timeout=600)
    assert "error" not in result, result
    assert result["output_finite"] and result["size_mb"] > 0 and result["export_s"] > 0
    for name in ("default", "no_spinning"):
        ort = result[f"onnxruntime_{name}"]
        assert len(ort["times_s"]) == len(result["jax"]["times_s"]) == 2
        pairs = sorted(t / j for t, j in zip(ort["times_s"], result["jax"]["times_s"]))
        assert ort["ratio"] == pytest.approx((pairs[0] + pairs[1]) / 2)
        assert ort["ratio_of_medians"] == pytest.approx(ort["time_s"] / result["jax"]["time_s"])
        assert ort["cpu_ratio"] == pytest.approx(ort["cpu_s"] / result["jax"]["cpu_s"])
        assert ort["max_abs_vs_jax"] <= 1e-5 and ort["defocus_max_abs_vs_jax"] <= 1e-5
        assert ort["psnr_vs_jax_db"] > 100
