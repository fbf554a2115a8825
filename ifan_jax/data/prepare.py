"""A one-time, uncompressed random-access copy of a training split, so that a crop reads only its
window instead of decoding four whole PNGs per example.

    python -m ifan_jax.data.prepare --data_dir=ROOT [--dataset=dpdd|pairs] [--bit_depth=8|16]

writes ROOT/DPDD/prepared/train_8bit (ROOT/prepared/train_8bit for pairs): every image cut into
TILE x TILE tiles of raw integer pixels (`{key}/{scene:05d}_{row:03d}_{col:03d}.raw`, the last
row and column zero-padded to a full tile) and `index.json` (tile size, dtype, and per scene its
name, size and the size and modification time of each source file). `train_dataset` uses the store
when it matches the split on disk (names, sizes, modification times) and decodes the PNGs otherwise;
the stream is the same either way. The store takes the decoded size: DPDD's 350 training scenes
about 8 GB at 8 bits, twice that at 16.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ifan_jax import fileio
from ifan_jax.data.decode import check_examples, decode_pixels, read_depth, tensorflow
from ifan_jax.data.layouts import KEYS, DataError, canonical_dataset, dataset_dir, list_split
from ifan_jax.errors import ArgumentParser, UserError

TILE = 128  # pixels per tile side: a 256x256 crop (369x369 source window when rescaled) reads
# at most 4 x 4 tiles of 48 KiB (8 bits) per image
VERSION = 1


def store_dir(root, dataset: str, split: str, bit_depth: int) -> Path:
    """Where the store of a split at a bit depth lives (it need not exist)."""
    return dataset_dir(root, dataset) / "prepared" / f"{split}_{bit_depth}bit"


def _sources(example: dict, keys) -> dict:
    """{key: [path, size, mtime_ns]} of an example's files: what the store was made from."""
    out = {}
    for key in keys:
        st = os.stat(example[key])
        out[key] = [example[key], st.st_size, st.st_mtime_ns]
    return out


def prepare(root, dataset: str = "dpdd", split: str = "train", bit_depth: int = 8,
            overwrite: bool = False, progress: bool = True) -> Path:
    """Write the store of `split` read at `bit_depth` (see the module docstring); returns its
    folder. Checks the files as `train_dataset` does (DataError naming a bad file; nothing is left
    behind then). An existing store is an error unless `overwrite`."""
    dataset = canonical_dataset(dataset)
    if bit_depth not in (8, 16):
        raise DataError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    keys = KEYS[dataset]
    examples = list_split(root, dataset, split)
    headers = check_examples(examples, keys, 1, f"{dataset} {split}")
    depths = {read_depth(h[key].bit_depth, bit_depth) for h in headers for key in keys}
    if len(depths) > 1:
        raise DataError(f"{dataset} {split} mixes 8- and 16-bit files; a store holds one depth")
    dtype = np.uint16 if depths == {16} else np.uint8
    target = store_dir(root, dataset, split, bit_depth)
    if target.exists() and not overwrite:
        raise DataError(f"{target} exists; pass --overwrite to write it again")
    index = {"version": VERSION, "tile": TILE, "dtype": np.dtype(dtype).name, "keys": list(keys),
             "scenes": []}
    with fileio.atomic_directory(target, overwrite=overwrite) as tmp:
        for key in keys:
            os.makedirs(os.path.join(tmp, key))
        for i, (example, header) in enumerate(tqdm(list(zip(examples, headers)),
                                                   desc=f"preparing {dataset} {split}",
                                                   unit="scene", disable=not progress or None)):
            for key in keys:
                h = header[key]
                pixels = decode_pixels(h.path, h.format_code, read_depth(h.bit_depth, bit_depth),
                                       h.orientation, (h.height, h.width)).astype(dtype)
                _write_tiles(os.path.join(tmp, key, f"{i:05d}"), pixels)
            first = header[keys[0]]
            index["scenes"].append({"name": example["name"], "height": first.height,
                                    "width": first.width, "sources": _sources(example, keys)})
        Path(tmp, "index.json").write_text(json.dumps(index))
    return target


def _write_tiles(prefix: str, pixels: np.ndarray) -> None:
    """H x W x 3 pixels -> TILE x TILE x 3 raw files {prefix}_{row:03d}_{col:03d}.raw."""
    rows, cols = math.ceil(pixels.shape[0] / TILE), math.ceil(pixels.shape[1] / TILE)
    padded = np.zeros((rows * TILE, cols * TILE, 3), pixels.dtype)
    padded[:pixels.shape[0], :pixels.shape[1]] = pixels
    for r in range(rows):
        for c in range(cols):
            tile = np.ascontiguousarray(padded[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE])
            with open(f"{prefix}_{r:03d}_{c:03d}.raw", "wb") as f:
                f.write(tile.tobytes())


def find_store(root, dataset: str, split: str, bit_depth: int, examples: list[dict]):
    """(folder, index) of the store that matches `examples` (from list_split: same names, files of
    the same size and modification time), or (None, reason) when there is none or it is stale."""
    keys = KEYS[canonical_dataset(dataset)]
    folder = store_dir(root, dataset, split, bit_depth)
    path = folder / "index.json"
    if not path.is_file():
        return None, "missing"
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, f"{path} is unreadable"
    scenes = index.get("scenes", [])
    if index.get("version") != VERSION or index.get("keys") != list(keys) or not isinstance(
            index.get("tile"), int):
        return None, f"{folder} was written by another version"
    if [s["name"] for s in scenes] != [e["name"] for e in examples]:
        return None, f"{folder} holds other scenes than {split}"
    for scene, example in zip(scenes, examples, strict=True):
        if scene["sources"] != _sources(example, keys):
            return None, f"{folder} is older than {example[keys[0]]} or its partners"
    return folder, index


def max_tiles(crop: int, scale_min: float, scale_prob: float, tile: int) -> int:
    """Tiles per side that cover any source window of a crop: the rescale reads at most
    crop / (scale_min - 1 / crop) + 2 source pixels per side (see augment.area_taps)."""
    extent = crop + 2
    if scale_prob > 0:
        if scale_min <= 1.0 / crop:
            return 1 << 20  # no useful bound: the grid is clipped to the image anyway
        extent = math.ceil(crop / (scale_min - 1.0 / crop)) + 2
    return math.ceil(extent / tile) + 1


def window_reader(folder: Path, index: dict, key: str, scene, grid: int):
    """A function (r0, r1, c0, c1) -> the integer pixels [r0:r1, c0:c1] of image `key` of scene
    `scene` (a scalar tensor), as TensorFlow ops. It reads the k x k tiles from the one holding
    (r0, c0) on, where k is the smallest that covers the window (at most `grid`, `max_tiles`);
    tile indices past the image's last are clamped to it, and the slice never reaches them."""
    tf = tensorflow()
    dtype = tf.uint16 if index["dtype"] == "uint16" else tf.uint8
    size = index["tile"]
    scenes = index["scenes"]
    grid = min(grid, max(math.ceil(max(s["height"], s["width"]) / size) for s in scenes))
    last_row = tf.gather(tf.constant([math.ceil(s["height"] / size) - 1 for s in scenes]), scene)
    last_col = tf.gather(tf.constant([math.ceil(s["width"] / size) - 1 for s in scenes]), scene)
    prefix = tf.strings.join([str(folder / key) + os.sep,
                              tf.strings.as_string(scene, width=5, fill="0"), "_"])

    def tiles(row0, col0, k):  # the k x k tiles from (row0, col0) on: [k * size, k * size, 3]
        steps = tf.range(k)
        rows = tf.strings.as_string(tf.minimum(row0 + steps, last_row), width=3, fill="0")
        cols = tf.strings.as_string(tf.minimum(col0 + steps, last_col), width=3, fill="0")
        names = tf.reshape(prefix + rows[:, None] + "_" + cols[None, :] + ".raw", [-1])
        data = tf.stack([tf.io.read_file(names[i]) for i in range(k * k)])
        block = tf.reshape(tf.io.decode_raw(data, dtype), [k, k, size, size, 3])
        return tf.reshape(tf.transpose(block, [0, 2, 1, 3, 4]), [k * size, k * size, 3])

    def read(r0, r1, c0, c1):
        row0, col0 = r0 // size, c0 // size
        k = tf.maximum((r1 - 1) // size - row0, (c1 - 1) // size - col0) + 1
        block = tf.switch_case(tf.clip_by_value(k, 1, grid) - 1,
                               [lambda n=n: tiles(row0, col0, n) for n in range(1, grid + 1)])
        top, left = r0 - row0 * size, c0 - col0 * size
        return block[top:top + r1 - r0, left:left + c1 - c0]

    return read


def main(argv=None) -> int:
    parser = ArgumentParser(
        prog="python -m ifan_jax.data.prepare", name="prepare",
        description="Write the random-access store of a training split (once), so that training "
                    "reads only each crop's window instead of decoding whole PNGs.")
    parser.add_argument("--data_dir", required=True, help="data root (holding DPDD/, or pairs)")
    parser.add_argument("--dataset", default="dpdd", choices=("dpdd", "pairs"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--bit_depth", default=8, type=int, choices=(8, 16),
                        help="the depth training reads at (config.bit_depth)")
    parser.add_argument("--overwrite", action="store_true", help="write an existing store again")
    args = parser.parse_args(argv)
    try:
        folder = prepare(args.data_dir, args.dataset, args.split, args.bit_depth, args.overwrite)
    except (UserError, FileExistsError) as e:
        print(f"prepare: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in folder.rglob("*.raw"))
    print(f"{folder} ({size / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
