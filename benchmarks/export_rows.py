"""Benchmark rows of the ONNX export: export time and file size, onnxruntime's CPU time per image,
and what --precision=float16 changes (PSNR against float32, size, time).

    python -m benchmarks.export_rows --json=benchmarks/results/$(date +%F)_MACHINE_export.json

The paper's network (ch=32, N=17, official IAC unless --variant) with random official-shape weights
(`benchmarks.weights.random_params`); each precision is exported once by
`ifan_jax.export.export_onnx_bytes` and run by onnxruntime's CPU provider (all its default threads)
on random (1, H, W, 3) inputs (H and W padded to multiples of 8 as `Deblurrer` pads them, where
they are not). `--jax` adds our jitted `Deblurrer.run_batch` on the same inputs. The float16 PSNR is
between the two graphs' outputs on a photo (`skimage.data.coffee()`, 400 x 600). Nothing of the
official code runs here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks import machine, probes, specs


def _pad(h: int, w: int) -> tuple[int, int]:
    return h + (-h) % 8, w + (-w) % 8


def _session(data: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    start = time.perf_counter()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session, time.perf_counter() - start


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def rows(sizes, precisions, variant: str, repeats: int, with_jax: bool) -> dict:
    import onnxruntime as ort
    import skimage.data

    from benchmarks.weights import random_params
    from ifan_jax.export import export_onnx_bytes
    from ifan_jax.inference import Deblurrer

    config = {"channels": 32, "num_iterations": 17, "iac_variant": variant}
    deblurrer = Deblurrer(random_params(config), config)
    photo = (skimage.data.coffee().astype(np.float32) / 255)[None]  # 400 x 600, multiples of 8
    rng = np.random.default_rng(0)
    out = {"model": {**config, "weights": "random_params (Xavier-uniform, zero biases), seed 0"},
           "onnxruntime": ort.__version__, "threads": "onnxruntime default (all usable cores)",
           "repeats": repeats, "precisions": {}}
    outputs = {}
    for precision in precisions:
        data, metadata = export_onnx_bytes(deblurrer, precision=precision)
        session, session_s = _session(data)
        row = {"export_s": float(metadata["export_seconds"]), "size_bytes": len(data),
               "session_s": session_s, "sizes": {}}
        for h, w in sizes:
            ph, pw = _pad(h, w)
            x = rng.random((1, ph, pw, 3), np.float32)
            _, first = probes.timed_first(lambda x=x, s=session: s.run(None, {"image": x}))
            times = probes.timed_runs(lambda x=x, s=session: s.run(None, {"image": x}), repeats)
            row["sizes"][f"{w}x{h}"] = {"input": f"{pw}x{ph}", "first_run_s": first,
                                         **probes.summary(times)}
            print(f"onnxruntime {precision} {w}x{h}: {row['sizes'][f'{w}x{h}']['time_s']:.2f} s",
                  file=sys.stderr)
        outputs[precision] = session.run(None, {"image": photo})[0]
        out["precisions"][precision] = row
        session = None  # free it before the next precision's
    if "float32" in outputs:
        for precision in outputs:
            if precision != "float32":
                out["precisions"][precision]["psnr_vs_float32_db"] = _psnr(outputs[precision],
                                                                           outputs["float32"])
                out["precisions"][precision]["max_abs_vs_float32"] = float(
                    np.max(np.abs(outputs[precision] - outputs["float32"])))
    if with_jax:
        out["jax"] = {}
        for h, w in sizes:
            ph, pw = _pad(h, w)
            x = rng.random((1, ph, pw, 3), np.float32)
            run = lambda x=x: np.asarray(deblurrer.run_batch(x, with_defocus=True))
            _, first = probes.timed_first(run)
            out["jax"][f"{w}x{h}"] = {"input": f"{pw}x{ph}", "first_run_s": first,
                                      **probes.summary(probes.timed_runs(run, repeats))}
            print(f"JAX {w}x{h}: {out['jax'][f'{w}x{h}']['time_s']:.2f} s", file=sys.stderr)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.export_rows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, help="where to write the results")
    p.add_argument("--sizes", default="640x360,1280x720", help="WxH,... (default %(default)s)")
    p.add_argument("--precisions", default="float32,float16", help="default %(default)s")
    p.add_argument("--variant", choices=("official", "separable"), default="official")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jax", action="store_true", help="also time our jitted forward")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if os.path.exists(args.json) and not args.overwrite:
        p.error(f"{args.json} exists (pass --overwrite)")
    sizes = [specs.parse_size(s) for s in args.sizes.split(",")]
    result = {"machine": machine.machine_info(), "date": time.strftime("%Y-%m-%d"),
              **rows(sizes, args.precisions.split(","), args.variant, args.repeats, args.jax)}
    from ifan_jax import fileio

    fileio.atomic_write_text(args.json, json.dumps(result, indent=1) + "\n", overwrite=args.overwrite)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
