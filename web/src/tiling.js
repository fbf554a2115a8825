// Tiled inference, as ifan_jax/inference/tiling.py does it (same starts, weights and padding).
//
// The photo (H x W x 3 float32, row-major) is covered by tiles whose corners lie on the 8-pixel
// grid; neighbouring tiles overlap by at least `overlap` pixels. Each output pixel is the weighted
// mean of the tiles covering it: a tile's weight is 1 inside and falls to 0 across each overlap it
// shares with a neighbour (raised cosine over the middle half of the overlap). Tiles reaching past
// the image are edge-padded. The network has a fixed input of T x T: a photo smaller than T in a
// side runs in a tile of round_up(side) there (as in Python), edge-padded further up to T, and the
// result is cropped. A model with symbolic height and width runs the tiles at their own shape.

export const ALIGN = 8;

export function roundUp(x, multiple = ALIGN) {
  return Math.ceil(x / multiple) * multiple;
}

export function tileStarts(length, tile, overlap) {
  if (tile > length) throw new Error(`tile ${tile} is larger than the length ${length}`);
  if (length % ALIGN || tile % ALIGN) {
    throw new Error(`length ${length} and tile ${tile} must be multiples of ${ALIGN}`);
  }
  if (tile === length) return [0];
  const maxStep = Math.floor((tile - roundUp(overlap)) / ALIGN);
  if (maxStep < 1) throw new Error(`tile ${tile} leaves no room for an overlap of ${overlap}`);
  const units = (length - tile) / ALIGN;
  const gaps = Math.ceil(units / maxStep);
  const starts = [];
  for (let i = 0; i <= gaps; i++) starts.push(ALIGN * Math.floor((units * i) / gaps));
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

// Run `runTile(input rows*cols*3, rows, cols) -> Promise<{deblurred: rows*cols*3, defocus: rows*cols
// or null}>` over the tiles of `image` and blend: returns {image: H*W*3, defocus: H*W or null}. With
// `fixed`, every input is size x size (the model's fixed shape); else the tile's th x tw.
// `progress(done, total)` after each tile.
export async function deblurTiled(image, height, width, size, overlap, runTile, progress, fixed = true) {
  const { th, tw, ys, xs, count } = plan(height, width, size, overlap);
  const rows = fixed ? size : th, cols = fixed ? size : tw;
  const wy = axisWeights(ys, th);
  const wx = axisWeights(xs, tw);
  const totalY = new Float32Array(roundUp(height));
  const totalX = new Float32Array(roundUp(width));
  ys.forEach((y, i) => { for (let k = 0; k < th; k++) totalY[y + k] += wy[i][k]; });
  xs.forEach((x, j) => { for (let k = 0; k < tw; k++) totalX[x + k] += wx[j][k]; });
  const acc = new Float32Array(height * width * 3);
  let accD = null;
  let done = 0;
  for (let i = 0; i < ys.length; i++) {
    for (let j = 0; j < xs.length; j++) {
      const y = ys[i], x = xs[j];
      const out = await runTile(cutTile(image, height, width, y, x, rows, cols), rows, cols);
      if (out.defocus && !accD) accD = new Float32Array(height * width);
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
          if (accD) accD[dst] += out.defocus[src] * weight;
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
      if (accD) accD[p] /= total;
    }
  }
  return { image: acc, defocus: accD };
}
