"""What image files say about themselves, read in one place for the data pipeline and `image_io`:
the PNG header and chunks, and the EXIF/TIFF orientation tag (and turning pixels upright by it).

    header = png_header(first_bytes)            # PngHeader(width, height, bit_depth, color_type)
    orientation = exif_orientation(pil_image)   # 1..8, 1 when absent or malformed
    upright = apply_orientation(pixels, orientation)

Parsing errors are ValueError with a short reason; callers add the file name in their own error
type (DataError in the data pipeline, ImageError in image_io).
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last 12 bytes of every complete PNG
PNG_HEADER_BYTES = 33  # signature, IHDR length and type, the 13 bytes of IHDR, its CRC
ORIENTATION_TAG = 0x0112  # EXIF and TIFF tag 274: how the stored pixels are turned for display


class PngHeader(NamedTuple):
    """The IHDR chunk of a PNG."""

    width: int
    height: int
    bit_depth: int  # bits per sample: 1, 2, 4, 8 or 16
    color_type: int  # 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA


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
