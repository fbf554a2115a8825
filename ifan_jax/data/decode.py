"""Image files -> float32 HxWx3 RGB in [0, 1]: cheap header checks, and decoding with tf.io.

Reading follows the official loader (OpenCV):
  * 8-bit reading (cv2.IMREAD_COLOR): colour, grey, palette and alpha PNGs become 3-channel RGB
    (alpha dropped), JPEGs are decoded with libjpeg's default (islow DCT, fancy upsampling), and a
    16-bit PNG is reduced to its high byte (libpng's strip_16, which OpenCV asks for); then / 255.
  * 16-bit reading (cv2.IMREAD_UNCHANGED on 16-bit PNGs): / 65535.
  Values are the correctly rounded float32 quotients, exactly as float64 division then a float32
  cast gives them. The EXIF orientation of a JPEG is applied, as cv2.IMREAD_COLOR does.

Truncated and empty files are caught from their header and tail when a data set is listed
(`read_header`), and so is every file that declares more than it can be, with the limits and
checks of `ifan_jax.image_io` (the pixel limit, a PNG's chunks and compressed size, the file size
against what its pixels need, since TensorFlow reads each file whole); damage inside a file
surfaces when it is decoded, as a DataError naming the file.
"""

import dataclasses
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ifan_jax.data.layouts import DataError
from ifan_jax.environment import tensorflow
from ifan_jax.image_io import (
    MAX_PIXELS,
    PNG_IEND,
    PNG_SIGNATURE,
    ImageError,
    apply_orientation,
    check_file_size,
    check_pixels,
    check_png,
    exif_orientation,
    oriented_size,
    pillow_refusal,
    png_header,
)

JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"

FORMAT_CODES = {"png": 0, "jpeg": 1, "other": 2}


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What the header of an image file says: size after EXIF orientation, bits per channel."""

    path: str
    format: str  # "png", "jpeg" or "other" (bmp, gif)
    height: int
    width: int
    bit_depth: int  # 8 or 16 bits per channel
    orientation: int = 1  # EXIF orientation 1..8 (JPEG only; 1 = as stored)

    @property
    def format_code(self) -> int:
        return FORMAT_CODES[self.format]


def read_header(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> ImageHeader:
    """Size and bit depth of an image file from its header, reading only a few bytes.

    Raises DataError naming the file when it is empty, not an image, truncated (a PNG without
    its closing IEND chunk, a JPEG without its end-of-image marker), or declares more than it can
    be: more than `max_pixels` pixels (None: no limit; a GIF's frames count, its decoder reads
    them all), a PNG whose compressed data cannot hold its pixels, a file larger than its pixels
    can need (`image_io.max_file_bytes`: TensorFlow reads each file whole).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise DataError(f"{path}: empty file")
    try:
        if head.startswith(PNG_SIGNATURE):
            try:
                png_header(head)
            except ValueError as e:
                raise DataError(f"{path}: {e}") from None
            if not tail.endswith(PNG_IEND):
                raise DataError(f"{path}: truncated PNG (the file does not end with the IEND "
                                f"chunk)")
            png = check_png(str(path), max_pixels)
            check_file_size(str(path), size, png.raw_bytes)
            return ImageHeader(str(path), "png", png.height, png.width,
                               16 if png.bit_depth == 16 else 8)
        if head.startswith(JPEG_SOI):
            # Entropy-coded JPEG data never contains FF D9 (0xFF bytes are stuffed), so a missing
            # EOI near the end means the file was cut; some writers append a few bytes after it.
            if JPEG_EOI not in tail:
                raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
            height, width, orientation = _pil_size(path, size, max_pixels)
            return ImageHeader(str(path), "jpeg", height, width, 8, orientation)
        height, width, _ = _pil_size(path, size, max_pixels)
        return ImageHeader(str(path), "other", height, width, 8)
    except ImageError as e:
        raise DataError(str(e)) from None


def _pil_size(path: Path, size: int, max_pixels: int | None) -> tuple[int, int, int]:
    """(height, width, EXIF orientation) via PIL, which reads the header only; the size is the
    upright image's. Checked against `max_pixels` (every frame of a GIF) and the file size."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our limit, not Pillow's warning, decides
            with Image.open(path) as im:
                width, height = im.size
                orientation = exif_orientation(im) if im.format == "JPEG" else 1
                frames = im.n_frames if im.format == "GIF" else 1
                bands = len(im.getbands())
    except Image.DecompressionBombError as e:
        raise DataError(str(pillow_refusal(str(path), e, max_pixels))) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    check_pixels(str(path), width, height * frames, max_pixels)
    check_file_size(str(path), size, width * height * frames * max(bands, 3))
    return (*oriented_size(height, width, orientation), orientation)


def check_example(example: dict, keys, min_size: int = 8,
                  max_pixels: int | None = MAX_PIXELS) -> dict[str, ImageHeader]:
    """The headers {key: ImageHeader} of one example of `list_split` (`read_header`).

    Raises DataError naming the file if one is empty, truncated, not an image or beyond the
    limits, if the images of the example differ in size, or if one is smaller than `min_size` on
    a side."""
    hdrs = {key: read_header(example[key], max_pixels) for key in keys}
    first = hdrs[keys[0]]
    for key in keys[1:]:
        h = hdrs[key]
        if (h.height, h.width) != (first.height, first.width):
            raise DataError(
                f"size mismatch in example {example['name']!r}: {h.path} ({key}) is "
                f"{h.height}x{h.width} but {first.path} ({keys[0]}) is "
                f"{first.height}x{first.width}")
    if min(first.height, first.width) < min_size:
        raise DataError(f"{first.path}: {first.height}x{first.width} is smaller than "
                        f"{min_size}x{min_size} (the crop size)")
    return hdrs


def check_examples(examples: list[dict], keys, min_size: int = 8, what: str = "",
                   max_pixels: int | None = MAX_PIXELS) -> list[dict[str, ImageHeader]]:
    """`check_example` for every example of `examples` (from `list_split`): [{key: ImageHeader}];
    the first DataError stops it."""
    files = tqdm(examples, desc=f"checking {what}".strip(), unit="example", leave=False,
                 disable=len(examples) < 200)
    return [check_example(example, keys, min_size, max_pixels) for example in files]


def read_depth(file_bits: int, bit_depth: int | None) -> int:
    """Bits per channel an image is read at: the file's own for None, 8 for 8 (16-bit files reduced
    to their high byte), and for 16 the file's own (an 8-bit file carries no more than 8 bits)."""
    if bit_depth is None:
        return file_bits
    if bit_depth == 8:
        return 8
    if bit_depth == 16:
        return file_bits
    raise DataError(f"bit_depth must be 8, 16 or None, got {bit_depth!r}")


def decode_pixels(path: str, format_code: int, bits: int, orientation: int = 1,
                  expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file to its integer RGB pixels, HxWx3 uint8 (bits=8) or uint16 (bits=16
    on a 16-bit PNG), upright (EXIF orientation applied), eagerly with tf.io.

    `bits` is the depth to read at (see `read_depth`). Raises DataError naming the file when it
    cannot be decoded or its size differs from `expected_hw` (what the header said).
    """
    tf = tensorflow()
    try:
        data = tf.io.read_file(path)
        if format_code == FORMAT_CODES["png"]:
            image = tf.io.decode_png(data, channels=3, dtype=tf.uint16 if bits == 16 else tf.uint8)
        elif format_code == FORMAT_CODES["jpeg"]:
            # islow DCT, as libjpeg's default that OpenCV and PIL use (TF's default is ifast).
            image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        else:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        message = e.message.split("}}")[-1].split("[Op:")[0].strip()
        raise DataError(f"{path}: cannot decode ({message})") from None
    image = apply_orientation(image.numpy(), orientation)
    if expected_hw is not None and tuple(image.shape[:2]) != tuple(expected_hw):
        raise DataError(f"{path}: decoded size {image.shape[0]}x{image.shape[1]} differs from its "
                        f"header ({expected_hw[0]}x{expected_hw[1]})")
    return image


def decode_file(path: str, format_code: int, bits: int, orientation: int = 1,
                expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """`decode_pixels` as float32 HxWx3 in [0, 1]: pixels / 255 (8 bits) or / 65535 (16 bits)."""
    image = decode_pixels(path, format_code, bits, orientation, expected_hw)
    scale = np.float32(65535.0 if image.dtype == np.uint16 else 255.0)
    return image.astype(np.float32) / scale


def decoder_kind(format_code: int, bits: int) -> int:
    """Which decoder reads a file: 0 PNG at 8 bits, 1 PNG at 16 bits, 2 JPEG, 3 other."""
    if format_code == FORMAT_CODES["png"]:
        return 1 if bits == 16 else 0
    return 2 if format_code == FORMAT_CODES["jpeg"] else 3


def decode_graph(path, format_code, bits, orientation, height, width,
                 kinds: frozenset | None = None, oriented: bool = True):
    """`decode_file` as TensorFlow ops for tf.data: scalar tensors (from the header table) in,
    float32 [H, W, 3] in [0, 1] out. Pure graph ops (no Python callback, which would deadlock
    interpreter exit while a prefetching iterator is alive). A decoded size that differs from the
    header fails with the path in the message; a file that cannot be decoded fails with
    TensorFlow's error, which `pipeline.numpy_iterator` and the training iterator turn into a
    DataError naming the file.
    """
    tf = tensorflow()
    data = tf.io.read_file(path)

    def png8():
        return tf.cast(tf.io.decode_png(data, channels=3, dtype=tf.uint8), tf.float32) / 255.0

    def png16():
        return tf.cast(tf.io.decode_png(data, channels=3, dtype=tf.uint16), tf.float32) / 65535.0

    def jpeg():
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        return tf.cast(image, tf.float32) / 255.0

    def other():
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.cast(image, tf.float32) / 255.0

    decoders = [png8, png16, jpeg, other]
    kinds = sorted(kinds) if kinds is not None else [0, 1, 2, 3]
    if len(kinds) == 1:
        image = decoders[kinds[0]]()
    else:
        is_png = tf.equal(format_code, FORMAT_CODES["png"])
        kind = tf.where(is_png, tf.where(tf.equal(bits, 16), 1, 0),
                        tf.where(tf.equal(format_code, FORMAT_CODES["jpeg"]), 2, 3))
        image = tf.switch_case(tf.cast(kind, tf.int32), {k: decoders[k] for k in kinds})
    image.set_shape([None, None, 3])
    if oriented:
        image = orient_graph(image, orientation)
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], tf.cast(height, tf.int32)),
                          tf.equal(shape[1], tf.cast(width, tf.int32)))
    check = tf.debugging.Assert(same, [path, "decoded size differs from its header"])
    with tf.control_dependencies([check]):
        return tf.identity(image)


def orient_graph(image, orientation):
    """`apply_orientation` as TensorFlow ops (orientation: scalar int tensor 1..8)."""
    tf = tensorflow()
    branches = [
        lambda: image,
        lambda: tf.reverse(image, [1]),
        lambda: tf.reverse(image, [0, 1]),
        lambda: tf.reverse(image, [0]),
        lambda: tf.transpose(image, [1, 0, 2]),
        lambda: tf.image.rot90(image, k=3),
        lambda: tf.transpose(tf.reverse(image, [0, 1]), [1, 0, 2]),
        lambda: tf.image.rot90(image, k=1),
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32) - 1, 0, 7)
    out = tf.switch_case(index, branches)
    out.set_shape([None, None, 3])
    return out


def find_broken(headers) -> DataError | None:
    """Decode each file of `headers` (ImageHeader, bits to read) eagerly; the first DataError."""
    for header, bits in headers:
        try:
            decode_pixels(header.path, header.format_code, bits, header.orientation,
                          (header.height, header.width))
        except DataError as e:
            return e
    return None
