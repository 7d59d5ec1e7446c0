/**
 * Shape and dtype inference for every primitive op: the one place where kiln validates op
 * operands. The node factory calls it for traced ops and the eager path calls it before
 * computing, so both report identical ShapeErrors. Messages name the primitive and the
 * shapes; the tensor front end prefixes the public op name and the user's call site.
 */
import { ArgumentError, ShapeError } from '../util/errors';
import { isDType, isFloat, type DType } from './dtype';
import { ARITY, type Op, type OpArgs } from './ops';
import { dimAdd, dimDivExact, dimEq, dimProd, dimStr, dimSub, shapeEq, shapeStr, Sym, type Dim } from './sym';

/** The dtype and shape of a value. */
export interface TypeInfo {
  readonly dtype: DType;
  readonly shape: readonly Dim[];
}

/** What the caller states for ops whose result type is not implied by their sources. */
export interface Hint {
  /** Required for INPUT, CONST, TENSOR_CONST and CAST (the target); else checked if given. */
  readonly dtype?: DType;
  /** Required for INPUT and TENSOR_CONST; CONST is always a scalar `[]`. */
  readonly shape?: readonly Dim[];
}

type Rule<O extends Op> = (op: O, src: readonly TypeInfo[], arg: OpArgs[O], hint: Hint) => TypeInfo;

function fail(op: Op, msg: string, code = 'KILN_SHAPE_MISMATCH'): never {
  throw new ShapeError(code, `${op}: ${msg}`);
}

/** A malformed op arg (not an incompatible shape): an ArgumentError, as KILN_BAD_ARGUMENT is everywhere. */
function argFail(op: Op, msg: string): never {
  throw new ArgumentError('KILN_BAD_ARGUMENT', `${op}: ${msg}`);
}

function dtypeFail(op: Op, msg: string): never {
  return fail(op, msg, 'KILN_DTYPE');
}

/** A static dim must be a non-negative safe integer; a Sym is assumed non-negative. */
export function checkDim(op: Op, d: unknown): Dim {
  if (d instanceof Sym) return d;
  if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
    return fail(op, `invalid dim ${String(d)} (dims are non-negative integers)`, 'KILN_BAD_DIM');
  }
  return d;
}

function checkShape(op: Op, shape: unknown): readonly Dim[] {
  if (!Array.isArray(shape)) return fail(op, 'shape must be an array', 'KILN_BAD_DIM');
  return shape.map((d) => checkDim(op, d));
}

function needDType(op: Op, hint: Hint): DType {
  if (!isDType(hint.dtype)) return dtypeFail(op, `needs a result dtype, got ${String(hint.dtype)}`);
  return hint.dtype;
}

function checkAxes(op: Op, axes: readonly number[], rank: number): void {
  if (!Array.isArray(axes)) argFail(op, 'axes must be an array');
  axes.forEach((a, i) => {
    if (!Number.isInteger(a) || a < 0 || a >= rank) fail(op, `axis ${a} out of range for rank ${rank}`, 'KILN_DIM_OUT_OF_RANGE');
    if (i > 0 && a <= axes[i - 1]) argFail(op, `axes ${JSON.stringify(axes)} must be sorted and unique`);
  });
}

const unary =
  (kind: 'any' | 'numeric' | 'float'): Rule<Op> =>
  (op, [x]) => {
    if (kind === 'float' && !isFloat(x.dtype)) dtypeFail(op, `needs a float input, got ${x.dtype}`);
    if (kind === 'numeric' && x.dtype === 'bool') dtypeFail(op, 'is not defined for bool');
    return { dtype: x.dtype, shape: x.shape };
  };

const binary =
  (kind: 'any' | 'numeric' | 'float', result?: DType): Rule<Op> =>
  (op, [a, b]) => {
    if (!shapeEq(a.shape, b.shape)) fail(op, `shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} differ`);
    if (a.dtype !== b.dtype) dtypeFail(op, `dtypes ${a.dtype} and ${b.dtype} differ`);
    if (kind === 'float' && !isFloat(a.dtype)) dtypeFail(op, `needs float inputs, got ${a.dtype}`);
    if (kind === 'numeric' && a.dtype === 'bool') dtypeFail(op, 'is not defined for bool');
    return { dtype: result ?? a.dtype, shape: a.shape };
  };

const reduce =
  (kind: 'any' | 'numeric'): Rule<'REDUCE_SUM' | 'REDUCE_MAX'> =>
  (op, [x], axes) => {
    checkAxes(op, axes, x.shape.length);
    if (kind === 'numeric' && x.dtype === 'bool') dtypeFail(op, 'is not defined for bool');
    return { dtype: x.dtype, shape: x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) };
  };

const RULES: { readonly [O in Op]: Rule<O> } = {
  INPUT: (op, _src, arg, hint) => {
    if (!Number.isSafeInteger(arg) || arg < 0) argFail(op, `bad input index ${arg}`);
    return { dtype: needDType(op, hint), shape: checkShape(op, hint.shape) };
  },
  CONST: (op, _src, arg, hint) => {
    if (typeof arg !== 'number') argFail(op, `value must be a number, got ${typeof arg}`);
    if (hint.shape !== undefined && hint.shape.length !== 0) fail(op, 'is a scalar; broadcast it with RESHAPE and EXPAND');
    return { dtype: needDType(op, hint), shape: [] };
  },
  TENSOR_CONST: (op, _src, arg, hint) => {
    if (typeof arg !== 'string' || !/^[0-9a-f]{64}$/.test(arg)) argFail(op, 'arg must be a sha256 hex key');
    const shape = checkShape(op, hint.shape);
    if (!shape.every((d) => typeof d === 'number')) fail(op, 'constant shapes are static');
    return { dtype: needDType(op, hint), shape };
  },
  NEG: unary('numeric'),
  EXP: unary('float'),
  LOG: unary('float'),
  SQRT: unary('float'),
  RECIP: unary('float'),
  SIN: unary('float'),
  COS: unary('float'),
  TANH: unary('float'),
  ERF: unary('float'),
  ERFC: unary('float'),
  ABS: unary('numeric'),
  CAST: (op, [x], _arg, hint) => ({ dtype: needDType(op, hint), shape: x.shape }),
  ADD: binary('numeric'),
  SUB: binary('numeric'),
  MUL: binary('numeric'),
  DIV: binary('float'),
  POW: binary('numeric'),
  MAX: binary('any'),
  MIN: binary('any'),
  CMPEQ: binary('any', 'bool'),
  CMPNE: binary('any', 'bool'),
  CMPLT: binary('any', 'bool'),
  CMPLE: binary('any', 'bool'),
  WHERE: (op, [c, a, b]) => {
    if (c.dtype !== 'bool') dtypeFail(op, `condition must be bool, got ${c.dtype}`);
    if (a.dtype !== b.dtype) dtypeFail(op, `dtypes ${a.dtype} and ${b.dtype} differ`);
    if (!shapeEq(c.shape, a.shape) || !shapeEq(a.shape, b.shape)) {
      fail(op, `shapes ${shapeStr(c.shape)}, ${shapeStr(a.shape)} and ${shapeStr(b.shape)} differ`);
    }
    return { dtype: a.dtype, shape: a.shape };
  },
  REDUCE_SUM: reduce('numeric'),
  REDUCE_MAX: reduce('any'),
  RESHAPE: (op, [x], shape) => {
    const out = checkShape(op, shape);
    if (!dimEq(dimProd(out), dimProd(x.shape))) fail(op, `cannot reshape ${shapeStr(x.shape)} to ${shapeStr(out)}`);
    return { dtype: x.dtype, shape: out };
  },
  PERMUTE: (op, [x], perm) => {
    const n = x.shape.length;
    const ok = Array.isArray(perm) && perm.length === n && [...perm].sort((a, b) => a - b).every((p, i) => p === i);
    if (!ok) argFail(op, `${JSON.stringify(perm)} is not a permutation of ${n} dims`);
    return { dtype: x.dtype, shape: perm.map((p) => x.shape[p]) };
  },
  EXPAND: (op, [x], shape) => {
    const out = checkShape(op, shape);
    const ok = out.length === x.shape.length && out.every((d, i) => dimEq(d, x.shape[i]) || x.shape[i] === 1);
    if (!ok) fail(op, `cannot expand ${shapeStr(x.shape)} to ${shapeStr(out)}`);
    return { dtype: x.dtype, shape: out };
  },
  SHRINK: (op, [x], ranges) => {
    if (!Array.isArray(ranges) || ranges.length !== x.shape.length) argFail(op, `needs one range per dim of ${shapeStr(x.shape)}`);
    const shape = ranges.map((r, i) => {
      if (!Array.isArray(r) || r.length !== 3) return argFail(op, 'each range is [start, end, step]');
      const [start, end, step] = [checkDim(op, r[0]), checkDim(op, r[1]), r[2]];
      const size = x.shape[i];
      if (!Number.isSafeInteger(step) || step < 1) argFail(op, `step ${step} must be a positive integer`);
      if (typeof start === 'number' && typeof end === 'number') {
        if (start > end || (typeof size === 'number' && end > size)) {
          fail(op, `range [${start}, ${end}) out of bounds for dim ${i} of ${shapeStr(x.shape)}`, 'KILN_DIM_OUT_OF_RANGE');
        }
        return Math.ceil((end - start) / step);
      }
      if (step !== 1) argFail(op, `a symbolic range [${dimStr(start)}, ${dimStr(end)}) needs step 1`);
      return dimSub(end, start);
    });
    return { dtype: x.dtype, shape };
  },
  PAD: (op, [x], pads) => {
    if (!Array.isArray(pads) || pads.length !== x.shape.length) argFail(op, `needs one [before, after] per dim of ${shapeStr(x.shape)}`);
    const shape = pads.map((p, i) => {
      if (!Array.isArray(p) || p.length !== 2) return argFail(op, 'each pad is [before, after]');
      return dimAdd(dimAdd(checkDim(op, p[0]), x.shape[i]), checkDim(op, p[1]));
    });
    return { dtype: x.dtype, shape };
  },
  MATMUL: (op, [a, b]) => {
    const r = a.shape.length;
    if (r < 2 || b.shape.length !== r) fail(op, `needs operands of equal rank >= 2, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
    if (!shapeEq(a.shape.slice(0, -2), b.shape.slice(0, -2))) fail(op, `batch dims of ${shapeStr(a.shape)} and ${shapeStr(b.shape)} differ`);
    if (!dimEq(a.shape[r - 1], b.shape[r - 2])) fail(op, `inner dims of ${shapeStr(a.shape)} and ${shapeStr(b.shape)} differ`);
    if (a.dtype !== b.dtype) dtypeFail(op, `dtypes ${a.dtype} and ${b.dtype} differ`);
    if (a.dtype === 'bool') dtypeFail(op, 'is not defined for bool');
    return { dtype: a.dtype, shape: [...a.shape.slice(0, -1), b.shape[r - 1]] };
  },
  GATHER: (op, [table, ids]) => {
    if (table.shape.length !== 2) fail(op, `table must be 2-D, got ${shapeStr(table.shape)}`);
    if (ids.dtype !== 'int32') dtypeFail(op, `indices must be int32, got ${ids.dtype}`);
    return { dtype: table.dtype, shape: [...ids.shape, table.shape[1]] };
  },
};

/**
 * Result dtype and shape of `op` applied to sources of the given types, or a ShapeError
 * (codes KILN_SHAPE_MISMATCH, KILN_DTYPE, KILN_DIM_OUT_OF_RANGE, KILN_BAD_DIM) saying why
 * the op is invalid; a malformed arg or source count is an ArgumentError KILN_BAD_ARGUMENT.
 */
export function inferOp<O extends Op>(op: O, src: readonly TypeInfo[], arg: OpArgs[O], hint: Hint = {}): TypeInfo {
  if (src.length !== ARITY[op]) argFail(op, `takes ${ARITY[op]} sources, got ${src.length}`);
  const rule = RULES[op] as Rule<O>;
  const out = rule(op, src, arg, hint);
  if (hint.dtype !== undefined && hint.dtype !== out.dtype) dtypeFail(op, `result is ${out.dtype}, not ${hint.dtype}`);
  return out;
}

/**
 * NumPy broadcasting of several shapes: align right, and in each position all dims must be
 * equal or 1. A symbolic dim only matches an equal dim or 1 (it cannot be proven equal to
 * anything else). `op` names the public op in the error.
 */
export function broadcastShapes(op: string, ...shapes: (readonly Dim[])[]): Dim[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const e = s[s.length - rank + i] ?? 1;
      if (e === 1 || dimEq(e, d)) continue;
      if (d !== 1) {
        throw new ShapeError('KILN_SHAPE_MISMATCH', `${op}: cannot broadcast shapes ${shapes.map(shapeStr).join(' and ')} (dim ${i - rank}: ${dimStr(d)} vs ${dimStr(e)})`);
      }
      d = e;
    }
    out.push(d);
  }
  return out;
}

/** Divide dims exactly, reporting failure as a ShapeError of `op`. */
export function divDim(op: string, a: Dim, b: Dim): Dim {
  try {
    return dimDivExact(a, b);
  } catch {
    throw new ShapeError('KILN_SHAPE_MISMATCH', `${op}: ${dimStr(a)} is not divisible by ${dimStr(b)}`);
  }
}
