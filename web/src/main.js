// The page: load the ONNX model, deblur an uploaded photo tile by tile, show and re-blend it.
//
// Hooks for automation: <input id="photo">, <body data-state="loading|ready|working|done|error">,
// <a id="download"> (the PNG shown), #message (one line), #backend (the backend and threads, and
// a fallback's one line), #strength, #keep_bokeh, #level, #readout. Query parameters for tests and
// benchmarks: `?backend=wasm|webgpu` (that backend first), `?threads=N` (WebAssembly threads, when
// isolated), `?webgpu_fail=run` (the WebGPU session throws on its first run: the fallback to WASM).
import * as ort from "onnxruntime-web";

import { colorize, parseTable } from "./colormap.js";
import { autoLevel, blend, boxMeanAbs, keepWeights, readout } from "./intent.js";
import { isolate, threadCount } from "./isolation.js";
import { deblurTiled, plan } from "./tiling.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// The page keeps about 70 bytes a pixel (the photo, the result, the map, the blended encoder
// output and their canvases).
const MAX_PIXELS = 40e6;
const page = { session: null, estimator: null, config: null, backend: null, threads: 1, photo: null,
  generation: 0, url: null, device: null, deviceLost: null };
// For tests and benchmarks: milliseconds per network run of one tile; the backend ("webgpu" or
// "wasm"), WASM threads, isolation ("isolated", "unsupported", "failed") and a fallback's line;
// `defocus`: the shown photo's H x W map (a reference, not a copy).
window.ifan = { tileTimes: [], backend: null, threads: null, isolation: null, fallback: null, level: null,
  autoLevel: null, defocus: null };

const firstLine = (error) => ((error && error.message) || String(error)).split("\n")[0];

function setState(state, message = "") {
  document.body.dataset.state = state;
  $("message").textContent = message.split("\n")[0];
}

function fail(error) {
  const text = (error && error.message) || String(error);
  setState("error", text);
}

function clearResult() {
  page.generation += 1;
  page.photo = null;
  window.ifan.defocus = null;
  if (page.url) URL.revokeObjectURL(page.url);
  page.url = null;
  const link = $("download");
  link.removeAttribute("href");
  link.removeAttribute("download");
  link.hidden = true;
  $("result").hidden = true;
  $("readout").textContent = "";
  for (const id of ["strength", "keep_bokeh", "level", "level_auto"]) $(id).disabled = true;
  $("progress").value = 0;
}

// ["webgpu" or "wasm", why not WebGPU ("" when it is, or where the browser has none)].
async function chooseBackend() {
  let adapter = null;
  try {
    adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
  } catch {
    // no adapter: WASM
  }
  if (!adapter) return ["wasm", ""];
  // A float16 model needs the adapter's float16 shaders; without them WebGPU computes garbage.
  if (page.config.metadata.precision === "float16" && !adapter.features.has("shader-f16")) {
    return ["wasm", "this browser's WebGPU has no float16 shaders (shader-f16) for this float16 model; WASM instead"];
  }
  return ["webgpu", ""];
}

function backendLabel() {
  return page.backend === "webgpu" ? "WebGPU" : `WASM, ${page.threads} thread${page.threads > 1 ? "s" : ""}`;
}

function showBackend(note = "") {
  const { tile, overlap } = page.config;
  const where = page.backend === "webgpu" ? "WebGPU (the GPU)" : `WASM (the CPU), ${page.threads} ` +
    `thread${page.threads > 1 ? "s" : ""}`;
  $("backend").textContent = (note ? `${note}: ` : "") + `Model ${page.config.name}: tiles of ${tile} x ` +
    `${tile} overlapping by ${overlap} pixels, running on ${where}.`;
}

// A session of model.onnx (or, with `url`, of estimator.onnx) on `backend`.
async function createSession(backend, url = page.modelUrl) {
  const options = { graphOptimizationLevel: "all", logSeverityLevel: 3, executionProviders: [backend] };
  const session = await ort.InferenceSession.create(url, options);
  if (backend === "webgpu" && url === page.modelUrl) {
    page.device = await ort.env.webgpu.device;
    // A lost device (driver reset, GPU process crash) sends the next tiles to WASM.
    page.device.lost.then((info) => { page.deviceLost = info.message || info.reason || "lost"; });
    if (params.get("webgpu_fail") === "run") {
      session.run = async () => { throw new Error("forced by ?webgpu_fail=run"); };
    }
  }
  return session;
}

// The defocus map's estimator (estimator.onnx) on `backend`, for a model with a map.
async function createEstimator(backend) {
  return page.config.has_defocus ? createSession(backend, page.estimatorUrl) : null;
}

function useBackend(backend, session, estimator, note = "") {
  page.session = session;
  page.estimator = estimator;
  page.backend = window.ifan.backend = backend;
  window.ifan.fallback = note || null;
  showBackend(note);
}

// WebGPU failed while running: the rest of the photo (this tile included) runs on WASM.
async function fallBack(reason) {
  const gpu = [page.session, page.estimator];
  const session = await createSession("wasm");
  useBackend("wasm", session, await createEstimator("wasm"), `WebGPU failed (${reason}); switched to WASM`);
  for (const old of gpu) if (old) old.release().catch(() => {});
}

// One run of page[which] ("session": a tile of model.onnx; "estimator": a tile of the map's
// estimator); on WebGPU, a run that throws, a GPU error raised during it (validation, out of
// memory, internal: WebGPU reports these beside the run, which then returns garbage) or a lost
// device switches the page to WASM, which runs it again.
async function runSession(feeds, which = "session", fetches = page.fetches) {
  if (page.backend === "webgpu") {
    const scopes = ["validation", "out-of-memory", "internal"];
    let failure = page.deviceLost && new Error(`the GPU device was lost: ${page.deviceLost}`);
    if (!failure) {
      for (const scope of scopes) page.device.pushErrorScope(scope);
      let out = null;
      try {
        out = await page[which].run(feeds, fetches);
      } catch (error) {
        failure = error;
      }
      const errors = [];
      for (const _ of scopes) errors.push(await page.device.popErrorScope().catch(() => null));
      failure = failure || errors.find(Boolean) || null;
      if (!failure) return out;
    }
    await fallBack(firstLine(failure));
  }
  return page[which].run(feeds, fetches);
}

class OlderExport extends Error {}

// The map is made from the tiles' 1/8-resolution `encoded` by estimator.onnx (as Python makes it):
// a model with a map but no `encoded` is refused before its estimator is loaded.
function requireEncoded(session) {
  if (page.config.has_defocus && !(session.outputNames.includes("encoded") && page.config.map_reach)) {
    throw new OlderExport("model.onnx has a defocus map but no `encoded` output (an older export): " +
      "export it again (python -m ifan_jax.export --web=DIR)");
  }
}

async function loadModel() {
  const isolation = await isolate();
  const base = new URL(".", location.href);
  page.threads = window.ifan.threads = threadCount(isolation === "isolated", params.get("threads"),
    navigator.hardwareConcurrency);
  window.ifan.isolation = isolation;
  ort.env.wasm.wasmPaths = new URL("ort/", base).href;
  ort.env.wasm.numThreads = page.threads;
  ort.env.logLevel = "error";
  const response = await fetch(new URL("model.json", base));
  if (!response.ok) throw new Error(`model.json: HTTP ${response.status}`);
  page.config = await response.json();
  page.table = parseTable(page.config.viridis);
  page.modelUrl = new URL("model.onnx", base).href;
  page.estimatorUrl = new URL("estimator.onnx", base).href;
  const asked = params.get("backend");
  let [backend, note] = asked === "wasm" || asked === "webgpu" ? [asked, ""] : await chooseBackend();
  // On WASM the network runs in a worker (onnxruntime-web's proxy), so the page stays responsive
  // during a tile (seconds on the full-size model); WebGPU runs on the page's thread.
  ort.env.wasm.proxy = backend === "wasm";
  let session, estimator;
  try {
    session = await createSession(backend);
    requireEncoded(session);
    estimator = await createEstimator(backend);
  } catch (error) {
    if (backend === "wasm" || error instanceof OlderExport) throw error;
    note = `WebGPU did not load the model (${firstLine(error)}); WASM instead`;
    if (session) session.release().catch(() => {});
    session = await createSession("wasm");
    estimator = await createEstimator("wasm");
  }
  useBackend(note ? "wasm" : backend, session, estimator, note);
  page.fetches = page.config.has_defocus ? ["deblurred", "encoded"] : ["deblurred"];
}

async function decode(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error(`${file.name}: not an image this browser can decode (use a JPEG or PNG)`);
  }
  const { width, height } = bitmap;
  if (width * height > MAX_PIXELS) {
    bitmap.close();
    throw new Error(`${file.name}: ${width} x ${height} is more than the page holds in memory ` +
      `(${MAX_PIXELS / 1e6} megapixels, about 70 bytes each); use the Python command (ifan-deblur)`);
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const rgb = new Float32Array(width * height * 3);
  for (let p = 0, q = 0; p < rgb.length; p += 3, q += 4) {
    rgb[p] = rgba[q] / 255;
    rgb[p + 1] = rgba[q + 1] / 255;
    rgb[p + 2] = rgba[q + 2] / 255;
  }
  return { rgb, width, height };
}

function toImageData(rgb, width, height) {
  const data = new ImageData(width, height);
  const px = data.data;  // Uint8ClampedArray: clamps to 0..255 and rounds half to even (numpy's rint)
  for (let p = 0, q = 0; p < rgb.length; p += 3, q += 4) {
    px[q] = rgb[p] * 255;
    px[q + 1] = rgb[p + 1] * 255;
    px[q + 2] = rgb[p + 2] * 255;
    px[q + 3] = 255;
  }
  return data;
}

function draw(id, imageData) {
  const canvas = $(id);
  canvas.width = imageData.width;
  canvas.height = imageData.height;
  canvas.getContext("2d").putImageData(imageData, 0, 0);
}

// A photo whose run was overtaken by a newer upload: stopped quietly.
class Superseded extends Error {}
let running = Promise.resolve();  // one network run at a time, whichever photo asks

function tileRunner(generation) {
  return (input, rows, cols) => {
    const turn = running.then(async () => {
      if (generation !== page.generation) throw new Superseded();
      const start = performance.now();
      const feeds = { [page.session.inputNames[0]]: new ort.Tensor("float32", input, [1, rows, cols, 3]) };
      const out = await runSession(feeds);
      window.ifan.tileTimes.push(performance.now() - start);
      return { deblurred: out.deblurred.data, encoded: out.encoded ? out.encoded.data : null };
    });
    running = turn.catch(() => {});
    return turn;
  };
}

// The estimator over the blended `encoded` map, for deblurTiled (tiling.js).
function estimatorRunner(generation) {
  const run = (input, rows, cols, channels) => {
    const turn = running.then(async () => {
      if (generation !== page.generation) throw new Superseded();
      const feeds = { encoded: new ort.Tensor("float32", input, [1, rows, cols, channels]) };
      return (await runSession(feeds, "estimator", ["disparity"])).disparity.data;
    });
    running = turn.catch(() => {});
    return turn;
  };
  return { run, reach: page.config.map_reach, tile: page.config.estimator_tile };
}

// Let the page repaint (the progress bar) between tiles; unlike requestAnimationFrame this also
// goes on in a background tab.
const yieldToPage = () => new Promise((resolve) => setTimeout(resolve, 0));

async function deblur(file) {
  clearResult();
  const generation = page.generation;
  setState("working", `${file.name}: reading…`);
  const { rgb, width, height } = await decode(file);
  if (generation !== page.generation) throw new Superseded();
  const { count } = plan(height, width, page.config.tile, page.config.overlap);
  setState("working", `${file.name}: ${width} x ${height}, ${count} tile${count > 1 ? "s" : ""}…`);
  window.ifan.tileTimes = [];
  const progress = $("progress");
  progress.max = count;
  const start = performance.now();
  const result = await deblurTiled(rgb, height, width, page.config.tile, page.config.overlap,
    tileRunner(generation), async (done) => { progress.value = done; await yieldToPage(); },
    page.config.fixed_shape, page.estimator ? estimatorRunner(generation) : null);
  if (generation !== page.generation) throw new Superseded();
  const seconds = (performance.now() - start) / 1000;
  const photo = { name: file.name, width, height, input: rgb, deblurred: result.image, defocus: result.defocus,
    seconds, count, levelIsAuto: true };
  if (photo.defocus) {
    photo.smoothed = boxMeanAbs(photo.defocus, height, width, page.config.intent.box_radius);
    photo.autoLevel = autoLevel(photo.defocus, page.config.intent);
    window.ifan.autoLevel = photo.autoLevel;
    let top = 0;
    for (const v of photo.smoothed) top = Math.max(top, v);
    const level = $("level");
    const max = Math.max(top, 2 * photo.autoLevel, 1e-6);
    level.max = String(max);
    level.min = String(max / 1000);
    level.value = String(Math.max(photo.autoLevel, max / 1000));
    draw("defocus", new ImageData(colorize(photo.defocus, page.table, page.config.low_percentile,
      page.config.high_percentile), width, height));
  }
  $("defocus").closest("figure").hidden = !photo.defocus;
  draw("before", toImageData(rgb, width, height));
  page.photo = photo;
  window.ifan.defocus = photo.defocus;
  $("result").hidden = false;
  $("strength").disabled = false;
  $("keep_bokeh").disabled = !photo.defocus;
  await render();
}

// Re-blend the last photo with the controls' values (no network run), redraw, remake the download.
async function render() {
  const photo = page.photo;
  if (!photo) return;
  const generation = ++page.generation;
  const strength = Number($("strength").value);
  const keep = $("keep_bokeh").checked && !!photo.defocus;
  // The automatic level exactly (a range input rounds what it holds); else the slider's.
  const level = photo.levelIsAuto ? photo.autoLevel : Number($("level").value);
  $("strength_value").textContent = strength.toFixed(2);
  $("level_value").textContent = level.toPrecision(3) + (photo.levelIsAuto ? " (automatic)" : "");
  $("level_control").classList.toggle("off", !keep);
  $("level").disabled = $("level_auto").disabled = !keep;
  window.ifan.level = keep ? level : null;
  setState("working", `${photo.name}: blending…`);
  const weights = keep ? keepWeights(photo.smoothed, level) : null;
  const output = blend(photo.input, photo.deblurred, strength, weights);
  const image = toImageData(output, photo.width, photo.height);
  draw("after", image);
  if (photo.defocus) {
    const r = readout(photo.input, output, photo.defocus, page.config.intent);
    const change = Number.isFinite(r.psnr) ? `PSNR input vs output ${r.psnr.toFixed(1)} dB` : "output = input";
    const shares = r.shares.map(([level, share]) => `${Math.round(100 * share)}% > ${level}`).join(", ");
    $("readout").textContent = `${r.sentence} |defocus|: ${shares}, median ${r.median.toFixed(3)}; ` +
      change + (keep ? `. Bokeh kept where the 33 x 33 mean |defocus| passes ${level.toPrecision(3)}.` : "");
  } else {
    $("readout").textContent = "This model has no defocus map: strength only.";
  }
  const blob = await new Promise((resolve) => $("after").toBlob(resolve, "image/png"));
  if (generation !== page.generation) return;  // the controls moved meanwhile
  if (!blob) throw new Error(`${photo.name}: the browser could not encode the PNG`);
  if (page.url) URL.revokeObjectURL(page.url);
  page.url = URL.createObjectURL(blob);
  const link = $("download");
  link.href = page.url;
  link.download = photo.name.replace(/\.[^.]*$/, "") + "_deblurred.png";
  link.hidden = false;
  const perTile = (1000 * photo.seconds / photo.count).toFixed(0);
  setState("done", `${photo.name}: ${photo.width} x ${photo.height}, ${photo.count} tile${photo.count > 1 ? "s" : ""} in ` +
    `${photo.seconds.toFixed(1)} s (${perTile} ms a tile, ${backendLabel()}).`);
}

let pending = false;
function scheduleRender() {
  if (!page.photo) return;
  page.generation += 1;  // any blob still being encoded is stale
  document.body.dataset.state = "working";
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render().catch(fail); });
}

function main() {
  addEventListener("error", (event) => fail(event.error || event.message));
  addEventListener("unhandledrejection", (event) => fail(event.reason));
  $("photo").addEventListener("change", () => {
    const file = $("photo").files[0];
    if (!file) return;
    deblur(file).catch((error) => {
      if (error instanceof Superseded) return;  // a newer upload is running
      clearResult();
      fail(error);
    });
  });
  $("strength").addEventListener("input", scheduleRender);
  $("keep_bokeh").addEventListener("change", scheduleRender);
  $("level").addEventListener("input", () => {
    if (page.photo) page.photo.levelIsAuto = false;
    scheduleRender();
  });
  $("level_auto").addEventListener("click", () => {
    if (!page.photo) return;
    $("level").value = String(page.photo.autoLevel);
    page.photo.levelIsAuto = true;
    scheduleRender();
  });
  $("split").addEventListener("input", () => {
    $("after").style.clipPath = `inset(0 0 0 ${$("split").value}%)`;
  });
  $("after").style.clipPath = "inset(0 0 0 50%)";
  loadModel().then(() => {
    $("photo").disabled = false;
    setState("ready", "Choose a photo.");
  }, (error) => fail(new Error(`the model did not load: ${(error && error.message) || error}`)));
}

main();
