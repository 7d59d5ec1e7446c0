/**
 * Front-end ops on tensor values: dtype promotion, broadcasting, dim normalization, and
 * the lowering of each public elementwise, reduction and movement op to primitives. These
 * work on `Impl` values (eager or traced alike); the public Tensor class wraps them.
 */
import { ArgumentError, ShapeError } from '../util/errors';
import {
  broadcastShapes,
  checkDType,
  dimAdd,
  dimEq,
  dimProd,
  dimStr,
  dimDivExact,
  isFloat,
  resultType,
  roundTo,
  shapeEq,
  shapeStr,
  type Dim,
  type DType,
  type Op,
  type PromotionOperand,
  type ShrinkRange,
} from '../ir';
import { apply, lift, type Impl } from './impl';
import { callSite } from './site';

/** An operand of a binary op: a tensor value or a JS scalar. */
export type Operand = Impl | number | boolean;

const isImpl = (x: Operand): x is Impl => typeof x === 'object';

function bad(code: string, msg: string): never {
  throw new ShapeError(code, msg);
}

/** A malformed argument (not an incompatible shape): KILN_BAD_ARGUMENT is always an ArgumentError. */
export function badArg(msg: string): never {
  throw new ArgumentError('KILN_BAD_ARGUMENT', msg);
}

/**
 * A user's value for a message: strings quoted (so `'1'` does not read as the number 1),
 * arrays and plain objects as JSON, anything else as String() prints it.
 */
export function show(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  const json = typeof v === 'string' || Array.isArray(v) || (typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype);
  if (json) {
    try {
      return JSON.stringify(v);
    } catch {
      // a cycle or a bigint inside: fall through
    }
  }
  return String(v);
}

/** Throws unless a reduction's `keepdim` argument is a boolean (`x.sum(0, 'yes')` would read as true). */
export function checkKeepdim(keepdim: unknown): void {
  if (typeof keepdim !== 'boolean') badArg(`keepdim must be true or false, got ${show(keepdim)}`);
}

/** Normalize a possibly negative dim of a tensor of `shape` (PyTorch's wrap rule). */
export function normDim(d: number, shape: readonly Dim[], allowEnd = false): number {
  const rank = shape.length;
  const n = allowEnd ? rank + 1 : rank;
  const r = Math.max(n, 1); // a scalar still accepts dim 0 / -1
  if (!Number.isInteger(d)) badArg(`dim ${show(d)} must be an integer (a ${typeof d} was passed); shape ${shapeStr(shape)} takes a dim in [${-r}, ${r - 1}]`);
  if (d < -r || d >= r) {
    bad('KILN_DIM_OUT_OF_RANGE', `dim ${d} is out of range for shape ${shapeStr(shape)} (expected a dim in [${-r}, ${r - 1}])`);
  }
  return d < 0 ? d + r : d;
}

/** Normalize a dim list: negatives wrapped, duplicates rejected, sorted; none or [] means all. */
export function normDims(dims: number | readonly number[] | undefined, shape: readonly Dim[]): number[] {
  const rank = shape.length;
  const all = dims === undefined || (typeof dims !== 'number' && dims.length === 0);
  if (all) return Array.from({ length: rank }, (_, i) => i);
  const list = (typeof dims === 'number' ? [dims] : [...dims]).map((d) => normDim(d, shape));
  if (new Set(list).size !== list.length) badArg(`dims ${JSON.stringify(dims)} repeat a dim of shape ${shapeStr(shape)}`);
  return list.filter((d) => d < rank).sort((a, b) => a - b);
}

/** `x` as `dtype` (no-op when equal). */
export function cast(x: Impl, dtype: DType): Impl {
  return x.dtype === dtype ? x : apply('CAST', [x], null, { dtype });
}

/** A scalar broadcast to `shape`: CONST → RESHAPE → EXPAND. */
export function full(value: number | boolean, dtype: DType, shape: readonly Dim[], like: Impl): Impl {
  let c = apply('CONST', [], roundTo(dtype, Number(value)), { dtype }, like);
  if (shape.length === 0) return c;
  c = apply('RESHAPE', [c], shape.map(() => 1));
  return shape.every((d) => d === 1) ? c : apply('EXPAND', [c], shape);
}

/** `x` broadcast to `shape` (prepending dims of size 1 first). */
export function expandTo(x: Impl, shape: readonly Dim[]): Impl {
  if (shapeEq(x.shape, shape)) return x;
  let y = x;
  if (x.shape.length < shape.length) y = apply('RESHAPE', [x], [...Array(shape.length - x.shape.length).fill(1), ...x.shape]);
  return shapeEq(y.shape, shape) ? y : apply('EXPAND', [y], shape);
}

function firstImpl(name: string, xs: readonly Operand[]): Impl {
  const t = xs.find(isImpl);
  if (!t) throw new ArgumentError('KILN_BAD_ARGUMENT', `${name}: needs at least one tensor operand`);
  return t;
}

function checkScalar(name: string, x: Operand): void {
  if (!isImpl(x) && typeof x !== 'number' && typeof x !== 'boolean') {
    throw new ArgumentError('KILN_BAD_ARGUMENT', `${name}: operands must be tensors or numbers, got ${typeof x}`);
  }
}

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

/**
 * Throws unless a JS number used as an operand of `name` fits `dtype`, the dtype the op
 * computes in. Only int32 can fail: an integral number next to an int32 (or bool) tensor
 * computes in int32, and wrapping 2**31 to -2**31 would silently change the answer
 * (PyTorch: "value cannot be converted to type int32_t without overflow").
 */
export function checkScalarFits(name: string, x: Operand, dtype: DType): void {
  if (dtype !== 'int32' || typeof x !== 'number' || (x >= INT32_MIN && x <= INT32_MAX)) return;
  throw new ArgumentError(
    'KILN_SCALAR_OVERFLOW',
    `${name}: the scalar ${x} cannot be converted to int32 without overflow (int32 holds ${INT32_MIN} to ${INT32_MAX}), ` +
      `and ${name} computes in int32 here (an int32 or bool tensor with an integer scalar does); convert the tensor first (e.g. x.to('float32')) or use a value in range`,
  );
}

/** Operands promoted to `dtype` and broadcast to one shape. */
export function prepare(name: string, operands: readonly Operand[], dtype: DType): Impl[] {
  let xs = operands;
  xs.forEach((x) => checkScalar(name, x));
  xs.forEach((x) => checkScalarFits(name, x, dtype));
  firstImpl(name, xs);
  const lifted = lift(xs.filter(isImpl));
  xs = xs.map((x) => (isImpl(x) ? (lifted.shift() as Impl) : x));
  const like = firstImpl(name, xs);
  const shape = broadcastShapes(name, ...xs.filter(isImpl).map((x) => x.shape));
  return xs.map((x) => (isImpl(x) ? expandTo(cast(x, dtype), shape) : full(x, dtype, shape, like)));
}

/** An operand as type promotion sees it (a tensor's rank matters: 0-d tensors rank below others). */
export const promotionOf = (x: Operand): PromotionOperand => (isImpl(x) ? { dtype: x.dtype, ndim: x.shape.length } : x);

/** A number, or a 0-d tensor of another dtype than the result: it keeps its own precision. */
const scalarLike = (x: Operand, dtype: DType): boolean => !isImpl(x) || (x.shape.length === 0 && x.dtype !== dtype);

/** Kinds of binary ops, by how they type their operands. */
type BinaryKind = 'arith' | 'div' | 'minmax' | 'compare';

const BINARY: Record<string, { op: Op; kind: BinaryKind; swap?: boolean }> = {
  add: { op: 'ADD', kind: 'arith' },
  sub: { op: 'SUB', kind: 'arith' },
  mul: { op: 'MUL', kind: 'arith' },
  div: { op: 'DIV', kind: 'div' },
  pow: { op: 'POW', kind: 'arith' },
  maximum: { op: 'MAX', kind: 'minmax' },
  minimum: { op: 'MIN', kind: 'minmax' },
  eq: { op: 'CMPEQ', kind: 'compare' },
  ne: { op: 'CMPNE', kind: 'compare' },
  lt: { op: 'CMPLT', kind: 'compare' },
  le: { op: 'CMPLE', kind: 'compare' },
  gt: { op: 'CMPLT', kind: 'compare', swap: true },
  ge: { op: 'CMPLE', kind: 'compare', swap: true },
};

/** Names of the public binary ops. */
export type BinaryName = 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum' | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge';

/**
 * bool ⊕ bool as PyTorch computes it: add is a logical or, mul a logical and. They lower to
 * MAX and MIN, which every backend already defines on bool (ADD and MUL are not bool ops).
 */
const BOOL_ARITH: { readonly [N in BinaryName]?: Op } = { add: 'MAX', mul: 'MIN' };

/**
 * A public binary op with PyTorch's type promotion: bool + bool is bool (or), bool · bool is
 * bool (and), bool - bool is an error; other bool arithmetic (pow) runs in int32; division
 * of ints is true division in float32; comparisons compare in the promoted type.
 */
export function binary(name: BinaryName, a: Operand, b: Operand): Impl {
  const { op, kind, swap } = BINARY[name];
  const t = resultType([promotionOf(a), promotionOf(b)]);
  if (kind === 'arith' && t === 'bool') {
    const logical = BOOL_ARITH[name];
    if (logical) return apply(logical, prepare(name, [a, b], 'bool'), null);
    if (name === 'sub') {
      bad('KILN_DTYPE', "sub: subtraction of bools is not supported (as in PyTorch); for a logical xor use a.ne(b), for a and-not use a.gt(b), or convert with .to('int32') first");
    }
  }
  const dtype = kind === 'div' ? (isFloat(t) ? t : 'float32') : kind === 'arith' && t === 'bool' ? 'int32' : t;
  if (name === 'pow' && dtype === 'int32' && typeof b === 'number' && b < 0) {
    bad('KILN_DTYPE', `pow: integers to negative integer powers are not allowed (int32 base, exponent ${b}); convert with .to('float32')`);
  }
  const half = dtype === 'float16' || dtype === 'bfloat16';
  if (name === 'pow' && isImpl(a) && typeof b === 'number' && isFloat(dtype)) {
    const special = powByScalar(b);
    // Half types compute in float32 and round once, as for every op with a JS number (opmath).
    if (special) return cast(special(cast(a, half ? 'float32' : dtype)), dtype);
  }
  if (half && kind !== 'compare' && kind !== 'minmax' && (scalarLike(a, dtype) || scalarLike(b, dtype))) {
    // A JS number (or a 0-d tensor of a wider type) keeps float32 precision in half
    // arithmetic (PyTorch's opmath): x + 0.1 is x + float32(0.1) rounded once, not x + float16(0.1).
    const [x, y] = prepare(name, [a, b], 'float32');
    return cast(apply(op, [x, y], null), dtype);
  }
  const [x, y] = prepare(name, [a, b], dtype);
  return swap ? apply(op, [y, x], null) : apply(op, [x, y], null);
}

/**
 * pow(x, c) for the exponents PyTorch computes another way (its pow_tensor_scalar_kernel):
 * 0.5 is sqrt, -0.5 rsqrt, -1 reciprocal, 2 x·x, 3 x·x·x and -2 1/(x·x). They differ from
 * pow itself at edge cases — pow(-inf, 0.5) is +inf but sqrt(-inf) NaN, pow(-0, 0.5) is +0
 * but sqrt(-0) -0 — and in rounding (x·x·x rounds twice). Lowered here, at trace time, so
 * eager runs and every backend compute the same formula, never one a C compiler picks.
 */
function powByScalar(c: number): ((x: Impl) => Impl) | undefined {
  const mul = (x: Impl, y: Impl): Impl => apply('MUL', [x, y], null);
  switch (c) {
    case 0.5:
      return (x) => apply('SQRT', [x], null);
    case -0.5:
      return (x) => apply('RECIP', [apply('SQRT', [x], null)], null);
    case -1:
      return (x) => apply('RECIP', [x], null);
    case 2:
      return (x) => mul(x, x);
    case 3:
      return (x) => mul(mul(x, x), x);
    case -2:
      return (x) => apply('RECIP', [mul(x, x)], null);
    default:
      return undefined;
  }
}

/** Float math on ints computes in float32 (as torch.exp(int_tensor) does). */
export function toFloat(x: Impl): Impl {
  return isFloat(x.dtype) ? x : cast(x, 'float32');
}

/** Half types compute composite ops in float32 and round once at the end. */
export function upcast(x: Impl): Impl {
  return x.dtype === 'float16' || x.dtype === 'bfloat16' ? cast(x, 'float32') : toFloat(x);
}

/** A public unary elementwise op. */
export function unary(name: string, op: Op, x: Impl): Impl {
  if (op === 'NEG' || op === 'ABS') {
    if (x.dtype === 'bool') {
      if (op === 'ABS') return x;
      bad('KILN_DTYPE', `${name}: negation is not defined for bool tensors; use kiln.where or .to('int32')`);
    }
    return apply(op, [x], null);
  }
  return apply(op, [toFloat(x)], null);
}

/** 1/√x, rounded once for half types. */
export function rsqrt(x: Impl): Impl {
  const f = toFloat(x);
  return cast(apply('RECIP', [apply('SQRT', [upcast(f)], null)], null), f.dtype);
}

/** Drop the given (reduced, size-1) axes from the shape. */
function dropAxes(x: Impl, axes: readonly number[]): Impl {
  return apply('RESHAPE', [x], x.shape.filter((_, i) => !axes.includes(i)));
}

/** Sum over dims; ints and bools sum in int32. */
export function sum(x: Impl, dims: number | readonly number[] | undefined, keepdim = false): Impl {
  checkKeepdim(keepdim);
  const axes = normDims(dims, x.shape);
  const y = cast(x, isFloat(x.dtype) ? x.dtype : 'int32');
  if (axes.length === 0) return y;
  const r = apply('REDUCE_SUM', [y], axes);
  return keepdim ? r : dropAxes(r, axes);
}

/** Number of elements reduced, as a tensor of `dtype` shaped like the keepdim result. */
function reducedCount(x: Impl, axes: readonly number[], dtype: DType): Impl {
  const n = dimProd(axes.map((a) => x.shape[a]));
  if (typeof n === 'number') return full(n, dtype, [], x);
  // A symbolic count has no CONST: sum ones over the reduced dims instead.
  return apply('REDUCE_SUM', [full(1, dtype, x.shape, x)], axes);
}

/** Mean over dims (float only, like PyTorch). */
export function mean(x: Impl, dims: number | readonly number[] | undefined, keepdim = false): Impl {
  checkKeepdim(keepdim);
  if (!isFloat(x.dtype)) bad('KILN_DTYPE', `mean: needs a float tensor, got ${x.dtype}; convert with .to('float32')`);
  const axes = normDims(dims, x.shape);
  const f = upcast(x);
  const s = sum(f, axes, true);
  const n = expandTo(reducedCount(f, axes, f.dtype), s.shape);
  const m = cast(apply('DIV', [s, n], null), x.dtype);
  return keepdim || axes.length === 0 ? m : dropAxes(m, axes);
}

/**
 * An order-reversing bijection of the dtype, for min = flip(max(flip(x))). Floats negate
 * (exact, NaN stays NaN). int32 uses -1 - x (~x), which maps [-2³¹, 2³¹-1] onto itself
 * without overflow; -x would not: -(-2³¹) wraps to -2³¹.
 */
function flip(x: Impl): Impl {
  if (isFloat(x.dtype)) return apply('NEG', [x], null);
  return apply('SUB', [full(-1, x.dtype, x.shape, x), x], null);
}

/** Maximum (or minimum) values over dims; an empty reduced dim is an error, as in PyTorch. */
export function maxmin(which: 'max' | 'min', x: Impl, dims: number | readonly number[] | undefined, keepdim = false): Impl {
  checkKeepdim(keepdim);
  const axes = normDims(dims, x.shape);
  if (axes.some((a) => x.shape[a] === 0)) bad('KILN_SHAPE_MISMATCH', `${which}: cannot reduce over an empty dim of ${shapeStr(x.shape)}`);
  for (const a of axes) guardNonEmpty(x, a, `${which}(${dims === undefined ? '' : JSON.stringify(dims)})`);
  if (axes.length === 0) return x;
  let r: Impl;
  if (which === 'max') r = apply('REDUCE_MAX', [x], axes);
  else {
    const y = x.dtype === 'bool' ? cast(x, 'int32') : x; // bool has no arithmetic to flip with
    r = cast(flip(apply('REDUCE_MAX', [flip(y)], axes)), x.dtype);
  }
  return keepdim ? r : dropAxes(r, axes);
}

/**
 * Records that dynamic dim `axis` of `x` must not be 0 at run time: an op with no value for
 * an empty dim (the max of nothing) then fails like its eager call, not with -inf.
 */
function guardNonEmpty(x: Impl, axis: number, op: string): void {
  const size = x.shape[axis];
  if (x.kind !== 'traced' || typeof size === 'number') return;
  const site = callSite();
  x.tracer.guard({ dim: size, min: 1, op, ...(site ? { site } : {}) });
}

/** The maximum over `axes`, kept as size-1 dims; an empty dim gives -inf (softmax's shift, where no element reads it). */
export function reduceMax(x: Impl, axes: number | readonly number[]): Impl {
  const list = normDims(axes, x.shape);
  return list.length ? apply('REDUCE_MAX', [x], list) : x;
}

/** Reshape with one optional -1. */
export function reshape(x: Impl, shape: readonly Dim[]): Impl {
  const holes = shape.filter((d) => d === -1).length;
  if (holes > 1) badArg(`reshape: only one dim may be -1, got ${shapeStr(shape)} for input ${shapeStr(x.shape)}`);
  let out = [...shape];
  if (holes === 1) {
    const known = dimProd(shape.filter((d) => d !== -1));
    if (known === 0) bad('KILN_SHAPE_MISMATCH', `reshape: cannot infer -1 in ${shapeStr(shape)} with a zero-size dim`);
    let inferred: Dim = 0;
    try {
      inferred = dimDivExact(dimProd(x.shape), known);
    } catch {
      bad('KILN_SHAPE_MISMATCH', `reshape: cannot reshape ${shapeStr(x.shape)} to ${shapeStr(shape)}: ${dimStr(dimProd(x.shape))} elements do not divide into ${dimStr(known)}`);
    }
    out = shape.map((d) => (d === -1 ? inferred : d));
  }
  if (shapeEq(out, x.shape)) return x;
  if (!dimEq(dimProd(out), dimProd(x.shape))) bad('KILN_SHAPE_MISMATCH', `reshape: cannot reshape ${shapeStr(x.shape)} (${dimStr(dimProd(x.shape))} elements) to ${shapeStr(shape)}`);
  return apply('RESHAPE', [x], out);
}

/** Permute dims. */
export function permute(x: Impl, dims: readonly number[]): Impl {
  const rank = x.shape.length;
  if (dims.length !== rank) badArg(`permute: needs ${rank} dims for ${shapeStr(x.shape)}, got ${JSON.stringify(dims)}`);
  const perm = dims.map((d) => normDim(d, x.shape));
  if (new Set(perm).size !== rank) badArg(`permute: ${JSON.stringify(dims)} repeats a dim of shape ${shapeStr(x.shape)}`);
  return perm.every((p, i) => p === i) ? x : apply('PERMUTE', [x], perm);
}

/** Swap two dims. */
export function transpose(x: Impl, d0: number, d1: number): Impl {
  const rank = x.shape.length;
  const [a, b] = [normDim(d0, x.shape), normDim(d1, x.shape)];
  if (rank < 2) return x;
  const perm = x.shape.map((_, i) => (i === a ? b : i === b ? a : i));
  return permute(x, perm);
}

/** Broadcast to a shape (PyTorch's expand: -1 keeps a dim; new dims go in front). */
export function expand(x: Impl, shape: readonly Dim[]): Impl {
  const lead = shape.length - x.shape.length;
  if (lead < 0) bad('KILN_SHAPE_MISMATCH', `expand: cannot expand ${shapeStr(x.shape)} to fewer dims ${shapeStr(shape)}`);
  const out = shape.map((d, i) => {
    if (d !== -1) return d;
    if (i < lead) badArg(`expand: -1 is not allowed for the new leading dim ${i} when expanding ${shapeStr(x.shape)} to ${shapeStr(shape)}`);
    return x.shape[i - lead];
  });
  const y = lead > 0 ? apply('RESHAPE', [x], [...Array(lead).fill(1), ...x.shape]) : x;
  return shapeEq(y.shape, out) ? y : apply('EXPAND', [y], out);
}

/** Insert a size-1 dim at `d`. */
export function unsqueeze(x: Impl, d: number): Impl {
  const i = normDim(d, x.shape, true);
  return apply('RESHAPE', [x], [...x.shape.slice(0, i), 1, ...x.shape.slice(i)]);
}

/** Remove size-1 dims (all, or the given ones when they have size 1). */
export function squeeze(x: Impl, dims?: number | readonly number[]): Impl {
  const axes = dims === undefined ? x.shape.map((_, i) => i) : normDims(dims, x.shape);
  const drop = axes.filter((a) => x.shape[a] === 1);
  return drop.length ? apply('RESHAPE', [x], x.shape.filter((_, i) => !drop.includes(i))) : x;
}

/** Merge dims start..end into one. */
export function flatten(x: Impl, start = 0, end = -1): Impl {
  const rank = x.shape.length;
  if (rank === 0) return apply('RESHAPE', [x], [1]);
  const [s, e] = [normDim(start, x.shape), normDim(end, x.shape)];
  if (s > e) badArg(`flatten: start dim ${start} comes after end dim ${end} for shape ${shapeStr(x.shape)}`);
  return reshape(x, [...x.shape.slice(0, s), dimProd(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)]);
}

/** Elements start, start+step, … below end along `dim` (Python slice rules, clamped). */
export function slice(x: Impl, dim: number, start = 0, end?: number, step = 1): Impl {
  const rank = x.shape.length;
  const d = normDim(dim, x.shape);
  if (rank === 0) badArg('slice: cannot slice a scalar');
  if (!Number.isInteger(step) || step < 1) badArg(`slice: step must be a positive integer, got ${step} (shape ${shapeStr(x.shape)})`);
  for (const v of [start, end]) if (v !== undefined && !Number.isInteger(v)) badArg(`slice: bounds must be integers, got ${v} (shape ${shapeStr(x.shape)})`);
  const size = x.shape[d];
  let lo: Dim;
  let hi: Dim;
  if (typeof size === 'number') {
    const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + size : v, 0), size);
    lo = clamp(start);
    hi = end === undefined ? size : Math.max(clamp(end), lo);
  } else {
    // A dynamic dim cannot be clamped: negative bounds count from its end, others are taken as
    // given, and the trace records the sizes for which that is what clamping would give.
    const at = (v: number): Dim => (v < 0 ? dimAdd(size, v) : v);
    const last = end === undefined || end >= Number.MAX_SAFE_INTEGER ? undefined : end;
    if (last !== undefined && (start < 0) === (last < 0) && last <= start) {
      lo = hi = 0; // empty at every size
    } else {
      lo = at(start);
      hi = last === undefined ? size : at(last);
      guardSlice(x, size, d, start, last);
    }
  }
  if (dimEq(lo, 0) && dimEq(hi, size) && step === 1) return x;
  const ranges: ShrinkRange[] = x.shape.map((s, i) => (i === d ? [lo, hi, step] : [0, s, 1]));
  return apply('SHRINK', [x], ranges);
}

/**
 * Records the sizes of dynamic dim `size` for which slice bounds [start, end) need no
 * clamping: both inside the dim, in order. Outside them a call fails with a ShapeError.
 */
function guardSlice(x: Impl, size: Dim, dim: number, start: number, end: number | undefined): void {
  if (x.kind !== 'traced') return;
  let min = Math.abs(start);
  let max: number | undefined;
  if (end !== undefined) {
    min = Math.max(min, Math.abs(end));
    if (start >= 0 && end < 0) min = Math.max(min, start - end); // size + end >= start
    if (start < 0 && end >= 0) max = end - start; // end >= size + start
  }
  if (min === 0 && max === undefined) return;
  const site = callSite();
  const op = `slice(${dim}, ${start}${end === undefined ? '' : `, ${end}`})`;
  x.tracer.guard({ dim: size, min, ...(max !== undefined ? { max } : {}), op, ...(site ? { site } : {}) });
}

/** `x.to(dtype)` */
export function to(x: Impl, dtype: unknown): Impl {
  return cast(x, checkDType(dtype));
}

/**
 * Batched, broadcasting matrix product with PyTorch's rules for 1-D operands (a vector is
 * a row on the left and a column on the right; the added dim is removed again).
 */
export function matmul(a: Impl, b: Impl): Impl {
  if (a.shape.length === 0 || b.shape.length === 0) bad('KILN_SHAPE_MISMATCH', 'matmul: both operands need at least one dim');
  const dtype = resultType([a.dtype, b.dtype]);
  if (dtype === 'bool') bad('KILN_DTYPE', 'matmul: is not defined for bool tensors');
  const [la, lb] = lift([a, b]);
  let x = cast(la, dtype);
  let y = cast(lb, dtype);
  const vecA = x.shape.length === 1;
  const vecB = y.shape.length === 1;
  if (vecA) x = apply('RESHAPE', [x], [1, x.shape[0]]);
  if (vecB) y = apply('RESHAPE', [y], [y.shape[0], 1]);
  const [m, k] = x.shape.slice(-2);
  const [k2, n] = y.shape.slice(-2);
  if (!dimEq(k, k2)) bad('KILN_SHAPE_MISMATCH', `matmul: inner dims differ: ${shapeStr(a.shape)} @ ${shapeStr(b.shape)}`);
  let batch: Dim[] = [];
  try {
    batch = broadcastShapes('matmul', x.shape.slice(0, -2), y.shape.slice(0, -2));
  } catch {
    bad('KILN_SHAPE_MISMATCH', `matmul: batch dims of ${shapeStr(a.shape)} and ${shapeStr(b.shape)} cannot broadcast`);
  }
  const r = apply('MATMUL', [expandTo(x, [...batch, m, k]), expandTo(y, [...batch, k, n])], null);
  const out = [...batch, ...(vecA ? [] : [m]), ...(vecB ? [] : [n])];
  return shapeEq(out, r.shape) ? r : apply('RESHAPE', [r], out);
}
