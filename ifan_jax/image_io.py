"""Reading and writing photos (JPEG, PNG, TIFF; 8 or 16 bit; grey, RGB, with or without alpha).

    image, info = read_image("photo.tif")     # H x W x 3 float32 in [0, 1], upright
    write_image("out/photo.tif", result, info) # same bit depth, grey-ness, alpha, colour profile

`read_image` returns the colour channels as RGB (a grey image is repeated into three channels)
and an `ImageInfo` with what `write_image` needs to give the output the input's form: format, bit
depth, whether it was grey, the alpha channel (kept as the file's own integers, untouched), the
EXIF block, the ICC profile, and for a JPEG its chroma subsampling and estimated quality. The EXIF
orientation is applied on reading (the pixels come back upright, as viewers show them) and reset
to 1 in the EXIF that is written back.

Which decoder: 8-bit files go through Pillow; 16-bit PNGs through TensorFlow's PNG codec (Pillow
reduces 16-bit colour PNGs to 8 bits); TIFFs through tifffile (Pillow again only for 8-bit TIFFs
whose compression tifffile cannot decode without the optional `imagecodecs` package).

Bounded reading: before any pixel is decoded, what a file declares is checked against what a
photo can be. Its pixels (width x height of the image read: a TIFF's first page, an MPO's first
frame) against `max_pixels` (`MAX_PIXELS`, 100 megapixels); a PNG's compressed pixel data against
what deflate can restore (at most `DEFLATE_RATIO` bytes a byte) and its file size against what its
pixels need plus `METADATA_BYTES`; a TIFF's strips or tiles against the file (as many as its size
needs, each inside the file, none sharing its bytes with another, enough bytes for the pixels).
Only regular files are read. The same checks serve the data pipeline (`ifan_jax.data.decode`).

`write_image` writes through `ifan_jax.fileio.atomic_file` (a temporary file beside the target,
renamed into place, with the usual permissions), so an interrupted run or a full disk never
leaves a partial image under the target's name; an existing target is an error unless
`overwrite=True`. Every failure is a one-line `ImageError` (a full disk: `fileio.DiskFullError`)
whose message names the file.

The helpers that read what image files say about themselves live here too, for this module and
the data pipeline: the PNG header and chunks (`png_header`, `png_chunk`), the EXIF/TIFF
orientation (`exif_orientation`, `apply_orientation`), the JPEG quality estimate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import math
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tifffile
from PIL import Image, JpegImagePlugin, PngImagePlugin

from ifan_jax import environment, fileio
from ifan_jax.errors import UserError

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
# A JPEG written without a JPEG input to copy from (a PNG or TIFF input, or no info): quality 95,
# no chroma subsampling. A JPEG input's own quality and subsampling are kept (ImageInfo).
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = "4:4:4"
# ITU-R BT.601 luma weights: how a deblurred RGB image of a grey input is written back grey.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_ROWS_PER_CHUNK = 512  # quantise big images in row blocks to bound temporary memory
# The most pixels (width x height) a photo may have, checked from its header before anything is
# decoded, for every format: 100 megapixels, above the largest camera photos (a 24-megapixel photo
# is 6000 x 4000, a 102-megapixel medium-format one 11648 x 8736 is refused). Deblurring needs
# about 50 bytes a pixel in float32 buffers besides the network, so this bounds what one photo
# costs; `--max_pixels` on the deblur command, the page and evaluate.py sets it. Pillow keeps its
# own, fixed refusal above 2 x 89.5 megapixels for JPEG and PNG.
MAX_PIXELS = 100_000_000
# What a file may hold besides its pixels (EXIF, ICC profile, XMP, a preview): a file that is
# read whole (a 16-bit PNG here, every file of the data pipeline) may be at most twice the bytes
# of its declared pixels plus this.
METADATA_BYTES = 64 << 20
# Deflate restores at most 258 bytes from 2 bits of a stream: a PNG, or a TIFF strip or tile in
# deflate, whose declared pixels need more than this many bytes for each compressed byte cannot
# hold them (it is cut or forged) and is refused before its pixels are allocated.
DEFLATE_RATIO = 1032
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last 12 bytes of every complete PNG
PNG_HEADER_BYTES = 33  # signature, IHDR length and type, the 13 bytes of IHDR, its CRC
ORIENTATION_TAG = 0x0112  # EXIF and TIFF tag 274: how the stored pixels are turned for display
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_TIFF_DEFLATE = (8, 32946)  # TIFF compression codes of deflate (Adobe's and the old one)
# Pillow's chroma subsampling codes (JpegImagePlugin.get_sampling) as the names `save` takes.
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
# The IJG (libjpeg) base quantisation tables, natural order, that quality q scales: JPEG quality
# is estimated by finding the q whose scaled tables are closest to a file's own.
_IJG_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40,
             57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35,
             55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112,
             100, 103, 99)
_IJG_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99,
               99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32


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
    jpeg_quality: int | None = None  # a JPEG input's quality (1-100, estimated from its tables)
    jpeg_subsampling: str | None = None  # a colour JPEG input's "4:4:4", "4:2:2" or "4:2:0"

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


# ------------------------------------------------------------- what files say about themselves
# Parsing errors here are ValueError with a short reason; callers add the file name in their own
# error type (ImageError here, DataError in the data pipeline).

class PngHeader(NamedTuple):
    """The IHDR chunk of a PNG."""

    width: int
    height: int
    bit_depth: int  # bits per sample: 1, 2, 4, 8 or 16
    color_type: int  # 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA

    @property
    def samples(self) -> int:
        """Samples a pixel has in the file (a palette index is one)."""
        return {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[self.color_type]

    @property
    def raw_bytes(self) -> int:
        """Bytes the decompressed pixel data has at least: a filter byte and the packed samples
        of each row (an interlaced PNG has a few filter bytes more)."""
        return self.height * (1 + math.ceil(self.width * self.samples * self.bit_depth / 8))


def png_header(head: bytes) -> PngHeader:
    """The IHDR of a PNG from the file's first PNG_HEADER_BYTES bytes (or more); ValueError when
    they are not a PNG signature followed by a valid IHDR."""
    if not head.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG (no PNG signature)")
    if len(head) < PNG_HEADER_BYTES or head[12:16] != b"IHDR":
        raise ValueError("corrupt PNG (no IHDR header)")
    width, height, bits, color_type = struct.unpack(">IIBB", head[16:26])
    if width == 0 or height == 0 or bits not in (1, 2, 4, 8, 16) or color_type not in (
            0, 2, 3, 4, 6):
        raise ValueError(f"corrupt PNG header ({width}x{height}, {bits} bits, colour type "
                         f"{color_type})")
    return PngHeader(width, height, bits, color_type)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC of type + data."""
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def insert_after_header(png: bytes, chunk: bytes) -> bytes:
    """An encoded PNG with `chunk` (from png_chunk) inserted right after its IHDR chunk."""
    png_header(png)
    return png[:PNG_HEADER_BYTES] + chunk + png[PNG_HEADER_BYTES:]


def iccp_chunk(icc_profile: bytes) -> bytes:
    """The iCCP chunk carrying an ICC profile (name "ICC Profile", zlib-compressed)."""
    return png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))


def png_data_bytes(f, file_size: int, enough: int | None = None) -> int:
    """The compressed pixel data (IDAT chunks) of the PNG open as binary file `f`, in bytes,
    walking the chunk headers only, up to the first `enough` bytes (None: all of them);
    ValueError when a chunk walked runs past the end of the file."""
    position, total = len(PNG_SIGNATURE), 0
    while position + 8 <= file_size and (enough is None or total < enough):
        f.seek(position)
        length, kind = struct.unpack(">I4s", f.read(8))
        if position + 12 + length > file_size:
            raise ValueError(f"the {kind.decode('latin-1')!r} chunk runs past the end of the file")
        if kind == b"IDAT":
            total += length
        elif kind == b"IEND":
            break
        position += 12 + length
    return total


def orientation_value(value) -> int:
    """An orientation tag's value as 1..8; 1 (as stored) when missing or out of range."""
    value = getattr(value, "value", value)  # tifffile's TiffTag holds it in .value
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened PIL image; 1 without EXIF or when its EXIF block is
    malformed (a broken EXIF must not make a readable image unreadable)."""
    try:
        return orientation_value(image.getexif().get(ORIENTATION_TAG))
    except Exception:  # Pillow raises many types on malformed EXIF
        return 1


def tiff_orientation(tags) -> int:
    """The orientation (1..8) of a TIFF page from its tags (tifffile's TiffTags)."""
    return orientation_value(tags.get(ORIENTATION_TAG))


def oriented_size(height: int, width: int, orientation: int) -> tuple[int, int]:
    """(height, width) of an image stored as height x width once turned upright."""
    return (width, height) if orientation >= 5 else (height, width)


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an H x W (x C) array stored with EXIF `orientation` (1..8) upright, as PIL's
    exif_transpose does."""
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    if orientation == 5:
        return np.swapaxes(image, 0, 1)
    if orientation == 6:
        return np.rot90(image, k=-1)
    if orientation == 7:
        return np.swapaxes(image[::-1, ::-1], 0, 1)
    if orientation == 8:
        return np.rot90(image, k=1)
    return image


def ijg_table(base, quality: int) -> np.ndarray:
    """An IJG base quantisation table (64 values) scaled to `quality` (1-100) as libjpeg's
    jpeg_set_quality scales it (baseline: values clipped to 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((np.asarray(base, np.int64) * scale + 50) // 100, 1, 255)


def jpeg_quality(tables: dict) -> int | None:
    """The IJG quality (1-100) whose scaled luma and chroma tables are closest (sum of absolute
    differences) to a JPEG's quantisation tables ({0: luma, 1: chroma, ...}: 64 values each, in
    natural order, as Pillow's `im.quantization` gives them); None without tables."""
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    own = [tables[0]] + ([tables[1]] if 1 in tables and len(tables[1]) == 64 else [])
    scaled = _ijg_tables()[:, :len(own)]  # quality x (luma, chroma) x 64
    errors = np.abs(scaled - np.asarray(own, np.int64)).sum(axis=(1, 2))
    return int(np.argmin(errors)) + 1


@functools.cache
def _ijg_tables() -> np.ndarray:
    """The IJG luma and chroma tables at every quality 1..100: [100, 2, 64] int64."""
    return np.stack([[ijg_table(_IJG_LUMA, q), ijg_table(_IJG_CHROMA, q)] for q in range(1, 101)])


# ------------------------------------------------------------------------------- the limits

def check_pixels(path: str, width: int, height: int, max_pixels: int | None = MAX_PIXELS) -> None:
    """ImageError unless a `width` x `height` image is within `max_pixels` (None: no limit)."""
    if max_pixels is not None and int(width) * int(height) > max_pixels:
        raise ImageError(f"{path}: {width} x {height} pixels ({width * height / 1e6:.1f} megapixels) "
                         f"is more than the limit of {max_pixels / 1e6:g} megapixels "
                         f"(--max_pixels)")


def max_file_bytes(pixel_bytes: int) -> int:
    """The most bytes a file that is read whole may have for `pixel_bytes` bytes of declared
    (uncompressed) pixels: twice those plus METADATA_BYTES."""
    return 2 * pixel_bytes + METADATA_BYTES


def check_file_size(path: str, file_size: int, pixel_bytes: int) -> None:
    """ImageError when a file that is read whole is larger than `max_file_bytes`."""
    most = max_file_bytes(pixel_bytes)
    if file_size > most:
        raise ImageError(f"{path}: {file_size / 1e6:.1f} MB is more than an image of its declared "
                         f"size can need (at most {most / 1e6:.1f} MB with its metadata); not "
                         f"read")


def check_deflate(path: str, compressed: int, pixel_bytes: int, what: str = "image") -> None:
    """ImageError when `compressed` bytes of deflate cannot restore `pixel_bytes` bytes."""
    if pixel_bytes > DEFLATE_RATIO * (compressed + 64):
        raise ImageError(f"{path}: truncated or forged {what}: {compressed} bytes of compressed "
                         f"data cannot hold the {pixel_bytes} bytes its declared size needs")


def check_png(path: str, max_pixels: int | None = MAX_PIXELS) -> PngHeader:
    """The PNG header of `path`, after checking, before anything is decoded: its size against
    `max_pixels`, its chunks (up to the compressed data its pixels need at least) against the
    file's end, its compressed pixel data against what deflate can restore. ImageError naming
    the file otherwise."""
    file_size = os.stat(path).st_size
    with open(path, "rb") as f:
        try:
            header = png_header(f.read(PNG_HEADER_BYTES))
        except ValueError as e:
            raise ImageError(f"{path}: {e}") from None
        check_pixels(path, header.width, header.height, max_pixels)
        try:  # only as far as deflate needs to restore the declared pixels (a few chunks)
            compressed = png_data_bytes(f, file_size, header.raw_bytes // DEFLATE_RATIO + 1)
        except (ValueError, struct.error) as e:
            raise ImageError(f"{path}: truncated or corrupt image ({e})") from None
    check_deflate(path, compressed, header.raw_bytes, "PNG")
    return header


def check_tiff_page(path: str, page, file_size: int, max_pixels: int | None = MAX_PIXELS) -> None:
    """Check a TIFF page (tifffile's TiffPage) before it is decoded: its size against
    `max_pixels`; its strips or tiles: as many as its size needs, each inside the file, no two
    sharing bytes (a forged file makes one small strip stand for thousands), enough bytes for its
    pixels (uncompressed) or not more pixels than deflate can restore from them. ImageError."""
    check_pixels(path, page.imagewidth, page.imagelength, max_pixels)
    offsets, counts = tuple(page.dataoffsets), tuple(page.databytecounts)
    needed = math.prod(page.chunked)
    what = "tiles" if page.is_tiled else "strips"
    if len(offsets) != needed or len(counts) != needed:
        raise ImageError(f"{path}: corrupt TIFF: {len(offsets)} {what} where its size needs "
                         f"{needed}")
    segments = sorted((o, c) for o, c in zip(offsets, counts, strict=True) if c > 0)
    for (offset, count), following in zip(segments, segments[1:] + [(file_size, 0)], strict=True):
        if offset + count > file_size:
            raise ImageError(f"{path}: truncated or corrupt image (TIFF {what} run past the end "
                             f"of the file)")
        if offset + count > following[0]:
            raise ImageError(f"{path}: forged TIFF: {what} share their bytes")
    compressed, compression = sum(c for _, c in segments), int(page.compression)
    if compression == 1 and compressed < page.nbytes:
        raise ImageError(f"{path}: truncated or corrupt image (its {what} hold {compressed} "
                         f"bytes of the {page.nbytes} its pixels need)")
    if compression in _TIFF_DEFLATE:
        check_deflate(path, compressed, page.nbytes, "TIFF")


def pillow_refusal(path: str, error: Exception, max_pixels: int | None = MAX_PIXELS) -> ImageError:
    """Pillow's own refusal of a huge image (Image.DecompressionBombError, above 2 x its
    MAX_IMAGE_PIXELS, raised by Image.open before its size can be checked) as our line."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "its size"
    limit = f"{max_pixels / 1e6:g} megapixels (--max_pixels)" if max_pixels is not None else (
        f"Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS / 1e6:.1f} megapixels")
    return ImageError(f"{path}: {pixels} is more than the limit of {limit}")


# --------------------------------------------------------------------------------------- reading

def file_size_of_regular(path: str) -> int:
    """The size of `path` in bytes; ImageError unless it is a non-empty regular file (a device,
    a pipe or a folder is never opened)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ImageError(f"{path}: empty file")
    return st.st_size


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """Pillow's warnings and tifffile's log records about a damaged file kept off the console
    while one file is read (the error raised, if any, says what is wrong, on one line)."""
    tifffile_log = logging.getLogger("tifffile")
    tifffile_log.addFilter(_drop_record)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tifffile_log.removeFilter(_drop_record)


def _drop_record(record: logging.LogRecord) -> bool:
    return False


def read_image(path: str, max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Read a JPEG/PNG/TIFF as (H x W x 3 float32 RGB in [0, 1], ImageInfo), EXIF-upright.

    An image of more than `max_pixels` pixels (width x height as its header declares them; None:
    no limit) is refused before any pixel is decoded, as is a file whose declared structure does
    not fit its bytes (see the module's docstring). Only regular files are read."""
    try:
        file_size = file_size_of_regular(path)
        with _quiet_decoders():
            with open(path, "rb") as f:
                head = f.read(8)
            if head.startswith(TIFF_SIGNATURES):
                # tifffile first: Pillow cannot even open many 16-bit TIFFs.
                pixels, info = _read_tiff(path, file_size, max_pixels)
            else:
                png = check_png(path, max_pixels) if head.startswith(PNG_SIGNATURE) else None
                with Image.open(path) as im:
                    check_pixels(path, *im.size, max_pixels)
                    pixels, info = _read_pillow_format(path, im, png, file_size)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise pillow_refusal(path, e, max_pixels) from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can identify") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode it") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        # Pillow and tifffile report truncated or corrupt data as OSError/SyntaxError/ValueError.
        if "MAX_TEXT" in str(e):  # Pillow's bound on PNG text and ICC chunks
            raise ImageError(f"{path}: a compressed metadata chunk (ICC profile or text) inflates "
                             f"beyond {PngImagePlugin.MAX_TEXT_CHUNK >> 20} MB (text: "
                             f"{PngImagePlugin.MAX_TEXT_MEMORY >> 20} MB in all); refused") from None
        raise ImageError(f"{path}: truncated or corrupt image ({_one_line(e)})") from None
    return _to_float(pixels, info)


def _read_pillow_format(path: str, im: Image.Image, png: PngHeader | None,
                        file_size: int) -> tuple[np.ndarray, ImageInfo]:
    fmt = im.format
    if fmt not in ("PNG", "JPEG", "TIFF", "MPO"):
        raise ImageError(f"{path}: unsupported image format {fmt} (JPEG, PNG and TIFF "
                         f"are supported)")
    fmt = "JPEG" if fmt == "MPO" else fmt  # MPO: a JPEG with extra frames (many cameras)
    if fmt == "PNG" and png is not None and png.bit_depth == 16:
        # Pillow would decode the pixels to 8 bits; take only its metadata (an eXIf chunk after
        # the image data, which Pillow finds only by decoding, is ignored).
        info = ImageInfo("PNG", 16, icc_profile=im.info.get("icc_profile"))
        if "exif" in im.info:
            info.exif, info.orientation = _exif_bytes(im), exif_orientation(im)
        return _read_png16(path, png, file_size), info
    pixels, info = _read_with_pillow(im, fmt)
    if fmt == "JPEG":
        sampling = JpegImagePlugin.get_sampling(im)
        info.jpeg_subsampling = _SUBSAMPLING.get(sampling)
        info.jpeg_quality = jpeg_quality(getattr(im, "quantization", None) or {})
    return pixels, info


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


def _read_png16(path: str, png: PngHeader, file_size: int) -> np.ndarray:
    """A 16-bit PNG's stored integers, decoded by TensorFlow from the whole file, which is read
    only when it is no larger than its pixels can need (`max_file_bytes`)."""
    check_file_size(path, file_size, png.raw_bytes)
    most = max_file_bytes(png.raw_bytes)
    with open(path, "rb") as f:
        data = f.read(most + 1)
    check_file_size(path, len(data), png.raw_bytes)  # it grew since
    tf = environment.tensorflow()
    try:
        return tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
    except tf.errors.OpError as e:
        raise ImageError(f"{path}: truncated or corrupt PNG ({_one_line(e.message)})") from None


def _read_tiff(path: str, file_size: int, max_pixels: int | None) -> tuple[np.ndarray, ImageInfo]:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        check_tiff_page(path, page, file_size, max_pixels)
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
        with Image.open(path) as im:  # the same first page, checked above
            check_pixels(path, *im.size, max_pixels)
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

    The format comes from the extension. `bit_depth` (8 or 16) defaults to the info's, else 8.
    JPEG is always 8 bit, at the JPEG input's quality and chroma subsampling (`info.jpeg_quality`,
    `info.jpeg_subsampling`), else at quality 95 without subsampling. With `info`: a grey input
    is written grey, its alpha channel is added back unchanged (PNG, TIFF), its ICC profile and
    EXIF (JPEG, 8-bit PNG) are carried over. Atomic: written under a temporary name, then
    renamed; a full disk is a `fileio.DiskFullError` and leaves nothing behind.
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
        tf = environment.tensorflow()
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
        im.save(f, format="JPEG", quality=info.jpeg_quality or JPEG_QUALITY,
                subsampling=info.jpeg_subsampling or JPEG_SUBSAMPLING, **options)
    else:
        im.save(f, format="PNG", **options)
