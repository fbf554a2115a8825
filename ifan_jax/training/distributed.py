"""Devices and processes of a training run: `jax.distributed` set-up, the data mesh, the global
batch and pre-emption notices.

    python train.py ... --config.distributed=True     # on every host, with one of:
      SLURM or a Cloud TPU pod: found automatically (JAX's cluster detection)
      elsewhere: JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i

Every device of every process sits on one mesh axis, "data": the train state is replicated and
the global batch split along its first axis; process p contributes rows [p * b, (p + 1) * b) of
each global batch (b = global batch / processes), which it reads itself (see
`ifan_jax.data.train_dataset`). On CPU-only hosts the processes talk through JAX's gloo
collectives. A process that dies is noticed by the others within the heartbeat timeout
(`IFAN_JAX_HEARTBEAT_TIMEOUT` seconds, default 60): they stop with an error instead of waiting
for it for ever.
"""

from __future__ import annotations

import os
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ifan_jax.errors import UserError, one_line

DATA_AXIS = "data"
ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
HEARTBEAT_ENV = "IFAN_JAX_HEARTBEAT_TIMEOUT"
DEFAULT_HEARTBEAT_S = 60


class DistributedError(UserError, RuntimeError):
    """Several processes that cannot be set up; the message says what to set."""


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name}={value!r}: must be an integer") from None


def initialize_arguments() -> dict:
    """Keyword arguments of `jax.distributed.initialize` from the environment: the coordinator,
    process count and process id where JAX_NUM_PROCESSES / JAX_PROCESS_ID are set (JAX itself
    reads only the address), else none of them (SLURM, Cloud TPU: JAX detects the cluster);
    the heartbeat timeout always."""
    kwargs = {"heartbeat_timeout_seconds": _int_env(HEARTBEAT_ENV) or DEFAULT_HEARTBEAT_S}
    num, index = _int_env("JAX_NUM_PROCESSES"), _int_env("JAX_PROCESS_ID")
    if num is not None or index is not None:
        missing = [name for name in ENV_VARS if not os.environ.get(name)]
        if missing:
            raise DistributedError(f"set {', '.join(missing)} too (with JAX_NUM_PROCESSES and "
                                   f"JAX_PROCESS_ID, JAX needs all of {', '.join(ENV_VARS)})")
        kwargs.update(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                      num_processes=num, process_id=index)
    return kwargs


def maybe_initialize_distributed(distributed: bool) -> None:
    """`jax.distributed.initialize` once when `distributed` (several processes), with CPU
    collectives through gloo. Raises DistributedError with JAX's reason on one line."""
    if not distributed or jax.distributed.is_initialized():
        return
    kwargs = initialize_arguments()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError, TypeError) as e:
        raise DistributedError(
            f"--config.distributed=True: {one_line(e, with_type=False)} (outside SLURM and Cloud TPU set "
            f"{', '.join(ENV_VARS)} on every process)") from None


def data_mesh() -> Mesh:
    """All devices of all processes on one axis, "data" (in process order)."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def split_batch(mesh: Mesh) -> NamedSharding:
    """Arrays split along their first axis over the mesh."""
    return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """This process's numpy batch -> global arrays split over the mesh's "data" axis (the
    processes' rows concatenated in process order)."""
    sharding = split_batch(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}


class Preemption:
    """Whether to checkpoint and stop now. One process: SIGTERM (the usual pre-emption notice)
    sets a flag (the handler is put back by `close`). Several: JAX's pre-emption sync point, so
    that every process stops at the same step whichever of them got the notice."""

    def __init__(self):
        self.signalled = False
        self.previous = None
        self.installed = False
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
            self.installed = True

    def _handle(self, signum, frame):
        del signum, frame
        self.signalled = True

    def requested(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.signalled

    def close(self) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self.previous is None else self.previous)
            self.installed = False


def sync(name: str) -> None:
    """Wait until every process gets here (nothing to do with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
