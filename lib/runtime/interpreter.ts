/**
 * The reference interpreter: kiln's numerical oracle. It evaluates a graph node by node in
 * float64 and rounds every node's result to the node's dtype (float16/bfloat16 to nearest
 * even), so the value of each node is exactly defined. Views are materialized through
 * index arithmetic. Eager tensors use `evalOp`, the same per-op evaluation, so eager and
 * traced programs compute identical values. Clarity first; plain loops over Float64Array
 * (kernels.ts) keep it fast enough to check real models; special functions are in special.ts.
 */
import { ArgumentError, FormatError, KilnError, ShapeError } from '../util/errors';
import {
  decodeStorage,
  encodeStorage,
  dimStr,
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
import { count, gather, gatherRows, map1, map2, matmul, reduce, rowMajorStrides, select, stridedIndex } from './kernels';

export { erf, erfc } from './special';

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
      throw new KilnError('KILN_INTERNAL', `${op} has no evaluation; its value is supplied by the caller`);
    case 'CONST':
      return roundArray(dtype, new Float64Array([arg as number]));
    case 'NEG':
    case 'EXP':
    case 'LOG':
    case 'SQRT':
    case 'RECIP':
    case 'SIN':
    case 'COS':
    case 'TANH':
    case 'ERF':
    case 'ERFC':
    case 'ABS':
    case 'CAST':
      return roundArray(dtype, map1(op, x.data));
    case 'ADD':
    case 'SUB':
    case 'MUL':
    case 'DIV':
    case 'POW':
    case 'MAX':
    case 'MIN':
    case 'CMPEQ':
    case 'CMPNE':
    case 'CMPLT':
    case 'CMPLE':
      return roundArray(dtype, map2(op, x.data, y.data, dtype));
    case 'WHERE':
      return select(x.data, y.data, z.data);
    case 'REDUCE_SUM':
      return roundArray(dtype, reduce(x.data, x.shape, arg as readonly number[], shape, 'sum'));
    case 'REDUCE_MAX':
      return reduce(x.data, x.shape, arg as readonly number[], shape, 'max');
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
      return roundArray(dtype, matmul(x.data, x.shape, y.data, y.shape, dtype));
    case 'GATHER':
      return gatherRows(x.data, x.shape, y.data);
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
  for (const g of graph.guards ?? []) {
    const v = evalDim(g.dim, bindings);
    if (v >= g.min && (g.max === undefined || v <= g.max)) continue;
    const range = g.max === undefined ? `at least ${g.min}` : `between ${g.min} and ${g.max}`;
    const sizes = graph.symbols.map((s) => `${s.name} = ${bindings[s.name]}`).join(', ');
    throw new ShapeError(
      'KILN_SHAPE_GUARD',
      `the compiled function's ${g.op}${g.site ? ` at ${g.site.file}:${g.site.line}:${g.site.col}` : ''} needs the dynamic size ${dimStr(g.dim)} to be ${range}, but these inputs make it ${v} (${sizes}). ` +
        guardReason(g.op),
    );
  }
  return bindings;
}

/** Why an op recorded a shape guard (its name leads the guard's `op` text), and what to do. */
function guardReason(op: string): string {
  if (op.startsWith('slice')) {
    return 'Within those sizes the slice is exact; outside them it would be clamped, which a compiled function cannot do for a dynamic dim: slice a static dim, or keep the inputs in range.';
  }
  return `A ${op.replace(/\(.*$/, '')} over an empty dim has no value (eager kiln and PyTorch refuse it too): keep the inputs in range.`;
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
      if (!c) throw new FormatError('KILN_BAD_GRAPH', `constant ${String(n.arg)} is missing from the graph`);
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
