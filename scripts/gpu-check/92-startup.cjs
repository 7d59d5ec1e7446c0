/**
 * Startup on the GPU: `kiln bench startup --device cuda` (lib/bench/startup.ts) — fresh
 * processes of an app running the MLP (4×1024, batch 64) and the GPT block (d=768, 12 heads,
 * seq 128) with `device: 'cuda'`, cold (trace, compile, autotune, publish) against warm (load
 * the bundle), with the warm start's breakdown. Target (BRIEF.md): warm ÷ cold ≤ 0.05; a
 * warm start that did not load its bundle with zero compiles fails the check.
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
    try {
      await ctx.check('kiln bench startup --device cuda (mlp, block)', () => {
        const deadline = Number(process.env.KILN_GPU_CHECK_DEADLINE) || Date.now() + 300_000;
        const r = spawnSync(process.execPath, [BENCH, '--device', 'cuda', '--models', 'mlp,block', '--reps', '2', '--calls', '20', '--out', out], {
          encoding: 'utf8',
          timeout: Math.max(5000, deadline - Date.now() - 2000),
          killSignal: 'SIGKILL',
        });
        if (!fs.existsSync(out)) throw new Error(`no results (exit ${r.status ?? r.signal}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
        const report = JSON.parse(fs.readFileSync(out, 'utf8'));
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
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
};
