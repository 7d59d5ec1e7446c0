/**
 * The programs the CUDA backend is checked on, as plain JS so that both the jest tests
 * (NVRTC compiles and the kernel emulator, from lib/ through swc) and the GPU suite
 * (scripts/gpu-check/70-ops.cjs, from dist/ with only Node) use the same list:
 * every op program of the C++ codegen tests (test/codegen.test.ts), the fusion tests'
 * programs, awkward sizes and dynamic dims, and composite programs (a pre-norm MLP and a
 * GPT block with causal attention) in float32, float16 and bfloat16.
 *
 * `cases({ F, tensor })` takes kiln's functional module and tensor factory (lib/ or dist/).
 * A case: { name, fn, specs: [{shape, dtype}], dynamic?, runs?: shapes per run, gen?,
 * rtol?, atol?, ulps? } — the form of test/codegen-harness.ts's NumCase.
 */
'use strict';

/** A small seeded generator (mulberry32) with normals (Box-Muller). */
class Rng {
  constructor(seed) {
    this.s = seed >>> 0;
  }
  next() {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal() {
    const u = Math.max(this.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  int(lo, hi) {
    return lo + Math.floor(this.next() * (hi - lo));
  }
  uniform(lo, hi) {
    return lo + this.next() * (hi - lo);
  }
  array(n, f) {
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = f(this);
    return out;
  }
}

/** A stable 32-bit seed of a string (FNV-1a). */
function seedOf(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Default inputs: normals for floats, small ints, random bools. */
function defaultGen(_i, dtype, n, rng) {
  if (dtype === 'bool') return rng.array(n, (r) => (r.next() < 0.5 ? 1 : 0));
  if (dtype === 'int32') return rng.array(n, (r) => r.int(-50, 50));
  return rng.array(n, (r) => r.normal());
}

/** Normal values with NaN, ±inf, ±0 and large magnitudes sprinkled in. */
function special(_i, dtype, n, rng) {
  return rng.array(n, (r) => {
    const u = r.next();
    if (dtype === 'int32') return u < 0.2 ? r.int(-2147483648, 2147483647) : r.int(-9, 9);
    if (dtype === 'bool') return u < 0.5 ? 1 : 0;
    if (u < 0.04) return NaN;
    if (u < 0.08) return u < 0.06 ? Infinity : -Infinity;
    if (u < 0.12) return u < 0.1 ? 0 : -0;
    if (u < 0.16) return r.normal() * 1e4;
    return r.normal() * 3;
  });
}

/** Weights: inputs after the first are scaled down so that deep programs stay in range. */
const weights = (scale) => (i, dtype, n, rng) => rng.array(n, (r) => (i === 0 ? r.normal() : r.normal() * scale));
const ids = (rows) => (i, _d, n, r) => (i === 0 ? r.array(n, (g) => g.int(0, rows)) : r.array(n, (g) => g.normal()));
/** Input i from the fixed list lists[i], cycled to length n. */
const fixed = (...lists) => (i, _d, n) => Array.from({ length: n }, (_, e) => lists[i][e % lists[i].length]);
// pow's edge values (docs/FUSION.md §7: C's pow; int32 pow wraps like PyTorch's).
const POW_BASES = [1, 1, 1, -1, -1, NaN, NaN, Infinity, 2, 0, -0, -0, -Infinity, 0.5, -2, 3];
const POW_EXPS = [NaN, Infinity, -Infinity, Infinity, -Infinity, 0, -0, 0, NaN, -1, -1, 0.5, 0.5, Infinity, 3, 2.5];
const IPOW_BASES = [2147483647, 3, -3, 2, 2, -2147483648, 1, -1, -1, 2, 0, 0, 46341, 3, 7, -5];
const IPOW_EXPS = [2, 40, 41, 31, 32, 2, -5, -3, -4, -1, -1, 0, 2, 2147483647, 0, 3];

function cases({ F, tensor }) {
  const spec = (dtype, ...shape) => ({ shape, dtype });
  const f32 = (...s) => spec('float32', ...s);
  const f16 = (...s) => spec('float16', ...s);
  const bf16 = (...s) => spec('bfloat16', ...s);
  const i32 = (...s) => spec('int32', ...s);
  const bool = (...s) => spec('bool', ...s);

  const elementwise = [
    ...['exp', 'tanh', 'sin', 'cos', 'erf', 'abs', 'neg', 'sigmoid', 'relu', 'silu'].map((op) => ({ name: `unary-${op}`, fn: (x) => x[op](), specs: [f32(257)], gen: special })),
    { name: 'log-sqrt-recip', fn: (x) => [x.log(), x.sqrt(), x.reciprocal(), x.rsqrt()], specs: [f32(300)], gen: special },
    { name: 'binary', fn: (x, y) => [x.add(y), x.sub(y), x.mul(y), x.div(y), x.maximum(y), x.minimum(y)], specs: [f32(129), f32(129)], gen: special },
    {
      name: 'exp-erf-tanh-sweep',
      fn: (x, y) => [x.exp(), y.erf(), y.tanh(), y.mul(0.01).exp()],
      specs: [f32(4000), f32(4000)],
      gen: (i, _d, n, r) => r.array(n, (g) => (i === 0 ? g.uniform(-110, 90) : g.uniform(-12, 12))),
    },
    { name: 'pow', fn: (x, y) => x.pow(y), specs: [f32(200), f32(200)], gen: special },
    { name: 'compare-where', fn: (x, y) => [x.lt(y), x.le(y), x.eq(y), x.ne(y), F.where(x.gt(y), x, y.mul(2))], specs: [f32(150), f32(150)], gen: special },
    { name: 'int32', fn: (x, y) => [x.add(y), x.sub(y), x.mul(y), x.neg(), x.abs(), x.maximum(y), x.minimum(y), x.lt(y)], specs: [i32(300), i32(300)], gen: special },
    { name: 'int-pow', fn: (x) => x.pow(3), specs: [i32(64)] },
    { name: 'casts-float', fn: (x) => [x.to('int32'), x.to('bool'), x.to('float16'), x.to('bfloat16')], specs: [f32(300)], gen: special },
    { name: 'casts-int', fn: (x) => [x.to('float32'), x.to('float16'), x.to('bfloat16'), x.to('bool')], specs: [i32(300)], gen: special },
    { name: 'casts-bool', fn: (x) => [x.to('float32'), x.to('int32'), x.to('float16'), x.add(x), F.where(x, 1.5, -2)], specs: [bool(64)] },
    { name: 'f16-chain', fn: (x, y) => x.add(y).mul(x).exp().sub(y).div(y.abs().add(1)), specs: [f16(500), f16(500)] },
    { name: 'bf16-chain', fn: (x, y) => x.mul(y).add(1).tanh().mul(3).sub(x), specs: [bf16(500), bf16(500)] },
    { name: 'f16-gelu-softmax', fn: (x) => [x.gelu(), x.gelu('tanh'), x.softmax(-1)], specs: [f16(6, 40)] },
    { name: 'chain-10', fn: (x, y) => x.add(y).mul(2).exp().sub(1).abs().sqrt().neg().tanh().add(x).mul(y), specs: [f32(5000), f32(5000)] },
    { name: 'scalar', fn: (x) => x.sum().mul(2), specs: [f32(10)] },
    { name: 'vec-ragged', fn: (x, y) => x.mul(y).add(1), specs: [f32(1003), f32(1003)] },
    { name: 'vec-f16-broadcast', fn: (x, b) => x.add(b).relu(), specs: [f16(7, 24), f16(24)] },
    { name: 'f16-gelu-bias', fn: (x, b) => x.add(b).gelu(), specs: [f16(16, 64), f16(64)], gen: (i, _d, n, r) => r.array(n, (g) => (i === 0 ? g.uniform(-12, 12) : g.normal())) },
    { name: 'vec-mixed-cast', fn: (x) => x.to('float16').mul(2), specs: [f32(517)] },
    // Edge values: 0-d kernels, pow as C computes it, int32 pow wrapping, int -> float giving +0 (1/x: +inf).
    { name: 'edge-0d', fn: (x, c) => [x.add(1), x.neg(), x.exp(), F.where(c, x, x.mul(2))], specs: [f32(), bool()] },
    { name: 'edge-0d-dot-sums', fn: (v) => ({ d: v.matmul(v).add(1), a: v.sum().add(1), b: v.sum().mul(2) }), specs: [f32(7)] },
    { name: 'edge-pow', fn: (x, y) => x.pow(y), specs: [f32(16), f32(16)], gen: fixed(POW_BASES, POW_EXPS) },
    { name: 'edge-int-pow', fn: (x, y) => x.pow(y), specs: [i32(16), i32(16)], gen: fixed(IPOW_BASES, IPOW_EXPS) },
    {
      name: 'edge-cast-int-positive-zero',
      fn: (x) => ['float32', 'float16', 'bfloat16'].map((dt) => x.to('int32').to(dt).reciprocal()),
      specs: [f32(64)],
      gen: fixed([-0, -0.5, -0.999, 0, 0.5, -1.5, 2.5, -3e9]),
    },
  ];

  const reductions = [
    { name: 'sum-axis0', fn: (x) => x.sum(0), specs: [f32(37, 29)] },
    { name: 'sum-axes02', fn: (x) => x.sum([0, 2], true), specs: [f32(3, 4, 5)] },
    { name: 'sum-all', fn: (x) => x.sum(), specs: [f32(3, 70, 11)], atol: 1e-5 },
    { name: 'max-mid', fn: (x) => [x.max(1), x.min(1)], specs: [f32(4, 9, 6)] },
    { name: 'max-nan', fn: (x) => x.max(-1), specs: [f32(16, 8)], gen: special },
    { name: 'mean', fn: (x) => [x.mean(-1), x.mean([0, 1])], specs: [f32(6, 50)] },
    { name: 'int-sum-max', fn: (x) => [x.sum(-1), x.max(-1)], specs: [i32(5, 40)], gen: special },
    { name: 'bool-any', fn: (x) => x.max(-1), specs: [bool(5, 7)] },
    { name: 'softmax-dim0', fn: (x) => x.softmax(0), specs: [f32(19, 13)] },
    { name: 'logSoftmax', fn: (x) => x.logSoftmax(-1), specs: [f32(9, 77)] },
    { name: 'layerNorm', fn: (x, w, b) => F.layerNorm(x, w, b), specs: [f32(5, 64), f32(64), f32(64)], atol: 1e-5 },
    { name: 'layerNorm-plain', fn: (x) => F.layerNorm(x), specs: [f32(3, 4, 48)], atol: 1e-5 },
    { name: 'rmsNorm', fn: (x, w) => F.rmsNorm(x, w), specs: [f32(7, 96), f32(96)] },
    { name: 'bf16-layerNorm', fn: (x, w) => F.layerNorm(x, w), specs: [bf16(4, 64), bf16(64)] },
    { name: 'f16-sum', fn: (x) => x.sum(-1), specs: [f16(8, 32)] },
    { name: 'reduce-then-elementwise-elsewhere', fn: (x) => x.sub(x.mean(0, true)).exp(), specs: [f32(11, 17)] },
    { name: 'softmax-wide', fn: (x) => x.softmax(-1), specs: [f32(3, 5000)], atol: 1e-6 },
    { name: 'softmax-block-cached', fn: (x) => x.softmax(-1), specs: [f32(5, 2048)] },
    { name: 'layerNorm-f16-wide', fn: (x, w, b) => F.layerNorm(x, w, b), specs: [f16(3, 1536), f16(1536), f16(1536)], ulps: 2 },
    { name: 'rmsNorm-ragged', fn: (x) => F.rmsNorm(x), specs: [f32(4, 1111)] },
    { name: 'sum-all-split', fn: (x) => x.sum(), specs: [f32(70000)], atol: 1e-4, rtol: 1e-4 },
    { name: 'mean-rows-split', fn: (x) => x.mean(-1, true).mul(2), specs: [f32(3, 40000)], atol: 1e-5 },
    { name: 'int-sum-split', fn: (x) => x.sum(-1), specs: [i32(2, 40000)], gen: special },
    { name: 'max-nan-split', fn: (x) => [x.max(), x.abs().max()], specs: [f32(70000)], gen: special },
    { name: 'layerNorm-row-in-shared', fn: (x, w, b) => F.layerNorm(x, w, b), specs: [f32(2, 20000), f32(20000), f32(20000)], atol: 1e-5 },
    // Reductions over leading dims with few kept columns: split into parts (the last part ragged), partials combined in order.
    { name: 'sum-cols-split', fn: (x) => x.sum(0), specs: [f32(1000, 37)], atol: 1e-5 },
    { name: 'max-cols-split', fn: (x) => x.max(0), specs: [f32(700, 20)], gen: special },
    { name: 'sum-cols-split-3d', fn: (x) => x.sum([0, 1]), specs: [f16(30, 40, 9)], ulps: 2 },
    { name: 'softmax-f16-row-in-shared', fn: (x) => x.softmax(-1), specs: [f16(2, 24576)], ulps: 2 },
    // Reductions over a statically empty dim: the identity (sum 0, mean NaN), then the epilogue.
    { name: 'edge-empty-sum-add', fn: (x) => x.sum().add(1), specs: [f32(0, 3)] }, // one kernel: reduction and epilogue
    { name: 'edge-empty-mean', fn: (x) => x.mean(), specs: [f32(0, 3)] },
    { name: 'edge-empty-sum-leading', fn: (x) => [x.sum(0).add(1), x.sum([0, 1]).add(1), x.sum(-1).add(1)], specs: [f32(0, 3, 4)] },
  ];

  const views = [
    { name: 'permute-add', fn: (x, y) => x.permute([2, 0, 1]).add(y), specs: [f32(3, 4, 5), f32(5, 3, 4)] },
    { name: 'transpose-out', fn: (x) => x.transpose(0, 1), specs: [f32(33, 17)] },
    { name: 'expand', fn: (x, y) => x.add(y).mul(y.exp()), specs: [f32(7, 1, 5), f32(1, 6, 1)] },
    { name: 'slice-step', fn: (x) => x.slice(1, 1, 9, 3).add(1).slice(0, 2, 5), specs: [f32(8, 10)] },
    { name: 'cat-pad', fn: (x, y) => F.cat([x.exp(), y, x.mul(2)], 1), specs: [f32(4, 3), f32(4, 5)] },
    { name: 'reshape-permuted', fn: (x) => x.permute([1, 0]).reshape([6, 4]).add(1), specs: [f32(4, 6)] },
    { name: 'flatten-reshape-alias', fn: (x) => [x.reshape([12]), x.exp().reshape([3, 4]), x.flatten()], specs: [f32(2, 6)] },
    { name: 'embedding-layerNorm', fn: (i, t) => F.layerNorm(F.embedding(i, t)), specs: [i32(7), f32(20, 32)], gen: ids(20), atol: 1e-5 },
    { name: 'captured-constant', fn: (x) => [x.add(tensor([1, 2, 3], [3])), tensor([4, 5], [2])], specs: [f32(2, 3)] },
    { name: 'identity-output', fn: (x) => x, specs: [f32(5)] },
    { name: 'embedding', fn: (i, t, pos) => F.embedding(i, t).mul(2).add(pos), specs: [i32(3, 5), f32(11, 8), f32(5, 8)], gen: ids(11) },
    { name: 'unsqueeze-expand-sum', fn: (x) => x.unsqueeze(1).expand([4, 3, 5]).sum(0), specs: [f32(4, 5)] },
  ];

  const matmuls = [
    { name: 'mm-gelu-bias', fn: (x, w, b) => x.matmul(w).add(b).gelu(), specs: [f32(13, 40), f32(40, 37), f32(37)] },
    { name: 'mm-big-blocks', fn: (x, w) => x.matmul(w), specs: [f32(150, 600), f32(600, 300)], rtol: 1e-4, atol: 1e-4 },
    { name: 'mm-tails', fn: (x, w) => x.matmul(w).add(1), specs: [f32(149, 700), f32(700, 70)], rtol: 1e-4, atol: 1e-4 },
    { name: 'mm-f16-bf16-big', fn: (x, w, y, v) => [x.matmul(w), y.matmul(v)], specs: [f16(37, 300), f16(300, 50), bf16(37, 300), bf16(300, 50)] },
    { name: 'mm-batched-broadcast-big', fn: (x, w) => x.matmul(w).tanh(), specs: [f32(3, 20, 64), f32(64, 40)], atol: 1e-5 },
    { name: 'mm-batched-broadcast', fn: (x, w) => x.matmul(w), specs: [f32(2, 3, 7, 9), f32(3, 9, 5)] },
    { name: 'mm-transposed', fn: (x, w, r) => x.matmul(w.transpose(0, 1)).add(r), specs: [f32(10, 12), f32(14, 12), f32(10, 14)] },
    { name: 'mm-vector', fn: (x, v) => [x.matmul(v), v.matmul(x.transpose(0, 1))], specs: [f32(6, 8), f32(8)] },
    { name: 'mm-f16', fn: (x, w) => x.matmul(w).relu(), specs: [f16(9, 33), f16(33, 20)] },
    { name: 'mm-bf16', fn: (x, w) => x.matmul(w), specs: [bf16(9, 33), bf16(33, 20)] },
    { name: 'mm-int32', fn: (x, w) => x.matmul(w), specs: [i32(5, 7), i32(7, 3)], gen: special },
    { name: 'mm-of-computed', fn: (x, w) => x.exp().matmul(w.mul(2)).softmax(-1), specs: [f32(8, 16), f32(16, 12)] },
    { name: 'sdpa-causal', fn: (q, k, v) => F.scaledDotProductAttention(q, k, v, { causal: true }), specs: [f32(2, 6, 8), f32(2, 6, 8), f32(2, 6, 8)] },
    // Tensor-core layouts: K-contiguous, M-contiguous (A transposed), N- and K-contiguous B, misaligned (element loads).
    { name: 'mma-f16-tiles', fn: (x, w, b) => x.matmul(w).add(b), specs: [f16(130, 72), f16(72, 136), f16(136)], ulps: 2 },
    { name: 'mma-bf16-bt', fn: (x, w) => x.matmul(w.transpose(0, 1)), specs: [bf16(70, 64), bf16(40, 64)], ulps: 2 },
    { name: 'mma-f16-at', fn: (x, w) => x.transpose(0, 1).matmul(w), specs: [f16(48, 72), f16(48, 24)], ulps: 2 },
    { name: 'mma-f16-odd', fn: (x, w) => x.matmul(w), specs: [f16(33, 27), f16(27, 19)], ulps: 2 },
    { name: 'mma-f16-batched', fn: (x, w) => x.matmul(w).relu(), specs: [f16(3, 40, 64), f16(3, 64, 24)], ulps: 2 },
    { name: 'mm-f32-wide', fn: (x, w) => x.matmul(w), specs: [f32(200, 64), f32(64, 300)], rtol: 1e-4, atol: 1e-4 },
    // float32 matmuls of widened 16-bit operands read them as stored: both (tensor cores,
    // float32 out), one (CUDA cores), and attention over 16-bit q, k, v.
    { name: 'mm-widened-f16', fn: (x, w) => x.to('float32').matmul(w.to('float32')).add(1), specs: [f16(33, 40), f16(40, 24)], rtol: 1e-4, atol: 1e-4 },
    { name: 'mm-widened-bf16-weight', fn: (x, w) => x.matmul(w.to('float32')).relu(), specs: [f32(37, 48), bf16(48, 29)], rtol: 1e-4, atol: 1e-4 },
    // The probabilities are rounded to float16 before they weight v: one that lies near a
    // rounding boundary may round the other way (2^-11 of it), so the output may move by up
    // to 2^-11·max|v| (v is about N(0, 1) here) wherever the two exps differ in the last bit.
    { name: 'sdpa-f16-causal', fn: (q, k, v) => F.scaledDotProductAttention(q, k, v, { causal: true }), specs: [f16(2, 3, 40, 32), f16(2, 3, 40, 32), f16(2, 3, 40, 32)], rtol: 2e-3, atol: 2e-3 },
    // Shapes the wgmma kernel takes on sm_90a (static, M % 128, N % 128, K % 64): N-contiguous B
    // with a bias + gelu epilogue, and K-contiguous B batched on both operands. The gelu sees
    // the f16-rounded sum, which an f32 accumulation may round one f16 ulp (up to 2^-7 here)
    // away from the float64 one: a layout mistake is off by far more.
    { name: 'wgmma-f16-gelu', fn: (x, w, b) => x.matmul(w).add(b).gelu(), specs: [f16(256, 128), f16(128, 384), f16(384)], rtol: 1e-2, atol: 1e-2 },
    { name: 'wgmma-bf16-bt-batched', fn: (x, w) => x.matmul(w.transpose(1, 2)), specs: [bf16(2, 128, 192), bf16(2, 256, 192)], ulps: 2 },
    // Attention scores over heads sliced out of one f16 projection (strided two-level batch),
    // widened to f32 and read as stored: the f32 output of the 16-bit kernel.
    {
      name: 'wgmma-widened-heads',
      fn: (x) => {
        const head = (i) => x.slice(2, i * 128, (i + 1) * 128).reshape([2, 128, 2, 64]).transpose(1, 2).to('float32');
        return head(0).matmul(head(1).transpose(2, 3)).mul(0.125);
      },
      specs: [f16(2, 128, 256)],
      rtol: 1e-4,
      atol: 1e-4,
    },
  ];

  // Split-K (MmaConfig.split): small M, too few output tiles for 132 SMs, K cut into parts of
  // whole 32-wide K tiles (the last part shorter, with a K tail where K % 32 != 0), f32 partials
  // added in part order by a combine kernel that runs the epilogue. The heuristic splits each
  // static case here (>= 2^24 FLOP); the dynamic one runs unsplit by default and split as a
  // tuner candidate. f16 sums of ~1000 products: an f32 accumulation may round an f16 ulp away.
  const splitK = [
    { name: 'splitk-f16', fn: (x, w) => x.matmul(w), specs: [f16(48, 1400), f16(1400, 128)], ulps: 2 },
    { name: 'splitk-f16-bias-gelu', fn: (x, w, b) => x.matmul(w).add(b).gelu(), specs: [f16(64, 1536), f16(1536, 96), f16(96)], rtol: 1e-2, atol: 1e-2 },
    { name: 'splitk-bf16', fn: (x, w) => x.matmul(w), specs: [bf16(20, 2200), bf16(2200, 200)], ulps: 2 },
    { name: 'splitk-bf16-bias-residual', fn: (x, w, b, r) => x.matmul(w).add(b).add(r), specs: [bf16(20, 2200), bf16(2200, 200), bf16(200), bf16(20, 200)], ulps: 2 },
    { name: 'splitk-bf16-bt', fn: (x, w) => x.matmul(w.transpose(0, 1)), specs: [bf16(32, 3072), bf16(96, 3072)], ulps: 2 },
    { name: 'splitk-f16-batched-relu', fn: (x, w) => x.matmul(w).relu(), specs: [f16(3, 16, 3072), f16(3, 3072, 64)], ulps: 2 },
    // B's rows are 51 elements (not 16-byte chunks): element loads, no cp.async ring.
    { name: 'splitk-f16-scalar-b', fn: (x, w) => x.matmul(w).to('float32'), specs: [f16(40, 4200), f16(4200, 51)], rtol: 2e-3, atol: 2e-3 },
    {
      name: 'splitk-dyn-rows',
      fn: (x, w, b) => x.matmul(w).add(b).silu(),
      specs: [f16(16, 1024), f16(1024, 64), f16(64)],
      dynamic: { 0: [0] },
      runs: [[[1, 1024], [1024, 64], [64]], [[45, 1024], [1024, 64], [64]]],
      rtol: 1e-2,
      atol: 1e-2,
    },
  ];

  const dynamic = [
    { name: 'dyn-softmax', fn: (x) => x.softmax(-1), specs: [f32(4, 10)], dynamic: { 0: [0] }, runs: [[[1, 10]], [[7, 10]], [[33, 10]]] },
    { name: 'dyn-layerNorm', fn: (x, w) => F.rmsNorm(x, w).add(x), specs: [f32(3, 32), f32(32)], dynamic: { 0: [0] }, runs: [[[1, 32], [32]], [[20, 32], [32]]] },
    { name: 'dyn-mm', fn: (x, w, b) => x.matmul(w).add(b).silu(), specs: [f32(5, 24), f32(24, 19), f32(19)], dynamic: { 0: [0] }, runs: [[[1, 24], [24, 19], [19]], [[100, 24], [24, 19], [19]]] },
    { name: 'dyn-inner', fn: (x, y) => x.mul(y).sum(-1), specs: [f32(3, 6), f32(3, 6)], dynamic: { 0: [1], 1: [1] }, runs: [[[3, 1], [3, 1]], [[3, 50], [3, 50]]] },
    { name: 'dyn-mean-symbolic-count', fn: (x) => x.mean(0), specs: [f32(4, 5)], dynamic: { 0: [0] }, runs: [[[2, 5]], [[9, 5]]] },
    { name: 'dyn-ragged-vec', fn: (x, y) => x.add(y).exp(), specs: [f32(8), f32(8)], dynamic: { 0: [0], 1: [0] }, runs: [[[1], [1]], [[4099], [4099]], [[0], [0]]] },
    { name: 'dyn-mma-rows', fn: (x, w) => x.matmul(w).gelu(), specs: [f16(16, 64), f16(64, 40)], dynamic: { 0: [0] }, runs: [[[1, 64], [64, 40]], [[77, 64], [64, 40]]], ulps: 2 },
  ];

  const composites = ['float32', 'float16', 'bfloat16'].flatMap((dt) => {
    const s = (...shape) => spec(dt, ...shape);
    const half = dt !== 'float32';
    const tol = half ? { rtol: 3e-2, atol: 3e-2 } : { rtol: 1e-4, atol: 1e-4 };
    const C = 64;
    const H = 4;
    const T = 40;
    const mlp = (x, g, b, w1, b1, w2, b2) => x.add(F.layerNorm(x, g, b).matmul(w1).add(b1).gelu().matmul(w2).add(b2));
    const block = (x, g1, be1, wqkv, bqkv, wo, bo, g2, be2, w1, b1, w2, b2) => {
      const B = 2;
      const D = C / H;
      const qkv = F.layerNorm(x, g1, be1).matmul(wqkv).add(bqkv);
      const head = (i) => qkv.slice(2, i * C, (i + 1) * C).reshape([B, T, H, D]).transpose(1, 2);
      const att = F.scaledDotProductAttention(head(0), head(1), head(2), { causal: true }).transpose(1, 2).reshape([B, T, C]);
      const x1 = x.add(att.matmul(wo).add(bo));
      return x1.add(F.layerNorm(x1, g2, be2).matmul(w1).add(b1).gelu().matmul(w2).add(b2));
    };
    return [
      { name: `mlp-${dt}`, fn: mlp, specs: [s(48, C), s(C), s(C), s(C, 4 * C), s(4 * C), s(4 * C, C), s(C)], gen: weights(0.1), ...tol },
      {
        name: `mlp-dyn-${dt}`,
        fn: mlp,
        specs: [s(8, C), s(C), s(C), s(C, 4 * C), s(4 * C), s(4 * C, C), s(C)],
        dynamic: { 0: [0] },
        runs: [[[3, C], [C], [C], [C, 4 * C], [4 * C], [4 * C, C], [C]], [[129, C], [C], [C], [C, 4 * C], [4 * C], [4 * C, C], [C]]],
        gen: weights(0.1),
        ...tol,
      },
      {
        name: `gpt-block-${dt}`,
        fn: block,
        specs: [s(2, T, C), s(C), s(C), s(C, 3 * C), s(3 * C), s(C, C), s(C), s(C), s(C), s(C, 4 * C), s(4 * C), s(4 * C, C), s(C)],
        gen: weights(0.1),
        ...tol,
      },
    ];
  });

  return { elementwise, reductions, views, matmuls, splitK, dynamic, composites };
}

/**
 * float32 matmuls for the TF32 tensor-core kernel (compiled with the `tf32` option): awkward
 * sizes, K tails, operands in 16-byte chunks along K, M or N and element-loaded ones,
 * batched and broadcast batches, dynamic rows and a fused bias + gelu epilogue. The TF32
 * tolerance: rtol 1e-3 and atol 1e-3·K for unit-normal inputs (a tf32 operand keeps 10
 * mantissa bits, so a dot product of K terms is off by at most 2^-10·Σ|a_k·b_k|, about
 * 6.2e-4·K here). The `exact` cases use small integers, which tf32 holds exactly: their
 * sums must match to f32 rounding (here exact), which pins the fragment layouts down.
 */
function tf32Cases() {
  const f32 = (...shape) => ({ shape, dtype: 'float32' });
  const tol = (K) => ({ rtol: 1e-3, atol: 1e-3 * K });
  const ints = (_i, _d, n, rng) => rng.array(n, (r) => r.int(-8, 9));
  const exact = { gen: ints, rtol: 1e-6, atol: 0 };
  return [
    { name: 'tf32-bias-gelu', fn: (x, w, b) => x.matmul(w).add(b).gelu(), specs: [f32(13, 40), f32(40, 37), f32(37)], ...tol(40) },
    { name: 'tf32-tails', fn: (x, w) => x.matmul(w).add(1), specs: [f32(149, 700), f32(700, 72)], ...tol(700) },
    { name: 'tf32-exact-scalar-b', fn: (x, w) => x.matmul(w), specs: [f32(67, 52), f32(52, 37)], ...exact },
    { name: 'tf32-exact-at-bt', fn: (x, w) => x.transpose(0, 1).matmul(w.transpose(0, 1)), specs: [f32(52, 68), f32(36, 52)], ...exact },
    { name: 'tf32-exact-tiles', fn: (x, w) => x.matmul(w), specs: [f32(130, 84), f32(84, 136)], ...exact },
    { name: 'tf32-bt', fn: (x, w) => x.matmul(w.transpose(0, 1)), specs: [f32(70, 64), f32(40, 64)], ...tol(64) },
    { name: 'tf32-at', fn: (x, w) => x.transpose(0, 1).matmul(w), specs: [f32(48, 72), f32(48, 24)], ...tol(48) },
    { name: 'tf32-batched-bias-relu', fn: (x, w, b) => x.matmul(w).add(b).relu(), specs: [f32(3, 40, 64), f32(3, 64, 24), f32(24)], ...tol(64) },
    { name: 'tf32-batched-broadcast', fn: (x, w) => x.matmul(w), specs: [f32(2, 3, 7, 9), f32(3, 9, 5)], ...tol(9) },
    { name: 'tf32-exact-f16-weight', fn: (x, w) => x.matmul(w.to('float32')), specs: [f32(40, 64), { shape: [64, 48], dtype: 'float16' }], ...exact },
    {
      name: 'tf32-dyn-rows',
      fn: (x, w) => x.matmul(w).gelu(),
      specs: [f32(16, 64), f32(64, 40)],
      dynamic: { 0: [0] },
      runs: [[[1, 64], [64, 40]], [[77, 64], [64, 40]]],
      ...tol(64),
    },
  ];
}

module.exports = { cases, tf32Cases, Rng, seedOf, defaultGen, special };
