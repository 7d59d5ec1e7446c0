/**
 * The wgmma matmul (lib/codegen/cuda-wgmma.ts), built for sm_90a through an
 * explicit tuning entry, on a compute capability 9.0 GPU:
 *
 * - outputs against the mma variant's (an sm_90 build, same inputs): f16 and
 *   bf16, B with N contiguous (x @ w) and K contiguous (x @ wᵀ), 64- and 128-row tiles, a
 *   batched case, a fused bias + gelu epilogue in bf16, edge tiles (M, N, K the tiles do not
 *   divide) and split-K (partials, then the combine);
 * - a few outputs of every case against the host (float64 dot products, rounded as the
 *   graph rounds);
 * - TFLOP/s of f16/bf16 4096³, 8192³ and 512×4096×4096 on random inputs (the plan repeated
 *   in a CUDA graph, as run.timePlan does), beside the mma variant's heuristic configuration.
 *
 * KILN_GPU_CHECK_DRY=1 builds everything for sm_90a and checks the ptxas reports only
 * (no spills, registers within 255), and that a shape the variant refuses is refused.
 */
'use strict';
const run = require('./cuda-run.cjs');

const SM90A = { target: 'sm_90a', kind: 'cubin', arch: 90 };
// The reference: the mma kernel, which is what sm_90 (not arch-specific) builds use.
const SM90 = { target: 'sm_90', kind: 'cubin', arch: 90 };
const wg = (bm, bn, stages) => ({ kind: 'matmul', variant: 'wgmma', bm, bn, stages });
const spec = (dtype, ...shape) => ({ shape, dtype });
const numel = (s) => s.reduce((a, d) => a * d, 1);

/** A small deterministic generator (xorshift32), values in [-1, 1). */
function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 31 - 1;
  };
}

/**
 * Random 16-bit storage of `n` elements, magnitudes in [1/8, 1), random signs: timing on
 * zeros would flatter the tensor cores (less switching, higher clocks).
 */
function randomBits(dtype, n, seed) {
  const next = rng(seed);
  const [base, span] = dtype === 'bfloat16' ? [0x3e00, 0x180] : [0x3000, 0xc00];
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const r = ((next() + 1) * 2 ** 30) >>> 0;
    out[i] = (r & 0x8000) | (base + ((r >>> 16) % span));
  }
  return out;
}

/** erf to ~1e-7 (Abramowitz & Stegun 7.1.26), enough for a bf16 check. */
function erf(x) {
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return x < 0 ? -y : y;
}

// Correctness cases: fn, specs, the wgmma configuration, and the host value of output (b, i, j).
const CASES = [
  { name: 'f16 x@w 512x768x1024 128x256', fn: (x, w) => x.matmul(w), specs: ['float16', [512, 1024], [1024, 768]], cfg: wg(128, 256, 4), bLayout: 'n' },
  { name: 'f16 x@w 1664x512x256 128x256 (13 tile rows: two block groups)', fn: (x, w) => x.matmul(w), specs: ['float16', [1664, 256], [256, 512]], cfg: wg(128, 256, 4), bLayout: 'n' },
  { name: 'bf16 x@wT 256x512x512 128x256', fn: (x, w) => x.matmul(w.transpose(0, 1)), specs: ['bfloat16', [256, 512], [512, 512]], cfg: wg(128, 256, 4), bLayout: 'k' },
  { name: 'f16 x@wT 192x384x320 64x128', fn: (x, w) => x.matmul(w.transpose(0, 1)), specs: ['float16', [192, 320], [384, 320]], cfg: wg(64, 128, 6), bLayout: 'k' },
  { name: 'bf16 x@w 256x256x576 128x128', fn: (x, w) => x.matmul(w), specs: ['bfloat16', [256, 576], [576, 256]], cfg: wg(128, 128, 6), bLayout: 'n' },
  { name: 'f16 x@w 200x136x72 128x128 (edge tiles in M, N and K)', fn: (x, w) => x.matmul(w), specs: ['float16', [200, 72], [72, 136]], cfg: wg(128, 128, 4), bLayout: 'n' },
  { name: 'bf16 x@wT 328x200x200 128x256 (edge tiles, K-major B)', fn: (x, w) => x.matmul(w.transpose(0, 1)), specs: ['bfloat16', [328, 200], [200, 200]], cfg: wg(128, 256, 4), bLayout: 'k' },
  { name: 'f16 x@w 64x512x2048 64x128 split-K 4 (partials, then the combine)', fn: (x, w) => x.matmul(w), specs: ['float16', [64, 2048], [2048, 512]], cfg: { ...wg(64, 128, 6), split: 4 }, bLayout: 'n' },
  { name: 'bf16 gelu(x@wT + bias) 96x256x1000 128x128 split-K 3 (edge tiles)', fn: (x, w, b) => x.matmul(w.transpose(0, 1)).add(b).gelu(), specs: ['bfloat16', [96, 1000], [256, 1000], [256]], cfg: { ...wg(128, 128, 4), split: 3 }, bLayout: 'k', epilogue: (acc, j, ins, round) => {
    const z = round(round(acc) + ins[2][j]);
    return 0.5 * z * (1 + erf(z / Math.SQRT2));
  } },
  { name: 'f16 gelu(x@w + bias) 1024x3072x768 128x192 (three 64-column atoms)', fn: (x, w, b) => x.matmul(w).add(b).gelu(), specs: ['float16', [1024, 768], [768, 3072], [3072]], cfg: wg(128, 192, 4), bLayout: 'n', epilogue: (acc, j, ins, round) => {
    const z = round(round(acc) + ins[2][j]);
    return 0.5 * z * (1 + erf(z / Math.SQRT2));
  } },
  { name: 'bf16 x@wT 200x392x136 128x192 (edge tiles, K-major B)', fn: (x, w) => x.matmul(w.transpose(0, 1)), specs: ['bfloat16', [200, 136], [392, 136]], cfg: wg(128, 192, 4), bLayout: 'k' },
  { name: 'f16 x@w 1024x768x3072 128x192 split-K 4', fn: (x, w) => x.matmul(w), specs: ['float16', [1024, 3072], [3072, 768]], cfg: { ...wg(128, 192, 4), split: 4 }, bLayout: 'n' },
  { name: 'f16 batched 2x256x256x512 64x256', fn: (x, w) => x.matmul(w), specs: ['float16', [2, 256, 512], [2, 512, 256]], cfg: wg(64, 256, 4), bLayout: 'n' },
  {
    name: 'bf16 gelu(x@wT + bias) 256x512x384 128x256',
    fn: (x, w, b) => x.matmul(w.transpose(0, 1)).add(b).gelu(),
    specs: ['bfloat16', [256, 384], [512, 384], [512]],
    cfg: wg(128, 256, 4),
    bLayout: 'k',
    epilogue: (acc, j, ins, round) => {
      const z = round(round(acc) + ins[2][j]);
      return 0.5 * z * (1 + erf(z / Math.SQRT2));
    },
  },
];

/** Builds `fn` on `specs` with the wgmma configuration `cfg` for sm_90a (one matmul kernel). */
async function buildWgmma(k, fn, specs, cfg) {
  const graph = k.trace(fn, specs, {});
  const program = k.lower(graph);
  const mm = program.kernels.filter((x) => x.kind === 'matmul');
  if (mm.length !== 1) throw new Error(`expected one matmul kernel, got ${mm.length}`);
  const b = await k.engine.buildCuda(graph, SM90A, { program, tuning: { [mm[0].name]: cfg } });
  // A split-K configuration launches `<name>__part` (the wgmma tiles), then `<name>` (the combine).
  const r = b.resources[`${mm[0].name}__part`] ?? b.resources[mm[0].name];
  if (r.config.variant !== 'wgmma') throw new Error(`the build did not use the wgmma configuration: ${JSON.stringify(r.config)}`);
  for (const [n, f] of Object.entries(b.resources)) {
    if (f.spillStores || f.spillLoads) throw new Error(`${n} spills (${f.spillStores} B stores, ${f.spillLoads} B loads)`);
    if (f.registers > 255) throw new Error(`${n} uses ${f.registers} registers`);
  }
  return { graph, b, r, name: mm[0].name };
}

const report = (r) => `${r.registers} regs, ${r.dynamicSharedBytes} B shared, ${r.threads} threads, no spills`;

module.exports = {
  name: 'wgmma',
  needs: run.DRY ? undefined : 'gpu',
  async run(ctx) {
    const k = run.kiln();
    const cc = ctx.device?.computeCapability;
    const hopper = !run.DRY && cc && cc[0] === 9 && cc[1] === 0;
    const skip = run.DRY ? 'dry run' : !hopper ? `compute capability ${cc ? cc.join('.') : '?'}, not 9.0: nothing run` : undefined;

    await ctx.check('wgmma: unsupported shapes are refused at build time', async () => {
      // K = 100: A's rows are not whole 16-byte chunks.
      const graph = k.trace((x, w) => x.matmul(w), [spec('float16', 128, 100), spec('float16', 100, 256)], {});
      const program = k.lower(graph);
      const name = program.kernels[0].name;
      try {
        await k.engine.buildCuda(graph, SM90A, { program, tuning: { [name]: wg(128, 256, 4) } });
      } catch (e) {
        if (e.code === 'KILN_BAD_TUNING' && /K contiguous/.test(e.message)) return e.message;
        throw e;
      }
      throw new Error('K = 100 was accepted');
    });

    for (const c of CASES) {
      await ctx.check(`wgmma ${c.name}`, async () => {
        const [dtype, ...shapes] = c.specs;
        const specs = shapes.map((s) => spec(dtype, ...s));
        const w = await buildWgmma(k, c.fn, specs, c.cfg);
        if (skip) return `${report(w.r)} (${skip})`;
        const mma = await k.engine.buildCuda(w.graph, SM90, { smCount: ctx.device.smCount });
        const next = rng(numel(shapes[0]) + shapes.length);
        const values = shapes.map((s) => Float64Array.from({ length: numel(s) }, () => next()));
        const inputs = shapes.map((s, j) => ({ dtype, shape: s, data: k.ir.encodeStorage(dtype, values[j]) }));
        const ins = inputs.map((x) => k.ir.decodeStorage(dtype, x.data)); // the values as stored
        const got = k.ir.decodeStorage(dtype, (await run.runPlan(k, ctx, w.b.program.graph, w.b, inputs))[0]);
        const ref = k.ir.decodeStorage(dtype, (await run.runPlan(k, ctx, mma.program.graph, mma, inputs))[0]);
        // Against the mma variant: the same f32 products, summed in another order (2 ulps, plus
        // 2 ulps of the rms for outputs that cancel).
        const eps = dtype === 'bfloat16' ? 2 ** -6 : 2 ** -9;
        const scale = Math.sqrt(ref.reduce((s, v) => s + v * v, 0) / ref.length) || 1;
        const N0 = shapes[0].length === 3 ? ref.length / (2 * shapes[0][1]) : ref.length / shapes[0][0];
        let worst = 0;
        const bad = [];
        for (let e = 0; e < ref.length; e++) {
          const d = Math.abs(got[e] - ref[e]);
          if (!(d <= eps * (scale + Math.abs(ref[e])))) bad.push(e);
          if (!(d <= worst)) worst = d;
        }
        if (bad.length) {
          const at = bad.slice(0, 6).map((e) => `[${Math.floor(e / N0)},${e % N0}] ${got[e]} vs ${ref[e]}`);
          throw new Error(`${bad.length} of ${ref.length} outputs differ from the mma variant (row-major [row,col] over ${N0} cols): ${at.join('; ')}`);
        }
        // Against the host at a few spots: float64 dot products rounded like the graph.
        const round = (v) => k.ir.decodeStorage(dtype, k.ir.encodeStorage(dtype, [v]))[0];
        const [A, B] = ins;
        const batched = shapes[0].length === 3;
        const [M, Kd] = shapes[0].slice(-2);
        const N = c.bLayout === 'n' ? shapes[1][shapes[1].length - 1] : shapes[1][shapes[1].length - 2];
        const pick = rng(7);
        const spots = [[0, 0, 0], [batched ? 1 : 0, M - 1, N - 1]];
        for (let s = 0; s < 14; s++) spots.push([batched ? Math.floor(((pick() + 1) / 2) * 2) : 0, Math.floor(((pick() + 1) / 2) * M), Math.floor(((pick() + 1) / 2) * N)]);
        for (const [bi, i, j] of spots) {
          let acc = 0;
          for (let kk = 0; kk < Kd; kk++) {
            const a = A[bi * M * Kd + i * Kd + kk];
            const b = c.bLayout === 'n' ? B[bi * Kd * N + kk * N + j] : B[j * Kd + kk];
            acc += a * b;
          }
          const want = round(c.epilogue ? c.epilogue(acc, j, ins, round) : acc);
          const have = got[bi * M * N + i * N + j];
          const stol = eps * (scale + Math.abs(want));
          if (!(Math.abs(have - want) <= stol)) throw new Error(`output [${bi},${i},${j}]: got ${have}, host ${want}`);
        }
        return `${report(w.r)}; max |wgmma - mma| ${worst.toExponential(2)} (rms ${scale.toFixed(2)}); ${spots.length} host spots`;
      });
    }

    // Throughput: f16/bf16, x @ w (B N-contiguous), and x @ wT for f16 4096³.
    const shapesT = [
      [4096, 4096, 4096, [wg(128, 256, 4), wg(128, 128, 6)]],
      [8192, 8192, 8192, [wg(128, 256, 4), wg(128, 128, 6)]],
      [512, 4096, 4096, [wg(128, 256, 4), wg(128, 128, 6), wg(64, 256, 4)]],
    ];
    const runs = [];
    for (const dtype of ['float16', 'bfloat16']) for (const [M, N, K, cfgs] of shapesT) runs.push({ dtype, M, N, K, cfgs, t: false });
    runs.push({ dtype: 'float16', M: 4096, N: 4096, K: 4096, cfgs: [wg(128, 256, 4)], t: true });
    // The GPT block's linear layers (B·T = 1024 rows, C = 768): every wgmma tile the tuner may
    // weigh, each timed, so that its choice can be read against the others.
    for (const [M, N, K, cfgs] of [
      [1024, 3072, 768, [wg(128, 256, 4), wg(128, 128, 6), wg(128, 192, 4)]],
      [1024, 768, 3072, [wg(64, 128, 6), wg(128, 128, 6), { ...wg(128, 192, 4), split: 4 }, { ...wg(128, 128, 6), split: 2 }, { ...wg(64, 256, 4), split: 2 }]],
      [64, 4096, 4096, [{ ...wg(64, 256, 4), split: 8 }, { ...wg(64, 128, 6), split: 8 }, { ...wg(64, 128, 6), split: 4 }, { ...wg(128, 192, 4), split: 6 }]],
    ]) {
      await ctx.check(`wgmma tiles float16 ${M}x${N}x${K}`, async () => {
        const specs = [spec('float16', M, K), spec('float16', K, N)];
        const built = [];
        for (const cfg of cfgs) built.push(await buildWgmma(k, (x, w) => x.matmul(w), specs, cfg));
        if (skip) return `${built.map((w) => report(w.r)).join('; ')} (${skip})`;
        const inputs = specs.map((s, j) => ({ dtype: s.dtype, shape: s.shape, data: randomBits(s.dtype, numel(s.shape), j + 1) }));
        const out = [];
        for (const [i, w] of built.entries()) {
          const us = await run.timePlan(k, ctx, w.b.program.graph, w.b, {}, { inputs });
          const c = cfgs[i];
          const label = `${c.bm}x${c.bn}${c.split ? ` split ${c.split}` : ''}`;
          ctx.metric(`wgmma float16 ${M}x${N}x${K} ${label}`, (2 * M * N * K) / (us * 1e-6) / 1e12, 'TFLOP/s', `${us.toFixed(1)} us`);
          out.push(`${label} ${us.toFixed(1)} us`);
        }
        return out.join(', ');
      });
    }
    for (const m of runs) {
      const label = `${m.dtype} ${m.M}x${m.N}x${m.K}${m.t ? ' x@wT' : ''}`;
      await ctx.check(`wgmma time ${label}`, async () => {
        const fn = m.t ? (x, w) => x.matmul(w.transpose(0, 1)) : (x, w) => x.matmul(w);
        const specs = [spec(m.dtype, m.M, m.K), m.t ? spec(m.dtype, m.N, m.K) : spec(m.dtype, m.K, m.N)];
        const built = [];
        for (const cfg of m.cfgs) built.push(await buildWgmma(k, fn, specs, cfg));
        if (skip) return `${built.map((w) => report(w.r)).join('; ')} (${skip})`;
        const flops = 2 * m.M * m.N * m.K;
        const inputs = specs.map((s, j) => ({ dtype: s.dtype, shape: s.shape, data: randomBits(s.dtype, numel(s.shape), j + 1) }));
        let best = { tf: 0 };
        for (const w of built) {
          const us = await run.timePlan(k, ctx, w.b.program.graph, w.b, {}, { inputs });
          const tf = flops / (us * 1e-6) / 1e12;
          if (tf > best.tf) best = { tf, cfg: w.r.config };
        }
        const mma = await k.engine.buildCuda(built[0].graph, SM90, { smCount: ctx.device.smCount });
        const mmaTf = flops / ((await run.timePlan(k, ctx, mma.program.graph, mma, {}, { inputs })) * 1e-6) / 1e12;
        ctx.metric(`wgmma matmul ${label}`, best.tf, 'TFLOP/s', `${JSON.stringify(best.cfg)}; mma heuristic ${mmaTf.toFixed(0)}`);
        ctx.metric(`wgmma ÷ mma ${label}`, best.tf / mmaTf, '');
        return `${best.tf.toFixed(0)} TFLOP/s (${best.cfg.bm}x${best.cfg.bn}x${best.cfg.stages}); mma heuristic ${mmaTf.toFixed(0)}`;
      });
    }
  },
};
