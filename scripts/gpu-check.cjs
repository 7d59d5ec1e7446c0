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
 * ctx.metric(name, value, unit). Each check is printed as it finishes.
 *
 * Every section runs in a process of its own (`--file NN-name.cjs --part FILE`), which writes
 * what it has so far to FILE after each check: a crash, a hang or a timeout loses that
 * section's remaining checks, not the run. Sections get a share of the whole run's time
 * (KILN_GPU_CHECK_BUDGET_S, default 380 s) and are killed past it. `--only` runs the named
 * sections in this process instead.
 *
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
const sectionFile = arg('--file');
const partFile = arg('--part');
const requireGpu = process.env.KILN_REQUIRE_GPU === '1';

const checks = [];
const metrics = [];
const skipped = [];

/** A section process's results so far, for its parent. */
function savePart() {
  if (partFile) fs.writeFileSync(partFile, JSON.stringify({ checks, metrics, skipped }));
}

function record(c) {
  checks.push(c);
  console.log(`  ${c.status.padEnd(4)} ${c.section}/${c.name} (${c.ms.toFixed(0)} ms) ${c.detail}`);
  savePart();
}

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
        record({ section: ctx.section, name, status: 'pass', ms: ms(), detail: String(detail) });
        return true;
      } catch (e) {
        const detail = `${e && e.code ? e.code + ': ' : ''}${e && e.message ? e.message : String(e)}`.split('\n')[0];
        record({ section: ctx.section, name, status: 'fail', ms: ms(), detail });
        return false;
      }
    },
    /** Records a number for the metrics table and the JSON. */
    metric(name, value, unit, note = '') {
      metrics.push({ section: ctx.section, name, value, unit, note });
      savePart();
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

const SECTIONS = path.join(__dirname, 'gpu-check');
const sectionFiles = () => fs.readdirSync(SECTIONS).filter((f) => /^\d+-.+\.cjs$/.test(f)).sort();

function loadSections() {
  const files = sectionFile ? [sectionFile] : sectionFiles();
  return files.map((f) => require(path.join(SECTIONS, f))).filter((s) => !only || only.includes(s.name));
}

// Seconds a section may take at most; the last one (the benchmarks) gets what is left.
const CAPS = { '70-ops.cjs': 150, '85-tensors.cjs': 60, '90-bundle.cjs': 120, '92-startup.cjs': 150 };
const DEFAULT_CAP = 45;

/** Runs every section in a child process of its own, within the run's time budget. */
function runIsolated(report) {
  const { spawnSync } = require('node:child_process');
  const deadline = Date.now() + Number(process.env.KILN_GPU_CHECK_BUDGET_S || 380) * 1000;
  const files = sectionFiles();
  const os = require('node:os');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-gpu-check-'));
  for (const [i, f] of files.entries()) {
    const reserve = 5000 * (files.length - 1 - i);
    const cap = (i === files.length - 1 ? Infinity : CAPS[f] ?? DEFAULT_CAP) * 1000;
    const timeout = Math.min(cap, deadline - Date.now() - reserve);
    const section = f.replace(/^\d+-|\.cjs$/g, '');
    if (timeout < 2000) {
      checks.push({ section, name: '(not run)', status: 'fail', ms: 0, detail: 'out of time' });
      continue;
    }
    const part = path.join(tmp, `${f}.json`);
    const t0 = Date.now();
    // NVRTC compiles run on libuv's pool: let them use the machine's cores.
    const cores = os.cpus().length;
    const env = { UV_THREADPOOL_SIZE: String(Math.min(32, cores + 2)), KILN_NVRTC_JOBS: String(Math.min(64, Math.max(2, cores))), ...process.env, KILN_GPU_CHECK_DEADLINE: String(Date.now() + timeout) };
    const r = spawnSync(process.execPath, [__filename, '--file', f, '--part', part], { stdio: 'inherit', timeout, killSignal: 'SIGKILL', env });
    let got = { checks: [], metrics: [], skipped: [] };
    try {
      got = JSON.parse(fs.readFileSync(part, 'utf8'));
    } catch {
      /* nothing recorded */
    }
    checks.push(...got.checks);
    metrics.push(...got.metrics);
    skipped.push(...got.skipped);
    const name = got.checks[0]?.section ?? section;
    if (r.error && r.error.code === 'ETIMEDOUT') {
      checks.push({ section: name, name: '(section timed out)', status: 'fail', ms: Date.now() - t0, detail: `killed after ${(timeout / 1000).toFixed(0)} s; the checks above finished` });
    } else if (r.signal || r.status !== 0) {
      checks.push({ section: name, name: '(section crashed)', status: 'fail', ms: Date.now() - t0, detail: `exit ${r.signal ?? r.status}; the checks above finished` });
    }
    report();
  }
  fs.rmSync(tmp, { recursive: true, force: true });
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

/** Runs the sections in this process (one with --file, the named ones with --only). */
async function runHere(info) {
  const ctx = makeContext(info);
  const gpu = info.driver.available && info.driver.devices.length > 0;
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
      if (requireGpu) record({ section: s.name, name: 'requirements', status: 'fail', ms: 0, detail: missing });
      savePart();
      continue;
    }
    try {
      await s.run(ctx);
    } catch (e) {
      record({ section: s.name, name: '(section crashed)', status: 'fail', ms: 0, detail: String(e && e.stack ? e.stack : e).split('\n').slice(0, 2).join(' ') });
    }
  }
  return ctx.target;
}

async function main() {
  const info = native.addonInfo();
  if (sectionFile) {
    await runHere(info);
    return;
  }
  const target = makeContext(info).target ?? null;
  const passed = () => checks.filter((c) => c.status === 'pass').length;
  const failed = () => checks.filter((c) => c.status === 'fail').length;
  const report = () => {
    if (!outDir) return;
    fs.mkdirSync(outDir, { recursive: true });
    const json = { date: new Date().toISOString(), node: process.version, info, target, skipped, checks, metrics, passed: passed(), failed: failed() };
    fs.writeFileSync(path.join(outDir, 'gpu-check.json'), JSON.stringify(json, null, 2) + '\n');
  };
  if (only) await runHere(info);
  else runIsolated(report);
  report();
  printTables();
  for (const s of skipped) console.log(`skipped: ${s}`);
  console.log(`${passed()} passed, ${failed()} failed`);
  process.exitCode = failed() > 0 ? 1 : 0;
}

main().catch((e) => {
  console.error(e);
  console.log('0 passed, 1 failed');
  process.exitCode = 1;
});
