"""The input pipeline's throughput: a generated DPDD-layout folder, and our worker that draws
training batches from it with `ifan_jax.data.train_dataset` (the paper's augmentation, no cache).

The generated images are smooth random colour fields plus a little noise. `ifan_jax.data.testing`
writes unfiltered PNGs, so the files are about their raw size (5.4 MB at 8 bits, 11.2 MB at 16 for
1680 x 1120) where a photograph saved by an ordinary encoder is smaller; the decoder's work is
mostly inflating and copying the decompressed bytes, which are the same. Each result records the
mean file size.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ifan_jax import data, environment
from ifan_jax.benchmark import probes, specs
from ifan_jax.data import testing

DPDD_SIZE = (1120, 1680)  # (H, W) of the DPDD images


def smooth_image(rng: np.random.Generator, size: tuple[int, int], bits: int,
                 noise_levels: float = 2.0) -> np.ndarray:
    """H x W x 3 uint8/uint16 (`bits`): a bilinearly enlarged 1/32-size random field plus
    Gaussian noise of `noise_levels` grey levels (of the 8-bit scale)."""
    h, w = size
    top = 255.0 if bits == 8 else 65535.0
    channels = []
    for _ in range(3):
        small = rng.random((max(2, h // 32), max(2, w // 32)), np.float32)
        channels.append(np.asarray(Image.fromarray(small, mode="F").resize((w, h),
                                                                         Image.BILINEAR)))
    field = np.stack(channels, axis=-1) * top
    field += rng.normal(0.0, noise_levels * top / 255.0, field.shape).astype(np.float32)
    return np.clip(np.rint(field), 0, top).astype(np.uint8 if bits == 8 else np.uint16)


def write_scenes(root: str, num: int, bits: int, size: tuple[int, int] = DPDD_SIZE,
                 seed: int = 0) -> str:
    """Write `num` training scenes (c, l, r, gt PNGs at `bits` bits) in the DPDD layout under
    `root` (ROOT/DPDD/train_{c,l,r}/source, train_c/target); returns `root`."""
    rng = np.random.default_rng(seed)
    folders = testing.fake_folders(root, "dpdd", "train")
    for i in range(num):
        base = smooth_image(rng, size, bits)
        for key in data.KEYS["dpdd"]:
            # Each view its own noise on the same scene, as dual-pixel views differ.
            shift = rng.normal(0.0, 1.0, base.shape) * (1 if bits == 8 else 257)
            top = 255 if bits == 8 else 65535
            image = np.clip(base + shift, 0, top).astype(base.dtype)
            testing.write_png(folders[key] / f"scene_{i:03d}.png", image)
    return root


def train_batches(job: specs.InputPipeline) -> dict:
    """Examples per second and host memory of `train_dataset(data_dir, batch, crop)`: the first
    batch (tf.data start-up) apart, then `warmup` untimed and `repeats` timed batches."""
    environment.configure_tensorflow()  # as training does, before the pipeline imports TF
    it = data.train_dataset(job.data_dir, batch_size=job.batch, crop=job.crop, seed=0,
                            bit_depth=job.bits, process_index=0, process_count=1)
    holder = {}

    def one_batch():
        holder["batch"] = next(it)

    _, first_batch_s = probes.timed_first(one_batch)
    times, reset = probes.steady_runs(one_batch, job.warmup, job.repeats, probes.reset_peak_rss)
    batch = holder["batch"]
    sizes = [os.path.getsize(os.path.join(folder, name))
             for folder, _, names in os.walk(job.data_dir) for name in names]
    # Prefetching makes single batches either instant or slow: report means, not medians.
    total_s, total_cpu_s = (sum(t[i] for t in times) for i in (0, 1))
    return {**probes.summary(times), "time_s": total_s / job.repeats,
            "cpu_s": total_cpu_s / job.repeats, "examples_per_s": job.batch * job.repeats / total_s,
            "first_batch_s": first_batch_s, "peak_rss_mb": probes.peak_rss_mb(),
            "steady_rss_mb": probes.steady_rss_mb(reset), "png_mb": float(np.mean(sizes)) / 1e6,
            "shape": list(batch["c"].shape),
            "output_finite": all(bool(np.isfinite(v).all()) for v in batch.values())}
