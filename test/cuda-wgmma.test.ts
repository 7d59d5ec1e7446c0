/**
 * The wgmma matmul (Hopper, sm_90a) without a GPU: when it is chosen; the index math of lib/codegen/cuda-wgmma.ts
 * (where the loaders put each element, the matrix descriptors, the accumulator fragment)
 * against the PTX ISA's canonical 128B-swizzle layouts and fragment layout; the generated
 * loaders' expressions against that math; refusals; and, with NVRTC, sm_90a builds without
 * spills. That the hardware agrees is scripts/gpu-check/75-wgmma.cjs's job.
 */
import { renderCuda } from '../lib/codegen/cuda';
import { wgmmaAccCoord, wgmmaDescriptor, wgmmaDescs, wgmmaKMajorChunk, wgmmaMnMajorChunk, wgmmaSwizzle, wgmmaTileOf } from '../lib/codegen/cuda-wgmma';
import { bundleKey } from '../lib/cache';
import { keyInput, type ProgramSignature } from '../lib/engine/bundle-target';
import { buildCuda, chooseConfigs, cudaFacts } from '../lib/engine/cuda';
import { lower } from '../lib/passes';
import { candidateConfigs, configFits, defaultConfig, gpuPlan, wgmmaProblem, type GpuConfig, type GpuFacts, type WgmmaConfig } from '../lib/passes/gpu';
import { addonInfo } from '../lib/runtime/native';
import { trace } from '../lib/tensor/trace';
import type { Tensor } from '../lib/tensor/tensor';

type T = Tensor;
const nvrtcIt = addonInfo().nvrtc.available || process.env.KILN_REQUIRE_NVRTC === '1' ? it : it.skip;
const SM90A: GpuFacts = { arch: 90, archSpecific: true };
const wg = (bm: 64 | 128, bn: 128 | 192 | 256, stages: number): WgmmaConfig => ({ kind: 'matmul', variant: 'wgmma', bm, bn, stages });
const spec = (dtype: 'float16' | 'bfloat16' | 'float32', ...shape: number[]) => ({ shape, dtype });
const isWgmma = (c: GpuConfig): c is WgmmaConfig => c.kind === 'matmul' && c.variant === 'wgmma';

/**
 * The ISA's canonical layouts (CUTLASS's GMMA atoms) for the 128B swizzle, as the tensor
 * cores read them: byte address of element (mn, k) of an instruction operand (MN × 16)
 * described by `d`. K-major: 8-row groups SBO apart, rows 128 B apart, K contiguous.
 * MN-major: 64-element MN blocks LBO apart, K rows 128 B apart in 8-row groups SBO apart.
 * The swizzle applies to the whole address (the ring is 1024-byte aligned).
 */
function isaAddress(d: { start: number; lbo: number; sbo: number }, major: 'k' | 'mn', mn: number, k: number): number {
  const linear =
    major === 'k' ? d.start + (mn >> 3) * d.sbo + (mn & 7) * 128 + k * 2 : d.start + (mn >> 6) * d.lbo + (mn & 63) * 2 + (k >> 3) * d.sbo + (k & 7) * 128;
  return wgmmaSwizzle(linear);
}

describe('wgmma index math', () => {
  it('the 128B swizzle permutes 16-byte chunks within each 128-byte row of a 1024-byte atom', () => {
    const seen = new Set<number>();
    for (let off = 0; off < 1024; off += 16) {
      const s = wgmmaSwizzle(off);
      expect(s >> 7).toBe(off >> 7); // same row
      seen.add(s);
    }
    expect(seen.size).toBe(64);
    expect(wgmmaSwizzle(3 * 128 + 16)).toBe(3 * 128 + (1 ^ 3) * 16);
  });

  it.each([64, 128])('the A loader (bm=%i) puts every element where each warpgroup\'s descriptors read it', (bm) => {
    const written = new Map<number, string>();
    for (let row = 0; row < bm; row++)
      for (let kg = 0; kg < 64; kg++) {
        const at = wgmmaKMajorChunk(row, kg >> 3) + (kg & 7) * 2;
        expect(at).toBeLessThan(bm * 128);
        expect(written.has(at)).toBe(false);
        written.set(at, `${row},${kg}`);
      }
    for (let w = 0; w < bm / 64; w++)
      for (let kk = 0; kk < 4; kk++) {
        const { a } = wgmmaDescs(w, kk, 'k');
        for (let m = 0; m < 64; m++) for (let k = 0; k < 16; k++) expect(written.get(isaAddress(a, 'k', m, k))).toBe(`${w * 64 + m},${kk * 16 + k}`);
      }
  });

  it.each([128, 256])('the K-major B loader (bn=%i) matches the descriptors', (bn) => {
    const written = new Map<number, string>();
    for (let n = 0; n < bn; n++) for (let kg = 0; kg < 64; kg++) written.set(wgmmaKMajorChunk(n, kg >> 3) + (kg & 7) * 2, `${n},${kg}`);
    expect(written.size).toBe(bn * 64);
    for (let kk = 0; kk < 4; kk++) {
      const { b } = wgmmaDescs(0, kk, 'k');
      for (let n = 0; n < bn; n++) for (let k = 0; k < 16; k++) expect(written.get(isaAddress(b, 'k', n, k))).toBe(`${n},${kk * 16 + k}`);
    }
  });

  it.each([128, 256])('the MN-major B loader (bn=%i) matches the descriptors (transposed B)', (bn) => {
    const written = new Map<number, string>();
    for (let kg = 0; kg < 64; kg++)
      for (let n = 0; n < bn; n++) {
        const at = wgmmaMnMajorChunk(kg, n >> 3) + (n & 7) * 2;
        expect(at).toBeLessThan(bn * 128);
        written.set(at, `${n},${kg}`);
      }
    expect(written.size).toBe(bn * 64);
    for (let kk = 0; kk < 4; kk++) {
      const { b } = wgmmaDescs(0, kk, 'n');
      for (let n = 0; n < bn; n++) for (let k = 0; k < 16; k++) expect(written.get(isaAddress(b, 'mn', n, k))).toBe(`${n},${kk * 16 + k}`);
    }
  });

  it.each([
    [1, 1],
    [4, 16],
    [8, 3],
    [13, 5],
    [64, 32],
  ])('orders the blocks of a %i×%i tile grid as a bijection, 8 tile rows per group', (tm, tn) => {
    const seen = new Set<number>();
    for (let pid = 0; pid < tm * tn; pid++) {
      const t = wgmmaTileOf(pid, tm, tn);
      expect(t.tm).toBeGreaterThanOrEqual(0);
      expect(t.tm).toBeLessThan(tm);
      expect(t.tn).toBeLessThan(tn);
      expect(Math.floor(t.tm / 8)).toBe(Math.floor(pid / (8 * tn)));
      seen.add(t.tm * tn + t.tn);
    }
    expect(seen.size).toBe(tm * tn);
  });

  it('encodes descriptors as the ISA lays them out', () => {
    const d = wgmmaDescriptor({ start: 0x2a400 + 96, lbo: 8192, sbo: 1024 });
    expect(d & 0x3fffn).toBe(BigInt((0x2a400 + 96) >> 4));
    expect((d >> 16n) & 0x3fffn).toBe(512n);
    expect((d >> 32n) & 0x3fffn).toBe(64n);
    expect((d >> 49n) & 7n).toBe(0n); // base offset: the ring is 1024-byte aligned
    expect(d >> 62n).toBe(1n); // 128B swizzle
  });

  it.each([128, 256])('maps the m64n%ik16 accumulators one-to-one onto the 64×N tile, warp by warp as mma.m16n8', (n) => {
    const seen = new Set<number>();
    for (let t = 0; t < 128; t++)
      for (let j = 0; j < n / 2; j++) {
        const { row, col } = wgmmaAccCoord(t, j);
        // The m16n8 C fragment of warp t/32, n8 tile j/4: c[q] at (g + 8*(q/2), 2*(lane%4) + q%2).
        const lane = t % 32;
        const q = j % 4;
        expect(row).toBe(16 * Math.floor(t / 32) + Math.floor(lane / 4) + 8 * Math.floor(q / 2));
        expect(col).toBe(8 * Math.floor(j / 4) + 2 * (lane % 4) + (q % 2));
        seen.add(row * n + col);
      }
    expect(seen.size).toBe(64 * n);
    expect(Math.max(...seen)).toBe(64 * n - 1);
  });
});

describe('wgmma kernels', () => {
  const xw = trace((x: T, w: T) => x.matmul(w), [spec('float16', 256, 512), spec('float16', 512, 512)]);
  const xwt = trace((x: T, w: T, b: T) => x.matmul(w.transpose(0, 1)).add(b).gelu(), [spec('bfloat16', 256, 512), spec('bfloat16', 256, 512), spec('bfloat16', 256)]);

  it('renders loaders whose expressions are the tested index math', () => {
    for (const [graph, bLayout] of [[xw, 'n'], [xwt, 'k']] as const) {
      const p = lower(graph);
      const c = wg(128, 256, 4);
      const name = p.kernels.find((k) => k.kind === 'matmul')!.name;
      const src = renderCuda(p, SM90A, chooseConfigs(p, SM90A, { [name]: c }));
      // The C offset expressions, with C's integer division.
      const dsts = [...src.matchAll(/kiln_cp_async16\((\w) \+ ([^,]+), /g)].map((m) => ({ tile: m[1], expr: m[2].replace(/(\w+) \/ (\d+)/g, 'Math.trunc($1 / $2)') }));
      expect(dsts.map((d) => d.tile)).toEqual(['a', 'b']);
      const aAt = new Function('row', 'ch', `return ${dsts[0].expr};`) as (r: number, c: number) => number;
      for (let row = 0; row < 128; row++) for (let ch = 0; ch < 8; ch++) expect(aAt(row, ch)).toBe(wgmmaKMajorChunk(row, ch));
      if (bLayout === 'k') {
        const bAt = new Function('row', 'ch', `return ${dsts[1].expr};`) as (r: number, c: number) => number;
        for (let row = 0; row < 256; row++) for (let ch = 0; ch < 8; ch++) expect(bAt(row, ch)).toBe(wgmmaKMajorChunk(row, ch));
      } else {
        const bAt = new Function('kr', 'ch', `return ${dsts[1].expr};`) as (r: number, c: number) => number;
        for (let kr = 0; kr < 64; kr++) for (let ch = 0; ch < 32; ch++) expect(bAt(kr, ch)).toBe(wgmmaMnMajorChunk(kr, ch));
      }
      const ptx = graph === xw ? 'f16' : 'bf16';
      expect(src).toContain(`wgmma.mma_async.sync.aligned.m64n256k16.f32.${ptx}.${ptx}`);
      expect(src).toContain(`p, 1, 1, 0, ${bLayout === 'n' ? 1 : 0};`);
      for (let kk = 0; kk < 4; kk++) {
        const d = wgmmaDescs(0, kk, bLayout);
        expect(src).toContain(`desc(sa + ${d.a.start}, ${d.a.lbo}, ${d.a.sbo}), db = desc(sb + ${d.b.start}, ${d.b.lbo}, ${d.b.sbo})`);
      }
    }
  });

  it('zero-fills edge tiles: the loaders of a 200×136×72 matmul copy exactly the chunks inside A and B', () => {
    const [M, N, K] = [200, 136, 72];
    const [bm, bn] = [128, 128] as const;
    for (const bLayout of ['n', 'k'] as const) {
      const g = trace((x: T, w: T) => x.matmul(bLayout === 'k' ? w.transpose(0, 1) : w), [spec('float16', M, K), bLayout === 'k' ? spec('float16', N, K) : spec('float16', K, N)]);
      const p = lower(g);
      const src = renderCuda(p, SM90A, chooseConfigs(p, SM90A, { [p.kernels[0].name]: wg(bm, bn, 4) }));
      expect(src).toContain('const int KT = (K + 63) / 64;');
      // Each loader: its index line, its predicate and its copy, as JS (C's int division truncates).
      const js = (e: string) => e.replace(/\(int(64_t)?\)/g, '').replace(/(\w+|\([^()]*\)) \/ (\d+)/g, 'Math.trunc($1 / $2)');
      const loaders = [...src.matchAll(/const int (\w+) = ([^,\n]+), ch = ([^;\n]+);\n\s*const bool ok = ([^;]+);\n\s*kiln_cp_async16\([^\n]*?, ([AB]) \+ \(ok \? ([^:]+) : 0\), ok\);/g)];
      expect(loaders.map((m) => m[5])).toEqual(['A', 'B']);
      for (const [, v, vExpr, chExpr, okExpr, operand, at] of loaders) {
        const f = new Function('c', 'm0', 'n0', 'k0', 'M', 'N', 'K', `const ${v} = ${js(vExpr)}, ch = ${js(chExpr)}; return [${js(okExpr)}, ${js(at)}];`) as (...a: number[]) => [boolean, number];
        const count = operand === 'A' ? bm * 8 : bLayout === 'k' ? bn * 8 : 64 * (bn / 8);
        for (const [m0, n0, k0] of [[0, 0, 0], [128, 128, 64], [128, 0, 0], [0, 128, 64]]) {
          const want = new Set<number>();
          if (operand === 'A') for (let m = m0; m < Math.min(m0 + bm, M); m++) for (let kk = k0; kk < Math.min(k0 + 64, K); kk += 8) want.add(m * K + kk);
          else if (bLayout === 'n') for (let kk = k0; kk < Math.min(k0 + 64, K); kk++) for (let n = n0; n < Math.min(n0 + bn, N); n += 8) want.add(kk * N + n);
          else for (let n = n0; n < Math.min(n0 + bn, N); n++) for (let kk = k0; kk < Math.min(k0 + 64, K); kk += 8) want.add(n * K + kk);
          const got: number[] = [];
          for (let c = 0; c < count; c++) {
            const [ok, off] = f(c, m0, n0, k0, M, N, K);
            if (ok) got.push(off);
          }
          expect(got.length).toBe(want.size); // no chunk twice
          expect(new Set(got)).toEqual(want);
        }
      }
    }
    // A size the tiles divide renders no test at all (the kernel measured on hardware).
    const exact = lower(xw);
    const plain = renderCuda(exact, SM90A, chooseConfigs(exact, SM90A, { [exact.kernels[0].name]: wg(128, 256, 4) }));
    expect(plain).not.toContain('const bool ok');
    expect(plain).toContain('const int KT = K / 64;');
  });

  it('is the default and the first candidates on sm_90a where it runs, and nowhere else', () => {
    const isWg = (c: GpuConfig) => c.kind === 'matmul' && c.variant === 'wgmma';
    const k = lower(xw).kernels[0]; // 256×512×512: 2×2 tiles of 128×256 cannot fill 132 SMs; K too short to split
    expect(defaultConfig(k, SM90A)).toEqual(wg(128, 128, 6));
    expect(candidateConfigs(k, SM90A).slice(0, 2)).toEqual([wg(128, 128, 6), wg(128, 256, 4)]);
    expect(candidateConfigs(k, SM90A).filter((c) => !isWg(c)).length).toBeGreaterThan(2); // mma tiles too: the tuner decides
    const big = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 4096, 4096), spec('float16', 4096, 4096)])).kernels[0];
    expect(defaultConfig(big, { ...SM90A, smCount: 132 })).toEqual(wg(128, 256, 4));
    // Not on sm_90, not with KILN_CUDA_WGMMA=0 (facts.wgmma false), not over a broadcast batch.
    for (const facts of [{ arch: 90 }, { ...SM90A, wgmma: false }]) expect(candidateConfigs(k, facts).some(isWg)).toBe(false);
    // 80 rows: less than a tile row and a K too short to split, so not the default; an edge tile the tuner may time.
    const odd = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 80, 512), spec('float16', 512, 512)])).kernels[0];
    expect(isWg(defaultConfig(odd, SM90A))).toBe(false);
    expect(candidateConfigs(odd, SM90A).some(isWg)).toBe(true);
    // x[4, 256, 512] @ w[512, 512] folds into one 1024-row GEMM (kernel.ts, collapse): wgmma's.
    const linear = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 4, 256, 512), spec('float16', 512, 512)])).kernels[0];
    expect(linear.domain).toEqual([1024, 512]);
    expect(defaultConfig(linear, SM90A)).toEqual(wg(128, 128, 6));
    // 32 blocks of 128×128 on 132 SMs: the tuner also times one-warpgroup (64-row) tiles; a
    // matmul that fills the GPU with 128-row tiles is not offered them.
    const small = (kk: typeof k) => candidateConfigs(kk, { ...SM90A, smCount: 132 }).filter((c) => isWg(c) && c.bm === 64);
    expect(small(linear)).toEqual([wg(64, 256, 4), wg(64, 128, 6)]);
    expect(small(big)).toEqual([]);
    // Rows read through a transpose do not fold: the batch stays, broadcast over w.
    const bcast = lower(trace((x: T, w: T) => x.transpose(0, 1).matmul(w), [spec('float16', 256, 4, 512), spec('float16', 512, 512)])).kernels[0];
    expect(bcast.domain).toEqual([4, 256, 512]);
    expect(wgmmaProblem(bcast, wg(128, 256, 4), SM90A)).toBeUndefined(); // it could run it (an explicit entry)
    expect(candidateConfigs(bcast, SM90A).some(isWg)).toBe(false); // but a broadcast batch is not offered yet
    const both = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 4, 256, 512), spec('float16', 4, 512, 512)])).kernels[0];
    expect(defaultConfig(both, SM90A)).toEqual(wg(128, 128, 6));
    // Few blocks and a K long enough: 64×128 in the parts that fill one wave (above, and the
    // split-K test below); a dynamic M keeps 128-row tiles (its large sizes); a static one that
    // fills half the SMs too.
    const longK = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 128, 4096), spec('float16', 4096, 4096)])).kernels[0];
    expect(defaultConfig(longK, { ...SM90A, smCount: 132 })).toEqual({ ...wg(64, 128, 6), split: 2 }); // 64 tiles, 2 parts
    const dynLinear = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 1024, 512), spec('float16', 512, 512)], { dynamic: { 0: [0] } })).kernels[0];
    expect(defaultConfig(dynLinear, SM90A)).toEqual(wg(128, 128, 6));
    const half = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 512, 4096), spec('float16', 4096, 4096)])).kernels[0];
    expect(defaultConfig(half, { ...SM90A, smCount: 132 })).toEqual(wg(128, 128, 6)); // 128 blocks
  });

  it('offers 128×192 tiles to the tuner where they fill the waves better than both 128-row tiles', () => {
    const facts = { ...SM90A, smCount: 132 };
    const wide = (M: number, N: number, K: number) =>
      candidateConfigs(lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', M, K), spec('float16', K, N)])).kernels[0], facts).filter(
        (c) => isWgmma(c) && c.bn === 192 && !c.split,
      );
    expect(wide(1024, 3072, 768)).toEqual([wg(128, 192, 4)]); // 128 blocks, against 96 (128×256) and 192 (128×128)
    expect(wide(1024, 2304, 768)).toEqual([wg(128, 192, 4)]); // 96, against 72 and 144
    expect(wide(4096, 4096, 4096)).toEqual([]); // 128×256 fills 4 waves almost exactly
    expect(defaultConfig(lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 1024, 768), spec('float16', 768, 3072)])).kernels[0], facts)).toMatchObject({ bm: 128, bn: 128 }); // never the heuristic's
    // The kernel: m64n192k16, three 64-column atoms of an N-contiguous B per K tile.
    const p = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 256, 512), spec('float16', 512, 384)]));
    const src = renderCuda(p, SM90A, chooseConfigs(p, SM90A, { [p.kernels[0].name]: wg(128, 192, 4) }));
    expect(src).toContain('wgmma.mma_async.sync.aligned.m64n192k16.f32.f16.f16');
    expect(src).toContain('const int kr = c / 24, ch = c % 24;');
    expect(wgmmaProblem(p.kernels[0], { ...wg(128, 192, 4), bn: 160 as 192 }, SM90A)).toMatch(/bn must be 128, 192 or 256/);
  });

  it('splits K for the tuner where its tiles leave SMs idle: part kernels over equal K ranges, then the combine', () => {
    const short = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 64, 4096), spec('float16', 4096, 4096)])).kernels[0];
    const facts = { ...SM90A, smCount: 132 };
    const splits = candidateConfigs(short, facts).filter((c) => isWgmma(c) && c.split);
    // Each tile at about two blocks per SM, and at the most parts that fit one wave where
    // that differs (64×128: 32 tiles, 4 parts; 128×192: 22 tiles, 6 parts).
    expect(splits.map((c) => [(c as WgmmaConfig).bm, (c as WgmmaConfig).bn, (c as WgmmaConfig).split])).toEqual([
      [64, 128, 4], // the default, first
      [64, 256, 8],
      [64, 128, 8],
      [128, 128, 8],
      [128, 128, 4],
      [128, 192, 8],
      [128, 192, 6],
    ]);
    expect(defaultConfig(short, facts)).toEqual({ ...wg(64, 128, 6), split: 4 }); // 32 tiles: 4 parts fill one wave
    // A matmul that fills the GPU is offered no split.
    const big = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 4096, 4096), spec('float16', 4096, 4096)])).kernels[0];
    expect(candidateConfigs(big, facts).some((c) => isWgmma(c) && c.split)).toBe(false);
    // Two steps sharing a partials buffer: [part][M][N] float32, then the combine's launch.
    const p = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 64, 2048), spec('float16', 2048, 512)]));
    const cfg = { ...wg(64, 128, 6), split: 4 };
    const configs = chooseConfigs(p, SM90A, { [p.kernels[0].name]: cfg });
    const plan = gpuPlan(p.plan, p.kernels, configs);
    expect(plan.steps.map((s) => [s.kernel, s.grid])).toEqual([[`${p.kernels[0].name}__part`, [1, 4, 4]], [p.kernels[0].name, [128]]]);
    expect(plan.buffers[plan.buffers.length - 1]).toMatchObject({ dtype: 'float32', elems: 4 * 64 * 512, role: 'temp' });
    const src = renderCuda(p, SM90A, configs);
    expect(src).toContain('const int KTall = K / 64, kpp = (KTall + 3) / 4, kb = part * kpp;');
    expect(src).toContain('load(s, (kb + (int)s) * 64)');
    expect(src).toContain('P[gm * N + gn] = sC[(e / 128) * 132 + e % 128];');
    expect(src).toContain('for (int q = 0; q < 4; q++) acc_e += pp[(long long)q * 32768 + t];');
    expect(wgmmaProblem(p.kernels[0], { ...cfg, split: 1 }, SM90A)).toMatch(/split must be an integer >= 2/);
  });

  nvrtcIt('builds split-K wgmma for sm_90a without spills (both kernels)', async () => {
    const g = trace((x: T, w: T, b: T) => x.matmul(w.transpose(0, 1)).add(b).gelu(), [spec('bfloat16', 96, 1000), spec('bfloat16', 256, 1000), spec('bfloat16', 256)]);
    const p = lower(g);
    const name = p.kernels.find((k) => k.kind === 'matmul')!.name;
    const b = await buildCuda(g, { target: 'sm_90a', kind: 'cubin', arch: 90 }, { program: p, tuning: { [name]: { ...wg(128, 128, 4), split: 3 } } });
    expect(Object.keys(b.resources)).toEqual(expect.arrayContaining([`${name}__part`, name]));
    for (const r of Object.values(b.resources)) expect(r).toMatchObject({ spillStores: 0, spillLoads: 0 });
  }, 120_000);

  it('refuses what it cannot run, with the reason', () => {
    const k = lower(xw).kernels[0];
    expect(wgmmaProblem(k, wg(128, 256, 4), SM90A)).toBeUndefined();
    expect(configFits(k, wg(128, 256, 4), SM90A)).toBe(true);
    expect(wgmmaProblem(k, wg(128, 256, 4), { arch: 90 })).toMatch(/sm_90a/);
    expect(wgmmaProblem(k, wg(128, 256, 4), { ...SM90A, wgmma: false })).toMatch(/KILN_CUDA_WGMMA=0/); // explicit entries too
    expect(configFits(k, wg(128, 256, 4), { ...SM90A, wgmma: false })).toBe(false);
    expect(wgmmaProblem(k, wg(128, 256, 5), SM90A)).toMatch(/shared memory/);
    // K = 100 is not a whole number of 16-byte chunks: A's layout is not K-chunked.
    const oddProgram = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 256, 100), spec('float16', 100, 512)]));
    const odd = oddProgram.kernels[0];
    expect(wgmmaProblem(odd, wg(128, 256, 4), SM90A)).toMatch(/A with K contiguous/);
    const f32 = lower(trace((x: T, w: T) => x.matmul(w), [spec('float32', 256, 64), spec('float32', 64, 256)])).kernels[0];
    expect(wgmmaProblem(f32, wg(128, 128, 4), SM90A)).toMatch(/float16 or bfloat16/);
    const aT = lower(trace((x: T, w: T) => x.transpose(0, 1).matmul(w), [spec('float16', 64, 256), spec('float16', 64, 256)])).kernels[0];
    expect(wgmmaProblem(aT, wg(128, 256, 4), SM90A)).toMatch(/A with K contiguous/);
    // Edge tiles run: a dynamic M, and M, N, K that the tiles do not divide.
    const dyn = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 256, 64), spec('float16', 64, 256)], { dynamic: { 0: [0] } })).kernels[0];
    expect(wgmmaProblem(dyn, wg(128, 256, 4), SM90A)).toBeUndefined();
    expect(defaultConfig(dyn, SM90A)).toMatchObject({ variant: 'wgmma' }); // guessed at 256 rows
    const ragged = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 200, 72), spec('float16', 72, 136)])).kernels[0];
    expect(wgmmaProblem(ragged, wg(128, 256, 4), SM90A)).toBeUndefined();
    // Fewer than 16 rows keep the mma kernel by default (split-K where it pays); the tuner may still try wgmma.
    const short = lower(trace((x: T, w: T) => x.matmul(w), [spec('float16', 8, 4096), spec('float16', 4096, 4096)])).kernels[0];
    expect(defaultConfig(short, SM90A)).toMatchObject({ variant: 'mma' });
    expect(candidateConfigs(short, SM90A).some((c) => c.kind === 'matmul' && c.variant === 'wgmma')).toBe(true);
    expect(() => chooseConfigs(oddProgram, SM90A, { [odd.name]: wg(128, 256, 4) })).toThrow(expect.objectContaining({ code: 'KILN_BAD_TUNING' }) as Error);
  });

  nvrtcIt('builds for sm_90a without spills (f16 x@w, bf16 gelu(x@wT + b))', async () => {
    for (const graph of [xw, xwt]) {
      const p = lower(graph);
      const name = p.kernels.find((k) => k.kind === 'matmul')!.name;
      const b = await buildCuda(graph, { target: 'sm_90a', kind: 'cubin', arch: 90 }, { program: p, tuning: { [name]: wg(128, 256, 4) } });
      const r = b.resources[name];
      expect(r.config).toEqual(wg(128, 256, 4));
      expect(r).toMatchObject({ spillStores: 0, spillLoads: 0, threads: 256, dynamicSharedBytes: 4 * 49152 + 1024 });
      expect(r.registers).toBeLessThanOrEqual(255);
    }
  }, 120_000);
});

describe('KILN_CUDA_WGMMA=0 in the bundle key', () => {
  const sig: ProgramSignature = { name: 'mm', fnSource: '(x, w) => x.matmul(w)', inputs: [{ dtype: 'float16', shape: [256, 512] }, { dtype: 'float16', shape: [512, 512] }] };
  const key = (target: string) => bundleKey(keyInput(sig, target, 'cuda:kiln-test')).key;
  const withEnv = <R>(value: string | undefined, fn: () => R): R => {
    const old = process.env.KILN_CUDA_WGMMA;
    if (value === undefined) delete process.env.KILN_CUDA_WGMMA;
    else process.env.KILN_CUDA_WGMMA = value;
    try {
      return fn();
    } finally {
      if (old === undefined) delete process.env.KILN_CUDA_WGMMA;
      else process.env.KILN_CUDA_WGMMA = old;
    }
  };

  it('changes sm_90a keys only (a bundle built with wgmma is not loaded with it off), and the facts', () => {
    const targets = ['sm_90a', 'sm_90', 'compute_90', 'sm_80', 'cpu-x64+avx2'];
    const on = withEnv(undefined, () => targets.map(key));
    const off = withEnv('0', () => targets.map(key));
    expect(off[0]).not.toBe(on[0]);
    expect(off.slice(1)).toEqual(on.slice(1));
    expect(withEnv('1', () => key('sm_90a'))).toBe(on[0]);
    const t = { target: 'sm_90a', kind: 'cubin' as const, arch: 90 };
    expect(withEnv('0', () => cudaFacts(t))).toEqual({ arch: 90, archSpecific: true, wgmma: false });
    expect(withEnv(undefined, () => cudaFacts(t, { smCount: 132 }))).toEqual({ arch: 90, archSpecific: true, smCount: 132 });
  });
});
