"""Training input pipeline throughput on DPDD-size images (issue 14, item 1).

    python benchmarks/input_pipeline.py [--scenes=6] [--batches=100] [--work=/tmp/ifan_input]

Writes `--scenes` photo-like 1680x1120 scenes (c, l, r, gt PNGs) at 8 and 16 bits, prepares the
store (`python -m ifan_jax.data.prepare`) and measures `train_dataset` at batch 8, 256x256 crops
and the paper's augmentation: examples/s of the pipeline as training runs it (all cores), CPU ms
per example on one thread (steadier than examples/s on a shared machine), and the process's
resident memory. Each measurement runs in a fresh process; the load average is printed with it.
"""

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from ifan_jax.data import train_dataset
from ifan_jax.data.testing import fake_folders, write_png

REPO = Path(__file__).resolve().parents[1]


def write_scenes(root: Path, bits: int, scenes: int) -> None:
    """Smooth random photos plus sensor-like noise: PNGs that compress and decode like DPDD's."""
    rng = np.random.default_rng(0)
    for i in range(scenes):
        low = Image.fromarray((rng.random((36, 54, 3)) * 255).astype(np.uint8))
        base = np.asarray(low.resize((1680, 1120), Image.Resampling.BICUBIC), np.float64) / 255
        for folder in fake_folders(root, "dpdd", "train").values():
            x = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
            if bits == 16:
                write_png(folder / f"{i:03d}.png", np.round(x * 65535).astype(np.uint16))
            else:
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.round(x * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")


def measure(root: str, bits: int, mode: str, batches: int, threads: str) -> str:
    """One measurement in this process: examples/s of the pipeline as training runs it (threads
    "all"), or CPU ms per example of the same stream on one thread ("one"); and the peak RSS."""
    it = train_dataset(root, batch_size=8, crop=256, seed=0, bit_depth=bits, process_index=0,
                       process_count=1, cache=mode == "cache", store=mode != "decode")
    stream = it
    if threads == "one":
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.autotune.enabled = False
        stream = it.dataset.with_options(options).as_numpy_iterator()
    for _ in range(3):
        next(stream)
    start, cpu = time.time(), time.process_time()
    for _ in range(batches):
        next(stream)
    value = (f"{8 * batches / (time.time() - start):.0f}" if threads == "all"
             else f"{1000 * (time.process_time() - cpu) / (8 * batches):.2f}")
    return f"{value} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--work", default="/tmp/ifan_input")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)  # ROOT BITS MODE THREADS
    args = parser.parse_args()
    if args.measure:
        root, bits, mode, threads = args.measure
        print(measure(root, int(bits), mode, args.batches, threads))
        return 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    print("| bits | source | examples/s | ms CPU/example (1 thread) | RSS MB | load (1 min) |")
    print("|---|---|---|---|---|---|")
    for bits in (8, 16):
        root = Path(args.work) / f"dpdd{bits}"
        if not (root / "DPDD").is_dir():
            write_scenes(root, bits, args.scenes)
        subprocess.run([sys.executable, "-m", "ifan_jax.data.prepare", f"--data_dir={root}",
                        f"--bit_depth={bits}", "--overwrite"], env=env, check=True,
                       capture_output=True)
        for mode in ("store", "cache", "decode"):
            batches = args.batches if mode != "decode" else max(2, args.batches // 20)
            results = {}
            for threads in ("all", "one"):
                n = batches if threads == "all" else max(2, batches // 5)
                out = subprocess.run([sys.executable, __file__, f"--batches={n}", "--measure",
                                      str(root), str(bits), mode, threads], env=env, check=True,
                                     capture_output=True, text=True).stdout.split()[-2:]
                results[threads] = out
            rate, rss = results["all"]
            print(f"| {bits} | {mode} | {rate} | {results['one'][0]} | {rss} | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
