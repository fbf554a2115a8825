"""The deblur tool on a folder of good and bad files: outputs, forms kept, errors, no overwrite."""

import os
import re
import subprocess
import sys

import child
import jax
import numpy as np
import pytest
import tifffile
from official_reference import reference_state_dict
from PIL import Image

from ifan_jax import checkpoint, image_io
from ifan_jax.config import load_config
from ifan_jax.data.testing import encode_png
from ifan_jax.inference import Deblurrer, cli, defocus
from ifan_jax.models import abstract_params
from ifan_jax.weights import convert

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
        [sys.executable, "-m", "ifan_jax.inference", f"--ckpt={tiny_official_checkpoint}",
         f"--output_dir={out}", str(folder), missing],
        capture_output=True, text=True, env=cache_env, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    # Progress bars and results only: no library log lines or warnings.
    shown = [part.strip() for part in re.split(r"[\r\n]", proc.stderr) if part.strip()]
    assert all(part.startswith(("deblur", "\x1b[A")) or part.endswith("tile/s]")
               for part in shown), [p for p in shown if not p.startswith("deblur")]
    assert not proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("deblur: ")]
    for name, reason in BAD.items():
        hits = [line for line in lines if f"deblur: {folder / name}: " in line]
        assert len(hits) == 1 and reason in hits[0], (name, lines)
    assert any(f"deblur: {missing}: no such file" in line for line in lines)
    assert any(f"deblur: {folder / 'grey.png'}: skipped" in line for line in lines)
    assert (out / "grey.png").read_bytes() == b"an earlier result"
    assert sorted(os.listdir(out)) == sorted(GOOD)
    assert lines[-1] == f"deblur: 4 written to {out}/, 1 skipped, 5 failed"
    # --verbosity=1 shows the libraries' INFO logs (orbax's, reading the checkpoint).
    proc = subprocess.run(
        [sys.executable, "-m", "ifan_jax.inference", f"--ckpt={tiny_official_checkpoint}",
         f"--output_dir={out}", "--overwrite", "--verbosity=1", str(folder / "deep.png")],
        capture_output=True, text=True, env=cache_env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("I") and "checkpoint" in line for line in proc.stderr.splitlines())
    (out / "grey.png").unlink()
    assert cli.main([f"--ckpt={tiny_official_checkpoint}", f"--output_dir={out}",
                        str(folder / "grey.png")]) == 0
    _check_outputs(folder, out, alpha)


@pytest.mark.slow
def test_overwrite_default_folder_bit_depth_and_tiles(photos, tiny_official_checkpoint, cache_env,
                                                      capsys, monkeypatch):
    folder, alpha = photos
    monkeypatch.setenv("IFAN_JAX_CACHE", cache_env["IFAN_JAX_CACHE"])
    good = [str(folder / name) for name in GOOD]
    args = [f"--ckpt={tiny_official_checkpoint}", "--tile=64", "--overlap=16", *good]
    assert cli.main(args) == 0  # default output folder: beside the inputs
    out = folder / "deblurred"
    _check_outputs(folder, out, alpha)
    first = (out / "deep.png").read_bytes()

    assert cli.main(args) == 0  # everything exists: skipped, nothing rewritten
    assert "5 skipped" in capsys.readouterr().err
    assert (out / "deep.png").read_bytes() == first

    assert cli.main([*args, "--overwrite", "--bit_depth=8", "--tile=0"]) == 0
    _check_outputs(folder, out, alpha, {"deep.png": 8, "deep.tif": 8})
    assert cli.main([f"--ckpt={tiny_official_checkpoint}", str(folder / "small.png")]) == 1
    err = capsys.readouterr().err
    assert f"deblur: {folder / 'small.png'}: image too small (12 x 8 pixels" in err


@pytest.mark.slow
def test_tiled_and_whole_outputs_agree(photos, tiny_official_checkpoint, tmp_path, monkeypatch,
                                       cache_env):
    folder, _ = photos
    monkeypatch.setenv("IFAN_JAX_CACHE", cache_env["IFAN_JAX_CACHE"])
    outputs = {}
    for tile in ("0", "64"):
        out = tmp_path / f"tile{tile}"
        assert cli.main([f"--ckpt={tiny_official_checkpoint}", f"--output_dir={out}",
                            f"--tile={tile}", "--overlap=16", str(folder / "deep.tif")]) == 0
        outputs[tile] = image_io.read_image(str(out / "deep.tif"))[0]
    mse = np.mean((outputs["0"].astype(np.float64) - outputs["64"]) ** 2)
    assert 10 * np.log10(1 / mse) > 40


def test_usage_errors():
    with pytest.raises(SystemExit):
        cli.parse_args(["--ckpt=x", "--tile=-8", "a.jpg"])
    with pytest.raises(SystemExit):
        cli.parse_args(["a.jpg"])  # --ckpt is required
    with pytest.raises(SystemExit):
        cli.parse_args(["--ckpt=x", "--tile=32", "--overlap=32", "a.jpg"])


def test_unreadable_checkpoint_is_one_line(tmp_path, capsys):
    Image.fromarray(_smooth(32, 32)).save(tmp_path / "a.png")
    assert cli.main([f"--ckpt={tmp_path / 'nope'}", str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deblur: ") and "nope" in err[0]


@pytest.mark.slow
def test_help_exits_0_and_usage_mistakes_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "ifan_jax.inference", "--help"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "--defocus_map" in proc.stdout and not proc.stderr
    proc = subprocess.run([sys.executable, "-m", "ifan_jax.inference", "--ckpt=x", "--tile=64",
                           "a.jpg"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "deblur: error: --tile 64 is too small for --overlap 64: use a tile of at least 72 "
        "pixels or a smaller overlap (see --help)"]


@pytest.fixture()
def official_file(tmp_path):
    """The tiny official state dict saved by torch.save, as the released weights are."""
    torch = pytest.importorskip("torch")
    folder = tmp_path / "weights"
    folder.mkdir()
    state = {k: torch.from_numpy(v) for k, v in reference_state_dict("official").items()}
    torch.save(state, folder / "IFAN.pytorch")
    return folder / "IFAN.pytorch"


@pytest.mark.slow
def test_official_file_and_defocus_map(photos, official_file, cache_env, tmp_path, capsys,
                                       monkeypatch):
    folder, _ = photos
    monkeypatch.setenv("IFAN_JAX_CACHE", cache_env["IFAN_JAX_CACHE"])
    out = tmp_path / "out"
    inputs = [str(folder / "alpha.png"), str(folder / "deep.tif")]
    args = [f"--ckpt={official_file}", f"--output_dir={out}", "--defocus_map", *inputs]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    converted = [p for p in os.listdir(official_file.parent) if p != "IFAN.pytorch"]
    assert len(converted) == 1 and converted[0].startswith("IFAN.ifan_jax-")
    assert f"converting {official_file} once into" in err
    assert sorted(os.listdir(out)) == ["alpha.png", "alpha_defocus.npy", "alpha_defocus.png",
                                       "deep.tif", "deep_defocus.npy", "deep_defocus.png"]
    deblurrer = Deblurrer.from_checkpoint(str(official_file))  # the cached conversion
    for name, (h, w) in (("alpha", (57, 93)), ("deep", (64, 96))):
        image = image_io.read_image(str(folder / f"{name}.{'png' if name == 'alpha' else 'tif'}"))[0]
        _, expected = deblurrer(image, return_defocus=True)
        raw = np.load(out / f"{name}_defocus.npy")
        assert raw.shape == (h, w) and raw.dtype == np.float32
        np.testing.assert_allclose(raw, expected, atol=1e-6)
        colour = np.asarray(Image.open(out / f"{name}_defocus.png"))
        np.testing.assert_array_equal(colour, defocus.colorize(raw))
    # Second run: the conversion is reused; a complete set is skipped, an incomplete one (its
    # image gone) completed, its maps kept as they are.
    (out / "deep.tif").unlink()
    maps = (out / "deep_defocus.npy").read_bytes()
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "converting" not in err and f"{folder / 'alpha.png'}: skipped" in err
    assert f"{folder / 'deep.tif'}: completing its outputs" in err and (out / "deep.tif").exists()
    assert (out / "deep_defocus.npy").read_bytes() == maps


def test_official_file_in_a_read_only_folder_converts_into_the_cache(official_file, tmp_path,
                                                                     monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("IFAN_JAX_CACHE", str(cache))
    folder = official_file.parent
    os.chmod(folder, 0o555)
    try:
        if os.access(folder, os.W_OK):  # root writes anyway: block the name instead
            os.chmod(folder, 0o755)
            digest = convert.file_digest(str(official_file))[:16]
            (folder / f"IFAN.ifan_jax-{digest}").write_text("in the way")
            os.chmod(folder, 0o555)
        path = convert.cached_conversion(str(official_file))
    finally:
        os.chmod(folder, 0o755)
    assert os.path.dirname(path) == str(cache / "converted")
    assert os.path.basename(path).startswith("IFAN.ifan_jax-")
    assert convert.cached_conversion(str(official_file)) == path  # found, not redone
    assert Deblurrer.from_checkpoint(str(official_file)).model.num_iterations == 3


def test_defocus_map_of_a_model_without_the_dme_is_one_line(tmp_path, capsys, monkeypatch):
    config = load_config("tiny", "variant=F").model.to_dict()
    params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                    abstract_params(config, with_reblur=False))
    ckpt = tmp_path / "ckpt_F"
    checkpoint.save_inference_checkpoint(str(ckpt), params, {**config, "use_reblur": False})
    Image.fromarray(_smooth(32, 32)).save(tmp_path / "a.png")
    assert cli.main([f"--ckpt={ckpt}", "--defocus_map", str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deblur: {ckpt}: this model has no disparity map estimator (a variant "
                   f"without D), so --defocus_map has nothing to write"]


# --------------------------------------------------------------------------- sets, limits, lines

def _two_photos(folder):
    folder.mkdir()
    Image.fromarray(_smooth(40, 56)).save(folder / "a.png")
    (folder / "b.png").write_bytes(encode_png(_smooth(48, 40, 16)))
    return [str(folder / "a.png"), str(folder / "b.png")]


def _set(out, stem, ext=".png"):
    return [out / f"{stem}{ext}", out / f"{stem}_defocus.png", out / f"{stem}_defocus.npy"]


@pytest.mark.slow
def test_a_photos_files_are_written_as_a_set(tiny_official_checkpoint, tmp_path, capsys,
                                             monkeypatch):
    """A full disk while writing b's image (its maps already written): one line saying the disk is
    full, none of b's files left, a's set whole. The next run writes b and skips a. A run after a
    kill between files (an image without its maps, maps without their image) completes those sets
    and keeps the files that are there."""
    inputs = _two_photos(tmp_path / "photos")
    out = tmp_path / "out"
    args = [f"--ckpt={tiny_official_checkpoint}", f"--output_dir={out}", "--defocus_map", *inputs]
    real_write = image_io.write_image

    def full_disk(path, *a, **k):
        if os.path.basename(path) == "b.png":
            raise OSError(28, "No space left on device")
        return real_write(path, *a, **k)

    monkeypatch.setattr(image_io, "write_image", full_disk)
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "b.png" in line]
    assert len(lines) == 1 and f"{out / 'b.png'}: the disk is full" in lines[0], err
    assert sorted(os.listdir(out)) == ["a.png", "a_defocus.npy", "a_defocus.png"]  # no b, no temp
    monkeypatch.undo()

    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert f"{inputs[0]}: skipped" in err and err.strip().endswith(f"deblur: 1 written to {out}/, "
                                                                   f"1 skipped")
    assert all(p.exists() for p in _set(out, "a") + _set(out, "b"))

    # A kill between files: a's image without its maps, b's maps without its image.
    kept = {p: p.read_bytes() for p in (_set(out, "a")[0], *_set(out, "b")[1:])}
    _set(out, "a")[2].unlink()
    _set(out, "b")[0].unlink()
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert f"{inputs[0]}: completing its outputs" in err and f"{inputs[1]}: completing" in err
    assert all(p.exists() for p in _set(out, "a") + _set(out, "b"))
    assert all(p.read_bytes() == data for p, data in kept.items())  # nothing there was replaced
    assert err.strip().endswith(f"deblur: 2 written to {out}/")


@pytest.mark.slow
def test_an_output_that_is_not_finite_is_never_written(tiny_official_checkpoint, tmp_path, capsys,
                                                       monkeypatch):
    config, params = checkpoint.load_params(tiny_official_checkpoint)
    bad = {k: np.full_like(np.asarray(v), np.nan) for k, v in
           params["reconstructor"]["conv_out"].items()}
    params = {**params, "reconstructor": {**params["reconstructor"], "conv_out": bad}}
    monkeypatch.setattr(Deblurrer, "from_checkpoint",
                        classmethod(lambda cls, *a, **k: cls(params, config)))
    inputs = _two_photos(tmp_path / "photos")
    out = tmp_path / "out"
    assert cli.main([f"--ckpt={tiny_official_checkpoint}", f"--output_dir={out}",
                     "--defocus_map", *inputs]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    for path in inputs:
        hits = [line for line in err if line.startswith(f"deblur: {path}: ")]
        assert len(hits) == 1 and "not finite" in hits[0], err
    assert err[-1] == "deblur: 0 written, 2 failed"
    assert not out.exists() or not os.listdir(out)


def _huge_tiff(path):
    """A 0.8 MB tiled TIFF that declares 16384 x 16384 RGB pixels (its tiles compressed once)."""
    import zlib

    tile = zlib.compress(np.zeros((512, 512, 3), np.uint8).tobytes(), 9)
    with tifffile.TiffWriter(path) as tif:
        tif.write((tile for _ in range(32 * 32)), shape=(16384, 16384, 3), dtype=np.uint8,
                  tile=(512, 512), compression="zlib", photometric="rgb")
    return path


@pytest.mark.slow
def test_max_pixels_refuses_a_huge_photo_from_its_header(tiny_official_checkpoint, tmp_path):
    """A tiled TIFF of 16384 x 16384 in 0.8 MB: one line and nothing written, in a process that
    stays far below the 3.2 GB the photo would take as floats; --max_pixels sets the limit."""
    photos = tmp_path / "photos"
    photos.mkdir()
    big = _huge_tiff(str(photos / "huge.tif"))
    assert os.path.getsize(big) < 1 << 20
    Image.fromarray(_smooth(40, 56)).save(photos / "small.png")
    out = tmp_path / "out"
    code, _, err, peak_mb = child.run([sys.executable, "-m", "ifan_jax.inference",
                                       f"--ckpt={tiny_official_checkpoint}", f"--output_dir={out}",
                                       str(photos)])
    assert code == 1, err
    lines = [line for line in err.splitlines() if "huge.tif" in line]
    assert lines == [f"deblur: {big}: 16384 x 16384 pixels (268.4 megapixels) is more than the "
                     f"limit of 100 megapixels (--max_pixels)"], err
    assert sorted(os.listdir(out)) == ["small.png"]
    assert peak_mb < 1500, f"{peak_mb:.0f} MB"
    # A lower limit refuses the small photo too, by the same rule.
    assert cli.main([f"--ckpt={tiny_official_checkpoint}", f"--output_dir={tmp_path / 'o2'}",
                     "--max_pixels=1000", str(photos / "small.png")]) == 1


def test_max_pixels_and_missing_weights_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["--ckpt=x", "--max_pixels=0", "a.jpg"])
    assert e.value.code == 2 and "--max_pixels" in capsys.readouterr().err
    Image.fromarray(_smooth(32, 32)).save(tmp_path / "a.png")
    assert cli.main([f"--ckpt={tmp_path / 'IFAN.pytorch'}", str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"deblur: {tmp_path / 'IFAN.pytorch'}: no such file or folder; ")
    assert "https://www.dropbox.com/s/qohhmr9p81u0syi/checkpoints.zip" in err[0]


def test_the_last_line_names_the_folders_written_to():
    assert cli.summary_line(4, ["photos/deblurred/"], 0, 0) == "4 written to photos/deblurred/"
    assert cli.summary_line(3, ["a/deblurred/", "b/deblurred/"], 1, 2) == (
        "3 written to a/deblurred/ and b/deblurred/, 1 skipped, 2 failed")
    assert cli.summary_line(5, ["a/", "b/", "c/", "d/", "e/"], 0, 0) == (
        "5 written to a/, b/, c/ and 2 more folders")
    assert cli.summary_line(0, [], 2, 0) == "0 written, 2 skipped"
