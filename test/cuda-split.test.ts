/**
 * Split reductions over leading dims (a thread per kept column, too few columns to fill the
 * GPU): the plan (parts, the part kernel's grid, a temp of partials, dynamic sizes not
 * split), and the split kernels against the interpreter in the kernel emulator.
 */
import { lower } from '../lib/passes';
import { candidateConfigs, defaultConfig, geometry, gpuPlan, partGeometry, type GpuFacts, type RowConfig } from '../lib/passes/gpu';
import { trace, type InputSpec, type TracedFn } from '../lib/tensor/trace';
import type { Tensor } from '../lib/tensor/tensor';
import { buildEmu, cudaCases, lowerCase, runAllEmu } from './cuda-harness';

const facts: GpuFacts = { arch: 90, smCount: 132 };
const f32 = (...shape: number[]): InputSpec => ({ shape, dtype: 'float32' });
const programOf = (fn: TracedFn, specs: InputSpec[], dynamic = {}): ReturnType<typeof lower> => lower(trace(fn, specs, { dynamic }));

describe('column reductions split into parts', () => {
  test('x.sum(0) on [16384, 4096]: 66 parts of 249 rows fill 132 SMs with 2048 threads each', () => {
    const p = programOf((x: Tensor) => x.sum(0), [f32(16384, 4096)]);
    const k = p.kernels[0];
    const c = defaultConfig(k, facts) as RowConfig;
    expect(c).toEqual({ kind: 'reduce', block: 256, threads: 1, vec: 1, cache: 'none', split: 66 });
    expect(partGeometry(k, c).grid).toEqual([16 * 66]);
    expect(geometry(k, c).grid).toEqual([16]);
    const plan = gpuPlan(p.plan, p.kernels, [c]);
    expect(plan.steps.map((s) => s.kernel)).toEqual([`${k.name}__part`, k.name]);
    const temp = plan.buffers[plan.buffers.length - 1];
    expect(temp).toMatchObject({ role: 'temp', dtype: 'float32', elems: 4096 * 66 });
  });
  test('the tuner may pick split or not; many columns, short columns and dynamic sizes are not split', () => {
    const k = programOf((x: Tensor) => x.sum(0), [f32(16384, 4096)]).kernels[0];
    const splits = candidateConfigs(k, facts).map((c) => (c as RowConfig).split);
    expect(splits.filter((s) => s !== undefined).length).toBe(3);
    expect(splits.filter((s) => s === undefined).length).toBe(3);
    const wide = programOf((x: Tensor) => x.sum(0), [f32(64, 1 << 20)]).kernels[0];
    expect((defaultConfig(wide, facts) as RowConfig).split).toBeUndefined();
    const short = programOf((x: Tensor) => x.sum(0), [f32(100, 37)]).kernels[0];
    expect((defaultConfig(short, facts) as RowConfig).split).toBeUndefined();
    const dyn = programOf((x: Tensor) => x.sum(0), [f32(16384, 4096)], { 0: [0] }).kernels[0];
    expect((defaultConfig(dyn, facts) as RowConfig).split).toBeUndefined();
  });
  test('split kernels (and the unsplit candidates) match the interpreter in the emulator', async () => {
    const names = ['sum-cols-split', 'max-cols-split', 'sum-cols-split-3d', 'sum-axis0', 'f16-gelu-bias'];
    const cs = Object.values(cudaCases())
      .flat()
      .filter((c) => names.includes(c.name));
    expect(cs.length).toBe(names.length);
    const lowered = cs.map(lowerCase);
    expect(lowered.filter((l) => l.program.kernels.some((k) => (defaultConfig(k, facts) as RowConfig).split)).length).toBe(3);
    expect(runAllEmu(await buildEmu(lowered, facts))).toEqual([]);
    const unsplit = (l: (typeof lowered)[number]): RowConfig[] => l.program.kernels.map((k) => ({ ...(defaultConfig(k, facts) as RowConfig), split: undefined }));
    expect(runAllEmu(await buildEmu(lowered.slice(0, 3), facts, unsplit))).toEqual([]);
  }, 300_000);
});
