/**
 * End-to-end numeric tests of the C++ renderer: many programs compiled into ONE shared
 * object with the real compiler (compiles are slow on small machines), each run against
 * the reference interpreter: float32 within 1e-5 relative, float16/bfloat16 within one
 * ulp, int32 and bool exact. Dynamic programs run at several sizes from one compile.
 */
import { buildAll, checkAll, type Built, type NumCase } from './codegen-harness';
import * as F from '../lib/tensor/functional';
import { tensor } from '../lib/tensor/tensor';
import type { Tensor } from '../lib/tensor/tensor';
import type { DType } from '../lib/ir';
import type { Rng } from './helpers/ref';
import { renderCpp } from '../lib/codegen';
import { lower } from '../lib/passes';
import { trace } from '../lib/tensor/trace';

type T = Tensor;
const spec = (dtype: DType, ...shape: number[]) => ({ shape, dtype });
const f32 = (...shape: number[]) => spec('float32', ...shape);
const f16 = (...shape: number[]) => spec('float16', ...shape);
const bf16 = (...shape: number[]) => spec('bfloat16', ...shape);
const i32 = (...shape: number[]) => spec('int32', ...shape);
const bool = (...shape: number[]) => spec('bool', ...shape);

/** Normal values with NaN, ±inf, ±0 and large magnitudes sprinkled in. */
const special = (_i: number, dtype: DType, n: number, rng: Rng): number[] =>
  rng.array(n, (r) => {
    const u = r.next();
    if (dtype === 'int32') return u < 0.2 ? r.int(-2147483648, 2147483647) : r.int(-9, 9);
    if (dtype === 'bool') return u < 0.5 ? 1 : 0;
    if (u < 0.04) return NaN;
    if (u < 0.08) return u < 0.06 ? Infinity : -Infinity;
    if (u < 0.12) return u < 0.1 ? 0 : -0;
    if (u < 0.16) return r.normal() * 1e4;
    return r.normal() * 3;
  });

const elementwise: NumCase[] = [
  ...(['exp', 'tanh', 'sin', 'cos', 'erf', 'abs', 'neg', 'sigmoid', 'relu', 'silu'] as const).map((op) => ({
    name: `unary-${op}`,
    fn: (x: T) => (x[op] as () => T).call(x),
    specs: [f32(257)],
    gen: special,
  })),
  { name: 'log-sqrt-recip', fn: (x: T) => [x.log(), x.sqrt(), x.reciprocal(), x.rsqrt()], specs: [f32(300)], gen: special },
  { name: 'binary', fn: (x: T, y: T) => [x.add(y), x.sub(y), x.mul(y), x.div(y), x.maximum(y), x.minimum(y)], specs: [f32(129), f32(129)], gen: special },
  {
    name: 'exp-erf-tanh-sweep', // kiln's vectorized exp, erf and tanh over their whole ranges
    fn: (x: T, y: T) => [x.exp(), y.erf(), y.tanh(), y.mul(0.01).exp()],
    specs: [f32(4000), f32(4000)],
    gen: (i, _d, n, r) => r.array(n, (g) => (i === 0 ? g.uniform(-110, 90) : g.uniform(-12, 12))),
  },
  { name: 'pow', fn: (x: T, y: T) => x.pow(y), specs: [f32(200), f32(200)], gen: special },
  { name: 'compare-where', fn: (x: T, y: T) => [x.lt(y), x.le(y), x.eq(y), x.ne(y), F.where(x.gt(y), x, y.mul(2))], specs: [f32(150), f32(150)], gen: special },
  { name: 'int32', fn: (x: T, y: T) => [x.add(y), x.sub(y), x.mul(y), x.neg(), x.abs(), x.maximum(y), x.minimum(y), x.lt(y)], specs: [i32(300), i32(300)], gen: special },
  { name: 'int-pow', fn: (x: T) => x.pow(3), specs: [i32(64)] },
  { name: 'casts-float', fn: (x: T) => [x.to('int32'), x.to('bool'), x.to('float16'), x.to('bfloat16')], specs: [f32(300)], gen: special },
  { name: 'casts-int', fn: (x: T) => [x.to('float32'), x.to('float16'), x.to('bfloat16'), x.to('bool')], specs: [i32(300)], gen: special },
  { name: 'casts-bool', fn: (x: T) => [x.to('float32'), x.to('int32'), x.to('float16'), x.add(x), F.where(x, 1.5, -2)], specs: [bool(64)] },
  { name: 'f16-chain', fn: (x: T, y: T) => x.add(y).mul(x).exp().sub(y).div(y.abs().add(1)), specs: [f16(500), f16(500)] },
  { name: 'bf16-chain', fn: (x: T, y: T) => x.mul(y).add(1).tanh().mul(3).sub(x), specs: [bf16(500), bf16(500)] },
  { name: 'f16-gelu-softmax', fn: (x: T) => [x.gelu(), x.gelu('tanh'), x.softmax(-1)], specs: [f16(6, 40)] },
  { name: 'chain-10', fn: (x: T, y: T) => x.add(y).mul(2).exp().sub(1).abs().sqrt().neg().tanh().add(x).mul(y), specs: [f32(5000), f32(5000)] },
  { name: 'scalar', fn: (x: T) => x.sum().mul(2), specs: [f32(10)] },
];

const reductions: NumCase[] = [
  { name: 'sum-axis0', fn: (x: T) => x.sum(0), specs: [f32(37, 29)] },
  { name: 'sum-axes02', fn: (x: T) => x.sum([0, 2], true), specs: [f32(3, 4, 5)] },
  { name: 'sum-all', fn: (x: T) => x.sum(), specs: [f32(3, 70, 11)], atol: 1e-5 },
  { name: 'max-mid', fn: (x: T) => [x.max(1), x.min(1)], specs: [f32(4, 9, 6)] },
  { name: 'max-nan', fn: (x: T) => x.max(-1), specs: [f32(16, 8)], gen: special },
  { name: 'mean', fn: (x: T) => [x.mean(-1), x.mean([0, 1])], specs: [f32(6, 50)] },
  { name: 'int-sum-max', fn: (x: T) => [x.sum(-1), x.max(-1)], specs: [i32(5, 40)], gen: special },
  { name: 'bool-any', fn: (x: T) => x.max(-1), specs: [bool(5, 7)] },
  { name: 'softmax-dim0', fn: (x: T) => x.softmax(0), specs: [f32(19, 13)] },
  { name: 'logSoftmax', fn: (x: T) => x.logSoftmax(-1), specs: [f32(9, 77)] },
  { name: 'layerNorm', fn: (x: T, w: T, b: T) => F.layerNorm(x, w, b), specs: [f32(5, 64), f32(64), f32(64)], atol: 1e-5 },
  { name: 'layerNorm-plain', fn: (x: T) => F.layerNorm(x), specs: [f32(3, 4, 48)], atol: 1e-5 },
  { name: 'rmsNorm', fn: (x: T, w: T) => F.rmsNorm(x, w), specs: [f32(7, 96), f32(96)] },
  { name: 'bf16-layerNorm', fn: (x: T, w: T) => F.layerNorm(x, w), specs: [bf16(4, 64), bf16(64)] },
  { name: 'f16-sum', fn: (x: T) => x.sum(-1), specs: [f16(8, 32)] },
  { name: 'reduce-then-elementwise-elsewhere', fn: (x: T) => x.sub(x.mean(0, true)).exp(), specs: [f32(11, 17)] },
  // a row made of padded pieces: its loop runs in segments, each piece's other loads are 0 there
  { name: 'cat-softmax-segments', fn: (x: T, y: T) => F.cat([x.exp(), y], 1).softmax(-1), specs: [f32(5, 3), f32(5, 6)], gen: special },
];

const views: NumCase[] = [
  { name: 'permute-add', fn: (x: T, y: T) => x.permute(2, 0, 1).add(y), specs: [f32(3, 4, 5), f32(5, 3, 4)] },
  { name: 'transpose-out', fn: (x: T) => x.transpose(0, 1), specs: [f32(33, 17)] },
  { name: 'expand', fn: (x: T, y: T) => x.add(y).mul(y.exp()), specs: [f32(7, 1, 5), f32(1, 6, 1)] },
  { name: 'slice-step', fn: (x: T) => x.slice(1, 1, 9, 3).add(1).slice(0, 2, 5), specs: [f32(8, 10)] },
  { name: 'cat-pad', fn: (x: T, y: T) => F.cat([x.exp(), y, x.mul(2)], 1), specs: [f32(4, 3), f32(4, 5)] },
  { name: 'reshape-permuted', fn: (x: T) => x.permute(1, 0).reshape(6, 4).add(1), specs: [f32(4, 6)] },
  { name: 'flatten-reshape-alias', fn: (x: T) => [x.reshape(12), x.exp().reshape(3, 4), x.flatten()], specs: [f32(2, 6)] },
  { name: 'embedding-layerNorm', fn: (ids: T, t: T) => F.layerNorm(F.embedding(ids, t)), specs: [i32(7), f32(20, 32)], gen: (i, _d, n, r) => (i === 0 ? r.array(n, (g) => g.int(0, 20)) : r.array(n, (g) => g.normal())), atol: 1e-5 },
  { name: 'captured-constant', fn: (x: T) => [x.add(tensor([1, 2, 3], [3])), tensor([4, 5], [2])], specs: [f32(2, 3)] },
  { name: 'identity-output', fn: (x: T) => x, specs: [f32(5)] },
  { name: 'embedding', fn: (ids: T, t: T, pos: T) => F.embedding(ids, t).mul(2).add(pos), specs: [i32(3, 5), f32(11, 8), f32(5, 8)], gen: (i, _d, n, r) => (i === 0 ? r.array(n, (g) => g.int(0, 11)) : r.array(n, (g) => g.normal())) },
  { name: 'unsqueeze-expand-sum', fn: (x: T) => x.unsqueeze(1).expand(4, 3, 5).sum(0), specs: [f32(4, 5)] },
];

const matmuls: NumCase[] = [
  { name: 'mm-gelu-bias', fn: (x: T, w: T, b: T) => x.matmul(w).add(b).gelu(), specs: [f32(13, 40), f32(40, 37), f32(37)] },
  { name: 'mm-big-blocks', fn: (x: T, w: T) => x.matmul(w), specs: [f32(150, 600), f32(600, 300)], rtol: 1e-4, atol: 1e-4 },
  { name: 'mm-tails', fn: (x: T, w: T) => x.matmul(w).add(1), specs: [f32(149, 700), f32(700, 70)], rtol: 1e-4, atol: 1e-4 },
  { name: 'mm-f16-bf16-big', fn: (x: T, w: T, y: T, v: T) => [x.matmul(w), y.matmul(v)], specs: [f16(37, 300), f16(300, 50), bf16(37, 300), bf16(300, 50)] },
  { name: 'mm-batched-broadcast-big', fn: (x: T, w: T) => x.matmul(w).tanh(), specs: [f32(3, 20, 64), f32(64, 40)], atol: 1e-5 }, // float accumulation vs float64: cancellation
  { name: 'mm-batched-broadcast', fn: (x: T, w: T) => x.matmul(w), specs: [f32(2, 3, 7, 9), f32(3, 9, 5)] },
  { name: 'mm-transposed', fn: (x: T, w: T, r: T) => x.matmul(w.transpose(0, 1)).add(r), specs: [f32(10, 12), f32(14, 12), f32(10, 14)] },
  { name: 'mm-vector', fn: (x: T, v: T) => [x.matmul(v), v.matmul(x.transpose(0, 1))], specs: [f32(6, 8), f32(8)] },
  { name: 'mm-f16', fn: (x: T, w: T) => x.matmul(w).relu(), specs: [f16(9, 33), f16(33, 20)] },
  { name: 'mm-bf16', fn: (x: T, w: T) => x.matmul(w), specs: [bf16(9, 33), bf16(33, 20)] },
  // float32 matmuls of widened 16-bit operands read them as stored (converted while packing).
  { name: 'mm-widened-f16', fn: (x: T, w: T) => x.to('float32').matmul(w.to('float32')).add(1), specs: [f16(33, 40), f16(40, 24)], rtol: 1e-4, atol: 1e-4 },
  { name: 'mm-widened-bf16-weight', fn: (x: T, w: T) => x.matmul(w.to('float32')).relu(), specs: [f32(37, 48), bf16(48, 29)], rtol: 1e-4, atol: 1e-4 },
  { name: 'sdpa-f16-causal', fn: (q: T, k: T, v: T) => F.scaledDotProductAttention(q, k, v, { causal: true }), specs: [f16(2, 3, 40, 32), f16(2, 3, 40, 32), f16(2, 3, 40, 32)], rtol: 2e-3, atol: 2e-3 }, // probabilities rounded to f16 (scripts/gpu-check/cases.cjs)
  { name: 'mm-int32', fn: (x: T, w: T) => x.matmul(w), specs: [i32(5, 7), i32(7, 3)], gen: special },
  { name: 'mm-of-computed', fn: (x: T, w: T) => x.exp().matmul(w.mul(2)).softmax(-1), specs: [f32(8, 16), f32(16, 12)] },
  { name: 'sdpa-causal', fn: (q: T, k: T, v: T) => F.scaledDotProductAttention(q, k, v, { causal: true }), specs: [f32(2, 6, 8), f32(2, 6, 8), f32(2, 6, 8)] },
  // The causal softmax runs its rows in segments (masked part computed once per row): awkward
  // lengths, NaN and infinities, query and key lengths that differ either way.
  { name: 'sdpa-causal-awkward', fn: (q: T, k: T, v: T) => F.scaledDotProductAttention(q, k, v, { causal: true }), specs: [f32(3, 50, 16), f32(3, 50, 16), f32(3, 50, 16)] },
  { name: 'sdpa-causal-special', fn: (q: T, k: T, v: T) => F.scaledDotProductAttention(q, k, v, { causal: true }), specs: [f32(2, 7, 5), f32(2, 7, 5), f32(2, 7, 5)], gen: special },
  { name: 'sdpa-causal-sq-lt-sk', fn: (q: T, k: T, v: T) => F.scaledDotProductAttention(q, k, v, { causal: true }), specs: [f32(4, 16), f32(6, 16), f32(6, 16)] },
  { name: 'sdpa-causal-sq-gt-sk', fn: (q: T, k: T, v: T) => F.scaledDotProductAttention(q, k, v, { causal: true }), specs: [f32(6, 8), f32(4, 8), f32(4, 8)] },
];

const dynamic: NumCase[] = [
  { name: 'dyn-softmax', fn: (x: T) => x.softmax(-1), specs: [f32(4, 10)], dynamic: { 0: [0] }, runs: [[[1, 10]], [[7, 10]], [[33, 10]]] },
  { name: 'dyn-layerNorm', fn: (x: T, w: T) => F.rmsNorm(x, w).add(x), specs: [f32(3, 32), f32(32)], dynamic: { 0: [0] }, runs: [[[1, 32], [32]], [[20, 32], [32]]] },
  { name: 'dyn-mm', fn: (x: T, w: T, b: T) => x.matmul(w).add(b).silu(), specs: [f32(5, 24), f32(24, 19), f32(19)], dynamic: { 0: [0] }, runs: [[[1, 24], [24, 19], [19]], [[100, 24], [24, 19], [19]]] },
  { name: 'dyn-inner', fn: (x: T, y: T) => x.mul(y).sum(-1), specs: [f32(3, 6), f32(3, 6)], dynamic: { 0: [1], 1: [1] }, runs: [[[3, 1], [3, 1]], [[3, 50], [3, 50]]] },
  { name: 'dyn-mean-symbolic-count', fn: (x: T) => x.mean(0), specs: [f32(4, 5)], dynamic: { 0: [0] }, runs: [[[2, 5]], [[9, 5]]] },
  {
    name: 'dyn-sdpa-causal', // segments of a causal row with a dynamic length
    fn: (q: T, k: T, v: T) => F.scaledDotProductAttention(q, k, v, { causal: true }),
    specs: [f32(2, 6, 8), f32(2, 6, 8), f32(2, 6, 8)],
    dynamic: { 0: [1], 1: [1], 2: [1] },
    runs: [1, 3, 50, 129].map((t) => [[2, t, 8], [2, t, 8], [2, t, 8]]),
  },
];

/** Input `i` from the fixed list `lists[i]` (cycled to length n). */
const fixed =
  (...lists: number[][]) =>
  (i: number, _d: DType, n: number): number[] =>
    Array.from({ length: n }, (_, e) => lists[i][e % lists[i].length]);
const POW_BASES = [1, 1, 1, -1, -1, NaN, NaN, Infinity, 2, 0, -0, -0, -Infinity, 0.5, -2, 3];
const POW_EXPS = [NaN, Infinity, -Infinity, Infinity, -Infinity, 0, -0, 0, NaN, -1, -1, 0.5, 0.5, Infinity, 3, 2.5];
const IPOW_BASES = [2147483647, 3, -3, 2, 2, -2147483648, 1, -1, -1, 2, 0, 0, 46341, 3, 7, -5];
const IPOW_EXPS = [2, 40, 41, 31, 32, 2, -5, -3, -4, -1, -1, 0, 2, 2147483647, 0, 3];

// Values at the edges of kiln's numerics (docs/FUSION.md §7): 0-d kernels, reductions over a
// statically empty dim (the identity, then the epilogue), pow as C computes it, int32 pow
// wrapping, and int -> float giving +0 (seen through 1/x: +inf, never -inf).
const edges: NumCase[] = [
  { name: '0d-elementwise', fn: (x: T) => [x.add(1), x.neg(), x.exp(), x.mul(x)], specs: [f32()] },
  { name: '0d-where', fn: (c: T, a: T, b: T) => F.where(c, a, b.mul(2)), specs: [bool(), f32(), f32()] },
  { name: '0d-vec-dot-add', fn: (v: T) => v.matmul(v).add(1), specs: [f32(7)] },
  { name: '0d-two-sums', fn: (x: T) => ({ a: x.sum().add(1), b: x.sum().mul(2) }), specs: [f32(2, 3)] },
  // one program each: the reduction and its epilogue in one kernel (a fresh output holds 0)
  { name: 'empty-sum-add', fn: (x: T) => x.sum().add(1), specs: [f32(0, 3)] },
  { name: 'empty-mean', fn: (x: T) => x.mean(), specs: [f32(0, 3)] },
  { name: 'empty-sum-leading', fn: (x: T) => [x.sum(0).add(1), x.sum([0, 1]).add(1), x.sum(-1).add(1)], specs: [f32(0, 3, 4)] },
  { name: 'pow-edge', fn: (x: T, y: T) => x.pow(y), specs: [f32(16), f32(16)], gen: fixed(POW_BASES, POW_EXPS) },
  { name: 'int-pow-wrap', fn: (x: T, y: T) => x.pow(y), specs: [i32(16), i32(16)], gen: fixed(IPOW_BASES, IPOW_EXPS) },
  // An exponent tensor that simplification folds to the constant 0.5: still C's pow (+inf at -inf, +0 at -0), not sqrt.
  { name: 'pow-folded-half', fn: (x: T) => x.pow(F.where(x.gt(0), 0.5, 0.5)).reciprocal(), specs: [f32(16)], gen: fixed([-Infinity, -0, 0, 4, -4, NaN, Infinity, 0.25]) },
  {
    name: 'cast-int-positive-zero',
    fn: (x: T) => (['float32', 'float16', 'bfloat16'] as const).map((dt) => x.to('int32').to(dt).reciprocal()),
    specs: [f32(64)],
    gen: fixed([-0, -0.5, -0.999, 0, 0.5, -1.5, 2.5, -3e9]),
  },
];

const suites: [string, NumCase[]][] = [
  ['elementwise', elementwise],
  ['reductions', reductions],
  ['views', views],
  ['matmul', matmuls],
  ['dynamic dims', dynamic],
  ['edge values', edges],
];

describe('codegen: C++ against the interpreter', () => {
  const all = suites.flatMap(([, cs]) => cs);
  let built: Built;
  beforeAll(() => {
    built = buildAll(all);
  }, 300_000);
  for (const [name, cs] of suites) {
    test(`${name}: ${cs.length} programs`, () => {
      const offset = all.indexOf(cs[0]);
      expect(checkAll(built, cs, offset)).toEqual([]);
    });
  }
});

describe('codegen: causal attention renders its mask as loop bounds', () => {
  const render = (dynamic: boolean): string => {
    const fn = (q: T, k: T, v: T) => F.scaledDotProductAttention(q, k, v, { causal: true });
    return renderCpp(lower(trace(fn, [f32(2, 6, 8), f32(2, 6, 8), f32(2, 6, 8)], { dynamic: dynamic ? { 0: [1], 1: [1], 2: [1] } : {} })));
  };
  test.each([false, true])('dynamic length %p: the softmax rows run in two segments, q·kᵀ skips the tiles past the diagonal', (dynamic) => {
    const src = render(dynamic);
    // the visible part [0, i + 1) and the masked rest; no third segment past the row
    expect(src).toContain('const int64_t i2_from = kiln_min64(');
    expect(src).not.toContain('i2_to');
    expect(src).not.toMatch(/i2 >= 1|i1\*-1 \+ i2/); // no mask test per element left
    // the softmax reads its scores below the diagonal only: the matmul computes no more
    expect(src).toContain('return (i1 + 1); };');
    expect(src.match(/, jend\);/g)).toHaveLength(1); // q·kᵀ only, not p·v
  });
});
