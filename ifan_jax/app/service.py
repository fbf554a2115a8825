"""What one request of the web page does, without the web page: read, deblur, write, preview.

    service = Service(deblurrer, workdir)
    result = service.process("upload/photo.tif", progress=lambda done, total: ...)
    result.output   # photo_deblurred.tif: full resolution, the input's format and bit depth
    result = service.reblend(result.key, strength=0.5, keep_bokeh="auto")  # no network run

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

Intent (`ifan_jax.inference.intent`, issue 24): `process` and `reblend` take a `strength` and a
`keep_bokeh` (None, "auto" or a level); the download, the "after" previews and the readout are of the
blended result. The service keeps the last photo (input, deblurred image, whole-photo map) so that
`reblend` re-blends it without running the network again; a new photo replaces it (and it is
released before the new one runs, so it costs no peak memory).

Memory: the previews and the colour map are computed in blocks of rows, so a large photo costs
little beyond what the deblur command holds (the input, the result, the map).

Nothing here imports gradio; `ifan_jax.app.page` puts it on a web page.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from ifan_jax import image_io
from ifan_jax.compiled import release_freed_memory
from ifan_jax.errors import UserError
from ifan_jax.inference import defocus as defocus_maps
from ifan_jax.inference import intent, tiling
from ifan_jax.inference.cli import MIN_SIZE

PREVIEW = 1280  # longest side of the whole-photo previews on the page
CROP = 256  # side of the 1:1 crop
KEEP = 16  # request folders kept on disk (the page's files are copied into gradio's cache)
ROWS = 256  # rows per block when blending, previewing and colour-mapping a large photo


class UploadError(UserError):
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
    key: str = ""  # names this photo for `Service.reblend`
    strength: float = 1.0
    level: float | None = None  # the keep-bokeh level used (None: keep-bokeh off)
    auto_level: float | None = None  # the photo's automatic level (None: not asked for yet)
    readout: intent.Readout | None = None
    readout_text: str = ""  # the readout in one Markdown paragraph, as the page shows it


@dataclasses.dataclass
class _Photo:
    """The last photo, kept for `reblend`: its input, deblurred image and map, and files."""

    key: str
    name: str
    info: image_io.ImageInfo
    image: np.ndarray
    sharp: np.ndarray
    defocus: np.ndarray | None
    folder: str
    output: str
    depth: int
    rows: slice
    cols: slice
    centre: tuple[int, int]
    total: int
    seconds: float
    auto_level: float | None = None  # computed when keep-bokeh first asks for it
    before: str = ""
    crop_before: str = ""
    defocus_png: str | None = None
    defocus_preview: str | None = None


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
        self._last: _Photo | None = None
        os.makedirs(workdir, exist_ok=True)

    def process(self, path: str, progress: Callable[[int, int], None] | None = None,
                strength: float = 1.0, keep_bokeh=None) -> Result:
        """Deblur the photo at `path`; `progress(done, total)` counts network runs (tiles).
        `strength` and `keep_bokeh` as `Deblurrer.__call__` takes them (`ifan_jax.inference.intent`).

        Runs on the service's one worker thread (callers wait their turn), in the caller's context
        (so `progress` may rely on context variables, as Gradio's does). One thread keeps one
        request on the accelerator and lets the allocator reuse the same memory for every request
        (a new thread per request would grow the process by a malloc arena each)."""
        strength = intent.check_strength(strength)
        keep_bokeh = intent.check_keep_bokeh(keep_bokeh)
        task = contextvars.copy_context().run
        return self._worker.submit(task, self._process, path, progress, strength,
                                   keep_bokeh).result()

    def reblend(self, key: str, strength: float = 1.0, keep_bokeh=None) -> Result:
        """The last photo (`key`: its `Result.key`) blended again with another strength or
        keep-bokeh level, without running the network; a new download and new "after" previews.
        UploadError when that photo is no longer the last one (another was deblurred since)."""
        strength = intent.check_strength(strength)
        keep_bokeh = intent.check_keep_bokeh(keep_bokeh)
        return self._worker.submit(contextvars.copy_context().run, self._reblend, key, strength,
                                   keep_bokeh).result()

    def _reblend(self, key: str, strength: float, keep_bokeh) -> Result:
        photo = self._last
        if photo is None or photo.key != key:
            raise UploadError("this photo is no longer held (another one was deblurred since): "
                              "upload it again")
        return self._render(photo, strength, keep_bokeh)

    def _process(self, path: str, progress: Callable[[int, int], None] | None,
                 strength: float = 1.0, keep_bokeh=None) -> Result:
        start = time.perf_counter()
        name = os.path.basename(path)
        self._last = None  # release the previous photo before this one runs
        image, info = read_upload(path)
        if keep_bokeh is not None and not self.deblurrer.has_defocus_map:
            raise UploadError(f"{name}: this model has no defocus map to keep the bokeh by")
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
        del out
        if done < total:  # the whole photo at once reports no tiles
            advance(total - done)
        # The network's freed working memory back to the OS before the previews and files: this
        # worker thread's malloc arena would otherwise keep it resident (+ the server's peak).
        release_freed_memory()

        folder = self._request_folder()
        stem, ext = os.path.splitext(name)
        if image_io.FORMATS.get(ext.lower()) != info.format:  # e.g. a PNG named .jpg
            ext = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}[info.format]
        output = f"{stem}_deblurred{ext}"
        depth = 8 if image_io.format_for_path(output) == "JPEG" else info.bit_depth
        centre = (h // 2, w // 2) if defocus is None else most_defocused(defocus, self.crop)
        rows, cols = crop_window(h, w, centre, self.crop)
        photo = _Photo(
            key=os.path.basename(folder), name=name, info=info, image=image, sharp=sharp,
            defocus=defocus, folder=folder, output=output, depth=depth, rows=rows, cols=cols,
            centre=centre, total=total, seconds=0.0)
        photo.before = self._save_preview(folder, "before", image)
        photo.crop_before = _save_png(os.path.join(folder, "crop_before.png"),
                                      _to_uint8(image[rows, cols]))
        photo.defocus_png = photo.defocus_preview = None
        if defocus is not None:
            colour = defocus_maps.colorize(defocus)
            photo.defocus_png = _save_png(
                defocus_maps.output_paths(os.path.join(folder, name))[0], colour)
            photo.defocus_preview = self._save_preview(folder, "defocus", colour)
            del colour
        photo.seconds = time.perf_counter() - start
        self._last = photo
        return self._render(photo, strength, keep_bokeh)

    def _render(self, photo: _Photo, strength: float, keep_bokeh) -> Result:
        """Blend the photo as asked and write what the page shows: the download (a fresh folder
        per blend, under the same file name), the "after" previews and the readout."""
        if keep_bokeh == "auto" and photo.auto_level is None:
            # Only when asked for: Otsu's histogram of a large map costs a few photo-sized arrays.
            photo.auto_level = intent.auto_level(photo.defocus)
        level = (None if keep_bokeh is None else
                 photo.auto_level if keep_bokeh == "auto" else float(keep_bokeh))
        keep = None if level is None else intent.keep_mask(photo.defocus, level)
        out = blend_rows(photo.image, photo.sharp, strength, keep)
        del keep
        folder = tempfile.mkdtemp(prefix="blend_", dir=photo.folder)
        output = os.path.join(folder, photo.output)
        image_io.write_image(output, out, photo.info, bit_depth=photo.depth)
        rows, cols = photo.rows, photo.cols
        readout = intent.readout(photo.image, out, photo.defocus)
        h, w = photo.image.shape[:2]
        info = photo.info
        runs = "the whole photo at once" if photo.total == 1 else f"{photo.total} tiles"
        intent_text = ""
        if strength != 1.0 or level is not None:
            intent_text = f" Strength {strength:g}" + (
                "" if level is None else
                f"; the bokeh is kept where the 33 x 33 mean |defocus| passes {level:.3g}"
                + (" (the photo's automatic level)" if keep_bokeh == "auto" else "")) + "."
        result = Result(
            output=output, defocus=photo.defocus_png, defocus_preview=photo.defocus_preview,
            before=photo.before, after=self._save_preview(folder, "after", out),
            crop_before=photo.crop_before,
            crop_after=_save_png(os.path.join(folder, "crop_after.png"), _to_uint8(out[rows, cols])),
            crop_centre=photo.centre,
            summary=(f"**{photo.name}**: {w} x {h} pixels, {info.bit_depth}-bit {info.format}; "
                     f"deblurred as {runs} in {photo.seconds:.1f} s. The download is full "
                     f"resolution, {photo.depth}-bit {info.format}.{intent_text}"),
            key=photo.key, strength=strength, level=level, auto_level=photo.auto_level,
            readout=readout, readout_text=readout_markdown(readout))
        return result

    def _request_folder(self) -> str:
        """A new folder for one request's files; the oldest beyond `keep` are deleted."""
        folders = sorted((e for e in os.scandir(self.workdir) if e.is_dir()),
                         key=lambda e: e.stat().st_mtime)
        for old in folders[:max(0, len(folders) - self.keep + 1)]:
            shutil.rmtree(old.path, ignore_errors=True)
        return tempfile.mkdtemp(prefix="request_", dir=self.workdir)

    def _save_preview(self, folder: str, name: str, image: np.ndarray) -> str:
        """An 8-bit PNG of `image` scaled to at most `preview` pixels on its longer side. A large
        image is first reduced by an integer factor (block means, in blocks of rows: no full-size
        copy), leaving at least twice the preview's size for the final Lanczos resampling."""
        h, w = image.shape[:2]
        scale = self.preview / max(h, w)
        factor = max(1, max(h, w) // (2 * self.preview))
        pil = Image.fromarray(_to_uint8(reduce_rows(image, factor)))
        if scale < 1:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            pil = pil.resize(size, Image.Resampling.LANCZOS)
        return _save_png(os.path.join(folder, f"{name}.png"), pil)


def blend_rows(image: np.ndarray, sharp: np.ndarray, strength: float, keep) -> np.ndarray:
    """`intent.blend(image, sharp, strength, keep)` in blocks of rows (the same values; no
    photo-sized temporaries); `sharp` itself at strength 1 without keep."""
    if strength == 1.0 and keep is None:
        return sharp
    out = np.empty(sharp.shape, np.float32)
    for y in range(0, sharp.shape[0], ROWS):
        out[y:y + ROWS] = intent.blend(image[y:y + ROWS], sharp[y:y + ROWS], strength,
                                       None if keep is None else keep[y:y + ROWS])
    return out


def reduce_rows(image: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each factor x factor block (float32; a partial block at the bottom/right
    edge is left out), computed in blocks of rows; `image` itself when factor is 1."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    out = np.empty((h, w, image.shape[2]), np.float32)
    step = max(1, ROWS // factor)
    for y in range(0, h, step):
        block = np.asarray(image[y * factor:min(y + step, h) * factor, :w * factor], np.float32)
        out[y:y + step] = block.reshape(-1, factor, w, factor, image.shape[2]).mean((1, 3))
    if image.dtype == np.uint8:
        out *= np.float32(1 / 255)
    return out


def readout_markdown(readout: intent.Readout) -> str:
    """The readout as the page shows it: the sentence, the shares above the documented levels of
    |defocus|, its median and how much the output differs from the input."""
    change = ("the output is the input" if math.isinf(readout.psnr)
              else f"PSNR input vs output {readout.psnr:.1f} dB")
    if readout.shares is None:
        return f"{readout.sentence} {change}."
    shares = ", ".join(f"{100 * s:.0f}% above {level:g}" for level, s in readout.shares.items())
    return (f"**{readout.sentence}** |defocus|: {shares}; median {readout.median:.3f}. "
            f"{change}.")


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
