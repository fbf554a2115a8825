"""Jitted functions compiled ahead of time, with the compiler's leftover heap handed back.

XLA's compiler allocates hundreds of MB while it works (about 0.4-0.6 GB for the training step of
the paper's network on the CPU) and frees them when done, but glibc keeps the freed heap in the
process. The first run of the compiled function then allocates its buffers on top of it: the
training step at batch 2 peaked at 2.61 GB resident instead of 2.17 GB (measured on the 2-core
CPU, 2026-11-29, with and without the hand-back). `AheadOfTime` compiles on the first call for
each input shape and returns the freed heap to the operating system (`release_freed_memory`)
before the function first runs.

On the CPU each use compiles with its own XLA options (`INFERENCE_CPU_OPTIONS`,
`TRAINING_CPU_OPTIONS`), chosen by measurement; other backends compile with XLA's defaults.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

# The forward pass on the CPU: XLA's own convolutions in place of YNNPACK's, and the schedule
# that minimises memory in place of the one that lets independent operations run concurrently.
# Measured on the 2-core CPU (2026-11-29), the paper's network at 1280x720, fresh processes taking
# turns: 4.08-4.16 s per call and a 781-799 MB peak, against 4.23-4.34 s and 925-929 MB with
# XLA's defaults (XLA's temporary memory 338 MiB against 400 MiB); at 640x360 1.02-1.04 s and
# 460 MB against 1.05-1.08 s and 517-553 MB.
INFERENCE_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "",
                         "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
# The training step on the CPU: the memory-minimising schedule only (YNNPACK's convolutions make
# the backward pass faster: 3.45 s against 4.3 s without them at batch 2). Measured as above at
# 256x256: batch 2 peaks at 1.95 GB against 2.17 GB (XLA's temporary memory 852 MiB against
# 1034 MiB) and takes 3.6 s against 3.45 s; batch 8 peaks at 4.58-4.60 GB against 4.99-5.00 GB
# (3207 MiB against 3501 MiB) and takes 18.5-19.1 s against 17.6-19.4 s.
TRAINING_CPU_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def release_freed_memory() -> bool:
    """Return the heap that freed objects left in this process to the OS (glibc `malloc_trim`);
    False where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _shapes(tree) -> tuple:
    leaves, structure = jax.tree_util.tree_flatten(tree)
    return structure, tuple((getattr(x, "shape", None), getattr(x, "dtype", None)) for x in leaves)


@functools.cache
def _known_option(name: str, value) -> bool:
    """Whether this jaxlib's XLA accepts the compile option (older releases lack some)."""
    try:
        jax.jit(jnp.negative).lower(jnp.zeros(2)).compile({name: value})
        return True
    except Exception:  # XLA's INVALID_ARGUMENT for an option it does not have
        return False


def compiler_options(first, cpu_options: Mapping[str, Any] | None) -> dict | None:
    """`cpu_options` (those this XLA knows) when `first` (a pytree of arrays) lives on the CPU, or
    the default backend is the CPU; None (XLA's defaults) otherwise."""
    if not cpu_options:
        return None
    leaves = jax.tree_util.tree_leaves(first)
    devices = getattr(leaves[0], "devices", None) if leaves else None
    platform = next(iter(devices())).platform if devices else jax.default_backend()
    if platform != "cpu":
        return None
    return {k: v for k, v in cpu_options.items() if _known_option(k, v)} or None


class AheadOfTime:
    """`jitted` (a `jax.jit` function) called as usual, compiled once per shape of its arguments
    after the first, then the freed heap released. The first argument (parameters, train state)
    must keep its shapes from call to call: only the others' shapes and the static keyword
    arguments select the executable, so a call costs no walk over a large parameter tree.
    On the CPU it compiles with `cpu_options` (XLA debug options by name)."""

    def __init__(self, jitted: Callable, cpu_options: Mapping[str, Any] | None = None):
        self.jitted = jitted
        self.cpu_options = dict(cpu_options or {})
        self.executables: dict[Any, Any] = {}

    def compile(self, first, *args, **static):
        """The executable for these arguments, compiled now if it is not there yet."""
        key = (_shapes(args), tuple(sorted(static.items())))
        executable = self.executables.get(key)
        if executable is None:
            executable = self.compile_uncached(first, *args, **static)
            self.executables[key] = executable
            release_freed_memory()
        return executable

    def compile_uncached(self, first, *args, **static):
        """A new executable for these arguments (which may be `jax.ShapeDtypeStruct`s), compiled as
        `compile` does but not kept (for memory analysis)."""
        lowered = self.jitted.lower(first, *args, **static)
        return lowered.compile(compiler_options(first, self.cpu_options))

    def lower(self, *args, **kwargs):
        return self.jitted.lower(*args, **kwargs)

    def __call__(self, first, *args, **static):
        return self.compile(first, *args, **static)(first, *args)
