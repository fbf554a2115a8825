"""The README's TFDS commands, read out of README.md and run as written on a data set the test
writes: the build command (a subprocess, from the project's own environment) and the tfds.load
snippet."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ifan_jax.data import tfds_builders
from ifan_jax.data.testing import write_fake_dataset

REPO = Path(__file__).resolve().parents[2]


def _readme_blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _readme_build_command() -> str:
    lines = [line for block in _readme_blocks("bash") for line in block.splitlines()
             if "ifan_jax.data.tfds_builders" in line]
    assert len(lines) == 1, lines
    return lines[0]


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = shlex.split(command)
    assert argv[0] == "python"
    return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_readme_tfds_build_and_load_commands(tmp_path, monkeypatch, capsys):
    command = _readme_build_command()
    assert "--manual_dir=datasets" in command and "--data_dir=tensorflow_datasets" in command
    written = write_fake_dataset(tmp_path / "datasets", "dpdd", {"train": 2, "val": 1, "test": 2},
                                 size=(12, 20), bits=16, seed=3)
    result = _run(command, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train 2, validation 1, test 2" in result.stdout

    (snippet,) = [b for b in _readme_blocks("python") if "tfds.load" in b]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(snippet, namespace)  # the README's snippet as written
    examples = list(tfds.as_numpy(namespace["ds"]))
    by_name = {e["name"].decode(): e for e in examples}
    assert sorted(by_name) == ["test_000", "test_001"]
    for pair in written["test"]:
        for key in ("c", "l", "r", "gt"):
            # dpdd/8bit: 16-bit PNGs reduced to their high byte, as the official 8-bit loader.
            np.testing.assert_array_equal(by_name[pair["name"]][key], pair[key] >> 8)

    # Bad input: one line naming the folder, a non-zero exit, nothing written (run in-process).
    argv = shlex.split(command)[3:]
    assert tfds_builders.main([a.replace("=datasets", "=elsewhere") for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfds_builders: missing folder elsewhere/DPDD (the DPDD data set is expected "
                          "there, unzipped under the data root elsewhere; download it from ")
    assert err.count("\n") == 1 and "github.com/Abdullah-Abuolaim" in err
    assert tfds_builders.main([a.replace("dpdd/8bit", "dpdd/12bit") for a in argv]) == 2
    assert "dpdd has no config '12bit'" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "tensorflow_datasets" / "dpdd")) == [".config", "8bit"]
