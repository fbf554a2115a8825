"""Benchmark rows of the ONNX export, all from one run on one machine: the export's time and file
size, onnxruntime's CPU time per image beside our jitted JAX forward and the official PyTorch code,
and what --precision=float16 changes (PSNR against float32, size, time). The web page's rows (WASM
and WebGPU in headless Chromium) are `python -m benchmarks --rows=page` (benchmarks/page.py).

    python -m benchmarks.export_rows --official=/tmp/ifan_official --jax \\
        --json=benchmarks/results/$(date +%F)_MACHINE_export.json

The paper's network (ch=32, N=17, official IAC unless --variant; `--tiny`: ch=8, N=3, small sizes,
to check the script) with random official-shape weights (`benchmarks.weights.random_params`).
Each precision is exported once by `ifan_jax.export.export_onnx_bytes` (symbolic height and width,
tile 512 in its metadata) and run by onnxruntime's CPU provider (all its default threads) on random
(1, H, W, 3) inputs (H and W padded to multiples of 8 as `Deblurrer` pads them, where they are
not); each size: one first run, then --repeats timed runs (median, minimum, CPU time).

- `--jax`: our jitted `Deblurrer.run_batch(..., with_defocus=True)` (the export's outputs) on the
  same inputs, in this process.
- `--official=CHECKOUT`: the official `Network(is_train=False)` forward at the same sizes, each size
  in its own process (`benchmarks.official.inference` through `benchmarks.runner.spawn`, as the main
  benchmark runs it; Xavier-uniform random weights; torch on all usable cores). Nothing of the
  official code is copied here: it is imported from the checkout.
- The float16 PSNR is between the two graphs' outputs on a photo (`skimage.data.coffee()`,
  400 x 600); float16 is measured last and `--skip_float16_after=S` leaves it out when the run has
  already taken S seconds.

The machine (`benchmarks.machine.machine_info`) and the load averages at the start, before each
part and at the end are recorded; the JSON and a Markdown table (the same path, `.md`) are written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from benchmarks import machine, specs

FULL = {"channels": 32, "num_iterations": 17}
TINY = {"channels": 8, "num_iterations": 3}
TINY_SIZES = "128x72,256x144"
FULL_TILE, TINY_TILE = 512, 128


def _pad(h: int, w: int) -> tuple[int, int]:
    return h + (-h) % 8, w + (-w) % 8


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _session(data: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    start = time.perf_counter()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session, time.perf_counter() - start


def size_key(h: int, w: int) -> str:
    return f"{w}x{h}"


def markdown_path(json_path: str) -> str:
    """The Markdown table's path beside the JSON's: the same name, `.md`."""
    root, ext = os.path.splitext(json_path)
    return (root if ext.lower() == ".json" else json_path) + ".md"


# --------------------------------------------------------------------------------------------
# The parts


def _timed_sizes(run, sizes, repeats: int, rng, label: str) -> dict:
    """{"WxH": first run and `repeats` timed runs of `run(x)` on a random padded input}."""
    from benchmarks import probes

    out = {}
    for h, w in sizes:
        ph, pw = _pad(h, w)
        x = rng.random((1, ph, pw, 3), np.float32)
        load = _load()
        _, first = probes.timed_first(lambda x=x: run(x))
        times = probes.timed_runs(lambda x=x: run(x), repeats)
        out[size_key(h, w)] = {"input": f"{pw}x{ph}", "first_run_s": first, **probes.summary(times),
                               "load_before": load}
        _say(f"{label} {w}x{h}: {out[size_key(h, w)]['time_s']:.2f} s (median of {repeats})")
    return out


def onnxruntime_rows(deblurrer, precision: str, tile: int, overlap: int, sizes, repeats: int, rng,
                     photo) -> tuple[dict, bytes, dict, np.ndarray]:
    """(the precision's row, its ONNX bytes, its metadata, its output on `photo`)."""
    from ifan_jax.export import export_onnx_bytes

    load = _load()
    data, metadata = export_onnx_bytes(deblurrer, tile, overlap, precision=precision)
    _say(f"export {precision}: {metadata['export_seconds']} s, {len(data) / 1e6:.1f} MB")
    session, session_s = _session(data)
    row = {"export_s": float(metadata["export_seconds"]), "size_bytes": len(data),
           "session_s": session_s, "load_before": load,
           "sizes": _timed_sizes(lambda x: session.run(None, {"image": x}), sizes, repeats, rng,
                                 f"onnxruntime {precision}")}
    return row, data, metadata, session.run(None, {"image": photo})[0]


def jax_rows(deblurrer, sizes, repeats: int, rng) -> dict:
    return _timed_sizes(lambda x: np.asarray(deblurrer.run_batch(x, with_defocus=True)), sizes,
                        repeats, rng, "JAX")


def official_rows(checkout: str, model: specs.Model, sizes, repeats: int, timeout: float) -> dict:
    """The official forward at each size, each in a fresh process (`benchmarks.official.inference`)."""
    from benchmarks import runner

    out = {"checkout": os.path.abspath(checkout), "sizes": {}}
    for h, w in sizes:
        ph, pw = _pad(h, w)
        job = specs.Inference(model=model, size=(ph, pw), repeats=repeats)
        load = _load()
        result = runner.spawn(job, timeout, impl="official", checkout=checkout)
        out["sizes"][size_key(h, w)] = {"input": f"{pw}x{ph}", **result, "load_before": load}
        _say(f"official {w}x{h}: " + (f"{result['time_s']:.2f} s" if "time_s" in result
                                      else f"FAILED: {result['error']}"))
    return out


# --------------------------------------------------------------------------------------------
# The run and its table


def measure(args, sizes) -> dict:
    import onnxruntime as ort
    import skimage.data

    from benchmarks.weights import random_params
    from ifan_jax.evaluation import metrics
    from ifan_jax.inference import Deblurrer

    start = time.perf_counter()
    base = TINY if args.tiny else FULL
    config = {**base, "iac_variant": args.variant}
    tile = TINY_TILE if args.tiny else FULL_TILE
    overlap = 32 if args.tiny else 64
    deblurrer = Deblurrer(random_params(config), config)
    photo = (skimage.data.coffee().astype(np.float32) / 255)[None]  # 400 x 600, multiples of 8
    rng = np.random.default_rng(0)
    out = {"command": "python -m benchmarks.export_rows " + " ".join(args.argv),
           "model": {**config, "weights": "random_params (Xavier-uniform, zero biases), seed 0"},
           "tile": tile, "overlap": overlap,
           "onnxruntime": ort.__version__, "threads": "onnxruntime and JAX: their defaults (all usable "
           "cores); torch: all usable cores",
           "repeats": args.repeats, "precisions": {}, "errors": []}
    precisions = args.precisions.split(",")
    outputs = {}

    def part(name, fn):
        _say(f"{name} (load {_load()})")
        try:
            return fn()
        except Exception as e:  # one part failing leaves the others' rows
            text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            out["errors"].append({"part": name, "error": text})
            _say(f"{name} FAILED: {text}")
            return None

    f32 = None
    if "float32" in precisions:
        f32 = part("onnxruntime float32", lambda: onnxruntime_rows(
            deblurrer, "float32", tile, overlap, sizes, args.repeats, rng, photo))
        if f32:
            out["precisions"]["float32"], outputs["float32"] = f32[0], f32[3]
    f32 = None
    if args.official:
        model = specs.TINY_MODEL if args.tiny else specs.FULL_MODEL
        model = dataclasses.replace(model, iac_variant=args.variant)
        out["official"] = part("official", lambda: official_rows(args.official, model, sizes,
                                                                  args.repeats, args.timeout))
        for key, row in ((out["official"] or {}).get("sizes") or {}).items():
            if "error" in row:
                out["errors"].append({"part": f"official {key}", "error": row["error"]})
    if args.jax:
        out["jax"] = part("jax", lambda: jax_rows(deblurrer, sizes, args.repeats, rng))
    for precision in precisions:
        if precision == "float32":
            continue
        elapsed = time.perf_counter() - start
        if args.skip_float16_after is not None and elapsed > args.skip_float16_after:
            out["precisions"][precision] = {
                "skipped": f"the run had taken {elapsed:.0f} s (> --skip_float16_after="
                           f"{args.skip_float16_after:g})"}
            _say(f"{precision} skipped after {elapsed:.0f} s")
            continue
        got = part(f"onnxruntime {precision}", lambda p=precision: onnxruntime_rows(
            deblurrer, p, tile, overlap, sizes, args.repeats, rng, photo))
        if got:
            out["precisions"][precision], outputs[precision] = got[0], got[3]
    if "float32" in outputs:
        for precision, y in outputs.items():
            if precision != "float32":
                out["precisions"][precision]["psnr_vs_float32_db"] = metrics.psnr(y, outputs["float32"])
                out["precisions"][precision]["max_abs_vs_float32"] = float(
                    np.max(np.abs(y - outputs["float32"])))
    out["seconds"] = time.perf_counter() - start
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:.0f}"


def _time_cell(row: dict | None) -> str:
    """"median (min)" of a size's timings, or what went wrong."""
    if not row:
        return "-"
    if "error" in row:
        return "failed: " + row["error"]
    return f"{_fmt(row['time_s'])} ({_fmt(row['time_min_s'])})"


def markdown(result: dict) -> str:
    """The Markdown table of a result of `measure` (with "machine", "date", load averages)."""
    m = result["machine"]
    model = result["model"]
    sizes = list(result.get("sizes") or [])
    lines = [f"# ONNX export benchmark rows ({result['date']}, one run)", "",
             f"Machine: {m['cpu']}, {m['usable_cpus']} usable cores "
             f"({', '.join(m.get('instruction_sets') or []) or 'no listed SIMD'}; "
             f"{_fmt(m.get('max_clock_mhz') or m.get('clock_mhz'), 4)} MHz), {m['memory_gb']} GB; "
             f"jax {m.get('jax')}, torch {m.get('torch')}, onnxruntime {result['onnxruntime']}.",
             f"Load average (1, 5, 15 min): {result['load_average_start']} at the start, "
             f"{result['load_average_end']} at the end; the run took {_fmt(result['seconds'], 4)} s.",
             f"Model: ch={model['channels']}, N={model['num_iterations']}, {model['iac_variant']} IAC, "
             f"{model['weights']}; tile {result['tile']} in the export's metadata.",
             f"Command: `{result['command']}`", "",
             "Forward time of one image in seconds: median of "
             f"{result['repeats']} runs after a first one (minimum in brackets).", "",
             "| | " + " | ".join(sizes) + " |", "|---" * (len(sizes) + 1) + "|"]

    def size_row(name, table):
        lines.append(f"| {name} | " + " | ".join(_time_cell((table or {}).get(s)) for s in sizes) + " |")

    for precision, row in result["precisions"].items():
        if "sizes" in row:
            size_row(f"onnxruntime CPU, {precision}", row["sizes"])
    if "jax" in result:
        size_row("ifan-jax (jitted JAX)", result["jax"])
    if "official" in result:
        size_row("official PyTorch", (result["official"] or {}).get("sizes"))
    lines += ["", "| export | time (s) | model.onnx (MB) | onnxruntime session (s) | PSNR vs float32 (dB) |",
              "|---|---|---|---|---|"]
    for precision, row in result["precisions"].items():
        if "skipped" in row:
            lines.append(f"| {precision} | skipped: {row['skipped']} | | | |")
            continue
        psnr = row.get("psnr_vs_float32_db")
        lines.append(f"| {precision} | {_fmt(row['export_s'])} | {row['size_bytes'] / 1e6:.1f} | "
                     f"{_fmt(row['session_s'])} | {'-' if psnr is None else f'{psnr:.1f}'} |")
    for e in result.get("errors") or []:
        lines.append(f"\nFAILED {e['part']}: {e['error']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.export_rows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, help="where to write the results (and the .md beside it)")
    p.add_argument("--sizes", default=None, help=f"WxH,... (default 640x360,1280x720; --tiny {TINY_SIZES})")
    p.add_argument("--precisions", default="float32,float16", help="default %(default)s")
    p.add_argument("--variant", choices=("official", "separable"), default="official")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jax", action="store_true", help="also time our jitted forward")
    p.add_argument("--official", metavar="CHECKOUT", help="also time the official PyTorch forward "
                   "(a checkout of codeslake/IFAN)")
    p.add_argument("--skip_float16_after", type=float, default=None, metavar="S",
                   help="leave float16 out if the run has taken S seconds before it")
    p.add_argument("--tiny", action="store_true", help="ch=8, N=3, small sizes, tile 128: check the script")
    p.add_argument("--timeout", type=float, default=1200, help="per official process (s)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    args.argv = argv
    md = markdown_path(args.json)
    for path in (args.json, md):
        if os.path.exists(path) and not args.overwrite:
            p.error(f"{path} exists (pass --overwrite)")
    if args.official and not os.path.isfile(os.path.join(args.official, "models", "archs", "IFAN.py")):
        p.error(f"--official={args.official}: no models/archs/IFAN.py there (a checkout of codeslake/IFAN)")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    try:
        sizes = [specs.parse_size(s) for s in (args.sizes or (TINY_SIZES if args.tiny else
                                                              "640x360,1280x720")).split(",")]
    except ValueError:
        p.error(f"--sizes={args.sizes}: expected WxH,WxH,...")
    load_start = _load()
    result = {"machine": machine.machine_info(), "date": time.strftime("%Y-%m-%d"),
              "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "load_average_start": load_start, "sizes": [size_key(h, w) for h, w in sizes]}
    result.update(measure(args, sizes))
    result["load_average_end"] = _load()
    result["ended_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    from ifan_jax import fileio

    fileio.atomic_write_text(args.json, json.dumps(result, indent=1) + "\n", overwrite=args.overwrite)
    table = markdown(result)
    fileio.atomic_write_text(md, table, overwrite=args.overwrite)
    print(table)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
