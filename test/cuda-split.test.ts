/**
 * Two-level kernels. Split reductions over leading dims (a thread per kept column, too few
 * columns to fill the GPU): the plan (parts, the part kernel's grid, a temp of partials,
 * dynamic sizes not split), and the split kernels against the interpreter in the kernel
 * emulator. Split-K matmuls (too few output tiles for the SMs): when the heuristic splits
 * and into how many parts, the tuner's candidates, the plan, the kernels of every case and
 * candidate in the emulator, and NVRTC builds of both kernels for sm_80, sm_90 and sm_90a.
 */
import { CudaRenderer } from '../lib/codegen/cuda';
import { lower, type Kernel } from '../lib/passes';
import { candidateConfigs, configFits, defaultConfig, geometry, gpuPlan, matmulSharedBytes, partGeometry, splitOf, type GpuFacts, type MmaConfig, type RowConfig } from '../lib/passes/gpu';
import { addonInfo } from '../lib/runtime/native';
import { trace, type InputSpec, type TracedFn } from '../lib/tensor/trace';
import type { Tensor } from '../lib/tensor/tensor';
import { buildEmu, compileUnit, cudaCases, lowerCase, renderUnit, runAllEmu, type CudaCase } from './cuda-harness';

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

describe('split-K matmuls (too few output tiles for the SMs)', () => {
  const f16 = (...shape: number[]): InputSpec => ({ shape, dtype: 'float16' });
  const mm = (M: number, N: number, K: number, dynamic = {}): Kernel => programOf((a: Tensor, b: Tensor) => a.matmul(b), [f16(M, K), f16(K, N)], dynamic).kernels[0];
  const splitCases = (): CudaCase[] => cudaCases().splitK;

  test('64×4096×4096 f16 on 132 SMs: 64×128 tiles, K in 9 parts, a partials temp, the combine a thread per element', () => {
    const p = programOf((a: Tensor, b: Tensor) => a.matmul(b), [f16(64, 4096), f16(4096, 4096)]);
    const k = p.kernels[0];
    const c = defaultConfig(k, facts) as MmaConfig;
    // Unsplit, the largest tile that gives every SM a block is 32×64: 128 blocks of 2 warps.
    expect(c).toEqual({ kind: 'matmul', variant: 'mma', bm: 64, bn: 128, warpsM: 2, warpsN: 2, stages: 3, split: 9 });
    expect(partGeometry(k, c)).toEqual({ grid: [1, 32, 9], block: [128], sharedBytes: matmulSharedBytes(k, c) });
    expect(geometry(k, c)).toEqual({ grid: [1024], block: [256], sharedBytes: 0 });
    const plan = gpuPlan(p.plan, p.kernels, [c]);
    expect(plan.steps.map((s) => s.kernel)).toEqual([`${k.name}__part`, k.name]);
    const temp = plan.buffers[plan.buffers.length - 1];
    expect(temp).toMatchObject({ role: 'temp', dtype: 'float32', elems: 9 * 64 * 4096, first: 0, last: 1 });
    expect(plan.steps.every((s) => s.buffers[s.buffers.length - 1] === temp.id)).toBe(true);
    // An A100's 108 SMs: 7 parts; 16 rows: 32×64 tiles.
    expect(defaultConfig(k, { arch: 80, smCount: 108 })).toMatchObject({ bm: 64, bn: 128, split: 7 });
    expect(defaultConfig(mm(16, 4096, 4096), facts)).toMatchObject({ bm: 32, bn: 64, split: 5 });
  });

  test('not split: enough tiles, small work, short K, symbolic sizes, f32 and wgmma kernels', () => {
    expect(splitOf(defaultConfig(mm(512, 4096, 4096), facts))).toBeUndefined();
    expect(splitOf(defaultConfig(mm(4096, 4096, 4096), facts))).toBeUndefined();
    expect(splitOf(defaultConfig(mm(80, 64, 256), facts))).toBeUndefined(); // 2.6 MFLOP: a second launch costs more
    expect(splitOf(defaultConfig(mm(16, 64, 8192), facts))).toBeDefined();
    expect(splitOf(defaultConfig(mm(64, 4096, 224), facts))).toBeUndefined(); // 7 K tiles: less than 8 per part
    expect(splitOf(defaultConfig(mm(64, 4096, 4096, { 0: [0] }), facts))).toBeUndefined(); // M symbolic: how many tiles is unknown
    const f32 = programOf((a: Tensor, b: Tensor) => a.matmul(b), [{ shape: [64, 4096], dtype: 'float32' }, { shape: [4096, 4096], dtype: 'float32' }]).kernels[0];
    expect(splitOf(defaultConfig(f32, facts))).toBeUndefined();
    expect(candidateConfigs(f32, { ...facts, tf32: true }).some((c) => splitOf(c))).toBe(false);
    // sm_90a: a 128-row multiple takes the wgmma kernel; 64 rows take its one-warpgroup tiles,
    // K split into the parts that fill one wave (4 here: 32 tiles of 64×128 on 132 SMs).
    const hopper: GpuFacts = { arch: 90, archSpecific: true, smCount: 132 };
    expect(defaultConfig(mm(512, 4096, 4096), hopper)).toMatchObject({ variant: 'wgmma' });
    expect(defaultConfig(mm(64, 4096, 4096), hopper)).toMatchObject({ variant: 'wgmma', bm: 64, bn: 128, split: 4 });
    expect(defaultConfig(mm(8, 4096, 4096), hopper)).toMatchObject({ variant: 'mma', split: 5 }); // under 16 rows: the mma kernel's split-K
  });

  test('the tuner times split-K candidates beside the unsplit tiles; a stored split entry is used', () => {
    const k = mm(64, 4096, 4096);
    const cands = candidateConfigs(k, facts);
    const splits = cands.filter((c) => splitOf(c)) as MmaConfig[];
    expect(cands[0]).toEqual(defaultConfig(k, facts));
    expect(splits.map((c) => `${c.bm}x${c.bn}/${c.split}/${c.stages}`)).toEqual(['64x128/9/3', '64x128/16/3', '64x64/5/3', '64x64/10/3', '32x64/3/3', '32x64/6/3', '64x128/9/4']);
    expect(cands.filter((c) => !splitOf(c)).length).toBe(7); // the unsplit tiles and depths, as before
    for (const c of splits) expect(configFits(k, c, facts)).toBe(true);
    expect(configFits(k, { ...splits[0], split: 3 }, facts)).toBe(false);
    // Symbolic M: not split by default, but offered (the tuner measures at its tuning sizes).
    const dyn = mm(64, 4096, 4096, { 0: [0] });
    expect(candidateConfigs(dyn, facts).some((c) => splitOf(c))).toBe(true);
    // Enough tiles: no split candidates at all.
    expect(candidateConfigs(mm(512, 4096, 4096), facts).some((c) => splitOf(c))).toBe(false);
    // A symbolic batch: none either (the parts would share grid.z with the batch).
    const batched = programOf((a: Tensor, b: Tensor) => a.matmul(b), [f16(2, 64, 4096), f16(2, 4096, 4096)], { 0: [0], 1: [0] }).kernels[0];
    expect(batched.domain.length).toBe(3);
    expect(candidateConfigs(batched, facts).some((c) => splitOf(c))).toBe(false);
  });

  test('partials are combined in part order by plain adds: no atomics in either kernel', () => {
    const p = programOf((a: Tensor, b: Tensor) => a.matmul(b), [f16(64, 4096), f16(4096, 4096)]);
    const src = new CudaRenderer(p.plan.symbols, facts).renderKernel(p.kernels[0]);
    expect(src).not.toMatch(/atomic/i);
    expect(src).toContain('for (int q = 0; q < 9; q++) acc_e += pp[(long long)q * 262144 + t];');
  });

  test('every split-K case matches the interpreter in the emulator (default configurations: split where static)', async () => {
    const lowered = splitCases().map(lowerCase);
    const split = lowered.filter((l) => l.program.kernels.some((k) => splitOf(defaultConfig(k, facts))));
    expect(split.map((l) => l.c.name)).toEqual(splitCases().filter((c) => !c.dynamic).map((c) => c.name));
    expect(runAllEmu(await buildEmu(lowered, facts))).toEqual([]);
  }, 300_000);

  test('every split-K candidate of some cases (cp.async and element loads, dynamic rows) matches the interpreter in the emulator', async () => {
    const names = ['splitk-f16', 'splitk-bf16-bt', 'splitk-f16-scalar-b', 'splitk-dyn-rows'];
    const lowered = splitCases().filter((c) => names.includes(c.name)).map(lowerCase);
    expect(lowered.length).toBe(names.length);
    const variants = lowered.map((l) => l.program.kernels.map((k) => candidateConfigs(k, facts).filter((c) => splitOf(c))));
    expect(variants.every((v) => v[0].length >= 2)).toBe(true);
    const most = Math.max(...variants.map((v) => v[0].length));
    const builds = await Promise.all(
      Array.from({ length: most }, (_, j) => buildEmu(lowered, facts, (l) => variants[lowered.indexOf(l)].map((cs, i) => cs[Math.min(j, cs.length - 1)] ?? defaultConfig(l.program.kernels[i], facts)))),
    );
    expect(builds.flatMap((b) => runAllEmu(b))).toEqual([]);
  }, 600_000);

  test('an explicit split with an empty last part (9 K tiles in 4 parts of 3) still writes every partial', async () => {
    const c: CudaCase = { name: 'splitk-empty-part', fn: (x: Tensor, w: Tensor, b: Tensor) => x.matmul(w).add(b), specs: [f16(24, 288), f16(288, 40), f16(40)], ulps: 2 };
    const l = lowerCase(c);
    const cfg: MmaConfig = { kind: 'matmul', variant: 'mma', bm: 32, bn: 64, warpsM: 1, warpsN: 2, stages: 3, split: 4 };
    expect(runAllEmu(await buildEmu([l], facts, () => [cfg]))).toEqual([]);
    expect(runAllEmu(await buildEmu([l], facts, () => [{ ...cfg, stages: 1 }]))).toEqual([]);
  }, 300_000);
});

describe('split-K kernels compile with NVRTC without spills', () => {
  const nvrtcIt = addonInfo().nvrtc.available || process.env.KILN_REQUIRE_NVRTC === '1' ? it : it.skip;
  for (const target of ['sm_80', 'sm_90', 'sm_90a']) {
    nvrtcIt(`${target}: every candidate of every split-K case and of the benchmark's small-M shapes, both kernels`, async () => {
      const arch = Number(target.slice(3, 5));
      const f: GpuFacts = { arch, smCount: 132, ...(target.endsWith('a') ? { archSpecific: true } : {}) };
      const bench = (M: number, dtype: 'float16' | 'bfloat16'): CudaCase => ({ name: `bench-${M}`, fn: (a: Tensor, b: Tensor) => a.matmul(b), specs: [{ shape: [M, 4096], dtype }, { shape: [4096, 4096], dtype }] });
      const lowered = [...cudaCases().splitK, bench(64, 'float16'), bench(16, 'bfloat16')].map(lowerCase);
      const { source, variants } = renderUnit(lowered, f, true);
      const { info } = await compileUnit(source, 'splitk.cu', target);
      const names = variants.flatMap((v) => (splitOf(v.config) ? [`${v.name}__part`, v.name] : [v.name]));
      expect(names.filter((n) => n.endsWith('__part')).length).toBeGreaterThanOrEqual(cudaCases().splitK.length * 2);
      const problems = names.filter((n) => !info[n] || info[n].spillStores || info[n].spillLoads).map((n) => `${n}: ${JSON.stringify(info[n])}`);
      expect(problems).toEqual([]);
    }, 300_000);
  }
});
