"""The tiled defocus map against the whole photo's: lines at tile borders, and what the map costs.

    python -m benchmarks.defocus_seams --ckpt=runs/quickstart --height=4000 --width=3000 --tile=512
    python -m benchmarks.defocus_seams --ckpt=random ...   # the full-size model, random weights

The photo is made from scikit-image's: the rocket (its flat sky) above the coffee cup, each
upscaled bilinearly to half of the size asked for. The whole photo's map comes from the filter
encoder and the disparity map estimator alone (`IFAN.disparity`, a fraction of the full network's
memory), upsampled as `Deblurrer` upsamples it; `--reference=PATH.npy` loads (or, if missing,
saves) its 1/8-resolution values, so another checkout's tiling can be measured against the same
map. Then `Deblurrer` runs the photo in tiles, with and without the map, and this prints the
tiles, the seconds of each run (after a run that compiles; wall and the process's CPU time, which
other processes on the machine disturb less), and against the whole map: PSNR of the
colour maps (both coloured with the whole map's range), the largest colour difference, and per
axis the largest step across a tile overlap in excess of the whole map's own there against the
typical step (`border_steps`), with the row or column profile across the worst border.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ifan_jax.errors import ArgumentParser, UserError, report_and_exit


def photo(height: int, width: int) -> np.ndarray:
    """H x W x 3 float32 in [0, 1]: the rocket above the coffee cup, each upscaled bilinearly."""
    import skimage.data
    import skimage.transform

    top = skimage.data.rocket().astype(np.float32) / 255
    bottom = skimage.data.coffee().astype(np.float32) / 255
    parts = [skimage.transform.resize(p, (n, width), order=1, anti_aliasing=False)
             for p, n in ((top, height // 2), (bottom, height - height // 2))]
    return np.clip(np.concatenate(parts), 0, 1).astype(np.float32)


def colour_psnr(whole_map: np.ndarray, tiled_map: np.ndarray) -> tuple[float, int]:
    """(PSNR in dB, largest difference in 1/255) of the two colour maps, both coloured with the
    whole map's range (`defocus.colorize`)."""
    from ifan_jax.inference import defocus

    lo, hi = np.percentile(whole_map, [defocus.LOW_PERCENTILE, defocus.HIGH_PERCENTILE])
    cw = defocus.colorize(whole_map, lo, hi).astype(np.float64)
    ct = defocus.colorize(tiled_map, lo, hi).astype(np.float64)
    mse = float(np.mean((cw - ct) ** 2))
    return (10 * np.log10(255.0 ** 2 / mse) if mse else float("inf")), int(np.abs(cw - ct).max())


def overlap_bands(starts, tile: int, length: int, margin: int) -> np.ndarray:
    """Boolean, length - 1: the steps (between pixel i and i + 1) within `margin` pixels of a tile
    overlap ([next start, this start + tile))."""
    near = np.zeros(length - 1, bool)
    for a, b in zip(starts[1:], starts[:-1]):
        near[max(a - margin, 0):min(b + tile + margin, length - 1)] = True
    return near


def border_steps(whole_map: np.ndarray, tiled_map: np.ndarray, tile: int, overlap: int):
    """For rows, then columns: (the largest |difference between neighbouring rows| of the tiled map
    within 8 pixels of a tile overlap, in excess of the whole map's own difference there; the
    typical step: the median |difference between neighbouring rows| of the whole map 24 pixels or
    more away from any overlap; the index i of the worst step (between i and i + 1) and the column
    (row) it is in)."""
    from ifan_jax.inference import tiling

    out = []
    for axis, length in enumerate(whole_map.shape):
        t = tiling.tile_shape(*whole_map.shape, tile)[axis]
        starts = tiling.tile_starts(tiling.round_up(length), t, overlap)
        steps_whole = np.moveaxis(np.abs(np.diff(whole_map, axis=axis)), axis, 0)
        steps_tiled = np.moveaxis(np.abs(np.diff(tiled_map, axis=axis)), axis, 0)
        near, away = overlap_bands(starts, t, length, 8), ~overlap_bands(starts, t, length, 24)
        excess = np.where(near[:, None], steps_tiled - steps_whole, -np.inf)
        worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
        typical = float(np.median(steps_whole[away])) if away.any() else float("nan")
        out.append((float(excess[worst]), typical, (int(worst[0]), int(worst[1]))))
    return out


def _whole_map(deblurrer, image: np.ndarray) -> np.ndarray:
    """The whole photo's 1/8-resolution map: filter encoder and estimator alone."""
    import jax

    from ifan_jax.inference import pad_to_multiple
    from ifan_jax.models import IFAN

    fn = jax.jit(lambda p, x: deblurrer.model.apply({"params": p}, x, method=IFAN.disparity))
    return np.asarray(fn(deblurrer.params, pad_to_multiple(image)[None]), np.float32)[0, ..., 0]


def _timed(deblurrer) -> list[float]:
    """Seconds (wall) of each call of `deblurrer.estimate` (the estimator's pass over a tiled photo's
    blended map), appended to the returned list; an empty list where there is none (an older
    checkout)."""
    import jax

    seconds: list[float] = []
    estimate = getattr(deblurrer, "estimate", None)
    if estimate is not None:
        def timed(encoded):
            start = time.perf_counter()
            out = jax.block_until_ready(estimate(encoded))
            seconds.append(time.perf_counter() - start)
            return out

        deblurrer.estimate = timed
    return seconds


def _deblurrer(ckpt: str):
    import jax

    from ifan_jax.config import load_config
    from ifan_jax.inference import Deblurrer
    from ifan_jax.models import IFAN

    if ckpt != "random":
        return Deblurrer.from_checkpoint(ckpt)
    config = load_config("ifan").model
    x = np.zeros((1, 64, 64, 3), np.float32)
    params = IFAN.from_config(config).init(jax.random.PRNGKey(0), x, x, x, x, train=True)["params"]
    return Deblurrer(params, config.to_dict())


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m benchmarks.defocus_seams", name="defocus_seams",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a checkpoint, or 'random' (the full-size model)")
    p.add_argument("--height", type=int, default=4000)
    p.add_argument("--width", type=int, default=3000)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--reference", help="the whole map's 1/8-resolution values (.npy): loaded if it "
                   "exists, else computed and saved there")
    p.add_argument("--runs", default="map,image", help="tiled runs to time: map, image or both")
    args = p.parse_args(argv)
    try:
        return _measure(args)
    except UserError as e:
        report_and_exit("defocus_seams", e)


def _measure(args) -> int:
    from ifan_jax.inference import defocus, tiling

    h, w = args.height, args.width
    image = photo(h, w)
    deblurrer = _deblurrer(args.ckpt)
    if args.reference and os.path.exists(args.reference):
        low = np.load(args.reference)
    else:
        start = time.perf_counter()
        low = _whole_map(deblurrer, image)
        print(f"whole map (filter encoder + estimator): {time.perf_counter() - start:.0f} s")
        if args.reference:
            np.save(args.reference, low)
    whole = defocus.upsample_map(low, h, w)
    count = tiling.num_tiles(h, w, args.tile, args.overlap)
    print(f"{h}x{w} photo, tile {args.tile}, overlap {args.overlap}: {count} tiles")
    runs = args.runs.split(",")
    # A photo that compiles what the runs use: the tile, and the estimator's tile where there is one.
    side = max(tiling.round_up(args.tile) + 8, 8 * getattr(tiling, "estimator_tile", lambda t: 0)(args.tile))
    warm = image[:min(side, h), :min(side, w)]
    tiled = None
    estimator = _timed(deblurrer)
    for run in runs:
        with_map = run == "map"
        deblurrer(warm, tile=args.tile, overlap=args.overlap, return_defocus=with_map)  # compile
        estimator.clear()
        start, cpu = time.perf_counter(), time.process_time()
        out = deblurrer(image, tile=args.tile, overlap=args.overlap, return_defocus=with_map)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"tiled, {'with' if with_map else 'without'} the map: {seconds:.1f} s "
              f"({seconds / count:.2f} s per tile; {cpu:.1f} s of CPU time)" + (
                  f"; the estimator's pass over the blended map: {len(estimator)} tiles, "
                  f"{sum(estimator):.2f} s" if estimator else ""))
        if with_map:
            tiled = out[1]
        del out
    if tiled is None:
        return 0
    psnr, largest = colour_psnr(whole, tiled)
    print(f"against the whole map: colour maps {psnr:.1f} dB, largest difference {largest}/255, "
          f"values' largest |difference| {np.abs(tiled - whole).max():.3g} "
          f"(map 1st-99th percentile {np.percentile(whole, 1):.4g} to {np.percentile(whole, 99):.4g})")
    steps = border_steps(whole, tiled, args.tile, args.overlap)
    for n, (axis, (excess, typical, (i, j))) in enumerate(zip(("row", "column"), steps)):
        print(f"  {axis}s: largest step at a border in excess of the whole map's {excess:.3g} = "
              f"{excess / typical:.2f} x the typical step {typical:.3g}, between {axis}s {i} and "
              f"{i + 1} ({'column' if axis == 'row' else 'row'} {j})")
        lo, hi = max(i - 24, 0), min(i + 25, whole.shape[n])
        cut = (slice(lo, hi, 4), j) if axis == "row" else (j, slice(lo, hi, 4))
        profile = " ".join(f"{k}:{a:.5f}/{b:.5f}" for k, a, b in zip(
            range(lo, hi, 4), whole[cut], tiled[cut]))
        print(f"    profile (index:whole/tiled) {profile}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
