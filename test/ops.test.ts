/**
 * Numeric acceptance suite for kiln's eager Tensor API: every public op against an independent
 * float64 reference (test/helpers/ref.ts), at awkward sizes, with broadcasting, negative dims,
 * keepdim and every dtype each op supports.
 *
 * How results are judged:
 * - float32: |got - want| ≤ 1e-6·max(|want|, floor) (+ a computed accumulation bound for
 *   reductions, matmul and the composites). `want` is the float64 result on the very float32
 *   inputs kiln holds. The floor is 2^-126 (purely relative) unless an op says why not.
 * - float16 / bfloat16: `got` must be a value of the format and within one ulp of the float64
 *   result rounded once (round-to-nearest-even) — PyTorch computes these in float32 and rounds
 *   each op's result once — plus the float32 bound where one applies. Exceptions, each with
 *   its reason at the case: rmsNorm with a weight (2 ulps) and attention (a computed bound).
 * - int32 / bool: exact.
 * Data is drawn from a PRNG seeded by the test's name, so every failure is reproducible.
 * KILN_TEST_DEVICE (default cpu) picks the device the tensors are created on.
 */
import * as kiln from '../lib';
import * as R from './helpers/ref';
import { Nd } from './helpers/ref';

// Hot per-element closures below use these; bound once because global lookups are slow in
// Jest's vm context (see test/helpers/ref.ts).
const Math = globalThis.Math;
const Infinity = globalThis.Infinity;
const NaN = globalThis.NaN;

type Tensor = ReturnType<typeof kiln.tensor>;
type DType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'bool';
type Gen = (r: R.Rng) => number;

const DEVICE = (process.env.KILN_TEST_DEVICE ?? 'cpu') as 'cpu' | 'cuda';
const FLOATS: DType[] = ['float32', 'float16', 'bfloat16'];
const HALF_FORMAT: Partial<Record<DType, R.Format>> = { float16: R.F16, bfloat16: R.BF16 };
const ARRAY_TYPE = {
  float32: Float32Array,
  float16: Float32Array,
  bfloat16: Float32Array,
  int32: Int32Array,
  bool: Uint8Array,
} as const;
/** Smallest normal float32: as a floor it makes the float32 check purely relative. */
const TINY = 2 ** -126;
const U = R.U32;

// ─── Data ─────────────────────────────────────────────────────────────────────────────────────

const normal =
  (sigma = 1, mu = 0): Gen =>
  (r) =>
    mu + sigma * r.normal();
const uniform =
  (lo: number, hi: number): Gen =>
  (r) =>
    r.uniform(lo, hi);
/** Integers lo..hi inclusive. */
const ints =
  (lo: number, hi: number): Gen =>
  (r) =>
    r.int(lo, hi + 1);
/** ±[lo, hi): never zero. */
const nonzero =
  (lo: number, hi: number): Gen =>
  (r) =>
    (r.next() < 0.5 ? -1 : 1) * r.uniform(lo, hi);
const nonzeroInts: Gen = (r) => (r.next() < 0.5 ? -1 : 1) * r.int(1, 20);
const bools: Gen = (r) => (r.next() < 0.5 ? 0 : 1);
/** Values from a small set so that comparisons meet ties. */
const steps: Gen = (r) => r.int(-2, 3) / 2;

let rngState: { name: string; rng: R.Rng } | undefined;
/** One PRNG per test, seeded by the test's full name. */
function rng(): R.Rng {
  const name = expect.getState().currentTestName ?? '';
  if (rngState?.name !== name) rngState = { name, rng: new R.Rng(R.seedOf(name)) };
  return rngState.rng;
}

/** What tensor creation stores for a number: rounding for floats, truncation for int32. */
function quantize(v: number, d: DType): number {
  switch (d) {
    case 'float32':
      return R.roundF32(v);
    case 'float16':
      return R.roundF16(v);
    case 'bfloat16':
      return R.roundBF16(v);
    case 'int32':
      return Math.trunc(v);
    case 'bool':
      return v !== 0 ? 1 : 0;
  }
}

interface Input {
  t: Tensor;
  ref: Nd;
}

/** A kiln tensor and its float64 twin holding exactly the same values. */
function fromValues(values: ArrayLike<number>, shape: number[], dtype: DType): Input {
  const q = new Float64Array(values.length);
  for (let i = 0; i < q.length; i++) q[i] = quantize(values[i]!, dtype);
  return { t: kiln.tensor(q, shape, dtype, DEVICE), ref: new Nd([...shape], q.slice()) };
}

/** Random data of `shape`; bool tensors always get random 0/1. */
function input(shape: number[], dtype: DType, gen: Gen = normal()): Input {
  const r = rng();
  if (dtype === 'bool') gen = bools;
  const values = new Float64Array(R.numel(shape)); // a plain loop: Array.from({ length }) is slow
  for (let i = 0; i < values.length; i++) values[i] = gen(r);
  return fromValues(values, shape, dtype);
}

/** Default data for a dtype: ints for int32, 0/1 for bool, `gen` for floats. */
const genFor = (dtype: DType, gen: Gen, intGen: Gen = ints(-50, 50)): Gen =>
  dtype === 'int32' ? intGen : dtype === 'bool' ? bools : gen;

// ─── Checking ─────────────────────────────────────────────────────────────────────────────────

interface Tol {
  /** Bit-exact (views, max/min, conversions, int32, bool). */
  exact?: boolean;
  /** float32 relative tolerance, default 1e-6. */
  rtol?: number;
  /** float32: below this |want| the check is absolute at rtol·floor. */
  floor?: number;
  /** half types: allowed ulps, default 1. */
  ulps?: number;
  /** A computed float32 error bound at flat index i, added to the allowance. */
  extra?: (i: number) => number;
}

/** Asserts dtype, shape, the toArray() class and every value of `got` against the reference. */
async function expectTensor(got: Tensor, want: Nd, dtype: DType, tol: Tol = {}): Promise<void> {
  expect({ dtype: got.dtype, shape: [...got.shape], device: got.device }).toEqual({
    dtype,
    shape: want.shape,
    device: DEVICE,
  });
  const data = await got.toArray();
  expect(data).toBeInstanceOf(ARRAY_TYPE[dtype]);
  const extra = tol.extra ?? (() => 0);
  const fmt = HALF_FORMAT[dtype];
  const ok =
    dtype === 'int32' || dtype === 'bool' || tol.exact
      ? (g: number, w: number) => R.sameValue(g, w)
      : fmt
        ? (g: number, w: number, i: number) => R.closeHalf(g, w, fmt, tol.ulps ?? 1, extra(i))
        : (g: number, w: number, i: number) => R.closeF32(g, w, tol.rtol ?? 1e-6, tol.floor ?? TINY, extra(i));
  expect(R.mismatches(data, want, ok)).toEqual([]);
}

const shapeName = (s: number[]) => `[${s.join(',')}]`;

// ─── Tensor creation ──────────────────────────────────────────────────────────────────────────

describe('tensor creation and toArray', () => {
  test('defaults: float32 on cpu; shape, dtype and device are reported', async () => {
    const t = kiln.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    expect([...t.shape]).toEqual([2, 3]);
    expect(t.dtype).toBe('float32');
    expect(t.device).toBe('cpu');
    const a = await t.toArray();
    expect(a).toBeInstanceOf(Float32Array);
    expect(Array.from(a)).toEqual([1, 2, 3, 4, 5, 6]);
    t.dispose();
  });

  test.each<[DType, ArrayLike<number>, number[]]>([
    ['float32', new Float32Array([1.5, -2]), [1.5, -2]],
    ['float32', new Float64Array([0.1, 1e-50]), [Math.fround(0.1), 0]],
    ['float16', [1.5, -2], [1.5, -2]],
    ['bfloat16', [1.5, -2], [1.5, -2]],
    ['int32', new Int32Array([7, -8]), [7, -8]],
    ['int32', [2147483647, -2147483648], [2147483647, -2147483648]],
    ['bool', new Uint8Array([1, 0]), [1, 0]],
    ['bool', [0, 1], [0, 1]],
  ])('%s from %p reads back as its typed array', async (dtype, data, want) => {
    const t = kiln.tensor(data, [2], dtype, DEVICE);
    expect(t.dtype).toBe(dtype);
    const a = await t.toArray();
    expect(a).toBeInstanceOf(ARRAY_TYPE[dtype]);
    expect(Array.from(a)).toEqual(want);
  });

  test('a 0-d tensor has shape [] and one value', async () => {
    const t = kiln.tensor([2.5], [], 'float32', DEVICE);
    expect([...t.shape]).toEqual([]);
    expect(Array.from(await t.toArray())).toEqual([2.5]);
  });

  // Numbers given for half types are rounded to nearest-even on creation. The values are exact
  // float32 numbers, so rounding from float64 or from float32 gives the same answer.
  const HALF_EDGE = [0.1, 1 / 3, -1e-3, 65504, 65519, 65520, -70000, 2049, 2051, 2 ** -25, 3 * 2 ** -26, 1e-8, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3e38, 1e-40, NaN, -Infinity].map(Math.fround);
  test.each([
    ['float16', R.F16],
    ['bfloat16', R.BF16],
  ] as const)('%s values given as numbers and as Float32Array are rounded on creation', async (dtype, fmt) => {
    for (const data of [HALF_EDGE, new Float32Array(HALF_EDGE)]) {
      const got = await kiln.tensor(data, [HALF_EDGE.length], dtype, DEVICE).toArray();
      expect(got).toBeInstanceOf(Float32Array);
      const want = HALF_EDGE.map((v) => R.roundTo(v, fmt));
      expect(R.mismatches(got, R.nd([want.length], want), R.sameValue)).toEqual([]);
    }
  });
});

// ─── Elementwise binary ops ───────────────────────────────────────────────────────────────────

type BinaryFn = (a: Tensor, b: Tensor | number) => Tensor;
interface BinarySpec {
  op: BinaryFn;
  f: (a: number, b: number) => number;
  a: Gen;
  b: Gen;
  intA?: Gen;
  intB?: Gen;
}
const BINARY: Record<string, BinarySpec> = {
  add: { op: (a, b) => a.add(b), f: (a, b) => a + b, a: normal(3), b: normal(3) },
  sub: { op: (a, b) => a.sub(b), f: (a, b) => a - b, a: normal(3), b: normal(3) },
  mul: { op: (a, b) => a.mul(b), f: (a, b) => a * b, a: normal(3), b: normal(3) },
  div: { op: (a, b) => a.div(b), f: (a, b) => a / b, a: normal(3), b: nonzero(0.25, 4), intB: nonzeroInts },
  // positive bases keep real results; |y·ln x| ≤ 2.8 keeps pow's float32 error well under 1e-6
  pow: {
    op: (a, b) => a.pow(b),
    f: Math.pow,
    a: uniform(0.1, 3),
    b: uniform(-2.5, 2.5),
    intA: ints(-5, 5),
    intB: ints(0, 4),
  },
  maximum: { op: (a, b) => a.maximum(b), f: (a, b) => Math.max(a, b), a: steps, b: normal() },
  minimum: { op: (a, b) => a.minimum(b), f: (a, b) => Math.min(a, b), a: steps, b: normal() },
};
const BINARY_NAMES = Object.keys(BINARY);

/** Result dtype of a same-dtype binary op: true division of integers gives float32. */
const binaryDtype = (op: string, d: DType): DType => (op === 'div' && d === 'int32' ? 'float32' : d);

const BROADCAST_SHAPES: [number[], number[]][] = [
  [[1], [1]],
  [[3], [3]],
  [[50], [1]], // size-1 dim on the right operand
  [[1], [783]], // size-1 dim on the left operand
  [[783], []], // 0-d tensor operand
  [[3, 1, 5], [1, 4, 1]], // size-1 dims on both sides
  [[2, 3, 4], [3, 1]], // fewer dims on the right
]; // the large size is in 'large tensors' below

async function checkBinary(name: string, sa: number[], sb: number[], dtype: DType): Promise<void> {
  const spec = BINARY[name]!;
  const a = input(sa, dtype, genFor(dtype, spec.a, spec.intA));
  const b = input(sb, dtype, genFor(dtype, spec.b, spec.intB));
  await expectTensor(spec.op(a.t, b.t), R.map(spec.f, a.ref, b.ref), binaryDtype(name, dtype));
}

describe.each(BINARY_NAMES)('%s', (name) => {
  const spec = BINARY[name]!;
  const cases = BROADCAST_SHAPES.flatMap(([sa, sb]) =>
    [...FLOATS, 'int32' as DType].map((d) => [shapeName(sa), shapeName(sb), d, sa, sb] as const),
  );
  test.each(cases)('%s with %s, %s', (_a, _b, dtype, sa, sb) => checkBinary(name, sa, sb, dtype));

  // Scalars: integer-valued numbers keep int32; non-integers promote int32 to float32; a
  // half tensor stays half. Integer pow with a negative exponent is an error in PyTorch.
  const scalars = name === 'pow' ? [2, 3, 0.5, -1.5] : [2.5, -3, 0.1];
  const scalarCases = scalars.flatMap((s) => [...FLOATS, 'int32' as DType].map((d) => [s, d] as const));
  test.each(scalarCases)('[3,50] with the number %p, %s', async (s, dtype) => {
    const a = input([3, 50], dtype, genFor(dtype, spec.a, spec.intA));
    const want: DType = dtype === 'int32' && (!Number.isInteger(s) || name === 'div') ? 'float32' : dtype;
    await expectTensor(spec.op(a.t, s), R.map((x) => spec.f(x, s), a.ref), want);
  });
});

// PyTorch's promotion: float beats int beats bool; f16 with bf16 → f32; a number only lifts
// the category (int → float), never the width.
const PROMOTION: [DType, DType | number, string, DType][] = [
  ['float16', 'float32', 'add', 'float32'],
  ['float32', 'bfloat16', 'mul', 'float32'],
  ['float16', 'bfloat16', 'sub', 'float32'],
  ['int32', 'float32', 'add', 'float32'],
  ['int32', 'float16', 'mul', 'float16'],
  ['bfloat16', 'int32', 'sub', 'bfloat16'],
  ['int32', 'int32', 'div', 'float32'],
  ['int32', 2, 'div', 'float32'],
  ['int32', 2.5, 'add', 'float32'],
  ['int32', 3, 'mul', 'int32'],
  ['float16', 0.1, 'mul', 'float16'],
  ['bfloat16', 3, 'add', 'bfloat16'],
  ['bool', 3, 'add', 'int32'],
  ['bool', 2.5, 'mul', 'float32'],
  ['bool', 'int32', 'add', 'int32'],
  ['bool', 'float16', 'mul', 'float16'],
  ['bool', 'bool', 'add', 'bool'], // PyTorch: bool + bool stays bool (a logical or)
  ['bool', 'bool', 'mul', 'bool'], // (a logical and)
  ['int32', 'float32', 'maximum', 'float32'],
  ['float16', 'float32', 'minimum', 'float32'],
  ['int32', 2, 'pow', 'int32'],
  ['int32', 0.5, 'pow', 'float32'],
  ['float16', 2, 'pow', 'float16'],
  ['bfloat16', 'float32', 'pow', 'float32'],
];
describe('dtype promotion', () => {
  test.each(PROMOTION)('%s %p (%s) → %s', async (da, db, name, want) => {
    const spec = BINARY[name]!;
    const positive = name === 'pow';
    const genA = positive ? (da === 'int32' ? ints(0, 6) : uniform(0.1, 3)) : normal(3);
    const a = input([3, 50], da, genFor(da, genA, positive ? ints(0, 6) : ints(-20, 20)));
    const f = want === 'bool' ? (x: number, y: number) => (spec.f(x, y) !== 0 ? 1 : 0) : spec.f;
    if (typeof db === 'number') {
      await expectTensor(spec.op(a.t, db), R.map((x) => f(x, db), a.ref), want);
    } else {
      const genB = name === 'div' ? nonzero(0.25, 4) : positive ? uniform(-2, 2) : normal(3);
      const b = input([50], db, genFor(db, genB, name === 'div' ? nonzeroInts : ints(-20, 20)));
      await expectTensor(spec.op(a.t, b.t), R.map(f, a.ref, b.ref), want);
    }
  });

  // PyTorch: a 0-d tensor takes part in promotion like a number — it can lift the category
  // (int → float) but not the width within a category (float16 + 0-d float32 stays float16).
  test.each<[DType, DType, DType]>([
    ['float16', 'float32', 'float16'],
    ['bfloat16', 'float32', 'bfloat16'],
    ['float32', 'float16', 'float32'],
    ['int32', 'float16', 'float16'],
    ['int32', 'float32', 'float32'],
    ['float16', 'int32', 'float16'],
  ])('%s [3,50] with a 0-d %s tensor → %s', async (da, db, want) => {
    const a = input([3, 50], da, genFor(da, normal(3), ints(-20, 20)));
    const b = input([], db, genFor(db, normal(3), ints(-20, 20)));
    await expectTensor(a.t.mul(b.t), R.map((x, y) => x * y, a.ref, b.ref), want);
  });

  test.each<[string, DType, number[], DType, number[], DType]>([
    ['bool with a 0-d int32 → int32', 'bool', [3, 50], 'int32', [], 'int32'],
    ['two 0-d tensors promote as tensors', 'float16', [], 'float32', [], 'float32'],
    ['0-d float16 with 0-d bfloat16', 'float16', [], 'bfloat16', [], 'float32'],
    ['[1] is dimensioned: float16 [1] with float32 [3,50]', 'float16', [1], 'float32', [3, 50], 'float32'],
    ['0-d float32 on the left of a float16 tensor', 'float32', [], 'float16', [3, 50], 'float16'],
  ])('%s', async (_n, da, sa, db, sb, want) => {
    const a = input(sa, da, genFor(da, normal(3), ints(-20, 20)));
    const b = input(sb, db, genFor(db, normal(3), ints(-20, 20)));
    await expectTensor(a.t.add(b.t), R.map((x, y) => x + y, a.ref, b.ref), want);
    await expectTensor(kiln.where(a.t.ne(0), a.t, b.t), R.map((x, y) => quantize(x !== 0 ? x : y, want), a.ref, b.ref), want, { exact: true });
  });

  test('a 0-d number tensor and a JS number meet as numbers do: int32 [] + 2.5 → float32', async () => {
    const a = fromValues([7], [], 'int32');
    await expectTensor(a.t.add(2.5), R.nd([], [9.5]), 'float32');
    const h = fromValues([1.5], [], 'float16');
    await expectTensor(h.t.mul(0.1), R.nd([], [0.15]), 'float16');
  });

  // PyTorch reads a 0-d operand of a half op in float32 (opmath): half ⊕ 0-d float32 is the
  // float32 result rounded once, exactly as half ⊕ the same JS number.
  test.each(['float16', 'bfloat16'] as const)('%s with a 0-d float32 tensor keeps its float32 precision', async (dtype) => {
    const x = input([3, 50], dtype, normal(3));
    const s = Math.fround(0.1);
    const z = kiln.tensor([s], [], 'float32', DEVICE);
    for (const [got, viaNumber, f] of [
      [x.t.add(z), x.t.add(s), (v: number) => v + s],
      [x.t.mul(z), x.t.mul(s), (v: number) => v * s],
      [z.sub(x.t), x.t.neg().add(s), (v: number) => s - v],
    ] as const) {
      await expectTensor(got, R.map(f, x.ref), dtype);
      expect(Array.from(await got.toArray())).toEqual(Array.from(await viaNumber.toArray()));
    }
  });

  // PyTorch computes `half_tensor op number` in float32 with the number itself, not the number
  // first rounded to the half dtype (its CPU kernels read `original_scalar_value<opmath_t>`).
  // x = -fmt(0.1) makes the difference plain: x + 0.1 is tiny but not 0.
  test.each([
    ['float16', R.F16],
    ['bfloat16', R.BF16],
  ] as const)('a number operand is not rounded to %s before the op', async (dtype, fmt) => {
    const x = fromValues([-R.roundTo(0.1, fmt), R.roundTo(0.1, fmt)], [2], dtype);
    await expectTensor(x.t.add(0.1), R.map((v) => v + 0.1, x.ref), dtype);
    await expectTensor(x.t.sub(0.1), R.map((v) => v - 0.1, x.ref), dtype);
  });
});

// PyTorch: bool + bool is a logical or and bool · bool a logical and, both staying bool
// (also with a bool number); a number of a higher category promotes; bool - bool is an error.
describe('bool arithmetic', () => {
  const or = (x: number, y: number) => (x || y ? 1 : 0);
  const and = (x: number, y: number) => (x && y ? 1 : 0);
  test.each<[string, number[], number[]]>([
    ['[3,50] with [3,50]', [3, 50], [3, 50]],
    ['[3,1] with [1,4] (broadcast)', [3, 1], [1, 4]],
    ['[783] with a 0-d tensor', [783], []],
  ])('add is or, mul is and: %s', async (_n, sa, sb) => {
    const a = input(sa, 'bool');
    const b = input(sb, 'bool');
    await expectTensor(a.t.add(b.t), R.map(or, a.ref, b.ref), 'bool');
    await expectTensor(a.t.mul(b.t), R.map(and, a.ref, b.ref), 'bool');
    await expectTensor(kiln.add(b.t, a.t), R.map(or, b.ref, a.ref), 'bool');
  });

  test('with bool numbers the result stays bool; with integers it is int32', async () => {
    const a = input([50], 'bool');
    await expectTensor(a.t.add(true), R.map(() => 1, a.ref), 'bool');
    await expectTensor(a.t.add(false), a.ref, 'bool');
    await expectTensor(a.t.mul(false), R.map(() => 0, a.ref), 'bool');
    await expectTensor(a.t.mul(true), a.ref, 'bool');
    await expectTensor(a.t.add(1), R.map((x) => x + 1, a.ref), 'int32');
    await expectTensor(a.t.add(a.t).add(a.t.to('int32')), R.map((x) => or(x, x) + x, a.ref), 'int32');
  });

  test.each<[string, (a: Tensor, b: Tensor) => Tensor]>([
    ['two tensors', (a, b) => a.sub(b)],
    ['a tensor and a bool number', (a) => a.sub(true)],
    ['kiln.sub', (a, b) => kiln.sub(a, b)],
  ])('sub of bools is a typed error naming the op and suggesting ne: %s', (_n, op) => {
    const a = input([4], 'bool');
    const b = input([4], 'bool');
    let err: unknown;
    try {
      op(a.t, b.t);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(kiln.KilnError);
    expect(err).toMatchObject({ code: 'KILN_DTYPE', message: expect.stringMatching(/^sub: .*bool.*\.ne\(/) });
  });

  test('sub of a bool tensor and an integer is int32', async () => {
    const a = input([50], 'bool');
    await expectTensor(a.t.sub(1), R.map((x) => x - 1, a.ref), 'int32');
  });
});

// ─── Comparisons and where ────────────────────────────────────────────────────────────────────

const COMPARE: Record<string, { op: BinaryFn; f: (a: number, b: number) => boolean }> = {
  eq: { op: (a, b) => a.eq(b), f: (a, b) => a === b },
  ne: { op: (a, b) => a.ne(b), f: (a, b) => a !== b },
  lt: { op: (a, b) => a.lt(b), f: (a, b) => a < b },
  le: { op: (a, b) => a.le(b), f: (a, b) => a <= b },
  gt: { op: (a, b) => a.gt(b), f: (a, b) => a > b },
  ge: { op: (a, b) => a.ge(b), f: (a, b) => a >= b },
};
const asBit = (f: (a: number, b: number) => boolean) => (a: number, b: number) => (f(a, b) ? 1 : 0);

async function checkCompare(name: string, sa: number[], sb: number[], dtype: DType): Promise<void> {
  const { op, f } = COMPARE[name]!;
  const a = input(sa, dtype, genFor(dtype, steps, ints(-2, 2)));
  const b = input(sb, dtype, genFor(dtype, steps, ints(-2, 2)));
  await expectTensor(op(a.t, b.t), R.map(asBit(f), a.ref, b.ref), 'bool');
}

describe.each(Object.keys(COMPARE))('%s', (name) => {
  const { op, f } = COMPARE[name]!;
  const cases = BROADCAST_SHAPES.flatMap(([sa, sb]) =>
    [...FLOATS, 'int32', 'bool'].map((d) => [shapeName(sa), shapeName(sb), d as DType, sa, sb] as const),
  );
  test.each(cases)('%s with %s, %s → bool', (_a, _b, dtype, sa, sb) => checkCompare(name, sa, sb, dtype));

  // mixed operands compare in the promoted type
  test.each<[DType, DType | number]>([
    ['float32', 0.5],
    ['int32', 0.5],
    ['int32', 1],
    ['float16', 'float32'],
    ['int32', 'float32'],
    ['bfloat16', 0.1],
    ['bool', 1],
  ])('%s with %p', async (da, db) => {
    const a = input([3, 50], da, genFor(da, steps, ints(-2, 2)));
    if (typeof db === 'number') {
      // the number is compared in the promoted type: a float scalar rounded to a half tensor's dtype
      const s = da === 'float16' || da === 'bfloat16' ? quantize(db, da) : db;
      await expectTensor(op(a.t, db), R.map((x) => (f(x, s) ? 1 : 0), a.ref), 'bool');
    } else {
      const b = input([50], db, genFor(db, steps));
      await expectTensor(op(a.t, b.t), R.map(asBit(f), a.ref, b.ref), 'bool');
    }
  });
});

describe('where', () => {
  test.each<[string, number[], number[], number[] | number, DType, DType | null, DType]>([
    ['all [3]', [3], [3], [3], 'float32', 'float32', 'float32'],
    ['cond [3,1], a [1,4], b number', [3, 1], [1, 4], 2.5, 'float32', null, 'float32'],
    ['cond [50], a [50], b [1] (float16)', [50], [50], [1], 'float16', 'float16', 'float16'],
    ['cond [2,1,783], a [3,1], b [783] (bfloat16)', [2, 1, 783], [3, 1], [783], 'bfloat16', 'bfloat16', 'bfloat16'],
    ['int32 with float32 → float32', [4096, 1], [64], [4096, 64], 'int32', 'float32', 'float32'],
    ['int32 with int32', [3, 50], [3, 50], [50], 'int32', 'int32', 'int32'],
    ['int32 with an integer number', [3, 50], [3, 50], 7, 'int32', null, 'int32'],
    ['bool with bool', [3, 50], [3, 50], [3, 50], 'bool', 'bool', 'bool'],
    ['float16 with float32 → float32', [50], [50], [50], 'float16', 'float32', 'float32'],
  ])('%s', async (_n, sc, sa, sb, da, db, want) => {
    const cond = input(sc, 'bool');
    const a = input(sa, da, genFor(da, normal(3)));
    const b = typeof sb === 'number' ? sb : input(sb, db!, genFor(db!, normal(3)));
    const got = kiln.where(cond.t, a.t, typeof b === 'number' ? b : b.t);
    const ref = R.map((c, x, y) => (c ? x : y), cond.ref, a.ref, typeof b === 'number' ? b : b.ref);
    await expectTensor(got, ref, want, { exact: true });
  });

  test.each<[number, number, DType]>([
    [2.5, -1, 'float32'],
    [2, -1, 'int32'],
  ])('two numbers %p and %p → %s', async (a, b, want) => {
    const cond = input([3, 50], 'bool');
    await expectTensor(kiln.where(cond.t, a, b), R.map((c) => (c ? a : b), cond.ref), want, { exact: true });
  });

  test('a condition computed by a comparison', async () => {
    const x = input([3, 50], 'float32', normal());
    const got = kiln.where(x.t.gt(0), x.t, x.t.mul(0.5));
    await expectTensor(got, R.map((v) => (v > 0 ? v : v * 0.5), x.ref), 'float32');
  });
});

// ─── Unary ops ────────────────────────────────────────────────────────────────────────────────

type UnaryFn = (a: Tensor) => Tensor;
interface UnarySpec {
  op: UnaryFn;
  f: (x: number) => number;
  gen: Gen;
  /** float32 floor: 1 where the output can be near 0 while the float32 error scales with the input. */
  floor?: number;
  exact?: boolean;
  /** half types: the floor is for float32 only; the half result is held to one ulp, nothing added. */
  strictHalf?: boolean;
  /** What int32 input gives: the same dtype (exact), or float32 like PyTorch's int → float ops. */
  int?: { dtype: DType; gen: Gen };
}
const UNARY: Record<string, UnarySpec> = {
  neg: { op: (a) => a.neg(), f: (x) => -x, gen: normal(3), exact: true, int: { dtype: 'int32', gen: ints(-50, 50) } },
  abs: { op: (a) => a.abs(), f: Math.abs, gen: normal(3), exact: true, int: { dtype: 'int32', gen: ints(-50, 50) } },
  relu: { op: (a) => a.relu(), f: (x) => Math.max(x, 0), gen: normal(3), exact: true, int: { dtype: 'int32', gen: ints(-50, 50) } },
  exp: { op: (a) => a.exp(), f: Math.exp, gen: uniform(-10, 10), int: { dtype: 'float32', gen: ints(-10, 10) } },
  // log(x) ≈ 0 near x = 1: an absolute 1e-6 there (float32 log's error is relative to 1, not to the output)
  log: { op: (a) => a.log(), f: Math.log, gen: uniform(0.01, 20), floor: 1, int: { dtype: 'float32', gen: ints(1, 100) } },
  sqrt: { op: (a) => a.sqrt(), f: Math.sqrt, gen: uniform(0, 20), int: { dtype: 'float32', gen: ints(0, 100) } },
  rsqrt: { op: (a) => a.rsqrt(), f: (x) => 1 / Math.sqrt(x), gen: uniform(0.01, 20), int: { dtype: 'float32', gen: ints(1, 100) } },
  // sin/cos near their zeros: range reduction leaves an absolute error of about u·|x|
  sin: { op: (a) => a.sin(), f: Math.sin, gen: uniform(-10, 10), floor: 1, int: { dtype: 'float32', gen: ints(-10, 10) } },
  cos: { op: (a) => a.cos(), f: Math.cos, gen: uniform(-10, 10), floor: 1, int: { dtype: 'float32', gen: ints(-10, 10) } },
  // float32 tanh kernels (rational approximations) are accurate to a few ulps of 1, not of x near 0
  tanh: { op: (a) => a.tanh(), f: Math.tanh, gen: normal(3), floor: 1, int: { dtype: 'float32', gen: ints(-5, 5) } },
  sigmoid: { op: (a) => a.sigmoid(), f: R.sigmoid, gen: normal(4), int: { dtype: 'float32', gen: ints(-10, 10) } },
  // gelu(x) = x·Φ(x) = 0.5·x·erfc(-x/√2): for x < 0 the float32 error of erfc's argument grows
  // by 2t² (t = x/√2), a relative ~x²·u on small outputs, so float32 is checked absolutely
  // (floor 1); there is no cancellation, so half results are held to one ulp (see 'gelu tails').
  gelu: { op: (a) => a.gelu(), f: R.geluExact, gen: normal(3), floor: 1, strictHalf: true },
  'gelu none': { op: (a) => a.gelu('none'), f: R.geluExact, gen: normal(3), floor: 1, strictHalf: true },
  // x·sigmoid(2u): the error of 2u (a cubic) grows by |2u| in exp, likewise small and absolute
  'gelu tanh': { op: (a) => a.gelu('tanh'), f: R.geluTanh, gen: normal(3), floor: 1, strictHalf: true },
  silu: { op: (a) => a.silu(), f: R.silu, gen: normal(3) },
  reciprocal: { op: (a) => a.reciprocal(), f: (x) => 1 / x, gen: nonzero(0.1, 10), int: { dtype: 'float32', gen: nonzeroInts } },
};
const UNARY_SHAPES = [[1], [3], [50], [783], [3, 50]];

async function checkUnary(name: string, shape: number[], dtype: DType): Promise<void> {
  const spec = UNARY[name]!;
  const x = input(shape, dtype, spec.gen);
  const want = R.map(spec.f, x.ref);
  // A half result is the float32 computation rounded once. Where that float32 result may carry
  // an absolute error (the ops with a floor, e.g. sin near its zeros), that error is allowed on
  // top of the ulp, unless the op is strict for halves.
  const extra = spec.floor && HALF_FORMAT[dtype] && !spec.strictHalf ? (i: number) => 1e-6 * Math.max(Math.abs(want.data[i]!), spec.floor!) : undefined;
  await expectTensor(spec.op(x.t), want, dtype, { exact: spec.exact, floor: spec.floor, extra });
}

describe.each(Object.keys(UNARY))('%s', (name) => {
  const spec = UNARY[name]!;
  const cases = UNARY_SHAPES.flatMap((s) => FLOATS.map((d) => [shapeName(s), d, s] as const));
  test.each(cases)('%s %s', (_s, dtype, shape) => checkUnary(name, shape, dtype));
  if (spec.int) {
    const { dtype, gen } = spec.int;
    test(`int32 [3,50] → ${dtype}`, async () => {
      const x = input([3, 50], 'int32', gen);
      await expectTensor(spec.op(x.t), R.map(spec.f, x.ref), dtype, { exact: spec.exact, floor: spec.floor });
    });
  }
});

test('gelu: the exact and tanh forms are different functions', async () => {
  const x = input([783], 'float32', uniform(-4, 4));
  const [exact, approx] = await Promise.all([x.t.gelu('none').toArray(), x.t.gelu('tanh').toArray()]);
  let maxDiff = 0;
  for (let i = 0; i < exact.length; i++) maxDiff = Math.max(maxDiff, Math.abs(exact[i]! - approx[i]!));
  expect(maxDiff).toBeGreaterThan(1e-4);
});

// The GELU tails, x from -10 to -4: tiny outputs (down to ~1e-22) that the textbook forms get
// wrong — a float32 1 + erf(x/√2) cancels (about 2 half ulps off, or 0), as does 1 + tanh(u).
// kiln computes 0.5·x·erfc(-x/√2) and x·sigmoid(2u): half results within one ulp, float32
// within the error its rounded argument causes (computed per element).
describe('gelu tails below -4', () => {
  test.each(FLOATS)('exact gelu, %s', async (dtype) => {
    const x = input([783], dtype, uniform(-10, -4));
    const want = R.map(R.geluExact, x.ref);
    // erfc(t), t = -x/√2 rounded twice (the constant, the product): d ln erfc / dt ≈ -2t, so a
    // relative 4t²·u = 2x²·u, plus a few roundings.
    const extra = dtype === 'float32' ? (i: number) => U * (2 * x.ref.data[i]! ** 2 + 4) * Math.abs(want.data[i]!) : undefined;
    await expectTensor(x.t.gelu(), want, dtype, { extra });
    if (dtype !== 'float16') expect(Array.from(await x.t.gelu().toArray()).every((v) => v < 0)).toBe(true); // no flush to 0
  });

  test.each(FLOATS)('tanh gelu, %s', async (dtype) => {
    const x = input([783], dtype, uniform(-10, -4));
    const want = R.map(R.geluTanh, x.ref);
    // sigmoid(2u) ≈ e^(2u): 2u (a cubic, no cancellation for x < 0) carries ~7 roundings,
    // which exp turns into a relative 7|2u|·u; then a few roundings more.
    const twoU = (v: number) => 2 * Math.sqrt(2 / Math.PI) * Math.abs(v + 0.044715 * v * v * v);
    const extra = dtype === 'float32' ? (i: number) => U * (8 * twoU(x.ref.data[i]!) + 8) * Math.abs(want.data[i]!) : undefined;
    await expectTensor(x.t.gelu('tanh'), want, dtype, { extra });
    if (dtype !== 'float16') expect(Array.from(await x.t.gelu('tanh').toArray()).every((v) => v < 0)).toBe(true);
  });
});

// Special values, float32 (and int32 division): IEEE results as PyTorch gives them.
type SpecialFn = (a: Tensor, b: Tensor) => Tensor;
const SPECIAL: [string, SpecialFn, number[], number[] | null, number[], DType?, DType?][] = [
  ['exp', (a) => a.exp(), [-Infinity, Infinity, NaN, 0], null, [0, Infinity, NaN, 1]],
  ['log', (a) => a.log(), [0, -1, Infinity, 1], null, [-Infinity, NaN, Infinity, 0]],
  ['sqrt', (a) => a.sqrt(), [-1, 0, Infinity], null, [NaN, 0, Infinity]],
  ['rsqrt', (a) => a.rsqrt(), [0, Infinity], null, [Infinity, 0]],
  ['reciprocal', (a) => a.reciprocal(), [0, -0, Infinity], null, [Infinity, -Infinity, 0]],
  ['sigmoid', (a) => a.sigmoid(), [-Infinity, Infinity, -80, 80], null, [0, 1, R.sigmoid(-80), 1]],
  ['tanh', (a) => a.tanh(), [-Infinity, Infinity, 20], null, [-1, 1, 1]],
  ['relu', (a) => a.relu(), [NaN, -Infinity, Infinity], null, [NaN, 0, Infinity]],
  ['div by zero', (a, b) => a.div(b), [1, -1, 0], [0, 0, 0], [Infinity, -Infinity, NaN]],
  ['int32 div by zero', (a, b) => a.div(b), [1, -1, 0], [0, 0, 0], [Infinity, -Infinity, NaN], 'int32'],
  ['maximum propagates NaN', (a, b) => a.maximum(b), [NaN, 1], [1, NaN], [NaN, NaN]],
  ['minimum propagates NaN', (a, b) => a.minimum(b), [NaN, 1], [1, NaN], [NaN, NaN]],
  ['add of infinities', (a, b) => a.add(b), [Infinity, Infinity], [1, -Infinity], [Infinity, NaN]],
  ['pow: negative bases, zero, integer exponents', (a, b) => a.pow(b), [-2, -2, 0, 0, -0.5], [3, 0.5, 0, -1, 2], [-8, NaN, 1, Infinity, 0.25]],
  ['eq with NaN', (a, b) => a.eq(b), [NaN, 1, Infinity], [NaN, 1, Infinity], [0, 1, 1], 'float32', 'bool'],
  ['ne with NaN', (a, b) => a.ne(b), [NaN, 1, Infinity], [NaN, 1, Infinity], [1, 0, 0], 'float32', 'bool'],
  ['lt with NaN and infinities', (a, b) => a.lt(b), [NaN, 1, -Infinity], [1, NaN, Infinity], [0, 0, 1], 'float32', 'bool'],
  // int32 arithmetic wraps around like PyTorch's (two's complement)
  ['int32 add wraps', (a, b) => a.add(b), [2147483647, -2147483648], [1, -1], [-2147483648, 2147483647], 'int32', 'int32'],
  ['int32 mul wraps', (a, b) => a.mul(b), [65536, 46341], [65536, 46341], [0, -2147479015], 'int32', 'int32'],
];
describe('special values', () => {
  test.each(SPECIAL)('%s', async (_n, op, av, bv, want, dtype = 'float32', out = 'float32') => {
    const a = fromValues(av, [av.length], dtype);
    const got = op(a.t, bv ? fromValues(bv, [bv.length], dtype).t : a.t);
    await expectTensor(got, R.nd([want.length], want), out);
  });

  test.each<[string, DType, number[], (a: Tensor) => Tensor, number, DType]>([
    ['max propagates NaN', 'float32', [1, NaN, 3], (a) => a.max(), NaN, 'float32'],
    ['min propagates NaN', 'float32', [1, NaN, 3], (a) => a.min(), NaN, 'float32'],
    ['sum of float16 past 65504 is Infinity', 'float16', new Array<number>(100).fill(1000), (a) => a.sum(), Infinity, 'float16'],
    // PyTorch accumulates in float32 and divides before rounding: no overflow in the mean
    ['mean of float16 whose sum passes 65504', 'float16', new Array<number>(100).fill(1000), (a) => a.mean(), 1000, 'float16'],
    ['sum of an empty slice is 0', 'float32', [1, 2, 3, 4, 5], (a) => a.slice(0, 4, 2).sum(), 0, 'float32'],
  ])('reduction: %s', async (_n, dtype, values, op, want, out) => {
    await expectTensor(op(fromValues(values, [values.length], dtype).t), R.nd([], [want]), out);
  });

  test.each<[string, DType, number, (a: Tensor) => Tensor, number]>([
    ['65504 + 32 rounds past the largest float16', 'float16', 65504, (a) => a.add(32), Infinity],
    ['65504 + 15 rounds back to 65504', 'float16', 65504, (a) => a.add(15), 65504],
    ['300 · 300', 'float16', 300, (a) => a.mul(300), Infinity],
    ['3e38 · 2', 'bfloat16', 3e38, (a) => a.mul(2), Infinity],
    ['exp(11.1)', 'float16', 11.1, (a) => a.exp(), Infinity],
  ])('overflow after rounding: %s', async (_n, dtype, x, op, want) => {
    await expectTensor(op(fromValues([x], [1], dtype).t), R.nd([1], [want]), dtype);
  });
});

// ─── Conversions ──────────────────────────────────────────────────────────────────────────────

/** What `.to(dtype)` gives for a value: float targets round to nearest-even, int32 truncates. */
const convert = (v: number, to: DType) => (to === 'bool' ? (v !== 0 ? 1 : 0) : quantize(v, to));
const TO_CASES: [DType, DType, number[]][] = [
  ['float32', 'float16', [0.1, 1 / 3, 65519, 65520, 1e-8, -2049, 2051, 3e-5, NaN, -Infinity]],
  ['float32', 'bfloat16', [0.1, 1 / 3, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.39e38, 1e-40, NaN]],
  ['float16', 'float32', [0.1, 1 / 3, 65504, 2 ** -24, -Infinity]],
  ['bfloat16', 'float32', [0.1, 1 / 3, 3e38, -1e-38]],
  ['bfloat16', 'float16', [0.1, 70000, 1e-6, -1 / 3]],
  ['float16', 'bfloat16', [0.1, 1 / 3, 2049, 2 ** -24]],
  ['float32', 'int32', [2.7, -2.7, 0.5, -0.5, 1e6 + 0.5, 0]],
  ['float16', 'int32', [2.5, -3.75, 1000]],
  ['int32', 'float32', [16777217, -16777219, 5, 0, 2147483647]],
  ['int32', 'float16', [2049, 2051, 65519, 100000, -7]],
  ['int32', 'bfloat16', [257, 259, -1000001]],
  ['float32', 'bool', [0, -0, 0.5, NaN, -Infinity]],
  ['int32', 'bool', [0, 5, -1]],
  ['bool', 'float32', [0, 1]],
  ['bool', 'int32', [1, 0]],
  ['bool', 'float16', [1, 0]],
  ['float32', 'float32', [0.1, -3]],
];
describe('to(dtype)', () => {
  test.each(TO_CASES)('%s → %s of %p', async (from, to, values) => {
    const x = fromValues(values, [values.length], from);
    const want = R.map((v) => convert(v, to), x.ref);
    await expectTensor(x.t.to(to), want, to, { exact: true });
  });
});

// ─── Reductions ───────────────────────────────────────────────────────────────────────────────

type ReduceFn = (a: Tensor, dim: number | number[] | undefined, keepdim: boolean) => Tensor;
const REDUCE: Record<R.ReduceKind, ReduceFn> = {
  sum: (a, d, k) => (d === undefined && !k ? a.sum() : a.sum(d, k)),
  mean: (a, d, k) => (d === undefined && !k ? a.mean() : a.mean(d, k)),
  max: (a, d, k) => (d === undefined && !k ? a.max() : a.max(d, k)),
  min: (a, d, k) => (d === undefined && !k ? a.min() : a.min(d, k)),
};
const REDUCE_CASES: [number[], number | number[] | undefined, boolean][] = [
  [[1], undefined, false],
  [[3], 0, false],
  [[50], -1, true],
  [[783], undefined, true],
  [[3, 50], 1, false],
  [[3, 50], 0, true],
  [[2, 3, 5], [0, 2], false],
  [[2, 3, 5], [-1, -3], true],
  [[3, 1, 783], -2, false],
  [[3, 1, 783], -1, true],
  [[50, 783], 0, false],
];

/**
 * Summation bound: float32 (recursive or pairwise) summation of K terms errs by at most
 * (K-1)·u·Σ|x| (Higham, Accuracy and Stability, §4.2), but its rounding errors add like a
 * random walk, so in practice the error is a few √K·u·Σ|x|. 2√K·u·Σ|x| is ≥ 6 standard
 * deviations of that walk even for same-sign data, and still far tighter than the worst case.
 */
const sumBound = (count: number, absSum: Nd, scale = 1) => (i: number) =>
  2 * Math.sqrt(count) * U * absSum.data[i]! * scale;

async function checkReduce(kind: R.ReduceKind, shape: number[], dim: number | number[] | undefined, keepdim: boolean, dtype: DType): Promise<void> {
  const x = input(shape, dtype, genFor(dtype, normal()));
  const r = R.reduce(x.ref, kind, dim, keepdim);
  const exact = kind === 'max' || kind === 'min';
  const extra = exact ? undefined : sumBound(r.count, r.absSum, kind === 'mean' ? 1 / r.count : 1);
  await expectTensor(REDUCE[kind](x.t, dim, keepdim), r.out, dtype, { exact, extra });
}

describe.each(['sum', 'mean', 'max', 'min'] as const)('%s', (kind) => {
  const cases = REDUCE_CASES.flatMap(([s, d, k]) =>
    [...FLOATS, 'int32' as DType]
      .filter((dt) => !(kind === 'mean' && dt === 'int32')) // mean of int32 is an error (shape-errors.test.ts)
      .map((dt) => [shapeName(s), JSON.stringify(d) ?? 'all', k, dt, s, d] as const),
  );
  test.each(cases)('%s over %s keepdim=%p, %s', (_s, _d, keepdim, dtype, shape, dim) =>
    checkReduce(kind, shape, dim, keepdim, dtype),
  );
});

describe('sum of bool and int32 counts', () => {
  test.each<[number[], number | number[] | undefined, boolean]>([
    [[783], undefined, false],
    [[3, 50], -1, true],
    [[50, 783], 0, false],
  ])('bool %p over %p keepdim=%p → int32', async (shape, dim, keepdim) => {
    const x = input(shape, 'bool');
    await expectTensor(REDUCE.sum(x.t, dim, keepdim), R.reduce(x.ref, 'sum', dim, keepdim).out, 'int32');
  });

  test('int32 sum is exact past 2^24, where float32 accumulation would round', async () => {
    const x = fromValues(
      Array.from({ length: 100 }, (_, i) => 16777217 + i),
      [100],
      'int32',
    );
    await expectTensor(x.t.sum(), R.nd([], [1677726650]), 'int32');
  });

  test('int32 max/min over several dims, keepdim', async () => {
    const x = input([2, 3, 5], 'int32', ints(-1000, 1000));
    await expectTensor(x.t.max([0, -1], true), R.reduce(x.ref, 'max', [0, -1], true).out, 'int32');
    await expectTensor(x.t.min([1]), R.reduce(x.ref, 'min', [1]).out, 'int32');
  });
});

// ─── softmax, logSoftmax ──────────────────────────────────────────────────────────────────────

const SOFTMAX_CASES: [string, number[], number, Gen][] = [
  ['[1] dim 0', [1], 0, normal()],
  ['[3,50] dim -1', [3, 50], -1, normal(3)],
  ['[3,50] dim 0', [3, 50], 0, normal(3)],
  ['[783] dim 0', [783], 0, normal(3)],
  ['[2,3,5] dim 1', [2, 3, 5], 1, normal(3)],
  ['[2,3,5] dim -3', [2, 3, 5], -3, normal(3)],
  ['values ~1000 (exp overflows without the max shift)', [3, 50], -1, normal(5, 1000)],
  ['values ~-1000 (exp underflows without the max shift)', [3, 50], -1, normal(5, -1000)],
];

/** Per element: |x_i - max| of its lane and log Σexp(x - max) of its lane, from the reference. */
function laneStats(x: Nd, dim: number): { spread: Nd; lse: Nd; size: number } {
  const spread = R.alongDim(x, dim, (l) => {
    const m = Math.max(...l);
    return l.map((v) => (v === -Infinity ? 0 : m - v));
  });
  const lse = R.alongDim(x, dim, (l) => {
    const m = Math.max(...l);
    const s = Math.log(l.reduce((a, v) => a + Math.exp(v - m), 0));
    return l.map(() => s);
  });
  return { spread, lse, size: x.shape[R.normDim(dim, x.ndim)]! };
}

/** softmax/logSoftmax of `view(x)` along `dim` (the view defaults to x itself). */
async function checkSoftmax(
  kind: 'softmax' | 'logSoftmax',
  shape: number[],
  dim: number,
  dtype: DType,
  gen: Gen,
  view: (t: Tensor) => Tensor = (t) => t,
  refView: (a: Nd) => Nd = (a) => a,
): Promise<void> {
  const input_ = input(shape, dtype, gen);
  const x = { t: view(input_.t), ref: refView(input_.ref) };
  const { spread, lse, size } = laneStats(x.ref, dim);
  if (kind === 'softmax') {
    const want = R.softmax(x.ref, dim);
    // float32: exp(x - max) errs by u·|x - max| (the rounded difference) plus a rounding; the
    // sum adds the summation bound (all terms positive); the division one more rounding.
    const extra = (i: number) => U * (spread.data[i]! + 2 * Math.sqrt(size) + 4) * Math.abs(want.data[i]!);
    await expectTensor(x.t.softmax(dim), want, dtype, { extra });
  } else {
    const want = R.logSoftmax(x.ref, dim);
    // (x - max) - log Σ: an absolute error of u·(|x - max| + |lse|) plus the sum's relative error.
    const extra = (i: number) => U * (spread.data[i]! + Math.abs(lse.data[i]!) + 2 * Math.sqrt(size) + 4);
    await expectTensor(x.t.logSoftmax(dim), want, dtype, { extra });
  }
}

describe.each(['softmax', 'logSoftmax'] as const)('%s', (kind) => {
  const cases = SOFTMAX_CASES.flatMap(([n, s, d, g]) => FLOATS.map((dt) => [n, dt, s, d, g] as const));
  test.each(cases)('%s, %s', (_n, dtype, shape, dim, gen) => checkSoftmax(kind, shape, dim, dtype, gen));

  test.each(FLOATS)('over a transposed, sliced view, %s', (dtype) =>
    checkSoftmax(kind, [10, 4], 0, dtype, normal(3), (t) => t.transpose(0, 1).slice(1, 2, 9, 3), (a) => R.slice(R.transpose(a, 0, 1), 1, 2, 9, 3)),
  );

  test.each(FLOATS)('mixed ±1000 and -Infinity in one row: no NaN, %s', async (dtype) => {
    const x = fromValues([1000, -1000, 0, -Infinity, 999], [1, 5], dtype);
    const want = kind === 'softmax' ? R.softmax(x.ref, -1) : R.logSoftmax(x.ref, -1);
    const got = kind === 'softmax' ? x.t.softmax(-1) : x.t.logSoftmax(-1);
    await expectTensor(got, want, dtype, { extra: () => U * 4 });
  });
});

// ─── layerNorm, rmsNorm ───────────────────────────────────────────────────────────────────────

const NORM_SHAPES: [number[], Gen][] = [
  [[1, 1], normal()],
  [[3], normal()],
  [[3, 50], normal(2)],
  [[783], normal()],
  [[2, 3, 5], normal()],
  [[4, 783], normal(1, 10)], // an offset mean: the variance must not be computed as E[x²] - E[x]²
];
type Affine = 'none' | 'weight' | 'bias' | 'both';

async function checkLayerNorm(shape: number[], affine: Affine, dtype: DType, gen: Gen = normal()): Promise<void> {
  const n = shape[shape.length - 1]!;
  const x = input(shape, dtype, gen);
  const w = affine === 'weight' || affine === 'both' ? input([n], dtype, normal(1, 0.5)) : undefined;
  const b = affine === 'bias' || affine === 'both' ? input([n], dtype, normal()) : undefined;
  const eps = shape[0] === 3 ? 1e-3 : undefined; // one custom eps per size family
  const got =
    eps !== undefined
      ? kiln.layerNorm(x.t, w?.t, b?.t, eps)
      : b
        ? kiln.layerNorm(x.t, w?.t, b.t)
        : w
          ? kiln.layerNorm(x.t, w.t)
          : kiln.layerNorm(x.t);
  const want = R.layerNorm(x.ref, w?.ref, b?.ref, eps);
  // Error bound: the mean errs by ~2√N·u·mean|x|, which the normalization multiplies by 1/σ
  // (A = mean|x|/σ per row); the normalized value's own error is ~2√N·u relative; then the
  // affine step adds a rounding of |ŷ·w| and |b|.
  const A = R.alongDim(x.ref, -1, (l) => {
    const mean = l.reduce((s, v) => s + v, 0) / l.length;
    const variance = l.reduce((s, v) => s + (v - mean) ** 2, 0) / l.length;
    const meanAbs = l.reduce((s, v) => s + Math.abs(v), 0) / l.length;
    return l.map(() => meanAbs / Math.sqrt(variance + (eps ?? 1e-5)));
  });
  const yHat = R.layerNorm(x.ref, undefined, undefined, eps);
  const wb = R.broadcastTo(w?.ref ?? R.nd([1], [1]), shape);
  const bb = R.broadcastTo(b?.ref ?? R.nd([1], [0]), shape);
  const extra = (i: number) =>
    U * (4 * Math.sqrt(n) * (A.data[i]! + Math.abs(yHat.data[i]!)) * Math.abs(wb.data[i]!) + 2 * Math.abs(bb.data[i]!));
  await expectTensor(got, want, dtype, { extra });
}

async function checkRmsNorm(shape: number[], weighted: boolean, dtype: DType, gen: Gen = normal()): Promise<void> {
  const n = shape[shape.length - 1]!;
  const x = input(shape, dtype, gen);
  const w = weighted ? input([n], dtype, normal(1, 0.5)) : undefined;
  const eps = shape[0] === 3 ? 1e-3 : undefined;
  const got = eps !== undefined ? kiln.rmsNorm(x.t, w?.t, eps) : w ? kiln.rmsNorm(x.t, w.t) : kiln.rmsNorm(x.t);
  const want = R.rmsNorm(x.ref, w?.ref, eps);
  // relative: Σx² errs by ~2√N·u, the rsqrt halves it and adds a rounding; two more products.
  const extra = (i: number) => U * (2 * Math.sqrt(n) + 4) * Math.abs(want.data[i]!);
  // PyTorch rounds x·rsqrt(·) to a half input's dtype before multiplying by the weight:
  // two roundings, so up to 2 ulps with a weight.
  await expectTensor(got, want, dtype, { extra, ulps: weighted ? 2 : 1 });
}

describe('layerNorm', () => {
  const cases = NORM_SHAPES.flatMap(([s, g]) =>
    (['none', 'weight', 'bias', 'both'] as Affine[]).flatMap((aff) =>
      FLOATS.map((dt) => [shapeName(s), aff, dt, s, g] as const),
    ),
  );
  test.each(cases)('%s affine=%s, %s', (_s, affine, dtype, shape, gen) => checkLayerNorm(shape, affine, dtype, gen));
});

test.each(FLOATS)('layerNorm and rmsNorm with eps = 0 (0 is not "unset"), %s', async (dtype) => {
  const x = input([2, 50], dtype, normal(0.01)); // small variance: eps 1e-5 would show
  await expectTensor(kiln.layerNorm(x.t, undefined, undefined, 0), R.layerNorm(x.ref, undefined, undefined, 0), dtype, { extra: () => 1e-5 });
  await expectTensor(kiln.rmsNorm(x.t, undefined, 0), R.rmsNorm(x.ref, undefined, 0), dtype, { extra: () => 1e-5 });
});

describe('rmsNorm', () => {
  const cases = NORM_SHAPES.flatMap(([s, g]) =>
    [false, true].flatMap((weighted) => FLOATS.map((dt) => [shapeName(s), weighted, dt, s, g] as const)),
  );
  test.each(cases)('%s weight=%p, %s', (_s, weighted, dtype, shape, gen) => checkRmsNorm(shape, weighted, dtype, gen));
});

// ─── matmul ───────────────────────────────────────────────────────────────────────────────────

const MATMUL_CASES: [number[], number[]][] = [
  [[1, 1], [1, 1]],
  [[3, 50], [50, 1]],
  [[1, 783], [783, 3]],
  [[50, 3], [3, 50]],
  [[2, 3, 5, 4], [4, 7]], // batched × 2-D
  [[2, 1, 5, 4], [3, 4, 6]], // batch dims broadcast on both sides
  [[4], [4, 3]], // 1-D @ 2-D
  [[2, 5, 4], [4]], // batched @ 1-D
  [[4], [2, 4, 3]], // 1-D @ batched
  [[783], [783]], // dot product → 0-d
  [[96, 783], [783, 64]], // large
];
describe('matmul', () => {
  const cases = MATMUL_CASES.flatMap(([a, b]) => FLOATS.map((d) => [shapeName(a), shapeName(b), d, a, b] as const));
  test.each(cases)('%s @ %s, %s', async (_a, _b, dtype, sa, sb) => {
    const a = input(sa, dtype);
    const b = input(sb, dtype);
    const r = R.matmul(a.ref, b.ref);
    // float32 dot products: K rounded products and a K-term sum — the summation bound applies
    // to Σ|a·b| (see sumBound).
    await expectTensor(a.t.matmul(b.t), r.out, dtype, { extra: sumBound(r.k, r.absSum) });
  });
});

// ─── scaledDotProductAttention ────────────────────────────────────────────────────────────────

interface SdpaCase {
  name: string;
  q: number[];
  k: number[];
  v: number[];
  causal?: boolean;
  scale?: number;
}
const SDPA_CASES: SdpaCase[] = [
  { name: 'one token', q: [1, 1, 1, 1], k: [1, 1, 1, 1], v: [1, 1, 1, 1] },
  { name: 'non-causal [2,3,5,8]', q: [2, 3, 5, 8], k: [2, 3, 5, 8], v: [2, 3, 5, 8] },
  { name: 'causal [2,3,5,8]', q: [2, 3, 5, 8], k: [2, 3, 5, 8], v: [2, 3, 5, 8], causal: true },
  { name: 'scale 0.3, Sk ≠ Sq, Dv ≠ D', q: [2, 3, 5, 8], k: [2, 3, 7, 8], v: [2, 3, 7, 4], scale: 0.3 },
  { name: 'causal with scale 0.3', q: [2, 3, 5, 8], k: [2, 3, 5, 8], v: [2, 3, 5, 8], causal: true, scale: 0.3 },
  // PyTorch's causal mask is top-left aligned: query i sees keys 0..i even when Sq < Sk
  { name: 'causal 2-D, Sq 4 < Sk 6', q: [4, 16], k: [6, 16], v: [6, 16], causal: true },
  { name: 'causal 2-D, Sq 6 > Sk 4 (the first rows see fewer keys)', q: [6, 8], k: [4, 8], v: [4, 8], causal: true },
  { name: 'scale 0 averages v (0 is not "unset")', q: [2, 5, 8], k: [2, 5, 8], v: [2, 5, 8], scale: 0 },
  { name: 'non-causal 3-D [4,50,64]', q: [4, 50, 64], k: [4, 50, 64], v: [4, 50, 64] },
  { name: 'causal large [1,4,128,64], scale 0.05', q: [1, 4, 128, 64], k: [1, 4, 128, 64], v: [1, 4, 128, 64], causal: true, scale: 0.05 },
];
describe('scaledDotProductAttention', () => {
  const cases = SDPA_CASES.flatMap((c) => FLOATS.map((d) => [c.name, d, c] as const));
  test.each(cases)('%s, %s', async (_n, dtype, c) => {
    const q = input(c.q, dtype);
    const k = input(c.k, dtype);
    const v = input(c.v, dtype);
    const opts = { ...(c.causal !== undefined && { causal: c.causal }), ...(c.scale !== undefined && { scale: c.scale }) };
    const got = Object.keys(opts).length ? kiln.scaledDotProductAttention(q.t, k.t, v.t, opts) : kiln.scaledDotProductAttention(q.t, k.t, v.t);
    const { out, maxSpread, maxQk } = R.sdpa(q.ref, k.ref, v.ref, c);
    const D = c.q[c.q.length - 1]!;
    const S = c.k[c.k.length - 2]!;
    const maxV = Math.max(...Array.from(v.ref.data, Math.abs));
    // Computed bound. Scores err by δs ≤ 2√D·u·Σ|q·k|·scale (+ a rounding of the score); the
    // softmax turns δs into a relative error ≤ 2δs + u·(|s - max| + 2√S + 4) of each weight;
    // the weighted sum of v adds 2√S·u·max|v|. Half inputs: PyTorch's math attention rounds
    // q·scale, the scores and the probabilities to the input dtype, each a relative error of
    // u_h, which the same chain propagates.
    const uh = dtype === 'float16' ? 2 ** -11 : dtype === 'bfloat16' ? 2 ** -8 : 0;
    const ds = 2 * Math.sqrt(D) * U * maxQk + 2 * uh * maxQk;
    const bound = (2 * ds + U * (maxSpread + 4 * Math.sqrt(S) + 4) + 2 * uh) * maxV;
    await expectTensor(got, out, dtype, { extra: () => bound });
  });
});

// ─── Views ────────────────────────────────────────────────────────────────────────────────────

type View = [string, number[], (t: Tensor) => Tensor, (a: Nd) => Nd];
const VIEWS: View[] = [
  ['reshape [2,3,4] → [-1,4]', [2, 3, 4], (t) => t.reshape([-1, 4]), (a) => a.reshape([6, 4])],
  ['reshape [6] → [2,-1]', [6], (t) => t.reshape([2, -1]), (a) => a.reshape([2, 3])],
  ['reshape [783] → [27,29]', [783], (t) => t.reshape([27, 29]), (a) => a.reshape([27, 29])],
  ['reshape [3,50] → [150]', [3, 50], (t) => t.reshape([150]), (a) => a.reshape([150])],
  ['reshape [1] → [] (0-d)', [1], (t) => t.reshape([]), (a) => a.reshape([])],
  ['reshape [4096,64] → [64,-1,64]', [4096, 64], (t) => t.reshape([64, -1, 64]), (a) => a.reshape([64, 64, 64])],
  ['permute [2,3,4] → [2,0,1]', [2, 3, 4], (t) => t.permute([2, 0, 1]), (a) => R.permute(a, [2, 0, 1])],
  ['permute with negative dims [-1,0,-2]', [2, 3, 4], (t) => t.permute([-1, 0, -2]), (a) => R.permute(a, [2, 0, 1])],
  ['permute [4096,64] → [1,0]', [4096, 64], (t) => t.permute([1, 0]), (a) => R.permute(a, [1, 0])],
  ['transpose(0, 1)', [3, 50], (t) => t.transpose(0, 1), (a) => R.transpose(a, 0, 1)],
  ['transpose(-1, -3)', [2, 3, 5], (t) => t.transpose(-1, -3), (a) => R.transpose(a, 2, 0)],
  ['transpose(1, 1) is a no-op', [2, 3], (t) => t.transpose(1, 1), (a) => a],
  ['expand [3,1] → [3,4]', [3, 1], (t) => t.expand([3, 4]), (a) => R.expand(a, [3, 4])],
  ['expand [1] → [2,3,5] (new leading dims)', [1], (t) => t.expand([2, 3, 5]), (a) => R.expand(a, [2, 3, 5])],
  ['expand [3,1] → [2,-1,5]', [3, 1], (t) => t.expand([2, -1, 5]), (a) => R.expand(a, [2, -1, 5])],
  ['unsqueeze(0)', [3, 4], (t) => t.unsqueeze(0), (a) => R.unsqueeze(a, 0)],
  ['unsqueeze(2) (append)', [3, 4], (t) => t.unsqueeze(2), (a) => R.unsqueeze(a, 2)],
  ['unsqueeze(-1)', [3, 4], (t) => t.unsqueeze(-1), (a) => R.unsqueeze(a, -1)],
  ['unsqueeze(-2)', [3, 4], (t) => t.unsqueeze(-2), (a) => R.unsqueeze(a, -2)],
  ['squeeze()', [1, 3, 1, 4], (t) => t.squeeze(), (a) => R.squeeze(a)],
  ['squeeze(0)', [1, 3, 1, 4], (t) => t.squeeze(0), (a) => R.squeeze(a, 0)],
  ['squeeze(-2)', [1, 3, 1, 4], (t) => t.squeeze(-2), (a) => R.squeeze(a, -2)],
  ['squeeze(1) of a size-3 dim is a no-op', [1, 3, 1, 4], (t) => t.squeeze(1), (a) => R.squeeze(a, 1)],
  ['squeeze() of [1] → 0-d', [1], (t) => t.squeeze(), (a) => R.squeeze(a)],
  ['flatten()', [2, 3, 4], (t) => t.flatten(), (a) => R.flatten(a)],
  ['flatten(1)', [2, 3, 4], (t) => t.flatten(1), (a) => R.flatten(a, 1)],
  ['flatten(0, 1)', [2, 3, 4], (t) => t.flatten(0, 1), (a) => R.flatten(a, 0, 1)],
  ['flatten(-2, -1)', [2, 3, 4, 5], (t) => t.flatten(-2, -1), (a) => R.flatten(a, -2, -1)],
  ['flatten(1, 1) is a no-op', [2, 3, 4], (t) => t.flatten(1, 1), (a) => R.flatten(a, 1, 1)],
  ['slice(0, 2, 8, 3)', [10], (t) => t.slice(0, 2, 8, 3), (a) => R.slice(a, 0, 2, 8, 3)],
  ['slice(1, -100, -1, 7) of [5,783]', [5, 783], (t) => t.slice(1, -100, -1, 7), (a) => R.slice(a, 1, -100, -1, 7)],
  ['slice(0, -3, 100): end past the size clamps', [10, 2], (t) => t.slice(0, -3, 100), (a) => R.slice(a, 0, -3, 100)],
  ['slice(-1, 1, 50, 2)', [3, 50], (t) => t.slice(-1, 1, 50, 2), (a) => R.slice(a, -1, 1, 50, 2)],
  ['expand of a 0-d tensor → [2,3]', [], (t) => t.expand([2, 3]), (a) => R.expand(a, [2, 3])],
  ['expand then reshape(-1) (stride-0 dims)', [3, 1], (t) => t.expand([3, 4]).reshape([-1]), (a) => R.expand(a, [3, 4]).reshape([12])],
  ['expand then slice with step', [3, 1], (t) => t.expand([3, 4]).slice(1, 1, 4, 2), (a) => R.slice(R.expand(a, [3, 4]), 1, 1, 4, 2)],
  ['slice(0, 0, 10, 100): a step past the end', [10], (t) => t.slice(0, 0, 10, 100), (a) => R.slice(a, 0, 0, 10, 100)],
  ['slice(0, 4, 2): start past end gives an empty dim', [5, 3], (t) => t.slice(0, 4, 2), (a) => R.slice(a, 0, 4, 2)],
  ['flatten() of a 0-d tensor → [1]', [], (t) => t.flatten(), (a) => R.flatten(a)],
  ['unsqueeze(0) of a 0-d tensor → [1]', [], (t) => t.unsqueeze(0), (a) => R.unsqueeze(a, 0)],
  ['slice(0, 4000, 4096) of [4096,64]', [4096, 64], (t) => t.slice(0, 4000, 4096), (a) => R.slice(a, 0, 4000, 4096)],
  // views composed with each other and with compute: strides must be honoured everywhere
  ['permute then reshape(-1) (non-contiguous)', [3, 5, 2], (t) => t.permute([2, 0, 1]).reshape([-1]), (a) => R.permute(a, [2, 0, 1]).reshape([30])],
  ['transpose then slice then add', [4, 6], (t) => t.transpose(0, 1).slice(0, 1, 5, 2).add(1), (a) => R.map((v) => v + 1, R.slice(R.transpose(a, 0, 1), 0, 1, 5, 2))],
  ['slice with step then reshape', [6, 4], (t) => t.slice(0, 1, 6, 2).reshape([4, 3]), (a) => R.slice(a, 0, 1, 6, 2).reshape([4, 3])],
  ['expand then mul by a transposed tensor', [3, 1], (t) => t.expand([3, 3]).mul(t.expand([3, 3]).transpose(0, 1)), (a) => R.map((x, y) => x * y, R.expand(a, [3, 3]), R.transpose(R.expand(a, [3, 3]), 0, 1))],
  ['unsqueeze then broadcast add', [3, 4], (t) => t.unsqueeze(1).add(t), (a) => R.map((x, y) => x + y, R.unsqueeze(a, 1), a)],
  ['squeeze then flatten of a permuted tensor', [1, 3, 4], (t) => t.permute([2, 0, 1]).squeeze(1).flatten(), (a) => R.flatten(R.squeeze(R.permute(a, [2, 0, 1]), 1))],
  ['transposed matmul operand', [5, 3], (t) => t.transpose(0, 1).matmul(t), (a) => R.matmul(R.transpose(a, 0, 1), a).out],
  ['matmul of an expanded and a transposed operand', [2, 3], (t) => t.slice(0, 0, 1).expand([4, 3]).matmul(t.transpose(0, 1)), (a) => R.matmul(R.expand(R.slice(a, 0, 0, 1), [4, 3]), R.transpose(a, 0, 1)).out],
  ['sum over an expanded dim', [3, 1], (t) => t.expand([3, 4]).sum(1), (a) => R.reduce(R.expand(a, [3, 4]), 'sum', 1).out],
  ['sum over a permuted view', [2, 3, 4], (t) => t.permute([2, 1, 0]).sum(-1), (a) => R.reduce(R.permute(a, [2, 1, 0]), 'sum', -1).out],
  ['max over a sliced view', [4, 10], (t) => t.slice(1, 2, 9, 3).max(-1), (a) => R.reduce(R.slice(a, 1, 2, 9, 3), 'max', -1).out],
];
describe('views', () => {
  test.each(VIEWS)('%s', async (_n, shape, view, ref) => {
    // small integers keep composed views with compute exact in float32
    const x = input(shape, 'float32', ints(-8, 8));
    await expectTensor(view(x.t), ref(x.ref), 'float32', { exact: true });
  });

  // views move data without touching it: every dtype comes through bit-exact (small sizes)
  const pure = VIEWS.filter(([n, s]) => !/add|mul|matmul|sum|max/.test(n) && R.numel(s) < 10000);
  const cases = pure.flatMap(([n, s, v, r]) => (['float16', 'bfloat16', 'int32', 'bool'] as DType[]).map((d) => [n, d, s, v, r] as const));
  test.each(cases)('%s, %s', async (_n, dtype, shape, view, ref) => {
    const x = input(shape, dtype, genFor(dtype, normal(3)));
    await expectTensor(view(x.t), ref(x.ref), dtype, { exact: true });
  });
});

// ─── cat, embedding ───────────────────────────────────────────────────────────────────────────

const CAT_CASES: [number[][], number][] = [
  [[[2, 3], [4, 3]], 0],
  [[[2, 3], [2, 1], [2, 5]], 1],
  [[[2, 3], [2, 1], [2, 5]], -1],
  [[[2, 3, 4], [2, 1, 4]], -2],
  [[[783], [1], [50]], 0],
  [[[3, 50]], 0], // a single tensor
];

async function checkCat(shapes: number[][], dim: number, dtype: DType): Promise<void> {
  const xs = shapes.map((s) => input(s, dtype, genFor(dtype, normal(3))));
  const got = kiln.cat(
    xs.map((x) => x.t),
    dim,
  );
  const want = R.cat(
    xs.map((x) => x.ref),
    dim,
  );
  await expectTensor(got, want, dtype, { exact: true });
}
describe('cat', () => {
  const cases = CAT_CASES.flatMap(([shapes, dim]) =>
    [...FLOATS, 'int32', 'bool'].map((d) => [shapes.map(shapeName).join(' '), dim, d as DType, shapes] as const),
  );
  test.each(cases)('%s along %p, %s', (_s, dim, dtype, shapes) => checkCat(shapes, dim, dtype));

  // torch.cat promotes like the binary ops
  test.each<[DType, DType, DType]>([
    ['float16', 'float32', 'float32'],
    ['int32', 'bool', 'int32'],
    ['bfloat16', 'int32', 'bfloat16'],
  ])('%s with %s → %s', async (da, db, want) => {
    const a = input([2, 3], da, genFor(da, normal(), ints(-9, 9)));
    const b = input([1, 3], db, genFor(db, normal(), ints(-9, 9)));
    await expectTensor(kiln.cat([a.t, b.t], 0), R.cat([a.ref, b.ref], 0), want, { exact: true });
  });

  test('cat of non-contiguous views', async () => {
    const a = input([3, 4], 'float32');
    const b = input([4, 2], 'float32');
    const got = kiln.cat([a.t.transpose(0, 1), b.t.slice(1, 1, 2)], 1);
    const want = R.cat([R.transpose(a.ref, 0, 1), R.slice(b.ref, 1, 1, 2)], 1);
    await expectTensor(got, want, 'float32', { exact: true });
  });
});

const EMBEDDING_CASES: [number[], number, number][] = [
  [[1], 1, 1],
  [[5], 10, 3],
  [[2, 3], 50, 783],
  [[4, 128], 1000, 64],
  [[], 7, 4], // a 0-d id → one row
];
describe('embedding', () => {
  const cases = EMBEDDING_CASES.flatMap(([ids, vocab, dim]) =>
    FLOATS.map((d) => [shapeName(ids), vocab, dim, d, ids] as const),
  );
  test.each(cases)('ids %s into a [%p, %p] table, %s', async (_s, vocab, dim, dtype, idShape) => {
    const ids = input(idShape, 'int32', ints(0, vocab - 1));
    const table = input([vocab, dim], dtype, normal());
    await expectTensor(kiln.embedding(ids.t, table.t), R.embedding(ids.ref, table.ref), dtype, { exact: true });
  });

  test('repeated ids and the last row', async () => {
    const ids = fromValues([9, 0, 9, 9, 3], [5], 'int32');
    const table = input([10, 4], 'float32');
    await expectTensor(kiln.embedding(ids.t, table.t), R.embedding(ids.ref, table.ref), 'float32', { exact: true });
  });
});

// ─── Large tensors ────────────────────────────────────────────────────────────────────────────

// One large size per op family, each dtype met at least once. (matmul 96×783×64 and attention
// [1,4,128,64] are in their own tables; the large views are in 'views'.) Kept to a selection
// because the eager interpreter takes about a second per 262,144-element op under Jest.
const L = [4096, 64];
const LARGE_CASES: [string, () => Promise<void>][] = [
  ['add [4096,64] + [64], float32', () => checkBinary('add', L, [64], 'float32')],
  ['mul [4096,64] · [4096,1], float16', () => checkBinary('mul', L, [4096, 1], 'float16')],
  ['div [4096,64] / [64], bfloat16', () => checkBinary('div', L, [64], 'bfloat16')],
  ['pow [4096,64] ^ [4096,64], float32', () => checkBinary('pow', L, L, 'float32')],
  ['maximum [4096,64] with [1,64], int32', () => checkBinary('maximum', L, [1, 64], 'int32')],
  ['lt [4096,64] with [64], float32 → bool', () => checkCompare('lt', L, [64], 'float32')],
  ['eq [4096,64] with [4096,1], bfloat16 → bool', () => checkCompare('eq', L, [4096, 1], 'bfloat16')],
  ['exp, float32', () => checkUnary('exp', L, 'float32')],
  ['tanh, float32', () => checkUnary('tanh', L, 'float32')],
  ['gelu (exact), float16', () => checkUnary('gelu', L, 'float16')],
  ['gelu tanh, float32', () => checkUnary('gelu tanh', L, 'float32')],
  ['silu, bfloat16', () => checkUnary('silu', L, 'bfloat16')],
  ['sum over dim 0 (K = 4096), float32', () => checkReduce('sum', L, 0, false, 'float32')],
  ['sum over all (K = 262144), float16', () => checkReduce('sum', L, undefined, false, 'float16')],
  ['mean over -1 keepdim, bfloat16', () => checkReduce('mean', L, -1, true, 'bfloat16')],
  ['max over 0, float32', () => checkReduce('max', L, 0, false, 'float32')],
  ['sum over all, int32', () => checkReduce('sum', L, undefined, false, 'int32')],
  ['softmax over -1, float32', () => checkSoftmax('softmax', L, -1, 'float32', normal(3))],
  ['softmax [8,4096] over 1 (a long row), float16', () => checkSoftmax('softmax', [8, 4096], 1, 'float16', normal(3))],
  ['logSoftmax [8,4096] over -1, float32', () => checkSoftmax('logSoftmax', [8, 4096], -1, 'float32', normal(3))],
  ['logSoftmax over 0, bfloat16', () => checkSoftmax('logSoftmax', L, 0, 'bfloat16', normal(3))],
  ['layerNorm with weight and bias, float32', () => checkLayerNorm(L, 'both', 'float32')],
  ['layerNorm with weight, bfloat16', () => checkLayerNorm(L, 'weight', 'bfloat16')],
  ['rmsNorm, float32', () => checkRmsNorm(L, false, 'float32')],
  ['rmsNorm with weight, float16', () => checkRmsNorm(L, true, 'float16')],
  ['cat [2048,64] and [2048,64] along 0, float32', () => checkCat([[2048, 64], [2048, 64]], 0, 'float32')],
  ['cat [4096,32] and [4096,32] along 1, bfloat16', () => checkCat([[4096, 32], [4096, 32]], 1, 'bfloat16')],
];
describe('large tensors', () => {
  test.each(LARGE_CASES)('%s', (_n, run) => run());

  test.each(['float16', 'bfloat16'] as const)('float32 [4096,64] → %s', async (to) => {
    const x = input(L, 'float32', normal(100));
    await expectTensor(x.t.to(to), R.map((v) => convert(v, to), x.ref), to, { exact: true });
  });
});

// ─── Ops on views ─────────────────────────────────────────────────────────────────────────────

// The composites read strided inputs as models do: heads split by reshape + permute, tables
// and weights transposed, conditions expanded.
describe('ops on views', () => {
  test.each(FLOATS)('attention on heads split by reshape + permute, %s', async (dtype) => {
    const [B, S, H, D] = [2, 5, 3, 8];
    const split = (x: Input) => ({
      t: x.t.reshape([B, S, H, D]).permute([0, 2, 1, 3]),
      ref: R.permute(x.ref.reshape([B, S, H, D]), [0, 2, 1, 3]),
    });
    const [q, k, v] = [0, 1, 2].map(() => split(input([B, S, H * D], dtype)));
    const { out, maxSpread, maxQk } = R.sdpa(q!.ref, k!.ref, v!.ref, { causal: true });
    const maxV = Math.max(...Array.from(v!.ref.data, Math.abs));
    const uh = dtype === 'float16' ? 2 ** -11 : dtype === 'bfloat16' ? 2 ** -8 : 0;
    const ds = 2 * Math.sqrt(D) * U * maxQk + 2 * uh * maxQk; // as in the attention table
    const bound = (2 * ds + U * (maxSpread + 4 * Math.sqrt(S) + 4) + 2 * uh) * maxV;
    const got = kiln.scaledDotProductAttention(q!.t, k!.t, v!.t, { causal: true });
    await expectTensor(got, out, dtype, { extra: () => bound });
  });

  test.each(FLOATS)('layerNorm and rmsNorm of a transposed input, %s', async (dtype) => {
    const x = input([50, 3], dtype);
    const xt = R.transpose(x.ref, 0, 1);
    const extra = () => U * 4 * Math.sqrt(50) * 8; // the layerNorm bound with A, |ŷ| ≤ 4
    await expectTensor(kiln.layerNorm(x.t.transpose(0, 1)), R.layerNorm(xt), dtype, { extra });
    await expectTensor(kiln.rmsNorm(x.t.transpose(0, 1)), R.rmsNorm(xt), dtype, { extra });
  });

  test('embedding from a transposed table', async () => {
    const table = input([4, 10], 'float32');
    const ids = fromValues([0, 9, 3], [3], 'int32');
    const want = R.embedding(ids.ref, R.transpose(table.ref, 0, 1));
    await expectTensor(kiln.embedding(ids.t, table.t.transpose(0, 1)), want, 'float32', { exact: true });
  });

  test('where with a transposed condition and an expanded operand', async () => {
    const cond = input([4, 3], 'bool');
    const a = input([3, 4], 'float32');
    const b = input([1, 4], 'float32');
    const got = kiln.where(cond.t.transpose(0, 1), a.t, b.t.expand([3, 4]));
    const want = R.map((c, x, y) => (c ? x : y), R.transpose(cond.ref, 0, 1), a.ref, b.ref);
    await expectTensor(got, want, 'float32', { exact: true });
  });

  test.each(FLOATS)('to(int32) and to(float32) of a strided view, from %s', async (dtype) => {
    const x = input([6, 4], dtype, normal(50));
    const view = (a: Nd) => R.slice(R.transpose(a, 0, 1), 1, 1, 6, 2);
    const vt = x.t.transpose(0, 1).slice(1, 1, 6, 2);
    await expectTensor(vt.to('int32'), R.map(Math.trunc, view(x.ref)), 'int32');
    await expectTensor(vt.to('float32'), view(x.ref), 'float32', { exact: true });
  });

  test.each(FLOATS)('binary ops and reductions on permuted, sliced operands, %s', async (dtype) => {
    const a = input([5, 6, 7], dtype);
    const b = input([7, 5], dtype);
    const av = (x: Nd) => R.slice(R.permute(x, [2, 0, 1]), 2, 0, 6, 2); // [7,5,3]
    const got = a.t.permute([2, 0, 1]).slice(2, 0, 6, 2).mul(b.t.unsqueeze(-1));
    const want = R.map((x, y) => x * y, av(a.ref), R.unsqueeze(b.ref, -1));
    await expectTensor(got, want, dtype);
    const r = R.reduce(want, 'sum', [0, 2]);
    // sum of the rounded products: for half dtypes the product is rounded first (two ops)
    const prod = HALF_FORMAT[dtype] ? R.map((v) => R.roundTo(v, HALF_FORMAT[dtype]!), want) : want;
    const rp = R.reduce(prod, 'sum', [0, 2]);
    await expectTensor(got.sum([0, 2]), rp.out, dtype, { extra: sumBound(r.count, r.absSum) });
  });
});
