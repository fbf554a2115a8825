"""The static web site: the page of `web/`, onnxruntime-web's runtime files and the ONNX model.

    write_site("site", onnx_bytes, metadata)   # then serve "site" from any static host

The directory holds `index.html` and `src/` (the page's modules, from `web/`), `ort/` (the
onnxruntime-web files the page loads, copied from `web/node_modules` after `npm ci --prefix web`),
`model.onnx`, for a model with a defocus map `estimator.onnx` (the disparity map estimator alone,
run over the tiles' blended `encoded` outputs: `ifan_jax.export.onnx.export_estimator`), and
`model.json`: the tile and overlap the page cuts photos into, whether the model has a defocus map,
how far a tile's edges reach into it and the estimator's tile size (`ifan_jax.inference.tiling`),
the defocus colour map (`ifan_jax.inference.defocus`) and the keep-the-bokeh /
readout constants (`ifan_jax.inference.intent.page_constants`), so the page computes what Python
computes. Everything the page fetches is in the directory: it works offline once served. The
directory is written all or nothing (`fileio.atomic_directory`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

from ifan_jax import fileio
from ifan_jax.inference import defocus, intent, tiling

WEB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "web")
RUNTIME = os.path.join("node_modules", "onnxruntime-web", "dist")
# The page imports ort.min.mjs (WebGPU and WASM), which loads the JSEP build of the WebAssembly runtime.
RUNTIME_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
PAGE_FILES = ("index.html",)
PAGE_DIRS = ("src",)


def _truth(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def site_config(metadata: dict) -> dict:
    """model.json's content for an export's metadata (the ONNX metadata_props, string values)."""
    try:
        tile, overlap = int(metadata["tile"]), int(metadata["overlap"])
        has_defocus = _truth(metadata["has_defocus"])
    except KeyError as e:
        raise ValueError(f"the export's metadata has no {e.args[0]!r}") from None
    except (TypeError, ValueError):
        raise ValueError(f"the export's metadata has a non-integer tile {metadata.get('tile')!r} or "
                         f"overlap {metadata.get('overlap')!r}") from None
    if tile <= 0 or tile % 8 or overlap < 0 or tile - -(-overlap // 8) * 8 < 8:
        raise ValueError(f"the export's tile {tile} must be a multiple of 8 exceeding its overlap "
                         f"{overlap} by at least 8")
    if _truth(metadata.get("dual_pixel", "false")):
        raise ValueError("the web page takes one photo: a dual-pixel model (two views) cannot run there")
    try:
        reach = [int(r) for r in str(metadata.get("map_reach", "")).split(",")] if has_defocus else []
    except ValueError:
        reach = []
    if has_defocus and (len(reach) != 3 or min(reach) < 0):
        raise ValueError(f"the export's metadata has no valid map_reach ({metadata.get('map_reach')!r}): "
                         f"export it again")
    parts = [f"N = {metadata['num_iterations']}"] if "num_iterations" in metadata else []
    if "channels" in metadata:
        parts.append(f"{metadata['channels']} channels")
    return {
        "name": "IFAN" + (f" ({', '.join(parts)})" if parts else ""),
        "tile": tile,
        "overlap": overlap,
        "has_defocus": has_defocus,
        # The map of a tiled photo: the reach of a tile's edges (before, after, estimator) and the
        # tile size the estimator runs in, on the 1/8 grid.
        "map_reach": reach,
        "estimator_tile": tiling.estimator_tile(tile) if has_defocus else 0,
        # The export's graphs take any H, W (multiples of 8) unless made with a fixed shape.
        "fixed_shape": not str(metadata.get("input_shape", "")).startswith("[1, H, W"),
        "metadata": {str(k): str(v) for k, v in metadata.items()},
        "viridis": defocus.VIRIDIS.tobytes().hex(),
        "low_percentile": defocus.LOW_PERCENTILE,
        "high_percentile": defocus.HIGH_PERCENTILE,
        "intent": intent.page_constants(),
    }


def write_site(directory: str | os.PathLike, onnx_bytes: bytes, metadata: dict, overwrite: bool = False,
               web: str = WEB, estimator_bytes: bytes | None = None) -> str:
    """Write the site for an exported model into `directory`; returns its absolute path.

    `onnx_bytes` and `metadata` are what `ifan_jax.export.onnx.export_onnx_bytes` returns,
    `estimator_bytes` what `export_estimator_bytes` does (required for a model with a defocus map).
    Raises FileExistsError if `directory` exists (unless `overwrite`), FileNotFoundError (one line)
    if `web/node_modules` has not been installed, ValueError for metadata the page cannot use."""
    config = site_config(metadata)
    if not onnx_bytes:
        raise ValueError("the ONNX model is empty")
    if config["has_defocus"] and not estimator_bytes:
        raise ValueError("a model with a defocus map needs its estimator (export_estimator_bytes)")
    runtime = os.path.join(web, RUNTIME)
    missing = [f for f in RUNTIME_FILES if not os.path.isfile(os.path.join(runtime, f))]
    if missing:
        raise FileNotFoundError(f"{os.path.join(runtime, missing[0])}: no onnxruntime-web runtime: "
                                f"run `npm ci --prefix web` first")
    with fileio.atomic_directory(directory, overwrite=overwrite) as tmp:
        for name in PAGE_FILES:
            shutil.copyfile(os.path.join(web, name), os.path.join(tmp, name))
        for name in PAGE_DIRS:
            shutil.copytree(os.path.join(web, name), os.path.join(tmp, name))
        os.makedirs(os.path.join(tmp, "ort"))
        for name in RUNTIME_FILES:
            shutil.copyfile(os.path.join(runtime, name), os.path.join(tmp, "ort", name))
        with open(os.path.join(tmp, "ort", "LICENSE.txt"), "w") as f:
            f.write(_runtime_license(web))
        with open(os.path.join(tmp, "model.onnx"), "wb") as f:
            f.write(onnx_bytes)
        if config["has_defocus"]:
            with open(os.path.join(tmp, "estimator.onnx"), "wb") as f:
                f.write(estimator_bytes)
        with open(os.path.join(tmp, "model.json"), "w") as f:
            json.dump(config, f, indent=1)
            f.write("\n")
    return os.path.abspath(directory)


def _runtime_license(web: str) -> str:
    """onnxruntime-web's MIT notice, which copies of it carry."""
    with open(os.path.join(web, "node_modules", "onnxruntime-web", "package.json")) as f:
        version = json.load(f)["version"]
    return f"onnxruntime-web {version} (https://github.com/microsoft/onnxruntime)\n\n" + MIT_LICENSE


MIT_LICENSE = """MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


@contextlib.contextmanager
def serve(directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
          timeout: float = 30.0) -> Iterator[str]:
    """`python -m http.server` serving a written site from `directory` on `host` (a free port
    when `port` is 0) for the duration of the `with` block; yields the site's URL. A server that
    does not answer within `timeout` seconds is a RuntimeError."""
    if not port:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", host,
                               "--directory", os.fspath(directory)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://{host}:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"python -m http.server did not start on {url}") from None
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
