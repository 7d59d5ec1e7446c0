/** Agreement and latency statistics for the benchmarks. */

/** Latency summary of one engine on one model, in milliseconds. */
export interface Timing {
  median: number;
  p10: number;
  p90: number;
  min: number;
  mean: number;
  samples: number;
}

/** max|a − b| / max|b|: scale-free, and unlike an elementwise ratio not blown up by values near 0. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= diff)) diff = d; // NaN propagates as a failure
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale === 0 ? diff : diff / scale;
}

/** Median, 10th and 90th percentiles (nearest rank), min and mean. */
export function summarize(samples: number[]): Timing {
  const s = [...samples].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  const median = s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { median, p10: at(0.1), p90: at(0.9), min: s[0], mean: s.reduce((a, b) => a + b, 0) / s.length, samples: s.length };
}
