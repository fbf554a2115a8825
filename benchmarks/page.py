"""Our workers for the static page (`python -m ifan_jax.export --web`) in headless Chromium.

`make_site` exports a random-weight model (`benchmarks.weights.random_params`) with
`ifan_jax.export.export_onnx_bytes` and writes its site (`ifan_jax.export.site.write_site`; needs
`npm ci --prefix web`) once per run. `page_run` serves that site with plain `python -m http.server`
(no COOP/COEP headers: the page isolates itself through its service worker), opens it in headless
Chromium (`benchmarks.browser`; `webgpu`: SwiftShader's software WebGPU adapter) with the job's
`?backend=` and `?threads=`, and uploads a photo `uploads` times. Times are the page's own:
`window.ifan.tileTimes`, the milliseconds of each tile's `session.run`; the upload-to-done wall time
seen from here is recorded beside them.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from benchmarks import browser, specs


def make_site(job: specs.MakeSite) -> dict:
    """Export `job.model` with random weights at `job.tile` / `job.overlap` and write its site to
    `job.path`."""
    from benchmarks.weights import random_params
    from ifan_jax.export import export_estimator_bytes, export_onnx_bytes
    from ifan_jax.export import site as site_lib
    from ifan_jax.inference import Deblurrer

    config = job.model.config()
    deblurrer = Deblurrer(random_params(config), config)
    start = time.perf_counter()
    data, metadata = export_onnx_bytes(deblurrer, job.tile, job.overlap)
    estimator = export_estimator_bytes(deblurrer) if deblurrer.has_defocus_map else None
    export_s = time.perf_counter() - start
    site_lib.write_site(job.path, data, metadata, estimator_bytes=estimator)
    return {"path": job.path, "export_s": export_s, "model_bytes": len(data),
            "site_bytes": site_lib.site_bytes(job.path)}


def photo(path: str, size: tuple[int, int]) -> str:
    """Write an H x W photo-like JPEG (quality 90; `benchmarks.scenes.photo_like` plus fine noise)
    or, up to 512 pixels a side, `skimage.data.astronaut()`'s top-left corner as PNG."""
    h, w = size
    if h <= 512 and w <= 512:
        import skimage.data

        Image.fromarray(skimage.data.astronaut()[:h, :w]).save(path + ".png")
        return path + ".png"
    from benchmarks.scenes import photo_like

    rng = np.random.default_rng(0)
    pixels = photo_like(rng, size) + 0.02 * rng.standard_normal((h, w, 3))
    Image.fromarray(np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(path + ".jpg", quality=90)
    return path + ".jpg"


def page_run(job: specs.PageRun) -> dict:
    """Load the site in headless Chromium and upload a photo of `job.photo` (H, W) `job.uploads`
    times; the page's backend, threads, isolation and each tile's milliseconds."""
    from ifan_jax.export import site as site_lib

    if not browser.available():
        raise RuntimeError(f"the page rows {browser.MISSING}")
    scratch = tempfile.mkdtemp(prefix="ifan-page-")
    try:
        upload = photo(os.path.join(scratch, "photo"), job.photo)
        query = f"?backend={job.backend}" + (f"&threads={job.threads}" if job.threads else "")
        out = {"query": query, "photo": f"{job.photo[1]}x{job.photo[0]} {os.path.splitext(upload)[1][1:]}",
               "server": "python -m http.server (no COOP/COEP headers)", "runs": []}
        with site_lib.serve(job.site) as url:
            driver = browser.chromium(os.path.join(scratch, "profile"), webgpu=job.backend == "webgpu",
                                      performance_log=False)
            try:
                start = time.perf_counter()
                driver.get(url + query)
                state = browser.wait_for_page(driver, {"ready", "error"}, job.timeout)
                out["load_page_s"] = time.perf_counter() - start
                if state != "ready":
                    raise RuntimeError(f"the page did not load the model: {browser.page_message(driver)}")
                page = driver.execute_script(
                    "return {ifan: window.ifan, isolated: self.crossOriginIsolated, "
                    "cores: navigator.hardwareConcurrency, agent: navigator.userAgent, "
                    "text: document.getElementById('backend').textContent}")
                out.update(backend=page["ifan"]["backend"], threads=page["ifan"]["threads"],
                           isolation=page["ifan"]["isolation"], isolated=page["isolated"],
                           hardware_concurrency=page["cores"], browser=page["agent"],
                           backend_text=page["text"])
                if job.backend == "webgpu":
                    out["adapter"] = driver.execute_async_script(
                        "const done = arguments[0]; navigator.gpu.requestAdapter().then((a) => "
                        "done(a ? {vendor: a.info.vendor, architecture: a.info.architecture, "
                        "description: a.info.description} : null)).catch((e) => done(String(e)))")
                    out["software_gpu"] = (out["adapter"] or {}).get("architecture") == "swiftshader"
                if out["backend"] != job.backend:
                    raise RuntimeError(f"the page runs on {out['backend']}, not {job.backend}: "
                                       f"{page['text']}")
                for _ in range(job.uploads):
                    # Not done yet; and an emptied input, so the same file again is a change.
                    driver.execute_script("document.body.dataset.state = 'uploading';"
                                          "document.getElementById('photo').value = '';")
                    start = time.perf_counter()
                    driver.find_element("id", "photo").send_keys(upload)
                    state = browser.wait_for_page(driver, {"done", "error"}, job.timeout)
                    wall = time.perf_counter() - start
                    message = browser.page_message(driver)
                    if state != "done":
                        raise RuntimeError(f"the page failed on the photo: {message}")
                    tiles = driver.execute_script("return window.ifan.tileTimes")
                    out["runs"].append({"tile_ms": tiles, "upload_to_done_s": wall, "message": message,
                                        "load_before": list(os.getloadavg())})
                out["fallback"] = driver.execute_script("return window.ifan.fallback")
            finally:
                driver.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    first, *later = out["runs"]
    times = [t / 1000 for t in first["tile_ms"][1:]] + [t / 1000 for run in later for t in run["tile_ms"]]
    out.update(tiles=len(first["tile_ms"]), first_tile_s=first["tile_ms"][0] / 1000,
               time_s=statistics.median(times) if times else first["tile_ms"][0] / 1000,
               upload_to_done_s=statistics.median(run["upload_to_done_s"] for run in out["runs"]))
    return out
