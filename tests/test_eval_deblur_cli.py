"""The deblur tool on a folder of good and bad files: outputs, forms kept, errors, no overwrite."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from ifan_jax import deblur, image_io
from ifan_jax.data.testing import encode_png

RNG = np.random.default_rng(0)


def _smooth(h, w, bits=8):
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)], -1)
    return np.rint(image * (2**bits - 1)).astype(np.uint16 if bits == 16 else np.uint8)


# Every good image is, upright and padded to a multiple of 8, 64 x 96: one compilation.
GOOD = {
    "rotated.jpg": ((64, 96), 8, "RGB"),  # stored 96 x 64 with EXIF orientation 6
    "deep.png": ((62, 90), 16, "RGB"),
    "grey.png": ((64, 96), 8, "L"),
    "alpha.png": ((57, 93), 8, "RGBA"),
    "deep.tif": ((64, 96), 16, "RGB"),
}
BAD = {
    "empty.png": "empty file",
    "cut.jpg": "truncated or corrupt",
    "notes.png": "not an image",
    "small.png": "too small",
}


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    stored = _smooth(96, 64)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[image_io.ORIENTATION_TAG] = 6
    im.save(folder / "rotated.jpg", quality=95, exif=exif.tobytes())
    (folder / "deep.png").write_bytes(encode_png(_smooth(62, 90, 16)))
    Image.fromarray(_smooth(64, 96)[..., 1]).save(folder / "grey.png")
    alpha = RNG.integers(0, 256, (57, 93), dtype=np.uint8)
    Image.fromarray(np.dstack([_smooth(57, 93), alpha])).save(folder / "alpha.png")
    tifffile.imwrite(folder / "deep.tif", _smooth(64, 96, 16), photometric="rgb")
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.jpg").write_bytes((folder / "rotated.jpg").read_bytes()[:700])
    (folder / "notes.png").write_text("not a picture\n")
    Image.fromarray(_smooth(8, 12)).save(folder / "small.png")
    (folder / "readme.txt").write_text("ignored: not an image extension\n")
    return folder, alpha


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    return {**os.environ, "IFAN_JAX_CACHE": str(tmp_path_factory.mktemp("xla_cache")),
            "TF_CPP_MIN_LOG_LEVEL": "3"}


def _check_outputs(folder, out, alpha, bit_depths=None):
    for name, ((h, w), bits, mode) in GOOD.items():
        path = out / name
        image, info = image_io.read_image(str(path))
        assert image.shape[:2] == (h, w), name
        assert info.bit_depth == (bit_depths or {}).get(name, bits), name
        assert Image.open(path).size == (w, h)
        if mode == "L":
            assert Image.open(path).mode == "L"
        if mode == "RGBA":
            assert Image.open(path).mode == "RGBA"
            np.testing.assert_array_equal(info.alpha, alpha)
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary files left


@pytest.mark.slow
def test_cli_processes_good_files_and_reports_bad_ones(photos, tiny_official_checkpoint, cache_env,
                                                       tmp_path):
    folder, alpha = photos
    out = tmp_path / "out"
    out.mkdir()
    (out / "grey.png").write_bytes(b"an earlier result")  # must survive without --overwrite
    missing = str(tmp_path / "missing.jpg")
    proc = subprocess.run(
        [sys.executable, "-m", "ifan_jax.deblur", f"--ckpt={tiny_official_checkpoint}",
         f"--output_dir={out}", str(folder), missing],
        capture_output=True, text=True, env=cache_env, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("deblur: ")]
    for name, reason in BAD.items():
        hits = [line for line in lines if f"deblur: {folder / name}: " in line]
        assert len(hits) == 1 and reason in hits[0], (name, lines)
    assert any(f"deblur: {missing}: no such file" in line for line in lines)
    assert any(f"deblur: {folder / 'grey.png'}: skipped" in line for line in lines)
    assert (out / "grey.png").read_bytes() == b"an earlier result"
    assert sorted(os.listdir(out)) == sorted(GOOD)
    (out / "grey.png").unlink()
    assert deblur.main([f"--ckpt={tiny_official_checkpoint}", f"--output_dir={out}",
                        str(folder / "grey.png")]) == 0
    _check_outputs(folder, out, alpha)


def test_overwrite_default_folder_bit_depth_and_tiles(photos, tiny_official_checkpoint, cache_env,
                                                      capsys, monkeypatch):
    folder, alpha = photos
    monkeypatch.setenv("IFAN_JAX_CACHE", cache_env["IFAN_JAX_CACHE"])
    good = [str(folder / name) for name in GOOD]
    args = [f"--ckpt={tiny_official_checkpoint}", "--tile=64", "--overlap=16", *good]
    assert deblur.main(args) == 0  # default output folder: beside the inputs
    out = folder / "deblurred"
    _check_outputs(folder, out, alpha)
    first = (out / "deep.png").read_bytes()

    assert deblur.main(args) == 0  # everything exists: skipped, nothing rewritten
    assert "5 skipped" in capsys.readouterr().err
    assert (out / "deep.png").read_bytes() == first

    assert deblur.main([*args, "--overwrite", "--bit_depth=8", "--tile=0"]) == 0
    _check_outputs(folder, out, alpha, {"deep.png": 8, "deep.tif": 8})
    assert deblur.main([f"--ckpt={tiny_official_checkpoint}", str(folder / "small.png")]) == 1
    err = capsys.readouterr().err
    assert f"deblur: {folder / 'small.png'}: image too small (12 x 8 pixels" in err


def test_tiled_and_whole_outputs_agree(photos, tiny_official_checkpoint, tmp_path, monkeypatch,
                                       cache_env):
    folder, _ = photos
    monkeypatch.setenv("IFAN_JAX_CACHE", cache_env["IFAN_JAX_CACHE"])
    outputs = {}
    for tile in ("0", "64"):
        out = tmp_path / f"tile{tile}"
        assert deblur.main([f"--ckpt={tiny_official_checkpoint}", f"--output_dir={out}",
                            f"--tile={tile}", "--overlap=16", str(folder / "deep.tif")]) == 0
        outputs[tile] = image_io.read_image(str(out / "deep.tif"))[0]
    mse = np.mean((outputs["0"].astype(np.float64) - outputs["64"]) ** 2)
    assert 10 * np.log10(1 / mse) > 40


def test_usage_errors():
    with pytest.raises(SystemExit):
        deblur.parse_args(["--ckpt=x", "--tile=-8", "a.jpg"])
    with pytest.raises(SystemExit):
        deblur.parse_args(["a.jpg"])  # --ckpt is required
    with pytest.raises(SystemExit):
        deblur.parse_args(["--ckpt=x", "--tile=32", "--overlap=32", "a.jpg"])


def test_unreadable_checkpoint_is_one_line(tmp_path, capsys):
    Image.fromarray(_smooth(32, 32)).save(tmp_path / "a.png")
    assert deblur.main([f"--ckpt={tmp_path / 'nope'}", str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deblur: ") and "nope" in err[0]
