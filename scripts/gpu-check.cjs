#!/usr/bin/env node
/**
 * kiln's GPU check, for GPU machines (see ../shared/device/README.md): runs every section in
 * scripts/gpu-check/ (files named NN-name.cjs, in order) against the real driver and NVRTC.
 * Needs only Node, dist/ and the addon (no dev dependencies).
 *
 *   node scripts/gpu-check.cjs [--out DIR] [--only name,name]
 *
 * A section exports { name, needs: 'gpu' | 'nvrtc' | undefined, run(ctx) } and reports
 * through ctx.check(name, fn) (pass/fail, timed; fn may return a detail string) and
 * ctx.metric(name, value, unit). Later sections (the op suite, benchmarks) are new files.
 * Prints the checks and metrics tables last, then `N passed, N failed`; writes
 * DIR/gpu-check.json. Without a GPU, GPU sections are skipped (exit 0) unless
 * KILN_REQUIRE_GPU=1 makes that a failure.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const dist = path.join(__dirname, '..', 'dist');
const native = require(path.join(dist, 'runtime', 'native.js'));
const drv = require(path.join(dist, 'runtime', 'cuda-driver.js'));
const cuda = require(path.join(dist, 'runtime', 'cuda.js'));
const arch = require(path.join(dist, 'runtime', 'cuda-arch.js'));

const arg = (flag) => {
  const i = process.argv.indexOf(flag);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const outDir = arg('--out');
const only = arg('--only')?.split(',');
const requireGpu = process.env.KILN_REQUIRE_GPU === '1';

const checks = [];
const metrics = [];

/** What every section gets: the modules, the facts, and the reporting functions. */
function makeContext(info) {
  const dev = info.driver.available ? info.driver.devices[0] : undefined;
  const ctx = {
    native, drv, cuda, arch, info, device: dev, section: '', target: undefined, targetError: undefined,
    /** Runs one named check, timed; a throw fails it. Returns whether it passed. */
    async check(name, fn) {
      const t0 = process.hrtime.bigint();
      const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
      try {
        const detail = (await fn()) || '';
        checks.push({ section: ctx.section, name, status: 'pass', ms: ms(), detail: String(detail) });
        return true;
      } catch (e) {
        const detail = `${e && e.code ? e.code + ': ' : ''}${e && e.message ? e.message : String(e)}`.split('\n')[0];
        checks.push({ section: ctx.section, name, status: 'fail', ms: ms(), detail });
        return false;
      }
    },
    /** Records a number for the metrics table and the JSON. */
    metric(name, value, unit, note = '') {
      metrics.push({ section: ctx.section, name, value, unit, note });
    },
    /** NVRTC-compiles `source` for the device's target (cached by source). */
    async compile(source, name, options = []) {
      if (!ctx.target) throw ctx.targetError || new Error('no compile target');
      const key = `${source}\0${options.join(' ')}`;
      ctx.compiled ??= new Map();
      if (!ctx.compiled.has(key)) {
        const opts = ['--std=c++17', '--ptxas-options=-v', ...options];
        ctx.compiled.set(key, native.nvrtcCompile({ source, name, target: ctx.target.target, options: opts }));
      }
      return ctx.compiled.get(key);
    },
  };
  if (dev && info.nvrtc.available) {
    try {
      ctx.target = arch.selectCudaTarget({
        computeCapability: dev.computeCapability,
        nvrtcArchs: info.nvrtc.archs,
        deviceName: dev.name,
        nvrtcVersion: info.nvrtc.version,
      });
    } catch (e) {
      ctx.targetError = e;
    }
  }
  return ctx;
}

function loadSections() {
  const dir = path.join(__dirname, 'gpu-check');
  return fs
    .readdirSync(dir)
    .filter((f) => /^\d+-.+\.cjs$/.test(f))
    .sort()
    .map((f) => require(path.join(dir, f)))
    .filter((s) => !only || only.includes(s.name));
}

function printTables() {
  console.log('');
  if (checks.length > 0) {
    console.log(`${'section'.padEnd(12)} ${'check'.padEnd(34)} ${'result'.padEnd(6)} ${'ms'.padStart(9)}  detail`);
    for (const c of checks) {
      console.log(`${c.section.padEnd(12)} ${c.name.padEnd(34)} ${c.status.padEnd(6)} ${c.ms.toFixed(1).padStart(9)}  ${c.detail}`);
    }
  }
  if (metrics.length > 0) {
    console.log('');
    console.log(`${'section'.padEnd(12)} ${'metric'.padEnd(44)} ${'value'.padStart(12)}  unit`);
    for (const m of metrics) {
      const v = typeof m.value === 'number' ? (Number.isInteger(m.value) ? String(m.value) : m.value.toFixed(2)) : String(m.value);
      console.log(`${m.section.padEnd(12)} ${m.name.padEnd(44)} ${v.padStart(12)}  ${m.unit}${m.note ? `  (${m.note})` : ''}`);
    }
  }
}

async function main() {
  const info = native.addonInfo();
  const ctx = makeContext(info);
  const gpu = info.driver.available && info.driver.devices.length > 0;
  const skipped = [];
  for (const s of loadSections()) {
    ctx.section = s.name;
    const missing =
      (s.needs === 'gpu' || s.needs === 'nvrtc') && !gpu
        ? info.driver.available ? 'no CUDA device' : info.driver.reason
        : s.needs === 'nvrtc' && !ctx.target
          ? (ctx.targetError && ctx.targetError.message) || (info.nvrtc.available ? 'no target' : info.nvrtc.reason)
          : undefined;
    if (missing !== undefined) {
      skipped.push(`${s.name}: ${missing}`);
      if (requireGpu) checks.push({ section: s.name, name: 'requirements', status: 'fail', ms: 0, detail: missing });
      continue;
    }
    try {
      await s.run(ctx);
    } catch (e) {
      checks.push({ section: s.name, name: '(section crashed)', status: 'fail', ms: 0, detail: String(e && e.stack ? e.stack : e).split('\n').slice(0, 2).join(' ') });
    }
  }
  const passed = checks.filter((c) => c.status === 'pass').length;
  const failed = checks.filter((c) => c.status === 'fail').length;
  if (outDir) {
    fs.mkdirSync(outDir, { recursive: true });
    const report = { date: new Date().toISOString(), node: process.version, info, target: ctx.target ?? null, skipped, checks, metrics, passed, failed };
    fs.writeFileSync(path.join(outDir, 'gpu-check.json'), JSON.stringify(report, null, 2) + '\n');
  }
  printTables();
  for (const s of skipped) console.log(`skipped: ${s}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed > 0 ? 1 : 0;
}

main().catch((e) => {
  console.error(e);
  console.log('0 passed, 1 failed');
  process.exitCode = 1;
});
