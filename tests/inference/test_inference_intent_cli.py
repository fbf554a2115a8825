"""The deblur command's --strength, --keep_bokeh[=LEVEL] and --report, on real output
files of the tiny model (ch=8, N=3)."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from ifan_jax import checkpoint, image_io
from ifan_jax.config import load_config
from ifan_jax.data.testing import encode_png
from ifan_jax.inference import cli, intent
from ifan_jax.models import abstract_params


def _photo(h=96, w=160, bits=8):
    """Smooth on the left, noisy on the right (the tiny model's map differs between the halves)."""
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)], -1)
    noisy = np.clip(image + 0.3 * np.random.default_rng(1).standard_normal(image.shape), 0, 1)
    image = np.where((x > w // 2)[..., None], noisy, image)
    return np.rint(image * (2**bits - 1)).astype(np.uint16 if bits == 16 else np.uint8)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "IFAN_JAX_CACHE": str(tmp_path_factory.mktemp("xla_cache")),
            "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture()
def cache(env, monkeypatch):
    monkeypatch.setenv("IFAN_JAX_CACHE", env["IFAN_JAX_CACHE"])


def _pixels(path):
    if str(path).endswith(".tif"):
        return tifffile.imread(path)
    return np.asarray(Image.open(path))


# --------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("arg, message", [
    ("--strength=1.5", "deblur: error: --strength must be between 0 and 1, got 1.5 (see --help)"),
    ("--strength=-0.2", "deblur: error: --strength must be between 0 and 1, got -0.2 (see --help)"),
    ("--strength=nan", "deblur: error: --strength must be between 0 and 1, got nan (see --help)"),
    ("--keep_bokeh=0", "deblur: error: --keep_bokeh takes a level > 0 (in the units of "
                       "NAME_defocus.npy) or no value (automatic), got '0' (see --help)"),
    ("--keep_bokeh=-1", "deblur: error: --keep_bokeh takes a level > 0 (in the units of "
                        "NAME_defocus.npy) or no value (automatic), got '-1' (see --help)"),
    ("--keep_bokeh=much", "deblur: error: --keep_bokeh takes a level > 0 (in the units of "
                          "NAME_defocus.npy) or no value (automatic), got 'much' (see --help)"),
])
def test_bad_values_are_one_line_usage_errors(arg, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--ckpt=x", arg, "a.jpg"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


@pytest.mark.slow
def test_bad_value_in_a_process_is_exit_2_and_one_line():
    proc = subprocess.run([sys.executable, "-m", "ifan_jax.inference", "--ckpt=x", "--keep_bokeh=-3",
                           "a.jpg"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and not proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1 and "--keep_bokeh" in proc.stderr


def test_keep_bokeh_with_and_without_a_value(tmp_path, capsys):
    args = cli.parse_args(["--ckpt=x", "--keep_bokeh", "a.jpg", "b.jpg"])
    assert args.keep_bokeh == "auto" and args.inputs == ["a.jpg", "b.jpg"]
    args = cli.parse_args(["--ckpt=x", "a.jpg", "--keep_bokeh"])
    assert args.keep_bokeh == "auto" and args.inputs == ["a.jpg"]
    args = cli.parse_args(["--ckpt=x", "--keep_bokeh", "0.3", "a.jpg"])
    assert args.keep_bokeh == 0.3 and args.inputs == ["a.jpg"]
    args = cli.parse_args(["--ckpt=x", "--keep_bokeh=0.25", "--strength=0.5", "a.jpg"])
    assert (args.keep_bokeh, args.strength) == (0.25, 0.5)
    args = cli.parse_args(["--ckpt=x", "a.jpg"])
    assert (args.keep_bokeh, args.strength, args.report) == (None, 1.0, None)
    # An existing report is not replaced without --overwrite: refused before anything runs.
    report = tmp_path / "r.json"
    report.write_text("{}")
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--ckpt=x", f"--report={report}", "a.jpg"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (f"deblur: error: --report {report} exists (use "
                                               f"--overwrite to replace it) (see --help)")
    assert cli.parse_args(["--ckpt=x", f"--report={report}", "--overwrite", "a.jpg"]).report


def test_keep_bokeh_of_a_model_without_the_dme_is_one_line(tmp_path, capsys):
    config = load_config("tiny", "variant=F").model.to_dict()
    params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                    abstract_params(config, with_reblur=False))
    ckpt = tmp_path / "ckpt_F"
    checkpoint.save_inference_checkpoint(str(ckpt), params, {**config, "use_reblur": False})
    Image.fromarray(_photo(32, 32)).save(tmp_path / "a.png")
    report = tmp_path / "r.json"
    assert cli.main([f"--ckpt={ckpt}", "--keep_bokeh=0.2", f"--report={report}",
                        str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deblur: {ckpt}: this model has no disparity map estimator (a variant "
                   f"without D), so --keep_bokeh has no map to keep the bokeh by"]
    files = json.loads(report.read_text())["files"]
    assert files == [{"input": str(tmp_path / "a.png"), "status": "failed", "error": err[0][8:]}]


# --------------------------------------------------------------------------- real outputs

@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(_photo()).save(folder / "a.png")
    (folder / "deep.png").write_bytes(encode_png(_photo(bits=16)))
    tifffile.imwrite(folder / "deep.tif", _photo(bits=16), photometric="rgb")
    Image.fromarray(_photo()[..., 1]).save(folder / "grey.png")
    alpha = np.random.default_rng(3).integers(0, 256, (96, 160), dtype=np.uint8)
    Image.fromarray(np.dstack([_photo(), alpha])).save(folder / "alpha.png")
    Image.fromarray(_photo()).save(folder / "b.jpg", quality=95)
    return folder


@pytest.mark.slow
def test_strength_zero_writes_the_input(photos, tiny_official_checkpoint, tmp_path, cache):
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    assert cli.main([f"--ckpt={tiny_official_checkpoint}", f"--output_dir={out}", "--tile=0",
                        "--strength=0", f"--report={report}", str(photos)]) == 0
    for name in ("a.png", "deep.png", "deep.tif", "grey.png", "alpha.png"):
        got, expected = _pixels(out / name), _pixels(photos / name)
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)  # bit for bit, at its bit depth
    # JPEG is re-encoded at the input's quality and chroma subsampling (95, Pillow's default
    # 4:2:0): the decoded input, re-encoded; this photo's per-pixel colour noise on the right
    # loses most to the subsampling (39.9 dB at 4:4:4).
    jpeg = _pixels(out / "b.jpg").astype(np.float64)
    assert intent.psnr(jpeg / 255, _pixels(photos / "b.jpg") / 255) > 33  # 33.9 dB measured
    assert image_io.read_image(str(out / "b.jpg"))[1].jpeg_subsampling == "4:2:0"
    files = json.loads(report.read_text())["files"]
    assert len(files) == 6 and all(f["status"] == "written" and f["strength"] == 0 for f in files)
    assert all(f["psnr_db"] is None for f in files)  # the output is the input


@pytest.mark.slow
@pytest.mark.parametrize("tile", ["0", "64"])
def test_keep_bokeh_keeps_the_input_where_the_written_map_is_high(photos, tiny_official_checkpoint,
                                                                  tmp_path, cache, tile):
    """The done-when: where the written map's 33 x 33 mean |d| is >= 2L the output is the input
    (to 1/255), where it is <= L the full deblur; tiled and whole runs alike."""
    source = photos / "a.png"
    common = [f"--ckpt={tiny_official_checkpoint}", f"--tile={tile}", "--overlap=16", "--defocus_map"]
    plain = tmp_path / "plain"
    assert cli.main([*common, f"--output_dir={plain}", str(source)]) == 0
    dmap = np.load(plain / "a_defocus.npy")
    a = ndimage.uniform_filter(np.abs(dmap).astype(np.float64), size=33, mode="nearest")
    level = float(a.min() + a.max()) / 3
    kept = tmp_path / "kept"
    report = tmp_path / "r.json"
    assert cli.main([*common, f"--output_dir={kept}", f"--keep_bokeh={level}",
                        f"--report={report}", str(source)]) == 0
    np.testing.assert_array_equal(np.load(kept / "a_defocus.npy"), dmap)
    x = _pixels(source).astype(np.int32)
    y = _pixels(plain / "a.png").astype(np.int32)
    out = _pixels(kept / "a.png").astype(np.int32)
    high, low = a >= 2 * level, a <= level
    assert high.mean() > 0.1 and low.mean() > 0.005  # both parts are there
    assert np.abs(out - x)[high].max() <= 1
    assert np.abs(out - y)[low].max() <= 1
    assert np.abs(y - x)[high].max() > 5  # the network did change those pixels
    between = ~high & ~low
    assert (np.abs(out - x)[between] <= np.abs(y - x)[between] + 1).all()
    entry = json.loads(report.read_text())["files"][0]
    assert entry["keep_bokeh"] == "given" and entry["keep_bokeh_level"] == pytest.approx(level)


@pytest.mark.slow
def test_report_and_readout_lines(photos, tiny_official_checkpoint, tmp_path, env):
    out = tmp_path / "out"
    report = tmp_path / "reports" / "r.json"
    (photos / "notes.png").write_text("not a picture\n")
    missing = str(tmp_path / "missing.jpg")
    inputs = [str(photos / "a.png"), str(photos / "deep.tif"), str(photos / "notes.png"), missing]
    cmd = [sys.executable, "-m", "ifan_jax.inference", f"--ckpt={tiny_official_checkpoint}",
           f"--output_dir={out}", "--tile=0", "--keep_bokeh", "--strength=0.7", "--defocus_map",
           f"--report={report}", *inputs]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert not proc.stdout and "Traceback" not in proc.stderr
    data = json.loads(report.read_text())
    assert data["strength"] == 0.7 and data["keep_bokeh"] == "auto"
    assert data["constants"] == intent.page_constants()
    files = {f["input"]: f for f in data["files"]}
    assert list(files) == [missing, *inputs[:3]]  # every file, in the order they were met
    assert files[missing] == {"input": missing, "status": "failed", "error": "no such file or folder"}
    assert files[inputs[2]]["status"] == "failed" and "not an image" in files[inputs[2]]["error"]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("deblur: ")]
    for name in ("a.png", "deep.tif"):
        entry = files[str(photos / name)]
        assert entry["status"] == "written" and entry["output"] == str(out / name)
        assert entry["strength"] == 0.7 and entry["keep_bokeh"] == "auto"
        stem = os.path.splitext(name)[0]
        dmap = np.load(out / f"{stem}_defocus.npy")
        # The readout, recomputed from the written map and files.
        assert entry["keep_bokeh_level"] == pytest.approx(intent.auto_level(dmap), rel=1e-6)
        magnitude = np.abs(dmap)
        for level in intent.LEVELS:
            assert entry["shares_above_level"][repr(level)] == pytest.approx((magnitude > level).mean())
        assert entry["out_of_focus_share"] == entry["shares_above_level"]["0.25"]
        assert entry["median_abs_defocus"] == pytest.approx(float(np.median(magnitude)), rel=1e-6)
        bits = 255 if name.endswith(".png") else 65535
        written = _pixels(out / name) / bits
        assert entry["psnr_db"] == pytest.approx(intent.psnr(_pixels(photos / name) / bits, written),
                                                 abs=0.05)
        assert entry["sentence"] == intent.sentence(entry["out_of_focus_share"])
        hits = [line for line in lines if line.startswith(f"deblur: {photos / name}: ")]
        assert len(hits) == 1, lines
        assert entry["sentence"] in hits[0]
        shown = re.search(r"PSNR input vs output ([0-9.]+) dB", hits[0])
        assert float(shown.group(1)) == pytest.approx(entry["psnr_db"], abs=0.051)
        assert f"keep-bokeh level {entry['keep_bokeh_level']:.4g} (automatic)" in hits[0]
        assert "strength 0.7" in hits[0]
    # Not replaced without --overwrite (exit 2, one line); replaced with it.
    before = report.read_text()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2 and "exists" in proc.stderr and report.read_text() == before
    assert not [n for n in os.listdir(report.parent) if n != "r.json"]  # no temporary files left
