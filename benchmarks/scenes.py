"""The input-pipeline rows' data: generated photo-like DPDD-layout scenes and their prepared store.

A scene is a random 1/31-size colour field enlarged bicubically (smooth areas and edges, as in a
photograph) plus independent Gaussian noise per view (sigma 2% of the range, like sensor noise),
so the PNGs compress and decode like DPDD's rather than like raw bytes: 8-bit files are written by
Pillow (zlib with adaptive row filters, as photographs are saved), 16-bit ones by
`ifan_jax.data.testing.write_png` (Pillow writes no 16-bit RGB; zlib, no row filters, so those
files are larger). Each input row reports the mean file size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks import specs
from ifan_jax.data import prepare, testing

DPDD_SIZE = (1120, 1680)  # (H, W) of the DPDD images
DETAIL = 31  # pixels per random value of the enlarged field: 36 x 54 values at the DPDD size


def photo_like(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """H x W x 3 float64 in [0, 1]: random colours on a (H / DETAIL) x (W / DETAIL) grid,
    enlarged bicubically."""
    h, w = size
    low = (rng.random((max(2, round(h / DETAIL)), max(2, round(w / DETAIL)), 3)) * 255)
    enlarged = Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(enlarged, np.float64) / 255


def write_scenes(root: str, num: int, bits: int, size: tuple[int, int] = DPDD_SIZE,
                 seed: int = 0) -> str:
    """Write `num` photo-like training scenes (c, l, r, gt PNGs at `bits` bits, each view its own
    noise on the same scene) in the DPDD layout under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    folders = testing.fake_folders(root, "dpdd", "train")
    for i in range(num):
        base = photo_like(rng, size)
        for folder in folders.values():
            view = np.clip(base + rng.normal(0.0, 0.02, base.shape), 0.0, 1.0)
            path = folder / f"scene_{i:03d}.png"
            if bits == 16:
                testing.write_png(path, np.round(view * 65535).astype(np.uint16))
            else:
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.round(view * 255).astype(np.uint8)).save(path)
    return root


def make_scenes(job: specs.MakeScenes) -> dict:
    """Write the scenes of `job` and prepare their store (`ifan_jax.data.prepare`, at `job.bits`),
    as a user runs it once before training; returns the folder and the store's size."""
    write_scenes(job.root, job.scenes, job.bits, job.size)
    folder = prepare.prepare(job.root, "dpdd", "train", job.bits, progress=False)
    size = sum(path.stat().st_size for path in folder.rglob("*.raw"))
    return {"path": job.root, "store": str(folder), "store_mb": size / 1e6}
