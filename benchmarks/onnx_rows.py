"""Our worker for the ONNX model's speed on the CPU: onnxruntime against our jitted JAX forward.

One process (`specs.OnnxVsJax`) builds the network with random official-shape weights
(`benchmarks.weights.random_params`), exports it as `ifan_jax.export.export_onnx_bytes` does for a
user (symbolic height and width), opens onnxruntime sessions on the CPU and times them and
`Deblurrer.run_batch(..., with_defocus=True)` (the outputs the graph has) on the same random
(1, H, W, 3) image, turn by turn: each round runs every implementation once, the order reversed
every other round, so a change in the machine's load falls on all of them alike. The sessions:

    default        onnxruntime.SessionOptions() as they come (all optimisations, one intra-op
                   thread per physical core, spinning threads)
    no_spinning    the same with "session.intra_op.allow_spinning" = "0": threads that wait
                   sleep instead of spinning, which gives the cores back to whatever else runs

Each implementation's result has the median and minimum wall time and the median CPU time of the
process over all threads (`probes.summary`); an onnxruntime result also has `ratio`, the median
over rounds of its wall time over JAX's in the same round (`paired_ratio`; `ratio_of_medians`
beside it), and how far its outputs are from JAX's (max abs, PSNR by
`ifan_jax.evaluation.metrics.psnr`). The export's time and file size are recorded; a float16
export (`--precision=float16`) is also run beside the float32 one on a photo
(`skimage.data.coffee()`, 400 x 600): its PSNR and max abs against float32 and its file size.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from benchmarks import probes, specs
from benchmarks.weights import random_params

# name -> onnxruntime session config entries (on top of the defaults)
SESSIONS = {"default": {}, "no_spinning": {"session.intra_op.allow_spinning": "0"}}


def interleaved(runs: dict, repeats: int) -> dict:
    """{name: [(wall s, CPU s), ...]}: `repeats` rounds of one call of every `runs[name]()`, in
    order in even rounds and in reverse order in odd ones."""
    times = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name] += probes.timed_runs(runs[name], 1)
    return times


def paired_ratio(times: list[tuple[float, float]], reference: list[tuple[float, float]]) -> float:
    """The median over rounds of the wall-time ratio times[r] / reference[r]: each round's two
    calls ran next to each other, so a load that changes between rounds (another job starting or
    ending) cancels out, where a ratio of the two medians can take its fast rounds from one side
    and its slow ones from the other."""
    return statistics.median(t / r for (t, _), (r, _) in zip(times, reference))


def onnx_vs_jax(job: specs.OnnxVsJax) -> dict:
    """Export, then onnxruntime's sessions and our JAX forward timed turn by turn (module doc)."""
    import onnxruntime as ort

    from ifan_jax.export import export_onnx_bytes
    from ifan_jax.export.onnx import cpu_session
    from ifan_jax.inference import Deblurrer

    config = job.model.config(job.dtype)
    deblurrer = Deblurrer(random_params(config), config)
    load = [round(v, 2) for v in os.getloadavg()]
    data, metadata = export_onnx_bytes(deblurrer, job.tile, job.overlap, precision=job.precision)
    sessions, session_s = {}, {}
    for name in job.sessions:
        start = time.perf_counter()
        sessions[name] = cpu_session(data, SESSIONS[name])
        session_s[name] = time.perf_counter() - start
    h, w = job.size
    image = np.random.default_rng(1).random((1, h, w, 3), np.float32)
    runs = {"jax": lambda: np.asarray(deblurrer.run_batch(image, with_defocus=True))}
    for name, s in sessions.items():
        runs[name] = lambda s=s: s.run(None, {"image": image})
    firsts = {name: probes.timed_first(run) for name, run in runs.items()}  # compile, warm-up
    times = interleaved(runs, job.repeats)

    from ifan_jax.evaluation import metrics  # after the timing: it loads SciPy

    ours = firsts["jax"][0]
    out = {"jax": {**probes.summary(times["jax"]), "first_run_s": firsts["jax"][1]},
           "export_s": float(metadata["export_seconds"]), "size_mb": len(data) / 1e6,
           "onnxruntime_version": ort.__version__, "load_before": load,
           "load_after": [round(v, 2) for v in os.getloadavg()],
           "peak_rss_mb": probes.peak_rss_mb(), "output_finite": bool(np.isfinite(ours).all())}
    if job.precision != "float32":
        out["vs_float32"] = against_float32(deblurrer, job, sessions[job.sessions[0]])
    for name in sessions:
        deblurred, defocus = firsts[name][0][:2]
        summary = probes.summary(times[name])
        out[f"onnxruntime_{name}"] = {
            **summary, "first_run_s": firsts[name][1], "session_s": session_s[name],
            "ratio": paired_ratio(times[name], times["jax"]),
            "ratio_of_medians": summary["time_s"] / out["jax"]["time_s"],
            "cpu_ratio": summary["cpu_s"] / out["jax"]["cpu_s"],
            "max_abs_vs_jax": float(np.max(np.abs(deblurred - ours[..., :3]))),
            "defocus_max_abs_vs_jax": float(np.max(np.abs(defocus - ours[..., 3:]))),
            "psnr_vs_jax_db": float(metrics.psnr(deblurred[0], ours[0, ..., :3]))}
    return out


def against_float32(deblurrer, job: specs.OnnxVsJax, session) -> dict:
    """A lower-precision export's deblurred photo (`skimage.data.coffee()`, 400 x 600) against the
    float32 export's: PSNR, max abs, and the float32 file's size and export time."""
    import skimage.data

    from ifan_jax.evaluation import metrics
    from ifan_jax.export import export_onnx_bytes
    from ifan_jax.export.onnx import cpu_session

    photo = (skimage.data.coffee().astype(np.float32) / 255)[None]  # multiples of 8
    start = time.perf_counter()
    data, _ = export_onnx_bytes(deblurrer, job.tile, job.overlap)
    export_s = time.perf_counter() - start
    ref = cpu_session(data).run(["deblurred"], {"image": photo})[0]
    low = session.run(["deblurred"], {"image": photo})[0].astype(np.float32)
    return {"psnr_db": float(metrics.psnr(low[0], ref[0])),
            "max_abs": float(np.max(np.abs(low - ref))),
            "float32_size_mb": len(data) / 1e6, "float32_export_s": export_s}
