"""The README's commands for the released weights, run as written on a torch-saved official file."""

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from official_reference import reference_state_dict
from PIL import Image
from repo import ROOT


def readme_commands(section: str) -> list[str]:
    """The lines of the first ```bash block after the README heading `section`."""
    text = open(os.path.join(ROOT, "README.md")).read()
    after = text[text.index(f"## {section}\n"):]
    block = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_released_weights_commands(tmp_path):
    torch = pytest.importorskip("torch")
    commands = readme_commands("Deblur your photos with the released weights")
    assert any("--ckpt=IFAN.pytorch" in c and "--defocus_map" in c for c in commands)
    torch.save({k: torch.from_numpy(v) for k, v in reference_state_dict("official").items()},
               tmp_path / "IFAN.pytorch")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    (tmp_path / "holiday_photos").mkdir()
    Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(
        tmp_path / "holiday_photos" / "beach.png")
    env = {**os.environ, "IFAN_JAX_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    for command in commands:
        argv = shlex.split(command)
        assert argv[:2] == ["python", "-m"], command
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert Image.open(tmp_path / "sharp" / "photo.jpg").size == (52, 40)
    assert Image.open(tmp_path / "sharp" / "beach.png").size == (44, 36)
    assert Image.open(tmp_path / "deblurred" / "photo_defocus.png").size == (52, 40)
    assert np.load(tmp_path / "deblurred" / "photo_defocus.npy").shape == (40, 52)
    assert (tmp_path / "ckpt" / "IFAN" / "model_config.json").is_file()
    converted = [p for p in os.listdir(tmp_path) if p.startswith("IFAN.ifan_jax-")]
    assert len(converted) == 1  # converted once, beside the file, and reused by the second run
