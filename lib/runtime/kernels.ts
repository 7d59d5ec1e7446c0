/**
 * The reference interpreter's float64 loops: elementwise maps, strided gathers (views),
 * reductions, matmul and row gathers over row-major Float64Arrays. Each elementwise op is
 * its own plain loop (no per-element closure calls), and the Math functions are bound once
 * at module level: under Jest's vm sandbox every global lookup costs about a microsecond,
 * which used to dominate the interpreter's time.
 */
import { ArgumentError } from '../util/errors';
import type { DType, Op } from '../ir';
import { erf, erfc } from './special';

const { abs, cos, exp, imul, log, max, min, pow, sin, sqrt, tanh } = Math;
const NEG_INF = Number.NEGATIVE_INFINITY;

/** Elementwise ops of one source. */
export type UnaryOp = Extract<Op, 'NEG' | 'EXP' | 'LOG' | 'SQRT' | 'RECIP' | 'SIN' | 'COS' | 'TANH' | 'ERF' | 'ERFC' | 'ABS' | 'CAST'>;
/** Elementwise ops of two sources. */
export type BinaryOp = Extract<Op, 'ADD' | 'SUB' | 'MUL' | 'DIV' | 'POW' | 'MAX' | 'MIN' | 'CMPEQ' | 'CMPNE' | 'CMPLT' | 'CMPLE'>;

/** Number of elements of a shape. */
export function count(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Strides of a contiguous row-major array of `shape`. */
export function rowMajorStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** For each element of `shape` in row-major order, `offset + Σ index_i · strides_i`. */
export function stridedIndex(shape: readonly number[], strides: readonly number[], offset: number): Float64Array {
  const n = count(shape);
  const out = new Float64Array(n);
  if (n === 0) return out;
  const rank = shape.length;
  if (rank === 0) {
    out[0] = offset;
    return out;
  }
  const inner = shape[rank - 1];
  const innerStride = strides[rank - 1];
  const ctr = new Array<number>(rank).fill(0);
  let pos = offset;
  for (let w = 0; w < n; ) {
    for (let j = 0, p = pos; j < inner; j++, p += innerStride) out[w++] = p;
    // Odometer over the outer dims.
    for (let d = rank - 2; d >= 0; d--) {
      ctr[d]++;
      pos += strides[d];
      if (ctr[d] < shape[d]) break;
      pos -= strides[d] * shape[d];
      ctr[d] = 0;
    }
  }
  return out;
}

/** The elements of `src` at `offset + Σ index_i · strides_i` for each index of `outShape`. */
export function gather(src: Float64Array, outShape: readonly number[], strides: readonly number[], offset: number): Float64Array {
  const idx = stridedIndex(outShape, strides, offset);
  const out = new Float64Array(idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = src[idx[i]];
  return out;
}

/** A unary op over every element, in float64 (the caller rounds to the node's dtype). */
export function map1(op: UnaryOp, x: Float64Array): Float64Array {
  const n = x.length;
  const out = new Float64Array(n);
  switch (op) {
    case 'NEG':
      for (let i = 0; i < n; i++) out[i] = -x[i];
      break;
    case 'EXP':
      for (let i = 0; i < n; i++) out[i] = exp(x[i]);
      break;
    case 'LOG':
      for (let i = 0; i < n; i++) out[i] = log(x[i]);
      break;
    case 'SQRT':
      for (let i = 0; i < n; i++) out[i] = sqrt(x[i]);
      break;
    case 'RECIP':
      for (let i = 0; i < n; i++) out[i] = 1 / x[i];
      break;
    case 'SIN':
      for (let i = 0; i < n; i++) out[i] = sin(x[i]);
      break;
    case 'COS':
      for (let i = 0; i < n; i++) out[i] = cos(x[i]);
      break;
    case 'TANH':
      for (let i = 0; i < n; i++) out[i] = tanh(x[i]);
      break;
    case 'ERF':
      for (let i = 0; i < n; i++) out[i] = erf(x[i]);
      break;
    case 'ERFC':
      for (let i = 0; i < n; i++) out[i] = erfc(x[i]);
      break;
    case 'ABS':
      for (let i = 0; i < n; i++) out[i] = abs(x[i]);
      break;
    case 'CAST': // the final rounding to the node's dtype performs the conversion
      out.set(x);
      break;
    default:
      return op satisfies never;
  }
  return out;
}

/**
 * C's pow (PyTorch's and numpy's), where it differs from Math.pow: 1 ** y is 1 for every y
 * (NaN and ±inf included) and (-1) ** ±inf is 1. (x ** ±0 is 1 in both.)
 */
export function floatPow(a: number, b: number): number {
  return a === 1 || (a === -1 && abs(b) === Infinity) ? 1 : pow(a, b);
}

/**
 * PyTorch's integer pow (`powi`, ATen/native/Pow.h) on int32 values: a non-negative power by
 * squaring with two's-complement wrap (2147483647 ** 2 is 1); a negative power is 1 for base
 * 1, ±1 for base -1 by the power's parity, and 0 otherwise (base 0 included).
 */
export function intPow(a: number, b: number): number {
  if (b < 0) return a === 1 ? 1 : a === -1 ? (b & 1 ? -1 : 1) : 0;
  let r = 1;
  for (let x = a | 0, e = b >>> 0; e !== 0; e >>>= 1) {
    if (e & 1) r = imul(r, x);
    x = imul(x, x);
  }
  return r;
}

/**
 * A binary op over equal-length operands, in float64; int32 MUL and POW wrap exactly (the
 * float64 product of two int32s may not be exact). MAX/MIN propagate NaN, as torch.maximum
 * does; POW is C's pow (floatPow, intPow).
 */
export function map2(op: BinaryOp, a: Float64Array, b: Float64Array, dtype: DType): Float64Array {
  const n = a.length;
  const out = new Float64Array(n);
  switch (op) {
    case 'ADD':
      for (let i = 0; i < n; i++) out[i] = a[i] + b[i];
      break;
    case 'SUB':
      for (let i = 0; i < n; i++) out[i] = a[i] - b[i];
      break;
    case 'MUL':
      if (dtype === 'int32') for (let i = 0; i < n; i++) out[i] = imul(a[i], b[i]);
      else for (let i = 0; i < n; i++) out[i] = a[i] * b[i];
      break;
    case 'DIV':
      for (let i = 0; i < n; i++) out[i] = a[i] / b[i];
      break;
    case 'POW':
      if (dtype === 'int32') for (let i = 0; i < n; i++) out[i] = intPow(a[i], b[i]);
      else for (let i = 0; i < n; i++) out[i] = floatPow(a[i], b[i]);
      break;
    case 'MAX':
      for (let i = 0; i < n; i++) out[i] = max(a[i], b[i]);
      break;
    case 'MIN':
      for (let i = 0; i < n; i++) out[i] = min(a[i], b[i]);
      break;
    case 'CMPEQ':
      for (let i = 0; i < n; i++) out[i] = a[i] === b[i] ? 1 : 0;
      break;
    case 'CMPNE':
      for (let i = 0; i < n; i++) out[i] = a[i] !== b[i] ? 1 : 0;
      break;
    case 'CMPLT':
      for (let i = 0; i < n; i++) out[i] = a[i] < b[i] ? 1 : 0;
      break;
    case 'CMPLE':
      for (let i = 0; i < n; i++) out[i] = a[i] <= b[i] ? 1 : 0;
      break;
    default:
      return op satisfies never;
  }
  return out;
}

/** where(c, a, b) over equal-length operands. */
export function select(c: Float64Array, a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(c.length);
  for (let i = 0; i < out.length; i++) out[i] = c[i] !== 0 ? a[i] : b[i];
  return out;
}

/** Sum or max over `axes` of `x` (of `shape`) into the keepdim `outShape`. */
export function reduce(x: Float64Array, shape: readonly number[], axes: readonly number[], outShape: readonly number[], kind: 'sum' | 'max'): Float64Array {
  const outStrides = rowMajorStrides(outShape).map((s, i) => (axes.includes(i) ? 0 : s));
  const idx = stridedIndex(shape, outStrides, 0);
  const out = new Float64Array(count(outShape));
  if (kind === 'sum') for (let i = 0; i < x.length; i++) out[idx[i]] += x[i];
  else {
    out.fill(NEG_INF);
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      if (v > out[idx[i]] || v !== v) out[idx[i]] = v; // NaN wins and then stays (NaN > v is false)
    }
  }
  return out;
}

/** Batched [.., m, k] × [.., k, n] with equal batch dims; int32 accumulates with wrap-around. */
export function matmul(a: Float64Array, aShape: readonly number[], b: Float64Array, bShape: readonly number[], dtype: DType): Float64Array {
  const r = aShape.length;
  const [m, k, n] = [aShape[r - 2], aShape[r - 1], bShape[r - 1]];
  const batch = count(aShape.slice(0, -2));
  const out = new Float64Array(batch * m * n);
  const bt = new Float64Array(k * n); // one batch of b, transposed: dot products then read both operands contiguously
  for (let bi = 0; bi < batch; bi++) {
    const bBase = bi * k * n;
    for (let kk = 0; kk < k; kk++) for (let j = 0; j < n; j++) bt[j * k + kk] = b[bBase + kk * n + j];
    if (dtype === 'int32') matmulInt(a, bt, out, bi, m, k, n);
    else matmulFloat(a, bt, out, bi, m, k, n);
  }
  return out;
}

function matmulFloat(ad: Float64Array, bt: Float64Array, out: Float64Array, bi: number, m: number, k: number, n: number): void {
  for (let i = 0; i < m; i++) {
    const ao = (bi * m + i) * k;
    const oo = (bi * m + i) * n;
    for (let j = 0; j < n; j++) {
      const bo = j * k;
      // Four partial sums: independent additions pipeline well (float64 keeps the error tiny).
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let kk = 0;
      for (; kk + 3 < k; kk += 4) {
        s0 += ad[ao + kk] * bt[bo + kk];
        s1 += ad[ao + kk + 1] * bt[bo + kk + 1];
        s2 += ad[ao + kk + 2] * bt[bo + kk + 2];
        s3 += ad[ao + kk + 3] * bt[bo + kk + 3];
      }
      for (; kk < k; kk++) s0 += ad[ao + kk] * bt[bo + kk];
      out[oo + j] = s0 + s1 + (s2 + s3);
    }
  }
}

function matmulInt(ad: Float64Array, bt: Float64Array, out: Float64Array, bi: number, m: number, k: number, n: number): void {
  for (let i = 0; i < m; i++) {
    const ao = (bi * m + i) * k;
    const oo = (bi * m + i) * n;
    for (let j = 0; j < n; j++) {
      const bo = j * k;
      let s = 0;
      for (let kk = 0; kk < k; kk++) s = (s + imul(ad[ao + kk], bt[bo + kk])) | 0; // int32 wraps exactly
      out[oo + j] = s;
    }
  }
}

/** Rows of `table` ([v, d]) picked by `ids`; an id outside [0, v) is KILN_INDEX_OUT_OF_RANGE. */
export function gatherRows(table: Float64Array, tableShape: readonly number[], ids: Float64Array): Float64Array {
  const [v, d] = tableShape;
  const out = new Float64Array(ids.length * d);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (id < 0 || id >= v) {
      throw new ArgumentError('KILN_INDEX_OUT_OF_RANGE', `embedding index ${id} is out of range for a table of ${v} rows`);
    }
    out.set(table.subarray(id * d, id * d + d), i * d);
  }
  return out;
}
