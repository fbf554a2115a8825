"""Decoding image files (ifan_jax.data.decode): exact values from PNGs the tests encode, 8 and 16
bits, JPEG as PIL/OpenCV decode it, and clear errors for broken files."""


import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from ifan_jax.data import DataError, load_split, numpy_iterator
from ifan_jax.data.decode import decode_file, read_header
from ifan_jax.data.testing import damage_pixels, encode_png, write_png


def _read(path, bit_depth=None):
    from ifan_jax.data.decode import read_depth

    h = read_header(path)
    return decode_file(h.path, h.format_code, read_depth(h.bit_depth, bit_depth), h.orientation,
                       (h.height, h.width))


def test_8bit_png_exact_values(tmp_path):
    values = np.arange(256, dtype=np.uint8)
    pixels = np.stack([values.reshape(16, 16), values[::-1].reshape(16, 16),
                       np.roll(values, 7).reshape(16, 16)], axis=-1)
    path = write_png(tmp_path / "a.png", pixels)
    header = read_header(path)
    assert (header.format, header.height, header.width, header.bit_depth) == ("png", 16, 16, 8)
    image = _read(path)
    assert image.dtype == np.float32 and image.shape == (16, 16, 3)
    # Exactly the official value: float64 division by 255, then float32.
    np.testing.assert_array_equal(image, (pixels / 255.0).astype(np.float32))
    assert image.min() == 0.0 and image.max() == 1.0


def test_16bit_png_exact_values_and_8bit_reading(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (9, 13, 3)).astype(np.uint16)
    pixels[0, :6, 0] = [0, 1, 255, 256, 32768, 65535]
    path = write_png(tmp_path / "a16.png", pixels)
    assert read_header(path).bit_depth == 16
    np.testing.assert_array_equal(_read(path), (pixels / 65535.0).astype(np.float32))
    np.testing.assert_array_equal(_read(path, 16), (pixels / 65535.0).astype(np.float32))
    # 8-bit reading keeps the high byte, as cv2.imread(IMREAD_COLOR) (libpng strip_16) does.
    np.testing.assert_array_equal(_read(path, 8), ((pixels >> 8) / 255.0).astype(np.float32))


def test_grey_alpha_and_palette_pngs_become_rgb(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (7, 5)).astype(np.uint8)
    rgba = rng.integers(0, 256, (7, 5, 4)).astype(np.uint8)
    grey16 = rng.integers(0, 65536, (7, 5)).astype(np.uint16)
    np.testing.assert_array_equal(_read(write_png(tmp_path / "g.png", grey)),
                                  np.repeat((grey / 255.0).astype(np.float32)[..., None], 3, -1))
    np.testing.assert_array_equal(_read(write_png(tmp_path / "rgba.png", rgba)),
                                  (rgba[..., :3] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(
        _read(write_png(tmp_path / "g16.png", grey16)),
        np.repeat((grey16 / 65535.0).astype(np.float32)[..., None], 3, -1))
    palette = Image.fromarray(rng.integers(0, 256, (7, 5, 3)).astype(np.uint8)).quantize(16)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(_read(tmp_path / "p.png"),
                                  (np.asarray(palette.convert("RGB")) / 255.0).astype(np.float32))


def test_jpeg_matches_libjpeg_islow_and_exif_orientation(tmp_path):
    rng = np.random.default_rng(2)
    pixels = np.clip(rng.normal(128, 60, (30, 45, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=90)
    expected = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB")) / 255.0
    np.testing.assert_array_equal(_read(tmp_path / "a.jpg"), expected.astype(np.float32))

    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "o.jpg", quality=90, exif=exif.tobytes())
    header = read_header(tmp_path / "o.jpg")
    assert (header.height, header.width, header.orientation) == (45, 30, 6)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg")).convert("RGB"))
    np.testing.assert_array_equal(_read(tmp_path / "o.jpg"),
                                  (upright / 255.0).astype(np.float32))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_match_pil(tmp_path, orientation):
    from ifan_jax.data.decode import apply_orientation

    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(apply_orientation(pixels, orientation), expected)


def test_broken_files_are_named_at_listing(tmp_path):
    good = encode_png(np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(good[: len(good) - 20])
    (tmp_path / "text.png").write_bytes(b"this is not an image at all")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    for name, what in (("empty.png", "empty file"), ("cut.png", "truncated PNG"),
                       ("text.png", "not a readable image"), ("cut.jpg", "truncated JPEG")):
        with pytest.raises(DataError, match=what) as info:
            read_header(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
        assert "\n" not in str(info.value)


def test_damage_inside_a_png_is_named_when_decoded(tmp_path):
    folder = tmp_path / "images"
    write_png(folder / "a_good.png", np.full((16, 16, 3), 7, np.uint8))
    bad = folder / "b_bad.png"
    bad.write_bytes(damage_pixels(encode_png(np.full((16, 16, 3), 9, np.uint8))))
    read_header(bad)  # header and tail look fine
    with pytest.raises(DataError, match="cannot decode") as info:
        _read(bad)
    assert str(bad) in str(info.value)

    ds = load_split(folder, "folder")
    with pytest.raises(DataError) as info:
        list(numpy_iterator(ds))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="b_bad.png"):  # through a transformation too
        list(numpy_iterator(ds.skip(1).take(1)))
    # Iterated by hand, it is TensorFlow's error (which does not name the file).
    with pytest.raises(tf.errors.OpError):
        list(ds.as_numpy_iterator())
