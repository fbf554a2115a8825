"""Synthetic dual-pixel defocus generator (ifan_jax.data.synth): the optics (disc and half-disc
PSFs, views displaced in proportion to the blur, swapping across the focal plane), C = (L + R) / 2,
and the DPDD layout it writes, via the API and the command line."""

import hashlib
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from scipy import signal

from ifan_jax.data import DataError, list_split, load_split, numpy_iterator, synth
from ifan_jax.data.testing import write_png


def _centroid_x(psf):
    x = np.arange(psf.shape[1]) - psf.shape[1] // 2
    return float((psf.sum(axis=0) * x).sum())


@pytest.mark.parametrize("radius", [0.0, 0.5, 1.0, 2.5, 4.0, 7.3])
def test_half_discs_average_to_the_disc(radius):
    disc = synth.disc_psf(radius)
    left, right = synth.half_disc_psfs(radius)
    assert np.isclose(disc.sum(), 1) and np.isclose(left.sum(), 1) and np.isclose(right.sum(), 1)
    np.testing.assert_allclose((left + right) / 2, disc, atol=1e-15)
    n = disc.shape[1] // 2
    assert np.all(left[:, n + 1:] == 0) and np.all(right[:, :n] == 0)
    if radius <= 0.5:
        assert disc.shape == (1, 1) or disc.max() == 1.0  # in focus: a single pixel


def test_views_are_displaced_in_proportion_to_the_signed_blur():
    shifts = {}
    for radius in (-6.0, -3.0, -1.5, 0.0, 1.5, 3.0, 6.0):
        left, right = synth.view_psfs(radius)
        shifts[radius] = _centroid_x(left) - _centroid_x(right)
    assert shifts[0.0] == 0.0
    for radius in (1.5, 3.0, 6.0):
        # Opposite directions on either side of the focal plane.
        assert shifts[radius] > 0 and np.isclose(shifts[-radius], -shifts[radius])
        # Half discs' centroids are at +-4r/(3 pi): separation 8r/(3 pi).
        assert abs(shifts[radius] / (8 * radius / (3 * np.pi)) - 1) < 0.12
    assert np.isclose(shifts[6.0] / shifts[3.0], 2.0, rtol=0.06)


def test_constant_depth_renders_disc_blur_and_shifted_views():
    rng = np.random.default_rng(0)
    sharp = rng.random((64, 64, 3))
    for radius in (3.0, -3.0):
        left, right = synth.render_views(sharp, np.full((64, 64), radius))
        combined = (left + right) / 2
        reference = signal.fftconvolve(sharp, synth.disc_psf(radius)[:, :, None], mode="same",
                                       axes=(0, 1))
        inner = (slice(8, 56), slice(8, 56))
        np.testing.assert_allclose(combined[inner], reference[inner], atol=1e-9)
        # Cross-correlation of L and R peaks at the sign of the displacement.
        a, b = left[inner].mean(-1), right[inner].mean(-1)
        a, b = a - a.mean(), b - b.mean()
        lags = range(-4, 5)
        scores = [np.sum(a[:, 4:-4] * np.roll(b, lag, axis=1)[:, 4:-4]) for lag in lags]
        best = list(lags)[int(np.argmax(scores))]
        assert best != 0 and np.sign(best) == np.sign(radius)  # L lies right of R behind focus


def test_views_agree_in_focus_and_differ_where_blurred():
    rng = np.random.default_rng(1)
    sharp = rng.random((48, 64, 3))
    coc = np.zeros((48, 64))
    coc[:, 32:] = 4.0  # right half behind the focal plane
    left, right = synth.render_views(sharp, coc)
    np.testing.assert_allclose(left[:, :24], right[:, :24], atol=1e-12)  # 8 px from the edge
    np.testing.assert_allclose(left[:, :24], sharp[:, :24], atol=1e-12)
    differs = np.abs(left[:, 40:] - right[:, 40:]).max(-1) > 1e-3
    assert differs.mean() > 0.9


def test_scene_physics_on_a_photo():
    photo = synth.load_photos()[0]
    scene = synth.make_scene(photo, np.random.default_rng(2), 64, 4.0)
    assert {k: v.shape for k, v in scene.items()} == {
        "gt": (64, 64, 3), "c": (64, 64, 3), "l": (64, 64, 3), "r": (64, 64, 3), "coc": (64, 64)}
    np.testing.assert_array_equal(scene["c"], (scene["l"] + scene["r"]) / 2)
    coc = scene["coc"]
    assert coc.min() < 0 < coc.max() and np.abs(coc).max() <= 4.0
    diff = np.abs(scene["l"] - scene["r"]).max(-1)
    blurred, sharp = np.abs(coc) >= 0.5 * np.abs(coc).max(), np.abs(coc) < 0.25
    assert blurred.sum() > 100 and sharp.sum() > 100
    assert diff[blurred].mean() > 10 * max(diff[sharp].mean(), 1e-6)


def test_default_photos_include_the_motorcycle_with_its_disparity():
    photos = {p.name: p for p in synth.load_photos()}
    assert set(synth.DEFAULT_PHOTOS) == set(photos)
    moto = photos["motorcycle"]
    assert moto.inverse_depth is not None
    assert moto.inverse_depth.shape == moto.image.shape[:2]
    assert np.isfinite(moto.inverse_depth).all() and moto.inverse_depth.min() > 0


def _digest(folder):
    files = sorted(p for p in folder.rglob("*.png"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest(), len(files)


def test_generate_writes_the_dpdd_layout(tmp_path):
    dpdd = synth.generate(tmp_path / "a", num=5, size=32, seed=3)
    assert dpdd == tmp_path / "a" / "DPDD"
    counts = {split: len(list_split(tmp_path / "a", "dpdd", split))
              for split in ("train", "val", "test")}
    assert counts == {"train": 5, "val": 1, "test": 1}
    for example in numpy_iterator(load_split(tmp_path / "a", "dpdd", "train")):
        assert example["c"].shape == (32, 32, 3)
        c, left, right = (np.round(example[k] * 255).astype(int) for k in ("c", "l", "r"))
        # C equals (L + R) / 2 within 8-bit rounding.
        assert np.abs(2 * c - left - right).max() <= 2
        assert np.abs(example["c"] - example["gt"]).max() > 0
    # Deterministic for a seed; another seed gives other scenes.
    synth.generate(tmp_path / "b", num=5, size=32, seed=3)
    synth.generate(tmp_path / "c", num=5, size=32, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    # Same parameters again: kept; other parameters: an error unless overwrite.
    assert synth.generate(tmp_path / "a", num=5, size=32, seed=3) == dpdd
    with pytest.raises(DataError, match="other parameters"):
        synth.generate(tmp_path / "a", num=6, size=32, seed=3)
    synth.generate(tmp_path / "a", num=6, size=32, seed=3, overwrite=True)
    assert len(list_split(tmp_path / "a", "dpdd", "train")) == 6


def test_generate_never_overwrites_a_real_data_set(tmp_path):
    write_png(tmp_path / "DPDD" / "train_c" / "source" / "x.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="not written by the synthetic generator"):
        synth.generate(tmp_path, num=1, size=32, overwrite=True)
    assert (tmp_path / "DPDD" / "train_c" / "source" / "x.png").exists()


@pytest.mark.slow
def test_user_photos_and_command_line(tmp_path):
    rng = np.random.default_rng(5)
    for name in ("beach", "city"):
        write_png(tmp_path / "photos" / f"{name}.png",
                  rng.integers(0, 256, (60, 70, 3)).astype(np.uint8))
    write_png(tmp_path / "photos" / "tiny.png", np.zeros((20, 20, 3), np.uint8))
    result = subprocess.run(
        [sys.executable, "-m", "ifan_jax.data.synth", f"--out={tmp_path / 'out'}", "--num=2",
         "--size=32", f"--images={tmp_path / 'photos'}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("DPDD")
    assert "tiny" in result.stderr  # too small photos are reported, not silently dropped
    names = [e["name"] for e in list_split(tmp_path / "out", "dpdd", "train")]
    assert names == ["00000_beach", "00001_city"]
    result = subprocess.run(
        [sys.executable, "-m", "ifan_jax.data.synth", f"--out={tmp_path / 'o2'}", "--num=1",
         "--size=32", f"--images={tmp_path / 'missing'}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "missing folder" in result.stderr


def test_synthetic_set_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    calls = []

    def fail_on_val(dpdd, split, *args):
        calls.append(split)
        if split == "val":
            raise KeyboardInterrupt  # a run stopped half-way
        return real(dpdd, split, *args)

    real = synth._write_split
    monkeypatch.setattr(synth, "_write_split", fail_on_val)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path, num=1, size=16)
    assert calls == ["train", "val"]
    assert os.listdir(tmp_path) == []  # no DPDD, no temporary folder
    monkeypatch.setattr(synth, "_write_split", real)
    old = os.umask(0o022)
    try:
        dpdd = synth.generate(tmp_path, num=1, size=16)
    finally:
        os.umask(old)
    assert stat.S_IMODE(dpdd.stat().st_mode) == 0o755
    assert os.listdir(tmp_path) == ["DPDD"]
