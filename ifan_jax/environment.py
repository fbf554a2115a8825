"""The process set-up every entry point shares: TensorFlow's environment, quiet library logs and
the on-disk compilation cache.

    from ifan_jax import environment
    environment.configure_tensorflow()      # before TensorFlow is imported (train.py does it first)
    tf = environment.tensorflow()           # TensorFlow itself, imported so configured, on first use
    environment.quiet_libraries(verbosity)  # absl/orbax/TF INFO only with --verbosity >= 1
    environment.enable_compilation_cache()  # the tools; `use_compilation_cache` for the library

TensorFlow only reads and augments data here: it must not take GPU memory from JAX, its oneDNN
kernels round differently from run to run (1 ulp in a few runs out of ten on a busy CPU, which
would break the exact resume of a training run), and its C++ start-up notices are noise to a user.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings

import jax
from absl import logging as absl_logging

from ifan_jax import fileio

# Loggers whose INFO records are library internals (orbax logs every phase of a save; absl is the
# root of JAX's and TensorFlow's Python logs).
_LIBRARY_LOGGERS = ("absl", "orbax", "jax", "jax._src.xla_bridge", "tensorflow", "clu", "etils",
                    "tensorflow_datasets")


def configure_tensorflow() -> None:
    """Environment for TensorFlow, set before it is imported: oneDNN off (exact resume), C++ logs at
    warnings and above; if it is already imported, only hide the GPUs from it."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        hide_gpus_from_tensorflow()


@functools.cache
def tensorflow():
    """The TensorFlow module, configured (`configure_tensorflow`: oneDNN off, quiet C++ logs; no
    GPUs, it only reads and writes data) before its first import. Deliberately deferred: the
    data listing, header checks and image_io's 8-bit paths must not pay TensorFlow's seconds of
    import time."""
    configure_tensorflow()
    import tensorflow as tf  # deferred on purpose, see the docstring

    hide_gpus_from_tensorflow()
    return tf


def tensorflow_was_imported_with_onednn() -> bool:
    """True when TensorFlow is already loaded with its oneDNN kernels on (training batches may then
    differ in the last bit between runs)."""
    return "tensorflow" in sys.modules and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0"


def hide_gpus_from_tensorflow() -> None:
    """Keep TensorFlow (which only feeds data) off the GPUs so that it takes no accelerator memory."""
    import tensorflow as tf  # deliberately deferred: importing TF takes seconds and most users
    # of this module (the deblur tool, the web page) never need it

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # devices already initialised: nothing to hide any more
        pass


def quiet_libraries(verbosity: int = 0) -> None:
    """Library INFO logs only when `verbosity` >= 1; warnings and errors always.

    At verbosity 0 the absl/orbax/JAX/TensorFlow loggers are set to WARNING (and JAX's
    "Unable to initialize backend" notices, which are INFO/WARNING records of xla_bridge, are
    dropped), TensorFlow's C++ logs to errors, and Python warnings from libraries are hidden."""
    if verbosity >= 1:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    absl_logging.set_verbosity(absl_logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(orbax|jax|flax|tensorflow).*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def enable_compilation_cache(path: str | None = None) -> str:
    """Persist XLA compilations on disk (`fileio.cache_dir("xla")`: $IFAN_JAX_CACHE/xla, default
    ~/.cache/ifan_jax/xla) so a second run of a tool skips compiling the network.

    Every compilation is kept, however quick: a threshold makes it depend on the machine's speed
    (and its load) whether the network's own compilation is cached at all.
    """
    path = path or fileio.cache_dir("xla")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def use_compilation_cache() -> str | None:
    """The library's way to the tools' compilation cache (`Deblurrer` calls it when built): the
    directory JAX already caches in, if one is set (by the user, by $JAX_COMPILATION_CACHE_DIR or
    by a tool); else `enable_compilation_cache()`'s. None when that folder cannot be created (a
    read-only home): compiling then works as without a cache."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    try:
        return enable_compilation_cache()
    except OSError:
        return None
