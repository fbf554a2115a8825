"""The prepared random-access store (python -m ifan_jax.data.prepare): the same training stream
as decoding, for DPDD and pairs at 8 and 16 bits; a stale or missing store falls back to decoding
with a warning that names the command; the README's command as written."""

import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import logging as absl_logging

from ifan_jax.data import DataError, prepare, train_dataset
from ifan_jax.data.testing import fake_folders, write_fake_dataset, write_png

REPO = Path(__file__).resolve().parents[2]
AUGMENT = dict(noise_prob=0.3, gray_prob=0.5, scale_prob=0.7)


def _stream(root, steps=6, **kwargs):
    kwargs = dict(batch_size=3, crop=40, seed=2, augment=AUGMENT, process_index=0,
                  process_count=1, **kwargs)
    return list(itertools.islice(train_dataset(root, **kwargs), steps))


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.slow
@pytest.mark.parametrize("dataset, bits", [("dpdd", 8), ("dpdd", 16), ("pairs", 8)])
def test_store_gives_the_decoded_stream(tmp_path, monkeypatch, dataset, bits):
    """Images larger than a tile (several tiles per window, partial edge tiles), 16-bit files read
    at 8 or 16 bits: the stream from the store equals the stream from the PNGs, resumed too."""
    monkeypatch.setattr(prepare, "TILE", 16)  # small tiles: many per window, on small images
    write_fake_dataset(tmp_path, dataset, {"train": 3}, size=(61, 75), bits=16, seed=5)
    rng = np.random.default_rng(0)  # and a scene of another size (other tile counts)
    for folder in fake_folders(tmp_path, dataset, "train").values():
        write_png(folder / "train_003.png", rng.integers(0, 65536, (40, 97, 3)).astype(np.uint16))
    decoded = _stream(tmp_path, dataset=dataset, bit_depth=bits, store=False, with_info=True)
    folder = prepare.prepare(tmp_path, dataset, "train", bits, progress=False)
    base = tmp_path / ("DPDD" if dataset == "dpdd" else "")
    assert folder == base / "prepared" / f"train_{bits}bit"
    index = json.loads((folder / "index.json").read_text())
    assert index["dtype"] == ("uint16" if bits == 16 else "uint8")
    assert len(os.listdir(folder / "c")) == 3 * 4 * 5 + 3 * 7  # ceil(61/16) x ceil(75/16), ...
    assert prepare.find_store(tmp_path, dataset, "train", bits,
                              prepare.list_split(tmp_path, dataset, "train"))[0] == folder
    stored = _stream(tmp_path, dataset=dataset, bit_depth=bits, with_info=True)
    _assert_same(decoded, stored)
    assert any(x["scale"].any() and x["gray"].any() for x in stored)
    assert 3 in np.concatenate([x["scene"] for x in stored])
    _assert_same(decoded[4:], _stream(tmp_path, 2, dataset=dataset, bit_depth=bits,
                                      start_step=4, with_info=True))


@pytest.mark.slow
def test_stale_or_missing_store_falls_back_to_decoding_and_says_what_to_run(tmp_path,
                                                                           monkeypatch):
    warnings = []
    monkeypatch.setattr(absl_logging, "warning", lambda msg, *args: warnings.append(msg % args))
    monkeypatch.setattr(prepare, "TILE", 32)
    write_fake_dataset(tmp_path, "dpdd", {"train": 2}, size=(48, 64), seed=1)
    decoded = _stream(tmp_path, 2, store=False)
    assert warnings == []  # small images: decoding is cheap, no advice
    prepare.prepare(tmp_path, "dpdd", "train", 8, progress=False)
    _assert_same(decoded, _stream(tmp_path, 2))
    assert warnings == []

    # A source file rewritten after preparing: the store is stale and not used.
    gt = fake_folders(tmp_path, "dpdd", "train")["gt"] / "train_001.png"
    write_png(gt, np.zeros((48, 64, 3), np.uint8))
    fresh = _stream(tmp_path, 2, store=False)
    _assert_same(fresh, _stream(tmp_path, 2))
    (message,) = warnings
    assert "is older than" in message and "train_001.png" in message
    assert message.endswith(f"python -m ifan_jax.data.prepare --data_dir={tmp_path} "
                            f"--dataset=dpdd --split=train --bit_depth=8 --overwrite")
    with pytest.raises(DataError, match="exists; pass --overwrite"):
        prepare.prepare(tmp_path, "dpdd", "train", 8, progress=False)
    prepare.prepare(tmp_path, "dpdd", "train", 8, overwrite=True, progress=False)
    _assert_same(fresh, _stream(tmp_path, 2))
    assert len(warnings) == 1

    # No store for 16 bits, large images: decoding, with the command to run.
    monkeypatch.setattr("ifan_jax.data.pipeline.SLOW_DECODING_PIXELS", 48 * 64)
    _stream(tmp_path, 1, bit_depth=16)
    assert "no prepared store" in warnings[-1] and "--bit_depth=16" in warnings[-1]


@pytest.mark.slow
def test_readme_prepare_command(tmp_path):
    text = (REPO / "README.md").read_text()
    (command,) = re.findall(r"^python -m ifan_jax\.data\.prepare .*$", text, flags=re.M)
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "ifan_jax.data.prepare"]
    write_fake_dataset(tmp_path / "datasets", "dpdd", {"train": 2}, size=(20, 30), seed=1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    folder = tmp_path / "datasets" / "DPDD" / "prepared" / "train_8bit"
    assert run.stdout.startswith("datasets/DPDD/prepared/train_8bit (")
    assert (folder / "index.json").is_file()
    assert prepare.main(["--data_dir", str(tmp_path / "nowhere")]) == 2


def test_window_reader_reads_only_the_tiles_under_the_window(tmp_path, monkeypatch):
    """Every window, at the image's edges too, comes back exact, and (where /proc/self/io counts
    the bytes read) from the k x k tiles that cover it, not from the largest grid a crop can
    need."""
    from benchmarks.probes import bytes_read

    monkeypatch.setattr(prepare, "TILE", 16)
    write_fake_dataset(tmp_path, "dpdd", {"train": 1}, size=(61, 75), bits=16, seed=3)
    pixels = np.random.default_rng(4).integers(0, 65536, (61, 75, 3)).astype(np.uint16)
    write_png(fake_folders(tmp_path, "dpdd", "train")["c"] / "train_000.png", pixels)
    folder = prepare.prepare(tmp_path, "dpdd", "train", 16, progress=False)
    index = json.loads((folder / "index.json").read_text())
    read = prepare.window_reader(folder, index, "c", np.int32(0), grid=4)
    tile_bytes = 16 * 16 * 3 * 2
    for r0, r1, c0, c1 in [(0, 16, 0, 16), (3, 20, 5, 21), (15, 33, 0, 40), (0, 61, 0, 1),
                           (45, 61, 59, 75), (17, 48, 33, 64), (2, 50, 10, 57)]:
        before = bytes_read()
        window = read(r0, r1, c0, c1).numpy()
        after = bytes_read()
        np.testing.assert_array_equal(window, pixels[r0:r1, c0:c1])
        k = max((r1 - 1) // 16 - r0 // 16, (c1 - 1) // 16 - c0 // 16) + 1
        if before is not None:
            assert k * k * tile_bytes <= after - before < (k * k + 1) * tile_bytes, (r0, c0, k)
