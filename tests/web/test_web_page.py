"""The static web page (web/, written by `python -m ifan_jax.export --web=DIR`).

- Its JavaScript math (tiles, blending weights, keep-the-bokeh mask, Otsu's level, the defocus colour
  map) equals the Python definitions, checked in Node on arrays made here; the defocus map of a
  photo of several tiles (the tiles' 1/8-resolution `encoded` blended on the 1/8 grid where each is
  exact, the estimator run over that in tiles, upsampled once) equals
  `Deblurrer(..., return_defocus=True)`'s to float rounding.
- In headless Chromium, served by `python -m http.server`, the site of the exported tiny model
  deblurs a photo of several tiles to >= 45 dB of `Deblurrer`, loads nothing from outside the
  server and logs no console error; its defocus map is Python's to 1e-5; its controls re-blend
  (strength 0 gives the photo back exactly, keep-the-bokeh changes the result and the readout) and
  a file that is not an image gets a one-line message with the previous result and its download gone.
  The plain server sends no COOP/COEP headers: the page isolates itself through its service worker
  (`sw.js`) and runs WebAssembly on every core; where the worker cannot isolate it, it reloads once
  and goes on with one thread. `python -m ifan_jax.export.site` sends the headers itself.
- On WebGPU (SwiftShader, a software adapter), the same site deblurs to >= 45 dB of `Deblurrer`;
  a WebGPU session that fails while running (`?webgpu_fail=run`, or a float16 model on an adapter
  without float16 shaders) sends the photo to WASM with one line saying so.
"""

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from PIL import Image
from repo import ROOT

from benchmarks import browser
from ifan_jax.export import site as site_lib
from ifan_jax.inference import defocus as defocus_lib
from ifan_jax.inference import intent, tiling

WEB = os.path.join(ROOT, "web")
NODE = shutil.which("node")
CHROMIUM, CHROMEDRIVER = browser.CHROMIUM, browser.CHROMEDRIVER
HOST = browser.HOST
TILE, OVERLAP = 128, 32  # 300 x 200 photo: 3 x 2 tiles


def _node(script: str, data: dict) -> dict:
    """Run an ES-module `script` in Node with `data` as the global `input`; returns its JSON output."""
    if NODE is None:
        pytest.skip("needs Node.js (apt-get install nodejs)")
    src = "file://" + os.path.join(WEB, "src") + "/"
    code = (f"import * as tiling from '{src}tiling.js'; import * as intent from '{src}intent.js';"
            f"import * as colormap from '{src}colormap.js';"
            "const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));" + script)
    code = code.replace("require('fs')", "(await import('node:fs'))")
    proc = subprocess.run([NODE, "--input-type=module", "-e", code], input=json.dumps(data),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_page_thread_count():
    """Every core (at most 8) where the page is cross-origin isolated, `?threads=N` when given, one
    where it is not isolated (onnxruntime-web cannot share memory between threads there)."""
    if NODE is None:
        pytest.skip("needs Node.js (apt-get install nodejs)")
    src = "file://" + os.path.join(WEB, "src", "isolation.js")
    cases = [[True, None, 2], [True, None, 64], [True, "1", 2], [True, "3", 2], [True, "x", 4],
             [True, "0", 4], [True, None, None], [False, None, 16], [False, "4", 16]]
    code = (f"import {{ threadCount }} from '{src}';"
            f"console.log(JSON.stringify({json.dumps(cases)}.map((c) => threadCount(...c))));")
    proc = subprocess.run([NODE, "--input-type=module", "-e", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [2, 8, 1, 3, 4, 4, 1, 1, 1]


def test_page_tiling_equals_python():
    cases = [(200, 128, 32), (304, 128, 32), (1000, 256, 64), (2000, 512, 64), (136, 128, 64),
             (128, 128, 32), (4000, 1024, 100)]
    got = _node("""
      const out = input.map(([length, tile, overlap]) => {
        const starts = tiling.tileStarts(length, tile, overlap);
        return {starts, weights: tiling.axisWeights(starts, tile).map((w) => Array.from(w))};
      });
      console.log(JSON.stringify({out, shape: tiling.tileShape(100, 333, 128),
                                  plan: tiling.plan(200, 300, 128, 32).count}));""", cases)
    for (length, tile, overlap), page in zip(cases, got["out"]):
        starts = tiling.tile_starts(length, tile, overlap)
        assert page["starts"] == starts, (length, tile, overlap)
        for w_page, w in zip(page["weights"], tiling.axis_weights(starts, tile)):
            np.testing.assert_array_equal(np.float32(w_page), w)
    assert got["shape"] == list(tiling.tile_shape(100, 333, 128))
    assert got["plan"] == tiling.num_tiles(200, 300, 128, 32) == 6


def test_page_context_weights_equal_python():
    """The map's weights on the 1/8 grid (`contextWeights`, starts with align 1), bit for bit."""
    cases = [(40, 16, 8, 5, 4), (63, 16, 9, 5, 4), (500, 64, 20, 10, 10), (25, 25, 0, 5, 4),
             (130, 11, 8, 5, 4), (47, 12, 3, 5, 4), (100, 24, 6, 0, 0)]
    got = _node("""
      const out = input.map(([length, tile, overlap, before, after]) => {
        const starts = tiling.tileStarts(length, tile, overlap, 1);
        const weights = tiling.contextWeights(starts, tile, before, after);
        return {starts, weights: weights.map((w) => Array.from(w))};
      });
      console.log(JSON.stringify(out));""", cases)
    for (length, tile, overlap, before, after), page in zip(cases, got):
        starts = tiling.tile_starts(length, tile, overlap, 1)
        assert page["starts"] == starts, (length, tile, overlap)
        for w_page, w in zip(page["weights"], tiling.context_weights(starts, tile, before, after)):
            np.testing.assert_array_equal(np.float32(w_page), w)


def _box(x: np.ndarray) -> np.ndarray:
    """A stand-in estimator, stride 1 with reach 1: the 3 x 3 mean (zero-padded) of sum_k (k + 1) x
    channel k, (1, h, w, C) -> (1, h, w, 1); the page's test does the same in JavaScript."""
    weighted = (np.asarray(x, np.float64) * np.arange(1, x.shape[-1] + 1)).sum(-1)[0]
    padded = np.pad(weighted, 1)
    h, w = weighted.shape
    out = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9
    return out[None, ..., None].astype(np.float32)


BOX_JS = """
  const box = async (t, rows, cols, channels) => {
    const weighted = new Float64Array(rows * cols), out = new Float32Array(rows * cols);
    for (let p = 0; p < rows * cols; p++) {
      for (let k = 0; k < channels; k++) weighted[p] += t[p * channels + k] * (k + 1);
    }
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
      let sum = 0;
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
        const y = r + dy, x = c + dx;
        if (y >= 0 && y < rows && x >= 0 && x < cols) sum += weighted[y * cols + x];
      }
      out[r * cols + c] = sum / 9;
    }
    return out;
  };"""


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed_shape", "any_shape"])
@pytest.mark.parametrize("h, w", [(150, 230), (50, 230)])
def test_page_blending_of_tiles_equals_python(fixed, h, w):
    """deblurTiled with a tile function that returns a position-dependent result (so every seam
    shows): the same blend as tiling.deblur_tiled, including the edge padding past the image, the
    image at full resolution and the map's input (`encoded`, 1/8 of the tile, 2 channels) on the
    1/8 grid with the reach's weights, the estimator (a stand-in) run over it in tiles as
    tiling.estimate_tiled does, then upsampled once as `defocus.upsample_map`. A fixed-shape model
    gets every tile edge-padded to its shape; otherwise tiles run at their shape."""
    rng = np.random.default_rng(1)
    size, reach, estimator_tile = 64, (2, 1, 1), 6
    image = rng.random((h, w, 3), np.float32)

    def python_tile(t):  # depends on the whole tile and the position in it: shows every seam
        mean = t.mean(axis=(0, 1), dtype=np.float64)
        y = 0.5 * t + mean + np.arange(t.shape[0])[:, None, None] / 256
        s = t[3::8, 5::8]  # one pixel of each 8 x 8 block
        low = 2 * s[..., :2] - s[..., 1:3] + mean[2] + np.arange(s.shape[0])[:, None, None] / 32
        return y.astype(np.float32), low.astype(np.float32)

    def forward(batch):
        if not fixed:  # the tiles as Python cuts them
            outs = [python_tile(t) for t in batch]
        else:
            outs = [python_tile(_pad(t, size)) for t in batch]
            outs = [(y[:t.shape[0], :t.shape[1]], low[:t.shape[0] // 8, :t.shape[1] // 8])
                    for (y, low), t in zip(outs, batch)]
        return np.stack([y for y, _ in outs]), np.stack([low for _, low in outs])

    expected, encoded = tiling.deblur_tiled(forward, [image], size, 24, reach=reach[:2])
    expected_low = tiling.estimate_tiled(_box, encoded, estimator_tile, reach[2])
    expected_map = defocus_lib.upsample_map(expected_low[..., 0], h, w)
    got = _node(BOX_JS + """
      const {h, w, size, image, fixed, reach, estimatorTile} = input;
      const run = async (t, rows, cols) => {
        const want = fixed ? size : Math.min(size, tiling.roundUp(h));
        if (rows !== want || cols !== size) throw new Error(`tile ${rows} x ${cols}`);
        const y = new Float32Array(rows * cols * 3), d = new Float32Array(rows * cols / 64 * 2);
        const mean = [0, 1, 2].map((k) => t.filter((_, i) => i % 3 === k).reduce((a, b) => a + b, 0)
                                          / (rows * cols));
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
          const p = (r * cols + c) * 3;
          for (let k = 0; k < 3; k++) y[p + k] = 0.5 * t[p + k] + mean[k] + r / 256;
        }
        for (let r = 0; r < rows / 8; r++) for (let c = 0; c < cols / 8; c++) {
          const p = ((8 * r + 3) * cols + 8 * c + 5) * 3;
          for (let k = 0; k < 2; k++) {
            d[(r * cols / 8 + c) * 2 + k] = 2 * t[p + k] - t[p + k + 1] + mean[2] + r / 32;
          }
        }
        return {deblurred: y, encoded: d};
      };
      const out = await tiling.deblurTiled(Float32Array.from(image), h, w, size, 24, run, null, fixed,
                                           {run: box, reach, tile: estimatorTile});
      console.log(JSON.stringify({image: Array.from(out.image), defocus: Array.from(out.defocus),
                                  low: Array.from(out.low)}));""",
                dict(h=h, w=w, size=size, image=image.ravel().tolist(), fixed=fixed, reach=reach,
                     estimatorTile=estimator_tile))
    assert tiling.num_tiles(h, w, size, 24) > 3 and max(encoded.shape[:2]) > 2 * estimator_tile
    np.testing.assert_allclose(np.reshape(got["image"], (h, w, 3)), expected, atol=2e-6)
    np.testing.assert_allclose(np.reshape(got["low"], expected_low.shape[:2]), expected_low[..., 0],
                               atol=2e-6)
    np.testing.assert_allclose(np.reshape(got["defocus"], (h, w)), expected_map, atol=2e-6)


def test_page_upsampling_equals_python():
    """upsampleMap: bilinear with half-pixel centres, edges clamped, x8 and cropped, as
    `defocus.upsample_map` (jax.image.resize "bilinear")."""
    rng = np.random.default_rng(5)
    cases = [(7, 13, 50, 100), (1, 1, 8, 3), (2, 5, 16, 40), (9, 4, 65, 25)]
    lows = [rng.standard_normal((h8, w8)).astype(np.float32) for h8, w8, _, _ in cases]
    got = _node("""
      const out = input.map(({low, h8, w8, h, w}) =>
        Array.from(tiling.upsampleMap(Float32Array.from(low), h8, w8, h, w)));
      console.log(JSON.stringify(out));""",
                [dict(low=low.ravel().tolist(), h8=h8, w8=w8, h=h, w=w)
                 for low, (h8, w8, h, w) in zip(lows, cases)])
    for low, (_, _, h, w), page in zip(lows, cases, got):
        expected = defocus_lib.upsample_map(low, h, w)
        assert max_abs(np.reshape(page, (h, w)), expected) <= 1e-6, (low.shape, h, w)


def max_abs(a, b) -> float:
    assert np.shape(a) == np.shape(b), (np.shape(a), np.shape(b))
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.slow  # 6 s in a 2-core run (the tiny network's tiles and two tiled runs)
def test_page_defocus_map_of_several_tiles_equals_deblurrer(tiny_official_checkpoint, tmp_path):
    """A 300 x 200 photo in 3 x 2 tiles of 128 overlapping by 32 (the site's): deblurTiled, fed each
    tile's outputs of the tiny official network (what the exported model gives for that tile) and
    the estimator's outputs on the map it blends (what estimator.onnx gives), gives
    `Deblurrer(..., return_defocus=True)`'s image and map to float rounding, and its map is not
    the one the tiles' own maps blended make."""
    from ifan_jax.inference import Deblurrer

    h, w = 200, 300
    image = _photo(str(tmp_path / "garden.png"), h, w)
    deblur = Deblurrer.from_checkpoint(tiny_official_checkpoint)
    sharp, defocus = deblur(image, tile=TILE, overlap=OVERLAP, return_defocus=True)
    ys = tiling.tile_starts(tiling.round_up(h), TILE, OVERLAP)
    xs = tiling.tile_starts(tiling.round_up(w), TILE, OVERLAP)
    padded = np.pad(image, ((0, tiling.round_up(h) - h), (0, tiling.round_up(w) - w), (0, 0)), mode="edge")
    tiles = np.stack([padded[y:y + TILE, x:x + TILE] for y in ys for x in xs])
    outs, encoded = deblur.run_batch_features(tiles)
    outs, encoded = np.asarray(outs, np.float32), np.asarray(encoded, np.float32)
    # The estimator's tiles over the blended map, as estimate_tiled cuts them.
    reach = deblur.model.map_reach()
    _, blended = tiling.deblur_tiled(deblur.run_batch_features, [image], TILE, OVERLAP, reach=reach[:2])
    est_tile = tiling.estimator_tile(TILE)
    th, tw = min(est_tile, blended.shape[0]), min(est_tile, blended.shape[1])
    cuts = [blended[None, y:y + th, x:x + tw]
            for y in tiling.tile_starts(blended.shape[0], th, 2 * reach[2], 1)
            for x in tiling.tile_starts(blended.shape[1], tw, 2 * reach[2], 1)]
    estimates = [np.asarray(deblur.estimate(c), np.float32) for c in cuts]
    got = _node("""
      const {h, w, tile, overlap, image, tiles, outs, encoded, cuts, estimates, reach, estimatorTile} = input;
      let k = 0, m = 0, input_diff = 0, estimator_input_diff = 0;
      const run = async (t, rows, cols) => {
        const want = tiles[k];
        for (let p = 0; p < t.length; p++) input_diff = Math.max(input_diff, Math.abs(t[p] - want[p]));
        const out = {deblurred: Float32Array.from(outs[k]), encoded: Float32Array.from(encoded[k])};
        k += 1;
        return out;
      };
      const estimate = async (t, rows, cols, channels) => {
        const want = cuts[m];
        for (let p = 0; p < t.length; p++) {
          estimator_input_diff = Math.max(estimator_input_diff, Math.abs(t[p] - want[p]));
        }
        return Float32Array.from(estimates[m++]);
      };
      const out = await tiling.deblurTiled(Float32Array.from(image), h, w, tile, overlap, run, null, false,
                                           {run: estimate, reach, tile: estimatorTile});
      console.log(JSON.stringify({image: Array.from(out.image), defocus: Array.from(out.defocus),
                                  calls: k, estimator_calls: m, input_diff, estimator_input_diff}));""",
                dict(h=h, w=w, tile=TILE, overlap=OVERLAP, image=image.ravel().tolist(),
                     tiles=[t.ravel().tolist() for t in tiles], outs=[o.ravel().tolist() for o in outs],
                     encoded=[e.ravel().tolist() for e in encoded], cuts=[c.ravel().tolist() for c in cuts],
                     estimates=[e.ravel().tolist() for e in estimates], reach=list(reach),
                     estimatorTile=est_tile))
    assert got["calls"] == len(tiles) == 6 and got["input_diff"] == 0
    assert got["estimator_calls"] == len(cuts) and got["estimator_input_diff"] <= 1e-6
    page_map = np.reshape(got["defocus"], (h, w))
    map_diff, image_diff = max_abs(page_map, defocus), max_abs(np.reshape(got["image"], (h, w, 3)), sharp)
    # For scale: the tiles' own maps (`disparity`) blended on the 1/8 grid.
    _, own = tiling.deblur_tiled(deblur.run_batch_coarse, [image], TILE, OVERLAP)
    own_diff = max_abs(defocus_lib.upsample_map(own[..., 0], h, w), defocus)
    print(f"page vs Deblurrer, {h} x {w} in {len(tiles)} tiles: map max abs {map_diff:.2e} (map values "
          f"up to {np.abs(defocus).max():.3f}; the tiles' own maps blended differ by {own_diff:.2e}), "
          f"image {image_diff:.2e}")
    assert map_diff <= 1e-5
    assert image_diff <= 2e-6
    assert own_diff > 100 * map_diff  # the test tells the rules apart


def _pad(tile: np.ndarray, size: int) -> np.ndarray:
    return np.pad(tile, ((0, size - tile.shape[0]), (0, size - tile.shape[1]), (0, 0)), mode="edge")


def test_page_intent_and_colour_map_equal_python():
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(2)
    h, w = 61, 97
    yy, xx = np.mgrid[0:h, 0:w]
    d = (np.where(xx > 50, 1.5, 0.2) * (1 + 0.3 * rng.standard_normal((h, w)))
         * np.sign(np.sin(yy / 5 + 0.1))).astype(np.float32)
    x, y = rng.random((h, w, 3), np.float32), rng.random((h, w, 3), np.float32)
    got = _node("""
      const {h, w, d, x, y, constants, table} = input;
      const map = Float32Array.from(d);
      const smoothed = intent.boxMeanAbs(map, h, w, 16);
      const level = intent.autoLevel(map, constants);
      const weights = intent.keepWeights(smoothed, 0.6);
      const out = intent.blend(Float32Array.from(x), Float32Array.from(y), 0.7, weights);
      const same = intent.blend(Float32Array.from(x), Float32Array.from(y), 0, weights);
      const full = intent.blend(Float32Array.from(x), Float32Array.from(y), 1, null);
      const readout = intent.readout(Float32Array.from(x), out, map, constants);
      const rgba = colormap.colorize(map, colormap.parseTable(table), 1, 99);
      const zero = intent.autoLevel(new Float32Array(16), constants);
      console.log(JSON.stringify({smoothed: Array.from(smoothed), level, weights: Array.from(weights),
        out: Array.from(out), same: Array.from(same), full: Array.from(full), readout, zero,
        rgba: Array.from(rgba)}));""",
                dict(h=h, w=w, d=d.ravel().tolist(), x=x.ravel().tolist(), y=y.ravel().tolist(),
                     constants=intent.page_constants(), table=defocus_lib.VIRIDIS.tobytes().hex()))
    a = ndimage.uniform_filter(np.abs(d).astype(np.float64), size=33, mode="nearest")
    np.testing.assert_allclose(np.reshape(got["smoothed"], (h, w)), a, atol=1e-6)
    theta = threshold_otsu(np.abs(d), nbins=256)
    assert got["level"] == pytest.approx(2 * theta / 3, rel=1e-5) == intent.auto_level(d)
    assert got["zero"] == intent.auto_level(np.zeros((4, 4))) > 0
    t = np.clip((a - 0.6) / 0.6, 0, 1)
    weights = 1 - t * t * (3 - 2 * t)
    np.testing.assert_allclose(np.reshape(got["weights"], (h, w)), weights, atol=1e-6)
    # The map makes all three parts of the ramp: kept (0), deblurred (1) and between.
    assert (weights == 0).any() and (weights == 1).any() and ((weights > 0.05) & (weights < 0.95)).any()
    np.testing.assert_allclose(np.reshape(got["out"], (h, w, 3)), x + 0.7 * weights[..., None] * (y - x),
                               atol=1e-6)
    np.testing.assert_array_equal(np.float32(got["same"]), x.ravel())  # strength 0: exactly x
    np.testing.assert_array_equal(np.float32(got["full"]), y.ravel())  # strength 1: exactly y
    python = intent.blend(x, y, 0.7, intent.keep_mask(d, 0.6))
    np.testing.assert_allclose(np.reshape(got["out"], (h, w, 3)), python, atol=1e-6)
    r = intent.readout(x, python, d)
    assert [share for _, share in got["readout"]["shares"]] == pytest.approx(list(r.shares.values()))
    assert got["readout"]["share"] == pytest.approx(r.out_of_focus)
    assert got["readout"]["median"] == pytest.approx(r.median, rel=1e-6)
    assert got["readout"]["psnr"] == pytest.approx(r.psnr, abs=1e-4)
    assert got["readout"]["sentence"] == r.sentence
    rgb = np.reshape(got["rgba"], (h, w, 4))
    assert (rgb[..., 3] == 255).all()
    assert np.abs(rgb[..., :3] - defocus_lib.colorize(d).astype(int)).max() <= 1


# --------------------------------------------------------------------------- the site writer

METADATA = {"ifan_jax_version": "0.1.0", "num_iterations": "3", "iac_variant": "official", "bit_depth": "8",
            "tile": "128", "overlap": "32", "channels": "8", "has_defocus": "true", "dual_pixel": "false",
            "source_sha256": "0" * 64, "map_reach": "5,4,10",
            "input_shape": "[1, H, W, 3], H and W multiples of 8"}


@pytest.fixture
def fake_web(tmp_path):
    """A copy of web/ with stand-ins for onnxruntime-web's files (no npm needed)."""
    web = tmp_path / "web"
    shutil.copytree(WEB, web, ignore=shutil.ignore_patterns("node_modules"))
    dist = web / "node_modules" / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name in site_lib.RUNTIME_FILES:
        (dist / name).write_text(f"// {name}\n")
    (dist / "ort.all.min.mjs").write_text("// not needed by the page\n")
    (dist.parent / "package.json").write_text('{"version": "1.31.1", "license": "MIT"}')
    return str(web)


def test_write_site_writes_the_page_the_runtime_and_the_model(fake_web, tmp_path):
    out = tmp_path / "site"
    assert site_lib.write_site(out, b"onnx bytes", METADATA, web=fake_web,
                               estimator_bytes=b"estimator bytes") == str(out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted(["index.html", "sw.js", "model.json", "model.onnx", "estimator.onnx",
                            "ort/LICENSE.txt",
                            *(f"ort/{n}" for n in site_lib.RUNTIME_FILES),
                            *(f"src/{n}" for n in os.listdir(os.path.join(WEB, "src")))])
    assert (out / "model.onnx").read_bytes() == b"onnx bytes"
    assert (out / "estimator.onnx").read_bytes() == b"estimator bytes"
    config = json.loads((out / "model.json").read_text())
    assert (config["tile"], config["overlap"], config["has_defocus"], config["fixed_shape"]) == (
        128, 32, True, False)
    assert config["map_reach"] == [5, 4, 10] and config["estimator_tile"] == tiling.estimator_tile(128)
    assert config["intent"] == json.loads(json.dumps(intent.page_constants()))
    assert bytes.fromhex(config["viridis"]) == defocus_lib.VIRIDIS.tobytes()
    assert config["metadata"] == METADATA and "N = 3, 8 channels" in config["name"]
    assert "MIT License" in (out / "ort" / "LICENSE.txt").read_text()
    # The page loads the runtime from ort/ and nothing from outside.
    html = (out / "index.html").read_text()
    assert '"onnxruntime-web": "./ort/ort.min.mjs"' in html and "http" not in html.replace("http-equiv", "")
    fixed = site_lib.write_site(tmp_path / "fixed", b"x", {**METADATA, "input_shape": "[1, 128, 128, 3]"},
                                web=fake_web, estimator_bytes=b"e")
    assert json.loads(open(os.path.join(fixed, "model.json")).read())["fixed_shape"] is True


def test_write_site_errors_are_one_line(fake_web, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    with pytest.raises(FileExistsError):
        site_lib.write_site(out, b"x", METADATA, web=fake_web, estimator_bytes=b"e")
    site_lib.write_site(out, b"new", METADATA, overwrite=True, web=fake_web, estimator_bytes=b"e")
    assert (out / "model.onnx").read_bytes() == b"new"
    shutil.rmtree(os.path.join(fake_web, "node_modules"))
    with pytest.raises(FileNotFoundError, match=r"run `npm ci --prefix web` first$"):
        site_lib.write_site(tmp_path / "other", b"x", METADATA, web=fake_web, estimator_bytes=b"e")
    assert not (tmp_path / "other").exists()
    for bad, match, estimator in [({**METADATA, "dual_pixel": "true"}, "dual-pixel", b"e"),
                                  ({k: v for k, v in METADATA.items() if k != "tile"}, "no 'tile'", b"e"),
                                  ({**METADATA, "tile": "100"}, "multiple of 8", b"e"),
                                  ({**METADATA, "overlap": "124"}, "exceeding its overlap", b"e"),
                                  ({**METADATA, "map_reach": "5,4"}, "no valid map_reach", b"e"),
                                  (METADATA, "needs its estimator", None)]:
        with pytest.raises(ValueError, match=match) as e:
            site_lib.write_site(tmp_path / "bad", b"x", bad, web=fake_web, estimator_bytes=estimator)
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- the page in Chromium

def _photo(path: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    """An 8-bit PNG photo with smooth shapes and fine detail; returns it as float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.4 * np.sin(9 * x + c + seed) * np.cos(6 * y - c) for c in range(3)], -1)
    pixels = np.rint(np.clip(base + 0.04 * rng.standard_normal((h, w, 3)), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels.astype(np.float32) / 255


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


@pytest.fixture(scope="module")
def site(tiny_official_checkpoint, tmp_path_factory):
    """The export's --web site of the tiny official model (ch=8, N=3), tiles of 128 overlapping by
    32, served by `python -m http.server` on a free port; yields (url, checkpoint)."""
    if not os.path.isdir(os.path.join(WEB, "node_modules", "onnxruntime-web")):
        pytest.skip("needs the page's npm packages: npm ci --prefix web")
    if importlib.util.find_spec("ifan_jax.export.__main__") is None:
        pytest.skip("needs the ONNX export's packages: pip install -e \".[export]\"")
    directory = str(tmp_path_factory.mktemp("web") / "site")
    proc = subprocess.run([sys.executable, "-m", "ifan_jax.export", f"--ckpt={tiny_official_checkpoint}",
                           f"--web={directory}", f"--tile={TILE}", f"--overlap={OVERLAP}"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The last line states what a host serves: the folder's bytes (the runtime, the page, the model).
    last = proc.stderr.strip().splitlines()[-1]
    total, model = site_lib.site_bytes(directory), os.path.getsize(os.path.join(directory, "model.onnx"))
    assert last.startswith(f"export: wrote {directory}: {total / 1e6:.1f} MB (the model "
                           f"{model / 1e6:.1f} MB) in "), last
    assert total > 10 * model  # the WebAssembly runtime is most of the tiny model's site
    with open(os.path.join(directory, "model.json")) as f:
        config = json.load(f)
    assert (config["tile"], config["overlap"], config["has_defocus"]) == (TILE, OVERLAP, True)
    with site_lib.serve(directory) as url:
        yield url, tiny_official_checkpoint


def _browser(webgpu: bool = False):
    """Headless Chromium (`benchmarks.browser`): without a GPU, or with SwiftShader's WebGPU."""
    pytest.importorskip("selenium.webdriver", reason="needs Selenium: pip install -r requirements-test.txt")
    return browser.chromium(tempfile.mkdtemp(prefix="chromium-"), webgpu=webgpu)


class Page:
    def __init__(self, driver):
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By

    def el(self, id_):
        return self.driver.find_element(self.by.ID, id_)

    def state(self) -> str:
        return self.driver.execute_script("return document.body.dataset.state")

    def wait(self, states, timeout=180) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.state()) not in states:
            if time.monotonic() > deadline:
                pytest.fail(f"the page stayed {state!r} ({self.el('message').text!r}), waiting for {states}")
            time.sleep(0.05)
        return state

    def upload(self, path: str) -> str:
        self.el("photo").send_keys(path)
        return self.wait({"done", "error"})

    def set(self, id_, value) -> str:
        """Move a control as a user does (value, then the input/change event) and wait for the
        re-blend."""
        self.driver.execute_script(
            "const e = document.getElementById(arguments[0]);"
            "if (e.type === 'checkbox') { e.checked = arguments[1]; e.dispatchEvent(new Event('change')); }"
            "else { e.value = arguments[1]; e.dispatchEvent(new Event('input')); }", id_, value)
        return self.wait({"done", "error"})

    def download(self) -> np.ndarray:
        """The PNG behind #download, fetched in the page; float32 RGB in [0, 1]."""
        data = self.driver.execute_async_script("""
          const done = arguments[arguments.length - 1];
          const link = document.getElementById('download');
          fetch(link.href).then((r) => r.blob()).then((blob) => {
            const reader = new FileReader();
            reader.onload = () => done([link.download, reader.result.split(',')[1]]);
            reader.readAsDataURL(blob);
          }).catch((e) => done(['', String(e)]));""")
        assert data[0], data[1]
        path = os.path.join(tempfile.mkdtemp(), data[0])
        with open(path, "wb") as f:
            f.write(base64.b64decode(data[1]))
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "RGBA", (im.format, im.mode)
            pixels = np.asarray(im)
        assert (pixels[..., 3] == 255).all()
        return pixels[..., :3].astype(np.float32) / 255


def _check_logs(driver, url: str) -> None:
    """No console error or console warning; every request the page's log shows went to the local
    server. On WASM the model and the WebAssembly runtime are fetched by onnxruntime-web's worker,
    whose requests this log does not show; the browser resolves no host but 127.0.0.1 anyway."""
    entries = driver.get_log("browser")
    bad = [e for e in entries if e["level"] == "SEVERE" or
           (e["level"] == "WARNING" and e.get("source") == "console-api")]
    assert not bad, bad
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    outside = [u for u in requests if u.split(":")[0] in ("http", "https", "ws", "wss", "ftp")
               and not u.startswith(url)]
    assert not outside, outside
    assert {url + "src/main.js", url + "ort/ort.min.mjs"} <= set(requests), requests


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
                    reason="the browser test needs Chromium and its driver: "
                           "apt-get install chromium chromium-driver")
def test_in_chromium_the_site_deblurs_like_python_and_its_controls_reblend(site, tmp_path):
    from ifan_jax.inference import Deblurrer

    url, checkpoint = site
    h, w = 200, 300
    photo = str(tmp_path / "garden.png")
    image = _photo(photo, h, w)
    small_photo = str(tmp_path / "small.png")  # smaller than a tile, not a multiple of 8
    small = _photo(small_photo, 75, 90, seed=4)
    not_image = tmp_path / "notes.png"
    not_image.write_bytes(b"these bytes are not a photo\n")
    start = time.monotonic()
    driver = _browser()
    try:
        page = Page(driver)
        driver.get(url)
        assert page.wait({"ready", "error"}) == "ready", page.el("message").text
        # The plain server sends no headers: the service worker made the page cross-origin isolated,
        # so WebAssembly runs on every core (2 on a 2-core machine), and the page says so.
        env = driver.execute_script("return {isolated: self.crossOriginIsolated, cores: "
                                    "navigator.hardwareConcurrency, ifan: window.ifan, "
                                    "controlled: !!navigator.serviceWorker.controller}")
        assert env["isolated"] is True and env["controlled"] is True
        assert env["ifan"]["isolation"] == "isolated" and env["ifan"]["backend"] == "wasm"
        threads = env["ifan"]["threads"]
        assert threads == min(env["cores"], 8) and (threads >= 2 or env["cores"] == 1)
        label = f"{threads} thread" + ("s" if threads > 1 else "")
        assert page.el("backend").text.endswith(f"running on WASM (the CPU), {label}.")
        assert "16-bit PNGs at 8 bits" in driver.find_element(page.by.TAG_NAME, "body").text

        assert page.upload(photo) == "done", page.el("message").text
        assert page.el("message").text.endswith(f"a tile, WASM, {label}).")
        timings = driver.execute_script("return window.ifan")
        assert len(timings["tileTimes"]) == tiling.num_tiles(h, w, TILE, OVERLAP) == 6
        assert float(page.el("progress").get_attribute("value")) == 6
        out = page.download()
        page_map = np.float32(driver.execute_script("return Array.from(window.ifan.defocus)"))
        assert page.el("download").get_attribute("download") == "garden_deblurred.png"
        readout = page.el("readout").text
        assert "|defocus|: " in readout and "median " in readout and "dB" in readout

        page.set("strength", "0")
        np.testing.assert_array_equal(page.download(), image)  # the photo's own pixels
        assert "output = input" in page.el("readout").text
        page.set("strength", "1")
        np.testing.assert_array_equal(page.download(), out)

        assert page.el("level").get_attribute("disabled")
        page.set("keep_bokeh", True)
        assert not page.el("level").get_attribute("disabled")
        auto = driver.execute_script("return window.ifan.autoLevel")
        assert driver.execute_script("return window.ifan.level") == auto
        kept = page.download()
        kept_readout = page.el("readout").text
        assert "Bokeh kept" in kept_readout and kept_readout != readout
        page.set("level", str(auto / 4))  # a low level keeps more of the photo as it was
        low = page.download()
        assert _psnr(low, image) > _psnr(kept, image) > _psnr(out, image)
        page.set("keep_bokeh", False)
        np.testing.assert_array_equal(page.download(), out)

        assert page.upload(str(not_image)) == "error"
        message = page.el("message").text
        assert message.startswith("notes.png: ") and "\n" not in message, message
        link = page.el("download")
        assert link.get_attribute("href") is None and link.get_attribute("hidden") is not None
        assert not link.is_displayed()
        assert not page.el("result").is_displayed() and page.el("readout").text == ""
        assert page.upload(photo) == "done"  # the page still works after the error
        np.testing.assert_array_equal(page.download(), out)
        assert page.upload(small_photo) == "done"
        small_out = page.download()
        # A new upload while a photo is running: the first stops, the second's result is shown.
        page.el("photo").send_keys(photo)
        assert page.upload(small_photo) == "done" and page.el("message").text.startswith("small.png: ")
        np.testing.assert_array_equal(page.download(), small_out)
        _check_logs(driver, url)
    finally:
        driver.quit()
    seconds = time.monotonic() - start

    deblur = Deblurrer.from_checkpoint(checkpoint)
    sharp, defocus = deblur(image, tile=TILE, overlap=OVERLAP, return_defocus=True)
    psnr = _psnr(out, np.clip(sharp, 0, 1))
    # The page's map (onnxruntime-web's `encoded` blended on the 1/8 grid, estimator.onnx run over it,
    # upsampled once) is Python's (the Deblurrer's tiles blended the same way) to float rounding.
    map_diff = float(np.max(np.abs(page_map.reshape(h, w) - defocus)))
    rounding = _psnr(np.rint(np.clip(sharp, 0, 1) * 255) / 255, np.clip(sharp, 0, 1))  # 8 bits alone
    small_psnr = _psnr(small_out, np.clip(deblur(small, tile=TILE, overlap=OVERLAP), 0, 1))
    # The page's automatic level from its map against Otsu on Python's map: within one bin.
    from skimage.filters import threshold_otsu
    magnitude = np.abs(defocus)
    bin_width = float(magnitude.max() - magnitude.min()) / 256
    assert abs(auto - 2 / 3 * threshold_otsu(magnitude, nbins=256)) <= bin_width
    # The keep-the-bokeh blend of Python's own output and map at the page's level.
    expected = intent.apply(image, sharp, defocus, keep_bokeh=auto).output
    kept_psnr = _psnr(kept, np.clip(expected, 0, 1))
    # The readout: Python's line for the page's output and Python's map.
    assert readout.startswith(intent.readout(image, out, defocus).line()), readout
    assert kept_readout.startswith(intent.readout(image, kept, defocus).line()), kept_readout
    print(f"browser session {seconds:.1f} s; WASM {np.median(timings['tileTimes']):.1f} ms a "
          f"{TILE} x {TILE} tile (median of 6); page vs Deblurrer PSNR {psnr:.2f} dB (8-bit rounding "
          f"alone {rounding:.2f} dB), keep-bokeh "
          f"(level {auto:.4g}) {kept_psnr:.1f} dB, a 90 x 75 photo (one tile) {small_psnr:.1f} dB; "
          f"defocus map max abs {map_diff:.2e} (values up to {np.abs(defocus).max():.3f})")
    assert map_diff <= 1e-5
    assert psnr >= 45
    assert psnr >= rounding - 0.5  # the page's tiles and blend add next to nothing to the rounding
    assert kept_psnr >= 45
    assert small_psnr >= 45


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
                    reason="the browser test needs Chromium and its driver: "
                           "apt-get install chromium chromium-driver")
@pytest.mark.slow
def test_in_chromium_a_model_that_does_not_load_is_a_one_line_error(tmp_path):
    if not os.path.isdir(os.path.join(WEB, "node_modules", "onnxruntime-web")):
        pytest.skip("needs the page's npm packages: npm ci --prefix web")
    directory = site_lib.write_site(tmp_path / "site", b"these bytes are not an ONNX model", METADATA,
                                    estimator_bytes=b"nor these")
    with site_lib.serve(directory) as url:
        driver = _browser()
        try:
            page = Page(driver)
            driver.get(url)
            assert page.wait({"ready", "error"}) == "error"
            message = page.el("message").text
            assert message.startswith("the model did not load: ") and "\n" not in message, message
            assert page.el("photo").get_attribute("disabled")
        finally:
            driver.quit()


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
                    reason="the browser test needs Chromium and its driver: "
                           "apt-get install chromium chromium-driver")
@pytest.mark.slow
def test_in_chromium_an_export_without_encoded_is_a_one_line_error(tmp_path):
    """A site whose model has `defocus` but no `encoded` (an export from before the map was made from
    the tiles' blended estimator inputs) is refused when it loads, with one line saying to export it
    again."""
    if not os.path.isdir(os.path.join(WEB, "node_modules", "onnxruntime-web")):
        pytest.skip("needs the page's npm packages: npm ci --prefix web")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def value(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "h", "w", 3])

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["deblurred"]),
                               helper.make_node("Identity", ["image"], ["defocus"])],
                              "old_export", [value("image")], [value("deblurred"), value("defocus")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    directory = site_lib.write_site(tmp_path / "site", model.SerializeToString(), METADATA,
                                    estimator_bytes=b"never loaded")
    with site_lib.serve(directory) as url:
        driver = _browser()
        try:
            page = Page(driver)
            driver.get(url)
            assert page.wait({"ready", "error"}) == "error"
            message = page.el("message").text
            assert message.startswith("the model did not load: model.onnx has a defocus map but no "
                                      "`encoded` output") and "export it again" in message, message
            assert page.el("photo").get_attribute("disabled")
        finally:
            driver.quit()


# --------------------------------------------------------------------------- isolation and WebGPU

def test_the_service_worker_adds_the_headers_the_local_server_sends():
    """web/sw.js adds exactly `site.ISOLATION_HEADERS` (the page's two ways to isolation agree)."""
    with open(os.path.join(WEB, "sw.js")) as f:
        worker = f.read()
    added = dict(re.findall(r'headers\.set\("([\w-]+)", "([\w-]+)"\)', worker))
    assert added == site_lib.ISOLATION_HEADERS


@pytest.mark.slow  # three processes importing the package: 15 s here
def test_site_server_sends_the_isolation_headers_and_refuses_a_non_site(fake_web, tmp_path):
    import urllib.request

    directory = site_lib.write_site(tmp_path / "site", b"onnx bytes", METADATA, web=fake_web,
                                    estimator_bytes=b"e")
    with site_lib.serve(directory, headers=True) as url:
        with urllib.request.urlopen(url + "model.json") as response:
            assert json.loads(response.read())["tile"] == 128
            for name, value in site_lib.ISOLATION_HEADERS.items():
                assert response.headers[name] == value, name
    for target, message in [(tmp_path / "nowhere", "no such folder"), (tmp_path, "no index.html there")]:
        proc = subprocess.run([sys.executable, "-m", "ifan_jax.export.site", str(target), "--port", "0"],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.startswith(f"site: {target}: {message}"), proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr


def _webgpu_browser(url: str):
    """Chromium with SwiftShader's WebGPU adapter, at the site `url`'s model.json (a secure context,
    where `navigator.gpu` exists); skips where this Chromium gives no adapter."""
    driver = _browser(webgpu=True)
    driver.get(url + "model.json")
    adapter = driver.execute_async_script(
        "const done = arguments[0]; if (!navigator.gpu) { done(null); return; }"
        "navigator.gpu.requestAdapter().then((a) => done(a ? a.info.architecture || 'adapter' : null),"
        " () => done(null));")
    if not adapter:
        driver.quit()
        pytest.skip("this Chromium gives no WebGPU adapter (SwiftShader: Debian's chromium-common "
                    "ships libvk_swiftshader.so)")
    driver.get_log("browser")  # read: a JSON page's favicon request is no concern of the page's
    driver.get_log("performance")
    return driver


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
                    reason="the browser test needs Chromium and its driver: "
                           "apt-get install chromium chromium-driver")
def test_in_chromium_webgpu_deblurs_like_python_and_a_failed_run_falls_back_to_wasm(site, tmp_path):
    """The tiny model's site on WebGPU (SwiftShader, a software GPU: a small photo), against
    `Deblurrer`; then with `?webgpu_fail=run` (the WebGPU session throws on its first run) the
    same photo comes out of WASM, with one line saying so."""
    from ifan_jax.inference import Deblurrer

    url, checkpoint = site
    h, w = 72, 200  # 2 tiles of 72 x 128
    photo = str(tmp_path / "field.png")
    image = _photo(photo, h, w, seed=7)
    driver = _webgpu_browser(url)
    try:
        page = Page(driver)
        driver.get(url)
        assert page.wait({"ready", "error"}) == "ready", page.el("message").text
        ifan = driver.execute_script("return window.ifan")
        assert (ifan["backend"], ifan["fallback"]) == ("webgpu", None)
        assert page.el("backend").text.endswith("running on WebGPU (the GPU).")
        assert page.upload(photo) == "done", page.el("message").text
        assert page.el("message").text.endswith("a tile, WebGPU)."), driver.execute_script(
            "return window.ifan.fallback")
        assert driver.execute_script("return window.ifan.backend") == "webgpu"  # no fallback
        assert len(driver.execute_script("return window.ifan.tileTimes")) == 2
        gpu = page.download()
        _check_logs(driver, url)

        driver.get(url + "?webgpu_fail=run")
        assert page.wait({"ready", "error"}) == "ready", page.el("message").text
        assert driver.execute_script("return window.ifan.backend") == "webgpu"
        assert page.upload(photo) == "done", page.el("message").text
        ifan = driver.execute_script("return window.ifan")
        assert ifan["backend"] == "wasm"
        assert ifan["fallback"] == "WebGPU failed (forced by ?webgpu_fail=run); switched to WASM"
        text = page.el("backend").text
        assert text.startswith(ifan["fallback"] + ": Model ") and "\n" not in text, text
        assert "running on WASM (the CPU)" in text and "a tile, WASM, " in page.el("message").text
        assert len(ifan["tileTimes"]) == 2  # the failed tile ran again on WASM
        fallen = page.download()
    finally:
        driver.quit()
    sharp = np.clip(Deblurrer.from_checkpoint(checkpoint)(image, tile=TILE, overlap=OVERLAP), 0, 1)
    gpu_psnr, wasm_psnr = _psnr(gpu, sharp), _psnr(fallen, sharp)
    print(f"WebGPU (SwiftShader) vs Deblurrer {gpu_psnr:.1f} dB; after the fallback (WASM) "
          f"{wasm_psnr:.1f} dB; WebGPU vs WASM {_psnr(gpu, fallen):.1f} dB")
    assert gpu_psnr >= 45 and wasm_psnr >= 45


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
                    reason="the browser test needs Chromium and its driver: "
                           "apt-get install chromium chromium-driver")
def test_in_chromium_a_float16_model_on_webgpu(tiny_official_checkpoint, site, tmp_path):
    """The float16 export on WebGPU. Where the adapter has float16 shaders (`shader-f16`) the page
    runs it there; where it has none (SwiftShader), the page picks WASM when it loads, with one line,
    and a run forced onto WebGPU (`?backend=webgpu`) raises GPU validation errors: the page sees
    them and runs the photo on WASM. The result is recorded against the float32 page's."""
    from ifan_jax.inference import Deblurrer

    url32, _ = site
    directory = str(tmp_path / "site16")
    proc = subprocess.run([sys.executable, "-m", "ifan_jax.export", f"--ckpt={tiny_official_checkpoint}",
                           f"--web={directory}", f"--tile={TILE}", f"--overlap={OVERLAP}",
                           "--precision=float16"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    h, w = 72, 120  # one tile of 72 x 128
    photo = str(tmp_path / "leaf.png")
    image = _photo(photo, h, w, seed=8)
    driver = _webgpu_browser(url32)
    try:
        page = Page(driver)
        f16 = driver.execute_async_script(
            "const done = arguments[0]; navigator.gpu.requestAdapter().then((a) => "
            "done(a.features.has('shader-f16')));")
        with site_lib.serve(directory) as url:
            driver.get(url)
            assert page.wait({"ready", "error"}) == "ready", page.el("message").text
            ifan = driver.execute_script("return window.ifan")
            if f16:
                assert (ifan["backend"], ifan["fallback"]) == ("webgpu", None)
            else:
                assert ifan["backend"] == "wasm" and ifan["fallback"] == (
                    "this browser's WebGPU has no float16 shaders (shader-f16) for this float16 model; "
                    "WASM instead")
            driver.get(url + "?backend=webgpu")
            assert page.wait({"ready", "error"}) == "ready", page.el("message").text
            assert page.upload(photo) == "done", page.el("message").text
            ifan = driver.execute_script("return window.ifan")
            if not f16:
                assert ifan["backend"] == "wasm"
                assert ifan["fallback"].startswith("WebGPU failed (") and ifan["fallback"].endswith(
                    "); switched to WASM"), ifan["fallback"]
            half = page.download()
        driver.get(url32 + "?backend=wasm")
        assert page.wait({"ready", "error"}) == "ready", page.el("message").text
        assert page.upload(photo) == "done", page.el("message").text
        full = page.download()
    finally:
        driver.quit()
    deblur = Deblurrer.from_checkpoint(tiny_official_checkpoint)
    sharp = np.clip(deblur(image, tile=TILE, overlap=OVERLAP), 0, 1)
    print(f"float16 page ({ifan['backend']}{', fell back: ' + ifan['fallback'] if ifan['fallback'] else ''}) "
          f"vs the float32 page {_psnr(half, full):.1f} dB, vs Deblurrer {_psnr(half, sharp):.1f} dB; "
          f"float32 page vs Deblurrer {_psnr(full, sharp):.1f} dB; shader-f16: {f16}")
    assert _psnr(half, full) >= 40 and _psnr(full, sharp) >= 45


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
                    reason="the browser test needs Chromium and its driver: "
                           "apt-get install chromium chromium-driver")
def test_in_chromium_a_page_that_cannot_be_isolated_reloads_once_and_uses_one_thread(tmp_path):
    """A service worker that adds no headers (as where isolation is impossible): the page registers
    it, reloads once, finds itself still not isolated and goes on with one thread, never reloading
    again; the server's own headers isolate it with no service worker at all."""
    if not os.path.isdir(os.path.join(WEB, "node_modules", "onnxruntime-web")):
        pytest.skip("needs the page's npm packages: npm ci --prefix web")
    directory = site_lib.write_site(tmp_path / "site", b"these bytes are not an ONNX model", METADATA,
                                    estimator_bytes=b"nor these")
    with open(os.path.join(directory, "sw.js"), "w") as f:
        f.write('self.addEventListener("install", () => self.skipWaiting());\n'
                'self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));\n'
                'self.addEventListener("fetch", (e) => e.respondWith(fetch(e.request)));\n')
    driver = _browser()
    try:
        page = Page(driver)
        with site_lib.serve(directory) as url:
            driver.get(url)
            page.wait({"error"})  # the model is not one: the page stops after choosing its threads
            driver.execute_script("window.marker = 1")
            time.sleep(2)  # a reload would drop the marker
            got = driver.execute_script(
                "return {marker: window.marker, isolated: self.crossOriginIsolated, ifan: window.ifan, "
                "controlled: !!navigator.serviceWorker.controller, "
                "navigation: performance.getEntriesByType('navigation')[0].type}")
            assert got["marker"] == 1 and got["controlled"] and got["navigation"] == "reload"
            assert got["isolated"] is False
            assert (got["ifan"]["isolation"], got["ifan"]["threads"]) == ("failed", 1)
        with site_lib.serve(directory, headers=True) as url:  # another origin (port): no worker
            driver.get(url)
            page.wait({"error"})
            got = driver.execute_script(
                "return {isolated: self.crossOriginIsolated, ifan: window.ifan, "
                "controlled: !!navigator.serviceWorker.controller, "
                "navigation: performance.getEntriesByType('navigation')[0].type}")
            assert got["isolated"] is True and not got["controlled"] and got["navigation"] == "navigate"
            assert got["ifan"]["isolation"] == "isolated" and got["ifan"]["threads"] >= 1
    finally:
        driver.quit()
