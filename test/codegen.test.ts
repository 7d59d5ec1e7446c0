/**
 * End-to-end numeric tests of the C++ renderer: many programs compiled into one shared
 * object with the real compiler, each run against the reference interpreter (float32
 * within 1e-5 relative, float16/bfloat16 within one ulp, ints and bools exact).
 */
import { buildAll, checkAll, type Built, type NumCase } from './codegen-harness';
import * as F from '../lib/tensor/functional';
import type { Tensor } from '../lib/tensor/tensor';

const f32 = (...shape: number[]) => ({ shape, dtype: 'float32' as const });

const cases: NumCase[] = [
  { name: 'softmax', fn: (x: Tensor) => x.softmax(-1), specs: [f32(7, 33)] },
  { name: 'chain', fn: (x: Tensor, y: Tensor) => x.add(y).mul(2).exp().sub(1).abs().sqrt().neg().tanh().add(x).mul(y), specs: [f32(1000), f32(1000)] },
  { name: 'layerNorm', fn: (x: Tensor, w: Tensor, b: Tensor) => F.layerNorm(x, w, b), specs: [f32(5, 64), f32(64), f32(64)] },
  { name: 'gelu-mm', fn: (x: Tensor, w: Tensor, b: Tensor) => x.matmul(w).add(b).gelu(), specs: [f32(13, 40), f32(40, 37), f32(37)], rtol: 1e-4 },
];

describe('codegen: C++ against the interpreter', () => {
  let built: Built;
  beforeAll(() => {
    built = buildAll(cases);
  }, 120_000);
  test('all cases match', () => {
    expect(checkAll(built, cases)).toEqual([]);
  });
});
