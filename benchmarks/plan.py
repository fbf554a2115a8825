"""Which rows a run measures, from the command line's choices (full or tiny, CPU or GPU, which
kinds of rows)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util

from benchmarks import rows, scenes, specs

# Full mode: the sizes the paper and issue time at; tiny mode: a smoke run whose numbers mean nothing.
FULL_SIZES = ((360, 640), (720, 1280))
TINY_SIZES = ((64, 96), (128, 192))
INPUT_SCENES = 8  # generated DPDD-layout scenes of the input-pipeline rows (full mode)
# Where the input rows read pixels, in the rows' names.
SOURCE_WORDS = {"store": "from the prepared store", "cache": "from the RAM cache (cache=True)",
                "decode": "decoding the PNGs of every example"}


def _repeats(tiny: bool, gpu: bool, height: int) -> int:
    if tiny:
        return 2
    if gpu:  # milliseconds per call: many calls for a stable median
        return 50
    return 5 if height <= 360 else 3


def plan(args: argparse.Namespace) -> list[rows.Row]:
    """The rows to measure, in order (checkpoint rows after the inference rows they compare
    with); only those whose kind (`rows.KINDS`) is in `args.rows` when that is given. A tiny run
    has page rows only when `args.rows` names their kinds (they need Chromium and `npm ci --prefix
    web`)."""
    selected = args.rows
    page_kinds = {"page", "page_photo", "webgpu"}
    page = _page_rows(args.tiny) if not args.tiny or page_kinds & set(selected or ()) else []
    return [row for row in _all_rows(args) + page if not selected or row.KIND in selected]


def _page_rows(tiny: bool) -> list[rows.Row]:
    """The static page in headless Chromium on the site of a random-weight model (full: the
    paper's, tiles of 512 overlapping by 64; tiny: ch=8, N=3, tiles of 128 by 32): one tile on WASM
    with 1 thread and with every core (against the 1-thread row; kind "page", minutes), a photo of
    many tiles end to end (full: 4000x3000, 12 megapixels, 63 tiles; kind "page_photo") and one
    tile on WebGPU through SwiftShader, a software GPU whose time says nothing of a real GPU's (kind
    "webgpu"); the last two take most of an hour on 2 cores."""
    model, tile, overlap = (specs.TINY_MODEL, 128, 32) if tiny else (specs.FULL_MODEL, 512, 64)
    photo = (200, 300) if tiny else (3000, 4000)
    common = dict(model=model, tile=tile, overlap=overlap)
    one = (tile, tile)
    long = 600.0 if tiny else 3600.0  # seconds for an upload of many tiles, or on SwiftShader
    return [
        rows.PageRow(key="page_wasm_1thread", name=f"page, WASM, 1 thread, one {tile}x{tile} tile",
                     job=specs.PageRun(backend="wasm", threads=1, photo=one, uploads=2), **common),
        rows.PageRow(key="page_wasm", name=f"page, WASM, all threads, one {tile}x{tile} tile",
                     job=specs.PageRun(backend="wasm", photo=one, uploads=2),
                     relative_to="page_wasm_1thread", **common),
        rows.PagePhotoRow(key="page_photo", name=f"page, WASM, all threads, a {photo[1]}x{photo[0]} photo "
                                            f"end to end",
                     job=specs.PageRun(photo=photo, uploads=1, timeout=long), **common),
        rows.WebGpuRow(key="page_webgpu", name=f"page, WebGPU on SwiftShader (a software GPU), one "
                                             f"{tile}x{tile} tile",
                     job=specs.PageRun(backend="webgpu", photo=one, uploads=1, timeout=long), **common),
    ]


def _all_rows(args: argparse.Namespace) -> list[rows.Row]:
    tiny, gpu = args.tiny, args.platform == "gpu"
    model = specs.TINY_MODEL if tiny else specs.FULL_MODEL
    separable = dataclasses.replace(model, iac_variant="separable")
    common = dict(dtype=args.dtype, platform=args.platform, warmup=3 if gpu else 0)
    checkout = None if tiny else args.official
    sizes = TINY_SIZES if tiny else FULL_SIZES
    out: list[rows.Row] = []
    for h, w in sizes:
        job = specs.Inference(model=model, size=(h, w), repeats=_repeats(tiny, gpu, h), **common)
        out.append(rows.InferenceRow(key=f"inference_{w}x{h}", name=f"inference {w}x{h}",
                                     job=job, checkout=checkout))
    if not tiny:
        for h, w in sizes:
            job = specs.Inference(model=separable, size=(h, w), repeats=_repeats(tiny, gpu, h),
                                  **common)
            out.append(rows.InferenceRow(key=f"inference_{w}x{h}_separable",
                                         name=f"inference {w}x{h}, separable IAC", job=job))
    # The real path: 640x360 and 1280x720 (tiny: the smaller size only).
    for h, w in sizes[:1] if tiny else sizes:
        job = specs.CheckpointInference(size=(h, w), repeats=_repeats(tiny, gpu, h), **common)
        out.append(rows.CheckpointRow(key=f"checkpoint_{w}x{h}", model=model, job=job,
                                      name=f"inference {w}x{h}, checkpoint loaded in a fresh "
                                           f"process", baseline=f"inference_{w}x{h}"))
    h, w = sizes[0]
    out.append(rows.CacheRow(key="compile_cache", name=f"compile cache {w}x{h}",
                             job=specs.Inference(model=model, size=(h, w), **common)))
    crop = 64 if tiny else 256
    for batch in (2,) if tiny else (2, 8):
        repeats = 1 if tiny else (20 if gpu else (5 if batch == 2 else 3))
        job = specs.TrainStep(model=separable, batch=batch, crop=crop, repeats=repeats, **common)
        key = "train" if batch == 2 else f"train_b{batch}"
        out.append(rows.TrainRow(key=key, name=f"train step {batch}x{crop}x{crop}", job=job,
                                 checkout=checkout))
        if not tiny:  # the lever that trades time for memory (config.model.remat)
            remat = dataclasses.replace(job, model=dataclasses.replace(separable, remat=True))
            out.append(rows.TrainRow(key=f"{key}_remat", baseline=key, job=remat,
                                     name=f"train step {batch}x{crop}x{crop}, model.remat=True"))
        if not tiny and batch == 8:  # the paper's batch in passes of 2 (config.microbatches)
            micro = dataclasses.replace(job, microbatches=4)
            out.append(rows.TrainRow(key=f"{key}_microbatches", baseline=key, job=micro,
                                     name=f"train step {batch}x{crop}x{crop}, "
                                          f"config.microbatches=4"))
    out += _iac_rows(model, tiny, gpu, common, checkout)
    if not tiny and not gpu and args.dtype == "float32" and _onnx_installed():
        out += _onnx_rows(model, sizes, common)
    if args.dtype == "bfloat16":
        size = (128, 128) if tiny else (512, 512)
        out.append(rows.PsnrRow(key="bf16_psnr", name="bfloat16 vs float32 output PSNR",
                                job=specs.Bf16Psnr(model=model, size=size, **common)))
    out += _input_rows(tiny)
    if gpu and not tiny:  # on 2 CPU cores the step itself takes seconds: nothing to learn
        job = specs.FedTrainStep(model=separable, batch=8, crop=256, bits=8, dtype=args.dtype,
                                 platform=args.platform, warmup=3, repeats=50)
        out.append(rows.FedTrainRow(key="train_b8_fed", job=job, scenes=INPUT_SCENES,
                                    image_size=scenes.DPDD_SIZE,
                                    name="train step 8x256x256 fed by the 8-bit input pipeline"))
    return out


def _iac_rows(model, tiny, gpu, common, checkout) -> list[rows.Row]:
    features = (1, 8, 12, 32) if tiny else (1, 90, 160, 128)
    n = model.num_iterations
    repeats = 2 if tiny else (50 if gpu else 5)
    job = specs.Iac(features=features, iterations=n, filter_size=3, repeats=repeats, **common)
    shape = "x".join(map(str, features))
    return [
        rows.IacRow(key="iac_map", name=f"IAC {shape} N={n}, given filter map",
                    job=dataclasses.replace(job, form="map"), checkout=checkout),
        rows.IacRow(key="iac_per_pixel", name="  the same, per-pixel gather reference",
                    job=dataclasses.replace(job, form="per_pixel")),
        rows.IacRow(key="iac_head", name=f"IAC {shape} N={n}, filters from features",
                    job=dataclasses.replace(job, form="head"), checkout=checkout),
    ]


def _onnx_installed() -> bool:
    """Whether the export extra (jax2onnx, onnxruntime) is there for the ONNX rows."""
    return all(importlib.util.find_spec(name) for name in ("jax2onnx", "onnxruntime"))


def _onnx_rows(model, sizes, common) -> list[rows.Row]:
    """onnxruntime on the CPU against our JAX forward, side by side in one process per size; more
    rounds than the other rows, for a ratio on a shared machine."""
    out = []
    for h, w in sizes:
        job = specs.OnnxVsJax(model=model, size=(h, w), repeats=7 if h <= 360 else 5, **common)
        out.append(rows.OnnxRow(key=f"onnx_{w}x{h}", job=job,
                                name=f"ONNX model {w}x{h}: onnxruntime (CPU) vs JAX"))
    h, w = sizes[0]  # --precision=float16: its time, file and PSNR against float32
    job = specs.OnnxVsJax(model=model, size=(h, w), repeats=5, sessions=("default",),
                          precision="float16", **common)
    out.append(rows.OnnxRow(key=f"onnx_float16_{w}x{h}", job=job,
                            name=f"ONNX model, float16, {w}x{h}: onnxruntime (CPU) vs JAX"))
    return out


def _input_rows(tiny: bool) -> list[rows.Row]:
    """The input pipeline on generated DPDD-layout PNGs, batch 8, 256x256 crops, 8 and 16 bit, from
    each source (tiny: one row, 8 bit from the store, two small scenes, batch 2, 32x32). On the
    host, whatever the platform."""
    if tiny:
        size, num, batch, crop = (128, 192), 2, 2, 32
        plans = [(8, "store", dict(warmup=1, repeats=3, one_thread_warmup=1,
                                   one_thread_repeats=2))]
    else:
        size, num, batch, crop = scenes.DPDD_SIZE, INPUT_SCENES, 8, 256
        fast = dict(warmup=5, repeats=50, one_thread_warmup=3, one_thread_repeats=20)
        slow = dict(warmup=1, repeats=5, one_thread_warmup=1, one_thread_repeats=2)  # ~1 s/batch
        plans = [(bits, source, slow if source == "decode" else fast)
                 for bits in (8, 16) for source in specs.SOURCES]
    out = []
    for bits, source, counts in plans:
        job = specs.InputPipeline(source=source, bits=bits, batch=batch, crop=crop,
                                  platform="cpu", **counts)
        out.append(rows.InputRow(key=f"input_{bits}bit_{source}", job=job, scenes=num,
                                 image_size=size,
                                 name=f"input pipeline, {bits}-bit {size[1]}x{size[0]}, batch "
                                      f"{batch}, {crop}x{crop}, {SOURCE_WORDS[source]}"))
    return out
