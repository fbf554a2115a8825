"""Speed and memory of ifan-jax, side by side with the official PyTorch IFAN on the same machine.

    python -m benchmarks                                   # ours only
    python -m benchmarks --official=/path/to/IFAN --json=benchmarks/results/DATE_MACHINE.json
    python -m benchmarks --dtype=bfloat16                  # ours in mixed precision
    python -m benchmarks --tiny                            # CI smoke run (< 1 min)
    python -m benchmarks --platform=gpu --official=...     # both on the GPU
    python -m benchmarks --rows=input                      # only the input pipeline

Rows (full mode; the model is the paper's: ch=32, N=17, 10.5 M parameters, random weights):

  inference HxW      one blurred image (1, H, W, 3) at 640x360 and 1280x720: steady-state
                     seconds per image (median of repeats after a warm-up call), compile seconds
                     (trace + XLA compile of the whole network, no cache) and the peak resident
                     memory (ru_maxrss) of a process that does only that; on Linux also the peak
                     after the compilation and first call (VmHWM restarted through
                     /proc/self/clear_refs), the steady state that PyTorch, which compiles
                     nothing, is compared with on the same line. Also with the paper's
                     "separable" IAC (ours only).
  checkpoint HxW     the real path: a fresh process restores a random-weight checkpoint written
                     by `checkpoint.save_inference_checkpoint` (the format `python -m ifan_jax.weights`
                     writes) with `Deblurrer.from_checkpoint` and deblurs an H x W image with
                     `Deblurrer.__call__`: restore, first-image and steady seconds, the whole
                     process's seconds and peak memory, compared with the official inference row
                     of the same size.
  compile cache      the 640x360 inference twice, in two processes sharing a fresh persistent
                     compilation cache: the second one loads the executable instead of compiling
                     it (its cache hits are counted).
  train step         one optimiser update of `ifan_jax.training.step.train_step` (batch 2 and batch 8,
                     256x256, all three losses, RAdam, gradient clipping) against the official
                     forward with is_train=True, the RBN, the three MSE losses, backward, clipping
                     and torch.optim.RAdam(weight_decay=0.01) (the official trainer's
                     torch_optimizer.RAdam is not a dependency; the work per step is the same).
  IAC                IAC alone at the 1280x720 feature size (1, 90, 160, 128), N=17: ours from a
                     given filter map (`iac.iac`), the streaming form that computes the filters
                     from the predictor's features (`iac.iac_from_head`), the gather reference
                     (`iac.iac_per_pixel`) and the official unfold implementation.
  input pipeline     `ifan_jax.data.train_dataset` (batch 8, 256x256 crops, the paper's
                     augmentation) on 8 generated photo-like DPDD-layout scenes of 1680x1120
                     PNGs, 8 and 16 bit, prepared once with `ifan_jax.data.prepare`, the pixels
                     read from the prepared store (what training reads), from the RAM cache
                     (cache=True) or by decoding the PNGs of every example: examples per second
                     as training runs it, CPU ms per example of the same stream on one thread
                     (steadier than a rate when other processes share the cores), MB read per
                     example and the host process's peak memory, on the host whatever
                     --platform says.
  ONNX model HxW     (CPU, float32, with the export extra) the ONNX export of the same network
                     (`ifan_jax.export`) run by onnxruntime's CPU provider, its default session
                     and one with spinning threads off, against our jitted JAX forward
                     (`Deblurrer.run_batch`), turn by turn in one process on the same image: each
                     one's median seconds and CPU seconds, onnxruntime / JAX, and the largest
                     difference of their outputs (`benchmarks/onnx_rows.py`).
  fed train step     (GPU only) the batch-8 step fed by the 8-bit pipeline (from the store)
                     against the same loop on one fixed batch: the share of the step time spent
                     waiting for input.
  page               the static page (`python -m ifan_jax.export --web`) of the model exported
                     with random weights, tiles of 512 overlapping by 64, served by plain
                     `python -m http.server` (no headers: the page isolates itself through its
                     service worker) in headless Chromium (benchmarks/page.py): the page's own
                     time per tile (`session.run`) on WASM with 1 thread and with every core (and
                     their ratio). Kind page_photo: a 4000x3000 photo (12 megapixels, 63 tiles)
                     end to end; kind webgpu: one tile on WebGPU through SwiftShader, a software
                     GPU (correctness, not speed). Needs Chromium, chromedriver and `npm ci
                     --prefix web`; in --tiny mode only when --rows names them (tiny model, tiles
                     of 128).

Every measurement runs in its own subprocess (`benchmarks.worker`), so the memory is per
job and PyTorch and XLA never share the cores; both use as many threads as this process may run
on. The official code is imported from the checkout given with --official and needs torch;
nothing of it is copied here. Ours runs the "official" IAC variant (the one converted official
weights need); the training rows run the paper's "separable" one, as configs/ifan.py does.

On a GPU (`--platform=gpu`, the default where JAX sees one) the official code runs under
torch.cuda with cuDNN's benchmark mode (and torch.autocast(bfloat16) for --dtype=bfloat16), each
measurement gets warm-up calls and more repeats, and the memory compared is what one call holds
on the device (XLA's memory analysis; PyTorch's `max_memory_allocated` after the warm-up), since
JAX preallocates most of the GPU and RSS says nothing. Both sides run float32 at their framework
defaults, which on NVIDIA GPUs means TF32 convolutions; the table says so.

The results are printed as a table headed by the machine description and, with --json, written
as JSON (and Markdown beside it, or where --markdown says). With --official the ratios are
checked against the targets in --targets (default benchmarks/targets.json, kept with the
results). `--tiny` runs a channels=8, N=3 model on small inputs, ours only: a smoke run for CI,
its timings mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

from benchmarks import machine, plan, report, rows, runner, specs, targets
from ifan_jax.errors import ArgumentParser

DEFAULT_TARGETS = os.path.join("benchmarks", "targets.json")


def row_kinds(text: str) -> tuple[str, ...]:
    """"input,train" -> ("input", "train"); an argparse error naming an unknown kind."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in rows.KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown row kind(s) {', '.join(unknown) or repr(text)} "
                                         f"(choose from {', '.join(rows.KINDS)})")
    return kinds


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m benchmarks", name="benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None, metavar="PATH", help="write the report as JSON here")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="write the Markdown table here (default: beside --json, .md)")
    p.add_argument("--official", default=None, metavar="PATH",
                   help="checkout of the official codeslake/IFAN code to compare with (needs "
                        "torch); without it only ours is measured")
    p.add_argument("--tiny", action="store_true",
                   help="tiny model (channels=8, N=3), small inputs, ours only: a smoke run")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="our compute dtype (bfloat16 also measures its PSNR against float32)")
    p.add_argument("--platform", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where both implementations run (default: the GPU if JAX sees one, else "
                        "the CPU)")
    p.add_argument("--targets", default=None, metavar="PATH",
                   help=f"JSON file of the targets to check (default {DEFAULT_TARGETS} when it "
                        f"exists; see benchmarks/targets.py)")
    p.add_argument("--rows", type=row_kinds, default=None, metavar="KIND[,KIND...]",
                   help=f"measure only rows of these kinds ({', '.join(rows.KINDS)}; default all)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="per measurement (default 120 tiny, 1200 full)")
    p.add_argument("--from_json", default=None, metavar="PATH",
                   help="measure nothing: print (or with --markdown, write) the Markdown table of "
                        "an earlier run's JSON report")
    args = p.parse_args(argv)
    if args.from_json and not os.path.isfile(args.from_json):
        p.error(f"--from_json={args.from_json}: no such file")
    if args.official and not os.path.exists(
            os.path.join(args.official, "models", "archs", "IFAN.py")):
        p.error(f"--official={args.official}: no models/archs/IFAN.py there (give the root of "
                f"a codeslake/IFAN checkout)")
    if args.targets is None and os.path.exists(DEFAULT_TARGETS):
        args.targets = DEFAULT_TARGETS
    try:
        args.target_list = targets.load_targets(args.targets) if args.targets else []
    except targets.TargetsError as e:
        p.error(str(e))
    return args


def _find_platform(args, info: dict, timeout: float) -> str:
    """"gpu" or "cpu" (asked of JAX in a worker); adds the accelerator to `info`."""
    if args.platform == "cpu":
        return "cpu"
    found = runner.spawn(specs.Probe(platform=args.platform), timeout)
    if "error" in found:
        raise SystemExit(f"benchmark: could not start JAX: {found['error']}")
    if args.platform == "gpu" and found["backend"] != "gpu":
        raise SystemExit(f"--platform=gpu: JAX sees no GPU here (backend {found['backend']!r})")
    if found["backend"] != "gpu":
        return "cpu"
    info.update(device="gpu", accelerator=found["device_kind"],
                accelerator_count=found["device_count"],
                jax_default_matmul_rel_error=found["default_matmul_rel_error"])
    return "gpu"


def _write(report_dict: dict, json_path: str | None, markdown_path: str | None) -> None:
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(report_dict, f, indent=1)
        markdown_path = markdown_path or os.path.splitext(json_path)[0] + ".md"
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(report.markdown(report_dict))


def main(argv=None) -> dict:
    """Measure every planned row, print the table, write --json/--markdown; returns the report."""
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            earlier = json.load(f)
        if args.markdown:
            _write(earlier, None, args.markdown)
        else:
            print(report.markdown(earlier), end="")
        return earlier
    start = time.time()
    info = machine.machine_info()
    timeout = args.timeout or (120.0 if args.tiny else 1200.0)
    args.platform = _find_platform(args, info, timeout)
    load_start = os.getloadavg()
    log = lambda s: print(s, file=sys.stderr, flush=True)
    with runner.Runner(timeout, log) as run:
        measured = rows.measure(plan.plan(args), run)
    checked = [] if args.tiny else args.target_list
    out = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "machine": info, "machine_slug": machine.machine_slug(info),
           "mode": "tiny" if args.tiny else "full", "dtype": args.dtype,
           "rows_selected": list(args.rows) if args.rows else None,
           "platform": args.platform, "official": args.official is not None and not args.tiny,
           "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()),
           "seconds": time.time() - start, "rows": [row.to_json() for row in measured],
           "table": report.summarize(measured, args.platform, checked, args.dtype),
           "targets": targets.check(measured, checked, args.platform, args.dtype),
           "targets_file": args.targets if checked else None,
           "errors": report.errors(measured)}
    print(report.text_table(out))
    _write(out, args.json, args.markdown)
    return out
