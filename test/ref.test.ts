/**
 * Checks of the float64 test reference itself (test/helpers/ref.ts) against hand-computed values
 * and independent algorithms, so that the numeric acceptance suite's oracle is trustworthy.
 */
import * as R from './helpers/ref';

describe('reference: half rounding', () => {
  test.each([
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65519.99, 0x7bff], // below the overflow threshold
    [65520, 0x7c00], // the tie at 65520 rounds to even → Infinity
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // tie between 0 and 2^-24 → even (0)
    [3 * 2 ** -26, 0x0001], // 0.75 quantum → 1 quantum
    [2049, 0x6800], // tie → 2048 (even)
    [2051, 0x6802], // tie → 2052 (even)
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
    [-0, 0x8000],
  ])('float16(%p) has bits 0x%s', (x, bits) => {
    expect(R.f16Bits(R.roundF16(x)).toString(16)).toBe(bits.toString(16));
  });

  test('float32 rounding equals Math.fround, including subnormals and ties', () => {
    const rng = new R.Rng(1);
    const bad: number[] = [];
    for (let i = 0; i < 20000; i++) {
      const e = rng.int(-155, 130);
      const x = (rng.next() < 0.5 ? -1 : 1) * rng.uniform(1, 2) * 2 ** e;
      if (!Object.is(R.roundF32(x), Math.fround(x))) bad.push(x);
    }
    expect(bad).toEqual([]);
    // exact ties: 1 + 2^-24 (→ 1), 1 + 3·2^-24 (→ 1 + 2^-22)
    expect(R.roundF32(1 + 2 ** -24)).toBe(1);
    expect(R.roundF32(1 + 3 * 2 ** -24)).toBe(1 + 2 ** -22);
    expect(R.roundF32(3.5e38)).toBe(Infinity);
  });

  test('bfloat16 rounding equals the float32-bit algorithm on float32 inputs', () => {
    const rng = new R.Rng(2);
    const bad: number[] = [];
    for (let i = 0; i < 20000; i++) {
      const e = rng.int(-140, 127);
      const x = Math.fround((rng.next() < 0.5 ? -1 : 1) * rng.uniform(1, 2) * 2 ** e);
      if (!Object.is(R.roundBF16(x), R.bf16FromF32Bits(x))) bad.push(x);
    }
    expect(bad).toEqual([]);
    expect(R.roundBF16(1 + 2 ** -8)).toBe(1); // tie → even
    expect(R.roundBF16(1 + 3 * 2 ** -8)).toBe(1 + 2 ** -6);
  });

  test('the arithmetic rounding agrees with the bit-level one for every format', () => {
    const rng = new R.Rng(4);
    const bad: string[] = [];
    for (const fmt of [R.F16, R.BF16, R.F32]) {
      for (let i = 0; i < 20000; i++) {
        const e = rng.int(-160, 130);
        const x = (rng.next() < 0.5 ? -1 : 1) * rng.uniform(1, 2) * 2 ** e;
        // also exact ties: a value of the format plus half its ulp
        const t = R.roundTo(x, fmt);
        const tie = Number.isFinite(t) ? t + R.ulpOf(t, fmt) / 2 : x;
        for (const v of [x, tie]) if (!Object.is(R.roundTo(v, fmt), R.roundToBits(v, fmt))) bad.push(`${fmt.name} ${v}`);
      }
    }
    expect(bad).toEqual([]);
  });

  test('ulp distance counts representable values, across binades and zero', () => {
    expect(R.ulpDistance(1, 1 + 2 ** -10, R.F16)).toBe(1);
    expect(R.ulpDistance(1, 1 - 2 ** -11, R.F16)).toBe(1);
    expect(R.ulpDistance(2 ** -24, -(2 ** -24), R.F16)).toBe(2);
    expect(R.ulpDistance(65504, Infinity, R.F16)).toBe(1);
    expect(R.ulpDistance(1, 1 + 2 ** -7, R.BF16)).toBe(1);
    expect(() => R.orderedBits(1 + 2 ** -12, R.F16)).toThrow();
    expect(R.closeHalf(1 + 2 ** -10, 1, R.F16)).toBe(true);
    expect(R.closeHalf(1 + 2 ** -9, 1, R.F16)).toBe(false);
  });
});

describe('reference: math', () => {
  test.each([
    [0, 0],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [1.99, 0.995111413199617],
    [2.1, 0.997020533343667],
    [2.9, 0.9999589021219005],
    [3.5, 0.9999992569016276],
    [-4, -0.9999999845827421],
    [6, 1],
  ])('erf(%p) = %p', (x, want) => {
    expect(Math.abs(R.erf(x) - want)).toBeLessThan(2e-15);
  });

  // erfc must stay relatively accurate where it is tiny (the GELU tails rely on it)
  test.each([
    [-3, 1.9999779095030015],
    [0.5, 0.4795001221869535],
    [1.99, 0.004888586800383003],
    [2, 0.004677734981047265],
    [3, 2.2090496998585438e-5],
    [5, 1.5374597944280351e-12],
    [10, 2.088487583762545e-45],
    [20, 5.3958656116079005e-176],
  ])('erfc(%p) = %p (relative)', (x, want) => {
    expect(Math.abs(R.erfc(x) - want)).toBeLessThanOrEqual(3e-13 * want); // 1 - erf below 2 loses up to ~2.3 digits
  });

  test('the GELU forms equal their textbook definitions where those do not cancel', () => {
    for (let x = -3; x <= 3; x += 0.25) {
      const u = Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3);
      expect(R.geluTanh(x)).toBeCloseTo(0.5 * x * (1 + Math.tanh(u)), 14);
      expect(R.geluExact(x)).toBeCloseTo(0.5 * x * (1 + R.erf(x / Math.SQRT2)), 14);
    }
    // and keep tiny tails the textbook forms lose: 1 + tanh(u) is exactly 0 in float64 here
    expect(1 + Math.tanh(Math.sqrt(2 / Math.PI) * (-9 + 0.044715 * -729))).toBe(0);
    expect(R.geluTanh(-9)).toBeLessThan(0);
    expect(R.geluExact(-9) / (-9 * 1.1285884059538422e-19)).toBeCloseTo(1, 12); // Φ(-9)
  });

  test('broadcast map, reduce, permute, slice, cat', () => {
    const a = R.nd([2, 1, 3], [1, 2, 3, 4, 5, 6]);
    const b = R.nd([2, 1], [10, 20]);
    expect(R.broadcastShapes(a.shape, b.shape)).toEqual([2, 2, 3]);
    expect(Array.from(R.map((x, y) => x + y, a, b).data)).toEqual([11, 12, 13, 21, 22, 23, 14, 15, 16, 24, 25, 26]);
    expect(() => R.broadcastShapes([2, 3], [4, 3])).toThrow();
    const r = R.reduce(R.nd([2, 3], [1, -2, 3, 4, 5, -6]), 'sum', -1, true);
    expect(r.out.shape).toEqual([2, 1]);
    expect(Array.from(r.out.data)).toEqual([2, 3]);
    expect(Array.from(r.absSum.data)).toEqual([6, 15]);
    expect(Array.from(R.reduce(R.nd([2, 3], [1, -2, 3, 4, 5, -6]), 'max', 0).out.data)).toEqual([4, 5, 3]);
    const p = R.permute(R.nd([2, 3], [1, 2, 3, 4, 5, 6]), [1, 0]);
    expect(p.shape).toEqual([3, 2]);
    expect(Array.from(p.data)).toEqual([1, 4, 2, 5, 3, 6]);
    expect(R.sliceIndices(10, 2, 8, 3)).toEqual([2, 5]);
    expect(R.sliceIndices(10, -3, 100, 1)).toEqual([7, 8, 9]);
    expect(R.sliceIndices(10, 1, -1, 4)).toEqual([1, 5]);
    const c = R.cat([R.nd([2, 1], [1, 2]), R.nd([2, 2], [3, 4, 5, 6])], 1);
    expect(Array.from(c.data)).toEqual([1, 3, 4, 2, 5, 6]);
  });

  test('matmul: 2-D, 1-D and broadcast batches', () => {
    const a = R.nd([2, 3], [1, 2, 3, 4, 5, 6]);
    const b = R.nd([3, 2], [7, 8, 9, 10, 11, 12]);
    expect(Array.from(R.matmul(a, b).out.data)).toEqual([58, 64, 139, 154]);
    const v = R.nd([3], [1, 0, -1]);
    expect(R.matmul(a, v).out.shape).toEqual([2]);
    expect(Array.from(R.matmul(a, v).out.data)).toEqual([-2, -2]);
    expect(R.matmul(v, b).out.shape).toEqual([2]);
    expect(R.matmul(v, v).out.shape).toEqual([]);
    const batched = R.matmul(R.nd([2, 1, 2, 3], new Array(12).fill(1)), R.nd([3, 3, 1], new Array(9).fill(2)));
    expect(batched.out.shape).toEqual([2, 3, 2, 1]);
    expect(batched.out.data[0]).toBe(6);
  });

  test('softmax, norms and attention on a hand-checked case', () => {
    const s = R.softmax(R.nd([1, 2], [0, Math.log(3)]), -1);
    expect(s.data[0]).toBeCloseTo(0.25, 15);
    const ls = R.logSoftmax(R.nd([2], [1000, 1000]), 0);
    expect(ls.data[0]).toBeCloseTo(-Math.LN2, 15);
    const ln = R.layerNorm(R.nd([2], [1, 3]), undefined, undefined, 0);
    expect(Array.from(ln.data)).toEqual([-1, 1]);
    const rn = R.rmsNorm(R.nd([2], [3, 4]), R.nd([2], [2, 1]), 0);
    expect(rn.data[0]).toBeCloseTo((3 / Math.sqrt(12.5)) * 2, 14);
    // causal: the first query sees only the first key, so it returns v[0]
    const q = R.nd([2, 1], [1, 1]);
    const v = R.nd([2, 1], [5, 7]);
    const att = R.sdpa(q, q, v, { causal: true });
    expect(att.out.data[0]).toBe(5);
    expect(att.out.data[1]).toBeCloseTo(6, 14);
  });
});
