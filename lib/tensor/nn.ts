/**
 * Composite ops, each written once as primitives so that eager runs and traces share one
 * decomposition (docs/IR.md lists them). Half-precision inputs are computed in float32
 * and rounded once at the end, as PyTorch's kernels do.
 */
import { ArgumentError, ShapeError } from '../util/errors';
import {
  dimAdd,
  dimEq,
  dimMul,
  dimSub,
  broadcastShapes,
  isFloat,
  promoteTypes,
  resultType,
  shapeStr,
  type Dim,
  type DType,
  type PadRange,
} from '../ir';
import { apply, lift, type Impl } from './impl';
import { badArg, binary, cast, checkScalarFits, expandTo, full, matmul, mean, normDim, promotionOf, reduceMax, rsqrt, show, sum, toFloat, transpose, upcast, type Operand } from './ops';

function bad(code: string, msg: string): never {
  throw new ShapeError(code, msg);
}

/** Run `f` on x in float32 when x is half precision; the result returns to x's float dtype. */
function inFloat32(x: Impl, f: (x: Impl) => Impl): Impl {
  const fx = toFloat(x);
  return cast(f(upcast(fx)), fx.dtype);
}

const add = (a: Operand, b: Operand): Impl => binary('add', a, b);
const mul = (a: Operand, b: Operand): Impl => binary('mul', a, b);
const sub = (a: Operand, b: Operand): Impl => binary('sub', a, b);
const div = (a: Operand, b: Operand): Impl => binary('div', a, b);
const exp = (x: Impl): Impl => apply('EXP', [x], null);

/** 1 / (1 + e^-x) */
export function sigmoid(x: Impl): Impl {
  return inFloat32(x, (f) => apply('RECIP', [add(exp(apply('NEG', [f], null)), 1)], null));
}

/** max(x, 0) */
export function relu(x: Impl): Impl {
  return binary('maximum', x, x.dtype === 'bool' ? false : 0);
}

/** x · sigmoid(x) */
export function silu(x: Impl): Impl {
  return inFloat32(x, (f) => mul(f, apply('RECIP', [add(exp(apply('NEG', [f], null)), 1)], null)));
}

/** GELU: exact (via erfc) or the tanh approximation. */
export function gelu(x: Impl, approximate: 'none' | 'tanh' = 'none'): Impl {
  if (approximate !== 'none' && approximate !== 'tanh') badArg(`gelu: approximate must be 'none' or 'tanh', got ${String(approximate)}`);
  return inFloat32(x, (f) => {
    // 0.5·x·(1 + erf(x/√2)) = 0.5·x·erfc(−x/√2): the same function without the cancellation
    // of 1 + erf(·) for x below about −4, where it would leave tail values ~2 half ulps off.
    if (approximate === 'none') return mul(mul(f, 0.5), apply('ERFC', [mul(f, -Math.SQRT1_2)], null));
    // 0.5·x·(1 + tanh(u)) = x·sigmoid(2u): the same function without the cancellation of
    // 1 + tanh(u) for very negative u.
    const twoU = mul(add(f, mul(mul(mul(f, f), f), 0.044715)), 2 * Math.sqrt(2 / Math.PI));
    return mul(f, apply('RECIP', [add(exp(apply('NEG', [twoU], null)), 1)], null));
  });
}

/** softmax along `dim`: e^(x - max) / Σ e^(x - max). */
export function softmax(x: Impl, dim: number): Impl {
  const d = normDim(dim, x.shape);
  return inFloat32(x, (f) => {
    const e = exp(sub(f, reduceMax(f, d)));
    return div(e, sum(e, d, true));
  });
}

/** log-softmax along `dim`: (x - max) - log Σ e^(x - max). */
export function logSoftmax(x: Impl, dim: number): Impl {
  const d = normDim(dim, x.shape);
  return inFloat32(x, (f) => {
    const shifted = sub(f, reduceMax(f, d));
    return sub(shifted, apply('LOG', [sum(exp(shifted), d, true)], null));
  });
}

function checkNormParam(name: string, x: Impl, p: Impl | undefined, what: string): void {
  if (p === undefined) return;
  const last = x.shape[x.shape.length - 1];
  if (p.shape.length !== 1 || !dimEq(p.shape[0], last)) {
    bad('KILN_SHAPE_MISMATCH', `${name}: ${what} must have shape [${String(last)}] to match input ${shapeStr(x.shape)}, got ${shapeStr(p.shape)}`);
  }
}

function normDType(name: string, ...xs: (Impl | undefined)[]): DType {
  const dts = xs.filter((x): x is Impl => x !== undefined).map((x) => x.dtype);
  const dt = dts.reduce(promoteTypes);
  if (!isFloat(dt)) bad('KILN_DTYPE', `${name}: needs float tensors, got ${dts.join(', ')}`);
  return dt;
}

/** y · weight + bias; binary ops lift concrete weights into a trace. */
function affine(y: Impl, weight: Impl | undefined, bias: Impl | undefined): Impl {
  let out = y;
  if (weight) out = mul(out, cast(weight, y.dtype));
  if (bias) out = add(out, cast(bias, y.dtype));
  return out;
}

/** Layer normalization over the last dim: (x - mean) / √(var + eps) · weight + bias. */
export function layerNorm(x: Impl, weight?: Impl, bias?: Impl, eps = 1e-5): Impl {
  if (x.shape.length === 0) bad('KILN_SHAPE_MISMATCH', 'layerNorm: input needs at least one dim');
  checkNormParam('layerNorm', x, weight, 'weight');
  checkNormParam('layerNorm', x, bias, 'bias');
  const dt = normDType('layerNorm', x, weight, bias);
  const f = upcast(cast(x, dt));
  const centered = sub(f, mean(f, -1, true));
  const variance = mean(mul(centered, centered), -1, true);
  return cast(affine(mul(centered, rsqrt(add(variance, eps))), weight, bias), dt);
}

/** RMS normalization over the last dim: x / √(mean(x²) + eps) · weight. */
export function rmsNorm(x: Impl, weight?: Impl, eps = 1e-6): Impl {
  if (x.shape.length === 0) bad('KILN_SHAPE_MISMATCH', 'rmsNorm: input needs at least one dim');
  checkNormParam('rmsNorm', x, weight, 'weight');
  const dt = normDType('rmsNorm', x, weight);
  const f = upcast(cast(x, dt));
  return cast(affine(mul(f, rsqrt(add(mean(mul(f, f), -1, true), eps))), weight, undefined), dt);
}

/** where(cond, a, b) with promotion of a and b and broadcasting of all three. */
export function where(cond: Impl, a: Operand, b: Operand): Impl {
  if (cond.dtype !== 'bool') bad('KILN_DTYPE', `where: condition must be bool, got ${cond.dtype}`);
  for (const v of [a, b]) {
    if (typeof v !== 'object' && typeof v !== 'number' && typeof v !== 'boolean') badArg(`where: values must be tensors or numbers, got ${typeof v}`);
  }
  const lifted = lift([cond, ...[a, b].filter((v): v is Impl => typeof v === 'object')]);
  cond = lifted[0];
  if (typeof a === 'object') a = lifted[1];
  if (typeof b === 'object') b = lifted[lifted.length - 1];
  const dtype = resultType([a, b].map(promotionOf));
  for (const v of [a, b]) checkScalarFits('where', v, dtype);
  const shape = broadcastShapes('where', cond.shape, ...[a, b].filter((v): v is Impl => typeof v === 'object').map((v) => v.shape));
  const [x, y] = [a, b].map((v) => (typeof v === 'object' ? expandTo(cast(v, dtype), shape) : full(v, dtype, shape, cond)));
  return apply('WHERE', [expandTo(cond, shape), x, y], null);
}

/** Rows of `table` ([V, D]) picked by int32 `ids`: result [...ids.shape, D]. */
export function embedding(ids: Impl, table: Impl): Impl {
  if (ids.dtype !== 'int32') bad('KILN_DTYPE', `embedding: ids must be int32, got ${ids.dtype}`);
  if (table.shape.length !== 2) bad('KILN_SHAPE_MISMATCH', `embedding: table must be 2-D [rows, dim], got ${shapeStr(table.shape)}`);
  const [t, i] = lift([table, ids]);
  return apply('GATHER', [t, i], null);
}

/** A bool tensor of `shape` that is true inside and false in the padding. */
function padMask(shape: readonly Dim[], pads: readonly PadRange[], like: Impl): Impl {
  return apply('PAD', [full(true, 'bool', shape, like)], pads);
}

/**
 * Concatenate along `dim`: each piece is zero-padded to the full size and a chain of
 * WHERE picks it inside its own range (exact for every dtype, including -0 and NaN).
 */
export function cat(xs: readonly Impl[], dim = 0): Impl {
  if (xs.length === 0) badArg('cat: needs at least one tensor');
  const rank = xs[0].shape.length;
  if (rank === 0) bad('KILN_SHAPE_MISMATCH', 'cat: zero-dim tensors cannot be concatenated');
  const d = normDim(dim, xs[0].shape);
  for (const x of xs) {
    const same = x.shape.length === rank && x.shape.every((s, i) => i === d || dimEq(s, xs[0].shape[i]));
    if (!same) bad('KILN_SHAPE_MISMATCH', `cat: shapes ${xs.map((t) => shapeStr(t.shape)).join(', ')} differ outside dim ${d}`);
  }
  const dtype = xs.map((x) => x.dtype).reduce(promoteTypes);
  const parts = lift(xs).map((x) => cast(x, dtype));
  if (parts.length === 1) return parts[0];
  const total = parts.reduce<Dim>((acc, x) => dimAdd(acc, x.shape[d]), 0);
  let offset: Dim = 0;
  const padded = parts.map((x) => {
    const after = dimSub(dimSub(total, offset), x.shape[d]);
    const pads: PadRange[] = x.shape.map((_, i) => (i === d ? [offset, after] : [0, 0]));
    offset = dimAdd(offset, x.shape[d]);
    return { value: apply('PAD', [x], pads), mask: padMask(x.shape, pads, x) };
  });
  let acc = padded[padded.length - 1].value;
  for (let i = padded.length - 2; i >= 0; i--) acc = apply('WHERE', [padded[i].mask, padded[i].value, acc], null);
  return acc;
}

/**
 * Causal "masked out" matrix [lq, lk]: true where key j comes after query i (j > i),
 * built from primitives alone, so it works for symbolic lengths: a row pattern v of
 * length 2n (v[d] = 1 for 0 < d < n) repeated with row stride 2n-1 gives v[(j - i) mod 2n].
 */
function causalMask(lq: Dim, lk: Dim, like: Impl): Impl {
  const n = lk;
  const two = dimMul(n, 2);
  const ones = full(true, 'bool', [dimSub(n, 1)], like);
  const v = apply('PAD', [ones], [[1, n]]);
  const tiled = apply('EXPAND', [apply('RESHAPE', [v], [1, two])], [n, two]);
  const flat = apply('RESHAPE', [tiled], [dimMul(n, two)]);
  const stride = dimSub(two, 1);
  const cut = apply('SHRINK', [flat], [[0, dimMul(n, stride), 1]]);
  let mask = apply('SHRINK', [apply('RESHAPE', [cut], [n, stride])], [[0, n, 1], [0, n, 1]]);
  if (dimEq(lq, lk)) return mask;
  if (typeof lq !== 'number' || typeof lk !== 'number') bad('KILN_SHAPE_MISMATCH', `scaledDotProductAttention: causal lengths ${String(lq)} and ${String(lk)} must be equal or static`);
  if (lq < lk) mask = apply('SHRINK', [mask], [[0, lq, 1], [0, lk, 1]]);
  else mask = apply('PAD', [mask], [[0, lq - lk], [0, 0]]); // rows past lk see every key
  return mask;
}

/** Options of scaledDotProductAttention. */
export interface AttentionOptions {
  /** Mask out keys after each query (key j > query i). Default false. */
  causal?: boolean;
  /** Multiplies q·kᵀ before the softmax: a finite number. Default 1/sqrt(headDim). */
  scale?: number;
}

const ATTENTION_OPTIONS = ['causal', 'scale'] as const;

/**
 * The options checked: an object with only known keys (a typo such as `casual` would
 * otherwise give silently non-causal attention), causal a boolean, scale a finite number.
 */
function attentionOptions(opts: unknown): AttentionOptions {
  const badOption = (msg: string): never => {
    throw new ArgumentError('KILN_BAD_OPTION', `scaledDotProductAttention: ${msg}`);
  };
  const valid = ATTENTION_OPTIONS.map((k) => `'${k}'`).join(', ');
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object' || Array.isArray(opts)) badOption(`options must be an object with ${valid}, got ${show(opts)}`);
  const o = opts as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(ATTENTION_OPTIONS as readonly string[]).includes(k)) badOption(`unknown option '${k}'; valid options are ${valid}`);
  }
  if (o.causal !== undefined && typeof o.causal !== 'boolean') badOption(`causal must be true or false; got ${show(o.causal)}`);
  if (o.scale !== undefined && !(typeof o.scale === 'number' && Number.isFinite(o.scale))) badOption(`scale must be a finite number; got ${show(o.scale)}`);
  return o as AttentionOptions;
}

/** softmax(q·kᵀ·scale [+ causal mask]) · v on [..., seq, headDim] operands. */
export function scaledDotProductAttention(q: Impl, k: Impl, v: Impl, options: AttentionOptions = {}): Impl {
  const opts = attentionOptions(options);
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.shape.length < 2) bad('KILN_SHAPE_MISMATCH', `scaledDotProductAttention: ${name} must be [..., seq, headDim], got ${shapeStr(t.shape)}`);
  }
  const dt = normDType('scaledDotProductAttention', q, k, v);
  const [qs, ks, vs] = [q.shape, k.shape, v.shape];
  if (!dimEq(qs[qs.length - 1], ks[ks.length - 1])) {
    bad('KILN_SHAPE_MISMATCH', `scaledDotProductAttention: q ${shapeStr(qs)} and k ${shapeStr(ks)} have different head dims`);
  }
  if (!dimEq(ks[ks.length - 2], vs[vs.length - 2])) {
    bad('KILN_SHAPE_MISMATCH', `scaledDotProductAttention: k ${shapeStr(ks)} and v ${shapeStr(vs)} have different sequence lengths`);
  }
  const headDim = q.shape[q.shape.length - 1];
  let scale = opts.scale;
  if (scale === undefined) {
    if (typeof headDim !== 'number') badArg('scaledDotProductAttention: a dynamic head dim needs an explicit scale');
    scale = 1 / Math.sqrt(headDim);
  }
  const [fq, fk, fv] = lift([q, k, v]).map((t) => upcast(cast(t, dt)));
  let scores = mul(matmul(fq, transpose(fk, -2, -1)), scale);
  if (opts.causal) {
    const [lq, lk] = scores.shape.slice(-2);
    const mask = expandTo(causalMask(lq, lk, scores), scores.shape);
    scores = apply('WHERE', [mask, full(-Infinity, scores.dtype, scores.shape, scores), scores], null);
  }
  // The probabilities are rounded to the inputs' dtype before they weight v, as PyTorch's
  // attention does for 16-bit inputs: the product then runs on tensor cores, and the softmax
  // stores half the bytes.
  const probs = upcast(cast(softmax(scores, -1), dt));
  return cast(matmul(probs, fv), dt);
}
