"""Data parallelism and microbatches: two devices, and two devices each taking its share of the
batch in two passes, give the parameters of one device in one pass on the same global batch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from repo import ROOT

# Runs in a fresh process (the device count is fixed when JAX starts): two updates of a tiny IFAN
# with the training loop's jitted step on a mesh of every device, then saves the parameters.
WORKER = r"""
import json, sys
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from ifan_jax.config import load_config
from ifan_jax.training import distributed
from ifan_jax.training import loop as train_lib
from ifan_jax.training import step as step_lib

config = load_config("tiny")
config.batch_size = 4
config.microbatches = int(sys.argv[3])
train_lib.check_config(config)
mesh = distributed.data_mesh()
state = jax.device_put(step_lib.create_train_state(config), NamedSharding(mesh, P()))
initial = jax.tree.leaves(jax.device_get(state.params))
step = step_lib.compile_train_step(mesh, config.microbatches)
rng = np.random.default_rng(0)
losses = []
for _ in range(2):
    batch = {k: rng.random((4, 32, 32, 3), dtype=np.float32) for k in ("c", "r", "l", "gt")}
    batch = distributed.global_batch(batch, mesh)
    shards = len(batch["c"].addressable_shards)
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
final = jax.tree.leaves(jax.device_get(state.params))
np.savez(sys.argv[2], *[f - i for f, i in zip(final, initial)], *final)
print(json.dumps({"devices": jax.device_count(), "shards": shards, "losses": losses}))
"""


def run_worker(devices: int, out: str, microbatches: int = 1) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", WORKER, ROOT, out, str(microbatches)], env=env,
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("one_device") / "one.npz")
    return run_worker(1, out), out


@pytest.mark.slow
@pytest.mark.parametrize("microbatches", [1, 2])
def test_two_devices_match_one_device(one_device, tmp_path, microbatches):
    one, one_path = one_device
    two = run_worker(2, str(tmp_path / "two.npz"), microbatches)
    assert (one["devices"], one["shards"]) == (1, 1)
    assert (two["devices"], two["shards"]) == (2, 2)  # the batch really is split
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-6)
    with np.load(one_path) as a, np.load(tmp_path / "two.npz") as b:
        arrays_a = [a[k] for k in sorted(a.files, key=lambda s: int(s.split("_")[1]))]
        arrays_b = [b[k] for k in sorted(b.files, key=lambda s: int(s.split("_")[1]))]
    n = len(arrays_a) // 2
    deltas_a, deltas_b = arrays_a[:n], arrays_b[:n]
    assert max(np.abs(d).max() for d in deltas_a) > 1e-4  # the parameters moved
    # The updates agree up to summation order: deltas are differences of float32 parameters, so
    # allow two units in the last place of the tensor's largest parameter.
    for da, db, pa in zip(deltas_a, deltas_b, arrays_a[n:]):
        ulp = float(np.spacing(np.float32(np.abs(pa).max())))
        np.testing.assert_allclose(db, da, rtol=1e-4, atol=max(1e-8, 2 * ulp))
    for pa, pb in zip(arrays_a[n:], arrays_b[n:]):
        np.testing.assert_allclose(pb, pa, rtol=1e-6, atol=1e-8)
