// The defocus map's colours, as ifan_jax.inference.defocus.colorize: viridis (the table comes from
// Python through model.json), the 1st/99th percentiles of the values stretched to its ends.

export function parseTable(hex) {
  const table = [];
  for (let i = 0; i + 6 <= hex.length; i += 6) {
    table.push([0, 2, 4].map((k) => parseInt(hex.slice(i + k, i + k + 2), 16)));
  }
  return table;
}

// numpy.percentile's default (linear) of sorted values.
function percentile(sorted, p) {
  const pos = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(pos), hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// H x W map -> RGBA bytes (ImageData's layout).
export function colorize(values, table, lowPercentile, highPercentile) {
  const sorted = Float32Array.from(values).sort();
  const low = percentile(sorted, lowPercentile), high = percentile(sorted, highPercentile);
  const rgba = new Uint8ClampedArray(values.length * 4);
  const last = table.length - 1;
  for (let p = 0; p < values.length; p++) {
    const u = high > low ? Math.min(Math.max((values[p] - low) / (high - low), 0), 1) : 0.5;
    const t = u * last;
    const i = Math.min(Math.floor(t), last - 1);
    const f = t - i;
    for (let c = 0; c < 3; c++) rgba[4 * p + c] = Math.round(table[i][c] * (1 - f) + table[i + 1][c] * f);
    rgba[4 * p + 3] = 255;
  }
  return rgba;
}
