/**
 * Benchmarks of the CUDA backend (numbers for docs/CUDA.md; targets from BRIEF.md):
 *
 * - device-to-device copy bandwidth (bytes read + written), the yardstick;
 * - fused elementwise and reduction kernels, softmax / layerNorm / rmsNorm: bandwidth and
 *   its ratio to copy bandwidth (targets >= 0.85 and >= 0.80);
 * - f16/bf16 matmul TFLOP/s, and ÷ cuBLAS through PyTorch when `import torch` works;
 * - per-call host overhead of a compiled function with and without CUDA graphs (<= 20 us);
 * - a GPT-style block (f16) against PyTorch eager and torch.compile, same weights (written
 *   to a file both read), outputs compared.
 *
 * Kernel times are a plan's steps repeated 20× in one CUDA graph, replayed, best of 5.
 * Each program is autotuned first (the cold path on a GPU does the same); the heuristic
 * configuration's figure is kept as a note. KILN_GPU_CHECK_DRY=1 builds everything without
 * a GPU and runs nothing.
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const run = require('./cuda-run.cjs');

const f32 = (...shape) => ({ shape, dtype: 'float32' });
const f16 = (...shape) => ({ shape, dtype: 'float16' });
const bf16 = (...shape) => ({ shape, dtype: 'bfloat16' });
const numel = (s) => s.reduce((a, d) => a * d, 1);

/** A GPT block on [B, T, C] with H heads (the cases.cjs block, sized by its arguments). */
function gptBlock(F, B, T, C, H) {
  const D = C / H;
  return (x, g1, be1, wqkv, bqkv, wo, bo, g2, be2, w1, b1, w2, b2) => {
    const qkv = F.layerNorm(x, g1, be1).matmul(wqkv).add(bqkv);
    const head = (i) => qkv.slice(2, i * C, (i + 1) * C).reshape([B, T, H, D]).transpose(1, 2);
    const att = F.scaledDotProductAttention(head(0), head(1), head(2), { causal: true }).transpose(1, 2).reshape([B, T, C]);
    const x1 = x.add(att.matmul(wo).add(bo));
    return x1.add(F.layerNorm(x1, g2, be2).matmul(w1).add(b1).gelu().matmul(w2).add(b2));
  };
}
const gptShapes = (B, T, C) => [[B, T, C], [C], [C], [C, 3 * C], [3 * C], [C, C], [C], [C], [C], [C, 4 * C], [4 * C], [4 * C, C], [C]];

const TORCH_SCRIPT = String.raw`
import json, sys, time
import torch
import torch.nn.functional as F
job = json.load(open(sys.argv[1]))
out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0)}
def timed(fn, iters=20, warm=5):
    for _ in range(warm): fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(5):
        s.record()
        for _ in range(iters): fn()
        e.record(); torch.cuda.synchronize()
        best = min(best, s.elapsed_time(e) / iters)
    return best
dt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
out["matmul"] = {}
for m in job["matmul"]:
    a = torch.randn(m["M"], m["K"], device="cuda", dtype=dt[m["dtype"]])
    b = torch.randn(m["K"], m["N"], device="cuda", dtype=dt[m["dtype"]])
    ms = timed(lambda: torch.matmul(a, b))
    out["matmul"][m["name"]] = 2 * m["M"] * m["N"] * m["K"] / ms / 1e9
print(json.dumps(out), flush=True)
g = job.get("gpt")
if g:
    raw = open(g["weights"], "rb").read()
    ts, off = [], 0
    for shape in g["shapes"]:
        n = 1
        for d in shape: n *= d
        ts.append(torch.frombuffer(bytearray(raw[off:off + 2 * n]), dtype=torch.float16).reshape(shape).cuda())
        off += 2 * n
    B, T, C, H = g["B"], g["T"], g["C"], g["H"]
    D = C // H
    def block(x, g1, be1, wqkv, bqkv, wo, bo, g2, be2, w1, b1, w2, b2):
        qkv = F.layer_norm(x, (C,), g1, be1, 1e-5) @ wqkv + bqkv
        q, k, v = [qkv[..., i * C:(i + 1) * C].reshape(B, T, H, D).transpose(1, 2) for i in range(3)]
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x1 = x + (a @ wo + bo)
        return x1 + (F.gelu(F.layer_norm(x1, (C,), g2, be2, 1e-5) @ w1 + b1) @ w2 + b2)
    with torch.no_grad():
        ref = block(*ts)
        out["gpt_eager_ms"] = timed(lambda: block(*ts))
        kiln_out = torch.frombuffer(bytearray(open(g["kiln_out"], "rb").read()), dtype=torch.float16).reshape(ref.shape).cuda()
        out["gpt_max_abs_diff"] = (kiln_out.float() - ref.float()).abs().max().item()
        out["gpt_ref_max_abs"] = ref.float().abs().max().item()
        print(json.dumps(out), flush=True)
        t0 = time.time()
        cblock = torch.compile(block)
        cblock(*ts); torch.cuda.synchronize()
        out["gpt_compile_s"] = time.time() - t0
        out["gpt_compiled_ms"] = timed(lambda: cblock(*ts))
        print(json.dumps(out), flush=True)
        # CUDA graphs, like kiln's replay: the like-for-like figure at sizes where launching is the cost.
        t0 = time.time()
        gblock = torch.compile(block, mode="reduce-overhead")
        for _ in range(3): gblock(*ts)
        torch.cuda.synchronize()
        out["gpt_graphs_compile_s"] = time.time() - t0
        out["gpt_graphs_ms"] = timed(lambda: gblock(*ts))
print(json.dumps(out), flush=True)
`;

/** PyTorch's figures for `job` (TORCH_SCRIPT), or { error } when torch is not there. */
const torchBench = (job, dir) => run.runTorch(TORCH_SCRIPT, job, dir, 'torch_bench');

module.exports = {
  name: 'cuda-bench',
  needs: run.DRY ? undefined : 'nvrtc',
  async run(ctx) {
    const k = run.kiln();
    const tune = require(path.join(__dirname, '..', '..', 'dist', 'engine', 'cuda-tune.js'));
    const target = run.targetOf(ctx);
    const facts = run.factsOf(ctx);
    const dev = ctx.device ? ctx.device.index : 0;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cuda-bench-'));
    const symbolsOf = (graph, shapes) => k.interp.bindSymbols(graph, shapes.map((shape, i) => ({ dtype: graph.inputs[i].dtype, shape })));

    /** Builds `fn` (tuned on the GPU) and times it; returns { us, usDefault, build, graph }. */
    const measure = async (fn, specs) => {
      const graph = k.trace(fn, specs, {});
      const program = k.lower(graph);
      const plain = await k.engine.buildCuda(graph, target, { program, smCount: facts.smCount });
      if (run.DRY) return { us: NaN, usDefault: NaN, build: plain, graph };
      const values = symbolsOf(graph, specs.map((s) => s.shape));
      const usDefault = await run.timePlan(k, ctx, program.graph, plain, values);
      const { tuning } = await tune.autotuneCuda(program, target, facts, { device: dev });
      const tuned = await k.engine.buildCuda(graph, target, { program, tuning, smCount: facts.smCount });
      const us = await run.timePlan(k, ctx, program.graph, tuned, values);
      return { us, usDefault, build: tuned, graph, values };
    };

    // 1. The yardstick: device-to-device copy.
    let copyGBs = NaN;
    await ctx.check('copy bandwidth', async () => {
      if (run.DRY) return 'dry run';
      const bytes = 512 * 2 ** 20;
      const a = new k.drv.DeviceBuffer(bytes, dev);
      const b = new k.drv.DeviceBuffer(bytes, dev);
      try {
        a.fill(1);
        for (let i = 0; i < 3; i++) b.copyFrom(a, bytes);
        await k.drv.synchronize(dev);
        let best = Infinity;
        for (let r = 0; r < 5; r++) {
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < 10; i++) b.copyFrom(a, bytes);
          await k.drv.synchronize(dev);
          best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9 / 10);
        }
        copyGBs = (2 * bytes) / best / 1e9;
        ctx.metric('copy bandwidth (read + write)', copyGBs, 'GB/s', '512 MiB device to device');
        return `${copyGBs.toFixed(0)} GB/s`;
      } finally {
        a.dispose();
        b.dispose();
      }
    });

    // 2. Bandwidth-bound kernels.
    const R = 16384;
    const W = 4096;
    const N = 2 ** 26;
    const bw = [
      { name: 'elementwise x*y+1 relu f32', target: 0.85, fn: (x, y) => x.mul(y).add(1).relu(), specs: [f32(N), f32(N)], bytes: 3 * 4 * N },
      { name: 'elementwise gelu(x+b) f16', target: 0.85, fn: (x, b) => x.add(b).gelu(), specs: [f16(R, W), f16(W)], bytes: 2 * 2 * R * W },
      { name: 'row sum f32', target: 0.85, fn: (x) => x.sum(-1), specs: [f32(R, W)], bytes: 4 * R * W + 4 * R },
      { name: 'column sum f32', target: 0.85, fn: (x) => x.sum(0), specs: [f32(R, W)], bytes: 4 * R * W + 4 * W },
      { name: 'full sum f32', target: 0.85, fn: (x) => x.sum(), specs: [f32(N)], bytes: 4 * N },
      { name: 'softmax f32', target: 0.8, fn: (x) => x.softmax(-1), specs: [f32(R, W)], bytes: 2 * 4 * R * W },
      { name: 'softmax f16', target: 0.8, fn: (x) => x.softmax(-1), specs: [f16(R, W)], bytes: 2 * 2 * R * W },
      { name: 'softmax f32 wide (32768)', target: 0.8, fn: (x) => x.softmax(-1), specs: [f32(2048, 32768)], bytes: 2 * 4 * 2048 * 32768 },
      { name: 'layerNorm f32', target: 0.8, fn: (x, w, b) => k.F.layerNorm(x, w, b), specs: [f32(R, W), f32(W), f32(W)], bytes: 2 * 4 * R * W },
      { name: 'layerNorm bf16 (768)', target: 0.8, fn: (x, w, b) => k.F.layerNorm(x, w, b), specs: [bf16(8 * R, 768), bf16(768), bf16(768)], bytes: 2 * 2 * 8 * R * 768 },
      { name: 'rmsNorm f32', target: 0.8, fn: (x, w) => k.F.rmsNorm(x, w), specs: [f32(R, W), f32(W)], bytes: 2 * 4 * R * W },
      { name: 'rmsNorm f16', target: 0.8, fn: (x, w) => k.F.rmsNorm(x, w), specs: [f16(R, W), f16(W)], bytes: 2 * 2 * R * W },
    ];
    for (const b of bw) {
      await ctx.check(`bandwidth: ${b.name}`, async () => {
        const m = await measure(b.fn, b.specs);
        const cfg = m.build.configs.map((c) => JSON.stringify(c)).join(' ');
        if (run.DRY) return `built: ${cfg}`;
        const gbs = b.bytes / (m.us * 1e-6) / 1e9;
        const ratio = gbs / copyGBs;
        ctx.metric(`${b.name}`, gbs, 'GB/s', `heuristic config ${(b.bytes / (m.usDefault * 1e-6) / 1e9).toFixed(0)} GB/s`);
        ctx.metric(`${b.name} ÷ copy`, ratio, '', `target >= ${b.target}`);
        return `${gbs.toFixed(0)} GB/s = ${ratio.toFixed(2)} of copy; ${cfg}`;
      });
    }

    // 3. Matmul on tensor cores.
    const mms = [];
    for (const dtype of ['float16', 'bfloat16']) {
      // 128 rows (f16 only): one tile row of the wgmma kernel, 32 blocks for 132 SMs; the tuner weighs split-K mma against it.
      const shapes = [[4096, 4096, 4096], [8192, 8192, 8192], [512, 4096, 4096], ...(dtype === 'float16' ? [[128, 4096, 4096]] : []), [64, 4096, 4096], [16, 4096, 4096]];
      for (const [M, Nn, K] of shapes) mms.push({ name: `${dtype} ${M}x${Nn}x${K}`, dtype, M, N: Nn, K });
    }
    const torchJob = { matmul: mms, gpt: null };
    const kilnTflops = {};
    for (const m of mms) {
      await ctx.check(`matmul ${m.name}`, async () => {
        const spec = (...s) => ({ shape: s, dtype: m.dtype });
        const r = await measure((a, b) => a.matmul(b), [spec(m.M, m.K), spec(m.K, m.N)]);
        if (run.DRY) return `built: ${JSON.stringify(r.build.configs[0])}`;
        const tf = (2 * m.M * m.N * m.K) / (r.us * 1e-6) / 1e12;
        kilnTflops[m.name] = tf;
        ctx.metric(`matmul ${m.name}`, tf, 'TFLOP/s', `heuristic ${((2 * m.M * m.N * m.K) / (r.usDefault * 1e-6) / 1e12).toFixed(0)}; ${JSON.stringify(r.build.configs[0])}`);
        return `${tf.toFixed(1)} TFLOP/s`;
      });
    }

    // 4. Host overhead per call of a compiled function, through CudaProgram.run.
    await ctx.check('host overhead per call (small MLP, 1 token)', async () => {
      const C = 256;
      const fn = (x, w1, w2) => x.matmul(w1).gelu().matmul(w2).add(x);
      const specs = [f16(1, C), f16(C, 4 * C), f16(4 * C, C)];
      const graph = k.trace(fn, specs, {});
      const b = await k.engine.buildCuda(graph, target, { smCount: facts.smCount });
      if (run.DRY) return `built ${b.plan.steps.length} kernels (dry run)`;
      const program = await k.engine.loadCudaProgram({ image: b.image, graph: b.program.graph, plan: b.plan, device: dev });
      const inputs = await Promise.all(specs.map((s) => k.cudaRt.DeviceTensor.fromHost({ dtype: s.dtype, shape: s.shape, data: k.ir.allocStorage(s.dtype, numel(s.shape)) }, dev)));
      const out = [];
      try {
        for (const graphs of [false, true]) {
          const call = async () => {
            for (const t of await program.cuda.program.run(inputs, { graphs })) t.dispose();
          };
          for (let i = 0; i < 200; i++) await call();
          const calls = 2000;
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < calls; i++) await call();
          const us = Number(process.hrtime.bigint() - t0) / 1e3 / calls;
          // Host time per call: calls issued back to back, 4 in flight (device inputs: each call
          // queues its launches before its first await), as a serving loop issues them. The
          // outputs recycle through a few pointer sets, so a graph replays; with every output
          // kept alive, each call would have new pointers, a new graph key, and launch eagerly.
          const s0 = program.cuda.program.stats();
          const t1 = process.hrtime.bigint();
          let issueNs = 0n;
          const inflight = [];
          for (let i = 0; i < calls; i++) {
            const t = process.hrtime.bigint();
            inflight.push(program.cuda.program.run(inputs, { graphs }));
            issueNs += process.hrtime.bigint() - t;
            if (inflight.length === 4) for (const t of await inflight.shift()) t.dispose();
          }
          while (inflight.length > 0) for (const t of await inflight.shift()) t.dispose();
          const backToBackUs = Number(process.hrtime.bigint() - t1) / 1e3 / calls;
          const issuedUs = Number(issueNs) / 1e3 / calls;
          const s1 = program.cuda.program.stats();
          const replays = `${s1.graphLaunches - s0.graphLaunches} graph replays, ${s1.graphCaptures - s0.graphCaptures} captures`;
          const how = graphs ? 'CUDA graph' : 'eager launches';
          ctx.metric(`call overhead, ${how} (${b.plan.steps.length} kernels, awaited)`, us, 'us/call', 'GPU time and the wake-up included');
          ctx.metric(`call overhead, ${how} (${b.plan.steps.length} kernels, host time per call)`, issuedUs, 'us/call', `until run() returns, 4 in flight; ${replays}${graphs ? '; target <= 20' : ''}`);
          ctx.metric(`call overhead, ${how} (${b.plan.steps.length} kernels, back to back)`, backToBackUs, 'us/call', '4 in flight');
          out.push(`${graphs ? 'graph' : 'eager'} ${us.toFixed(1)} us awaited, ${issuedUs.toFixed(1)} us host, ${backToBackUs.toFixed(1)} us back to back (${replays})`);
        }
        return out.join(', ');
      } finally {
        for (const t of inputs) t.dispose();
        program.cuda.program.dispose();
      }
    });

    // 5. A GPT block (f16) against PyTorch: same weights from one file.
    const [B, T, C, H] = [4, 256, 768, 12];
    let kilnGptUs = NaN;
    await ctx.check(`GPT block f16 B=${B} T=${T} C=${C} H=${H}`, async () => {
      const shapes = gptShapes(B, T, C);
      const specs = shapes.map((s) => f16(...s));
      const fn = gptBlock(k.F, B, T, C, H);
      const m = await measure(fn, specs);
      // Weights: normals (x) and 0.02-scaled normals, rounded to f16, written in input order.
      const rng = new (require('./cases.cjs').Rng)(1234);
      const inputs = shapes.map((s, i) => ({ dtype: 'float16', shape: s, data: k.ir.encodeStorage('float16', rng.array(numel(s), (r) => (i === 0 ? r.normal() : i === 1 || i === 7 ? 1 + 0.1 * r.normal() : 0.02 * r.normal()))) }));
      const weights = path.join(dir, 'gpt-weights.bin');
      fs.writeFileSync(weights, Buffer.concat(inputs.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))));
      if (run.DRY) return `built ${m.build.plan.steps.length} kernels; weights ${fs.statSync(weights).size} bytes (dry run)`;
      kilnGptUs = m.us;
      const program = await k.engine.loadCudaProgram({ image: m.build.image, graph: m.build.program.graph, plan: m.build.plan, device: dev });
      try {
        const [y] = await program.execute(inputs);
        fs.writeFileSync(path.join(dir, 'kiln-out.bin'), Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
        const dev_inputs = await Promise.all(inputs.map((t) => k.cudaRt.DeviceTensor.fromHost(t, dev)));
        for (let i = 0; i < 20; i++) for (const t of await program.cuda.program.run(dev_inputs)) t.dispose();
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < 100; i++) for (const t of await program.cuda.program.run(dev_inputs)) t.dispose();
        const callUs = Number(process.hrtime.bigint() - t0) / 1e3 / 100;
        for (const t of dev_inputs) t.dispose();
        ctx.metric('GPT block f16: kiln (graph replay, GPU time)', m.us / 1e3, 'ms', `${m.build.plan.steps.length} kernels; heuristic ${(m.usDefault / 1e3).toFixed(3)} ms`);
        ctx.metric('GPT block f16: kiln call, awaited', callUs / 1e3, 'ms');
        torchJob.gpt = { weights, kiln_out: path.join(dir, 'kiln-out.bin'), shapes, B, T, C, H };
        // Where the block's time goes: each kernel alone, 50 back to back in one graph (a
        // failure here costs only these figures).
        try {
          const cfgOf = (name) => m.build.tuning[name] ?? m.build.tuning[name.replace(/__part$/, '')];
          const gemmUs = new Map();
          for (const [i, st] of m.build.plan.steps.entries()) {
            const stepUs = await run.timePlan(k, ctx, m.build.program.graph, m.build, m.values, { only: [i], reps: 50, inputs });
            const c = cfgOf(st.kernel);
            ctx.metric(`GPT block f16: step ${i} ${st.kernel}`, stepUs, 'us', c ? `${c.variant ?? c.kind} ${c.bm ? `${c.bm}x${c.bn}` : c.block ?? ''}${c.split ? ` split ${c.split}` : ''}` : '');
            const base = st.kernel.replace(/__part$/, ''); // a split-K matmul: its parts, then its combine
            const seen = gemmUs.get(base);
            gemmUs.set(base, { steps: seen ? `${seen.steps}+${i}` : `${i}`, us: (seen?.us ?? 0) + stepUs });
          }
          // The linear layers' GEMMs (no batch): cuBLAS times the same M×N×K below.
          for (const [name, { steps, us }] of gemmUs) {
            const kern = m.build.program.kernels.find((kk) => kk.name === name);
            const mnk = kern?.kind === 'matmul' && kern.domain.length === 2 ? [...kern.domain, kern.matmul.k] : [];
            if (mnk.length !== 3 || !mnk.every((d) => typeof d === 'number')) continue;
            const [M, Nn, K] = mnk;
            const label = `float16 ${M}x${Nn}x${K} (block step ${steps})`;
            kilnTflops[label] = (2 * M * Nn * K) / (us * 1e-6) / 1e12;
            torchJob.matmul.push({ name: label, dtype: 'float16', M, N: Nn, K });
          }
        } catch (e) {
          ctx.metric('GPT block f16: per-step times failed', NaN, '', e.message.split('\n')[0]);
        }
        return `${(m.us / 1e3).toFixed(3)} ms per block (${m.build.plan.steps.length} kernels), ${(callUs / 1e3).toFixed(3)} ms per awaited call`;
      } finally {
        program.cuda.program.dispose();
      }
    });

    // 6. PyTorch on the same GPU (skipped when torch is not installed).
    if (!run.DRY) {
      await ctx.check('PyTorch comparison', async () => {
        const t = torchBench(torchJob, dir);
        if (t.error) return `skipped: ${t.error}`;
        for (const [name, tf] of Object.entries(t.matmul)) {
          ctx.metric(`cuBLAS (torch ${t.torch}) ${name}`, tf, 'TFLOP/s');
          const step = name.includes('block step');
          if (kilnTflops[name] !== undefined) ctx.metric(`matmul ${name} ÷ cuBLAS`, kilnTflops[name] / tf, '', step ? `kiln ${kilnTflops[name].toFixed(0)} TFLOP/s with its fused epilogue` : 'target >= 0.7');
        }
        if (t.gpt_eager_ms !== undefined) {
          ctx.metric('GPT block f16: torch eager', t.gpt_eager_ms, 'ms');
          ctx.metric('GPT block f16: kiln ÷ torch eager', kilnGptUs / 1e3 / t.gpt_eager_ms, '');
          if (t.gpt_compiled_ms !== undefined) {
            ctx.metric('GPT block f16: torch.compile', t.gpt_compiled_ms, 'ms', `compiled in ${t.gpt_compile_s.toFixed(1)} s`);
            ctx.metric('GPT block f16: kiln ÷ torch.compile', kilnGptUs / 1e3 / t.gpt_compiled_ms, '', 'target <= 1.0');
          }
          if (t.gpt_graphs_ms !== undefined) {
            ctx.metric('GPT block f16: torch.compile reduce-overhead', t.gpt_graphs_ms, 'ms', `CUDA graphs; compiled in ${t.gpt_graphs_compile_s.toFixed(1)} s`);
            ctx.metric('GPT block f16: kiln ÷ torch.compile reduce-overhead', kilnGptUs / 1e3 / t.gpt_graphs_ms, '', 'like for like');
          }
          ctx.metric('GPT block f16: max |kiln - torch|', t.gpt_max_abs_diff, '', `outputs up to ${t.gpt_ref_max_abs.toFixed(2)}`);
          if (!(t.gpt_max_abs_diff <= 0.05 * Math.max(1, t.gpt_ref_max_abs))) throw new Error(`kiln and torch disagree: max |diff| ${t.gpt_max_abs_diff}`);
        }
        if (t.gpt_compiled_ms === undefined && t.gpt_eager_ms === undefined && torchJob.gpt) return `torch ${t.torch} on ${t.device}: matmuls only (${t.partial})`;
        return `torch ${t.torch} on ${t.device}${t.partial ? ` (${t.partial})` : ''}`;
      });
    }
    fs.rmSync(dir, { recursive: true, force: true });
  },
};
