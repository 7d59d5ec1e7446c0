/**
 * Rule sets for graphRewrite: constant folding, algebraic identities and movement-op
 * canonicalization (tinygrad's `symbolic` and `sym` matchers, in kiln's own form). No rule
 * may change a value, NaN or infinity included: x*0 → 0 is wrong for x = inf or NaN, so it
 * is not here. Folding evaluates exactly as the reference interpreter does (float64, then
 * rounding to the node's dtype).
 */
import { dimEq, roundTo, shapeEq, type Dim, type DType, type Graph, type Node, type Op, type PadRange, type ShrinkRange } from '../ir';
import type { Rule } from './rewrite';

/** The elementwise ops, as a type (their table below must cover all of them). */
export type ElementwiseOp = 'NEG' | 'EXP' | 'LOG' | 'SQRT' | 'RECIP' | 'SIN' | 'COS' | 'TANH' | 'ERF' | 'ABS' | 'CAST' |
  'ADD' | 'SUB' | 'MUL' | 'DIV' | 'POW' | 'MAX' | 'MIN' | 'CMPEQ' | 'CMPNE' | 'CMPLT' | 'CMPLE' | 'WHERE';

/** Exact float64 evaluation of each elementwise op before rounding; undefined = do not fold. */
const EVAL: { readonly [O in ElementwiseOp]: ((v: readonly number[], dtype: DType) => number) | undefined } = {
  NEG: ([x]) => -x,
  EXP: ([x]) => Math.exp(x),
  LOG: ([x]) => Math.log(x),
  SQRT: ([x]) => Math.sqrt(x),
  RECIP: ([x]) => 1 / x,
  SIN: ([x]) => Math.sin(x),
  COS: ([x]) => Math.cos(x),
  TANH: ([x]) => Math.tanh(x),
  ERF: undefined, // the interpreter's erf lives in the runtime layer; constant erf is rare
  ABS: ([x]) => Math.abs(x),
  CAST: ([x]) => x,
  ADD: ([a, b]) => a + b,
  SUB: ([a, b]) => a - b,
  MUL: ([a, b], dt) => (dt === 'int32' ? Math.imul(a, b) : a * b),
  DIV: ([a, b]) => a / b,
  POW: undefined, // C's pow and int32 pow by wrapping squares live in the runtime layer (kernels.ts); constant pow is rare
  MAX: ([a, b]) => Math.max(a, b),
  MIN: ([a, b]) => Math.min(a, b),
  CMPEQ: ([a, b]) => (a === b ? 1 : 0),
  CMPNE: ([a, b]) => (a !== b ? 1 : 0),
  CMPLT: ([a, b]) => (a < b ? 1 : 0),
  CMPLE: ([a, b]) => (a <= b ? 1 : 0),
  WHERE: ([c, a, b]) => (c !== 0 ? a : b),
};

const ELEMENTWISE = Object.keys(EVAL) as ElementwiseOp[];
const VIEWS_OF_SCALAR: readonly Op[] = ['RESHAPE', 'EXPAND', 'PERMUTE', 'SHRINK'];

/** The value of a scalar constant seen through views (not PAD, which adds zeros). */
export function scalarValue(n: Node): number | undefined {
  let x = n;
  while (VIEWS_OF_SCALAR.includes(x.op)) x = x.src[0];
  return x.op === 'CONST' ? (x.arg as number) : undefined;
}

/** The canonical broadcast of a scalar: CONST, then RESHAPE to ones, then EXPAND. */
export function broadcastConst(g: Graph, value: number, dtype: DType, shape: readonly Dim[]): Node {
  let c = g.table.make('CONST', [], value, { dtype });
  if (shape.length === 0) return c;
  c = g.table.make('RESHAPE', [c], shape.map(() => 1));
  return shape.every((d) => dimEq(d, 1)) ? c : g.table.make('EXPAND', [c], shape);
}

const isConst = (v: number) => (n: Node) => {
  const x = scalarValue(n);
  return x !== undefined && x === v && !Object.is(x, -0);
};

/** Fold elementwise ops whose operands are all scalar constants. */
export const FOLD_RULES: readonly Rule[] = [
  {
    name: 'fold-elementwise',
    pattern: { op: ELEMENTWISE, where: (n) => n.src.every((s) => scalarValue(s) !== undefined) },
    rewrite: ({ root }, g) => {
      const f = EVAL[root.op as ElementwiseOp];
      if (!f) return undefined;
      const v = roundTo(root.dtype, f(root.src.map((s) => scalarValue(s) as number), root.dtype));
      return broadcastConst(g, v, root.dtype, root.shape);
    },
  },
  {
    name: 'canonical-const-view',
    pattern: { op: VIEWS_OF_SCALAR, where: (n) => scalarValue(n) !== undefined },
    rewrite: ({ root }, g) => broadcastConst(g, scalarValue(root) as number, root.dtype, root.shape),
  },
];

const X = { name: 'x' };
const narrowToWide = (inner: Node, outer: Node): boolean =>
  (inner.src[0].dtype === 'float16' || inner.src[0].dtype === 'bfloat16') && inner.dtype === 'float32' && outer.dtype === inner.src[0].dtype;

/**
 * The additive identity of ADD in the node's dtype: 0 for int32, but -0 for floats, as
 * -0 + 0 is +0 (x + (-0) is x for every float, -0 and NaN included).
 */
const isAddIdentity = (n: Node): boolean => {
  const v = scalarValue(n);
  return v === 0 && (n.dtype === 'int32' || Object.is(v, -0));
};

/** Algebraic identities that hold bit-for-bit (NaN, inf and -0 included). */
export const ALGEBRA_RULES: readonly Rule[] = [
  { name: 'x+0', pattern: { op: 'ADD', commutative: true, src: [X, { where: isAddIdentity }] }, rewrite: (m) => m.x },
  { name: 'x-0', pattern: { op: 'SUB', src: [X, { where: isConst(0) }] }, rewrite: (m) => m.x },
  { name: 'x*1', pattern: { op: 'MUL', commutative: true, src: [X, { where: isConst(1) }] }, rewrite: (m) => m.x },
  { name: 'x/1', pattern: { op: 'DIV', src: [X, { where: isConst(1) }] }, rewrite: (m) => m.x },
  { name: 'neg-neg', pattern: { op: 'NEG', src: [{ op: 'NEG', src: [X] }] }, rewrite: (m) => m.x },
  { name: 'cast-same', pattern: { op: 'CAST', src: [X] }, rewrite: (m) => (m.x.dtype === m.root.dtype ? m.x : undefined) },
  {
    name: 'cast-widen-narrow',
    pattern: { op: 'CAST', src: [{ op: 'CAST', name: 'mid', src: [X] }] },
    rewrite: (m) => (narrowToWide(m.mid, m.root) ? m.x : undefined),
  },
  { name: 'where-same', pattern: { op: 'WHERE', src: [{}, X, X] }, rewrite: (m) => m.x },
  {
    name: 'where-const',
    pattern: { op: 'WHERE', src: [{ name: 'c', where: (n) => scalarValue(n) !== undefined }, { name: 'a' }, { name: 'b' }] },
    rewrite: (m) => (scalarValue(m.c) !== 0 ? m.a : m.b),
  },
];

/** Movement-op identities and compositions. */
export const VIEW_RULES: readonly Rule[] = [
  { name: 'reshape-same', pattern: { op: 'RESHAPE', src: [X] }, rewrite: (m) => (shapeEq(m.x.shape, m.root.shape) ? m.x : undefined) },
  {
    name: 'reshape-reshape',
    pattern: { op: 'RESHAPE', src: [{ op: 'RESHAPE', src: [X] }] },
    rewrite: (m, g) => g.table.make('RESHAPE', [m.x], m.root.shape),
  },
  {
    name: 'permute-identity',
    pattern: { op: 'PERMUTE', src: [X] },
    rewrite: (m) => ((m.root.arg as readonly number[]).every((p, i) => p === i) ? m.x : undefined),
  },
  {
    name: 'permute-permute',
    pattern: { op: 'PERMUTE', src: [{ op: 'PERMUTE', name: 'inner', src: [X] }] },
    rewrite: (m, g) => {
      const p = m.inner.arg as readonly number[];
      return g.table.make('PERMUTE', [m.x], (m.root.arg as readonly number[]).map((q) => p[q]));
    },
  },
  { name: 'expand-same', pattern: { op: 'EXPAND', src: [X] }, rewrite: (m) => (shapeEq(m.x.shape, m.root.shape) ? m.x : undefined) },
  {
    name: 'expand-expand',
    pattern: { op: 'EXPAND', src: [{ op: 'EXPAND', src: [X] }] },
    rewrite: (m, g) => g.table.make('EXPAND', [m.x], m.root.shape),
  },
  {
    name: 'shrink-full',
    pattern: { op: 'SHRINK', src: [X] },
    rewrite: (m) =>
      (m.root.arg as readonly ShrinkRange[]).every(([s, e, st], i) => st === 1 && dimEq(s, 0) && dimEq(e, m.x.shape[i])) ? m.x : undefined,
  },
  {
    name: 'pad-zero',
    pattern: { op: 'PAD', src: [X] },
    rewrite: (m) => ((m.root.arg as readonly PadRange[]).every(([b, a]) => dimEq(b, 0) && dimEq(a, 0)) ? m.x : undefined),
  },
];
