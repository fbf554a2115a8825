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
    with pytest.raises(checkpoint.CheckpointError, match=r"model_config.json: damaged \(its "
                                                         r"SHA-256 differs"):
        checkpoint.load_params(str(broken))
    checkpoint.write_checksums(str(broken), [checkpoint.MODEL_CONFIG_FILE])  # edited on purpose
    with pytest.raises(checkpoint.CheckpointError, match=r"parameter \['disparity_map_estimator'\]"
                                                         r"\['conv_in'\]\['bias'\] is \(32,\) in "
                                                         r"step 0, but model_config.json makes it "
                                                         r"\(64,\)"):
        checkpoint.load_params(str(broken))
    data_files = list((broken / "checkpoints" / "0" / "params").rglob("d/*"))
    for data in data_files:
        data.write_bytes(b"")  # the arrays' bytes are gone
    config["channels"] = 8
    (broken / checkpoint.MODEL_CONFIG_FILE).write_text(json.dumps(config))
    checkpoint.write_checksums(str(broken), [checkpoint.MODEL_CONFIG_FILE])
    with pytest.raises(checkpoint.CheckpointError, match=r"/params/.*d/[0-9a-f]+: damaged"):
        checkpoint.load_params(str(broken))
    # Written before checksums existed: orbax's own reason, on one line.
    (broken / "checkpoints" / "0" / checkpoint.CHECKSUMS_FILE).unlink()
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


@pytest.mark.parametrize("arg", ["quickstart", "tiny", "ifan", "ifan:variant=baseline",
                                 "ifan:variant=D", "ifan:variant=F", "ifan:variant=FD",
                                 "ifan:variant=FR", "ifan:N=8", "ifan:N=26", "ifan:N=35",
                                 "ifan:N=44", "ifan:fac", "ifan:dual", "ifan:bits=16",
                                 "ifan:iac=official", "ifan:data=pairs", "ifan:N=44,dual,fac"])
def test_every_shipped_config_is_a_valid_model_config(arg):
    from ifan_jax.config import load_config

    assert checkpoint.model_config_problem(checkpoint.stored_model_config(load_config(arg))) is None


def test_model_config_values_a_real_ifan_cannot_have_are_refused(tiny_official_checkpoint,
                                                                 tiny_config, tmp_path):
    good = json.loads(open(os.path.join(tiny_official_checkpoint,
                                        checkpoint.MODEL_CONFIG_FILE)).read())
    for change, message in [
        (dict(num_iterations=10**9), "num_iterations=1000000000: must be an integer from 1 to 64"),
        (dict(res_units=10**6), "res_units=1000000: must be an integer from 1 to 8"),
        (dict(channels=0), "channels=0: must be an integer from 1 to 128"),
        (dict(channels=8.0), "channels=8.0: must be an integer from 1 to 128"),
        (dict(filter_size=4), "filter_size=4: must be an odd integer from 1 to 7"),
        (dict(use_reblur=1), "use_reblur=1: must be true or false"),
        (dict(iac_variant="fast"), "iac_variant=fast: must be one of 'separable', 'official'"),
        (dict(bit_depth=12), "bit_depth=12: must be one of 8, 16"),
        (dict(dtype="int8"), "dtype=int8: must be one of 'float32', 'bfloat16', 'float16'"),
        (dict(layers=3), "layers: not a key of an IFAN model config"),
        (dict(channels=128, num_iterations=64), "makes an IFAN of 1,329,842,499 parameters, more "
                                                "than the 245,044,992 allowed"),
    ]:
        folder = tmp_path / str(len(os.listdir(tmp_path)))
        folder.mkdir()
        checkpoint.write_model_config(str(folder), {**good, **change})
        with pytest.raises(checkpoint.CheckpointError) as info:
            checkpoint.read_model_config(str(folder))
        assert str(info.value).startswith(f"{folder / checkpoint.MODEL_CONFIG_FILE}: {message}")
    for text, message in (("[" * 50_000, "model_config.json: not valid JSON"),
                          (" " * 100_000, "model_config.json: 100,000 bytes, not a model config")):
        (folder / checkpoint.MODEL_CONFIG_FILE).write_text(text)
        checkpoint.write_checksums(str(folder), [checkpoint.MODEL_CONFIG_FILE])
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.read_model_config(str(folder))
    # A training config is held to the same ranges before anything is built.
    tiny_config.model.channels = 0
    with pytest.raises(train_lib.ConfigError, match=r"^config.model.channels=0: must be an integer "
                                                    r"from 1 to 128$"):
        train_lib.check_config(tiny_config, num_devices=1)


def test_non_finite_weights_are_refused_naming_the_parameter(tiny_official_checkpoint, tmp_path):
    config, params = checkpoint.load_params(tiny_official_checkpoint)
    params["filter_predictor"]["filter_conv"]["bias"][3] = np.inf
    checkpoint.save_inference_checkpoint(str(tmp_path / "inf"), params, config)
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/0: parameter filter_predictor/"
                                                         r"filter_conv/bias holds an infinity"):
        checkpoint.load_params(str(tmp_path / "inf"))


def test_a_checkpoint_written_before_checksums_opens_without_a_word(tiny_official_checkpoint,
                                                                    tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(tiny_official_checkpoint, old)
    for sums in old.rglob(checkpoint.CHECKSUMS_FILE):
        sums.unlink()
    _, params = checkpoint.load_params(str(old))
    _, expected = checkpoint.load_params(tiny_official_checkpoint)
    np.testing.assert_array_equal(params["reconstructor"]["conv_out"]["kernel"],
                                  expected["reconstructor"]["conv_out"]["kernel"])
    assert capsys.readouterr() == ("", "")


def _state(step):
    """What `Checkpoints.save` reads of a train state, as small arrays."""
    import types

    rng = np.random.default_rng(step)
    return types.SimpleNamespace(step=np.int32(step),
                                 params={"w": rng.random(1000, dtype=np.float32)},
                                 opt_state={"mu": rng.random(1000, dtype=np.float32)},
                                 rng=np.zeros(2, np.uint32))


def test_a_damaged_newest_step_is_set_aside_and_the_one_before_resumed(tmp_path):
    workdir = str(tmp_path)
    checkpoints = checkpoint.Checkpoints(workdir, keep=3)
    for step in (2, 4, 6):
        checkpoints.save(_state(step))
        checkpoints.save_best(_state(step), {"psnr": float(step)})
    checkpoints.close()
    for step in (4, 6):
        sums = tmp_path / "checkpoints" / str(step) / checkpoint.CHECKSUMS_FILE
        assert sums.is_file() and "params/" in sums.read_text()
    data = max((tmp_path / "checkpoints" / "6" / "params").rglob("d/*"),
               key=lambda p: p.stat().st_size)
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0x10
    data.write_bytes(bytes(blob))
    (tmp_path / "best" / "6" / checkpoint.CHECKSUMS_FILE).write_text("")  # (lists nothing: intact)
    (tmp_path / "checkpoints" / "4" / "train_state" / "_METADATA").unlink()
    lines = []
    assert checkpoint.set_aside_damaged(workdir, lines.append) == 2
    damaged = data.relative_to(tmp_path / "checkpoints" / "6")
    assert lines == [
        f"{tmp_path}/checkpoints/6: {damaged} is damaged (its SHA-256 differs from the one "
        f"recorded when it was written); moved to 6.damaged, resuming from step 2",
        f"{tmp_path}/checkpoints/4: train_state/_METADATA is missing (listed in SHA256SUMS); "
        f"moved to 4.damaged, resuming from step 2"]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4.damaged", "6.damaged"]
    assert checkpoint.latest_step(workdir) == 2 and checkpoint.set_aside_damaged(workdir, print) == 2
    # Every step damaged: nothing is moved, the run does not start over silently.
    (tmp_path / "checkpoints" / "2" / "params" / "_METADATA").write_text("{}")
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints: every saved step is "
                                                         r"damaged \(the oldest: .*checkpoints/2/"
                                                         r"params/_METADATA: damaged"):
        checkpoint.set_aside_damaged(workdir, lines.append)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4.damaged", "6.damaged"]


def test_a_full_disk_during_a_save_is_one_line_with_the_last_good_step(tmp_path, monkeypatch,
                                                                       caplog):
    """The step's files are written (asynchronously), then its checksums: a write failing with
    ENOSPC there stops training with one message, whenever orbax reports it; its partial folder is
    removed and orbax's own tracebacks stay out of the console (they need --verbosity=1)."""
    import errno

    workdir = str(tmp_path / "run")
    checkpoints = checkpoint.Checkpoints(workdir, keep=3)
    checkpoints.save(_state(2))
    real = checkpoint.write_checksums

    def full(directory, names=None):
        if "4.orbax-checkpoint-tmp" in directory:
            raise OSError(errno.ENOSPC, "No space left on device", directory)
        real(directory, names)

    monkeypatch.setattr(checkpoint, "write_checksums", full)
    checkpoints.save(_state(4))  # fails in orbax's thread
    expected = (f"{workdir}: the disk is full while saving step 4; training stopped at step 6, "
                f"the last good checkpoint is {workdir}/checkpoints/2")
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoints.save(_state(6))
    assert str(info.value) == expected
    checkpoints.close()  # said once: not again
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
    assert not [r for r in caplog.records if "orbax" in r.pathname and r.levelno >= 40]
    # tensorstore's words for a full disk, as a real one (a 14 MB tmpfs) gave them:
    real_error = ValueError(
        'RESOURCE_EXHAUSTED: Error writing "opt_state.1.mu.x/0" in OCDBT database at local file '
        '"/w/checkpoints/4.orbax-checkpoint-tmp/train_state.orbax-checkpoint-tmp/ocdbt.process_0/": '
        'Failed to write 1793341 bytes to file 5: No space left on device [os_error_code=\'28\']')
    assert checkpoint.disk_full(real_error) and checkpoint.disk_full(OSError(errno.ENOSPC, "full"))
    assert not checkpoint.disk_full(ValueError("RESOURCE_EXHAUSTED: [os_error_code='13']"))


def test_a_workdir_that_is_a_file_is_refused(tiny_config, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(checkpoint.CheckpointError, match=r"notes.txt: is a file, not a folder; "
                                                         r"--workdir takes a folder"):
        checkpoint.check_workdir(str(path), tiny_config.model)
    with pytest.raises(checkpoint.CheckpointError, match=r"notes.txt/run: cannot be created "
                                                         r"\(Not a directory\)"):
        checkpoint.prepare_workdir(str(path / "run"), tiny_config.model)
    assert path.read_text() == "mine"
