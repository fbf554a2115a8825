"""Reading and writing photos (JPEG, PNG, TIFF; 8 or 16 bit; grey, RGB, with or without alpha).

    image, info = read_image("photo.tif")     # H x W x 3 float32 in [0, 1], upright
    write_image("out/photo.tif", result, info) # same bit depth, grey-ness, alpha, colour profile

`read_image` returns the colour channels as RGB (a grey image is repeated into three channels)
and an `ImageInfo` with what `write_image` needs to give the output the input's form: format, bit
depth, whether it was grey, the alpha channel (kept as the file's own integers, untouched), the
EXIF block and the ICC profile. The EXIF orientation is applied on reading (the pixels come back
upright, as viewers show them) and reset to 1 in the EXIF that is written back.

Which decoder: 8-bit files go through Pillow; 16-bit PNGs through TensorFlow's PNG codec (Pillow
reduces 16-bit colour PNGs to 8 bits); TIFFs through tifffile (Pillow again only for 8-bit TIFFs
whose compression tifffile cannot decode without the optional `imagecodecs` package).

`write_image` writes through `ifan_jax.fileio.atomic_file` (a temporary file beside the target,
renamed into place, with the usual permissions), so an interrupted run never leaves a partial
image under the target's name; an existing target is an error unless `overwrite=True`. Every
failure is an `ImageError` whose message names the file.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import warnings
import zlib

import numpy as np
import tifffile
from PIL import Image

from ifan_jax import fileio
from ifan_jax.data.decode import tensorflow
from ifan_jax.data.formats import (
    ORIENTATION_TAG,
    PNG_HEADER_BYTES,
    apply_orientation,
    exif_orientation,
    iccp_chunk,
    insert_after_header,
    png_header,
    tiff_orientation,
)
from ifan_jax.errors import UserError

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
JPEG_QUALITY = 95
# ITU-R BT.601 luma weights: how a deblurred RGB image of a grey input is written back grey.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_ROWS_PER_CHUNK = 512  # quantise big images in row blocks to bound temporary memory
# The most pixels (width x height) a photo may have, checked from its header before anything is
# decoded, for every format: 100 megapixels, above the largest camera photos (a 24-megapixel photo
# is 6000 x 4000, a 102-megapixel medium-format one 11648 x 8736 is refused). Deblurring needs
# about 50 bytes a pixel in float32 buffers besides the network, so this bounds what one photo
# costs; `--max_pixels` on the deblur command and the page sets it. Pillow keeps its own,
# fixed refusal above 2 x 89.5 megapixels for JPEG and PNG.
MAX_PIXELS = 100_000_000


class ImageError(UserError):
    """An image that cannot be read or written; the message names the file and the reason."""


@dataclasses.dataclass
class ImageInfo:
    """What a file looked like, so that an output can be written in the same form."""

    format: str  # "PNG", "JPEG" or "TIFF"
    bit_depth: int  # 8 or 16
    grey: bool = False  # one colour channel in the file (read as RGB, written back grey)
    alpha: np.ndarray | None = None  # H x W alpha (uint8 / uint16 as stored), upright
    exif: bytes | None = None  # EXIF block, orientation reset to 1
    icc_profile: bytes | None = None
    orientation: int = 1  # the EXIF orientation that `read_image` applied

    @property
    def max_value(self) -> int:
        return (1 << self.bit_depth) - 1


def format_for_path(path: str) -> str:
    """'PNG', 'JPEG' or 'TIFF' from the file name's extension; ImageError otherwise."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ImageError(f"{path}: unsupported file type {ext or '(none)'!r} "
                         f"(supported: {', '.join(sorted(FORMATS))})")
    return FORMATS[ext]


# --------------------------------------------------------------------------------------- reading

def check_pixels(path: str, width: int, height: int, max_pixels: int | None = MAX_PIXELS) -> None:
    """ImageError unless a `width` x `height` image is within `max_pixels` (None: no limit)."""
    if max_pixels is not None and int(width) * int(height) > max_pixels:
        raise ImageError(f"{path}: {width} x {height} pixels ({width * height / 1e6:.1f} megapixels) "
                         f"is more than the limit of {max_pixels / 1e6:g} megapixels "
                         f"(--max_pixels)")


def read_image(path: str, max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Read a JPEG/PNG/TIFF as (H x W x 3 float32 RGB in [0, 1], ImageInfo), EXIF-upright.

    An image of more than `max_pixels` pixels (width x height as its header declares them; None:
    no limit) is refused before any pixel is decoded. Only regular files are read."""
    try:
        if not os.path.isfile(path) and os.path.exists(path) and not os.path.isdir(path):
            raise ImageError(f"{path}: not a regular file")
        if os.path.getsize(path) == 0:
            raise ImageError(f"{path}: empty file")
        with open(path, "rb") as f:
            head = f.read(8)
        if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
            # tifffile first: Pillow cannot even open many 16-bit TIFFs.
            pixels, info = _read_tiff(path, max_pixels)
        else:
            with warnings.catch_warnings():  # our limit, not Pillow's warning, decides
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    check_pixels(path, *im.size, max_pixels)
                    pixels, info = _read_pillow_format(path, im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can identify") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        # Pillow and tifffile report truncated or corrupt data as OSError/SyntaxError/ValueError.
        raise ImageError(f"{path}: truncated or corrupt image ({_one_line(e)})") from None
    return _to_float(pixels, info)


def _read_pillow_format(path: str, im: Image.Image) -> tuple[np.ndarray, ImageInfo]:
    fmt = im.format
    if fmt not in ("PNG", "JPEG", "TIFF", "MPO"):
        raise ImageError(f"{path}: unsupported image format {fmt} (JPEG, PNG and TIFF "
                         f"are supported)")
    fmt = "JPEG" if fmt == "MPO" else fmt  # MPO: a JPEG with extra frames (many cameras)
    if fmt == "PNG" and _png_bit_depth(path) == 16:
        # Pillow would decode the pixels to 8 bits; take only its metadata (an eXIf chunk after
        # the image data, which Pillow finds only by decoding, is ignored).
        info = ImageInfo("PNG", 16, icc_profile=im.info.get("icc_profile"))
        if "exif" in im.info:
            info.exif, info.orientation = _exif_bytes(im), exif_orientation(im)
        return _read_png16(path), info
    return _read_with_pillow(im, fmt)


def _to_float(pixels: np.ndarray, info: ImageInfo) -> tuple[np.ndarray, ImageInfo]:
    """Stored integers (H x W [x C], C = 1-4) -> upright H x W x 3 float32 RGB; alpha into info."""
    pixels = apply_orientation(pixels, info.orientation)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[-1]
    info.grey = channels in (1, 2)
    if channels in (2, 4):
        info.alpha = np.ascontiguousarray(pixels[..., -1])
        pixels = pixels[..., :-1]
    image = pixels.astype(np.float32)
    image *= np.float32(1.0 / info.max_value)
    if info.grey:
        image = np.repeat(image, 3, axis=-1)
    return image, info


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _png_bit_depth(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(PNG_HEADER_BYTES)
    try:
        return png_header(head).bit_depth
    except ValueError as e:
        raise ImageError(f"{path}: {e}") from None


def _exif_bytes(im: Image.Image) -> bytes | None:
    """The image's EXIF block with the orientation reset to 1, or None (Pillow's copy untouched)."""
    try:
        exif = im.getexif()
        if not exif:
            return None
        original = exif.get(ORIENTATION_TAG)
        if original is None:
            return exif.tobytes()
        exif[ORIENTATION_TAG] = 1
        try:
            return exif.tobytes()
        finally:
            exif[ORIENTATION_TAG] = original
    except Exception:
        return None


def _read_with_pillow(im: Image.Image, fmt: str) -> tuple[np.ndarray, ImageInfo]:
    im.load()
    info = ImageInfo(fmt, 8, exif=_exif_bytes(im), icc_profile=im.info.get("icc_profile"),
                     orientation=exif_orientation(im))
    mode = im.mode
    if mode.startswith("I;16"):
        info.bit_depth = 16
        return np.asarray(im, dtype=np.uint16), info
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "RGBX", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageError(f"{im.filename}: unsupported pixel format {mode!r}")
    return np.asarray(im), info


def _read_png16(path: str) -> np.ndarray:
    tf = tensorflow()
    with open(path, "rb") as f:
        data = f.read()
    try:
        return tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
    except tf.errors.OpError as e:
        raise ImageError(f"{path}: truncated or corrupt PNG ({_one_line(e.message)})") from None


def _read_tiff(path: str, max_pixels: int | None) -> tuple[np.ndarray, ImageInfo]:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        check_pixels(path, page.imagewidth, page.imagelength, max_pixels)
        bits = page.bitspersample
        photometric = int(page.photometric)
        orientation = tiff_orientation(page.tags)
        icc = page.tags[34675].value if 34675 in page.tags else None
        simple = photometric in (1, 2) and page.dtype in (np.uint8, np.uint16)
        try:
            pixels = page.asarray() if simple else None
        except Exception as e:  # e.g. LZW/JPEG compression without the imagecodecs package
            if bits > 8:
                raise ImageError(f"{path}: cannot decode this {bits}-bit TIFF ({_one_line(e)})"
                                 ) from None
            pixels = None
        if pixels is not None and int(page.planarconfig) == 2 and pixels.ndim == 3:
            pixels = np.moveaxis(pixels, 0, -1)
    if pixels is None:
        if bits > 8 or page.dtype not in (np.uint8, np.uint16):
            raise ImageError(f"{path}: unsupported TIFF sample format ({bits}-bit {page.dtype}, "
                             f"photometric {photometric}); 8/16-bit grey or RGB is supported")
        with Image.open(path) as im:
            return _read_with_pillow(im, "TIFF")
    if pixels.ndim == 3 and pixels.shape[-1] > 4:
        raise ImageError(f"{path}: unsupported TIFF with {pixels.shape[-1]} samples per pixel")
    if pixels.ndim not in (2, 3):
        raise ImageError(f"{path}: unsupported TIFF layout, array shape {pixels.shape}")
    info = ImageInfo("TIFF", 16 if pixels.dtype == np.uint16 else 8,
                     icc_profile=bytes(icc) if icc is not None else None,
                     orientation=orientation)
    return pixels, info


# --------------------------------------------------------------------------------------- writing

def quantize(image: np.ndarray, bit_depth: int, grey: bool = False) -> np.ndarray:
    """H x W x 3 float [0, 1] -> H x W x 3 (or H x W when `grey`, BT.601 luma) unsigned integers."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit depth must be 8 or 16, got {bit_depth}")
    maxv = np.float32((1 << bit_depth) - 1)
    h, w = image.shape[:2]
    out = np.empty((h, w) if grey else (h, w, 3), np.uint8 if bit_depth == 8 else np.uint16)
    for y in range(0, h, _ROWS_PER_CHUNK):
        block = np.asarray(image[y:y + _ROWS_PER_CHUNK], np.float32)
        if grey:
            block = block @ LUMA
        block = np.clip(block, 0.0, 1.0) * maxv
        np.rint(block, out=block)
        out[y:y + _ROWS_PER_CHUNK] = block
    return out


def _alpha_at(alpha: np.ndarray, bit_depth: int) -> np.ndarray:
    """Alpha converted to `bit_depth` (unchanged when the depth is its own)."""
    if alpha.dtype == np.uint16 and bit_depth == 8:
        return ((alpha.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if alpha.dtype == np.uint8 and bit_depth == 16:
        return alpha.astype(np.uint16) * 257
    return alpha


def write_image(path: str, image: np.ndarray, info: ImageInfo | None = None,
                bit_depth: int | None = None, overwrite: bool = False) -> None:
    """Write H x W x 3 float [0, 1] `image` to `path` in the form `info` describes.

    The format comes from the extension. `bit_depth` (8 or 16) defaults to the info's, else 8;
    JPEG is always 8 bit (quality 95, no chroma subsampling). With `info`: a grey input is written
    grey, its alpha channel is added back unchanged (PNG, TIFF), its ICC profile and EXIF (JPEG,
    8-bit PNG) are carried over. Atomic: written under a temporary name, then renamed.
    """
    fmt = format_for_path(path)
    info = info or ImageInfo(fmt, bit_depth or 8)
    depth = bit_depth or info.bit_depth
    if fmt == "JPEG" and depth != 8:
        raise ImageError(f"{path}: JPEG cannot hold {depth}-bit images")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ImageError(f"{path}: expected an H x W x 3 image, got shape {image.shape}")
    pixels = quantize(image, depth, info.grey)
    if info.alpha is not None and fmt != "JPEG":
        if info.alpha.shape != image.shape[:2]:
            raise ImageError(f"{path}: alpha is {info.alpha.shape}, image {image.shape[:2]}")
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        pixels = np.concatenate([pixels, _alpha_at(info.alpha, depth)[..., None]], axis=-1)

    try:
        with fileio.atomic_file(path, overwrite=overwrite) as f:
            _encode(f, pixels, fmt, info)
    except FileExistsError:
        raise ImageError(f"{path}: exists (not overwritten)") from None


def _encode(f, pixels: np.ndarray, fmt: str, info: ImageInfo) -> None:
    channels = 1 if pixels.ndim == 2 else pixels.shape[-1]
    if fmt == "TIFF":
        buffer = io.BytesIO()  # tifffile wants a seekable file with a name, or memory
        tifffile.imwrite(buffer, pixels, photometric="minisblack" if channels in (1, 2) else "rgb",
                         extrasamples=["unassalpha"] if channels in (2, 4) else None,
                         compression="zlib", iccprofile=info.icc_profile)
        f.write(buffer.getbuffer())
        return
    if fmt == "PNG" and pixels.dtype == np.uint16:
        tf = tensorflow()
        data = tf.io.encode_png(pixels if pixels.ndim == 3 else pixels[..., None]).numpy()
        if info.icc_profile:  # TensorFlow writes no colour profile
            data = insert_after_header(data, iccp_chunk(info.icc_profile))
        f.write(data)
        return
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    im = Image.fromarray(pixels, mode)
    options = {}
    if info.icc_profile:
        options["icc_profile"] = info.icc_profile
    if info.exif:
        options["exif"] = info.exif
    if fmt == "JPEG":
        im.save(f, format="JPEG", quality=JPEG_QUALITY, subsampling=0, **options)
    else:
        im.save(f, format="PNG", **options)
