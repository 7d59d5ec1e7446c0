/**
 * Inputs and the error measure for tests that check a compiled program against eager
 * execution (kiln's interpreter): seeded values, seeded random tensors, and the error of one
 * output relative to its magnitude. Unlike ./ref.ts this compares kiln with kiln.
 */
import * as kiln from '../../lib';

/** Deterministic values in [-scale, scale) (a small LCG): the same seed gives the same values. */
export function values(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 2 * scale;
  });
}

/**
 * A maker of random tensors whose seeds count up from `firstSeed`, one per tensor made, so a
 * file's tensors are reproducible in the order they are made.
 */
export function seededTensors(firstSeed: number) {
  let seed = firstSeed;
  return (shape: number[], scale = 1, dtype: kiln.DType = 'float32') =>
    kiln.tensor(values(shape.reduce((a, b) => a * b, 1), seed++, scale), shape, dtype);
}

/**
 * max |got - want| / max |want|: the error relative to the output's magnitude, after checking
 * shape and dtype. Where `want` is NaN `got` must be NaN too (else the error is Infinity).
 */
export async function relErr(got: kiln.Tensor, want: kiln.Tensor): Promise<number> {
  expect(got.shape).toEqual(want.shape);
  expect(got.dtype).toBe(want.dtype);
  const [a, b] = [await got.toArray(), await want.toArray()];
  let err = 0;
  let mag = 0;
  for (let i = 0; i < b.length; i++) {
    if (Number.isNaN(b[i])) {
      if (!Number.isNaN(a[i])) return Infinity;
      continue;
    }
    err = Math.max(err, Math.abs(a[i] - b[i]));
    mag = Math.max(mag, Math.abs(b[i]));
  }
  return err / Math.max(mag, 1e-30);
}
