/**
 * The CUDA engine without a GPU: `buildCuda` (NVRTC only) gives a cubin whose ELF header
 * says the requested SM, a plan whose every step has a grid and block, and a resource report
 * per kernel; launch geometry for dynamic dims; tuning tables as data; the autotuner's
 * choice logic. Skipped without NVRTC unless KILN_REQUIRE_NVRTC=1.
 */
import { buildCuda, chooseConfigs, cudaFacts as targetFacts, cudaTarget } from '../lib/engine/cuda';
import { cudaFacts } from '../lib/engine/cuda-facts';
import { pickFastest } from '../lib/engine/cuda-tune';
import { lower } from '../lib/passes';
import { candidateConfigs, defaultConfig, geometry, type GpuConfig } from '../lib/passes/gpu';
import { parseGridDim } from '../lib/runtime/cuda';
import { readCubinArch } from '../lib/runtime/cuda-driver';
import { addonInfo } from '../lib/runtime/native';
import { chooseBackend } from '../lib/runtime/select';
import * as F from '../lib/tensor/functional';
import { trace } from '../lib/tensor/trace';
import type { Tensor } from '../lib/tensor/tensor';

type T = Tensor;
const info = addonInfo();
const nvrtcIt = info.nvrtc.available || process.env.KILN_REQUIRE_NVRTC === '1' ? it : it.skip;
const f16 = (...shape: number[]) => ({ shape, dtype: 'float16' as const });

const mlp = trace(
  (x: T, g: T, w1: T, w2: T) => x.add(F.layerNorm(x, g).matmul(w1).gelu().matmul(w2)),
  [f16(16, 64), f16(64), f16(64, 256), f16(256, 64)],
  { dynamic: { 0: [0] } },
);

describe('buildCuda', () => {
  for (const sm of [90, 80]) {
    nvrtcIt(`builds an sm_${sm} cubin and a launch plan without a GPU`, async () => {
      const b = await buildCuda(mlp, `sm_${sm}`);
      expect(b.target).toEqual({ target: `sm_${sm}`, kind: 'cubin', arch: sm });
      expect(readCubinArch(b.image).sm).toBe(sm);
      expect(b.plan.steps.map((s) => s.kernel)).toEqual(b.program.kernels.map((k) => k.name));
      for (const s of b.plan.steps) {
        expect(s.grid!.length).toBeGreaterThan(0);
        for (const g of s.grid!) expect(() => parseGridDim(g)).not.toThrow();
        expect(s.block![0]).toBeGreaterThan(0);
        expect(b.source).toContain(`__launch_bounds__(${s.block![0]}, 1) ${s.kernel}(`);
      }
      for (const k of b.program.kernels) {
        const r = b.resources[k.name];
        expect(r).toMatchObject({ entry: true, spillStores: 0, spillLoads: 0 });
        expect(r.registers).toBeGreaterThan(0);
      }
      expect(Object.keys(b.tuning)).toEqual(b.program.kernels.map((k) => k.name));
    }, 120_000);
  }

  nvrtcIt('builds a split-K matmul (64 rows) as two kernels sharing a partials temp, with resources for both', async () => {
    const g = trace((x: T, w: T, b: T) => x.matmul(w).add(b).gelu(), [f16(64, 2048), f16(2048, 512), f16(512)]);
    for (const sm of [80, 90]) {
      const b = await buildCuda(g, `sm_${sm}`, { smCount: 132 });
      const [k] = b.program.kernels;
      expect(b.configs[0]).toEqual({ kind: 'matmul', variant: 'mma', bm: 64, bn: 128, warpsM: 2, warpsN: 2, stages: 3, split: 8 });
      expect(b.plan.steps.map((s) => s.kernel)).toEqual([`${k.name}__part`, k.name]);
      const temp = b.plan.buffers[b.plan.buffers.length - 1];
      expect(temp).toMatchObject({ role: 'temp', dtype: 'float32', elems: 8 * 64 * 512 });
      expect(b.plan.steps[0]).toMatchObject({ grid: [1, 4, 8], block: [128] });
      expect(b.plan.steps[1]).toMatchObject({ grid: [128], block: [256], sharedBytes: 0 });
      expect(b.resources[`${k.name}__part`]).toMatchObject({ threads: 128, dynamicSharedBytes: b.plan.steps[0].sharedBytes, spillStores: 0, spillLoads: 0, config: b.configs[0] });
      expect(b.resources[k.name]).toMatchObject({ threads: 256, dynamicSharedBytes: 0, spillStores: 0, spillLoads: 0 });
      expect(b.resources[`${k.name}__part`].registers).toBeGreaterThan(b.resources[k.name].registers);
      // A stored unsplit entry is replayed as such: one kernel again.
      const unsplit = candidateConfigs(k, targetFacts(b.target, { smCount: 132 })).find((c) => c.kind === 'matmul' && c.variant === 'mma' && !c.split)!;
      const again = await buildCuda(g, `sm_${sm}`, { smCount: 132, tuning: { [k.name]: unsplit }, program: b.program });
      expect(again.plan.steps.map((s) => s.kernel)).toEqual([k.name]);
    }
  }, 120_000);

  nvrtcIt('builds PTX for compute_90', async () => {
    const b = await buildCuda(mlp, 'compute_90');
    expect(b.target.kind).toBe('ptx');
    expect(b.image.toString('utf8')).toContain('.target sm_90');
  }, 120_000);

  it('parses targets', () => {
    expect(cudaTarget('sm_86')).toEqual({ target: 'sm_86', kind: 'cubin', arch: 86 });
    expect(() => cudaTarget('gfx90a')).toThrow(/sm_XY or compute_XY/);
  });
});

describe('launch geometry and tuning tables', () => {
  const p = lower(mlp);
  const facts = { arch: 90 };

  it('grids of dynamic dims are ceiling divisions the runtime parses', () => {
    const grids = p.kernels.map((k) => geometry(k, defaultConfig(k, facts)).grid);
    expect(grids.flat().some((g) => typeof g === 'string' && g.startsWith('cdiv(s0'))).toBe(true);
    for (const g of grids.flat()) expect(() => parseGridDim(g)).not.toThrow();
  });

  it('a stored tuning table is used where it fits and ignored where it does not', () => {
    const [k] = p.kernels;
    const alt = candidateConfigs(k, facts)[1];
    expect(chooseConfigs(p, facts, { [k.name]: alt })[0]).toEqual(alt);
    const bogus = { kind: 'reduce', block: 96, threads: 3, vec: 1, cache: 'none' } as GpuConfig;
    expect(chooseConfigs(p, facts, { [k.name]: bogus })[0]).toEqual(defaultConfig(k, facts));
  });

  it('every candidate is a distinct configuration, the default first', () => {
    for (const k of p.kernels) {
      const c = candidateConfigs(k, facts);
      expect(c[0]).toEqual(defaultConfig(k, facts));
      expect(new Set(c.map((x) => JSON.stringify(x))).size).toBe(c.length);
    }
  });

  it('the tuner keeps the default unless another candidate is 3% faster, and skips untimed ones', () => {
    const c = (block: number): GpuConfig => ({ kind: 'elementwise', block, vec: 4 });
    expect(pickFastest([{ kernel: 'E', config: c(256), us: 10 }, { kernel: 'E', config: c(128), us: 9.8 }]).E).toEqual(c(256));
    expect(pickFastest([{ kernel: 'E', config: c(256), us: 10 }, { kernel: 'E', config: c(128), us: 9 }]).E).toEqual(c(128));
    expect(pickFastest([{ kernel: 'E', config: c(256), us: null, why: 'spills' }, { kernel: 'E', config: c(512), us: 12 }]).E).toEqual(c(512));
    expect(pickFastest([{ kernel: 'E', config: c(256), us: null }])).toEqual({});
  });
});

describe("device 'auto' and CUDA", () => {
  it('reports why CUDA is not chosen, naming what is missing', () => {
    const facts = cudaFacts();
    if (!facts.driver.available) expect(facts.driver.reason.length).toBeGreaterThan(0);
    if (!facts.nvrtc.available) expect(facts.nvrtc.reason.length).toBeGreaterThan(0);
    const choice = chooseBackend({ ...facts, cxx: { available: true, path: 'c++' } }, {});
    if (!info.driver.available) expect(choice).toMatchObject({ backend: 'cpu', reason: expect.stringMatching(/CPU backend will be used/) });
  });
});
