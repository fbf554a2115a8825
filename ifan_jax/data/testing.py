"""Tiny fake data sets in the official layouts, for tests (of this package and of its users).

`encode_png` is a plain PNG encoder (numpy + zlib, no image library), so tests can check the
loaders' decoding against pixel values they chose; `write_fake_dataset` fills a data root with
random images in the DPDD / RealDOF / PixelDP / CUHK / pairs layout (optionally with inputs that
are box-blurred copies of the sharp image, for tests that need something to learn).
"""

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from ifan_jax.data.layouts import FOLDER_NAMES, KEYS, SPLITS
from ifan_jax.image_io import PNG_SIGNATURE, png_chunk


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an HxW or HxWxC (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) uint8 or uint16
    array, stored losslessly at 8 or 16 bits per channel."""
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png needs uint8 or uint16, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    height, width, channels = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    bits = 16 if array.dtype == np.uint16 else 8
    rows = array.astype(">u2" if bits == 16 else np.uint8).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, bits, color_type, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def damage_pixels(png: bytes) -> bytes:
    """A PNG whose compressed pixels are garbled but whose chunk structure (valid CRCs, the IEND
    tail) is intact: its header checks pass and only decoding finds the damage."""
    start = png.index(b"IDAT") + 4
    length = int.from_bytes(png[start - 8:start - 4], "big")
    damaged = bytes(b ^ 0x5A for b in png[start:start + length])
    return png[:start - 4] + png_chunk(b"IDAT", damaged)[4:] + png[start + length + 4:]


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` (see encode_png) to `path`, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(array))
    return path


def fake_folders(root: str | Path, dataset: str, split: str = "test") -> dict[str, Path]:
    """{key: folder} of the layout of `dataset` (see layouts) under the data root."""
    if dataset == "pairs":
        return {"c": Path(root) / split / "source", "gt": Path(root) / split / "target"}
    base = Path(root) / FOLDER_NAMES[dataset]
    if dataset == "dpdd":
        return {"c": base / f"{split}_c" / "source", "l": base / f"{split}_l" / "source",
                "r": base / f"{split}_r" / "source", "gt": base / f"{split}_c" / "target"}
    if dataset == "realdof":
        return {"c": base / "source", "gt": base / "target"}
    if dataset == "pixeldp":
        return {k: base / f"test_{k}" / "source" for k in "clr"}
    return {"c": base}


def box_blur(pixels: np.ndarray, radius: int) -> np.ndarray:
    """H x W x C integer pixels averaged over (2 radius + 1)^2 windows (edges repeated), rounded
    back to the input's dtype."""
    if radius <= 0:
        return pixels
    padded = np.pad(pixels.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)),
                    mode="edge")
    size = 2 * radius + 1
    height, width = pixels.shape[:2]
    total = sum(padded[dy:dy + height, dx:dx + width] for dy in range(size) for dx in range(size))
    return np.round(total / size**2).astype(pixels.dtype)


def write_fake_dataset(root: str | Path, dataset: str, num: int | dict = 2,
                       size: tuple[int, int] = (20, 28), bits: int = 8, seed: int = 0,
                       ext: str = ".png", blur: int = 0) -> dict[str, list[dict[str, np.ndarray]]]:
    """Random images in the layout of `dataset` under `root`: `num` examples per split (or
    {split: count}), HxW = `size`, `bits` 8 or 16 (PNG), or JPEG with ext=".jpg". With `blur` > 0
    the images other than "gt" are `box_blur(gt, blur)` instead of independent noise.
    Returns {split: [{"name": str, key: the written integer pixels}]} in name order."""
    rng = np.random.default_rng(seed)
    counts = num if isinstance(num, dict) else {split: num for split in SPLITS[dataset]}
    dtype, high = (np.uint16, 65536) if bits == 16 else (np.uint8, 256)
    written = {}
    for split, count in counts.items():
        folders = fake_folders(root, dataset, split)
        examples = []
        for i in range(count):
            name = f"{split}_{i:03d}"
            example = {"name": name}
            sharp = rng.integers(0, high, (*size, 3)).astype(dtype) if blur > 0 else None
            for key in KEYS[dataset]:
                if sharp is None:
                    pixels = rng.integers(0, high, (*size, 3)).astype(dtype)
                else:
                    pixels = sharp if key == "gt" else box_blur(sharp, blur)
                path = folders[key] / f"{name}{ext}"
                if ext.lower() in (".jpg", ".jpeg"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(path, quality=95)
                else:
                    write_png(path, pixels)
                example[key] = pixels
            examples.append(example)
        written[split] = examples
    return written
