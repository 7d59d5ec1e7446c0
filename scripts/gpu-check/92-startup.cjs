/**
 * Startup on the GPU: `kiln bench startup --device cuda` (lib/bench/startup.ts) — fresh
 * processes of an app running the MLP (4×1024, batch 64) and the GPT block (d=768, 12 heads,
 * seq 128) with `device: 'cuda'`, cold (trace, compile, autotune, publish) against warm (load
 * the bundle), with the warm start's breakdown. Target (BRIEF.md): warm ÷ cold ≤ 0.05; a
 * warm start that did not load its bundle with zero compiles fails the check. Then what no
 * bundle can save: the CUDA context alone (import kiln, one 4-byte 'cuda' tensor) in fresh
 * processes, the driver's persistence mode, and each ratio again net of that context.
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
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
};
