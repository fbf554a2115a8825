"""The training workdir: checkpoints (topology-free reading, donation-safe saving, errors with their
cause), the workdir check, a failed start that leaves nothing behind, and the command line."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifan_jax import checkpoint
from ifan_jax.data import DataError
from ifan_jax.data import testing as data_testing
from ifan_jax.training import distributed
from ifan_jax.training import loop as train_lib
from ifan_jax.training import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch(n=2, size=32, seed=0, keys=("c", "r", "l", "gt")):
    rng = np.random.default_rng(seed)
    return {k: rng.random((n, size, size, 3), dtype=np.float32) for k in keys}


@pytest.mark.slow
def test_a_save_followed_by_a_donated_step_writes_the_saved_values(tiny_config, tmp_path):
    mesh = distributed.data_mesh()
    state = jax.device_put(step_lib.create_train_state(tiny_config), distributed.replicated(mesh))
    step = step_lib.compile_train_step(mesh)
    state, _ = step(state, distributed.global_batch(batch(seed=1), mesh))
    saved = jax.tree.map(jnp.copy, state.params)  # (no numpy view: it would block donation)
    checkpoints = checkpoint.Checkpoints(str(tmp_path), keep=2)
    checkpoint.write_model_config(str(tmp_path), tiny_config.model)
    try:
        checkpoints.save(state)  # asynchronous: the files are written while the next steps run
        for seed in range(2, 5):
            state, _ = step(state, distributed.global_batch(batch(seed=seed), mesh))
        checkpoints.wait()
    finally:
        checkpoints.close()
    before = jax.tree.leaves(state.params)[0]
    state, _ = step(state, distributed.global_batch(batch(seed=5), mesh))
    assert before.is_deleted()  # the step donates (reuses) the state's buffers
    _, params = checkpoint.load_params(str(tmp_path))
    moved = jax.device_get(state.params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, np.asarray(b))
    assert any(not np.array_equal(b, c) for b, c in zip(jax.tree.leaves(saved),
                                                         jax.tree.leaves(moved)))


def test_an_unreadable_checkpoint_says_why(tiny_official_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_official_checkpoint, broken)
    config = json.loads((broken / checkpoint.MODEL_CONFIG_FILE).read_text())
    config["channels"] = 16  # the stored arrays are for 8 channels
    (broken / checkpoint.MODEL_CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(checkpoint.CheckpointError, match=r"parameter \['disparity_map_estimator'\]"
                                                         r"\['conv_in'\]\['bias'\] is \(32,\) in "
                                                         r"step 0, but model_config.json makes it "
                                                         r"\(64,\)"):
        checkpoint.load_params(str(broken))
    for data in (broken / "checkpoints" / "0" / "params").rglob("d/*"):
        data.write_bytes(b"")  # the arrays' bytes are gone
    config["channels"] = 8
    (broken / checkpoint.MODEL_CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load_params(str(broken))
    message = str(info.value)
    assert "\n" not in message and str(broken) in message and "step 0 could not be read" in message
    assert len(message.split("could not be read")[1]) > 30  # orbax's reason, not only its type
    with pytest.raises(checkpoint.CheckpointError, match="no step 3 .have .0.."):
        checkpoint.load_params(tiny_official_checkpoint, step=3)


def test_a_workdir_of_another_model_is_refused_before_anything_is_written(tiny_config, tmp_path):
    checkpoint.prepare_workdir(str(tmp_path), tiny_config.model)
    assert checkpoint.check_workdir(str(tmp_path), tiny_config.model)
    assert not checkpoint.check_workdir(str(tmp_path / "new"), tiny_config.model)
    tiny_config.model.num_iterations = 5
    with pytest.raises(checkpoint.CheckpointError, match=r"another model \(config.model."
                                                         r"num_iterations: '3' there, '5' now"):
        checkpoint.check_workdir(str(tmp_path), tiny_config.model)


def test_a_failed_start_leaves_no_new_workdir(tiny_config, tmp_path):
    workdir = tmp_path / "run"
    tiny_config.data_dir = str(tmp_path / "no_data")
    with pytest.raises(DataError):
        train_lib.train_and_evaluate(tiny_config, str(workdir))
    assert not workdir.exists()
    # Data present but unreadable: found after the workdir was made, which is then removed.
    data = tmp_path / "data"
    data_testing.write_fake_dataset(data, "dpdd", num={"train": 2, "val": 1}, size=(40, 48))
    broken = sorted((data / "DPDD" / "train_c" / "source").iterdir())[0]
    broken.write_bytes(b"not a png")
    tiny_config.data_dir = str(data)
    with pytest.raises(DataError, match=broken.name):
        train_lib.train_and_evaluate(tiny_config, str(workdir))
    assert not workdir.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        train_lib.train_and_evaluate(tiny_config, str(existing))
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_pairs_without_views_train_without_the_disparity_loss(tiny_config):
    tiny_config.dataset = "pairs"
    train_lib.check_config(tiny_config, num_devices=1)
    tiny_config.model.dual_pixel_input = True
    with pytest.raises(train_lib.ConfigError, match=r"^config.model.dual_pixel_input=True needs "
                                                    r"dual-pixel views, which config.dataset="
                                                    r"'pairs' does not have$"):
        train_lib.check_config(tiny_config, num_devices=1)
    tiny_config.model.dual_pixel_input = False
    state = step_lib.create_train_state(tiny_config)
    step = jax.jit(step_lib.train_step)
    _, pairs = step(state, batch(keys=("c", "gt")))
    _, dual = step(state, batch())
    assert "loss_disparity" not in pairs and "loss_disparity" in dual
    assert set(pairs) == set(dual) - {"loss_disparity"}
    np.testing.assert_allclose(float(pairs["loss"]),
                               float(pairs["loss_deblur"]) + float(pairs["loss_reblur"]), rtol=1e-6)


def test_jax_process_variables_are_passed_on(monkeypatch):
    for name in (*distributed.ENV_VARS, distributed.HEARTBEAT_ENV):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize_arguments() == {
        "heartbeat_timeout_seconds": distributed.DEFAULT_HEARTBEAT_S}  # SLURM/TPU: JAX detects
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host0:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    monkeypatch.setenv(distributed.HEARTBEAT_ENV, "15")
    assert distributed.initialize_arguments() == {
        "coordinator_address": "host0:1234", "num_processes": 2, "process_id": 1,
        "heartbeat_timeout_seconds": 15}
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    with pytest.raises(distributed.DistributedError, match="set JAX_COORDINATOR_ADDRESS too"):
        distributed.initialize_arguments()
    monkeypatch.setenv("JAX_PROCESS_ID", "one")
    with pytest.raises(distributed.DistributedError, match="JAX_PROCESS_ID='one': must be an integer"):
        distributed.initialize_arguments()


def run_cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_command_line_mistakes_are_one_line_and_help_exits_0(tmp_path):
    workdir = tmp_path / "run"
    for args, expected in [
        (["--config=configs/nonexistent.py"], "configs/nonexistent.py: no such config file"),
        (["--config=configs/tiny.py:N=x"], "N='x': expected int"),
        (["--config=configs/tiny.py", "--config.bogus=1"], "bogus"),
        (["--config=configs/tiny.py", "--config.bacth_size=4"],
         "--config.bacth_size: the config has no key 'bacth_size' (did you mean 'batch_size'?)"),
        (["--config=configs/tiny.py", "--config.model.chanels=4"],
         "--config.model.chanels: the config has no key 'chanels' (did you mean 'channels'?)"),
    ]:
        proc = run_cli(*args, f"--workdir={workdir}")
        assert proc.returncode != 0
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("train.py: ") and expected in lines[0], lines
        assert not workdir.exists()
    proc = run_cli("--help")
    assert proc.returncode == 0 and "--workdir" in proc.stdout


def test_the_training_bit_depth_is_recorded_as_metadata(tiny_config, tmp_path):
    stored = checkpoint.stored_model_config(tiny_config)
    assert stored["bit_depth"] == 8 and checkpoint.model_fields(stored) == tiny_config.model.to_dict()
    checkpoint.prepare_workdir(str(tmp_path), stored)
    with open(tmp_path / checkpoint.MODEL_CONFIG_FILE) as f:
        assert json.load(f)["bit_depth"] == 8
    # A workdir written before the record existed resumes; another recorded depth is refused.
    old = tmp_path / "old"
    checkpoint.prepare_workdir(str(old), tiny_config.model)
    assert checkpoint.check_workdir(str(old), stored)
    tiny_config.bit_depth = 16
    with pytest.raises(checkpoint.CheckpointError, match=r"bit_depth: '8' there, '16' now"):
        checkpoint.check_workdir(str(tmp_path), checkpoint.stored_model_config(tiny_config))
