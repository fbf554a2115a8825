"""train_and_evaluate / train.py end to end on a tiny fake DPDD: NaN guard, kill -9 and resume."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from repo import ROOT

from ifan_jax import checkpoint
from ifan_jax.config import load_config
from ifan_jax.data import testing as data_testing

# configs/ifan.py with a tiny model, a tiny fake data set and frequent checkpoints.
OVERRIDES = {
    "model.channels": 8, "model.num_iterations": 3, "model.reblur_iterations": 3,
    "batch_size": 2, "crop_size": 32, "learning_rate": 1e-3, "total_steps": 12,
    "checkpoint_every_steps": 2, "eval_every_steps": 1000, "log_every_steps": 1000,
    "image_summary_every_steps": 1000, "keep_checkpoints": 3, "eval_lpips": False,
}


def ifan_config():
    return load_config("ifan")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data_testing.write_fake_dataset(root, "dpdd", num={"train": 4, "val": 2}, size=(40, 48))
    return str(root)


def tiny_config(data_root, **extra):
    config = ifan_config()
    for key, value in {**OVERRIDES, "data_dir": data_root, **extra}.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    from ifan_jax import data as data_lib
    from ifan_jax.training import loop as train_lib

    real = data_lib.train_dataset

    def poisoned(*args, start_step=0, **kwargs):
        for step, batch in enumerate(real(*args, start_step=start_step, **kwargs), start_step):
            if step == 4:  # the 5th update
                batch = dict(batch, c=np.full_like(batch["c"], np.nan))
            yield batch

    monkeypatch.setattr(data_lib, "train_dataset", poisoned)
    workdir = str(tmp_path / "run")
    with pytest.raises(train_lib.NonFiniteLossError, match=r"step 5 \(loss = nan\)"):
        train_lib.train_and_evaluate(tiny_config(data_root), workdir)
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps == [2, 4]  # nothing saved at or after the bad step
    _, params = checkpoint.load_params(workdir)
    assert all(np.isfinite(np.asarray(x)).all() for x in _leaves(params))


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


def run_train(workdir, data_root, env, extra=(), wait=True):
    args = [sys.executable, os.path.join(ROOT, "train.py"),
            f"--config={os.path.join(ROOT, 'configs', 'ifan.py')}", f"--workdir={workdir}",
            f"--config.data_dir={data_root}"]
    args += [f"--config.{k}={v}" for k, v in OVERRIDES.items()] + list(extra)
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters_bit_for_bit(data_root, tmp_path):
    env = dict(os.environ, IFAN_JAX_CACHE=str(tmp_path / "xla_cache"))
    straight = str(tmp_path / "straight")
    out = run_train(straight, data_root, env)
    assert "Validation after step 12" in out

    resumed = str(tmp_path / "resumed")
    proc = run_train(resumed, data_root, env, wait=False)
    first = os.path.join(resumed, "checkpoints", "2")
    deadline = time.time() + 600
    while not os.path.isdir(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = max(int(s) for s in os.listdir(os.path.join(resumed, "checkpoints")) if s.isdigit())
    assert killed_at < 12

    # Restarted, then stopped by SIGTERM (a pre-emption notice): it checkpoints and exits cleanly.
    stopped = killed_at
    if killed_at + 2 <= 8:
        proc = run_train(resumed, data_root, env, wait=False)
        after = os.path.join(resumed, "checkpoints", str(killed_at + 2))
        while not os.path.isdir(after) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        assert f"Resuming from {resumed}/checkpoints/{killed_at}" in out
        stopped = max(int(s) for s in os.listdir(os.path.join(resumed, "checkpoints")) if s.isdigit())
        if stopped < 12:  # (else the notice came as it finished; it then ends normally)
            assert f"Stopped at step {stopped} on a pre-emption notice" in out

    out = run_train(resumed, data_root, env)
    if stopped < 12:
        assert f"Resuming from {resumed}/checkpoints/{stopped}" in out
    config_a, params_a = checkpoint.load_params(straight)
    config_b, params_b = checkpoint.load_params(resumed)
    assert config_a == config_b
    leaves_a, leaves_b = list(_leaves(params_a)), list(_leaves(params_b))
    assert len(leaves_a) == len(leaves_b) > 0
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(leaves_a, leaves_b))
    # The workdir is a checkpoint for inference: the best parameters, without the RBN.
    from ifan_jax.inference import Deblurrer

    deblur = Deblurrer.from_checkpoint(resumed, which="best")
    assert "reblurring_network" not in deblur.params

    # The same run in two passes per step (`--config.microbatches=2`, as the README gives it):
    # the same updates, to float rounding.
    halves = str(tmp_path / "halves")
    out = run_train(halves, data_root, env, extra=["--config.microbatches=2"])
    assert "global batch 2 in 2 passes per device" in out
    _, params_c = checkpoint.load_params(halves)
    leaves_c = list(_leaves(params_c))
    moved = max(float(np.abs(np.asarray(c) - np.asarray(a)).max())
                for a, c in zip(leaves_a, leaves_c))
    assert moved < 1e-5, moved
