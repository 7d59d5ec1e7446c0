/**
 * The reference interpreter: kiln's numerical oracle. It evaluates a graph node by node in
 * float64 and rounds every node's result to the node's dtype (float16/bfloat16 to nearest
 * even), so the value of each node is exactly defined. Views are materialized through
 * index arithmetic. Eager tensors use `evalOp`, the same per-op evaluation, so eager and
 * traced programs compute identical values. Clarity first; plain loops over Float64Array
 * keep it fast enough to check real models.
 */
import { ArgumentError, ShapeError } from '../util/errors';
import {
  decodeStorage,
  encodeStorage,
  evalDim,
  evalShape,
  isStorageOf,
  roundArray,
  toposort,
  type Arg,
  type DType,
  type Graph,
  type Node,
  type Op,
  type PadRange,
  type ShrinkRange,
  type Storage,
} from '../ir';

/** Concrete values of one node: its shape and float64 elements in row-major order. */
export interface Value {
  readonly shape: readonly number[];
  readonly data: Float64Array;
}

/** A concrete tensor crossing the interpreter's boundary, in storage form. */
export interface TensorData {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: Storage;
}

const count = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

function rowMajorStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** For each element of `shape` in row-major order, `offset + Σ index_i · strides_i`. */
function stridedIndex(shape: readonly number[], strides: readonly number[], offset: number): Float64Array {
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

function gather(src: Float64Array, outShape: readonly number[], strides: readonly number[], offset: number): Float64Array {
  const idx = stridedIndex(outShape, strides, offset);
  const out = new Float64Array(idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = src[idx[i]];
  return out;
}

const TWO_OVER_SQRT_PI = 1.1283791670955126;
const ONE_OVER_SQRT_PI = 0.5641895835477563;

/**
 * The error function to float64 accuracy (JavaScript has none). Below 2.5 it sums the
 * series erf(x) = 2/√π·e^(−x²)·Σ 2ⁿx^(2n+1)/(1·3·…·(2n+1)), whose terms are all positive
 * (no cancellation); above, 1 − erfc(x) with erfc's continued fraction, evaluated bottom-up.
 */
export function erf(x: number): number {
  if (x !== x || x === 0) return x; // keeps NaN and the sign of zero
  const a = Math.abs(x);
  let r: number;
  if (a < 2.5) {
    let term = a;
    let sum = a;
    const x2 = 2 * a * a;
    for (let n = 1; n < 200 && term > sum * 1e-17; n++) {
      term *= x2 / (2 * n + 1);
      sum += term;
    }
    r = TWO_OVER_SQRT_PI * Math.exp(-a * a) * sum;
  } else if (a < 6) {
    let f = a;
    for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
    r = 1 - (ONE_OVER_SQRT_PI * Math.exp(-a * a)) / f;
  } else r = 1; // erfc(6) < 2.2e-17: erf is 1 in float64
  return x < 0 ? -r : r;
}

type Fn1 = (x: number) => number;
type Fn2 = (a: number, b: number) => number;

const UNARY: { readonly [O in 'NEG' | 'EXP' | 'LOG' | 'SQRT' | 'RECIP' | 'SIN' | 'COS' | 'TANH' | 'ERF' | 'ABS' | 'CAST']: Fn1 } = {
  NEG: (x) => -x,
  EXP: Math.exp,
  LOG: Math.log,
  SQRT: Math.sqrt,
  RECIP: (x) => 1 / x,
  SIN: Math.sin,
  COS: Math.cos,
  TANH: Math.tanh,
  ERF: erf,
  ABS: Math.abs,
  CAST: (x) => x, // the final rounding to the node's dtype performs the conversion
};

const BINARY: { readonly [O in 'ADD' | 'SUB' | 'MUL' | 'DIV' | 'POW' | 'MAX' | 'MIN' | 'CMPEQ' | 'CMPNE' | 'CMPLT' | 'CMPLE']: Fn2 } = {
  ADD: (a, b) => a + b,
  SUB: (a, b) => a - b,
  MUL: (a, b) => a * b,
  DIV: (a, b) => a / b,
  POW: Math.pow,
  MAX: Math.max, // propagates NaN, as torch.maximum does
  MIN: Math.min,
  CMPEQ: (a, b) => (a === b ? 1 : 0),
  CMPNE: (a, b) => (a !== b ? 1 : 0),
  CMPLT: (a, b) => (a < b ? 1 : 0),
  CMPLE: (a, b) => (a <= b ? 1 : 0),
};

function map1(x: Float64Array, f: Fn1): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f(x[i]);
  return out;
}

function map2(a: Float64Array, b: Float64Array, f: Fn2): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = f(a[i], b[i]);
  return out;
}

function reduce(x: Value, axes: readonly number[], outShape: readonly number[], kind: 'sum' | 'max'): Float64Array {
  const outStrides = rowMajorStrides(outShape).map((s, i) => (axes.includes(i) ? 0 : s));
  const idx = stridedIndex(x.shape, outStrides, 0);
  const out = new Float64Array(count(outShape)).fill(kind === 'sum' ? 0 : -Infinity);
  const d = x.data;
  if (kind === 'sum') for (let i = 0; i < d.length; i++) out[idx[i]] += d[i];
  else {
    for (let i = 0; i < d.length; i++) {
      const v = d[i];
      if (v > out[idx[i]] || v !== v) out[idx[i]] = v; // NaN wins and then stays (NaN > v is false)
    }
  }
  return out;
}

function matmul(a: Value, b: Value, outShape: readonly number[], dtype: DType): Float64Array {
  const r = a.shape.length;
  const [m, k, n] = [a.shape[r - 2], a.shape[r - 1], b.shape[r - 1]];
  const batch = count(a.shape.slice(0, -2));
  const out = new Float64Array(count(outShape));
  const ad = a.data;
  const bt = new Float64Array(k * n); // one batch of b, transposed: dot products then read both operands contiguously
  for (let bi = 0; bi < batch; bi++) {
    const bBase = bi * k * n;
    for (let kk = 0; kk < k; kk++) for (let j = 0; j < n; j++) bt[j * k + kk] = b.data[bBase + kk * n + j];
    if (dtype === 'int32') matmulInt(ad, bt, out, bi, m, k, n);
    else matmulFloat(ad, bt, out, bi, m, k, n);
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
      for (let kk = 0; kk < k; kk++) s = (s + Math.imul(ad[ao + kk], bt[bo + kk])) | 0; // int32 wraps exactly
      out[oo + j] = s;
    }
  }
}

function gatherRows(table: Value, ids: Value): Float64Array {
  const [v, d] = table.shape;
  const out = new Float64Array(ids.data.length * d);
  for (let i = 0; i < ids.data.length; i++) {
    const id = ids.data[i];
    if (id < 0 || id >= v) {
      throw new ArgumentError('KILN_INDEX_OUT_OF_RANGE', `embedding index ${id} is out of range for a table of ${v} rows`);
    }
    out.set(table.data.subarray(id * d, id * d + d), i * d);
  }
  return out;
}

/**
 * Evaluate one primitive op on concrete values: `arg` has its dims already resolved to
 * numbers, `shape` is the result's concrete shape (from `inferOp`). The result is rounded
 * to `dtype`; movement ops return their input's elements rearranged (possibly the same
 * array for RESHAPE: treat results as read-only). INPUT and TENSOR_CONST have no
 * evaluation here: the caller supplies their values.
 */
export function evalOp(op: Op, arg: Arg, dtype: DType, shape: readonly number[], src: readonly Value[]): Float64Array {
  const [x, y, z] = src;
  switch (op) {
    case 'INPUT':
    case 'TENSOR_CONST':
      throw new ArgumentError('KILN_INTERNAL', `${op} has no evaluation; its value is supplied by the caller`);
    case 'CONST':
      return roundArray(dtype, new Float64Array([arg as number]));
    case 'MUL':
      if (dtype === 'int32') return map2(x.data, y.data, Math.imul); // int32 products wrap exactly
      return roundArray(dtype, map2(x.data, y.data, BINARY.MUL));
    case 'NEG':
    case 'EXP':
    case 'LOG':
    case 'SQRT':
    case 'RECIP':
    case 'SIN':
    case 'COS':
    case 'TANH':
    case 'ERF':
    case 'ABS':
    case 'CAST':
      return roundArray(dtype, map1(x.data, UNARY[op]));
    case 'ADD':
    case 'SUB':
    case 'DIV':
    case 'POW':
    case 'MAX':
    case 'MIN':
    case 'CMPEQ':
    case 'CMPNE':
    case 'CMPLT':
    case 'CMPLE':
      return roundArray(dtype, map2(x.data, y.data, BINARY[op]));
    case 'WHERE': {
      const out = new Float64Array(x.data.length);
      for (let i = 0; i < out.length; i++) out[i] = x.data[i] !== 0 ? y.data[i] : z.data[i];
      return out;
    }
    case 'REDUCE_SUM':
      return roundArray(dtype, reduce(x, arg as readonly number[], shape, 'sum'));
    case 'REDUCE_MAX':
      return reduce(x, arg as readonly number[], shape, 'max');
    case 'RESHAPE':
      return x.data;
    case 'PERMUTE': {
      const s = rowMajorStrides(x.shape);
      return gather(x.data, shape, (arg as readonly number[]).map((p) => s[p]), 0);
    }
    case 'EXPAND': {
      const s = rowMajorStrides(x.shape);
      return gather(x.data, shape, s.map((st, i) => (x.shape[i] === 1 ? 0 : st)), 0);
    }
    case 'SHRINK': {
      const s = rowMajorStrides(x.shape);
      const r = arg as readonly ShrinkRange[];
      const offset = r.reduce((acc, [start], i) => acc + (start as number) * s[i], 0);
      return gather(x.data, shape, s.map((st, i) => st * r[i][2]), offset);
    }
    case 'PAD': {
      const s = rowMajorStrides(shape);
      const offset = (arg as readonly PadRange[]).reduce((acc, [before], i) => acc + (before as number) * s[i], 0);
      const idx = stridedIndex(x.shape, s, offset);
      const out = new Float64Array(count(shape));
      for (let i = 0; i < idx.length; i++) out[idx[i]] = x.data[i];
      return out;
    }
    case 'MATMUL':
      return roundArray(dtype, matmul(x, y, shape, dtype));
    case 'GATHER':
      return gatherRows(x, y);
    default:
      return op satisfies never;
  }
}

/** Resolve the symbolic dims inside an arg to numbers. */
export function concreteArg(op: Op, arg: Arg, bindings: Readonly<Record<string, number>>): Arg {
  switch (op) {
    case 'RESHAPE':
    case 'EXPAND':
      return evalShape(arg as readonly never[], bindings);
    case 'SHRINK':
      return (arg as readonly ShrinkRange[]).map(([s, e, st]) => [evalDim(s, bindings), evalDim(e, bindings), st] as const);
    case 'PAD':
      return (arg as readonly PadRange[]).map(([b, a]) => [evalDim(b, bindings), evalDim(a, bindings)] as const);
    default:
      return arg;
  }
}

/**
 * Values of the graph's symbols given concrete input shapes. Checks dtypes, ranks and
 * static dims, and that all input dims sharing a symbol (duck sizing) agree.
 */
export function bindSymbols(graph: Graph, inputs: readonly { dtype: DType; shape: readonly number[] }[]): Record<string, number> {
  if (inputs.length !== graph.inputs.length) {
    throw new ArgumentError('KILN_INPUT_COUNT', `the program takes ${graph.inputs.length} inputs, got ${inputs.length}`);
  }
  graph.inputs.forEach((n, i) => {
    const t = inputs[i];
    if (t.dtype !== n.dtype) throw new ArgumentError('KILN_INPUT_DTYPE', `input ${i} must be ${n.dtype}, got ${t.dtype}`);
    if (t.shape.length !== n.shape.length) {
      throw new ShapeError('KILN_INPUT_SHAPE', `input ${i} must have rank ${n.shape.length}, got shape [${t.shape.join(',')}]`);
    }
  });
  const bindings: Record<string, number> = {};
  for (const s of graph.symbols) {
    const [first, ...rest] = s.sources;
    const v = inputs[first.input].shape[first.dim];
    for (const o of rest) {
      const w = inputs[o.input].shape[o.dim];
      if (w !== v) {
        throw new ShapeError(
          'KILN_SYMBOL_MISMATCH',
          `input ${first.input} dim ${first.dim} is ${v} but input ${o.input} dim ${o.dim} is ${w}; both are dynamic dim ${s.name} ` +
            '(their example sizes were equal when traced, so kiln assumes they always are — trace with distinct example sizes if they differ)',
        );
      }
    }
    bindings[s.name] = v;
  }
  graph.inputs.forEach((n, i) => {
    const want = evalShape(n.shape, bindings);
    if (want.some((d, j) => d !== inputs[i].shape[j])) {
      throw new ShapeError('KILN_INPUT_SHAPE', `input ${i} must have shape [${want.join(',')}], got [${inputs[i].shape.join(',')}]`);
    }
  });
  return bindings;
}

/** Run a graph on concrete inputs; returns the outputs in graph order, in storage form. */
export function interpret(graph: Graph, inputs: readonly TensorData[]): TensorData[] {
  const bindings = bindSymbols(graph, inputs);
  inputs.forEach((t, i) => {
    if (!isStorageOf(t.dtype, t.data) || t.data.length !== count(t.shape)) {
      throw new ArgumentError('KILN_INPUT_DATA', `input ${i} data must be ${count(t.shape)} elements of ${t.dtype} storage`);
    }
  });
  const values = new Map<Node, Value>();
  for (const n of toposort(graph)) {
    const shape = evalShape(n.shape, bindings);
    if (shape.some((d) => d < 0)) throw new ShapeError('KILN_NEGATIVE_DIM', `${n} has negative size [${shape.join(',')}] for these inputs`);
    let data: Float64Array;
    if (n.op === 'INPUT') data = decodeStorage(n.dtype, inputs[n.arg as number].data);
    else if (n.op === 'TENSOR_CONST') {
      const c = graph.constants.get(n.arg as string);
      if (!c) throw new ArgumentError('KILN_BAD_GRAPH', `constant ${String(n.arg)} is missing from the graph`);
      data = decodeStorage(c.dtype, c.data);
    } else {
      const src = n.src.map((s) => values.get(s) as Value);
      data = evalOp(n.op, concreteArg(n.op, n.arg, bindings), n.dtype, shape, src);
    }
    values.set(n, { shape, data });
  }
  return graph.outputs.map((o) => {
    const v = values.get(o) as Value;
    return { dtype: o.dtype, shape: v.shape, data: encodeStorage(o.dtype, v.data) };
  });
}
