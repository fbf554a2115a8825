"""Reading and writing photos: exact 8/16-bit round trips, grey, alpha, EXIF, errors, atomicity;
what files say about themselves (PNG headers and chunks, the EXIF/TIFF orientation), read once
for image_io and the data pipeline; the usual permissions."""

import io
import os
import stat

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from ifan_jax import image_io
from ifan_jax.data.decode import read_header
from ifan_jax.data.layouts import DataError
from ifan_jax.data.testing import encode_png
from ifan_jax.image_io import ImageError, ImageInfo, read_image, write_image

RNG = np.random.default_rng(0)


def _pixels(bits, channels, shape=(21, 34)):
    high = 1 << bits
    dtype = np.uint16 if bits == 16 else np.uint8
    return RNG.integers(0, high, (*shape, channels)).astype(dtype)


def _as_stored(pixels):
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_read_write_round_trip_is_exact(tmp_path, ext, bits, channels):
    pixels = _pixels(bits, channels)
    src = tmp_path / f"in{ext}"
    if ext == ".png":
        src.write_bytes(encode_png(pixels))  # an encoder independent of the one under test
    else:
        tifffile.imwrite(src, _as_stored(pixels), photometric="rgb" if channels >= 3 else
                         "minisblack", extrasamples=["unassalpha"] if channels in (2, 4) else None)
    image, info = read_image(str(src))
    assert image.dtype == np.float32 and image.shape == (21, 34, 3)
    assert (info.bit_depth, info.grey, info.format) == (bits, channels < 3, image_io.FORMATS[ext])
    colour = pixels[..., :1] if channels < 3 else pixels[..., :3]
    np.testing.assert_allclose(image, np.broadcast_to(colour, image.shape) / (2**bits - 1),
                               atol=1e-7)
    if channels in (2, 4):
        np.testing.assert_array_equal(info.alpha, pixels[..., -1])
    else:
        assert info.alpha is None

    out = tmp_path / f"out{ext}"
    write_image(str(out), image, info)
    again, info2 = read_image(str(out))
    np.testing.assert_array_equal(again, image)
    assert (info2.bit_depth, info2.grey) == (bits, info.grey)
    if channels in (2, 4):
        np.testing.assert_array_equal(info2.alpha, info.alpha)
    if ext == ".png":  # the stored form: a 16-bit RGB PNG stays 16 bit (IHDR bit depth byte)
        assert out.read_bytes()[24] == bits


def test_jpeg_round_trip_is_close_and_grey_stays_grey(tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    smooth = np.stack([x / 63, y / 47, (x + y) / 110], -1).astype(np.float32)
    write_image(str(tmp_path / "c.jpg"), smooth)
    back, info = read_image(str(tmp_path / "c.jpg"))
    assert (info.format, info.bit_depth, info.grey) == ("JPEG", 8, False)
    assert np.abs(back - smooth).mean() < 2 / 255

    Image.fromarray((smooth[..., 0] * 255).astype(np.uint8)).save(tmp_path / "g.jpg")
    image, info = read_image(str(tmp_path / "g.jpg"))
    assert info.grey and image.shape == (48, 64, 3)
    write_image(str(tmp_path / "g_out.jpg"), image, info)
    assert Image.open(tmp_path / "g_out.jpg").mode == "L"
    with pytest.raises(ImageError, match="16-bit"):
        write_image(str(tmp_path / "x.jpg"), image, info, bit_depth=16)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    pixels = _pixels(8, 3, (12, 20))
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[image_io.ORIENTATION_TAG] = orientation
    path = tmp_path / "o.png"  # PNG keeps the pixels exact; Pillow reads its eXIf chunk
    im.save(path, exif=exif.tobytes())
    image, info = read_image(str(path))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(np.rint(image * 255).astype(np.uint8), expected)
    assert info.orientation == orientation
    write_image(str(tmp_path / "out.png"), image, info)
    assert Image.open(tmp_path / "out.png").getexif().get(image_io.ORIENTATION_TAG, 1) == 1


def test_icc_profile_and_16_bit_tiff_orientation_are_carried(tmp_path):
    pixels = _pixels(16, 3, (10, 16))
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", iccprofile=b"fake-icc-profile",
                     extratags=[(274, "H", 1, 6, True)])  # orientation 6: rotate 90 clockwise
    image, info = read_image(str(path))
    assert image.shape == (16, 10, 3) and info.orientation == 6
    np.testing.assert_array_equal(np.rint(image * 65535).astype(np.uint16), np.rot90(pixels, -1))
    for ext in (".tif", ".png"):
        write_image(str(tmp_path / f"out{ext}"), image, info)
    with tifffile.TiffFile(tmp_path / "out.tif") as t:
        assert t.pages.first.tags[34675].value == b"fake-icc-profile"
    assert Image.open(tmp_path / "out.png").info.get("icc_profile") == b"fake-icc-profile"


def test_bit_depth_can_be_changed_on_writing(tmp_path):
    pixels = _pixels(16, 4)
    (tmp_path / "a.png").write_bytes(encode_png(pixels))
    image, info = read_image(str(tmp_path / "a.png"))
    write_image(str(tmp_path / "b.png"), image, info, bit_depth=8)
    back, info8 = read_image(str(tmp_path / "b.png"))
    assert info8.bit_depth == 8
    np.testing.assert_array_equal(info8.alpha, np.rint(pixels[..., 3] / 257).astype(np.uint8))
    assert np.abs(back - image).max() <= 0.5 / 255 + 1e-6


def test_existing_files_are_not_overwritten_and_nothing_partial_is_left(tmp_path, monkeypatch):
    image = np.full((8, 8, 3), 0.5, np.float32)
    target = tmp_path / "x.png"
    target.write_bytes(b"precious")
    with pytest.raises(ImageError, match="exists"):
        write_image(str(target), image)
    assert target.read_bytes() == b"precious"
    write_image(str(target), image, overwrite=True)
    assert read_image(str(target))[0].shape == (8, 8, 3)

    def broken(f, *args):
        f.write(b"half an image")
        raise KeyboardInterrupt  # a run stopped while writing

    monkeypatch.setattr(image_io, "_encode", broken)
    with pytest.raises(KeyboardInterrupt):
        write_image(str(tmp_path / "new.png"), image)
    assert sorted(os.listdir(tmp_path)) == ["x.png"]


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_pixels(8, 3, (64, 64))).save(good)
    cases = {
        "empty.png": (b"", "empty file"),
        "text.jpg": (b"this is not an image\n", "not an image"),
        "cut.png": (good.read_bytes()[:200], "truncated or corrupt"),
        "cut16.png": (encode_png(_pixels(16, 3, (64, 64)))[:300], "truncated or corrupt"),
    }
    jpeg = tmp_path / "full.jpg"
    Image.fromarray(_pixels(8, 3, (64, 64))).save(jpeg)
    cases["cut.jpg"] = (jpeg.read_bytes()[:400], "truncated or corrupt")
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError) as e:
            read_image(str(tmp_path / name))
        message = str(e.value)
        assert message.startswith(str(tmp_path / name)) and reason in message, message
        assert "\n" not in message
    with pytest.raises(ImageError, match="no such file"):
        read_image(str(tmp_path / "missing.png"))
    with pytest.raises(ImageError, match="directory"):
        read_image(str(tmp_path))
    Image.fromarray(_pixels(8, 3)).save(tmp_path / "a.bmp")
    with pytest.raises(ImageError, match="unsupported image format BMP"):
        read_image(str(tmp_path / "a.bmp"))


def test_quantize_rounds_and_clips():
    image = np.array([[[-0.1, 0.5, 1.2]]], np.float32)
    np.testing.assert_array_equal(image_io.quantize(image, 8), [[[0, 128, 255]]])
    np.testing.assert_array_equal(image_io.quantize(image, 16), [[[0, 32768, 65535]]])
    grey = image_io.quantize(np.full((2, 2, 3), 0.5, np.float32), 8, grey=True)
    assert grey.shape == (2, 2) and (grey == 128).all()
    assert ImageInfo("PNG", 16).max_value == 65535


def test_png_header_reads_ihdr_and_rejects_damage():
    png = encode_png(np.zeros((5, 7, 3), np.uint16))
    assert image_io.png_header(png) == (7, 5, 16, 2)
    assert image_io.png_header(encode_png(np.zeros((3, 4), np.uint8))) == (4, 3, 8, 0)
    with pytest.raises(ValueError, match="not a PNG"):
        image_io.png_header(b"GIF89a" + png[6:])
    with pytest.raises(ValueError, match="no IHDR"):
        image_io.png_header(png[:20])
    zero_width = png[:16] + b"\x00\x00\x00\x00" + png[20:]
    with pytest.raises(ValueError, match="corrupt PNG header"):
        image_io.png_header(zero_width)


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
    with_icc = image_io.insert_after_header(png, image_io.iccp_chunk(profile))
    with Image.open(io.BytesIO(with_icc)) as im:
        assert im.info["icc_profile"] == profile
        np.testing.assert_array_equal(np.asarray(im), np.arange(60).reshape(4, 5, 3))


def test_orientation_from_exif_and_tiff_tags(tmp_path):
    exif = Image.Exif()
    exif[image_io.ORIENTATION_TAG] = 6
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (6, 4)).save(path, exif=exif)
    with Image.open(path) as im:
        assert image_io.exif_orientation(im) == 6
    header = read_header(path)
    assert (header.height, header.width, header.orientation) == (6, 4, 6)  # upright: swapped
    exif[image_io.ORIENTATION_TAG] = 42  # out of range: as stored
    Image.new("RGB", (6, 4)).save(path, exif=exif)
    with Image.open(path) as im:
        assert image_io.exif_orientation(im) == 1
    tif = tmp_path / "rotated.tif"
    tifffile.imwrite(tif, np.zeros((4, 6, 3), np.uint16), photometric="rgb",
                     extratags=[(image_io.ORIENTATION_TAG, "H", 1, 8, True)])
    with tifffile.TiffFile(tif) as t:
        assert image_io.tiff_orientation(t.pages.first.tags) == 8
    assert image_io.read_image(str(tif))[0].shape == (6, 4, 3)
    assert image_io.orientation_value(None) == 1 and image_io.orientation_value("x") == 1


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


def _photo_jpeg(path, quality, subsampling, grey=False):
    from skimage import data as skimage_data

    photo = Image.fromarray(skimage_data.astronaut())
    (photo.convert("L") if grey else photo).save(path, quality=quality, subsampling=subsampling)


@pytest.mark.parametrize("quality", [20, 50, 75, 85, 95, 100])
def test_jpeg_quality_is_estimated_from_the_quantisation_tables(tmp_path, quality):
    path = tmp_path / "q.jpg"
    _photo_jpeg(path, quality, "4:2:0")
    with Image.open(path) as im:
        assert image_io.jpeg_quality(im.quantization) == quality
    info = read_image(str(path))[1]
    assert (info.jpeg_quality, info.jpeg_subsampling) == (quality, "4:2:0")


def test_jpeg_outputs_keep_the_inputs_subsampling_and_quality(tmp_path):
    from PIL import JpegImagePlugin

    for subsampling in ("4:2:0", "4:2:2", "4:4:4"):
        src, out = tmp_path / f"in{subsampling[-1]}.jpg", tmp_path / f"out{subsampling[-1]}.jpg"
        _photo_jpeg(src, 85, subsampling)
        image, info = read_image(str(src))
        write_image(str(out), image, info)
        with Image.open(out) as im:
            sampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}[JpegImagePlugin.get_sampling(im)]
            assert sampling == subsampling
            assert abs(image_io.jpeg_quality(im.quantization) - 85) <= 2
        ratio = out.stat().st_size / src.stat().st_size
        assert 1 / 1.3 < ratio < 1.3, (subsampling, ratio)

    _photo_jpeg(tmp_path / "grey.jpg", 70, "4:2:0", grey=True)
    image, info = read_image(str(tmp_path / "grey.jpg"))
    assert (info.grey, info.jpeg_quality, info.jpeg_subsampling) == (True, 70, None)
    write_image(str(tmp_path / "grey_out.jpg"), image, info)
    with Image.open(tmp_path / "grey_out.jpg") as im:
        assert im.mode == "L" and image_io.jpeg_quality(im.quantization) == 70

    # Not a JPEG input: quality 95 without subsampling.
    png_image, png_info = read_image(str(_png_of(tmp_path, image)))
    write_image(str(tmp_path / "from_png.jpg"), png_image, png_info)
    with Image.open(tmp_path / "from_png.jpg") as im:
        assert JpegImagePlugin.get_sampling(im) == 0
        assert image_io.jpeg_quality(im.quantization) == image_io.JPEG_QUALITY == 95


def _png_of(tmp_path, image):
    path = tmp_path / "photo.png"
    write_image(str(path), image)
    return path
