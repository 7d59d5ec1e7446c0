/**
 * TF32 tensor cores for float32 matmuls (the `tf32` option) without a GPU: which kernels the
 * option moves to the TF32 variant (float32 matmuls on sm_80+, nothing else), its shared
 * memory, the rendered kernel (m16n8k8 tf32 MMAs on cvt.rna-rounded 32-bit fragment loads,
 * no ldmatrix), the emulated kernels (test/helpers/cuda-emu.h) against the interpreter for
 * every candidate configuration within the TF32 tolerance of scripts/gpu-check/cases.cjs
 * (`tf32Cases`), the option in the bundle key, and, with NVRTC, sm_80 and sm_90 builds of
 * every candidate without spills.
 */
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { build } from '../lib/api/build';
import { compile, readOptions } from '../lib/api/compile';
import { renderCuda } from '../lib/codegen/cuda';
import { buildCuda } from '../lib/engine/cuda';
import { keyInput, type ProgramSignature } from '../lib/engine/bundle-target';
import { bundleKey } from '../lib/cache';
import { lower } from '../lib/passes';
import { candidateConfigs, defaultConfig, geometry, TF32_BK, TF32_PAD_K, TF32_PAD_MN, tf32Enabled, type GpuConfig, type GpuFacts } from '../lib/passes/gpu';
import { addonInfo } from '../lib/runtime/native';
import { trace } from '../lib/tensor/trace';
import type { Tensor } from '../lib/tensor/tensor';
import { buildEmu, compileUnit, lowerCase, renderUnit, runAllEmu, type CudaCase, type Lowered } from './cuda-harness';

type T = Tensor;
const nvrtcIt = addonInfo().nvrtc.available || process.env.KILN_REQUIRE_NVRTC === '1' ? it : it.skip;
const TF32: GpuFacts = { arch: 90, tf32: true };
const f32 = (...shape: number[]) => ({ shape, dtype: 'float32' as const });
const f16 = (...shape: number[]) => ({ shape, dtype: 'float16' as const });

// eslint-disable-next-line @typescript-eslint/no-require-imports -- the case list is plain JS shared with the GPU suite
const { tf32Cases } = require('../scripts/gpu-check/cases.cjs') as { tf32Cases(): CudaCase[] };

const matmulOf = (p: ReturnType<typeof lower>) => p.kernels.find((k) => k.kind === 'matmul')!;
const mlp = lower(trace((x: T, w: T, b: T) => x.matmul(w).add(b).gelu(), [f32(4096, 1024), f32(1024, 1024), f32(1024)]));

describe('the tf32 option in launch decisions', () => {
  it('moves float32 matmuls to TF32 tensor cores on sm_80 and newer, only when asked', () => {
    const k = matmulOf(mlp);
    expect(defaultConfig(k, { arch: 90 })).toMatchObject({ variant: 'simt' });
    expect(defaultConfig(k, TF32)).toEqual({ kind: 'matmul', variant: 'tf32', bm: 128, bn: 128, warpsM: 2, warpsN: 4, stages: 3 });
    expect(defaultConfig(k, { arch: 80, tf32: true })).toMatchObject({ variant: 'tf32' });
    expect(defaultConfig(k, { arch: 75, tf32: true })).toMatchObject({ variant: 'simt' }); // no tf32 mma before Ampere
    expect(tf32Enabled({ arch: 75, tf32: true })).toBe(false);
    for (const c of candidateConfigs(k, TF32)) expect(c).toMatchObject({ variant: 'tf32' });
    expect(candidateConfigs(k, TF32).map((c) => (c as { stages: number }).stages)).toEqual([3, 3, 3, 3, 2, 2]);
    expect(candidateConfigs(k, { arch: 90 }).every((c) => (c as { variant: string }).variant === 'simt')).toBe(true);
  });

  it('leaves float16 matmuls and other kernels as they are', () => {
    const p = lower(trace((x: T, w: T) => x.matmul(w).softmax(-1), [f16(64, 64), f16(64, 32)]));
    for (const k of p.kernels) expect(candidateConfigs(k, TF32)).toEqual(candidateConfigs(k, { arch: 90 }));
  });

  it('element-loaded operands load synchronously; the ring fits every sm_80+ block', () => {
    const p = lower(trace((x: T, w: T) => x.matmul(w), [f32(13, 40), f32(40, 37)])); // N = 37: B is not in 16-byte chunks
    expect(candidateConfigs(matmulOf(p), TF32).every((c) => (c as { stages: number }).stages === 1)).toBe(true);
    const g = geometry(matmulOf(mlp), defaultConfig(matmulOf(mlp), TF32));
    expect(g.block).toEqual([256]);
    expect(g.sharedBytes).toBe(4 * 128 * 132); // the staged C tile outweighs 3 stages of 128×24 + 16×132 floats
    expect(g.sharedBytes).toBeLessThanOrEqual(99 * 1024);
  });

  it('fragment loads from shared memory are conflict-free (banks of the rendered addresses, per memory transaction)', () => {
    const lanes = Array.from({ length: 32 }, (_, lane) => ({ g: lane >> 2, t: lane & 3 }));
    const distinct = (words: number[]) => new Set(words.map((w) => w % 32)).size === words.length;
    // K-major rows: 64-bit loads of stored k 2t, 2t+1 of row g; a half-warp per transaction.
    const ldK = TF32_BK + TF32_PAD_K;
    for (const half of [lanes.slice(0, 16), lanes.slice(16)]) expect(distinct(half.flatMap(({ g, t }) => [g * ldK + 2 * t, g * ldK + 2 * t + 1]))).toBe(true);
    // M/N-major rows (bm or bn of 32, 64 or 128): 32-bit loads of k row 2t (or 2t + 1), column g.
    for (const mn of [32, 64, 128]) for (const dk of [0, 1]) expect(distinct(lanes.map(({ g, t }) => (2 * t + dk) * (mn + TF32_PAD_MN) + g))).toBe(true);
    expect(((TF32_BK + TF32_PAD_K) * 4) % 16).toBe(0); // rows stay 16-byte aligned for cp.async
    expect(TF32_PAD_MN % 4).toBe(0);
  });

  it('renders m16n8k8 tf32 MMAs on rounded 64- and 32-bit fragment loads', () => {
    const unit = renderCuda(mlp, TF32, mlp.kernels.map((k) => defaultConfig(k, TF32)));
    const src = unit.slice(unit.indexOf('__global__')); // the kernels, without the helpers
    expect(src).toContain('kiln_mma_tf32(acc[mi][ni], af[mi], bf[ni]);');
    expect(src).toContain('const uint2 lo = *reinterpret_cast<const uint2*>(a_s + r * 24 + kk + 2 * t);');
    expect(src).toContain('bf[ni][0] = kiln_tf32(b0[0]); bf[ni][1] = kiln_tf32(b0[132]);');
    expect(src).toContain('kiln_cp_async16(');
    expect(src).not.toMatch(/kiln_ldsm|fmaf\(a\[i\]/);
    expect(unit).toContain('mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32');
    expect(unit).toContain('cvt.rna.tf32.f32');
  });
});

describe('TF32 kernels in the emulator against the interpreter', () => {
  const cases = tf32Cases();
  // Every case with its default configuration, and the tile cases with every candidate.
  const everyCandidate = new Set(['tf32-tails', 'tf32-exact-tiles', 'tf32-exact-at-bt', 'tf32-bias-gelu']);
  const units: { l: Lowered; pick: number }[] = [];
  for (const c of cases) {
    const l = lowerCase(c);
    const n = everyCandidate.has(c.name) ? Math.max(...l.program.kernels.map((k) => candidateConfigs(k, TF32).length)) : 1;
    for (let pick = 0; pick < n; pick++) units.push({ l: { ...l, c: { ...c, name: `${c.name}#${pick}` } }, pick });
  }
  const pickOf = new Map(units.map((u) => [u.l, u.pick]));
  const configsOf = (l: Lowered): GpuConfig[] =>
    l.program.kernels.map((k) => {
      const all = candidateConfigs(k, TF32);
      return all[Math.min(pickOf.get(l) ?? 0, all.length - 1)];
    });

  it('every case runs on the TF32 kernel', () => {
    for (const { l } of units) expect(l.program.kernels.filter((k) => k.kind === 'matmul').map((k) => (defaultConfig(k, TF32) as { variant: string }).variant)).toContain('tf32');
  });

  it(`${units.length} programs (${cases.length} cases, the tile cases under every candidate) match within the TF32 tolerance`, async () => {
    const built = await buildEmu(
      units.map((u) => u.l),
      TF32,
      configsOf,
    );
    expect(runAllEmu(built)).toEqual([]);
  }, 600_000);
});

describe('the tf32 option in the bundle key', () => {
  const sig: ProgramSignature = { name: 'mm', fnSource: '(x, w) => x.matmul(w)', inputs: [{ dtype: 'float32', shape: [8, 8] }, { dtype: 'float32', shape: [8, 8] }] };
  const key = (s: ProgramSignature, target: string) => bundleKey(keyInput(s, target, 'cuda:kiln-test')).key;

  it('changes a CUDA key, and leaves keys without it (and CPU keys) as they were', () => {
    expect(key({ ...sig, tf32: true }, 'sm_90')).not.toBe(key(sig, 'sm_90'));
    expect(key({ ...sig, tf32: false }, 'sm_90')).toBe(key(sig, 'sm_90'));
    expect(key({ ...sig, tf32: true }, 'compute_80')).not.toBe(key(sig, 'compute_80'));
    expect(keyInput({ ...sig, tf32: true }, 'sm_90', 'x').options).toEqual({ tf32: true });
    expect(key({ ...sig, tf32: true }, 'cpu-x64+avx2')).toBe(key(sig, 'cpu-x64+avx2')); // no effect on the CPU: one CPU bundle
  });
});

describe('the tf32 option in the API', () => {
  it('is a boolean, off by default', () => {
    const f = (x: T) => x;
    expect(readOptions(f, {}).tf32).toBe(false);
    expect(readOptions(f, { tf32: true }).tf32).toBe(true);
    expect(() => readOptions(f, { tf32: 1 })).toThrow(/tf32 must be true or false/);
  });

  nvrtcIt('kiln.build for a CUDA target builds a bundle of its own with tf32 (the option or a compiled function\'s)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-tf32-'));
    try {
      const mm = (x: T, w: T) => x.matmul(w);
      const ex = [f32(64, 32), f32(32, 48)];
      const off = await build(mm, ex, { target: 'sm_90', cacheDir: dir });
      const on = await build(mm, ex, { target: 'sm_90', cacheDir: dir, tf32: true });
      expect(on.key).not.toBe(off.key);
      const compiled = compile(mm, { device: 'cuda', tf32: true });
      expect((await build(compiled as never, ex, { target: 'sm_90', cacheDir: dir })).key).toBe(on.key);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe('NVRTC builds of the TF32 kernels', () => {
  for (const arch of [80, 90]) {
    nvrtcIt(`every candidate compiles for sm_${arch} without spills`, async () => {
      const lowered = tf32Cases().map(lowerCase);
      const unit = renderUnit(lowered, { arch, tf32: true }, true);
      const { info } = await compileUnit(unit.source, `tf32-sm_${arch}.cu`, `sm_${arch}`);
      const tf32 = unit.variants.filter((v) => v.config.kind === 'matmul' && v.config.variant === 'tf32');
      expect(tf32.length).toBeGreaterThan(20);
      for (const v of tf32) expect({ name: v.name, spills: info[v.name]?.spillStores, loads: info[v.name]?.spillLoads }).toEqual({ name: v.name, spills: 0, loads: 0 });
    }, 300_000);
  }

  nvrtcIt('buildCuda builds the option (sm_90, no spills)', async () => {
    const g = trace((x: T, w: T, b: T) => x.matmul(w).add(b).gelu(), [f32(4096, 1024), f32(1024, 1024), f32(1024)]);
    const b = await buildCuda(g, 'sm_90', { tf32: true });
    const mm = b.program.kernels.find((k) => k.kind === 'matmul')!;
    expect(b.resources[mm.name]).toMatchObject({ spillStores: 0, spillLoads: 0, config: { variant: 'tf32' } });
    expect(b.source).toContain('kiln_mma_tf32(');
    const plain = await buildCuda(g, 'sm_90');
    expect(plain.resources[mm.name].config).toMatchObject({ variant: 'simt' });
  }, 120_000);
});
