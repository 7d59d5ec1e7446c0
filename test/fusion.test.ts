/**
 * Kernel-count tests of the fusion scheduler (no compiler needed): traced programs are
 * lowered and the kernels counted, as tinygrad's check_schedule does.
 */
import { canFuse, lower, scoreFusion, type Program } from '../lib/passes';
import { NodeTable, type Node } from '../lib/ir';
import { trace } from '../lib/tensor/trace';
import * as F from '../lib/tensor/functional';
import type { Tensor } from '../lib/tensor/tensor';

const f32 = (...shape: number[]) => ({ shape, dtype: 'float32' as const });

function kernels(fn: (...xs: Tensor[]) => unknown, specs: { shape: number[]; dtype?: 'float32' | 'float16' | 'bfloat16' | 'int32' | 'bool' }[], dynamic = {}): Program {
  return lower(trace(fn as never, specs, { dynamic }));
}

const names = (p: Program) => p.kernels.map((k) => k.name);

describe('fusion: kernel counts', () => {
  test('gelu(x @ w + b) is one matmul kernel with the epilogue', () => {
    const p = kernels((x, w, b) => x.matmul(w).add(b).gelu(), [f32(64, 128), f32(128, 256), f32(256)]);
    expect(names(p)).toEqual(['MM_64_256_128']);
  });
  test('softmax is one row kernel', () => {
    const p = kernels((x) => x.softmax(-1), [f32(32, 100)]);
    expect(names(p)).toEqual(['R_32_100']);
  });
  test('logSoftmax is one kernel', () => {
    expect(kernels((x) => x.logSoftmax(-1), [f32(32, 100)]).kernels).toHaveLength(1);
  });
  test('layerNorm is one kernel', () => {
    const p = kernels((x, w, b) => F.layerNorm(x, w, b), [f32(8, 768), f32(768), f32(768)]);
    expect(names(p)).toEqual(['R_8_768']);
  });
  test('a half-precision layerNorm or rmsNorm is one kernel: its weights are converted inside it', () => {
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const h = (...shape: number[]) => ({ shape, dtype });
      expect(names(kernels((x, w, b) => F.layerNorm(x, w, b), [h(1024, 768), h(768), h(768)]))).toEqual(['R_1024_768']);
      expect(names(kernels((x, w) => F.rmsNorm(x, w), [h(1024, 768), h(768)]))).toEqual(['R_1024_768']);
    }
  });
  test('rmsNorm is one kernel', () => {
    expect(kernels((x, w) => F.rmsNorm(x, w), [f32(8, 768), f32(768)]).kernels).toHaveLength(1);
  });
  test('a chain of 10 elementwise ops is one kernel', () => {
    const p = kernels((x, y) => x.add(y).mul(2).exp().sub(1).abs().sqrt().neg().tanh().add(x).mul(y), [f32(1024), f32(1024)]);
    expect(names(p)).toEqual(['E_1024']);
  });
  test('a reduction over a leading axis, and over every axis, is one kernel each', () => {
    expect(names(kernels((x) => x.sum(0), [f32(37, 29)]))).toEqual(['R_29_37']);
    expect(names(kernels((x) => x.mean(), [f32(4, 5, 6)]))).toEqual(['R_1_120']);
  });
  test('softmax over a leading dim is one kernel', () => {
    expect(kernels((x) => x.softmax(0), [f32(19, 13)]).kernels).toHaveLength(1);
  });
  test('reductions over different axes split into two kernels', () => {
    const p = kernels((x) => x.sub(x.sum(0, true)).softmax(-1), [f32(8, 16)]);
    expect(p.kernels.map((k) => k.kind)).toEqual(['reduce', 'reduce']);
  });
  test('attention is two matmuls around one softmax row kernel', () => {
    const p = kernels((q, k, v) => F.scaledDotProductAttention(q, k, v, { causal: true }), [f32(2, 6, 8), f32(2, 6, 8), f32(2, 6, 8)]);
    expect(p.kernels.map((k) => k.kind)).toEqual(['matmul', 'reduce', 'matmul']);
  });
  test('half-precision attention reads q, k and v as stored and runs both products on 16-bit operands', () => {
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const h = (...shape: number[]) => ({ shape, dtype });
      const p = kernels((q, k, v) => F.scaledDotProductAttention(q, k, v, { causal: true }), [h(2, 4, 6, 8), h(2, 4, 6, 8), h(2, 4, 6, 8)]);
      expect(p.kernels.map((k) => k.kind)).toEqual(['matmul', 'reduce', 'matmul']);
      const stored = (k: Program['kernels'][number]) => [k.matmul!.a, k.matmul!.b].map((o) => k.params[o.param].dtype);
      expect(stored(p.kernels[0])).toEqual([dtype, dtype]); // q @ kᵀ: both 16-bit
      expect(stored(p.kernels[2])).toEqual([dtype, dtype]); // probabilities rounded to the inputs' dtype @ v
      expect(p.kernels[1].params[0].dtype).toBe(dtype); // the softmax stores 16-bit probabilities
      expect(p.kernels[0].params[0].dtype).toBe('float32');
    }
  });
  test('x[B, T, C] @ w[C, N] is one [B·T, C] × [C, N] GEMM; batches that cannot fold stay batches', () => {
    const only = (p: Program) => p.kernels.find((k) => k.kind === 'matmul')!;
    const views = (k: Program['kernels'][number]) => [k.matmul!.a, k.matmul!.b].map((o) => o.view[0].shape);
    // A linear layer with its bias and residual: rows fold across the batch, B has no batch.
    const lin = only(kernels((x, w, b) => x.matmul(w).add(b).add(x), [f32(4, 6, 8), f32(8, 8), f32(8)]));
    expect(lin.domain).toEqual([24, 8]);
    expect(views(lin)).toEqual([[24, 8], [8, 8]]);
    // Two batch dims and the rows, with a dynamic sequence length: one symbolic row count.
    const dyn = only(kernels((x, w) => x.matmul(w), [f32(2, 3, 5, 8), f32(8, 4)], { 0: [2] }));
    expect(dyn.domain.length).toBe(2);
    expect(String(dyn.domain[0])).toMatch(/6\*?s|s\*?6/);
    // A weight per batch: the batch stays (B varies along it), as do rows read through a transpose.
    expect(only(kernels((x, w) => x.matmul(w), [f32(4, 6, 8), f32(4, 8, 5)])).domain).toEqual([4, 6, 5]);
    expect(only(kernels((x, w) => x.transpose(0, 1).matmul(w), [f32(6, 4, 8), f32(8, 5)])).domain).toEqual([4, 6, 5]);
    // Row tiles ride on grid.x on a GPU: a million rows fold too.
    expect(only(kernels((x, w) => x.matmul(w), [f32(1024, 1024, 16), f32(16, 16)])).domain).toEqual([1024 * 1024, 16]);
    // Heads of attention (q read through a permute) stay batches.
    expect(only(kernels((q, k) => q.matmul(k.transpose(-1, -2)), [f32(2, 3, 6, 8), f32(2, 3, 6, 8)])).domain).toEqual([6, 6, 6]);
  });
  test("attention's head merge is stored by the softmax·v matmul, not copied by a kernel of its own", () => {
    const [B, T, H, D] = [2, 6, 3, 4];
    const C = H * D;
    const block = (x: Tensor, wqkv: Tensor, wo: Tensor) => {
      const qkv = x.matmul(wqkv);
      const head = (i: number) => qkv.slice(2, i * C, (i + 1) * C).reshape([B, T, H, D]).transpose(1, 2);
      return F.scaledDotProductAttention(head(0), head(1), head(2), { causal: true }).transpose(1, 2).reshape([B, T, C]).matmul(wo);
    };
    const p = kernels(block as never, [f32(B, T, C), f32(C, 3 * C), f32(C, C)]);
    expect(p.kernels.map((k) => k.kind)).toEqual(['matmul', 'matmul', 'reduce', 'matmul', 'matmul']);
    const pv = p.kernels[3];
    expect(pv.domain).toEqual([B, H, T, D]);
    expect(pv.stores[0].view).toEqual([{ shape: [B, H, T, D], strides: [T * C, D, C, 1], offset: 0 }]);
    expect(pv.params[0].node.shape).toEqual([B, T, C]); // the merged layout the projection reads
    // A result also read as it is (here: an output) keeps its buffer, and the copy its kernel.
    const both = kernels(((x: Tensor, w: Tensor) => {
      const y = x.matmul(w);
      return [y, y.transpose(0, 1).reshape([6 * 4]).reshape([4, 6]).matmul(w.transpose(0, 1))];
    }) as never, [f32(4, 5), f32(5, 6)]);
    expect(both.kernels.map((k) => k.kind)).toEqual(['matmul', 'elementwise', 'matmul']);
    // A chain through another output's buffer reads that buffer: the matmul runs once.
    const twice = kernels(((a: Tensor, b: Tensor) => {
      const m = a.matmul(b).transpose(0, 1);
      return [m, m.reshape([2, 3, 4]).permute([2, 0, 1])];
    }) as never, [f32(4, 5), f32(5, 6)]);
    expect(twice.kernels.map((k) => k.kind)).toEqual(['matmul', 'elementwise']);
  });
  test('a float32 matmul of a 16-bit weight widened for it reads the weight as stored', () => {
    const p = kernels((x, w) => x.matmul(w.to('float32')).relu(), [f32(8, 16), { shape: [16, 12], dtype: 'float16' }]);
    expect(names(p)).toEqual(['MM_8_12_16']);
    const k = p.kernels[0];
    expect(k.params[k.matmul!.b.param].dtype).toBe('float16');
    // A widened copy that is also an output keeps its kernel; the matmul still reads the weight.
    const both = kernels((x, w) => [x.matmul(w.to('float32')), w.to('float32')], [f32(8, 16), { shape: [16, 12], dtype: 'float16' }]);
    expect(both.kernels.map((k) => k.kind).sort()).toEqual(['elementwise', 'matmul']);
    const mm = both.kernels.find((k) => k.kind === 'matmul')!;
    expect(mm.params[mm.matmul!.b.param].dtype).toBe('float16');
    // Narrowing casts are not widenings: bfloat16 → float16 → float32 keeps the float16 copy.
    const twice = kernels((x, w) => x.matmul(w.to('float16').to('float32')), [f32(8, 16), { shape: [16, 12], dtype: 'bfloat16' }]);
    expect(twice.kernels.map((k) => k.kind)).toEqual(['elementwise', 'matmul']);
  });
  test('a transformer MLP block: layerNorm, matmul+gelu, matmul+residual', () => {
    const p = kernels((x, w1, w2, g) => x.add(F.layerNorm(x, g).matmul(w1).gelu().matmul(w2)), [f32(16, 64), f32(64, 256), f32(256, 64), f32(64)]);
    expect(names(p)).toEqual(['R_16_64', 'MM_16_256_64', 'MM_16_64_256']);
  });
  test('a matmul of computed operands realizes them first', () => {
    const p = kernels((x, w) => x.exp().matmul(w), [f32(8, 16), f32(16, 12)]);
    expect(p.kernels.map((k) => k.kind)).toEqual(['elementwise', 'matmul']);
  });
  test('an expensive producer re-read through a broadcast of a large dim is realized', () => {
    const p = kernels((x, b) => x.add(b.exp().tanh()), [f32(512, 256), f32(256)]);
    expect(names(p)).toEqual(['E_256', 'E_131072']);
    const cheap = kernels((x, b) => x.add(b.mul(2)), [f32(4, 256), f32(256)]);
    expect(cheap.kernels).toHaveLength(1); // a cheap op over a small broadcast is recomputed
  });
  test('a row-wise value broadcast along the inner dim is hoisted, not realized', () => {
    const p = kernels((x, s) => x.mul(s.exp()), [f32(512, 256), f32(512, 1)]);
    expect(p.kernels).toHaveLength(1);
  });
  test('embedding plus positions is one kernel (gather is an indirect load)', () => {
    const p = kernels((ids, t, pos) => F.embedding(ids, t).add(pos), [{ shape: [3, 5], dtype: 'int32' }, f32(11, 8), f32(5, 8)]);
    expect(names(p)).toEqual(['E_120']);
  });
  test('embedding then layerNorm is one row kernel', () => {
    const p = kernels((ids, t) => F.layerNorm(F.embedding(ids, t)), [{ shape: [7], dtype: 'int32' }, f32(20, 32)]);
    expect(names(p)).toEqual(['R_7_32']);
  });
  test('views are never kernels: a contiguous reshape of an input aliases it', () => {
    const p = kernels((x) => [x.reshape(12), x.flatten(), x], [f32(3, 4)]);
    expect(p.kernels).toHaveLength(0);
    expect(p.plan.outputs.map((o) => o.buffer)).toEqual([0, 0, 0]);
  });
  test('a non-contiguous view as output becomes one copy kernel', () => {
    const p = kernels((x) => x.transpose(0, 1), [f32(3, 4)]);
    expect(names(p)).toEqual(['E_12']);
  });
  test('symbolic dims appear in kernel names', () => {
    const p = kernels((x) => x.softmax(-1), [f32(4, 10)], { 0: [0] });
    expect(names(p)).toEqual(['R_s0_10']);
  });
  test('kernel names are unique', () => {
    const p = kernels((x, y) => [x.exp(), y.exp(), x.add(y).transpose(0, 1)], [f32(4, 4), f32(4, 4)]);
    expect(names(p)).toEqual(['E_16', 'E_16_1', 'E_16_2']);
  });
});

describe('fusion: legality and priority', () => {
  const t = new NodeTable();
  const x = t.make('INPUT', [], 0, { dtype: 'float32', shape: [8, 16] });
  const r = t.make('REDUCE_SUM', [x], [1]);
  const back = t.make('EXPAND', [r], [8, 16]);
  const a = t.make('ADD', [x, back], null);
  const b = t.make('MUL', [back, back], null);
  const e = t.make('EXP', [x], null);
  const isBuffer = (n: Node): boolean => n.op === 'INPUT' || n === a || n === b || n === r || n === e;

  test('a reduction used by two kernels is not fused (it would run twice)', () => {
    expect(canFuse(r, { isBuffer, owners: new Set([a, b]) })).toBeUndefined();
    expect(canFuse(r, { isBuffer, owners: new Set([a]) })).toBeDefined();
  });
  test('an elementwise producer may be recomputed in two kernels; its score weighs the recompute', () => {
    const c1 = t.make('ADD', [e, x], null);
    const c2 = t.make('MUL', [e, x], null);
    const ctx = { isBuffer: (n: Node) => isBuffer(n) || n === c1 || n === c2, owners: new Set([c1, c2]) };
    const legal = canFuse(e, ctx);
    expect(legal).toBeDefined();
    expect(scoreFusion(e, ctx, legal!)).toBeGreaterThan(0);
  });
});

