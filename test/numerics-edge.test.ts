/**
 * Edge values of pow and casts in the reference interpreter and eager execution: pow is C's
 * (PyTorch's, numpy's), int32 pow is PyTorch's integer pow with two's-complement wrap, and a
 * float -> int32 -> float cast gives +0. The generated C++ and CUDA run the same values
 * (test/codegen.test.ts "edge values", scripts/gpu-check/cases.cjs "edge-*"), where also a
 * reduction over a statically empty dim stores its identity-based result once per row.
 */
import * as kiln from '../lib';
import { dependsOn, lower } from '../lib/passes';
import { floatPow, intPow } from '../lib/runtime/kernels';
import { trace } from '../lib/tensor/trace';

/** ToInt32 of an exact integer power, for expectations (BigInt: no float rounding). */
const wrapped = (a: number, b: number): number => Number(BigInt.asIntN(32, BigInt(a) ** BigInt(b)));

describe('float pow is C pow', () => {
  // [base, exponent, C / PyTorch / numpy result]
  const cases: [number, number, number][] = [
    [1, NaN, 1],
    [1, Infinity, 1],
    [1, -Infinity, 1],
    [-1, Infinity, 1],
    [-1, -Infinity, 1],
    [NaN, 0, 1],
    [NaN, -0, 1],
    [Infinity, 0, 1],
    [2, NaN, NaN],
    [NaN, 1, NaN],
    [-2, 0.5, NaN],
    [0, -1, Infinity],
    [-0, -1, -Infinity],
    [-0, 3, -0],
    [-0, 0.5, 0],
    [-Infinity, 0.5, Infinity],
    [0.5, Infinity, 0],
    [2, -Infinity, 0],
    [-2, 3, -8],
  ];
  test.each(cases)('pow(%p, %p) = %p', (a, b, want) => {
    expect(floatPow(a, b)).toBe(want);
  });

  test('eager float32 pow over tensors gives the same values', async () => {
    const a = kiln.tensor(cases.map((c) => c[0]), [cases.length]);
    const b = kiln.tensor(cases.map((c) => c[1]), [cases.length]);
    expect(Array.from(await a.pow(b).toArray())).toEqual(cases.map((c) => Math.fround(c[2])));
  });
});

describe('int32 pow is PyTorch integer pow (wrapping)', () => {
  const cases: [number, number, number][] = [
    [2147483647, 2, 1], // (2^31 - 1)^2 = 2^62 - 2^32 + 1
    [3, 40, wrapped(3, 40)],
    [-3, 41, wrapped(-3, 41)],
    [2, 31, -2147483648],
    [2, 32, 0],
    [-2147483648, 1, -2147483648],
    [-2147483648, 2, 0],
    [7, 0, 1],
    [0, 0, 1],
    [-5, 3, -125],
    [46341, 2, wrapped(46341, 2)],
    // negative exponents: 1 for base 1, +-1 for base -1 by parity, 0 otherwise (base 0 too)
    [1, -5, 1],
    [-1, -3, -1],
    [-1, -4, 1],
    [-1, -2147483648, 1],
    [2, -1, 0],
    [-2, -1, 0],
    [0, -1, 0],
    [0, -2147483648, 0],
  ];
  test.each(cases)('%p ** %p = %p', (a, b, want) => {
    expect(intPow(a, b)).toBe(want);
  });

  test('the largest exponent: 3 ** (2^31 - 1) modulo 2^32', () => {
    // 3 has order 2^30 modulo 2^32, so 3^(2^31 - 1) = 3^(2^30 - 1) = 3^-1 (mod 2^32)
    const inverse3 = Number(BigInt.asIntN(32, 0xaaaaaaabn)); // 3 * 0xaaaaaaab = 2^33 + 1
    expect(intPow(3, 2147483647)).toBe(inverse3);
  });

  test('squaring matches BigInt for random bases and exponents', () => {
    for (let i = 0; i < 200; i++) {
      const a = ((i * 2654435761) | 0) % 100000;
      const b = (i * 7919) % 97;
      expect(intPow(a, b)).toBe(wrapped(a, b));
    }
  });

  test('eager int32 pow over tensors gives the same values', async () => {
    const a = kiln.tensor(cases.map((c) => c[0]), [cases.length], 'int32');
    const b = kiln.tensor(cases.map((c) => c[1]), [cases.length], 'int32');
    expect(Array.from(await a.pow(b).toArray())).toEqual(cases.map((c) => c[2]));
  });
});

describe('casts', () => {
  test('float32 -> int32 -> float gives +0 for -0 and (-1, 0), in every float dtype', async () => {
    const x = kiln.tensor([-0, -0.5, -0.999, 0.5], [4]);
    for (const dt of ['float32', 'float16', 'bfloat16'] as const) {
      const got = Array.from(await x.to('int32').to(dt).toArray());
      expect(got.map((v) => Object.is(v, 0))).toEqual([true, true, true, true]);
    }
  });
});

describe('reductions over a statically empty dim', () => {
  // Merging the domain dims of an empty view must keep a broadcast store's stride 0: the
  // store of a whole-tensor sum depends on no reduced dim (else it is inside the empty loop).
  test.each<[string, (x: kiln.Tensor) => kiln.Tensor, number[]]>([
    ['sum of [0, 3]', (x) => x.sum().add(1), [0, 3]],
    ['sum over dims 0, 1 of [0, 3, 4]', (x) => x.sum([0, 1]).add(1), [0, 3, 4]],
    ['sum over dim 0 of [0, 3, 4]', (x) => x.sum(0).add(1), [0, 3, 4]],
  ])('%s: the store depends on no reduced dim', (_n, fn, shape) => {
    const [k] = lower(trace(fn, [{ shape, dtype: 'float32' }])).kernels;
    expect(k.kind).toBe('reduce');
    const deps = dependsOn(k.stores[0].view);
    expect(k.reduced.some((r, d) => r && deps[d])).toBe(false);
  });
});
