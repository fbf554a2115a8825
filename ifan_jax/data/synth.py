"""Synthetic dual-pixel defocus data in the DPDD layout, rendered from sharp photos.

    python -m ifan_jax.data.synth --out=ROOT --num=N --size=S [--images=DIR] [--seed=0]

writes ROOT/DPDD/{train,val,test}_{c,l,r}/source/*.png and ROOT/DPDD/{split}_c/target/*.png
(8-bit): N training scenes and max(1, N // 4) each for validation and test, S x S pixels each.
The sharp photos are those that ship inside scikit-image (astronaut, coffee, chelsea, rocket, the
Middlebury motorcycle with its measured disparity, ...) or every image of DIR. The three splits are
different crops of the same photos.

Physics of one scene:
  * Depth: an inverse-depth map q in [0, 1] (0 far, 1 near): the motorcycle's measured disparity
    (proportional to inverse depth), elsewhere a smooth random field with a random tilt and,
    half of the time, a nearer object with a sharp boundary.
  * Thin lens: an object at distance d, with the lens focused at d_f, images to a circle of
    confusion of signed radius r = K (1/d_f - 1/d): zero on the focal plane, positive behind it,
    negative in front. 1/d is affine in q, so r = A (q_f - q) / max|q_f - q| with a focus q_f
    drawn among the scene's depths and a largest radius A <= max_coc pixels.
  * Dual pixels: each pixel sits under a micro-lens with two photodiodes that see the left and
    the right half of the aperture. A point's combined image C is the aperture's disc (radius
    |r|); its left and right images L and R are the two halves of that disc. Behind the focal
    plane the rays have crossed before the sensor, so L sees the right half of the disc and R the
    left half; in front of it the halves swap. The half discs' centroids sit at +-4r/(3 pi), so the
    views are displaced in proportion to the blur, in opposite directions on either side of the
    focal plane, and coincide where the scene is in focus.
  * Rendering: the CoC map is quantised to 0.5-pixel layers, composited from far to near (each
    layer's premultiplied colour and coverage blurred by the view's PSF, over-composited, then
    divided by the accumulated coverage). L and R are rendered so; C = (L + R) / 2 is the sum of
    the two photodiodes, as on the sensor, so C's PSF is exactly the disc (the mean of the halves)
    and C equals (L + R) / 2 up to 8-bit rounding in the written files. The ground truth is the
    sharp crop.

Depends on numpy, scipy, scikit-image and PIL only (no TensorFlow).
"""

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage, signal
from tqdm import tqdm

from ifan_jax import fileio
from ifan_jax.data.layouts import IMAGE_EXTENSIONS, DataError, image_files
from ifan_jax.errors import ArgumentParser, UserError

DEFAULT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field",
                  "camera", "coins", "brick", "grass", "gravel")
COC_STEP = 0.5  # pixels between depth layers of the renderer
MARKER = "synth.json"  # written into ROOT/DPDD: the parameters that made the folder


@dataclasses.dataclass
class Photo:
    """A sharp photo: uint8 HxWx3, and its inverse depth (HxW float, larger = nearer) if known."""

    name: str
    image: np.ndarray
    inverse_depth: np.ndarray | None = None


def load_photos(images_dir: str | Path | None = None) -> list[Photo]:
    """The sharp photos: scikit-image's (DEFAULT_PHOTOS) or every image in `images_dir`."""
    if images_dir is None:
        photos = []
        for name in DEFAULT_PHOTOS:
            if name == "motorcycle":
                left, _, disparity = skimage.data.stereo_motorcycle()
                photos.append(Photo(name, left, _fill_invalid(disparity)))
                continue
            image = getattr(skimage.data, name)()
            if image.ndim == 2:
                image = np.stack([image] * 3, axis=-1)
            photos.append(Photo(name, np.ascontiguousarray(image[..., :3])))
        return photos
    folder = Path(images_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"missing folder {folder} (--images)")
    photos = []
    for path in image_files(folder):
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise DataError(f"{path}: not a readable image ({e})") from None
        name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in path.stem)
        photos.append(Photo(name, image))
    if not photos:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}")
    return photos


def _fill_invalid(disparity: np.ndarray) -> np.ndarray:
    """Replace non-finite or non-positive disparities by their nearest valid neighbour."""
    invalid = ~np.isfinite(disparity) | (disparity <= 0)
    if not invalid.any():
        return disparity.astype(np.float32)
    _, (iy, ix) = ndimage.distance_transform_edt(invalid, return_indices=True)
    return disparity[iy, ix].astype(np.float32)


def disc_psf(radius: float) -> np.ndarray:
    """The normalised (sum 1) disc of `radius` pixels, anti-aliased, on a (2n+1)^2 grid, n =
    ceil(radius); radius <= 0.5 gives a single pixel (a delta)."""
    radius = abs(float(radius))
    n = max(0, math.ceil(radius))
    y, x = np.mgrid[-n:n + 1, -n:n + 1]
    weight = np.clip(radius + 0.5 - np.hypot(x, y), 0.0, 1.0)
    return weight / weight.sum()


def half_disc_psfs(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The left (x < 0) and right (x > 0) halves of `disc_psf(radius)`, each normalised; the middle
    column is shared equally, so (left + right) / 2 equals the disc exactly."""
    disc = disc_psf(radius)
    n = disc.shape[1] // 2
    left = np.zeros_like(disc)
    left[:, :n] = 2 * disc[:, :n]
    left[:, n] = disc[:, n]
    right = left[:, ::-1].copy()
    return left, right


def view_psfs(signed_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """PSFs (left view, right view) of a point with signed CoC radius r: behind the focal plane
    (r > 0) the left view sees the right half of the disc, in front of it (r < 0) the left half."""
    left_half, right_half = half_disc_psfs(signed_radius)
    if signed_radius > 0:
        return right_half, left_half
    return left_half, right_half


def _blur(layer: np.ndarray, psf: np.ndarray) -> np.ndarray:
    if psf.shape == (1, 1):
        return layer
    return signal.fftconvolve(layer, psf[:, :, None], mode="same", axes=(0, 1))


def render_views(sharp: np.ndarray, coc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and right dual-pixel views (float64 HxWx3 in [0, 1]) of the sharp HxWx3 [0, 1] image
    whose pixels have the signed CoC radii `coc` (HxW, pixels): layers of COC_STEP pixels,
    composited far (largest r) to near, each view with its half-disc PSFs."""
    levels = np.round(coc / COC_STEP) * COC_STEP
    views = []
    for side in (0, 1):
        colour = np.zeros(sharp.shape, np.float64)
        alpha = np.zeros(coc.shape, np.float64)
        for level in np.unique(levels)[::-1]:
            mask = (levels == level).astype(np.float64)
            layer = np.concatenate([sharp * mask[..., None], mask[..., None]], axis=-1)
            blurred = _blur(layer, view_psfs(level)[side])
            a = np.clip(blurred[..., 3], 0.0, 1.0)
            colour = colour * (1.0 - a)[..., None] + blurred[..., :3]
            alpha = alpha * (1.0 - a) + a
        views.append(np.clip(colour / np.maximum(alpha, 1e-8)[..., None], 0.0, 1.0))
    return views[0], views[1]


def _random_inverse_depth(rng: np.random.Generator, n: int) -> np.ndarray:
    """A smooth random inverse-depth field on n x n, in [0, 1]: blurred noise, a random tilt (a
    ground plane nearer at the bottom) and, half of the time, a nearer object."""

    def smooth(sigma):
        field = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma, mode="reflect")
        return (field - field.min()) / max(np.ptp(field), 1e-12)

    field = smooth(n * rng.uniform(0.08, 0.25))
    tilt = rng.uniform(0.0, 0.6)
    ramp = np.linspace(0.0, 1.0, n)[:, None] * np.ones((1, n))
    field = (1 - tilt) * field + tilt * ramp
    if rng.random() < 0.5:
        blob = smooth(n * rng.uniform(0.1, 0.2))
        field = np.where(blob > np.quantile(blob, rng.uniform(0.6, 0.85)),
                         field + rng.uniform(0.3, 0.6), field)
    return (field - field.min()) / max(np.ptp(field), 1e-12)


def make_scene(photo: Photo, rng: np.random.Generator, size: int, max_coc: float) -> dict:
    """One size x size scene from `photo`: {"gt", "c", "l", "r"} (float64 HxWx3 in [0, 1]) and
    "coc" (signed CoC radius per pixel). Random rescale, flip and crop of the photo, random depth
    (unless the photo has its own), focus and aperture."""
    margin = math.ceil(max_coc) + 2
    region = size + 2 * margin
    height, width = photo.image.shape[:2]
    lowest = region / min(height, width)
    if lowest > 1:
        raise DataError(f"photo {photo.name!r} ({height}x{width}) is too small for --size={size} "
                        f"(needs {region}x{region} with the blur margin)")
    scale = rng.uniform(max(lowest, 0.35), 1.0) if lowest < 1 else 1.0
    new_w, new_h = max(region, round(width * scale)), max(region, round(height * scale))
    image = np.asarray(Image.fromarray(photo.image).resize((new_w, new_h), Image.Resampling.BOX))
    top = rng.integers(0, new_h - region + 1)
    left = rng.integers(0, new_w - region + 1)
    sharp = image[top:top + region, left:left + region].astype(np.float64) / 255.0
    if photo.inverse_depth is not None:
        depth = np.asarray(Image.fromarray(photo.inverse_depth).resize((new_w, new_h),
                                                                       Image.Resampling.BILINEAR))
        depth = depth[top:top + region, left:left + region].astype(np.float64)
        lo, hi = np.percentile(depth, [1, 99])
        inverse_depth = np.clip((depth - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    else:
        inverse_depth = _random_inverse_depth(rng, region)
    if rng.random() < 0.5:
        sharp, inverse_depth = sharp[:, ::-1], inverse_depth[:, ::-1]

    focus = np.quantile(inverse_depth, rng.uniform(0.15, 0.85))
    offset = focus - inverse_depth  # proportional to 1/d_f - 1/d
    radius = rng.uniform(0.4, 1.0) * max_coc
    coc = radius * offset / max(np.abs(offset).max(), 1e-6)
    left_view, right_view = render_views(sharp, coc)
    inner = (slice(margin, margin + size), slice(margin, margin + size))
    left_view, right_view = left_view[inner], right_view[inner]
    return {"gt": sharp[inner], "c": (left_view + right_view) / 2, "l": left_view,
            "r": right_view, "coc": coc[inner]}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _write_split(dpdd: Path, split: str, count: int, photos: list[Photo], size: int,
                 max_coc: float, seed: int, split_id: int, progress) -> None:
    folders = {key: dpdd / f"{split}_{key}" / "source" for key in "clr"}
    folders["gt"] = dpdd / f"{split}_c" / "target"
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng([seed, split_id, i])
        photo = photos[(i + 3 * split_id) % len(photos)]
        scene = make_scene(photo, rng, size, max_coc)
        name = f"{i:05d}_{photo.name}.png"
        for key, folder in folders.items():
            Image.fromarray(_to_uint8(scene[key])).save(folder / name)
        progress.update(1)


def generate(out_root: str | Path, num: int, size: int, images_dir: str | Path | None = None,
             seed: int = 0, max_coc: float | None = None, overwrite: bool = False) -> Path:
    """Write a synthetic DPDD-layout data set under out_root/DPDD; returns that folder.

    num training scenes, max(1, num // 4) validation and test scenes, size x size 8-bit PNGs;
    max_coc: largest CoC radius in pixels (default size / 16). Deterministic for a seed. If
    out_root/DPDD was already written by this generator with the same parameters it is kept as is;
    otherwise an existing folder is an error, unless `overwrite` and it was written by this
    generator (a real data set is never deleted).
    """
    num, size = int(num), int(size)
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    max_coc = float(max_coc) if max_coc is not None else size / 16.0
    params = {"num": num, "size": size, "seed": int(seed), "max_coc": max_coc,
              "images": str(Path(images_dir).expanduser().resolve()) if images_dir else None,
              "version": 1}
    dpdd = Path(out_root).expanduser() / "DPDD"
    marker = dpdd / MARKER
    if dpdd.exists():
        if marker.is_file() and json.loads(marker.read_text()) == params:
            return dpdd
        if not marker.is_file():
            raise DataError(f"{dpdd} exists and was not written by the synthetic generator; "
                            f"choose another --out")
        if not overwrite:
            raise DataError(f"{dpdd} holds synthetic data with other parameters "
                            f"({marker.read_text().strip()}); pass overwrite=True (--overwrite)")
    region = size + 2 * (math.ceil(max_coc) + 2)
    photos = load_photos(images_dir)
    small = [p.name for p in photos if min(p.image.shape[:2]) < region]
    photos = [p for p in photos if min(p.image.shape[:2]) >= region]
    if not photos:
        raise DataError(f"no photo is large enough for --size={size} (each needs at least "
                        f"{region}x{region} pixels with the blur margin)")
    if small:
        print(f"synth: photos smaller than {region}x{region} not used: {', '.join(small)}",
              file=sys.stderr)
    held_out = max(1, num // 4)
    counts = {"train": num, "val": held_out, "test": held_out}
    # Written under a temporary name and renamed when complete: an interrupted run leaves nothing
    # under ROOT/DPDD, and an earlier synthetic set is replaced only by a complete new one.
    with tqdm(total=sum(counts.values()), desc="synthetic DPDD", unit="scene",
              disable=None) as progress, fileio.atomic_directory(dpdd, overwrite=overwrite) as tmp:
        for split_id, (split, count) in enumerate(counts.items()):
            _write_split(Path(tmp), split, count, photos, size, max_coc, int(seed), split_id,
                         progress)
        (Path(tmp) / MARKER).write_text(json.dumps(params))
    return dpdd


def main(argv=None) -> int:
    parser = ArgumentParser(
        prog="python -m ifan_jax.data.synth", name="synth",
        description="Write a synthetic dual-pixel defocus data set in the DPDD layout.")
    parser.add_argument("--out", required=True, help="data root; writes OUT/DPDD/...")
    parser.add_argument("--num", required=True, type=int, help="training scenes (val/test: num/4)")
    parser.add_argument("--size", required=True, type=int, help="side of the square images")
    parser.add_argument("--images", default=None,
                        help="folder of sharp photos (default: scikit-image's photos)")
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--max_coc", default=None, type=float,
                        help="largest circle-of-confusion radius in pixels (default size/16)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT/DPDD if this generator wrote it with other parameters")
    args = parser.parse_args(argv)
    try:
        path = generate(args.out, args.num, args.size, args.images, args.seed, args.max_coc,
                        args.overwrite)
    except UserError as e:
        print(f"synth: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
