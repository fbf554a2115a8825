"""The static web site: the page of `web/`, onnxruntime-web's runtime files and the ONNX model.

    write_site("site", onnx_bytes, metadata)   # then serve "site" from any static host
    python -m ifan_jax.export.site site --port 8000   # serve it here, cross-origin isolated

The directory holds `index.html`, `sw.js` (the service worker that makes the page cross-origin
isolated on hosts that send no headers, so it may run several WebAssembly threads) and `src/`
(the page's modules, from `web/`), `ort/` (the
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
import functools
import http.server
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
from ifan_jax.errors import ArgumentParser, UserError
from ifan_jax.inference import defocus, intent, tiling

WEB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "web")
RUNTIME = os.path.join("node_modules", "onnxruntime-web", "dist")
# The page imports ort.min.mjs (WebGPU and WASM), which loads the JSEP build of the WebAssembly runtime.
RUNTIME_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
PAGE_FILES = ("index.html", "sw.js")
PAGE_DIRS = ("src",)
# What makes a page cross-origin isolated (SharedArrayBuffer, so WebAssembly threads): sent by
# `python -m ifan_jax.export.site`, added by the page's service worker (web/sw.js) elsewhere.
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin",
                     "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin"}


class SiteError(UserError):
    """A folder that is not a written site, or a port the server cannot listen on."""


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
    try:
        tiling.check_tile(tile, overlap, aligned=True)
    except tiling.TileError:
        raise ValueError(f"the export's tile {tile} must be a multiple of 8 exceeding its overlap "
                         f"{overlap} by at least 8") from None
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


def site_bytes(directory: str | os.PathLike) -> int:
    """The total size in bytes of the regular files under `directory` (what a host serves)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                total += os.path.getsize(path)
    return total


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
          timeout: float = 30.0, headers: bool = False) -> Iterator[str]:
    """A static server of a written site in `directory` on `host` (a free port when `port` is 0),
    in a child process, for the duration of the `with` block; yields the site's URL. With
    `headers` it is `python -m ifan_jax.export.site` (sends `ISOLATION_HEADERS`), else plain
    `python -m http.server` (no headers, as most static hosts). A server that does not answer
    within `timeout` seconds is a RuntimeError."""
    if not port:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    module = "ifan_jax.export.site" if headers else "http.server"
    command = ([sys.executable, "-m", module, os.fspath(directory), "--port", str(port), "--bind", host]
               if headers else
               [sys.executable, "-m", module, str(port), "--bind", host, "--directory", os.fspath(directory)])
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{host}:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"python -m {module} did not start on {url}") from None
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """`http.server`'s static file handler that also sends `ISOLATION_HEADERS` and logs nothing."""

    def end_headers(self):
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format, *args):
        pass


def check_site(directory: str) -> None:
    """Raise SiteError unless `directory` holds a written site (index.html and model.json)."""
    if not os.path.isdir(directory):
        raise SiteError(f"{directory}: no such folder (write the site with python -m ifan_jax.export "
                        f"--ckpt=CKPT --web={directory})")
    for name in ("index.html", "model.json"):
        if not os.path.isfile(os.path.join(directory, name)):
            raise SiteError(f"{directory}: no {name} there, not a site written by python -m "
                            f"ifan_jax.export --web=DIR")


def main(argv=None) -> int:
    """`python -m ifan_jax.export.site DIR [--port 8000] [--bind 127.0.0.1]`: serve a written site
    with the cross-origin isolation headers until interrupted."""
    p = ArgumentParser(prog="python -m ifan_jax.export.site", name="site",
                       description="Serve a site written by `python -m ifan_jax.export --web=DIR` on "
                                   "this machine, with the headers that make the page cross-origin "
                                   "isolated (so it runs several WebAssembly threads at once).")
    p.add_argument("directory", help="the site's folder")
    p.add_argument("--port", type=int, default=8000, help="default %(default)s")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default %(default)s: this machine only)")
    args = p.parse_args(argv)
    say = lambda line: print(f"site: {line}", file=sys.stderr, flush=True)
    try:
        check_site(args.directory)
        handler = functools.partial(IsolatedHandler, directory=os.path.abspath(args.directory))
        try:
            server = http.server.ThreadingHTTPServer((args.bind, args.port), handler)
        except OSError as e:
            raise SiteError(f"{args.bind}:{args.port}: cannot listen there ({e.strerror or e})") from None
    except UserError as e:
        say(str(e))
        return 1
    host = f"[{args.bind}]" if ":" in args.bind else args.bind
    say(f"serving {args.directory} at http://{host}:{server.server_address[1]}/ (cross-origin "
        f"isolated); Ctrl+C stops")
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
