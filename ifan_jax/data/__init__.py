"""Data: DPDD, RealDOF, PixelDP and CUHK on tf.data, TFDS builders, synthetic dual-pixel data.

    from ifan_jax import data
    ds = data.load_split("datasets", "dpdd", "test")          # whole images, tf.data.Dataset
    it = data.train_dataset("datasets", batch_size=8, seed=0)  # augmented crops, numpy batches
    it.close()                                                 # its threads and buffers go now
    python -m ifan_jax.data.synth --out=datasets --num=16 --size=128   # synthetic DPDD layout
    python -m ifan_jax.data.prepare --data_dir=datasets   # once: crops read only their window

TensorFlow is imported on first use of the pipelines only, so the file listing and the synthetic
generator stay light. Importing this package changes nothing in the process: the entry points set
TensorFlow's environment before it loads (`ifan_jax.environment.configure_tensorflow`: oneDNN off,
which an exactly resumable data stream needs; quiet C++ logs), and the pipelines keep TensorFlow
off the GPUs when they first run.
"""

from ifan_jax.data.layouts import (
    DATASETS,
    KEYS,
    ROTATED_DATASETS,
    SPLITS,
    DataError,
    Pairing,
    list_split,
    pair_split,
)

_PIPELINE = ("load_split", "load_examples", "train_dataset", "numpy_iterator", "check_examples",
             "TrainIterator")

__all__ = ["DATASETS", "KEYS", "ROTATED_DATASETS", "SPLITS", "DataError", "Pairing", "list_split",
           "pair_split", *_PIPELINE]


def __getattr__(name):
    if name in _PIPELINE:
        from ifan_jax.data import pipeline  # deferred on purpose: imports TensorFlow (seconds)

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ifan_jax.data' has no attribute {name!r}")
