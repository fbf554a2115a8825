"""What one request of the web page does, without the web page: read, deblur, write, preview.

    service = Service(deblurrer, workdir)
    result = service.process("upload/photo.tif", progress=lambda done, total: ...)
    result.output   # photo_deblurred.tif: full resolution, the input's format and bit depth
    shown = service.reblend(result.key, strength=0.5, keep_bokeh="auto")  # previews, no network
    done = service.download(shown)   # the full-resolution download and the readout of that blend

`Service.process` reads an uploaded photo with `ifan_jax.image_io` (JPEG/PNG/TIFF, 8 or 16 bit,
grey, alpha, EXIF orientation; at most `max_pixels`, refused from the header before decoding),
deblurs it at full resolution with `Deblurrer.deblur` (tiles as the deblur tool chooses them,
`progress(done, total)` after each), and writes into a fresh folder under `workdir`: the deblurred
photo in the input's form (`image_io.write_image`: same format and bit depth; a JPEG at the
upload's quality and subsampling),
the colour-mapped defocus map at full resolution (PNG), and previews for the page (JPEGs of the
whole photo scaled to at most `preview` pixels a side, and PNGs of a 1:1 crop of `crop` pixels:
`crop_centre` says where). Only the newest `keep` request folders are kept. A photo that cannot be read raises
`UploadError` with a one-line message naming the uploaded file by its own name.

Intent (`ifan_jax.inference.intent`): the strength and keep-the-bokeh are applied by the
`intent.Deblurred` that `Deblurrer.deblur` returns, as for the deblur command and the Python API.
The service keeps the last photo's result so that a new strength or level re-blends it without
running the network, in two steps: `reblend` blends the previews only (the photo reduced by block
means to about the preview's size, and the 1:1 crop at full resolution: a fraction of a second on a
12-megapixel photo), and `download` then blends the full-resolution photo, writes the download and
computes the readout, on a thread of its own so that the next `reblend` does not wait for it. A
`download` for a blend that a newer `reblend` has replaced is skipped (returns None). A new photo
replaces the held one (released before the new one runs, so it costs no peak memory).

Memory: the previews, the colour map and the blend go in blocks of rows, so a large photo costs
little beyond what the deblur command holds (the input, the result, the map and its box mean).

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
from ifan_jax.compiled import release_freed_memory
from ifan_jax.errors import UserError
from ifan_jax.inference import defocus as defocus_maps
from ifan_jax.inference import intent, tiling
from ifan_jax.inference.cli import MIN_SIZE

PREVIEW = 1280  # longest side of the whole-photo previews on the page
PREVIEW_QUALITY = 95  # the previews are JPEGs (4:4:4): a tenth of a PNG's encoding time
CROP = 256  # side of the 1:1 crop
KEEP = 16  # request folders kept on disk (the page's files are copied into gradio's cache)
# The 1:1 crop is taken where the photo is most out of focus among windows that show something:
# a mean brightness (BT.601 luma) within these bounds, and a spread of luma of at least
# CROP_MIN_TEXTURE and at least CROP_TEXTURE_SHARE of the median window's.
CROP_BRIGHTNESS = (0.08, 0.92)
CROP_MIN_TEXTURE = 0.02
CROP_TEXTURE_SHARE = 0.5
CROP_GRID = 512  # the crop's statistics are computed on a grid of at most this many points a side


class UploadError(UserError):
    """An upload that cannot be deblurred; the message names the file and says why."""


@dataclasses.dataclass
class Result:
    """Files one request produced (paths), and lines describing what was done."""

    output: str | None  # the deblurred photo: full resolution, the input's format and bit depth
    # (None: this blend's download is not written yet; `Service.download` writes it)
    defocus: str | None  # the colour-mapped defocus map, full resolution, 8-bit PNG (None: the
    # model has no disparity map estimator)
    before: str  # preview of the input (JPEG, at most PREVIEW pixels a side)
    after: str  # preview of the output, same size
    crop_before: str  # 1:1 crop of the input around `crop_centre`
    crop_after: str  # the same crop of the output
    defocus_preview: str | None  # the defocus map at the previews' size
    crop_centre: tuple[int, int]  # (row, column) of the crop's centre in the photo
    summary: str
    key: str = ""  # names this photo for `Service.reblend`
    strength: float = 1.0
    keep_bokeh: float | str | None = None  # as asked: None, "auto" or a level
    level: float | None = None  # the keep-bokeh level used (None: keep-bokeh off)
    auto_level: float | None = None  # the photo's automatic level (None: no defocus map)
    readout: intent.Readout | None = None  # None until the download is written
    readout_text: str = ""  # the readout in one line, as the deblur command prints it


@dataclasses.dataclass
class _Photo:
    """The last photo, kept for re-blending: its result (`intent.Deblurred`) whole, reduced for the
    previews and cropped, and its files."""

    key: str
    name: str
    info: image_io.ImageInfo
    result: intent.Deblurred
    small: intent.Deblurred
    window: intent.Deblurred
    folder: str
    output: str
    depth: int
    centre: tuple[int, int]
    total: int
    seconds: float
    before: str = ""
    crop_before: str = ""
    defocus_png: str | None = None
    defocus_preview: str | None = None
    wanted: tuple = ()  # (strength, keep_bokeh) of the newest blend asked for
    written: dict = dataclasses.field(default_factory=dict)  # (strength, keep) -> (path, readout)


class Service:
    """Deblurs uploaded files one at a time into request folders under `workdir`."""

    def __init__(self, deblurrer, workdir: str, tile: int | None = None,
                 overlap: int = tiling.DEFAULT_OVERLAP, keep: int = KEEP, preview: int = PREVIEW,
                 crop: int = CROP, max_pixels: int = image_io.MAX_PIXELS):
        self.deblurrer = deblurrer
        self.workdir = workdir
        self.tile, self.overlap = tile, overlap
        self.keep, self.preview, self.crop = keep, preview, crop
        self.max_pixels = max_pixels
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="deblur")
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="download")
        self._last: _Photo | None = None
        os.makedirs(workdir, exist_ok=True)

    def process(self, path: str, progress: Callable[[int, int], None] | None = None,
                strength: float = 1.0, keep_bokeh=None) -> Result:
        """Deblur the photo at `path`; `progress(done, total)` counts network runs (tiles).
        `strength` and `keep_bokeh` as `Deblurrer.deblur` takes them. The result has its download
        and readout.

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
        keep-bokeh level, without running the network: new "after" previews and summary; no
        download or readout yet (`download` writes them). UploadError when that photo is no longer
        the last one (another was deblurred since)."""
        strength = intent.check_strength(strength)
        keep_bokeh = intent.check_keep_bokeh(keep_bokeh)
        return self._worker.submit(contextvars.copy_context().run, self._reblend, key, strength,
                                   keep_bokeh).result()

    def download(self, shown: Result) -> Result | None:
        """`shown` (a `reblend` result) with its full-resolution download written and its readout;
        None when a newer blend was asked for since (its own `download` will write that one). Runs
        on a thread of its own, so re-blends do not wait for it."""
        return self._writer.submit(contextvars.copy_context().run, self._download, shown).result()

    def _held(self, key: str) -> _Photo:
        photo = self._last
        if photo is None or photo.key != key:
            raise UploadError("this photo is no longer held (another one was deblurred since): "
                              "upload it again")
        return photo

    def _reblend(self, key: str, strength: float, keep_bokeh) -> Result:
        photo = self._held(key)
        if keep_bokeh is not None:
            self.deblurrer.require_defocus_map("the bokeh cannot be kept")
        photo.wanted = (strength, keep_bokeh)
        return self._render(photo, strength, keep_bokeh)

    def _download(self, shown: Result) -> Result | None:
        photo = self._last
        wanted = (shown.strength, shown.keep_bokeh)
        if photo is None or photo.key != shown.key or photo.wanted != wanted:
            return None  # superseded: a newer blend or photo writes its own
        if wanted not in photo.written:
            blended = photo.result.reblend(*wanted)
            folder = tempfile.mkdtemp(prefix="blend_", dir=photo.folder)
            output = os.path.join(folder, photo.output)
            image_io.write_image(output, blended.output, photo.info, bit_depth=photo.depth)
            photo.written = {wanted: (output, blended.readout)}  # only the newest is kept
        output, readout = photo.written[wanted]
        return dataclasses.replace(shown, output=output, readout=readout,
                                   readout_text=readout.line())

    def _process(self, path: str, progress: Callable[[int, int], None] | None,
                 strength: float = 1.0, keep_bokeh=None) -> Result:
        start = time.perf_counter()
        name = os.path.basename(path)
        self._last = None  # release the previous photo before this one runs
        image, info = read_upload(path, self.max_pixels)
        if keep_bokeh is not None:
            try:
                self.deblurrer.require_defocus_map("the bokeh cannot be kept")
            except UserError as e:
                raise UploadError(f"{name}: {e}") from None
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
        try:
            result = self.deblurrer.deblur(image, schedule=schedule, progress=advance)
        except UserError as e:  # e.g. an output that is not finite
            raise UploadError(f"{name}: {e}") from None
        del image
        if done < total:  # the whole photo at once reports no tiles
            advance(total - done)
        # The network's freed working memory back to the OS before the previews and files: this
        # worker thread's malloc arena would otherwise keep it resident (+ the server's peak).
        release_freed_memory()
        result.prepare()  # the map's box mean and automatic level: re-blends need only the blend

        folder = self._request_folder()
        stem, ext = os.path.splitext(name)
        if image_io.FORMATS.get(ext.lower()) != info.format:  # e.g. a PNG named .jpg
            ext = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}[info.format]
        output = f"{stem}_deblurred{ext}"
        depth = 8 if image_io.format_for_path(output) == "JPEG" else info.bit_depth
        centre = crop_centre(result.input, result.defocus, self.crop)
        rows, cols = crop_window(h, w, centre, self.crop)
        factor = max(1, max(h, w) // self.preview)
        photo = _Photo(
            key=os.path.basename(folder), name=name, info=info, result=result,
            small=result.reduced(factor), window=result.crop(rows, cols), folder=folder,
            output=output, depth=depth, centre=centre, total=total, seconds=0.0)
        photo.small.prepare()  # its box mean, reduced from the photo's
        photo.before = self._save_preview(folder, "before", photo.small.input)
        photo.crop_before = _save_png(os.path.join(folder, "crop_before.png"),
                                      _to_uint8(photo.window.input))
        if result.defocus is not None:
            colour = defocus_maps.colorize(result.defocus)
            photo.defocus_png = _save_png(
                defocus_maps.output_paths(os.path.join(folder, name))[0], colour)
            photo.defocus_preview = self._save_preview(folder, "defocus",
                                                       intent.block_mean(colour, factor))
            del colour
        photo.seconds = time.perf_counter() - start
        photo.wanted = (strength, keep_bokeh)
        self._last = photo
        return self._download(self._render(photo, strength, keep_bokeh))

    def _render(self, photo: _Photo, strength: float, keep_bokeh) -> Result:
        """The previews of the photo blended as asked (the reduced photo and the crop; no
        full-resolution work) and the summary."""
        small = photo.small.reblend(strength, keep_bokeh)
        window = photo.window.reblend(strength, keep_bokeh)
        folder = tempfile.mkdtemp(prefix="view_", dir=photo.folder)
        h, w = photo.result.input.shape[:2]
        info = photo.info
        runs = "the whole photo at once" if photo.total == 1 else f"{photo.total} tiles"
        how = small.intent_line()
        return Result(
            output=None, defocus=photo.defocus_png, defocus_preview=photo.defocus_preview,
            before=photo.before, after=self._save_preview(folder, "after", small.output),
            crop_before=photo.crop_before,
            crop_after=_save_png(os.path.join(folder, "crop_after.png"), _to_uint8(window.output)),
            crop_centre=photo.centre,
            summary=(f"**{photo.name}**: {w} x {h} pixels, {info.bit_depth}-bit {info.format}; "
                     f"deblurred as {runs} in {photo.seconds:.1f} s. The download is full "
                     f"resolution, {photo.depth}-bit {info.format}."
                     + (f" {how[0].upper()}{how[1:]}." if how else "")),
            key=photo.key, strength=strength, keep_bokeh=keep_bokeh, level=small.level,
            auto_level=small.auto_level)

    def _request_folder(self) -> str:
        """A new folder for one request's files; the oldest beyond `keep` are deleted."""
        folders = sorted((e for e in os.scandir(self.workdir) if e.is_dir()),
                         key=lambda e: e.stat().st_mtime)
        for old in folders[:max(0, len(folders) - self.keep + 1)]:
            shutil.rmtree(old.path, ignore_errors=True)
        return tempfile.mkdtemp(prefix="request_", dir=self.workdir)

    def _save_preview(self, folder: str, name: str, image: np.ndarray) -> str:
        """A JPEG of `image` (the photo reduced by block means: `intent.block_mean`) scaled by
        Lanczos resampling to at most `preview` pixels on its longer side."""
        h, w = image.shape[:2]
        pil = Image.fromarray(_to_uint8(image))
        scale = self.preview / max(h, w)
        if scale < 1:
            pil = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                             Image.Resampling.LANCZOS)
        path = os.path.join(folder, f"{name}.jpg")
        pil.save(path, format="JPEG", quality=PREVIEW_QUALITY, subsampling=0)
        return path


def read_upload(path: str, max_pixels: int = image_io.MAX_PIXELS
                ) -> tuple[np.ndarray, image_io.ImageInfo]:
    """`image_io.read_image` (at most `max_pixels`, checked from the header), with errors as
    `UploadError` naming the file by its base name."""
    name = os.path.basename(path)
    try:
        image, info = image_io.read_image(path, max_pixels=max_pixels)
    except image_io.ImageError as e:
        raise UploadError(str(e).replace(path, name)) from None
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise UploadError(f"{name}: image too small ({w} x {h} pixels; at least {MIN_SIZE} x "
                          f"{MIN_SIZE} needed)")
    return image, info


def crop_centre(image: np.ndarray, defocus: np.ndarray | None, size: int) -> tuple[int, int]:
    """(row, column) of the centre of the size x size window (inside the photo) to show at 1:1:
    among the windows that show something (mean luma within CROP_BRIGHTNESS, spread of luma at
    least CROP_MIN_TEXTURE and CROP_TEXTURE_SHARE of the median window's), the one with the largest
    mean |defocus|; without a map, or when no window qualifies, the one with the most spread.
    So it never lands on a flat dark patch (a night sky, a black background), where the map may be
    largest and the crop would show nothing. Computed on a grid of at most CROP_GRID points a side."""
    h, w = image.shape[:2]
    step = max(1, -(-max(h, w) // CROP_GRID))
    luma = np.asarray(image[::step, ::step], np.float32) @ image_io.LUMA
    window = (max(1, min(size, h) // step), max(1, min(size, w) // step))
    mean = ndimage.uniform_filter(luma, size=window, mode="nearest")
    spread = np.sqrt(np.maximum(
        ndimage.uniform_filter(luma * luma, size=window, mode="nearest") - mean * mean, 0.0))
    # Centres whose window lies inside the photo (the window is moved inside anyway).
    inside = np.zeros(luma.shape, bool)
    (r0, r1), (c0, c1) = ((min(k // 2, n // 2), max(n - (k - 1) // 2, n // 2 + 1))
                          for k, n in zip(window, luma.shape))
    inside[r0:r1, c0:c1] = True
    texture = spread[inside]
    floor = max(CROP_MIN_TEXTURE, CROP_TEXTURE_SHARE * float(np.median(texture)))
    shows = inside & (spread >= floor) & (mean >= CROP_BRIGHTNESS[0]) & (mean <= CROP_BRIGHTNESS[1])
    if defocus is not None and shows.any():
        blur = ndimage.uniform_filter(np.abs(np.asarray(defocus[::step, ::step], np.float32)),
                                      size=window, mode="nearest")
        score = np.where(shows, blur, -np.inf)
    else:
        score = np.where(inside, spread, -np.inf)
    row, col = np.unravel_index(int(np.argmax(score)), score.shape)
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
