"""The convert command (python -m ifan_jax.weights) on real torch-saved files (skipped without PyTorch)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from official_reference import reference, reference_state_dict

torch = pytest.importorskip("torch")

from ifan_jax.inference import Deblurrer  # noqa: E402
from ifan_jax.weights import convert  # noqa: E402


def save_torch_state_dict(path, state, wrap=None):
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    torch.save({wrap: tensors} if wrap else tensors, path)
    return str(path)


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory):
    return save_torch_state_dict(tmp_path_factory.mktemp("torch") / "IFAN.pytorch",
                                 reference_state_dict("official"))


def test_load_torch_state_dict(torch_file, tmp_path):
    state = convert.load_torch_state_dict(torch_file)
    expected = reference_state_dict("official")
    assert set(state) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value)
    # A checkpoint dict wrapping the state dict is unwrapped.
    wrapped = save_torch_state_dict(tmp_path / "wrapped.pt", expected, wrap="state_dict")
    assert set(convert.load_torch_state_dict(wrapped)) == set(expected)


@pytest.mark.slow
def test_cli_writes_checkpoint_that_reproduces_official(torch_file, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert convert.main([f"--input={torch_file}", f"--output={out}"]) == 0
    assert "N=3, ch=8" in capsys.readouterr().out
    deblur = Deblurrer.from_checkpoint(str(out))
    assert deblur.model.iac_variant == "official"
    ref = reference("official")
    got = deblur(ref["input_C"][0])
    assert np.max(np.abs(got - ref["result_eval"][0])) < 1e-5


def assert_failed_cleanly(rc, capsys, out_dir, *words):
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert not os.path.exists(out_dir)
    assert not [p for p in os.listdir(os.path.dirname(out_dir)) if p.startswith(".ckpt")]


def test_missing_input_file(tmp_path, capsys):
    out = str(tmp_path / "ckpt")
    rc = convert.main([f"--input={tmp_path / 'nope.pytorch'}", f"--output={out}"])
    assert_failed_cleanly(rc, capsys, out, "nope.pytorch", "no such file")


def test_corrupt_input_file(tmp_path, capsys):
    bad = tmp_path / "corrupt.pytorch"
    bad.write_bytes(os.urandom(1000))
    out = str(tmp_path / "ckpt")
    rc = convert.main([f"--input={bad}", f"--output={out}"])
    assert_failed_cleanly(rc, capsys, out, "corrupt.pytorch")


def test_not_an_ifan_state_dict(tmp_path, capsys):
    other = save_torch_state_dict(tmp_path / "other.pt", {"fc.weight": np.zeros((2, 2), "f4")})
    out = str(tmp_path / "ckpt")
    rc = convert.main([f"--input={other}", f"--output={out}"])
    assert_failed_cleanly(rc, capsys, out, "conv1_1.0.weight")


def test_existing_output_needs_overwrite(torch_file, tmp_path, capsys):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc = convert.main([f"--input={torch_file}", f"--output={out}"])
    err = capsys.readouterr().err
    assert rc == 1 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    assert convert.main([f"--input={torch_file}", f"--output={out}", "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model_config.json").exists()


@pytest.mark.slow
def test_module_entry_point_reports_one_line(tmp_path):
    out = tmp_path / "ckpt"
    proc = subprocess.run(
        [sys.executable, "-m", "ifan_jax.weights", f"--input={tmp_path / 'nope.pt'}",
         f"--output={out}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"convert: {tmp_path / 'nope.pt'}: no such file"]
    assert not out.exists()


@pytest.mark.parametrize("name, flag, depth", [("IFAN.pytorch", None, 8),
                                               ("IFAN_16bit.pytorch", None, 16),
                                               ("IFAN.pytorch", "16", 16)])
@pytest.mark.slow
def test_the_training_bit_depth_is_recorded(tmp_path, name, flag, depth):
    path = save_torch_state_dict(tmp_path / name, reference_state_dict("official"))
    out = tmp_path / "ckpt"
    args = [f"--input={path}", f"--output={out}"] + ([f"--bit_depth={flag}"] if flag else [])
    assert convert.main(args) == 0
    with open(out / "model_config.json") as f:
        assert json.load(f)["bit_depth"] == depth
    # The record is metadata, not a model field: the checkpoint still loads and runs.
    image = reference("official")["input_C"][0]
    assert Deblurrer.from_checkpoint(str(out))(image, tile=0).shape == image.shape
