"""Hostile photos and damaged data folders, built here (small files), through the real commands.

Each hostile photo is refused from what it declares, before its pixels are allocated: one line
naming the file and the reason, nothing written, the other inputs of the run still deblurred, and
the child process's peak memory (its ru_maxrss, through tests/child.py) under 1.5 GB. Photos that are odd but
within bounds (a small first TIFF page before a big one, an MPO of many frames, EXIF loops) are
read within bounds. A damaged DPDD folder gives one line per pair that cannot be scored; the
others are scored against their own targets (paired by name, never by position)."""

import csv
import functools
import io
import json
import math
import os
import stat
import struct
import sys
import zlib

import numpy as np
import pytest
import tifffile
from child import run as run_child
from PIL import Image, JpegImagePlugin
from repo import ROOT

from ifan_jax import image_io
from ifan_jax.data import DataError
from ifan_jax.data.decode import read_header
from ifan_jax.data.testing import damage_pixels, encode_png
from ifan_jax.evaluation.job import EvaluationError, evaluate
from ifan_jax.inference import Deblurrer

MEMORY_BOUND_MB = 1500
RNG = np.random.default_rng(0)

# --------------------------------------------------------------------------- building the files

_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}  # SHORT, LONG, LONG8 (BigTIFF)


def tiff_file(entries, data: bytes = b"", big: bool = False, counts: dict | None = None) -> bytes:
    """A little-endian TIFF (BigTIFF with `big`) of one page: `entries` are (tag, type, values);
    `data` follows the header (at offset 8, or 16 for BigTIFF); `counts` {tag: count} makes a
    tag declare another count than it holds (a lie)."""
    header = 16 if big else 8
    out = bytearray(header) + data
    inline = 8 if big else 4
    records = []
    for tag, kind, values in sorted(entries):
        code, _ = _TIFF_TYPES[kind]
        raw = struct.pack(f"<{len(values)}{code}", *values)
        if len(raw) <= inline:
            field = raw.ljust(inline, b"\0")
        else:
            field = struct.pack("<Q" if big else "<I", len(out))
            out += raw + b"\0" * (len(raw) % 2)
        records.append(struct.pack("<HHQ" if big else "<HHI", tag, kind,
                                   (counts or {}).get(tag, len(values))) + field)
    ifd = len(out)
    out += struct.pack("<Q" if big else "<H", len(records)) + b"".join(records)
    out += bytes(8 if big else 4)  # no next page
    out[:header] = (b"II+\0" + struct.pack("<HHQ", 8, 0, ifd)) if big else (
        b"II*\0" + struct.pack("<I", ifd))
    return bytes(out)


def rgb_page(width, height, compression=1, extra=()):
    """The tags of an 8-bit RGB page (contiguous samples) plus `extra`."""
    return [(256, 4, [width]), (257, 4, [height]), (258, 3, [8, 8, 8]), (259, 3, [compression]),
            (262, 3, [2]), (277, 3, [3]), (284, 3, [1]), *extra]


def tiled_tiff(size=16384, tile=512, big=False) -> bytes:
    """A deflate TIFF of size x size pixels in separate tiles of zeros (0.8 MB for 16384)."""
    blob = zlib.compress(bytes(tile * tile * 3), 9)
    n = (size // tile) ** 2
    start = 16 if big else 8
    offsets = [start + i * len(blob) for i in range(n)]
    kind = 16 if big else 4
    return tiff_file(rgb_page(size, size, 8, [(322, 4, [tile]), (323, 4, [tile]),
                                              (324, kind, offsets), (325, kind, [len(blob)] * n)]),
                     blob * n, big)


def photo(h=64, w=96, seed=0):
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)], -1)
    return np.rint(image * 255).astype(np.uint8)


def jpeg(pixels, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def jpeg_declaring(width, height) -> bytes:
    """A small JPEG whose frame header (SOF0) declares width x height."""
    data = bytearray(jpeg(photo(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_with_chunk(kind: bytes, payload: bytes, bits=8) -> bytes:
    png = encode_png(photo(64, 96).astype(np.uint16) * 257 if bits == 16 else photo(64, 96))
    return image_io.insert_after_header(png, image_io.png_chunk(kind, payload))


@functools.cache
def deflate_bomb(size=1 << 30) -> bytes:
    """`size` zero bytes compressed (1 GiB: about 1 MB)."""
    compressor, block = zlib.compressobj(9), bytes(1 << 24)
    return b"".join(compressor.compress(block) for _ in range(size >> 24)) + compressor.flush()


def png_declaring(width, height, bits=8, color_type=2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bits, color_type, 0, 0, 0)
    return (image_io.PNG_SIGNATURE + image_io.png_chunk(b"IHDR", ihdr)
            + image_io.png_chunk(b"IDAT", zlib.compress(bytes(1000)))
            + image_io.png_chunk(b"IEND", b""))


def gif(width, height, frames) -> bytes:
    """A GIF whose screen is width x height, of `frames` frames of one pixel each (a decoder
    that decodes every frame makes each a whole screen)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    # An image descriptor of 1 x 1 at (0, 0), LZW minimum code size 2, the codes clear, 0, end.
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame * frames + b"\x3b"


def exif_block(entries, loop=False) -> bytes:
    """An EXIF block (Exif header + little-endian TIFF IFD) of (tag, type, count, value) entries;
    `loop`: the IFD names itself as the next one."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 8 if loop else 0)


def lzw_tiff(width=None, height=None, strip_bytes=None) -> bytes:
    """An 8-bit LZW TIFF written by Pillow (tifffile cannot decode LZW without imagecodecs, so
    image_io falls back to Pillow), with its size or strip byte count then overwritten."""
    buffer = io.BytesIO()
    Image.fromarray(photo(64, 96)).save(buffer, "TIFF", compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages.first.tags
        for code, value in ((256, width), (257, height), (279, strip_bytes)):
            if value is not None:
                tag = tags[code]
                code_format = "<H" if tag.dtype == 3 else "<I"
                data[tag.valueoffset:tag.valueoffset + struct.calcsize(code_format)] = struct.pack(
                    code_format, value)
    return bytes(data)


def sparse_png16(path, size=4 << 30):
    """A 16-bit 64 x 96 PNG followed by zeros up to `size` bytes, ending as a PNG ends (an IEND
    chunk); a sparse file: no disk used."""
    with open(path, "wb") as f:
        f.write(encode_png(photo(64, 96).astype(np.uint16) * 257))
        f.seek(size - len(image_io.PNG_IEND))
        f.write(image_io.PNG_IEND)


# name -> (bytes, or a function writing the file at a path; what the one line says)
HOSTILE = {
    "tiled_16k.tif": (lambda: tiled_tiff(), "16384 x 16384 pixels (268.4 megapixels) is more than"),
    "bigtiff_16k.tif": (lambda: tiled_tiff(big=True), "16384 x 16384 pixels"),
    "lying_strip.tif": (lambda: tiff_file(rgb_page(9000, 9000, 1, [(273, 4, [8]), (278, 4, [9000]),
                                                                   (279, 4, [2**31])]), bytes(1000)),
                        "strips run past the end of the file"),
    "short_strip.tif": (lambda: tiff_file(rgb_page(9000, 9000, 1, [(273, 4, [8]), (278, 4, [9000]),
                                                                   (279, 4, [1000])]), bytes(1000)),
                        "hold 1000 bytes of the 243000000 its pixels need"),
    "shared_strips.tif": (lambda: _shared_strips(), "forged TIFF: strips share their bytes"),
    "strip_count.tif": (lambda: tiff_file(rgb_page(64, 64, 1, [(273, 4, [8]), (278, 4, [64]),
                                                               (279, 4, [64 * 64 * 3])]),
                                          bytes(64 * 64 * 3), counts={273: 2**30, 279: 2**30}),
                        "corrupt TIFF: 0 strips where its size needs 1"),
    "deflate_strip.tif": (lambda: tiff_file(rgb_page(9000, 9000, 8, [(273, 4, [8]), (278, 4, [9000]),
                                                                     (279, 4, [1000])]),
                                            RNG.bytes(1000)),
                          "1000 bytes of compressed data cannot hold the 243000000 bytes"),
    "lzw_60000.tif": (lambda: lzw_tiff(60000, 60000), "60000 x 60000 pixels"),
    "lzw_lying_strip.tif": (lambda: lzw_tiff(strip_bytes=2**31), "strips run past the end"),
    "iccp_bomb.png": (lambda: png_with_chunk(b"iCCP", b"icc\0\0" + deflate_bomb()),
                      "a compressed metadata chunk (ICC profile or text) inflates beyond 1 MB"),
    "ztxt_bomb.png": (lambda: png_with_chunk(b"zTXt", b"comment\0\0" + deflate_bomb()),
                      "a compressed metadata chunk (ICC profile or text) inflates beyond 1 MB"),
    "iccp_bomb16.png": (lambda: png_with_chunk(b"iCCP", b"icc\0\0" + deflate_bomb(), bits=16),
                        "inflates beyond 1 MB"),
    "exif_length.png": (lambda: _png_chunk_declaring(b"eXIf", 2**31 - 1),
                        "the 'eXIf' chunk runs past the end of the file"),
    "ratio_9000.png": (lambda: png_declaring(9000, 9000),
                       "truncated or forged PNG: 17 bytes of compressed data cannot hold"),
    "ratio16_9000.png": (lambda: png_declaring(9000, 9000, 16, 6), "truncated or forged PNG"),
    "sparse16_4gb.png": (sparse_png16, "4295.0 MB is more than an image of its declared size can "
                                       "need (at most 67.2 MB with its metadata); not read"),
    "jpeg_65535.jpg": (lambda: jpeg_declaring(65535, 65535),
                       "4294.8 megapixels is more than the limit of 100 megapixels"),
    "jpeg_12000x9000.jpg": (lambda: jpeg_declaring(12000, 9000),
                            "12000 x 9000 pixels (108.0 megapixels) is more than the limit"),
    "zero.png": (lambda path: os.symlink("/dev/zero", path), "not a regular file"),
    "pipe.jpg": (lambda path: os.mkfifo(path), "not a regular file"),
}


def _shared_strips() -> bytes:
    """81 megapixels (within the limit) whose 9000 deflate strips all point at one 26 kB blob:
    1.33 GB to decode from a 72 kB file before the check."""
    blob = zlib.compress(bytes(1 + 9000 * 3))
    return tiff_file(rgb_page(9000, 9000, 8, [(273, 4, [8] * 9000), (278, 4, [1]),
                                              (279, 4, [len(blob)] * 9000)]), blob)


def _png_chunk_declaring(kind: bytes, length: int) -> bytes:
    png = encode_png(photo(64, 96))
    return png[:image_io.PNG_HEADER_BYTES] + struct.pack(">I", length) + kind + bytes(100) + png[
        image_io.PNG_HEADER_BYTES:]


def _multipage_tiff() -> bytes:
    """A 64 x 96 first page, then a 4000 x 4000 one (only the first is read)."""
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tif:
        tif.write(photo(64, 96), photometric="rgb")
        tif.write(np.zeros((4000, 4000, 3), np.uint8), photometric="rgb", compression="zlib")
    return buffer.getvalue()


def _mpo(frames=50) -> bytes:
    buffer = io.BytesIO()
    images = [Image.fromarray(photo(64, 96, seed=k)) for k in range(frames)]
    images[0].save(buffer, "MPO", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def _exif_jpeg(entries, loop=False) -> bytes:
    """The photo stored 96 x 64 with an EXIF block of `entries` (orientation 6: upright 64 x 96)."""
    return jpeg(np.ascontiguousarray(np.rot90(photo(64, 96), k=1)), quality=90,
                exif=exif_block(entries, loop))


# Odd but within bounds: read, deblurred and written (upright 64 x 96 each: one compilation).
WITHIN = {
    "good.jpg": lambda: jpeg(photo(64, 96), quality=85, subsampling="4:2:0"),
    "multipage.tif": _multipage_tiff,
    "frames.jpg": _mpo,  # an MPO of 50 frames
    "exif_loop.jpg": lambda: _exif_jpeg([(0x0112, 3, 1, 6), (0x8769, 4, 1, 8)], loop=True),
    "exif_count.jpg": lambda: _exif_jpeg([(0x0112, 3, 1, 6), (0x010E, 2, 2**31, 26)]),
    "lzw.tif": lzw_tiff,  # the Pillow fallback, within bounds
}


def build(folder, table):
    paths = {}
    for name, entry in table.items():
        make = entry[0] if isinstance(entry, tuple) else entry
        path = folder / name
        if make.__code__.co_argcount > len(make.__defaults__ or ()):  # it writes at a path
            make(path)
        else:
            path.write_bytes(make())
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return build(folder, HOSTILE)


def stderr_lines(stderr: str) -> list[str]:
    """What a person sees on stderr: lines, with progress bar redraws (\\r) split apart."""
    return [part.strip() for part in stderr.replace("\r", "\n").splitlines() if part.strip()]


_READ = ("import sys\n"
         "from ifan_jax import image_io\n"
         "try:\n"
         "    image_io.read_image(sys.argv[1])\n"
         "except image_io.ImageError as e:\n"
         "    sys.exit(f'read: {e}')\n")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_hostile_photo_is_refused_in_one_line_within_the_memory_bound(hostile, name):
    """The reader every tool uses (image_io.read_image), alone in a child: its own peak."""
    path = hostile[name]
    status, stdout, stderr, peak = run_child([sys.executable, "-c", _READ, str(path)], timeout=120)
    reason = HOSTILE[name][1]
    assert status == 1 and stdout == "", stderr
    assert stderr.startswith(f"read: {path}: ") and reason in stderr, stderr
    assert stderr.count("\n") == 1, stderr  # one line: no warnings, no log records
    assert peak < MEMORY_BOUND_MB, peak
    print(f"| {name} | {os.lstat(path).st_size} | {stderr.strip()[len(f'read: {path}: '):]} | "
          f"{peak:.0f} MB |")


@pytest.mark.slow
def test_the_deblur_command_refuses_each_hostile_photo_and_deblurs_the_others(
        hostile, tiny_official_checkpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    build(photos, WITHIN)
    regular = [p for p in hostile.values() if stat.S_ISREG(os.lstat(p).st_mode)]
    special = [p for p in hostile.values() if p not in regular]  # a folder listing skips them
    for path in regular:
        os.link(path, photos / path.name)
    out = tmp_path / "sharp"
    env = {**os.environ, "IFAN_JAX_CACHE": str(tmp_path / "cache")}
    for key in ("TF_CPP_MIN_LOG_LEVEL", "JAX_PLATFORMS"):
        env.pop(key, None)
    status, stdout, stderr, peak = run_child(
        [sys.executable, "-m", "ifan_jax.inference", f"--ckpt={tiny_official_checkpoint}",
         f"--output_dir={out}", str(photos), *map(str, special)], env=env, timeout=900)
    assert status == 1, stderr[-3000:]
    assert stdout == "" and "Traceback" not in stderr
    lines = stderr_lines(stderr)
    for name, (_, reason) in HOSTILE.items():
        path = photos / name if hostile[name] in regular else hostile[name]
        hits = [line for line in lines if line.startswith(f"deblur: {path}: ")]
        assert len(hits) == 1 and reason in hits[0], (name, hits)
    for name in WITHIN:  # deblurred: its readout line
        hits = [line for line in lines if line.startswith(f"deblur: {photos / name}: ")]
        assert len(hits) == 1 and "focus" in hits[0], hits
    assert f"deblur: {len(WITHIN)} written to {out}/, {len(HOSTILE)} failed" in lines
    others = [line for line in lines if not line.startswith("deblur")
              and not line.endswith(("image/s]", "tile/s]")) and not line.startswith("\x1b[A")]
    assert others == []  # no warnings, log records or tracebacks
    assert sorted(os.listdir(out)) == sorted(WITHIN)  # nothing else, no temporary file
    assert peak < MEMORY_BOUND_MB, peak
    print(f"deblur command, {len(HOSTILE)} hostile and {len(WITHIN)} odd photos: peak {peak:.0f} MB")

    for name in WITHIN:
        image, info = image_io.read_image(str(out / name))
        assert image.shape == (64, 96, 3), name
    with Image.open(out / "good.jpg") as im:  # the input's 4:2:0 at quality 85
        assert JpegImagePlugin.get_sampling(im) == 2
        assert abs(image_io.jpeg_quality(im.quantization) - 85) <= 2


def test_data_pipeline_headers_refuse_the_same_files(tmp_path):
    """read_header (evaluation, training, TFDS): the same limits, as a DataError naming the file;
    a GIF's frames count (its decoder decodes them all)."""
    cases = {
        "ratio.png": (png_declaring(9000, 9000), "cannot hold"),
        "huge.png": (png_declaring(65535, 65535), "is more than the limit of 100 megapixels"),
        "huge.jpg": (jpeg_declaring(65535, 65535), "4294.8 megapixels is more than the limit"),
        "big.jpg": (jpeg_declaring(12000, 9000), "is more than the limit of 100 megapixels"),
        "exif_length.png": (_png_chunk_declaring(b"eXIf", 2**31 - 1), "runs past the end"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError) as e:
            read_header(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: ") and reason in str(e.value), name
    sparse_png16(tmp_path / "sparse.png")
    with pytest.raises(DataError, match=r"sparse\.png: 4295\.0 MB is more than"):
        read_header(tmp_path / "sparse.png")
    (tmp_path / "frames.gif").write_bytes(gif(2000, 1000, 60))  # 120 megapixels in all
    with Image.open(tmp_path / "frames.gif") as im:
        assert im.size == (2000, 1000) and im.n_frames == 60
    with pytest.raises(DataError, match=r"frames\.gif: 2000 x 60000 pixels"):
        read_header(tmp_path / "frames.gif")
    assert read_header(tmp_path / "frames.gif", max_pixels=None).height == 1000


# ------------------------------------------------------------------ a damaged evaluation folder

FOLDERS = ("test_c/source", "test_l/source", "test_r/source", "test_c/target")
GOOD_PAIRS = ("a", "c", "e", "g")  # scored; b, d, f, h, ... are damaged


def _pair(seed):
    sharp = photo(48, 64, seed)
    blurred = np.clip(sharp.astype(np.int16) + RNG.integers(-40, 40, sharp.shape), 0, 255)
    return blurred.astype(np.uint8), sharp


def damaged_dpdd(root):
    """A DPDD test split: good pairs a, c, e, g (each a distinct scene) and one damage each for
    the others; returns {name: (blurred, sharp)} of the good ones and {name: what its line says}."""
    base = root / "DPDD"
    for folder in FOLDERS:
        (base / folder).mkdir(parents=True)
    good, names = {}, ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
    for seed, name in enumerate(names):
        blurred, sharp = _pair(seed)
        for folder, pixels in zip(FOLDERS, (blurred, blurred, blurred, sharp), strict=True):
            (base / folder / f"{name}.png").write_bytes(encode_png(pixels))
        if name in GOOD_PAIRS:
            good[name] = (blurred, sharp)
    c, l_view, gt = base / "test_c/source", base / "test_l/source", base / "test_c/target"
    (gt / "b.png").unlink()  # a missing target: positional pairing would shift c..k
    (gt / "d.png").write_bytes(encode_png(photo(40, 64)))  # a target of another size
    (l_view / "f.png").write_bytes(encode_png(photo(48, 56)))  # a dual-pixel view of another size
    (c / "h.png").write_bytes((c / "h.png").read_bytes()[:500])  # truncated
    (c / "i.png").write_text("not an image\n")
    (gt / "j.png").write_bytes(damage_pixels((gt / "j.png").read_bytes()))  # corrupt inside
    (c / "k.png").write_bytes(png_declaring(65535, 65535))  # a pixel bomb
    (gt / "z.png").write_bytes(encode_png(photo(48, 64)))  # a target without a blurred image
    reasons = {
        "b": f"unpaired image: in {c} but not in {gt}",
        "d": f"size mismatch in example 'd': {gt / 'd.png'} (gt) is 40x64",
        "f": f"size mismatch in example 'f': {l_view / 'f.png'} (l) is 48x56",
        "h": f"{c / 'h.png'}: truncated PNG",
        "i": f"{c / 'i.png'}: not a readable image",
        "j": f"{gt / 'j.png'}: cannot decode",
        "k": f"{c / 'k.png'}: 65535 x 65535 pixels (4294.8 megapixels) is more than the limit",
        "z": f"unpaired image: in {gt} but not in {c}",
    }
    return good, reasons


@pytest.mark.slow
def test_evaluate_on_a_damaged_folder_scores_the_good_pairs_and_names_each_bad_one(
        tiny_official_checkpoint, tmp_path):
    good, reasons = damaged_dpdd(tmp_path / "datasets")
    out = tmp_path / "results"
    env = {**os.environ, "IFAN_JAX_CACHE": str(tmp_path / "cache")}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    status, stdout, stderr, peak = run_child(
        [sys.executable, os.path.join(ROOT, "evaluate.py"), f"--ckpt={tiny_official_checkpoint}",
         f"--data_dir={tmp_path / 'datasets'}", "--dataset=dpdd", f"--output_dir={out}"],
        env=env, timeout=900, cwd=str(tmp_path))
    assert status == 1, stderr[-3000:]
    lines = stderr_lines(stderr)
    for name, reason in reasons.items():
        hits = [line for line in lines if line.startswith(f"evaluate.py: {name}: ")]
        assert len(hits) == 1 and reason in hits[0], (name, hits, lines)
    others = [line for line in lines if not line.startswith(("evaluate.py: ", "dpdd test"))]
    assert others == [], others  # no warnings, TensorFlow log records or tracebacks
    assert f"{len(reasons)} pairs left out" in stdout
    assert peak < MEMORY_BOUND_MB, peak
    print(f"evaluate.py, {len(reasons)} damaged pairs and {len(good)} good ones: peak {peak:.0f} MB")

    with open(out / "scores.csv") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == sorted(good)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == len(good) and sorted(summary["failed"]) == sorted(reasons)
    # Each good pair is scored against its own target: the PSNR of the network's output on the
    # blurred image against the sharp one of the same name (a pairing shifted by the missing
    # target of b would give other numbers).
    deblurrer = Deblurrer.from_checkpoint(tiny_official_checkpoint)
    for name, (blurred, sharp) in good.items():
        output = deblurrer.deblur_whole(blurred.astype(np.float32) / 255)
        mse = np.mean((output.astype(np.float64) - sharp / 255) ** 2)
        assert float(rows[name]["psnr"]) == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)


@pytest.mark.slow
def test_evaluate_with_nothing_to_score_stops_before_writing(tiny_official_checkpoint, tmp_path):
    root = tmp_path / "datasets" / "DPDD"
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True)
    for name in ("a", "b"):
        for folder in FOLDERS[:3]:
            (root / folder / f"{name}.png").write_bytes(encode_png(photo(48, 64)))
        (root / "test_c/target" / f"{name}.png").write_bytes(encode_png(photo(40, 64)))
    said = []
    with pytest.raises(EvaluationError, match="nothing to score in dpdd test: each of its 2 pairs"):
        evaluate(tiny_official_checkpoint, str(tmp_path / "datasets"), "dpdd",
                 str(tmp_path / "results"), progress=False, bad_pair=lambda *a: said.append(a))
    assert [name for name, _ in said] == ["a", "b"]
    assert all("size mismatch" in reason for _, reason in said)
    assert not (tmp_path / "results").exists()
