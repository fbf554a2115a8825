"""tf.data pipelines: whole images for evaluation (`load_split`) and augmented crops for training
(`train_dataset`). TensorFlow stays on the CPU (the accelerators are JAX's).

Files are checked when a pipeline is built (layout, pairing by name, header sizes, truncation), so
a bad data set fails at once with a DataError naming the file. Damage that only decoding finds
is raised as a DataError naming the file by the training iterator and by `numpy_iterator`.

The pipelines are TensorFlow ops only: a Python callback (tf.py_function) inside a prefetching
tf.data pipeline can dead-lock the interpreter's exit while an unfinished iterator is alive.
"""

import functools
import re
import weakref

import jax
import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from ifan_jax import environment
from ifan_jax.data import augment as augment_lib
from ifan_jax.data import prepare as prepare_lib
from ifan_jax.data.decode import (
    check_examples,
    decode_graph,
    decode_pixels,
    decoder_kind,
    find_broken,
    read_depth,
)
from ifan_jax.data.layouts import (
    KEYS,
    ROTATED_DATASETS,
    DataError,
    canonical_dataset,
    canonical_split,
    list_split,
)
from ifan_jax.models.resample import SCALE

# Evaluation crops H and W down to multiples of the network's grid (top-left), as the official one.
EVAL_MULTIPLE = SCALE
_SHUFFLE, _EXAMPLE = 1, 2  # key streams: per-epoch scene order, per-example draws
SLOW_DECODING_PIXELS = 512 * 512  # training images from this size on: suggest a prepared store

# load_split's datasets -> the (ImageHeader, bits) of each example, to name a file that fails to
# decode while iterating (see numpy_iterator).
_SPLIT_FILES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _options() -> tf.data.Options:
    """Deterministic element order (parallel maps keep their input order); each element's ops on
    one thread, as the parallel map already runs elements side by side (tf.data's advice for
    throughput).

    No autotuning: a parallel map given AUTOTUNE then runs one call per thread of tf.data's pool
    (one per core, at most 16), and a prefetch given AUTOTUNE grows its buffer when the consumer
    waits. Autotuning's optimisation thread sleeps up to 60 s between passes, and destroying the
    iterator (the end of a training run, the process's exit) waited for it: a quickstart run sat
    idle for about a minute after its last line."""
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    return options


def _file_table(examples, headers, keys, bit_depth) -> dict[str, np.ndarray]:
    """Columns for tf.data: name, and per key path, format code, bits read, orientation, h, w."""
    table = {"name": np.array([e["name"] for e in examples], dtype=object)}
    for key in keys:
        hs = [h[key] for h in headers]
        table[f"{key}/path"] = np.array([h.path for h in hs], dtype=object)
        table[f"{key}/format"] = np.array([h.format_code for h in hs], np.int32)
        table[f"{key}/bits"] = np.array([read_depth(h.bit_depth, bit_depth) for h in hs], np.int32)
        table[f"{key}/orientation"] = np.array([h.orientation for h in hs], np.int32)
        table[f"{key}/height"] = np.array([h.height for h in hs], np.int32)
        table[f"{key}/width"] = np.array([h.width for h in hs], np.int32)
    return table


def _decode(row, key, table):
    """Graph decoding of image `key` of a table row, with only the decoders `table` needs."""
    kinds = frozenset(decoder_kind(int(f), int(b))
                      for f, b in zip(table[f"{key}/format"], table[f"{key}/bits"], strict=True))
    oriented = bool(np.any(np.asarray(table[f"{key}/orientation"]) != 1))
    return decode_graph(row[f"{key}/path"], row[f"{key}/format"], row[f"{key}/bits"],
                        row[f"{key}/orientation"], row[f"{key}/height"], row[f"{key}/width"],
                        kinds, oriented)


def load_split(root, dataset: str = "dpdd", split: str = "test",
               bit_depth: int | None = None) -> tf.data.Dataset:
    """Whole images of one split for evaluation, in the official order.

    Elements: {"c", ["l", "r"], ["gt"]: float32 [H, W, 3] in [0, 1], "name": tf.string (file
    stem), "bit_depth": tf.int32 (8 or 16: the depth c was read at)}; the keys are
    `layouts.KEYS[dataset]`. H and W are cropped from the top-left down to multiples of 8, as the
    official evaluation does. PixelDP images come rotated 90 degrees counter-clockwise
    (np.rot90(x, k=1)); rotate outputs back with np.rot90(y, k=-1) (see ROTATED_DATASETS).

    bit_depth: None reads each file at its own depth; 8 reads 16-bit PNGs at 8 bits (their high
    byte, as the official 8-bit models saw them); 16 reads 16-bit PNGs at 16 bits.
    "folder": `root` is any folder of images (inputs only).
    """
    dataset = canonical_dataset(dataset)
    split = canonical_split(dataset, split)
    examples = list_split(root, dataset, split)
    headers = check_examples(examples, KEYS[dataset], EVAL_MULTIPLE, f"{dataset} {split}")
    return load_examples(examples, headers, dataset, bit_depth)


def load_examples(examples: list[dict], headers: list[dict], dataset: str,
                  bit_depth: int | None = None) -> tf.data.Dataset:
    """`load_split`'s dataset of the given examples of `dataset` (from `layouts.list_split` or
    `layouts.pair_split`) and their headers (`decode.check_example`), in their order."""
    environment.hide_gpus_from_tensorflow()  # TensorFlow only feeds data: no accelerator memory
    dataset = canonical_dataset(dataset)
    keys = KEYS[dataset]
    table = _file_table(examples, headers, keys, bit_depth)
    rotate = dataset in ROTATED_DATASETS

    @tf.autograph.experimental.do_not_convert
    def load(row):
        out = {"name": row["name"], "bit_depth": row[f"{keys[0]}/bits"]}
        for key in keys:
            image = _decode(row, key, table)
            if rotate:
                image = tf.image.rot90(image, k=1)
            shape = tf.shape(image)
            out[key] = image[:shape[0] - shape[0] % EVAL_MULTIPLE,
                             :shape[1] - shape[1] % EVAL_MULTIPLE]
        return out

    ds = tf.data.Dataset.from_tensor_slices(table)
    ds = ds.map(load, num_parallel_calls=2, deterministic=True).prefetch(1)
    ds = ds.with_options(_options())
    _SPLIT_FILES[ds] = [[(h[key], read_depth(h[key].bit_depth, bit_depth)) for key in keys]
                        for h in headers]
    return ds


def numpy_iterator(ds: tf.data.Dataset):
    """Iterate a dataset from `load_split` (also after .take(), .skip(), ...) as numpy dicts. A
    file that fails to decode is raised as a one-line DataError naming it (TensorFlow's own error
    does not name the file)."""
    files, source = None, ds
    while source is not None and files is None:
        files = _SPLIT_FILES.get(source)
        source = getattr(source, "_input_dataset", None)  # the dataset a transformation wraps
    aligned = files is not None and files is _SPLIT_FILES.get(ds)  # element i = example i
    it = ds.as_numpy_iterator()
    count = 0
    while True:
        try:
            element = next(it)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            raise _named_error(e, files, count if aligned else None) from None
        count += 1
        yield element


def _named_error(error: Exception, files, position: int | None = None) -> Exception:
    """A DataError naming the broken file behind TensorFlow's `error`: the path if the message
    has one (header/size checks), else the first file of `files` (lists of (ImageHeader, bits)
    per example; the one at `position` first) that fails to decode eagerly; else `error`."""
    message = str(error)
    match = re.search(r"assertion failed: \[(.*?)\] \[(.*?)\]", message)
    if match is not None:
        return DataError(f"{match.group(1)}: {match.group(2)}")
    if files is None:
        return error
    order = list(files)
    if position is not None and 0 <= position < len(files):
        order = [files[position], *files[:position], *files[position + 1:]]
    for example in order:
        broken = find_broken(example)
        if broken is not None:
            return broken
    return error


def scene_index(seed: int, index, num_scenes: int) -> tf.Tensor:
    """The training scene of global example `index`: scenes are visited in a fresh random order
    each epoch (epoch = index // num_scenes), like the official sampler's per-epoch permutation."""
    epoch = index // num_scenes
    key = augment_lib.fold([seed, 0], _SHUFFLE, epoch)
    order = tf.argsort(tf.random.stateless_uniform([num_scenes], key), stable=True)
    return tf.gather(order, index % num_scenes)


def example_key(seed: int, index) -> tf.Tensor:
    """The stateless key of every random draw of global example `index`."""
    return augment_lib.fold([seed, 0], _EXAMPLE, index)


class TrainIterator:
    """Python iterator over training batches (numpy dicts); see `train_dataset`.

    `step` is the global step of the next batch; `scenes_of_step(step)` the scene indices (into
    `examples`) of this process's examples of that step.
    """

    def __init__(self, dataset: tf.data.Dataset, examples: list[dict], files: list,
                 local_batch_size: int, start_step: int, scenes_of_step):
        self.dataset = dataset
        self.examples = examples
        self.local_batch_size = local_batch_size
        self.step = start_step
        self.scenes_of_step = scenes_of_step
        self._files = files
        self._it = dataset.as_numpy_iterator()

    def __iter__(self):
        return self

    def close(self) -> None:
        """Stop the pipeline's threads and free its buffers now (else when it is collected)."""
        self._it = None

    @property
    def closed(self) -> bool:
        return self._it is None

    def __next__(self) -> dict:
        if self._it is None:
            raise RuntimeError("the training pipeline was closed")
        try:
            batch = next(self._it)
        except tf.errors.OpError as e:
            scenes = sorted(set(self.scenes_of_step(self.step)))
            raise _named_error(e, [self._files[i] for i in scenes]) from None
        self.step += 1
        return batch


def _window(pixels, height: int, image, r0, r1, c0, c1):
    """Rows r0:r1, columns c0:c1 of cached image number `image` (the cache stacks the rows of all
    images, each padded to `height`: [images * height, W, 3]). Gathers only those rows: slicing
    the variable itself would read all of it."""
    base = tf.cast(image, tf.int32) * height
    return pixels.sparse_read(base + tf.range(r0, r1))[:, c0:c1]


def _decode_all(headers, keys, bit_depth) -> tuple[tf.Variable, float, int]:
    """Every scene's integer pixels in one host-memory tf.Variable: image k of scene i is rows
    [(i * len(keys) + k) * H, ... + H) of [scenes * keys * H, W, 3] (padded to the largest image
    H x W); with the divisor that maps them to [0, 1], and H."""
    bits = {read_depth(h[key].bit_depth, bit_depth) for h in headers for key in keys}
    if len(bits) > 1:
        raise DataError("cache=True needs all training images at one bit depth; found 8- and "
                        "16-bit files")
    dtype, scale = (tf.uint16, 65535.0) if bits == {16} else (tf.uint8, 255.0)
    height = max(h[keys[0]].height for h in headers)
    width = max(h[keys[0]].width for h in headers)
    with tf.device("/CPU:0"):
        pixels = tf.Variable(tf.zeros([len(headers) * len(keys) * height, width, 3], dtype),
                             trainable=False)
        for i, h in enumerate(tqdm(headers, desc="caching training scenes", unit="scene",
                                   disable=None)):
            for k, key in enumerate(keys):
                x = decode_pixels(h[key].path, h[key].format_code,
                                  read_depth(h[key].bit_depth, bit_depth), h[key].orientation,
                                  (h[key].height, h[key].width))
                row = (i * len(keys) + k) * height
                pixels[row:row + x.shape[0], :x.shape[1]].assign(x)
    return pixels, scale, height


def _find_store(root, dataset, split, bit_depth, examples, headers, crop, cfg):
    """(folder, index, tiles per side) of the split's prepared store, or None with a warning naming
    the command to run when the images are large enough for decoding to be slow."""
    folder, index = prepare_lib.find_store(root, dataset, split, bit_depth, examples)
    if folder is not None:
        return folder, index, prepare_lib.max_tiles(crop, cfg["scale_min"], cfg["scale_prob"],
                                                     index["tile"])
    first = headers[0][KEYS[dataset][0]]
    if index != "missing" or first.height * first.width >= SLOW_DECODING_PIXELS:
        why = "no prepared store" if index == "missing" else index
        logging.warning("%s: %s; decoding the PNGs of every training example instead (slow). "
                        "Run once: python -m ifan_jax.data.prepare --data_dir=%s --dataset=%s "
                        "--split=%s --bit_depth=%d%s", dataset, why, root, dataset, split,
                        bit_depth, "" if index == "missing" else " --overwrite")
    return None


def train_dataset(root, batch_size: int, crop: int = 256, seed: int = 0, start_step: int = 0,
                  augment=None, bit_depth: int = 8, process_index: int | None = None,
                  process_count: int | None = None, split: str = "train",
                  cache: bool = False, with_info: bool = False,
                  dataset: str = "dpdd", store: bool = True) -> TrainIterator:
    """Endless training batches from ROOT/DPDD/{split}_*, as the paper trained, or with
    dataset="pairs" from ROOT/{split}/{source,target} (blurred/sharp pairs, no dual-pixel views).

    Yields numpy dicts with the keys `layouts.KEYS[dataset]` ({"c", "l", "r", "gt"} for DPDD,
    {"c", "gt"} for pairs): float32 (batch_size // process_count, crop, crop, 3) in [0, 1].
    Global example e = step * batch_size + slot is a pure function of (seed, e): its scene (a
    fresh random order of the scenes every epoch), its augmentations (`augment.augment_example`,
    settings `augment`, None = the paper's) and its crop. Process p of n reads only slots
    [p * b, (p + 1) * b) of each global batch (b = batch_size // n), so hosts read disjoint
    examples that together make the global batch, and a run resumed at `start_step` sees the same
    stream. `with_info` adds "scene", "index" and the augmentation draws per example (for tests).
    16-bit PNGs are read at `bit_depth` bits (8: their high byte, as the official 8-bit training).

    Where the split was prepared at `bit_depth` (`python -m ifan_jax.data.prepare`, see
    `prepare.py`) and `store` is on, each crop reads only the raw tiles under its window; otherwise
    the PNGs are decoded for every example, which is most of the cost (DPDD: ~0.1 s per 16-bit
    image and core; a warning says what to run). `cache=True` decodes every scene once into host
    memory instead (integer pixels: the 350 DPDD training scenes take 7.9 GB at 8 bits, twice that
    at 16) and samples from there. The stream is identical in all three cases.
    """
    environment.hide_gpus_from_tensorflow()  # TensorFlow only feeds data: no accelerator memory
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of the number of "
                         f"processes ({process_count})")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    cfg = augment_lib.augment_config(augment)
    local = batch_size // process_count
    dataset = canonical_dataset(dataset)
    keys = KEYS[dataset]
    if "gt" not in keys:
        raise DataError(f"dataset {dataset!r} has no sharp targets to train on")
    examples = list_split(root, dataset, split)
    headers = check_examples(examples, keys, crop, f"{dataset} {split}")
    columns = _file_table(examples, headers, keys, bit_depth)
    table = {k: tf.constant(v) for k, v in columns.items()}
    files = [[(h[key], read_depth(h[key].bit_depth, bit_depth)) for key in keys] for h in headers]
    num_scenes = len(examples)

    cached = _decode_all(headers, keys, bit_depth) if cache else None
    stored = _find_store(root, dataset, split, bit_depth, examples, headers, crop, cfg) if (
        store and not cache) else None

    @tf.autograph.experimental.do_not_convert
    def load(index):
        scene = scene_index(seed, index, num_scenes)
        row = {k: v[scene] for k, v in table.items()}
        if stored is not None:  # integer pixels of the tiles under the window
            folder, contents, grid = stored
            images = {key: prepare_lib.window_reader(folder, contents, key, scene, grid)
                      for key in keys}
            value_scale = 65535.0 if contents["dtype"] == "uint16" else 255.0
        elif cached is None:
            images = {key: _decode(row, key, columns) for key in keys}
            value_scale = None
        else:  # integer pixels; augment_example converts only the window it crops
            pixels, value_scale, height = cached
            images = {key: functools.partial(_window, pixels, height, scene * len(keys) + i)
                      for i, key in enumerate(keys)}
        shape = (row[f"{keys[0]}/height"], row[f"{keys[0]}/width"])
        out = augment_lib.augment_example(images, example_key(seed, index), cfg, crop, with_info,
                                          value_scale, shape)
        if with_info:
            out.update(scene=scene, index=index)
        return out

    @tf.autograph.experimental.do_not_convert
    def slots(step):
        return step * batch_size + process_index * local + tf.range(local, dtype=tf.int64)

    ds = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max // (2 * batch_size))
    ds = ds.map(slots).unbatch()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    ds = ds.with_options(_options())

    def scenes_of_step(step):
        return [int(scene_index(seed, i, num_scenes)) for i in slots(tf.constant(step, tf.int64))]

    return TrainIterator(ds, examples, files, local, start_step, scenes_of_step)
