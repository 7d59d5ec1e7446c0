/**
 * Special functions JavaScript lacks, to float64 accuracy, for the reference interpreter
 * (and anything else that needs an exact oracle).
 */

// Bound once: under Jest's vm sandbox every global lookup costs about a microsecond.
const { abs, exp, fround } = Math;

const TWO_OVER_SQRT_PI = 1.1283791670955126;

/**
 * The error function to float64 accuracy (JavaScript has none). Below 2.5 it sums the
 * series erf(x) = 2/√π·e^(−x²)·Σ 2ⁿx^(2n+1)/(1·3·…·(2n+1)), whose terms are all positive
 * (no cancellation); above, 1 − erfc(x) with erfc's continued fraction, evaluated bottom-up.
 */
export function erf(x: number): number {
  if (x !== x || x === 0) return x; // keeps NaN and the sign of zero
  const a = abs(x);
  let r: number;
  if (a < 2.5) {
    let term = a;
    let sum = a;
    const x2 = 2 * a * a;
    for (let n = 1; n < 200 && term > sum * 1e-17; n++) {
      term *= x2 / (2 * n + 1);
      sum += term;
    }
    r = TWO_OVER_SQRT_PI * exp(-a * a) * sum;
  } else if (a < 6) r = 1 - erfcTail(a);
  else r = 1; // erfc(6) < 2.2e-17: erf is 1 in float64
  return x < 0 ? -r : r;
}

/**
 * The complementary error function 1 − erf(x) to float64 accuracy, also where it is tiny:
 * below 1 it is 1 − erf(x) (at least 0.157 there, so nothing cancels; for x < 0 it lies in
 * (1, 2]); from 1 on, Laplace's continued fraction times e^(−x²), with e^(−x²) computed
 * without the rounding error of x² (which e^ would magnify by x²). It underflows to 0 near
 * x = 27.3.
 */
export function erfc(x: number): number {
  if (x !== x) return x;
  if (x < 1) return 1 - erf(x);
  if (x > 28) return 0; // e^(−x²) underflows (and ∞ − ∞ below would be NaN)
  let f = x;
  for (let k = x < 1.5 ? 200 : x < 2.5 ? 100 : 60; k >= 1; k--) f = x + k / 2 / f;
  // x = h + l with h = fround(x): h² is exact in float64, and x² = h² + (x − h)(x + h).
  const h = fround(x);
  return (0.5641895835477563 * exp(-h * h) * exp(-(x - h) * (x + h))) / f;
}

/**
 * erfc(a) for a ≥ 2.5 by Laplace's continued fraction
 * erfc(a) = e^(−a²)/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + …)))), 60 levels bottom-up.
 */
function erfcTail(a: number): number {
  let f = a;
  for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
  return (0.5641895835477563 * exp(-a * a)) / f;
}
