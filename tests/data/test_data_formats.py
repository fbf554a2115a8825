"""Image file metadata read once (ifan_jax.data.formats) for the data pipeline and image_io: PNG
headers and chunks, the EXIF/TIFF orientation; atomic writes with the one permission rule."""

import io
import os
import stat

import numpy as np
import pytest
import tifffile
from PIL import Image

from ifan_jax import image_io
from ifan_jax.data import formats, synth
from ifan_jax.data.decode import read_header
from ifan_jax.data.layouts import DataError
from ifan_jax.data.testing import encode_png


def test_png_header_reads_ihdr_and_rejects_damage():
    png = encode_png(np.zeros((5, 7, 3), np.uint16))
    assert formats.png_header(png) == (7, 5, 16, 2)
    assert formats.png_header(encode_png(np.zeros((3, 4), np.uint8))) == (4, 3, 8, 0)
    with pytest.raises(ValueError, match="not a PNG"):
        formats.png_header(b"GIF89a" + png[6:])
    with pytest.raises(ValueError, match="no IHDR"):
        formats.png_header(png[:20])
    zero_width = png[:16] + b"\x00\x00\x00\x00" + png[20:]
    with pytest.raises(ValueError, match="corrupt PNG header"):
        formats.png_header(zero_width)


def test_both_readers_name_the_file_of_a_corrupt_png_header(tmp_path):
    png = encode_png(np.zeros((5, 7, 3), np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(png[:12] + b"XXXX" + png[16:])
    with pytest.raises(DataError, match=f"{bad}: corrupt PNG"):
        read_header(bad)
    with pytest.raises(image_io.ImageError, match="bad.png"):
        image_io.read_image(str(bad))


def test_icc_chunk_inserted_after_ihdr_is_read_back_by_pillow():
    profile = bytes(range(256)) * 3
    png = encode_png(np.arange(60, dtype=np.uint8).reshape(4, 5, 3))
    with_icc = formats.insert_after_header(png, formats.iccp_chunk(profile))
    with Image.open(io.BytesIO(with_icc)) as im:
        assert im.info["icc_profile"] == profile
        np.testing.assert_array_equal(np.asarray(im), np.arange(60).reshape(4, 5, 3))


def test_orientation_from_exif_and_tiff_tags(tmp_path):
    exif = Image.Exif()
    exif[formats.ORIENTATION_TAG] = 6
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (6, 4)).save(path, exif=exif)
    with Image.open(path) as im:
        assert formats.exif_orientation(im) == 6
    header = read_header(path)
    assert (header.height, header.width, header.orientation) == (6, 4, 6)  # upright: swapped
    exif[formats.ORIENTATION_TAG] = 42  # out of range: as stored
    Image.new("RGB", (6, 4)).save(path, exif=exif)
    with Image.open(path) as im:
        assert formats.exif_orientation(im) == 1
    tif = tmp_path / "rotated.tif"
    tifffile.imwrite(tif, np.zeros((4, 6, 3), np.uint16), photometric="rgb",
                     extratags=[(formats.ORIENTATION_TAG, "H", 1, 8, True)])
    with tifffile.TiffFile(tif) as t:
        assert formats.tiff_orientation(t.pages.first.tags) == 8
    assert image_io.read_image(str(tif))[0].shape == (6, 4, 3)
    assert formats.orientation_value(None) == 1 and formats.orientation_value("x") == 1


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_written_images_get_the_usual_permissions(tmp_path, ext):
    old = os.umask(0o027)
    try:
        path = tmp_path / f"out{ext}"
        image_io.write_image(str(path), np.full((4, 4, 3), 0.25, np.float32))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == [path.name]


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
