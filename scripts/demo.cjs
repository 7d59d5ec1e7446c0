#!/usr/bin/env node
'use strict';
/**
 * `npm start`: kiln end to end on a real (if tiny) model, cold and then warm.
 *
 * Runs examples/gpt.js — a GPT-style character model whose weights come from a
 * .safetensors file — in two fresh Node processes that share one bundle cache:
 *
 *   run 1  finds no bundle: traces, fuses, generates C++ (or CUDA C), compiles, publishes
 *          the bundle, generates text;
 *   run 2  finds the bundle: loads it (no trace, no compiler) and generates the same text.
 *
 * and prints what each did, then a table of cold vs warm times. The cache is a fresh
 * temporary directory (removed at the end) so run 1 is always cold; set KILN_CACHE_DIR to
 * use and keep your own.
 *
 * The demo looks inside kiln (dist/) only to say what it is about to compile before the
 * compile starts; the examples use the public API alone.
 */
const { execFileSync, fork } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const PROMPT = 'kiln: ';

const ms = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const human = (x) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${ms(x)} ms`);
const tilde = (p) => (p.startsWith(os.homedir() + path.sep) ? `~${p.slice(os.homedir().length)}` : p);

// ---------------------------------------------------------------------------------------
// The parent: two fresh processes, then the table.

/** dist/ is built by `npm install` (the prepare script); build it here if it is missing. */
function ensureDist() {
  if (fs.existsSync(path.join(ROOT, 'dist', 'index.js'))) return;
  console.log('dist/ is missing: building it (npm run build:ts)…');
  try {
    execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  } catch (e) {
    if (!fs.existsSync(path.join(ROOT, 'dist', 'index.js'))) throw e;
  }
}

function runChild(run, env) {
  return new Promise((resolve, reject) => {
    let result;
    const child = fork(__filename, ['--child', String(run)], { env, stdio: ['inherit', 'inherit', 'inherit', 'ipc'] });
    child.on('message', (m) => (result = m));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (result && code === 0) resolve(result);
      else reject(new Error(`run ${run} failed (${signal ?? `exit code ${code}`})`));
    });
  });
}

function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => '  ' + r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('   ').trimEnd()).join('\n');
}

async function parent() {
  ensureDist();
  const own = !process.env.KILN_CACHE_DIR;
  const cacheDir = own ? fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-demo-')) : process.env.KILN_CACHE_DIR;
  const env = { ...process.env, KILN_CACHE_DIR: cacheDir };
  console.log('kiln demo: a GPT-style character model, compiled ahead of time, run cold and then warm');
  console.log(`  cache     ${tilde(cacheDir)}${own ? ' (a fresh one, removed at the end; set KILN_CACHE_DIR to keep bundles)' : ''}`);
  try {
    const cold = await runChild(1, env);
    const warm = await runChild(2, env);
    const col = (r) => [
      r.source,
      r.source === 'compiled' ? human(r.traceMs) : '—',
      r.source === 'compiled' ? human(r.compileMs) : '—',
      human(r.loadMs),
      human(r.firstRunMs),
      human(r.ttftMs),
      human(r.processTtftMs),
      `${ms(r.perTokenMs)} ms`,
    ];
    const labels = ['program from', 'trace', 'compile', 'load', 'first run', 'time to first token', '  from process start', 'later tokens, each'];
    const [c, w] = [col(cold), col(warm)];
    console.log('\ncold vs warm (time to first token: from kiln.compile() to the first generated character)');
    const head = (r, i) => `run ${i} (${r.source === 'compiled' ? 'cold' : 'warm'})`;
    console.log(table([['', head(cold, 1), head(warm, 2)], ...labels.map((l, i) => [l, c[i], w[i]]), ['warm ÷ cold', '', (warm.ttftMs / cold.ttftMs).toFixed(3)]]));
    if (warm.source !== 'bundle') {
      console.log(`\nrun 2 did not load a bundle (source '${warm.source}'): is the cache off or read-only (KILN_CACHE=${process.env.KILN_CACHE ?? ''})? \`npx kiln doctor\` shows the cache directory.`);
    }
    if (cold.text !== warm.text) console.log('\nthe two runs generated different text: that is a bug, please report it');
  } finally {
    if (own) fs.rmSync(cacheDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// A child: one fresh process that loads the model, gets it compiled, and generates.

/** What the first call will compile: the kernel count and the compiler (kiln internals). */
function coldPlan(model, example) {
  const { compileOptions } = require('../examples/gpt.js');
  const { resolveDevice } = require('../dist/api/compile');
  const backend = resolveDevice('auto');
  if (backend !== 'cpu') {
    const { addonInfo } = require('../dist/runtime/native');
    const nvrtc = addonInfo().nvrtc;
    return { what: 'kernels', compiler: nvrtc.available ? `NVRTC ${nvrtc.version.join('.')}` : 'NVRTC' };
  }
  const { traceGraph } = require('../dist/api/tensors');
  const { lower } = require('../dist/passes');
  const { findCxx } = require('../dist/runtime/toolchain');
  const dynamic = new Map(Object.entries(compileOptions(model.cfg).dynamic).map(([i, dims]) => [Number(i), dims]));
  const graph = traceGraph(model.forward, example.map((t) => ({ dtype: t.dtype, shape: t.shape })), dynamic);
  const cxx = findCxx();
  return { what: `${lower(graph).kernels.length} kernels`, compiler: cxx.available ? cxx.version : 'the C++ compiler' };
}

/** The toolchain and target recorded in a bundle's manifest (undefined if unreadable). */
function manifestOf(bundleDir) {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8'));
    return { toolchain: m.guards?.toolchain?.version ?? m.guards?.toolchain?.id, target: m.guards?.target };
  } catch {
    return undefined;
  }
}

async function child(run) {
  const kiln = require('kiln');
  const { loadGpt, compileOptions, encode, nextChar, generate } = require('../examples/gpt.js');
  const say = (label, text) => console.log(`  ${label.padEnd(9)} ${text}`);
  console.log(`\n── run ${run}: a fresh node process ${'─'.repeat(52)}`);

  const tw = performance.now();
  const model = await loadGpt();
  const weightsMs = performance.now() - tw;
  const { cfg, weights } = model;
  const params = weights.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
  say('model', `${path.relative(process.cwd(), model.file)}: ${weights.length} tensors, ${params.toLocaleString('en-US')} parameters (${weights[0].dtype}), read in ${human(weightsMs)}`);
  say('', `${cfg.nLayer} blocks × ${cfg.nHead} heads, width ${cfg.nEmbd}, ${cfg.vocab.length} characters, up to ${cfg.blockSize} positions`);

  // Warm or cold? Ask for the bundle only (force-load): that is the warm path when it exists.
  const opts = compileOptions(cfg);
  const example = (() => {
    const { ids, pos } = encode(cfg, PROMPT);
    return [ids, pos, ...weights];
  })();
  let t0 = performance.now();
  let f = kiln.compile(model.forward, { ...opts, cache: 'force-load' });
  let first;
  try {
    first = await nextChar(f, model, PROMPT);
  } catch (e) {
    if (!(e instanceof kiln.CacheError) || (e.code !== 'KILN_BUNDLE_MISSING' && e.code !== 'KILN_BUNDLE_INVALID')) throw e;
    const plan = coldPlan(model, example);
    const line = `  ${'bundle'.padEnd(9)} ${e.code === 'KILN_BUNDLE_MISSING' ? 'none for this model yet' : 'the one on disk is out of date'}: compiling ${plan.what} with ${plan.compiler}…`;
    t0 = performance.now();
    // On a terminal, a clock on the same line while the compiler runs (it runs off the JS thread).
    const tty = process.stdout.isTTY;
    const seconds = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
    process.stdout.write(tty ? line : `${line}\n`);
    const clock = tty ? setInterval(() => process.stdout.write(`\r${line} ${seconds()}`), 1000) : undefined;
    try {
      f = kiln.compile(model.forward, opts);
      first = await nextChar(f, model, PROMPT);
    } finally {
      if (clock) {
        clearInterval(clock);
        process.stdout.write(`\r${line} done in ${seconds()}\n`);
      }
    }
  }
  const ttftMs = performance.now() - t0;
  const processTtftMs = performance.now(); // performance's time origin is the process start
  const s = f.stats;
  const firstRunMs = Math.max(0, ttftMs - s.traceMs - s.compileMs - s.loadMs);

  const device = (await f(...example)).device;
  const m = s.bundleDir ? manifestOf(s.bundleDir) : undefined;
  say('program', `${s.source === 'bundle' ? 'loaded from its bundle' : s.source} · ${s.kernels} kernels · device 'auto' → ${device}`);
  if (m) say('target', `${m.target}, built with ${m.toolchain}`);
  say('bundle', s.bundleDir ? `${tilde(s.bundleDir)} (${s.source === 'bundle' ? 'loaded' : 'written'})` : 'none (the cache is off or read-only)');
  const built = s.source === 'compiled' ? `trace ${human(s.traceMs)} · compile ${human(s.compileMs)}` : 'no trace, no compile';
  say('stages', `${built} · load ${human(s.loadMs)} · first run ${human(firstRunMs)}`);

  // The rest of the text, one token at a time, on ever longer sequences: one program.
  const times = [];
  process.stdout.write(`  ${'output'.padEnd(9)} ${PROMPT}${first}`);
  const text = await generate(f, model, PROMPT + first, cfg.blockSize, (ch, t) => {
    times.push(t);
    process.stdout.write(ch === '\n' ? '⏎\n' : ch);
  });
  if (!text.endsWith('\n')) process.stdout.write('\n');
  times.sort((a, b) => a - b);
  const perTokenMs = times.length ? times[times.length >> 1] : 0;
  const after = f.stats;
  say('tokens', `${text.length - PROMPT.length} generated, ${ms(perTokenMs)} ms each (median); sequence lengths ${PROMPT.length}…${text.length - 1}, all from one program (last call: ${after.source})`);

  process.send?.({ source: s.source, traceMs: s.traceMs, compileMs: s.compileMs, loadMs: s.loadMs, firstRunMs, ttftMs, processTtftMs, perTokenMs, text });
}

if (process.argv[2] === '--child') {
  child(Number(process.argv[3])).catch((e) => {
    console.error(`\n${e instanceof Error && e.code ? `${e.name} ${e.code}: ${e.message}` : e?.stack ?? e}`);
    process.exitCode = 1;
  });
} else {
  parent().catch((e) => {
    console.error(`\nkiln demo failed: ${e.message}`);
    process.exitCode = 1;
  });
}
