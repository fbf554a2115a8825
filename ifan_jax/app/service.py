"""What one request of the web page does, without the web page: read, deblur, write, preview.

    service = Service(deblurrer, workdir)
    result = service.process("upload/photo.tif", progress=lambda done, total: ...)
    result.output   # photo_deblurred.tif: full resolution, the input's format and bit depth

`Service.process` reads an uploaded photo with `ifan_jax.image_io` (JPEG/PNG/TIFF, 8 or 16 bit,
grey, alpha, EXIF orientation), deblurs it at full resolution with the `Deblurrer` (tiles as the
deblur tool chooses them, `progress(done, total)` after each), and writes into a fresh folder under
`workdir`: the deblurred photo in the input's form (`image_io.write_image`: same format and bit
depth, JPEG at quality 95), the colour-mapped defocus map at full resolution (PNG), and 8-bit PNG
previews for the page (the whole photo scaled to at most `preview` pixels a side, and a 1:1 crop
of `crop` pixels centred where the defocus map says the photo is most out of focus; a model
without a disparity map estimator has no map, and its crop is the photo's centre). Only the
newest `keep` request folders are kept. A photo that cannot be read raises `UploadError` with a
one-line message naming the uploaded file by its own name.

Nothing here imports gradio; `ifan_jax.app.page` puts it on a web page.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from ifan_jax import image_io
from ifan_jax.inference import defocus as defocus_maps
from ifan_jax.inference import tiling
from ifan_jax.inference.cli import MIN_SIZE

PREVIEW = 1280  # longest side of the whole-photo previews on the page
CROP = 256  # side of the 1:1 crop
KEEP = 16  # request folders kept on disk (the page's files are copied into gradio's cache)


class UploadError(ValueError):
    """An upload that cannot be deblurred; the message names the file and says why."""


@dataclasses.dataclass
class Result:
    """Files one request produced (paths), and a line describing what was done."""

    output: str  # the deblurred photo: full resolution, the input's format and bit depth
    defocus: str | None  # the colour-mapped defocus map, full resolution, 8-bit PNG (None: the
    # model has no disparity map estimator)
    before: str  # preview of the input (8-bit PNG, at most PREVIEW pixels a side)
    after: str  # preview of the output, same size
    crop_before: str  # 1:1 crop of the input around `crop_centre`
    crop_after: str  # the same crop of the output
    defocus_preview: str | None  # the defocus map at the previews' size
    crop_centre: tuple[int, int]  # (row, column) of the crop's centre in the photo
    summary: str


class Service:
    """Deblurs uploaded files one at a time into request folders under `workdir`."""

    def __init__(self, deblurrer, workdir: str, tile: int | None = None,
                 overlap: int = tiling.DEFAULT_OVERLAP, keep: int = KEEP, preview: int = PREVIEW,
                 crop: int = CROP):
        self.deblurrer = deblurrer
        self.workdir = workdir
        self.tile, self.overlap = tile, overlap
        self.keep, self.preview, self.crop = keep, preview, crop
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="deblur")
        os.makedirs(workdir, exist_ok=True)

    def process(self, path: str, progress: Callable[[int, int], None] | None = None) -> Result:
        """Deblur the photo at `path`; `progress(done, total)` counts network runs (tiles).

        Runs on the service's one worker thread (callers wait their turn), in the caller's context
        (so `progress` may rely on context variables, as Gradio's does). One thread keeps one
        request on the accelerator and lets the allocator reuse the same memory for every request
        (a new thread per request would grow the process by a malloc arena each)."""
        task = contextvars.copy_context().run
        return self._worker.submit(task, self._process, path, progress).result()

    def _process(self, path: str, progress: Callable[[int, int], None] | None) -> Result:
        start = time.perf_counter()
        name = os.path.basename(path)
        image, info = read_upload(path)
        h, w = image.shape[:2]
        schedule = self.deblurrer.schedule(h, w, self.tile, self.overlap)
        total = schedule.num_tiles
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done = min(done + n, total)
            if progress is not None:
                progress(done, total)

        if progress is not None:
            progress(0, total)
        with_map = self.deblurrer.has_defocus_map
        out = self.deblurrer.run(image, schedule, progress=advance, return_defocus=with_map)
        sharp, defocus = out if with_map else (out, None)
        if done < total:  # the whole photo at once reports no tiles
            advance(total - done)

        folder = self._request_folder()
        stem, ext = os.path.splitext(name)
        if image_io.FORMATS.get(ext.lower()) != info.format:  # e.g. a PNG named .jpg
            ext = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}[info.format]
        output = os.path.join(folder, f"{stem}_deblurred{ext}")
        depth = 8 if image_io.format_for_path(output) == "JPEG" else info.bit_depth
        image_io.write_image(output, sharp, info, bit_depth=depth)
        centre = (h // 2, w // 2) if defocus is None else most_defocused(defocus, self.crop)
        rows, cols = crop_window(h, w, centre, self.crop)
        result = Result(
            output=output, defocus=None, defocus_preview=None,
            before=self._save_preview(folder, "before", image),
            after=self._save_preview(folder, "after", sharp),
            crop_before=_save_png(os.path.join(folder, "crop_before.png"),
                                  _to_uint8(image[rows, cols])),
            crop_after=_save_png(os.path.join(folder, "crop_after.png"),
                                 _to_uint8(sharp[rows, cols])),
            crop_centre=centre, summary="")
        if defocus is not None:
            colour = defocus_maps.colorize(defocus)
            result.defocus = _save_png(defocus_maps.output_paths(os.path.join(folder, name))[0],
                                       colour)
            result.defocus_preview = self._save_preview(folder, "defocus", colour)
        runs = "the whole photo at once" if total == 1 else f"{total} tiles"
        result.summary = (f"**{name}**: {w} x {h} pixels, {info.bit_depth}-bit {info.format}; "
                          f"deblurred as {runs} in {time.perf_counter() - start:.1f} s. "
                          f"The download is full resolution, {depth}-bit {info.format}.")
        return result

    def _request_folder(self) -> str:
        """A new folder for one request's files; the oldest beyond `keep` are deleted."""
        folders = sorted((e for e in os.scandir(self.workdir) if e.is_dir()),
                         key=lambda e: e.stat().st_mtime)
        for old in folders[:max(0, len(folders) - self.keep + 1)]:
            shutil.rmtree(old.path, ignore_errors=True)
        return tempfile.mkdtemp(prefix="request_", dir=self.workdir)

    def _save_preview(self, folder: str, name: str, image: np.ndarray) -> str:
        """An 8-bit PNG of `image` scaled to at most `preview` pixels on its longer side."""
        pil = Image.fromarray(_to_uint8(image))
        scale = self.preview / max(pil.size)
        if scale < 1:
            size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
            pil = pil.resize(size, Image.Resampling.LANCZOS)
        return _save_png(os.path.join(folder, f"{name}.png"), pil)


def read_upload(path: str) -> tuple[np.ndarray, image_io.ImageInfo]:
    """`image_io.read_image`, with errors as `UploadError` naming the file by its base name."""
    name = os.path.basename(path)
    try:
        image, info = image_io.read_image(path)
    except image_io.ImageError as e:
        raise UploadError(str(e).replace(path, name)) from None
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise UploadError(f"{name}: image too small ({w} x {h} pixels; at least {MIN_SIZE} x "
                          f"{MIN_SIZE} needed)")
    return image, info


def most_defocused(defocus: np.ndarray, size: int) -> tuple[int, int]:
    """(row, column) of the centre of the size x size window with the largest mean |defocus|."""
    h, w = defocus.shape
    # Average over windows on a coarse grid: a 4096-pixel-wide map costs as much as a small one.
    step = max(1, max(h, w) // 512)
    coarse = np.abs(np.asarray(defocus[::step, ::step], np.float32))
    window = (max(1, min(size, h) // step), max(1, min(size, w) // step))
    # Zero outside the photo: windows reaching past its edge count the missing part as sharp.
    mean = ndimage.uniform_filter(coarse, size=window, mode="constant")
    row, col = np.unravel_index(int(np.argmax(mean)), mean.shape)
    return min(row * step, h - 1), min(col * step, w - 1)


def crop_window(height: int, width: int, centre: tuple[int, int], size: int
                ) -> tuple[slice, slice]:
    """Row and column slices of a size x size window (smaller where the photo is) around centre,
    moved inside the photo."""
    slices = []
    for length, c in zip((height, width), centre):
        side = min(size, length)
        start = min(max(0, c - side // 2), length - side)
        slices.append(slice(start, start + side))
    return slices[0], slices[1]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return image_io.quantize(image, 8)


def _save_png(path: str, image) -> str:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    pil.save(path, format="PNG", compress_level=1)
    return path
