/**
 * Shape, dtype and argument errors of the eager Tensor API: each must be a typed `KilnError`
 * (ShapeError for incompatible shapes; ShapeError or ArgumentError for bad dims and dtypes)
 * with a stable string `.code`, and its message must name the op, the shapes (or the dtype)
 * and the user's call site: this file and the line of the failing call.
 *
 * Every failing call sits on a line ending in `// site:<name>`; the expected line number is
 * found by reading this file, so it does not depend on source maps in the test itself.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as kiln from '../lib';
import { ArgumentError, KilnError, ShapeError } from '../lib/util/errors';
import { api } from '../lib/tensor/tensor';
import { trace } from '../lib/tensor/trace';

type DType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'bool';
const FILE = path.basename(__filename);
const SOURCE = fs.readFileSync(__filename, 'utf8').split('\n');

/** The 1-based line of this file that ends with the marker for `name`. */
function siteLine(name: string): number {
  const re = new RegExp(`//\\s*site:${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`);
  const lines = SOURCE.flatMap((l, i) => (re.test(l) ? [i + 1] : []));
  if (lines.length !== 1) throw new Error(`test bug: ${lines.length} lines carry site:${name}`);
  return lines[0]!;
}

/** A tensor of ones (zeros for bool) of the given shape and dtype. */
function t(shape: number[], dtype: DType = 'float32') {
  const n = shape.reduce((a, b) => a * b, 1);
  return kiln.tensor(new Array<number>(n).fill(dtype === 'bool' ? 0 : 1), shape, dtype);
}

/** A regex for a shape printed as [2, 3], [2,3], (2, 3) or [2x3]. */
function shapePattern(shape: number[]): RegExp {
  const body = shape.map(String).join('\\s*[,x×]\\s*');
  return new RegExp(`[\\[(]\\s*${body}\\s*,?\\s*[\\])]`);
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

type Kind = 'shape' | 'shape-or-argument';
interface ErrorCase {
  /** Also the marker on the line of the failing call. */
  name: string;
  call: () => unknown;
  kind: Kind;
  /** The op the message must name. */
  op: string;
  /** Shapes the message must name. */
  shapes?: number[][];
  /** A dtype the message must name. */
  dtype?: string;
}

// prettier-ignore
const CASES: ErrorCase[] = [
  // incompatible broadcasts
  { name: 'add-broadcast', kind: 'shape', op: 'add', shapes: [[2, 3], [4, 3]],
    call: () => t([2, 3]).add(t([4, 3])) }, // site:add-broadcast
  { name: 'mul-broadcast-3d', kind: 'shape', op: 'mul', shapes: [[2, 3, 4], [2, 1, 5]],
    call: () => t([2, 3, 4]).mul(t([2, 1, 5])) }, // site:mul-broadcast-3d
  { name: 'lt-broadcast', kind: 'shape', op: 'lt', shapes: [[5], [4]],
    call: () => t([5]).lt(t([4])) }, // site:lt-broadcast
  { name: 'where-broadcast', kind: 'shape', op: 'where', shapes: [[3], [4]],
    call: () => kiln.where(t([3], 'bool'), t([4]), t([3])) }, // site:where-broadcast
  // matmul
  { name: 'matmul-inner', kind: 'shape', op: 'matmul', shapes: [[2, 3], [4, 5]],
    call: () => t([2, 3]).matmul(t([4, 5])) }, // site:matmul-inner
  { name: 'matmul-batch', kind: 'shape', op: 'matmul', shapes: [[2, 3, 4], [3, 4, 5]],
    call: () => t([2, 3, 4]).matmul(t([3, 4, 5])) }, // site:matmul-batch
  { name: 'matmul-vectors', kind: 'shape', op: 'matmul', shapes: [[3], [4]],
    call: () => t([3]).matmul(t([4])) }, // site:matmul-vectors
  // reshape
  { name: 'reshape-size', kind: 'shape', op: 'reshape', shapes: [[2, 3], [4, 2]],
    call: () => t([2, 3]).reshape([4, 2]) }, // site:reshape-size
  { name: 'reshape-two-inferred', kind: 'shape-or-argument', op: 'reshape', shapes: [[2, 3]],
    call: () => t([2, 3]).reshape([-1, -1]) }, // site:reshape-two-inferred
  { name: 'reshape-indivisible', kind: 'shape', op: 'reshape', shapes: [[2, 3]],
    call: () => t([2, 3]).reshape([4, -1]) }, // site:reshape-indivisible
  // dims out of range
  { name: 'sum-dim', kind: 'shape-or-argument', op: 'sum', shapes: [[2, 3]],
    call: () => t([2, 3]).sum(2) }, // site:sum-dim
  { name: 'max-dims', kind: 'shape-or-argument', op: 'max', shapes: [[2, 3]],
    call: () => t([2, 3]).max([0, -3]) }, // site:max-dims
  { name: 'sum-repeated-dims', kind: 'shape-or-argument', op: 'sum', shapes: [[2, 2]],
    call: () => t([2, 2]).sum([0, -2]) }, // site:sum-repeated-dims
  { name: 'softmax-dim', kind: 'shape-or-argument', op: 'softmax', shapes: [[2, 3]],
    call: () => t([2, 3]).softmax(-3) }, // site:softmax-dim
  { name: 'permute-repeated', kind: 'shape-or-argument', op: 'permute', shapes: [[2, 3]],
    call: () => t([2, 3]).permute([0, 0]) }, // site:permute-repeated
  { name: 'permute-length', kind: 'shape-or-argument', op: 'permute', shapes: [[2, 3, 4]],
    call: () => t([2, 3, 4]).permute([1, 0]) }, // site:permute-length
  { name: 'transpose-dim', kind: 'shape-or-argument', op: 'transpose', shapes: [[2, 3]],
    call: () => t([2, 3]).transpose(0, 2) }, // site:transpose-dim
  { name: 'unsqueeze-dim', kind: 'shape-or-argument', op: 'unsqueeze', shapes: [[3]],
    call: () => t([3]).unsqueeze(2) }, // site:unsqueeze-dim
  { name: 'squeeze-dim', kind: 'shape-or-argument', op: 'squeeze', shapes: [[1, 3]],
    call: () => t([1, 3]).squeeze(2) }, // site:squeeze-dim
  { name: 'flatten-order', kind: 'shape-or-argument', op: 'flatten', shapes: [[2, 3, 4]],
    call: () => t([2, 3, 4]).flatten(2, 1) }, // site:flatten-order
  { name: 'flatten-dim', kind: 'shape-or-argument', op: 'flatten', shapes: [[2, 3, 4]],
    call: () => t([2, 3, 4]).flatten(0, 3) }, // site:flatten-dim
  { name: 'slice-dim', kind: 'shape-or-argument', op: 'slice', shapes: [[2, 3]],
    call: () => t([2, 3]).slice(2, 0, 1) }, // site:slice-dim
  { name: 'slice-step', kind: 'shape-or-argument', op: 'slice', shapes: [[5]],
    call: () => t([5]).slice(0, 0, 5, 0) }, // site:slice-step
  { name: 'slice-negative-step', kind: 'shape-or-argument', op: 'slice', shapes: [[5]],
    call: () => t([5]).slice(0, 4, 0, -1) }, // site:slice-negative-step
  // expand
  { name: 'expand-non-singleton', kind: 'shape', op: 'expand', shapes: [[3, 2], [4, 2]],
    call: () => t([3, 2]).expand([4, 2]) }, // site:expand-non-singleton
  { name: 'expand-fewer-dims', kind: 'shape', op: 'expand', shapes: [[2, 3], [3]],
    call: () => t([2, 3]).expand([3]) }, // site:expand-fewer-dims
  { name: 'expand-inferred-new-dim', kind: 'shape-or-argument', op: 'expand', shapes: [[2]],
    call: () => t([2]).expand([-1, 2]) }, // site:expand-inferred-new-dim
  // cat
  { name: 'cat-shapes', kind: 'shape', op: 'cat', shapes: [[2, 3], [2, 4]],
    call: () => kiln.cat([t([2, 3]), t([2, 4])], 0) }, // site:cat-shapes
  { name: 'cat-rank', kind: 'shape', op: 'cat', shapes: [[2, 3], [6]],
    call: () => kiln.cat([t([2, 3]), t([6])], 0) }, // site:cat-rank
  { name: 'cat-nothing', kind: 'shape-or-argument', op: 'cat',
    call: () => kiln.cat([], 0) }, // site:cat-nothing
  { name: 'cat-dim', kind: 'shape-or-argument', op: 'cat', shapes: [[2, 3]],
    call: () => kiln.cat([t([2, 3]), t([2, 3])], 2) }, // site:cat-dim
  // norms and attention
  { name: 'layerNorm-weight', kind: 'shape', op: 'layerNorm', shapes: [[2, 3], [4]],
    call: () => kiln.layerNorm(t([2, 3]), t([4])) }, // site:layerNorm-weight
  { name: 'layerNorm-bias', kind: 'shape', op: 'layerNorm', shapes: [[2, 3], [2]],
    call: () => kiln.layerNorm(t([2, 3]), t([3]), t([2])) }, // site:layerNorm-bias
  { name: 'rmsNorm-weight', kind: 'shape', op: 'rmsNorm', shapes: [[2, 3], [2]],
    call: () => kiln.rmsNorm(t([2, 3]), t([2])) }, // site:rmsNorm-weight
  { name: 'sdpa-head-dim', kind: 'shape', op: 'scaledDotProductAttention', shapes: [[2, 5, 8], [2, 5, 4]],
    call: () => kiln.scaledDotProductAttention(t([2, 5, 8]), t([2, 5, 4]), t([2, 5, 8])) }, // site:sdpa-head-dim
  { name: 'sdpa-kv-length', kind: 'shape', op: 'scaledDotProductAttention', shapes: [[6, 8], [7, 8]],
    call: () => kiln.scaledDotProductAttention(t([5, 8]), t([6, 8]), t([7, 8])) }, // site:sdpa-kv-length
  { name: 'embedding-table-rank', kind: 'shape', op: 'embedding', shapes: [[10]],
    call: () => kiln.embedding(t([3], 'int32'), t([10])) }, // site:embedding-table-rank
  // wrong dtypes
  { name: 'embedding-float-ids', kind: 'shape-or-argument', op: 'embedding', dtype: 'float32',
    call: () => kiln.embedding(t([3]), t([10, 4])) }, // site:embedding-float-ids
  { name: 'mean-int32', kind: 'shape-or-argument', op: 'mean', dtype: 'int32',
    call: () => t([2, 3], 'int32').mean() }, // site:mean-int32
  { name: 'mean-int32-dim', kind: 'shape-or-argument', op: 'mean', dtype: 'int32',
    call: () => t([2, 3], 'int32').mean(1, true) }, // site:mean-int32-dim
  { name: 'layerNorm-int32', kind: 'shape-or-argument', op: 'layerNorm', dtype: 'int32',
    call: () => kiln.layerNorm(t([2, 3], 'int32')) }, // site:layerNorm-int32
  // PyTorch: "Integers to negative integer powers are not allowed."
  { name: 'pow-int32-negative-exponent', kind: 'shape-or-argument', op: 'pow', dtype: 'int32',
    call: () => t([2, 3], 'int32').pow(-1) }, // site:pow-int32-negative-exponent
  // PyTorch: "Subtraction, the `-` operator, with two bool tensors is not supported."
  { name: 'sub-bool', kind: 'shape-or-argument', op: 'sub', dtype: 'bool',
    call: () => t([2, 3], 'bool').sub(t([2, 3], 'bool')) }, // site:sub-bool
  // PyTorch: "value cannot be converted to type int32_t without overflow"
  { name: 'lt-int32-scalar-overflow', kind: 'shape-or-argument', op: 'lt', dtype: 'int32',
    call: () => t([2], 'int32').lt(2147483648) }, // site:lt-int32-scalar-overflow
  { name: 'where-float-condition', kind: 'shape-or-argument', op: 'where', dtype: 'float32',
    call: () => kiln.where(t([3]), t([3]), t([3])) }, // site:where-float-condition
];

const named = (c: ErrorCase) => ['the op', ...(c.shapes ? ['the shapes'] : []), ...(c.dtype ? ['the dtype'] : []), 'the call site'].join(', ');

describe.each(CASES)('$name', (c) => {
  test(`${c.op} throws a typed error naming ${named(c)}`, () => {
    const err = thrown(c.call);
    expect(err).toBeInstanceOf(KilnError);
    const e = err as KilnError;
    if (c.kind === 'shape') expect(e).toBeInstanceOf(ShapeError);
    else expect(e instanceof ShapeError || e instanceof ArgumentError).toBe(true);
    if (e.code === 'KILN_BAD_ARGUMENT' || e.code === 'KILN_SCALAR_OVERFLOW') expect(e).toBeInstanceOf(ArgumentError); // one code, one class
    expect(e.name).toBe(e.constructor.name);
    expect(e.code).toMatch(/^[A-Z][A-Z0-9_]+$/);
    expect(e.message).toContain(c.op);
    for (const s of c.shapes ?? []) expect(e.message).toMatch(shapePattern(s));
    if (c.dtype) expect(e.message).toContain(c.dtype);
    expect(e.message).toMatch(new RegExp(`${FILE.replace(/\./g, '\\.')}:${siteLine(c.name)}(\\D|$)`));
    expectLabelledOnce(e, c.op, siteLine(c.name));
  });
});

/** The op name leads the message once (not even as the primitive's upper-case name), the site ends it once. */
function expectLabelledOnce(e: KilnError, op: string, line: number): void {
  expect(e.message.startsWith(`${op}: `)).toBe(true);
  expect(e.message.slice(op.length + 2).toLowerCase().startsWith(`${op.toLowerCase()}: `)).toBe(false);
  expect(e.message.match(/\(at /g)).toHaveLength(1);
  expect(e.message).toMatch(new RegExp(`\\(at [^()]*${FILE.replace(/\./g, '\\.')}:${line}:\\d+\\)$`));
  expect(e.op).toBe(op);
  expect(e.site).toMatch(new RegExp(`${FILE.replace(/\./g, '\\.')}:${line}:\\d+$`));
  expect(e.stack).toContain(e.message);
}

describe('labels are added once', () => {
  test('an op inside a traced function: the op and the site once', () => {
    const err = thrown(() => trace((x: kiln.Tensor) => x.add(t([4, 3])), [{ shape: [2, 3] }], { dynamic: { 0: [0] } })); // site:traced-add
    expect(err).toBeInstanceOf(ShapeError);
    expectLabelledOnce(err as KilnError, 'add', siteLine('traced-add'));
  });

  test('a primitive error named like the public op (EXPAND under expand) is not named twice', () => {
    const err = thrown(() => t([3, 2]).expand([4, 2])); // site:expand-primitive
    expectLabelledOnce(err as KilnError, 'expand', siteLine('expand-primitive'));
    expect((err as KilnError).message).toMatch(/^expand: cannot expand \[3,2\] to \[4,2\] \(at /);
  });

  test('nested public ops (kiln.softmax → Tensor.softmax) and a rethrow through another label', () => {
    const err = thrown(() => api('sum', () => kiln.softmax(t([2, 3]), 5))); // site:nested
    expectLabelledOnce(err as KilnError, 'softmax', siteLine('nested'));
  });

  test('a message that already carries the op name and a site (from another copy of kiln) is relabelled, not doubled', () => {
    const err = thrown(() => api('add', () => { throw new ShapeError('KILN_SHAPE_MISMATCH', 'add: add: boom (at /elsewhere/x.js:1:2)'); })); // site:foreign
    expectLabelledOnce(err as KilnError, 'add', siteLine('foreign'));
    expect((err as KilnError).message).toMatch(/^add: boom \(at /);
  });
});

describe('tensor creation errors', () => {
  test.each<[string, () => unknown, RegExp]>([
    ['data length does not match the shape', () => kiln.tensor([1, 2, 3], [2, 2]), shapePattern([2, 2])],
    ['typed array length does not match the shape', () => kiln.tensor(new Float32Array(5), [2, 3]), shapePattern([2, 3])],
    ['invalid dtype', () => kiln.tensor([1], [1], 'float64' as DType), /float64/],
    ['invalid device', () => kiln.tensor([1], [1], 'float32', 'tpu' as 'cpu'), /tpu/],
    ['negative dim', () => kiln.tensor([], [-1]), /-1/],
    ['fractional dim', () => kiln.tensor([1], [1.5]), /1\.5/],
    ['no data for a 0-d tensor', () => kiln.tensor([], []), /\[\]/],
  ])('%s → a typed error with a code', (_n, call, mention) => {
    const err = thrown(call);
    expect(err).toBeInstanceOf(KilnError);
    const e = err as KilnError;
    expect(e instanceof ShapeError || e instanceof ArgumentError).toBe(true);
    expect(e.code).toMatch(/^[A-Z][A-Z0-9_]+$/);
    expect(e.message).toMatch(mention);
  });
});

/** The error of running `fn` and reading its result: checks may run eagerly or at toArray(). */
async function thrownAsync(fn: () => { toArray(): Promise<unknown> }): Promise<unknown> {
  try {
    await fn().toArray();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe('data-dependent errors', () => {
  test.each([
    [[0, 10], '10'],
    [[-1, 0], '-1'],
  ])('embedding ids %p outside a 10-row table are a typed error naming the id', async (idValues, bad) => {
    const ids = kiln.tensor(idValues, [2], 'int32');
    const table = kiln.tensor(new Array<number>(40).fill(0), [10, 4]);
    const err = await thrownAsync(() => kiln.embedding(ids, table));
    expect(err).toBeInstanceOf(KilnError);
    expect((err as KilnError).code).toMatch(/^[A-Z][A-Z0-9_]+$/);
    expect((err as KilnError).message).toContain('embedding');
    expect((err as KilnError).message).toMatch(new RegExp(`(^|[^\\d-])${bad}\\b`));
  });

  test('a disposed tensor cannot be read or used: a typed error', async () => {
    const x = kiln.tensor([1, 2], [2]);
    x.dispose();
    const read = await thrownAsync(() => x);
    expect(read).toBeInstanceOf(KilnError);
    const use = thrown(() => x.add(1));
    expect(use).toBeInstanceOf(KilnError);
    expect((use as KilnError).message).toContain('add');
  });
});
