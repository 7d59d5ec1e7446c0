/**
 * Startup on the GPU: `kiln bench startup --device cuda` (lib/bench/startup.ts) — fresh
 * processes of an app running the MLP (4×1024, batch 64) and the GPT block (d=768, 12 heads,
 * seq 128) with `device: 'cuda'`, cold (trace, compile, autotune, publish) against warm (load
 * the bundle), with the warm start's breakdown. Target (BRIEF.md): warm ÷ cold ≤ 0.05; a
 * warm start that did not load its bundle with zero compiles fails the check. Then what no
 * bundle can save: the CUDA context alone (import kiln, one 4-byte 'cuda' tensor) in fresh
 * processes, the driver's persistence mode, and each ratio again net of that context; then
 * the same context without kiln or Node (the driver's steps through Python's ctypes, and
 * PyTorch's first 'cuda' tensor), so the context's cost is seen to be the driver's.
 *
 * KILN_GPU_CHECK_DRY=1: the command's usage only (the children need a GPU).
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { DRY } = require('./cuda-run.cjs');

const BENCH = path.join(__dirname, '..', '..', 'dist', 'bench', 'startup.js');
const DIST = path.join(__dirname, '..', '..', 'dist', 'index.js');

/** A fresh process's milliseconds for importing kiln, then for its first 'cuda' tensor (the context). */
function contextInChild() {
  const script = `const t0 = performance.now(); const kiln = require(${JSON.stringify(DIST)}); const t1 = performance.now();
    kiln.tensor(new Float32Array(1), [1], 'float32', 'cuda').dispose();
    console.log(JSON.stringify({ importMs: t1 - t0, contextMs: performance.now() - t1 }));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`context probe exited ${r.status ?? r.signal}: ${(r.stderr || '').trim().slice(-200)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** The same context without kiln or Node, in a fresh Python process: the driver's own steps through ctypes, then PyTorch's first 'cuda' tensor. */
const PY_CONTEXT = String.raw`
import ctypes, json, sys, time
ms = lambda a, b: (b - a) * 1e3
if sys.argv[1] == "driver":
    t0 = time.perf_counter(); cu = ctypes.CDLL("libcuda.so.1"); t1 = time.perf_counter()
    assert cu.cuInit(0) == 0; t2 = time.perf_counter()
    dev, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    assert cu.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0 and cu.cuCtxSetCurrent(ctx) == 0; t3 = time.perf_counter()
    assert cu.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(4)) == 0; t4 = time.perf_counter()
    print(json.dumps({"dlopen": ms(t0, t1), "init": ms(t1, t2), "context": ms(t2, t3), "alloc": ms(t3, t4), "total": ms(t0, t4)}))
else:
    import torch
    t0 = time.perf_counter(); torch.zeros(1, device="cuda"); torch.cuda.synchronize()
    print(json.dumps({"total": ms(t0, time.perf_counter()), "torch": torch.__version__}))
`;

/** Three fresh Python processes of PY_CONTEXT's `mode`: the median of each field. */
function pythonContext(mode) {
  const runs = [0, 1, 2].map(() => {
    const r = spawnSync('python3', ['-c', PY_CONTEXT, mode], { encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) throw new Error(`python3 ${mode} probe exited ${r.status ?? r.signal}: ${(r.stderr || r.error?.message || '').trim().slice(-200)}`);
    return JSON.parse(r.stdout.trim().split('\n').pop());
  });
  return Object.fromEntries(Object.keys(runs[0]).map((k) => [k, typeof runs[0][k] === 'number' ? median(runs.map((r) => r[k])) : runs[0][k]]));
}

module.exports = {
  name: 'startup',
  needs: DRY ? undefined : 'nvrtc',
  async run(ctx) {
    if (DRY) {
      await ctx.check('kiln bench startup --device (dry run)', () => {
        const help = spawnSync(process.execPath, [BENCH, '--help'], { encoding: 'utf8' });
        if (!/--device D/.test(help.stdout)) throw new Error(`--help lacks --device: ${help.stdout.slice(0, 120)}`);
        const bad = spawnSync(process.execPath, [BENCH, '--device', 'tpu'], { encoding: 'utf8' });
        if (bad.status === 0 || !/--device must be cpu or cuda/.test(bad.stderr)) throw new Error(`--device tpu: exit ${bad.status} ${bad.stderr.slice(0, 120)}`);
        return 'usage ok';
      });
      return;
    }
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-gpu-startup-'));
    const out = path.join(tmp, 'startup-cuda.json');
    let report;
    try {
      await ctx.check('kiln bench startup --device cuda (mlp, block)', () => {
        const deadline = Number(process.env.KILN_GPU_CHECK_DEADLINE) || Date.now() + 300_000;
        const r = spawnSync(process.execPath, [BENCH, '--device', 'cuda', '--models', 'mlp,block', '--reps', '2', '--calls', '20', '--out', out], {
          encoding: 'utf8',
          timeout: Math.max(5000, deadline - Date.now() - 2000),
          killSignal: 'SIGKILL',
        });
        if (!fs.existsSync(out)) throw new Error(`no results (exit ${r.status ?? r.signal}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
        report = JSON.parse(fs.readFileSync(out, 'utf8'));
        for (const m of report.results) {
          const w = m.warm;
          ctx.metric(`${m.model}: cold, start to first result`, m.cold.firstMs, 'ms', 'trace + compile + autotune + publish');
          ctx.metric(`${m.model}: warm, start to first result`, w.firstMs, 'ms', `import ${w.importMs.toFixed(0)}, tensors ${w.tensorsMs.toFixed(0)}, load ${w.loadMs.toFixed(0)}, first call ${w.callMs.toFixed(0)}`);
          ctx.metric(`${m.model}: warm ÷ cold`, m.ratio, '', 'target <= 0.05');
          ctx.metric(`${m.model}: ms/call cold / warm`, `${m.cold.steadyMs.toFixed(2)} / ${w.steadyMs.toFixed(2)}`, 'ms');
        }
        ctx.metric('bare node start', report.nodeStart.bareMs, 'ms');
        const notBundle = report.results.filter((m) => !m.warmFromBundle).map((m) => m.model);
        if (notBundle.length) throw new Error(`warm start did not load its bundle: ${notBundle.join(', ')}`);
        return report.results.map((m) => `${m.model} ${m.ratio.toFixed(3)}`).join(', ');
      });
      await ctx.check('the CUDA context alone (3 fresh processes)', () => {
        const runs = [0, 1, 2].map(contextInChild);
        const contextMs = median(runs.map((r) => r.contextMs));
        const smi = spawnSync('nvidia-smi', ['--query-gpu=persistence_mode', '--format=csv,noheader'], { encoding: 'utf8' });
        const persistence = smi.status === 0 ? smi.stdout.trim().split('\n')[0] : 'unknown (no nvidia-smi)';
        ctx.metric('CUDA context + first tensor, fresh process', contextMs, 'ms', `median of 3; import ${median(runs.map((r) => r.importMs)).toFixed(0)} ms before it; persistence mode ${persistence}`);
        for (const m of report?.results ?? []) {
          ctx.metric(`${m.model}: warm ÷ cold net of the context`, (m.warm.firstMs - contextMs) / (m.cold.firstMs - contextMs), '', 'both starts pay it');
        }
        return `${contextMs.toFixed(0)} ms, persistence mode ${persistence}`;
      });
      await ctx.check('the same context without kiln: the driver through ctypes, and PyTorch (3 fresh processes each)', () => {
        const d = pythonContext('driver');
        ctx.metric('driver alone: dlopen + cuInit + primary context + first cuMemAlloc', d.total, 'ms', `median of 3: dlopen ${d.dlopen.toFixed(1)}, cuInit ${d.init.toFixed(1)}, context ${d.context.toFixed(1)}, alloc ${d.alloc.toFixed(1)}`);
        let torchNote = 'no PyTorch';
        try {
          const t = pythonContext('torch');
          ctx.metric(`PyTorch ${t.torch}: first 'cuda' tensor, fresh process`, t.total, 'ms', 'median of 3; after import torch');
          torchNote = `PyTorch ${t.total.toFixed(0)} ms`;
        } catch (e) {
          torchNote = e.message.split('\n')[0];
        }
        return `driver ${d.total.toFixed(0)} ms (cuInit ${d.init.toFixed(0)}, context ${d.context.toFixed(0)}); ${torchNote}`;
      });
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
};
