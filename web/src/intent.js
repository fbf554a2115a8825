// Deblurring with intent, as ifan_jax.inference.intent defines it (docs/intent.md):
//   a = box mean of |d| over (2R+1)^2 pixels, edges replicated (scipy uniform_filter, "nearest")
//   t = clip((a - L) / L, 0, 1); keep = t^2 (3 - 2t); w = 1 - keep   (w = 1 without keep-bokeh)
//   output = x + S w (y - x)                                          (S = 0: exactly x)
//   automatic level: L = 2 theta / 3, theta = Otsu's threshold of |d| (256 bins, min..max).

// Box mean along one axis with edge replication, by a running sum (float64 accumulator).
function boxAxis(src, dst, count, length, stride, step, radius) {
  const size = 2 * radius + 1;
  for (let n = 0; n < count; n++) {
    const base = n * stride;
    const at = (k) => src[base + Math.min(Math.max(k, 0), length - 1) * step];
    let sum = 0;
    for (let k = -radius; k <= radius; k++) sum += at(k);
    for (let k = 0; k < length; k++) {
      dst[base + k * step] = sum / size;
      sum += at(k + radius + 1) - at(k - radius);
    }
  }
}

// Box mean of |d| (H x W) over a (2 radius + 1)^2 window, edges replicated.
export function boxMeanAbs(defocus, height, width, radius) {
  const abs = new Float64Array(defocus.length);
  for (let i = 0; i < abs.length; i++) abs[i] = Math.abs(defocus[i]);
  const rows = new Float64Array(abs.length);
  boxAxis(abs, rows, height, width, width, 1, radius); // along x, one row at a time
  const out = new Float64Array(abs.length);
  boxAxis(rows, out, width, height, 1, width, radius); // along y, one column at a time
  return Float32Array.from(out);
}

// Otsu's threshold of |d| over `bins` equal bins between its min and max (bin centres, as
// skimage.filters.threshold_otsu).
export function otsuAbs(defocus, bins) {
  let lo = Infinity, hi = -Infinity;
  for (const v of defocus) { const a = Math.abs(v); if (a < lo) lo = a; if (a > hi) hi = a; }
  if (!(hi > lo)) return lo;
  const hist = new Float64Array(bins);
  const scale = bins / (hi - lo);
  for (const v of defocus) hist[Math.min(Math.floor((Math.abs(v) - lo) * scale), bins - 1)] += 1;
  const centre = (k) => lo + (k + 0.5) * (hi - lo) / bins;
  const w1 = new Float64Array(bins), m1 = new Float64Array(bins);
  const w2 = new Float64Array(bins), m2 = new Float64Array(bins);
  let cw = 0, cm = 0;
  for (let k = 0; k < bins; k++) { cw += hist[k]; cm += hist[k] * centre(k); w1[k] = cw; m1[k] = cm / cw; }
  cw = 0; cm = 0;
  for (let k = bins - 1; k >= 0; k--) { cw += hist[k]; cm += hist[k] * centre(k); w2[k] = cw; m2[k] = cm / cw; }
  let best = -1, index = 0;
  for (let k = 0; k < bins - 1; k++) {
    const between = w1[k] * w2[k + 1] * (m1[k] - m2[k + 1]) ** 2;
    if (between > best) { best = between; index = k; }  // first maximum, as numpy's argmax
  }
  return centre(index);
}

const SMALLEST_LEVEL = 1.1754943508222875e-38;  // float32's smallest normal: an all-zero map keeps nothing

export function autoLevel(defocus, constants) {
  const level = constants.auto_level_factor * otsuAbs(defocus, constants.otsu_bins);
  return level > 0 ? level : SMALLEST_LEVEL;
}

// Per-pixel deblur weight w (H x W): 1 - smoothstep((a - L) / L).
export function keepWeights(smoothed, level) {
  const w = new Float32Array(smoothed.length);
  for (let i = 0; i < w.length; i++) {
    const t = Math.min(Math.max((smoothed[i] - level) / level, 0), 1);
    w[i] = 1 - t * t * (3 - 2 * t);
  }
  return w;
}

// output = x + S w (y - x), float RGB; exactly x where S w = 0 and exactly y where it is 1.
export function blend(x, y, strength, weights) {
  const n = x.length / 3;
  const out = new Float32Array(x.length);
  for (let p = 0; p < n; p++) {
    const s = weights ? strength * weights[p] : strength;
    for (let c = 0; c < 3; c++) {
      const i = 3 * p + c;
      out[i] = s === 0 ? x[i] : s === 1 ? y[i] : x[i] + s * (y[i] - x[i]);
    }
  }
  return out;
}

function median(values) {
  const sorted = Float32Array.from(values).sort();
  const n = sorted.length;
  return n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

// PSNR (dB, peak 1) between two float RGB arrays; Infinity when they are equal.
export function psnr(a, b) {
  let se = 0;
  for (let i = 0; i < a.length; i++) { const d = a[i] - b[i]; se += d * d; }
  return se === 0 ? Infinity : 10 * Math.log10(a.length / se);
}

// The readout of one photo: the shares of pixels above the levels of |d|, the share out of focus,
// median |d|, PSNR input vs output, and one sentence (ifan_jax.inference.intent.readout; its levels
// and sentences come through model.json).
export function readout(x, output, defocus, constants) {
  const abs = Float32Array.from(defocus, Math.abs);
  const count = (level) => { let n = 0; for (const v of abs) if (v > level) n += 1; return n / abs.length; };
  const shares = constants.levels.map((level) => [level, count(level)]);
  const share = count(constants.out_of_focus_level);
  const change = psnr(x, output);
  const percent = Math.round(100 * share);
  let sentence;
  if (share < constants.mostly_sharp_share) sentence = constants.sentences.mostly_sharp;
  else sentence = constants.sentences.out_of_focus.replace("{percent}", String(percent));
  return { shares, share, median: median(abs), psnr: change, sentence };
}
