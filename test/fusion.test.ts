/**
 * Kernel-count tests of the fusion scheduler (no compiler needed): traced programs are
 * lowered and the kernels counted, as tinygrad's check_schedule does.
 */
import { lower, type Program } from '../lib/passes';
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
  test('rmsNorm is one kernel', () => {
    expect(kernels((x, w) => F.rmsNorm(x, w), [f32(8, 768), f32(768)]).kernels).toHaveLength(1);
  });
  test('a chain of 10 elementwise ops is one kernel', () => {
    const p = kernels((x, y) => x.add(y).mul(2).exp().sub(1).abs().sqrt().neg().tanh().add(x).mul(y), [f32(1024), f32(1024)]);
    expect(names(p)).toEqual(['E_1024']);
  });
});
