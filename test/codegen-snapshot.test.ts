/**
 * Rendered-source snapshots of small kernels: any change to generated code shows up as a
 * reviewable diff (update with `npx jest -u test/codegen-snapshot.test.ts`).
 */
import { CppRenderer } from '../lib/codegen';
import { lower } from '../lib/passes';
import { trace, type TracedFn } from '../lib/tensor/trace';
import * as F from '../lib/tensor/functional';
import type { Tensor } from '../lib/tensor/tensor';

type T = Tensor;
const f32 = (...shape: number[]) => ({ shape, dtype: 'float32' as const });

function kernelsOf(fn: TracedFn, specs: { shape: number[]; dtype?: 'float32' | 'float16' | 'int32' }[], dynamic = {}): string {
  const p = lower(trace(fn, specs, { dynamic }));
  const r = new CppRenderer(p.plan.symbols);
  return p.kernels.map((k) => r.renderKernel(k)).join('\n');
}

describe('rendered C++ kernels', () => {
  test('elementwise chain with a broadcast operand', () => {
    expect(kernelsOf((x: T, b: T) => x.add(b).mul(2).exp(), [f32(4, 8), f32(8)])).toMatchSnapshot();
  });
  test('softmax row kernel over a dynamic batch', () => {
    expect(kernelsOf((x: T) => x.softmax(-1), [f32(3, 16)], { 0: [0] })).toMatchSnapshot();
  });
  test('float16 add rounds before its consumer', () => {
    expect(kernelsOf((x: T, y: T) => x.add(y).mul(y), [{ shape: [64], dtype: 'float16' }, { shape: [64], dtype: 'float16' }])).toMatchSnapshot();
  });
  test('matmul with a bias + relu epilogue', () => {
    expect(kernelsOf((x: T, w: T, b: T) => x.matmul(w).add(b).relu(), [f32(6, 8), f32(8, 16), f32(16)])).toMatchSnapshot();
  });
  test('transposed output copy and a padded concat', () => {
    expect(kernelsOf((x: T, y: T) => [x.transpose(0, 1), F.cat([x, y], 0)], [f32(3, 5), f32(2, 5)])).toMatchSnapshot();
  });
  test('embedding gather', () => {
    expect(kernelsOf((ids: T, t: T) => F.embedding(ids, t), [{ shape: [4], dtype: 'int32' }, f32(10, 8)])).toMatchSnapshot();
  });
});
