// Tiled inference, as ifan_jax/inference/tiling.py does it (same starts, weights and padding).
//
// The photo (H x W x 3 float32, row-major) is covered by tiles whose corners lie on the 8-pixel
// grid; neighbouring tiles overlap by at least `overlap` pixels. Each output pixel is the weighted
// mean of the tiles covering it: a tile's weight is 1 inside and falls to 0 across each overlap it
// shares with a neighbour (raised cosine over the middle half of the overlap). Tiles reaching past
// the image are edge-padded. The network has a fixed input of T x T: a photo smaller than T in a
// side runs in a tile of round_up(side) there (as in Python), edge-padded further up to T, and the
// result is cropped. A model with symbolic height and width runs the tiles at their own shape.
//
// The defocus map is made as Python makes it (ifan_jax/inference/tiling.py: deblur_tiled with a
// forward that returns the filter encoder's output, then estimate_tiled). Each tile's `encoded`
// (the disparity map estimator's input, 1/8 of the tile's size, C channels) is blended on the 1/8
// grid with weights that are zero where a tile's padded edges still reach (`contextWeights`, the
// model's `map_reach` [before, after]), divided by the separable totals; the estimator graph then
// runs over that map in tiles of `estimator_tile` overlapping by twice its reach, blended the same
// way (`estimateTiled`), and the whole 1/8-resolution map is upsampled once (`upsampleMap`:
// bilinear, half-pixel centres, edges clamped, as jax.image.resize "bilinear") and cropped to the
// photo. A tile's own `disparity` is wrong up to 15 pixels of the 1/8 grid inside its edges:
// blending those left lines at tile borders.

export const ALIGN = 8;

export function roundUp(x, multiple = ALIGN) {
  return Math.ceil(x / multiple) * multiple;
}

// `align`: 8 on the photo's grid, 1 on the 1/8-resolution grid.
export function tileStarts(length, tile, overlap, align = ALIGN) {
  if (tile > length) throw new Error(`tile ${tile} is larger than the length ${length}`);
  if (length % align || tile % align) {
    throw new Error(`length ${length} and tile ${tile} must be multiples of ${align}`);
  }
  if (tile === length) return [0];
  const maxStep = Math.floor((tile - roundUp(overlap, align)) / align);
  if (maxStep < 1) throw new Error(`tile ${tile} leaves no room for an overlap of ${overlap}`);
  const units = (length - tile) / align;
  const gaps = Math.ceil(units / maxStep);
  const starts = [];
  for (let i = 0; i <= gaps; i++) starts.push(align * Math.floor((units * i) / gaps));
  return starts;
}

// Weights (float32) rising from 0 to 1 across an overlap of `width` pixels, index 0 at the edge.
export function blendRamp(width) {
  const out = new Float32Array(width);
  for (let k = 0; k < width; k++) {
    const d = (k + 0.5) / Math.max(width, 1);
    const t = Math.min(Math.max((d - 0.25) / 0.5, 0), 1);
    out[k] = 0.5 - 0.5 * Math.cos(Math.PI * t);
  }
  return out;
}

// 1-D blending weights (length `tile`) of each tile along one axis.
export function axisWeights(starts, tile) {
  return starts.map((s, i) => {
    const w = new Float32Array(tile).fill(1);
    if (i > 0) {
      const width = starts[i - 1] + tile - s;
      const ramp = blendRamp(width);
      for (let k = 0; k < width; k++) w[k] = Math.min(w[k], ramp[k]);
    }
    if (i + 1 < starts.length) {
      const width = s + tile - starts[i + 1];
      const ramp = blendRamp(width);
      for (let k = 0; k < width; k++) w[tile - width + k] = Math.min(w[tile - width + k], ramp[width - 1 - k]);
    }
    return w;
  });
}

// The later tile's weights (float32) across an overlap of `width` pixels for outputs exact only
// `before` pixels after a tile's first edge and `after` before its last: 0 on the first `before`,
// 1 on the last `after`, a raised cosine between; the earlier tile's are 1 minus these. Too narrow
// for both margins: the larger (`after` on a tie) gives up a pixel at a time.
export function contextRamp(width, before, after) {
  let low = before, keep = after;
  while (low + keep > width) {
    if (low > keep) low -= 1;
    else keep -= 1;
  }
  const high = width - keep;
  const out = new Float32Array(width);
  for (let k = 0; k < width; k++) {
    const t = Math.min(Math.max((k + 0.5 - low) / Math.max(high - low, 1), 0), 1);
    out[k] = k + 0.5 >= high ? 1 : 0.5 - 0.5 * Math.cos(Math.PI * t);
  }
  return out;
}

// 1-D weights (length `tile`) of each tile along one axis with `contextRamp` across its overlaps.
export function contextWeights(starts, tile, before, after) {
  return starts.map((s, i) => {
    const w = new Float32Array(tile).fill(1);
    if (i > 0) {
      const width = starts[i - 1] + tile - s;
      const ramp = contextRamp(width, before, after);
      for (let k = 0; k < width; k++) w[k] = Math.min(w[k], ramp[k]);
    }
    if (i + 1 < starts.length) {
      const width = s + tile - starts[i + 1];
      const ramp = contextRamp(width, before, after);
      for (let k = 0; k < width; k++) w[tile - width + k] = Math.min(w[tile - width + k], Math.fround(1 - ramp[k]));
    }
    return w;
  });
}

export function tileShape(height, width, tile) {
  const t = roundUp(tile);
  return [Math.min(t, roundUp(height)), Math.min(t, roundUp(width))];
}

export function plan(height, width, tile, overlap) {
  const [th, tw] = tileShape(height, width, tile);
  const ys = tileStarts(roundUp(height), th, overlap);
  const xs = tileStarts(roundUp(width), tw, overlap);
  return { th, tw, ys, xs, count: ys.length * xs.length };
}

// Cut the rows x cols network input at (y, x) from `image` (H x W x 3), edge-replicating past it.
export function cutTile(image, height, width, y, x, rows, cols) {
  const out = new Float32Array(rows * cols * 3);
  for (let r = 0; r < rows; r++) {
    const sy = Math.min(y + r, height - 1);
    for (let c = 0; c < cols; c++) {
      const sx = Math.min(x + c, width - 1);
      const src = (sy * width + sx) * 3;
      const dst = (r * cols + c) * 3;
      out[dst] = image[src];
      out[dst + 1] = image[src + 1];
      out[dst + 2] = image[src + 2];
    }
  }
  return out;
}

// The per-axis total weight over [0, length): the sum of each tile's weights at its start.
function totals(starts, weights, tile, length) {
  const total = new Float32Array(length);
  starts.forEach((s, i) => { for (let k = 0; k < tile; k++) total[s + k] += weights[i][k]; });
  return total;
}

// The 1/8-resolution map `low` (h8 x w8, row-major) -> height x width float32 (height <= 8 h8,
// width <= 8 w8): bilinear with half-pixel centres (low-resolution pixel i sits at full-resolution
// (i + 0.5) * 8 - 0.5), edges clamped, to 8 h8 x 8 w8 and cropped; ifan_jax.inference.defocus
// `upsample_map` (jax.image.resize "bilinear"). Rows first, then columns; one row of h8 at a time.
export function upsampleMap(low, h8, w8, height, width) {
  const taps = (n, length) => {  // for each output index: the two inputs and the second's weight
    const i0 = new Int32Array(length), i1 = new Int32Array(length), f = new Float64Array(length);
    for (let o = 0; o < length; o++) {
      const pos = (o + 0.5) / ALIGN - 0.5;
      const base = Math.floor(pos);
      f[o] = pos - base;
      i0[o] = Math.min(Math.max(base, 0), n - 1);
      i1[o] = Math.min(Math.max(base + 1, 0), n - 1);
    }
    return { i0, i1, f };
  };
  const ty = taps(h8, height), tx = taps(w8, width);
  const out = new Float32Array(height * width);
  const row = new Float32Array(w8);
  for (let r = 0; r < height; r++) {
    const a = ty.i0[r] * w8, b = ty.i1[r] * w8, fy = ty.f[r];
    for (let c = 0; c < w8; c++) row[c] = (1 - fy) * low[a + c] + fy * low[b + c];
    const o = r * width;
    for (let c = 0; c < width; c++) out[o + c] = (1 - tx.f[c]) * row[tx.i0[c]] + tx.f[c] * row[tx.i1[c]];
  }
  return out;
}

// Run `run(input rows*cols*channels, rows, cols, channels) -> Promise<Float32Array rows*cols>` (the
// estimator graph) over the h x w x channels map `inputs` in tiles of at most `tile` overlapping by
// 2 * reach, blended by `contextWeights(reach, reach)`: the whole map's output (Python's
// tiling.estimate_tiled). Returns h x w float32.
export async function estimateTiled(run, inputs, h, w, channels, tile, reach) {
  const th = Math.min(tile, h), tw = Math.min(tile, w);
  const ys = tileStarts(h, th, 2 * reach, 1), xs = tileStarts(w, tw, 2 * reach, 1);
  const wy = contextWeights(ys, th, reach, reach), wx = contextWeights(xs, tw, reach, reach);
  const out = new Float32Array(h * w);
  for (let i = 0; i < ys.length; i++) {
    for (let j = 0; j < xs.length; j++) {
      const cut = new Float32Array(th * tw * channels);
      for (let r = 0; r < th; r++) {
        const src = ((ys[i] + r) * w + xs[j]) * channels;
        cut.set(inputs.subarray(src, src + tw * channels), r * tw * channels);
      }
      const result = await run(cut, th, tw, channels);
      for (let r = 0; r < th; r++) {
        const a = wy[i][r], dst = (ys[i] + r) * w + xs[j];
        for (let c = 0; c < tw; c++) out[dst + c] += Math.fround(result[r * tw + c] * Math.fround(a * wx[j][c]));
      }
    }
  }
  const totalY = totals(ys, wy, th, h), totalX = totals(xs, wx, tw, w);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) out[r * w + c] /= Math.fround(totalY[r] * totalX[c]);
  }
  return out;
}

// Run `runTile(input rows*cols*3, rows, cols) -> Promise<{deblurred: rows*cols*3, encoded:
// (rows/8)*(cols/8)*C or null}>` over the tiles of `image` and blend: returns {image: H*W*3,
// defocus: H*W or null, low: the 1/8-resolution map, round_up(H)/8 x round_up(W)/8, or null}.
// The map needs `estimator` = {run, reach: [before, after, estimator], tile} (`run` as
// `estimateTiled` takes it; model.json's map_reach and estimator_tile). With `fixed`, every input
// is size x size (the model's fixed shape); else the tile's th x tw. `progress(done, total)` after
// each tile.
export async function deblurTiled(image, height, width, size, overlap, runTile, progress, fixed = true,
  estimator = null) {
  const { th, tw, ys, xs, count } = plan(height, width, size, overlap);
  const rows = fixed ? size : th, cols = fixed ? size : tw;
  const wy = axisWeights(ys, th);
  const wx = axisWeights(xs, tw);
  const totalY = totals(ys, wy, th, roundUp(height));
  const totalX = totals(xs, wx, tw, roundUp(width));
  // The map's input on the 1/8 grid, weighted where each tile is exact.
  const cth = th / ALIGN, ctw = tw / ALIGN, lowCols = cols / ALIGN;
  const h8 = roundUp(height) / ALIGN, w8 = roundUp(width) / ALIGN;
  const cys = ys.map((y) => y / ALIGN), cxs = xs.map((x) => x / ALIGN);
  const [before, after] = estimator ? estimator.reach : [0, 0];
  const cwy = contextWeights(cys, cth, before, after), cwx = contextWeights(cxs, ctw, before, after);
  const acc = new Float32Array(height * width * 3);
  let encoded = null, channels = 0;
  let done = 0;
  for (let i = 0; i < ys.length; i++) {
    for (let j = 0; j < xs.length; j++) {
      const y = ys[i], x = xs[j];
      const out = await runTile(cutTile(image, height, width, y, x, rows, cols), rows, cols);
      if (out.encoded) {
        if (!estimator) throw new Error("the defocus map needs the estimator (estimator.onnx)");
        if (!encoded) {
          channels = out.encoded.length / ((rows / ALIGN) * lowCols);
          encoded = new Float32Array(h8 * w8 * channels);
        }
        // float32 products and sums, as numpy's (the tile grid covers the padded 1/8 grid exactly)
        for (let r = 0; r < cth; r++) {
          const a = cwy[i][r], dst = ((cys[i] + r) * w8 + cxs[j]) * channels, src = r * lowCols * channels;
          for (let c = 0; c < ctw; c++) {
            const weight = Math.fround(a * cwx[j][c]);
            for (let k = 0; k < channels; k++) {
              encoded[dst + c * channels + k] += Math.fround(out.encoded[src + c * channels + k] * weight);
            }
          }
        }
      }
      const ch = Math.min(th, height - y), cw = Math.min(tw, width - x);
      for (let r = 0; r < ch; r++) {
        const a = wy[i][r];
        for (let c = 0; c < cw; c++) {
          const weight = Math.fround(a * wx[j][c]);
          const src = r * cols + c;
          const dst = (y + r) * width + x + c;
          acc[3 * dst] += out.deblurred[3 * src] * weight;
          acc[3 * dst + 1] += out.deblurred[3 * src + 1] * weight;
          acc[3 * dst + 2] += out.deblurred[3 * src + 2] * weight;
        }
      }
      done += 1;
      if (progress) await progress(done, count);
    }
  }
  for (let r = 0; r < height; r++) {
    for (let c = 0; c < width; c++) {
      const total = Math.fround(totalY[r] * totalX[c]);
      const p = r * width + c;
      acc[3 * p] /= total;
      acc[3 * p + 1] /= total;
      acc[3 * p + 2] /= total;
    }
  }
  if (!encoded) return { image: acc, defocus: null, low: null };
  const lowY = totals(cys, cwy, cth, h8), lowX = totals(cxs, cwx, ctw, w8);
  for (let r = 0; r < h8; r++) {
    for (let c = 0; c < w8; c++) {
      const total = Math.fround(lowY[r] * lowX[c]);
      for (let k = 0, p = (r * w8 + c) * channels; k < channels; k++) encoded[p + k] /= total;
    }
  }
  const low = await estimateTiled(estimator.run, encoded, h8, w8, channels, estimator.tile, estimator.reach[2]);
  return { image: acc, defocus: upsampleMap(low, h8, w8, height, width), low };
}
