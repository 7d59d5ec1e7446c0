/**
 * TF32 tensor cores for float32 matmuls (the `tf32` compile option) on the GPU:
 *
 * - the TF32 cases of cases.cjs (awkward sizes, K tails, operands in 16-byte chunks along K,
 *   M or N and element-loaded ones, batches, dynamic rows, a fused bias + gelu epilogue)
 *   built with the option (heuristic configuration; every autotuner candidate for one), run
 *   on NaN-poisoned buffers against the interpreter within the TF32 tolerance (rtol 1e-3,
 *   atol 1e-3·K; the integer cases exactly);
 * - `kiln.compile(fn, { device: 'cuda', tf32: true })` end to end (autotuned, published to a
 *   temporary cache; the comparison without the option is not tuned): within the TF32 tolerance, further from the interpreter than the same
 *   function compiled without the option (the tensor cores ran), and in its own bundle;
 * - TFLOP/s of f32 4096³ and 8192³ with the option against the CUDA-core kernel, and against
 *   torch.matmul with `torch.backends.cuda.matmul.allow_tf32 = True` when `import torch` works.
 *
 * Kernel times are a plan replayed as a CUDA graph (best of 3) on random inputs.
 * KILN_GPU_CHECK_DRY=1 builds everything for sm_90 and checks ptxas's reports only.
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const run = require('./cuda-run.cjs');
const shared = require('./cases.cjs');

const f32 = (...shape) => ({ shape, dtype: 'float32' });

const TORCH_SCRIPT = String.raw`
import json, sys
import torch
torch.backends.cuda.matmul.allow_tf32 = True
out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "matmul": {}}
for n in json.load(open(sys.argv[1]))["sizes"]:
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    for _ in range(3): torch.matmul(a, b)
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(3):
        s.record()
        for _ in range(5): torch.matmul(a, b)
        e.record(); torch.cuda.synchronize()
        best = min(best, s.elapsed_time(e) / 5)
    out["matmul"][str(n)] = 2 * n ** 3 / best / 1e9
    print(json.dumps(out), flush=True)
`;

/** torch.matmul TF32 TFLOP/s per size, or { error }; bounded by the section's deadline. */
const torchTf32 = (sizes, dir) => run.runTorch(TORCH_SCRIPT, { sizes }, dir, 'torch_tf32');

/** `n` floats in [-1, 1) from a fast integer hash (random inputs for the timings, quickly). */
function noise(n, seed) {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s >>> 8) / 8388608 - 1;
  }
  return out;
}

/** The largest |got - want| / (atol + rtol·|want|) and the largest |got - want|. */
function errorOf(got, want, rtol, atol) {
  let worst = 0;
  let abs = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    abs = Math.max(abs, d); // a NaN sticks
    worst = Math.max(worst, d / (atol + rtol * Math.abs(want[i])));
  }
  return { worst, abs };
}

module.exports = {
  name: 'tf32',
  needs: run.DRY ? undefined : 'nvrtc',
  async run(ctx) {
    const k = run.kiln();
    const target = run.targetOf(ctx);
    const smCount = ctx.device ? ctx.device.smCount : undefined;
    const facts = run.factsOf(ctx, { tf32: true });
    const { candidateConfigs } = require(path.join(__dirname, '..', '..', 'dist', 'passes', 'gpu.js'));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-tf32-'));
    const variantOf = (b) => b.program.kernels.map((kk, i) => (kk.kind === 'matmul' ? b.configs[i].variant : null)).filter(Boolean);

    /** Builds case `c` with the option (and `opts`), checks the kernels, runs every run against the interpreter. */
    const checkCase = async (c, opts = {}) => {
      const { graph, build: b } = await run.build(k, ctx, c, { tf32: true, ...opts });
      const res = Object.entries(b.resources);
      const spills = res.filter(([, r]) => r.spillStores || r.spillLoads).map(([n]) => n);
      if (spills.length) throw new Error(`spills in ${spills.join(', ')}`);
      if (!variantOf(b).every((v) => v === 'tf32')) throw new Error(`matmul variants ${variantOf(b).join(', ')}, want tf32`);
      const mm = res.filter(([, r]) => r.config.kind === 'matmul').map(([, r]) => `${r.registers} regs, ${JSON.stringify(r.config)}`).join('; ');
      if (run.DRY) return `built (dry run): ${mm}`;
      for (const shapes of c.runs || [c.specs.map((s) => [...s.shape])]) {
        const inputs = run.makeInputs(k, shared, c, graph, shapes);
        const outs = await run.runPlan(k, ctx, b.program.graph, b, inputs);
        const errors = run.compare(k, c, graph, b.plan, inputs, outs, `[${shapes.join('|')}]`);
        if (errors.length) throw new Error(errors.join('; '));
      }
      return mm;
    };

    // 1. The TF32 cases, heuristic configurations; every candidate of the K-tail case.
    const cases = shared.tf32Cases();
    for (const c of cases) await ctx.check(`case ${c.name}`, () => checkCase(c));
    const tails = cases.find((c) => c.name === 'tf32-tails');
    const program = k.lower(k.trace(tails.fn, tails.specs, {}));
    const mmKernel = program.kernels.find((kk) => kk.kind === 'matmul');
    const cands = candidateConfigs(mmKernel, facts);
    for (let v = 1; v < cands.length; v++) {
      await ctx.check(`candidate ${v} of ${tails.name}`, () => checkCase(tails, { program, tuning: { [mmKernel.name]: cands[v] } }));
    }

    // 2. The public option, end to end.
    await ctx.check("kiln.compile(fn, { device: 'cuda', tf32: true })", async () => {
      if (run.DRY) return 'needs a GPU (dry run)';
      const kiln = require(path.join(__dirname, '..', '..', 'dist', 'index.js'));
      const fn = (x, w, b) => x.matmul(w).add(b).gelu();
      const [M, K, N] = [300, 520, 264];
      const c = { name: 'tf32-compile', fn, specs: [f32(M, K), f32(K, N), f32(N)] };
      const graph = k.trace(fn, c.specs, {});
      const inputs = run.makeInputs(k, shared, c, graph, c.specs.map((s) => s.shape));
      const want = k.interp.interpret(graph, inputs)[0].data;
      const cacheDir = path.join(dir, 'cache');
      const results = {};
      const tune = process.env.KILN_CUDA_TUNE;
      try {
        for (const tf32 of [true, false]) {
          // The tf32 program is autotuned (its candidates timed on the GPU), the other not (time).
          process.env.KILN_CUDA_TUNE = tf32 ? '1' : '0';
          const f = kiln.compile(fn, { device: 'cuda', tf32, cacheDir, name: 'tf32_compile' });
          const xs = inputs.map((t) => kiln.tensor(Array.from(t.data), t.shape, 'float32', 'cuda'));
          const y = await f(...xs);
          const got = await y.toArray();
          for (const t of [...xs, y]) t.dispose();
          results[tf32] = { ...errorOf(got, want, 1e-3, 1e-3 * K), bundle: f.stats.bundleDir };
        }
      } finally {
        if (tune === undefined) delete process.env.KILN_CUDA_TUNE;
        else process.env.KILN_CUDA_TUNE = tune;
      }
      const on = results.true;
      const off = results.false;
      ctx.metric('tf32 kiln.compile: max |kiln - interpreter|', on.abs, '', `K=${K}; without tf32 ${off.abs.toExponential(2)}`);
      if (!(on.worst <= 1)) throw new Error(`tf32 result outside the TF32 tolerance (max |diff| ${on.abs}, ${on.worst.toFixed(2)}× the tolerance)`);
      if (!(off.abs <= 1e-3)) throw new Error(`without tf32: max |diff| ${off.abs}, want float32 accuracy`);
      if (!(on.abs > 4 * off.abs)) throw new Error(`tf32 is as close as float32 (${on.abs} vs ${off.abs}): the tensor cores did not run?`);
      if (!on.bundle || on.bundle === off.bundle) throw new Error(`tf32 on and off share a bundle (${on.bundle})`);
      return `max |diff| ${on.abs.toExponential(2)} (f32 ${off.abs.toExponential(2)}), ${on.worst.toFixed(2)} of the tolerance; separate bundles`;
    });

    // 3. Speed: f32 n³ with tf32 against the CUDA-core kernel.
    const sizes = [4096, 8192];
    const kilnTflops = {};
    for (const n of sizes) {
      await ctx.check(`f32 ${n}³ matmul: tf32 vs CUDA cores`, async () => {
        const graph = k.trace((a, b) => a.matmul(b), [f32(n, n), f32(n, n)], {});
        const prog = k.lower(graph);
        const opts = { program: prog, ...(smCount !== undefined ? { smCount } : {}) };
        const tc = await k.engine.buildCuda(graph, target, { ...opts, tf32: true });
        const simt = await k.engine.buildCuda(graph, target, opts);
        const cfg = `${JSON.stringify(tc.configs[0])}, ${tc.resources[prog.kernels[0].name].registers} regs`;
        if (run.DRY) return `built: ${cfg}`;
        const inputs = [{ data: noise(n * n, 1) }, { data: noise(n * n, 2) }];
        const flop = 2 * n ** 3;
        const usTc = await run.timePlan(k, ctx, prog.graph, tc, {}, { reps: n > 4096 ? 3 : 10, rounds: 3, inputs });
        const usSimt = await run.timePlan(k, ctx, prog.graph, simt, {}, { reps: n > 4096 ? 1 : 3, rounds: 3, inputs });
        const tf = flop / usTc / 1e6;
        const ts = flop / usSimt / 1e6;
        kilnTflops[n] = tf;
        ctx.metric(`f32 ${n}³ tf32 tensor cores`, tf, 'TFLOP/s', cfg);
        ctx.metric(`f32 ${n}³ CUDA cores (simt)`, ts, 'TFLOP/s', JSON.stringify(simt.configs[0]));
        ctx.metric(`f32 ${n}³ tf32 ÷ simt`, tf / ts, '');
        return `${tf.toFixed(1)} vs ${ts.toFixed(1)} TFLOP/s (${(tf / ts).toFixed(1)}×)`;
      });
    }

    // 4. PyTorch with allow_tf32 on the same GPU (skipped without torch).
    if (!run.DRY) {
      await ctx.check('torch.matmul with allow_tf32', async () => {
        const t = torchTf32(sizes, dir);
        if (t.error) return `skipped: ${t.error}`;
        for (const [n, tf] of Object.entries(t.matmul)) {
          ctx.metric(`torch ${t.torch} f32 ${n}³ allow_tf32`, tf, 'TFLOP/s');
          if (kilnTflops[n] !== undefined) ctx.metric(`f32 ${n}³ tf32: kiln ÷ torch`, kilnTflops[n] / tf, '');
        }
        return `torch ${t.torch} on ${t.device}`;
      });
    }
    fs.rmSync(dir, { recursive: true, force: true });
  },
};
