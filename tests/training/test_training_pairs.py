"""Training on your own blurred/sharp pairs (no dual-pixel views), started as the README says."""

import os
import re
import shlex
import subprocess
import sys

import pytest
from repo import ROOT

from ifan_jax.data import testing as data_testing

TINY = ["--config.model.channels=8", "--config.model.num_iterations=3",
        "--config.model.reblur_iterations=3", "--config.batch_size=2", "--config.crop_size=32",
        "--config.learning_rate=1e-3", "--config.total_steps=60", "--config.log_every_steps=10",
        "--config.eval_every_steps=60", "--config.checkpoint_every_steps=60",
        "--config.image_summary_every_steps=30", "--config.eval_lpips=False"]


def readme_command() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = [line.split("#")[0].strip() for line in f if "data=pairs" in line
                 and line.startswith("python train.py")]
    assert lines, "README.md no longer documents training on pairs"
    return lines[0]


@pytest.mark.slow
def test_the_readme_command_trains_on_pairs_and_the_loss_falls(tmp_path):
    data_testing.write_fake_dataset(tmp_path / "pairs", "pairs", num={"train": 4, "val": 2},
                                    size=(40, 48), blur=2)
    command = readme_command().replace("ROOT", str(tmp_path / "pairs")).replace(
        "=W", f"={tmp_path / 'run'}")
    args = shlex.split(command)
    assert args[:2] == ["python", "train.py"]
    env = {**os.environ, "IFAN_JAX_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, *args[1:], *TINY], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    # One line says the disparity loss is off; no step reports it.
    assert len([line for line in out.splitlines() if "disparity" in line and "off" in line]) == 1, out
    losses = [float(x) for x in re.findall(r"^step \d+/60  loss ([0-9.e+-]+) \(deblur", out, re.M)]
    assert len(losses) == 6, out
    assert "disparity " not in "".join(re.findall(r"\(([^)]*)\)", out))
    assert losses[-1] < 0.8 * losses[0], losses
    assert os.path.isdir(tmp_path / "run" / "checkpoints" / "60")
