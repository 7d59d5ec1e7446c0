/**
 * kiln's op functions: the module-level forms of the Tensor methods (kiln.add(a, b),
 * kiln.exp(x), ...) and the ops that only exist as functions (where, cat, embedding,
 * layerNorm, rmsNorm, scaledDotProductAttention). Each labels its errors with its name.
 */
import { ArgumentError } from '../util/errors';
import type { Dim, DType } from '../ir';
import * as nn from './nn';
import { api, binaryFn, implOf, operand, unaryFn, wrap, type Scalar, type Tensor } from './tensor';

export const add = binaryFn('add');
export const sub = binaryFn('sub');
export const mul = binaryFn('mul');
export const div = binaryFn('div');
export const pow = binaryFn('pow');
export const maximum = binaryFn('maximum');
export const minimum = binaryFn('minimum');
export const eq = binaryFn('eq');
export const ne = binaryFn('ne');
export const lt = binaryFn('lt');
export const le = binaryFn('le');
export const gt = binaryFn('gt');
export const ge = binaryFn('ge');

export const neg = unaryFn('neg', 'NEG');
export const abs = unaryFn('abs', 'ABS');
export const exp = unaryFn('exp', 'EXP');
export const log = unaryFn('log', 'LOG');
export const sqrt = unaryFn('sqrt', 'SQRT');
export const sin = unaryFn('sin', 'SIN');
export const cos = unaryFn('cos', 'COS');
export const tanh = unaryFn('tanh', 'TANH');
export const erf = unaryFn('erf', 'ERF');
export const reciprocal = unaryFn('reciprocal', 'RECIP');

const tensorOf = (x: unknown, name: string): Tensor => {
  implOf(x, `${name}: input`); // type check with a clear error
  return x as Tensor;
};

export const rsqrt = (x: Tensor): Tensor => api('rsqrt', () => tensorOf(x, 'rsqrt').rsqrt());
export const sigmoid = (x: Tensor): Tensor => api('sigmoid', () => tensorOf(x, 'sigmoid').sigmoid());
export const relu = (x: Tensor): Tensor => api('relu', () => tensorOf(x, 'relu').relu());
export const silu = (x: Tensor): Tensor => api('silu', () => tensorOf(x, 'silu').silu());
export const gelu = (x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor => api('gelu', () => tensorOf(x, 'gelu').gelu(approximate));
export const softmax = (x: Tensor, dim = -1): Tensor => api('softmax', () => tensorOf(x, 'softmax').softmax(dim));
export const logSoftmax = (x: Tensor, dim = -1): Tensor => api('logSoftmax', () => tensorOf(x, 'logSoftmax').logSoftmax(dim));
export const matmul = (a: Tensor, b: Tensor): Tensor => api('matmul', () => tensorOf(a, 'matmul').matmul(b));
export const sum = (x: Tensor, dim?: number | readonly number[], keepdim = false): Tensor => api('sum', () => tensorOf(x, 'sum').sum(dim, keepdim));
export const mean = (x: Tensor, dim?: number | readonly number[], keepdim = false): Tensor => api('mean', () => tensorOf(x, 'mean').mean(dim, keepdim));
export const max = (x: Tensor, dim?: number | readonly number[], keepdim = false): Tensor => api('max', () => tensorOf(x, 'max').max(dim, keepdim));
export const min = (x: Tensor, dim?: number | readonly number[], keepdim = false): Tensor => api('min', () => tensorOf(x, 'min').min(dim, keepdim));
export const reshape = (x: Tensor, shape: readonly Dim[]): Tensor => api('reshape', () => tensorOf(x, 'reshape').reshape(shape));
export const permute = (x: Tensor, dims: readonly number[]): Tensor => api('permute', () => tensorOf(x, 'permute').permute(dims));
export const transpose = (x: Tensor, d0: number, d1: number): Tensor => api('transpose', () => tensorOf(x, 'transpose').transpose(d0, d1));
export const expand = (x: Tensor, shape: readonly Dim[]): Tensor => api('expand', () => tensorOf(x, 'expand').expand(shape));
export const unsqueeze = (x: Tensor, dim: number): Tensor => api('unsqueeze', () => tensorOf(x, 'unsqueeze').unsqueeze(dim));
export const squeeze = (x: Tensor, dim?: number | readonly number[]): Tensor => api('squeeze', () => tensorOf(x, 'squeeze').squeeze(dim));
export const flatten = (x: Tensor, start = 0, end = -1): Tensor => api('flatten', () => tensorOf(x, 'flatten').flatten(start, end));
export const slice = (x: Tensor, dim: number, start = 0, end?: number, step = 1): Tensor => api('slice', () => tensorOf(x, 'slice').slice(dim, start, end, step));
export const to = (x: Tensor, dtype: DType): Tensor => api('to', () => tensorOf(x, 'to').to(dtype));

/** Elementwise choice: `a` where `cond` (bool) is true, else `b`; broadcasting, with promotion of a and b. */
export function where(cond: Tensor, a: Tensor | Scalar, b: Tensor | Scalar): Tensor {
  return api('where', () => wrap(nn.where(implOf(cond, 'condition'), operand(a), operand(b))));
}

/** Concatenate tensors along `dim` (default 0); dtypes promote. */
export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  return api('cat', () => {
    if (!Array.isArray(tensors)) throw new ArgumentError('KILN_BAD_ARGUMENT', 'tensors must be an array of Tensors');
    return wrap(nn.cat(tensors.map((t, i) => implOf(t, `tensors[${i}]`)), dim));
  });
}

/** Look up rows of `table` ([rows, dim]) by int32 `ids`: result [...ids.shape, dim]. */
export function embedding(ids: Tensor, table: Tensor): Tensor {
  return api('embedding', () => wrap(nn.embedding(implOf(ids, 'ids'), implOf(table, 'table'))));
}

const optional = (t: Tensor | null | undefined, what: string) => (t === undefined || t === null ? undefined : implOf(t, what));

/** Layer normalization over the last dim, with optional weight and bias of that size. */
export function layerNorm(x: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return api('layerNorm', () => wrap(nn.layerNorm(implOf(x, 'input'), optional(weight, 'weight'), optional(bias, 'bias'), eps)));
}

/** RMS normalization over the last dim, with an optional weight of that size. */
export function rmsNorm(x: Tensor, weight?: Tensor | null, eps = 1e-6): Tensor {
  return api('rmsNorm', () => wrap(nn.rmsNorm(implOf(x, 'input'), optional(weight, 'weight'), eps)));
}

/**
 * Attention on [..., seq, headDim] tensors: softmax(q·kᵀ·scale, causal-masked if asked)·v.
 * float16/bfloat16 inputs are computed in float32, and the probabilities are rounded to the
 * inputs' dtype before they weight v, as PyTorch's attention does.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: nn.AttentionOptions = {}): Tensor {
  return api('scaledDotProductAttention', () => wrap(nn.scaledDotProductAttention(implOf(q, 'q'), implOf(k, 'k'), implOf(v, 'v'), opts)));
}
