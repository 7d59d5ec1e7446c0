/**
 * The primitive ops of kiln's graph IR, their groups, and the type of each op's `arg`.
 * Every public tensor op decomposes into these (docs/IR.md lists how). Views (movement
 * ops) are metadata: later stages turn them into index arithmetic, never into kernels.
 */
import type { Dim } from './sym';

/** Every primitive op. The string value equals the name (stable: it is serialized). */
export const Ops = {
  // Sources
  INPUT: 'INPUT',
  CONST: 'CONST',
  TENSOR_CONST: 'TENSOR_CONST',
  // Unary (elementwise)
  NEG: 'NEG',
  EXP: 'EXP',
  LOG: 'LOG',
  SQRT: 'SQRT',
  RECIP: 'RECIP',
  SIN: 'SIN',
  COS: 'COS',
  TANH: 'TANH',
  ERF: 'ERF',
  ERFC: 'ERFC',
  ABS: 'ABS',
  CAST: 'CAST',
  // Binary (elementwise, equal shapes and dtypes)
  ADD: 'ADD',
  SUB: 'SUB',
  MUL: 'MUL',
  DIV: 'DIV',
  POW: 'POW',
  MAX: 'MAX',
  MIN: 'MIN',
  CMPEQ: 'CMPEQ',
  CMPNE: 'CMPNE',
  CMPLT: 'CMPLT',
  CMPLE: 'CMPLE',
  // Ternary
  WHERE: 'WHERE',
  // Reductions (keepdim)
  REDUCE_SUM: 'REDUCE_SUM',
  REDUCE_MAX: 'REDUCE_MAX',
  // Movement (views)
  RESHAPE: 'RESHAPE',
  PERMUTE: 'PERMUTE',
  EXPAND: 'EXPAND',
  SHRINK: 'SHRINK',
  PAD: 'PAD',
  // Others
  MATMUL: 'MATMUL',
  GATHER: 'GATHER',
} as const;

/** A primitive op name. */
export type Op = keyof typeof Ops;

/** All ops in declaration order. */
export const ALL_OPS: readonly Op[] = Object.keys(Ops) as Op[];

/** True if `x` names a primitive op. */
export function isOp(x: unknown): x is Op {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(Ops, x);
}

/** SHRINK range of one dim: elements start, start+step, ... below end. */
export type ShrinkRange = readonly [start: Dim, end: Dim, step: number];
/** PAD amounts of one dim: zeros before and after. */
export type PadRange = readonly [before: Dim, after: Dim];

/**
 * The `arg` each op carries. Reduction axes are sorted and unique; RESHAPE/EXPAND carry
 * the new shape; CONST carries its value already rounded to the node's dtype; INPUT its
 * input index; TENSOR_CONST the content key of its entry in the graph's constant table.
 */
export interface OpArgs {
  INPUT: number;
  CONST: number;
  TENSOR_CONST: string;
  NEG: null;
  EXP: null;
  LOG: null;
  SQRT: null;
  RECIP: null;
  SIN: null;
  COS: null;
  TANH: null;
  ERF: null;
  ERFC: null;
  ABS: null;
  CAST: null;
  ADD: null;
  SUB: null;
  MUL: null;
  DIV: null;
  POW: null;
  MAX: null;
  MIN: null;
  CMPEQ: null;
  CMPNE: null;
  CMPLT: null;
  CMPLE: null;
  WHERE: null;
  REDUCE_SUM: readonly number[];
  REDUCE_MAX: readonly number[];
  RESHAPE: readonly Dim[];
  PERMUTE: readonly number[];
  EXPAND: readonly Dim[];
  SHRINK: readonly ShrinkRange[];
  PAD: readonly PadRange[];
  MATMUL: null;
  GATHER: null;
}

/** Any op's arg. */
export type Arg = OpArgs[Op];

/** How many sources each op takes. */
export const ARITY: { readonly [O in Op]: number } = {
  INPUT: 0,
  CONST: 0,
  TENSOR_CONST: 0,
  NEG: 1,
  EXP: 1,
  LOG: 1,
  SQRT: 1,
  RECIP: 1,
  SIN: 1,
  COS: 1,
  TANH: 1,
  ERF: 1,
  ERFC: 1,
  ABS: 1,
  CAST: 1,
  ADD: 2,
  SUB: 2,
  MUL: 2,
  DIV: 2,
  POW: 2,
  MAX: 2,
  MIN: 2,
  CMPEQ: 2,
  CMPNE: 2,
  CMPLT: 2,
  CMPLE: 2,
  WHERE: 3,
  REDUCE_SUM: 1,
  REDUCE_MAX: 1,
  RESHAPE: 1,
  PERMUTE: 1,
  EXPAND: 1,
  SHRINK: 1,
  PAD: 1,
  MATMUL: 2,
  GATHER: 2,
};

const set = (...ops: Op[]): ReadonlySet<Op> => new Set(ops);

/** Graph inputs and constants. */
export const SOURCE_OPS = set('INPUT', 'CONST', 'TENSOR_CONST');
/** Elementwise ops of one source. */
export const UNARY_OPS = set('NEG', 'EXP', 'LOG', 'SQRT', 'RECIP', 'SIN', 'COS', 'TANH', 'ERF', 'ERFC', 'ABS', 'CAST');
/** Elementwise ops of two sources (same shape, same dtype). */
export const BINARY_OPS = set('ADD', 'SUB', 'MUL', 'DIV', 'POW', 'MAX', 'MIN', 'CMPEQ', 'CMPNE', 'CMPLT', 'CMPLE');
/** Comparisons: bool result. */
export const COMPARE_OPS = set('CMPEQ', 'CMPNE', 'CMPLT', 'CMPLE');
/** Elementwise ops of three sources. */
export const TERNARY_OPS = set('WHERE');
/** All elementwise ops. */
export const ELEMENTWISE_OPS = new Set<Op>([...UNARY_OPS, ...BINARY_OPS, ...TERNARY_OPS]);
/** Reductions over `arg` axes, keeping them as size 1. */
export const REDUCE_OPS = set('REDUCE_SUM', 'REDUCE_MAX');
/** Views: change shape metadata, never values. */
export const MOVEMENT_OPS = set('RESHAPE', 'PERMUTE', 'EXPAND', 'SHRINK', 'PAD');
/** Ops that need float inputs (transcendentals, division, reciprocal). */
export const FLOAT_ONLY_OPS = set('EXP', 'LOG', 'SQRT', 'RECIP', 'SIN', 'COS', 'TANH', 'ERF', 'ERFC', 'DIV');
