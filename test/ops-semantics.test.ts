/**
 * Op semantics at the edges, eager and compiled with the real C++ compiler alike: int32 min
 * at INT_MIN, max/min over a dynamic dim that is empty at run time, pow with the scalar
 * exponents PyTorch computes another way (sqrt, rsqrt, reciprocal, x·x, x·x·x, 1/(x·x)),
 * x + 0 with x = -0, and integer scalars that do not fit int32. Compiles are slow: one
 * compile serves every value check, one the dynamic-dim checks.
 */
import * as kiln from '../lib';
import { compile } from '../lib/api/compile';
import { deserializeGraph, serializeGraph, toposort } from '../lib/ir';
import { lower, optimize } from '../lib/passes';
import { interpret } from '../lib/runtime/interpreter';
import { trace } from '../lib/tensor/trace';
import { ArgumentError, ShapeError } from '../lib/util/errors';

type T = kiln.Tensor;
const { fround } = Math;
const INT_MIN = -2147483648;
const INT_MAX = 2147483647;

/** Elements compared with Object.is: -0 is not 0, NaN is NaN. */
async function bits(t: T): Promise<number[]> {
  return Array.from(await t.toArray(), Number);
}
function expectSame(got: readonly number[], want: readonly number[], what: string): void {
  expect({ what, got: got.map(String), neg0: got.map((v) => Object.is(v, -0)) }).toEqual({ what, got: want.map(String), neg0: want.map((v) => Object.is(v, -0)) });
}

// ─── one program with every value check ─────────────────────────────────────────────────────

const X = [-Infinity, -0, 0, 4, NaN, 2.5, 1e-3, 7];
const XI = [5, INT_MIN, 3, INT_MAX];
const XH = [-Infinity, -0, 0, 4, NaN, 2.5, 0.1, 7]; // float16 values

function program(x: T, xi: T, xb: T, xh: T) {
  return {
    minI: xi.min(),
    minIRows: xi.reshape([2, 2]).min(1),
    minIKeep: xi.reshape([2, 2]).min(0, true),
    maxI: xi.max(),
    minB: xb.reshape([2, 2]).min(1),
    minF: x.reshape([2, 4]).min(1),
    maxF: x.reshape([2, 4]).max(1),
    p05: x.pow(0.5),
    pm05: x.pow(-0.5),
    pm1: x.pow(-1),
    p2: x.pow(2),
    p3: x.pow(3),
    pm2: x.pow(-2),
    p15: x.pow(1.5),
    ph05: xh.pow(0.5),
    ph3: xh.pow(3),
    add0: x.add(0),
    addNeg0: x.add(-0),
    zeroAdd: kiln.add(0, x),
    sub0: x.sub(0),
    addI0: xi.add(0),
  };
}

function inputs(): [T, T, T, T] {
  return [kiln.tensor(X, [8]), kiln.tensor(XI, [4], 'int32'), kiln.tensor([1, 0, 1, 1], [4], 'bool'), kiln.tensor(XH, [8], 'float16')];
}

/** What PyTorch computes: each op rounded to float32 (float16: computed in float32, rounded once). */
const f32 = X.map(fround);
const EXPECT: Record<string, number[]> = {
  minI: [INT_MIN],
  minIRows: [INT_MIN, 3],
  minIKeep: [3, INT_MIN],
  maxI: [INT_MAX],
  minB: [0, 1],
  minF: [-Infinity, NaN],
  maxF: [4, NaN],
  p05: f32.map((v) => fround(Math.sqrt(v))), // sqrt(-inf) = NaN, sqrt(-0) = -0
  pm05: f32.map((v) => fround(1 / fround(Math.sqrt(v)))), // rsqrt(-0) = -inf
  pm1: f32.map((v) => fround(1 / v)),
  p2: f32.map((v) => fround(v * v)),
  p3: f32.map((v) => fround(fround(v * v) * v)), // rounded twice, as x·x·x is
  pm2: f32.map((v) => fround(1 / fround(v * v))),
  p15: f32.map((v) => fround(Math.pow(v, 1.5))), // pow itself: (-inf)**1.5 = +inf, (-0)**1.5 = +0
  add0: f32.map((v) => fround(v + 0)), // -0 + 0 = +0
  addNeg0: f32.map((v) => fround(v + -0)), // -0 + -0 = -0
  zeroAdd: f32.map((v) => fround(0 + v)),
  sub0: f32.map((v) => fround(v - 0)), // -0 - 0 = -0
  addI0: XI,
};

describe('op semantics at the edges, eager and compiled', () => {
  let eager: Record<string, number[]>;
  beforeAll(async () => {
    const out = program(...inputs());
    eager = {};
    for (const [k, v] of Object.entries(out)) eager[k] = await bits(v);
  });

  test('eager results are what PyTorch computes', () => {
    for (const [k, want] of Object.entries(EXPECT)) expectSame(eager[k], want, k);
    // float16 pow(x, 0.5) is sqrt too (computed in float32, rounded once)
    expectSame(eager.ph05.slice(0, 4), [NaN, -0, 0, 2], 'ph05');
    expectSame(eager.ph3.slice(0, 4), [-Infinity, -0, 0, 64], 'ph3');
  });

  test('a compiled program computes exactly what eager does', async () => {
    const f = compile(program, { device: 'cpu' });
    const got = await f(...inputs());
    for (const [k, v] of Object.entries(got)) expectSame(await bits(v), eager[k], k);
  });

  test('pow with those scalar exponents lowers to their primitives at trace time', () => {
    const ops = (fn: (x: T) => T, dtype: 'float32' | 'float16' | 'int32' = 'float32') =>
      toposort(trace(fn, [{ shape: [3], dtype }])).map((n) => n.op).filter((op) => !['INPUT', 'CONST', 'RESHAPE', 'EXPAND'].includes(op));
    expect(ops((x) => x.pow(0.5))).toEqual(['SQRT']);
    expect(ops((x) => x.pow(-0.5))).toEqual(['SQRT', 'RECIP']);
    expect(ops((x) => x.pow(-1))).toEqual(['RECIP']);
    expect(ops((x) => x.pow(2))).toEqual(['MUL']);
    expect(ops((x) => x.pow(3))).toEqual(['MUL', 'MUL']);
    expect(ops((x) => x.pow(-2))).toEqual(['MUL', 'RECIP']);
    expect(ops((x) => x.pow(0.5), 'float16')).toEqual(['CAST', 'SQRT', 'CAST']);
    expect(ops((x) => x.pow(0.5), 'int32')).toEqual(['CAST', 'SQRT']);
    expect(ops((x) => x.pow(1.5))).toEqual(['POW']);
    expect(ops((x) => x.pow(2), 'int32')).toEqual(['POW']);
    expect(ops((x) => x.pow(x))).toEqual(['POW']);
  });

  test('x + 0 is simplified away only where that is exact', () => {
    const opsOf = (fn: (x: T) => T, dtype: 'float32' | 'int32') => toposort(optimize(trace(fn, [{ shape: [3], dtype }]))).map((n) => n.op);
    expect(opsOf((x) => x.add(0), 'int32')).toEqual(['INPUT']);
    expect(opsOf((x) => x.add(0), 'float32')).toContain('ADD'); // -0 + 0 is +0
    expect(opsOf((x) => x.add(-0), 'float32')).toEqual(['INPUT']);
    expect(opsOf((x) => x.sub(0), 'float32')).toEqual(['INPUT']);
  });

  test('int32 min is one fused row kernel, like max', () => {
    const kernels = (fn: (x: T) => T) => lower(trace(fn, [{ shape: [5, 7], dtype: 'int32' }])).kernels.length;
    expect(kernels((x) => x.min(1))).toBe(kernels((x) => x.max(1)));
    expect(kernels((x) => x.min(1))).toBe(1);
  });
});

// ─── max/min over a dynamic dim that is empty at run time ───────────────────────────────────

describe('max and min over a dynamic dim refuse size 0, as eager does', () => {
  const reduce = (x: T) => ({ mx: x.max(1), mn: x.min(1), mni: x.to('int32').min(-1, true) });
  const at = (n: number) => kiln.tensor(Array.from({ length: 2 * n }, (_, i) => (i * 7) % 5), [2, n]);

  test('eager refuses an empty reduced dim', () => {
    expect(() => at(0).max(1)).toThrow(expect.objectContaining({ code: 'KILN_SHAPE_MISMATCH' }));
    expect(() => at(0).min(1)).toThrow(expect.objectContaining({ code: 'KILN_SHAPE_MISMATCH' }));
  });

  test('the trace records a guard (dim >= 1) that survives serialization and the interpreter checks', () => {
    const g = trace(reduce, [{ shape: [2, 3] }], { dynamic: { 0: [1] } });
    expect(g.guards?.map((x) => [String(x.dim), x.min, x.max, x.op])).toEqual([['s0', 1, undefined, 'max(1)']]); // one guard per condition
    expect(g.guards?.[0].site?.file).toBe(__filename);
    const back = deserializeGraph(JSON.parse(JSON.stringify(serializeGraph(g))));
    expect(back.guards).toEqual([{ dim: g.guards?.[0].dim, min: 1, op: 'max(1)' }]);
    const input = (n: number) => ({ dtype: 'float32' as const, shape: [2, n], data: new Float32Array(2 * n) });
    expect(interpret(back, [input(3)])).toHaveLength(3);
    expect(() => interpret(back, [input(0)])).toThrow(expect.objectContaining({ code: 'KILN_SHAPE_GUARD', message: expect.stringMatching(/max\(1\) needs the dynamic size s0 to be at least 1, but these inputs make it 0.*empty dim/) }));
    // An example size of 0 fails at trace time, before any compile.
    expect(() => trace(reduce, [{ shape: [2, 0] }], { dynamic: { 0: [1] } })).toThrow(expect.objectContaining({ code: 'KILN_SHAPE_GUARD' }));
    // Over a static dim, or a dynamic dim not reduced, there is nothing to guard.
    expect(trace(reduce, [{ shape: [2, 3] }], { dynamic: { 0: [0] } }).guards).toBeUndefined();
  });

  test('softmax and logSoftmax over an empty dim give an empty result (as in PyTorch) and need no guard', async () => {
    expect(trace((x: T) => [x.softmax(1), x.logSoftmax(1)], [{ shape: [2, 3] }], { dynamic: { 0: [1] } }).guards).toBeUndefined();
    for (const y of [at(0).softmax(1), at(0).logSoftmax(-1)]) {
      expect(y.shape).toEqual([2, 0]);
      expect(await y.toArray()).toHaveLength(0);
    }
  });

  test('a compiled function refuses size 0 with a ShapeError naming the op and call site', async () => {
    const f = compile(reduce, { device: 'cpu', dynamic: { 0: [1] } });
    for (const n of [3, 1]) {
      const [got, want] = [await f(at(n)), reduce(at(n))];
      for (const k of ['mx', 'mn', 'mni'] as const) expect(await got[k].toArray()).toEqual(await want[k].toArray());
    }
    const err = await f(at(0)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShapeError);
    expect(err).toMatchObject({
      code: 'KILN_SHAPE_GUARD',
      message: expect.stringMatching(/max\(1\) at .*ops-semantics\.test\.ts:\d+:\d+ needs the dynamic size s0 to be at least 1, but these inputs make it 0/),
    });
  });
});

// ─── integer scalars that do not fit int32 ──────────────────────────────────────────────────

describe('an int32 tensor with an integer scalar outside int32 is an error, not a wrapped value', () => {
  const xi = () => kiln.tensor([INT_MAX, -5], [2], 'int32');
  const xb = () => kiln.tensor([1, 0], [2], 'bool');
  const overflow = (op: string, value: number) =>
    expect.objectContaining({ code: 'KILN_SCALAR_OVERFLOW', message: expect.stringMatching(new RegExp(`^${op}: .*${String(value).replace('+', '\\+')}.*int32`)) });

  test.each<[string, () => unknown, string, number]>([
    ['lt', () => xi().lt(2147483648), 'lt', 2147483648],
    ['mul', () => xi().mul(1e10), 'mul', 1e10],
    ['add below', () => xi().add(-2147483649), 'add', -2147483649],
    ['reversed operands', () => kiln.sub(2 ** 40, xi()), 'sub', 2 ** 40],
    ['maximum', () => xi().maximum(3e9), 'maximum', 3e9],
    ['bool tensor (computes in int32)', () => xb().eq(2 ** 31), 'eq', 2 ** 31],
    ['where', () => kiln.where(xb(), xi(), 2 ** 32), 'where', 2 ** 32],
  ])('%s', (_name, call, op, value) => {
    let err: unknown;
    try {
      call();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ArgumentError);
    expect(err).toEqual(overflow(op, value));
    expect((err as Error).message).toMatch(/to\('float32'\)/);
  });

  test('inside a traced function too', () => {
    expect(() => trace((x: T) => x.ge(2 ** 31), [{ shape: [2], dtype: 'int32' }])).toThrow(expect.objectContaining({ code: 'KILN_SCALAR_OVERFLOW' }));
  });

  test('values in range, float scalars and bool scalars still work', async () => {
    expect(Array.from(await xi().lt(INT_MAX).toArray())).toEqual([0, 1]);
    expect(Array.from(await xi().add(INT_MIN).toArray())).toEqual([-1, 2147483643]);
    expect(Array.from(await xi().lt(1e10 + 0.5).toArray())).toEqual([1, 1]); // a float scalar: compared in float32
    const big = xi().mul(1e10 + 0.5);
    expect(big.dtype).toBe('float32');
    expect(Array.from(await xb().add(true).toArray())).toEqual([1, 1]);
    expect(Array.from(await xb().mul(3).toArray())).toEqual([3, 0]);
    expect(Array.from(await kiln.where(xb(), xi(), 1e10 + 0.5).toArray())).toEqual([INT_MAX, 1e10 + 0.5].map(fround));
  });
});

// ─── one class per error code ───────────────────────────────────────────────────────────────

describe('KILN_BAD_ARGUMENT is always an ArgumentError', () => {
  test.each<[string, () => unknown]>([
    ['sum over a repeated dim', () => kiln.tensor([1, 2, 3, 4], [2, 2]).sum([1, -1])],
    ['slice with step 0', () => kiln.tensor([1, 2, 3], [3]).slice(0, 0, 3, 0)],
    ['reshape with two -1', () => kiln.tensor([1, 2, 3, 4], [2, 2]).reshape([-1, -1])],
    ['permute with too few dims', () => kiln.tensor([1, 2, 3, 4], [2, 2]).permute([0])],
    ['gelu with a bad mode', () => kiln.tensor([1], [1]).gelu('fast' as 'none')],
    ['cat of nothing', () => kiln.cat([])],
  ])('%s', (_name, call) => {
    expect(call).toThrow(ArgumentError);
    expect(call).toThrow(expect.objectContaining({ code: 'KILN_BAD_ARGUMENT' }));
  });
});
