/**
 * Rendered-source snapshots of small CUDA kernels and their launch geometry: any change to
 * generated code shows up as a reviewable diff (update with
 * `npx jest -u test/cuda-codegen-snapshot.test.ts`).
 */
import { CudaRenderer } from '../lib/codegen/cuda';
import { lower } from '../lib/passes';
import { defaultConfig, geometry, partGeometry, splitOf, type GpuFacts } from '../lib/passes/gpu';
import * as F from '../lib/tensor/functional';
import { trace, type InputSpec, type TracedFn } from '../lib/tensor/trace';
import type { Tensor } from '../lib/tensor/tensor';

type T = Tensor;
const f32 = (...shape: number[]): InputSpec => ({ shape, dtype: 'float32' });
const f16 = (...shape: number[]): InputSpec => ({ shape, dtype: 'float16' });
const facts: GpuFacts = { arch: 90 };

function kernelsOf(fn: TracedFn, specs: InputSpec[], dynamic = {}): string {
  const p = lower(trace(fn, specs, { dynamic }));
  const r = new CudaRenderer(p.plan.symbols, facts);
  return p.kernels
    .map((k) => {
      const c = defaultConfig(k, facts);
      const part = splitOf(c) && (c.kind === 'reduce' || (c.kind === 'matmul' && c.variant === 'mma')) ? `// launch __part ${JSON.stringify(partGeometry(k, c))}\n` : '';
      return `${part}// launch ${JSON.stringify(geometry(k, c))}\n${r.renderKernel(k)}`;
    })
    .join('\n');
}

describe('rendered CUDA kernels', () => {
  test('elementwise chain with a broadcast operand: 16-byte lanes', () => {
    expect(kernelsOf((x: T, b: T) => x.add(b).mul(2).exp(), [f32(4, 8), f32(8)])).toMatchSnapshot();
  });
  test('elementwise over a dynamic length: a ragged last thread', () => {
    expect(kernelsOf((x: T, y: T) => x.mul(y).add(1), [f32(8), f32(8)], { 0: [0], 1: [0] })).toMatchSnapshot();
  });
  test('float16 add rounds before its consumer', () => {
    expect(kernelsOf((x: T, y: T) => x.add(y).mul(y), [f16(64), f16(64)])).toMatchSnapshot();
  });
  test('softmax over a dynamic batch: a warp per row', () => {
    expect(kernelsOf((x: T) => x.softmax(-1), [f32(3, 16)], { 0: [0] })).toMatchSnapshot();
  });
  test('layerNorm over a wide row: a block per row, the row in registers', () => {
    expect(kernelsOf((x: T, w: T, b: T) => F.layerNorm(x, w, b), [f32(4, 2048), f32(2048), f32(2048)])).toMatchSnapshot();
  });
  test('a sum over the leading dim: a thread per column', () => {
    expect(kernelsOf((x: T) => x.sum(0), [f32(37, 29)])).toMatchSnapshot();
  });
  test('float16 matmul with a bias + relu epilogue on tensor cores', () => {
    expect(kernelsOf((x: T, w: T, b: T) => x.matmul(w).add(b).relu(), [f16(64, 64), f16(64, 64), f16(64)])).toMatchSnapshot();
  });
  test('float16 matmul with too few tiles for the SMs: split-K partials, then the combine and epilogue', () => {
    expect(kernelsOf((x: T, w: T, b: T) => x.matmul(w).add(b).relu(), [f16(32, 4096), f16(4096, 64), f16(64)])).toMatchSnapshot();
  });
});
