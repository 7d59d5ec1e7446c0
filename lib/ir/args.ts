/**
 * Canonical JSON form of each op's `arg`, and strict decoding back. The encoded form feeds
 * node interning, structural keys and serialization, so one value has exactly one form:
 * dims are numbers or canonical Sym text, and CONST spells NaN, ±inf and -0 as strings.
 */
import { FormatError, KilnError } from '../util/errors';
import type { Arg, Op, OpArgs, PadRange, ShrinkRange } from './ops';
import { dimToJSON, parseDim, type Dim } from './sym';

/** JSON value of an arg. */
export type ArgJSON = null | number | string | readonly ArgJSON[];

function encodeScalar(v: number): number | string {
  if (Number.isNaN(v)) return 'nan';
  if (v === Infinity) return 'inf';
  if (v === -Infinity) return '-inf';
  if (Object.is(v, -0)) return '-0';
  return v;
}

function decodeScalar(j: unknown): number {
  if (typeof j === 'number' && Number.isFinite(j) && !Object.is(j, -0)) return j;
  const special: Record<string, number> = { nan: NaN, inf: Infinity, '-inf': -Infinity, '-0': -0 };
  if (typeof j === 'string' && j in special) return special[j];
  throw new FormatError('KILN_BAD_GRAPH', `CONST value ${JSON.stringify(j)} is not a number`);
}

/** Canonical JSON of `arg` for `op`. */
export function encodeArg(op: Op, arg: Arg): ArgJSON {
  switch (op) {
    case 'CONST':
      return encodeScalar(arg as number);
    case 'RESHAPE':
    case 'EXPAND':
      return (arg as readonly Dim[]).map(dimToJSON);
    case 'SHRINK':
      return (arg as readonly ShrinkRange[]).map(([s, e, st]) => [dimToJSON(s), dimToJSON(e), st]);
    case 'PAD':
      return (arg as readonly PadRange[]).map(([b, a]) => [dimToJSON(b), dimToJSON(a)]);
    case 'INPUT':
    case 'TENSOR_CONST':
    case 'REDUCE_SUM':
    case 'REDUCE_MAX':
    case 'PERMUTE':
      return arg as number | string | readonly number[];
    default:
      return null; // every other op has no arg
  }
}

function bad(op: Op, j: unknown, want: string): never {
  throw new FormatError('KILN_BAD_GRAPH', `${op}: arg ${JSON.stringify(j)} is not ${want}`);
}

function intList(op: Op, j: unknown): readonly number[] {
  if (!Array.isArray(j) || !j.every((x) => Number.isSafeInteger(x))) return bad(op, j, 'a list of integers');
  return Object.freeze([...(j as number[])]);
}

function dim(op: Op, j: unknown): Dim {
  if (typeof j !== 'number' && typeof j !== 'string') return bad(op, j, 'a dim');
  try {
    return parseDim(j);
  } catch (e) {
    if (e instanceof KilnError) return bad(op, j, 'a dim');
    throw e;
  }
}

function tuples(op: Op, j: unknown, n: number): readonly unknown[][] {
  if (!Array.isArray(j) || !j.every((t) => Array.isArray(t) && t.length === n)) return bad(op, j, `a list of ${n}-tuples`);
  return j as unknown[][];
}

/** Decode and type-check an arg read from JSON; FormatError if malformed. */
export function decodeArg<O extends Op>(op: O, j: unknown): OpArgs[O] {
  return decodeAny(op, j) as OpArgs[O];
}

function decodeAny(op: Op, j: unknown): Arg {
  switch (op) {
    case 'CONST':
      return decodeScalar(j);
    case 'INPUT':
      return Number.isSafeInteger(j) && (j as number) >= 0 ? (j as number) : bad(op, j, 'an input index');
    case 'TENSOR_CONST':
      return typeof j === 'string' && /^[0-9a-f]{64}$/.test(j) ? j : bad(op, j, 'a sha256 hex key');
    case 'REDUCE_SUM':
    case 'REDUCE_MAX':
    case 'PERMUTE':
      return intList(op, j);
    case 'RESHAPE':
    case 'EXPAND':
      if (!Array.isArray(j)) return bad(op, j, 'a shape');
      return Object.freeze(j.map((d) => dim(op, d)));
    case 'SHRINK':
      return Object.freeze(
        tuples(op, j, 3).map(([s, e, st]) => {
          if (!Number.isSafeInteger(st)) bad(op, j, 'a list of [start, end, step]');
          return Object.freeze([dim(op, s), dim(op, e), st as number] as const);
        }),
      );
    case 'PAD':
      return Object.freeze(tuples(op, j, 2).map(([b, a]) => Object.freeze([dim(op, b), dim(op, a)] as const)));
    default:
      return j === null ? null : bad(op, j, 'null');
  }
}
