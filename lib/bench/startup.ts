/**
 * Startup benchmark: how long a fresh process takes from its start to the first result of a
 * compiled model, cold (empty bundle cache: trace, compile, publish) and warm (the same
 * cache: load the bundle), and whether the warm program is as fast per call afterwards.
 * The models are the CPU benchmark's (lib/bench/models.ts): the MLP (4×1024, batch 64) and
 * the GPT block (d=768, 12 heads, seq 128).
 *
 * Each model's weights are written once to a checkpoint file, as an app ships them; each
 * child process is a small app: start Node, import kiln (dist/), read the checkpoint,
 * kiln.compile the model's function, call it, read the output back. The parent times from
 * spawn to the child's first-result line; the child reports its own breakdown, kiln's
 * stats, then the median of steady-state calls. Repetitions alternate cold and warm.
 * Requires `npm run build:ts` (children run dist/).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cpuInfo } from '../runtime/toolchain';
import { kilnVersion } from '../util/version';
import { writeReport } from './report';
import { summarize, type Timing } from './stats';
import type { Weight } from './models';

export const STARTUP_USAGE = `kiln bench startup [options]   (node dist/bench/startup.js, scripts/bench-startup.cjs)

Times fresh processes from start to the first result of a compiled model: cold (empty bundle
cache: trace, compile, publish) against warm (the same cache: load the bundle), and the
steady-state time per call of each. Target: warm ÷ cold ≤ 0.05.

  --models LIST   comma-separated: mlp, block (default: mlp,block)
  --reps N        cold/warm pairs per model (default 3)
  --calls N       steady-state calls timed per process after the first (default 30)
  --threads N     KILN_CPU_THREADS of the children (default: KILN_CPU_THREADS, else all cores)
  --out PATH      JSON results (default bench-results/startup.json)
  --report        then rewrite the startup section and chart of docs/BENCHMARKS.md from the
                  JSON (see \`kiln bench report --help\`)
  --keep          keep the temporary caches and checkpoints (printed at the end)`;

interface Args {
  models: string[];
  reps: number;
  calls: number;
  threads: number;
  out: string;
  keep: boolean;
  report: boolean;
}

class UsageError extends Error {}

function parseArgs(argv: string[], env: NodeJS.ProcessEnv): Args {
  const a: Args = { models: ['mlp', 'block'], reps: 3, calls: 30, threads: Number(env.KILN_CPU_THREADS || os.availableParallelism()), out: path.join('bench-results', 'startup.json'), keep: false, report: false };
  const count = (i: number, min: number): number => {
    const n = Number(argv[i + 1]);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`${argv[i]} must be an integer ≥ ${min}, got '${argv[i + 1]}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--models':
        a.models = (argv[++i] ?? '').split(',').filter(Boolean);
        break;
      case '--reps':
        a.reps = count(i++, 1);
        break;
      case '--calls':
        a.calls = count(i++, 1);
        break;
      case '--threads':
        a.threads = count(i++, 1);
        break;
      case '--out':
        if (argv[i + 1] === undefined) throw new UsageError('--out needs a path');
        a.out = argv[++i];
        break;
      case '--keep':
        a.keep = true;
        break;
      case '--report':
        a.report = true;
        break;
      default:
        throw new UsageError(`unknown option '${argv[i]}'`);
    }
  }
  for (const m of a.models) if (m !== 'mlp' && m !== 'block') throw new UsageError(`unknown model '${m}' (mlp, block)`);
  if (!a.models.length) throw new UsageError('--models needs at least one model');
  if (!Number.isInteger(a.threads) || a.threads < 1) throw new UsageError('KILN_CPU_THREADS must be a positive integer');
  return a;
}

// ─── the child: one app start ────────────────────────────────────────────────────────────────

/** What the parent tells a child. */
interface ChildArgs {
  model: 'mlp' | 'block';
  checkpoint: string;
  cacheDir: string;
  calls: number;
}

/** The child's first line (as soon as the first result is read back) and its last. */
interface FirstLine {
  phase: 'first';
  /** ms since the process started (performance.timeOrigin): kiln imported, checkpoint read, model built, first result. */
  importMs: number;
  checkpointMs: number;
  modelMs: number;
  firstMs: number;
  stats: Record<string, unknown>;
  counters: { traces: number; compiles: number };
}

interface DoneLine {
  phase: 'done';
  steady: Timing;
}

/** Reads a checkpoint written by `writeCheckpoint`: `{ name: Float32Array }` and shapes. */
function readCheckpoint(file: string): { shapes: Record<string, number[]>; data: Record<string, Float32Array> } {
  const header = JSON.parse(fs.readFileSync(`${file}.json`, 'utf8')) as { tensors: { name: string; shape: number[]; offset: number; length: number }[] };
  const bytes = fs.readFileSync(file);
  const shapes: Record<string, number[]> = {};
  const data: Record<string, Float32Array> = {};
  for (const t of header.tensors) {
    shapes[t.name] = t.shape;
    const at = bytes.byteOffset + t.offset;
    // A view when aligned (large files get their own ArrayBuffer), else a copy.
    data[t.name] = at % 4 === 0 ? new Float32Array(bytes.buffer, at, t.length) : new Float32Array(bytes.buffer.slice(at, at + t.length * 4));
  }
  return { shapes, data };
}

/** Runs `make` with `new Float32Array(n)` returning an empty array (see `child`). */
function withoutWeights<T>(make: () => T): T {
  const Real = globalThis.Float32Array;
  const Empty = function () {
    return new Real(0);
  } as unknown as Float32ArrayConstructor;
  globalThis.Float32Array = Empty;
  try {
    return make();
  } finally {
    globalThis.Float32Array = Real;
  }
}

async function child(args: ChildArgs): Promise<void> {
  /* eslint-disable @typescript-eslint/no-require-imports -- timed: the import is part of the start */
  const kiln = require('../index') as typeof import('../index');
  const importMs = performance.now();
  const ckpt = readCheckpoint(args.checkpoint);
  const checkpointMs = performance.now();
  // The model's function from models.ts. Its constructor also draws random weights, which
  // this app does not use (they come from the checkpoint): while it runs, Float32Array
  // makes empty arrays, so no weight is drawn or allocated; the function is unchanged.
  const models = require('./models') as typeof import('./models');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const m = withoutWeights(() => (args.model === 'mlp' ? models.mlp() : models.block()));
  const modelMs = performance.now();
  const f = kiln.compile(m.kilnFn, { name: `startup-${m.name}`, device: 'cpu', cacheDir: args.cacheDir });
  const [x, ...ws] = [...m.inputs, ...m.weights].map((w) => kiln.tensor(ckpt.data[w.name], ckpt.shapes[w.name]));
  const y = await f(x, ...ws);
  await y.toArray();
  const first: FirstLine = { phase: 'first', importMs, checkpointMs, modelMs, firstMs: performance.now(), stats: { ...f.stats }, counters: kiln.counters() };
  process.stdout.write(`${JSON.stringify(first)}\n`);
  for (let i = 0; i < 3; i++) await (await f(x, ...ws)).toArray();
  const ms: number[] = [];
  for (let i = 0; i < args.calls; i++) {
    const t0 = performance.now();
    await (await f(x, ...ws)).toArray();
    ms.push(performance.now() - t0);
  }
  const done: DoneLine = { phase: 'done', steady: summarize(ms) };
  process.stdout.write(`${JSON.stringify(done)}\n`);
}

// ─── the parent ──────────────────────────────────────────────────────────────────────────────

/** Writes x and the weights as one raw float32 file plus a JSON index. */
function writeCheckpoint(file: string, tensors: { name: string; shape: number[]; data: Float32Array }[]): void {
  let offset = 0;
  const index = tensors.map((t) => {
    const e = { name: t.name, shape: t.shape, offset, length: t.data.length };
    offset += t.data.byteLength;
    return e;
  });
  const fd = fs.openSync(file, 'w');
  try {
    for (const t of tensors) fs.writeSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  } finally {
    fs.closeSync(fd);
  }
  fs.writeFileSync(`${file}.json`, JSON.stringify({ tensors: index }));
}

interface Run {
  kind: 'cold' | 'warm';
  /** Parent's wall clock from spawn to the first-result line. */
  wallMs: number;
  first: FirstLine;
  steady: Timing;
}

function runChild(args: ChildArgs, threads: number): Promise<Omit<Run, 'kind'>> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^KILN_(CACHE|BUNDLE_PATH|FAIL_ON_RECOMPILE)/.test(k)) env[k] = v;
  env.KILN_CPU_THREADS = String(threads);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, [__filename, '--child', JSON.stringify(args)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let err = '';
    let wallMs = 0;
    let first: FirstLine | undefined;
    let steady: Timing | undefined;
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = JSON.parse(buf.slice(0, nl)) as FirstLine | DoneLine;
        buf = buf.slice(nl + 1);
        if (line.phase === 'first') {
          wallMs = performance.now() - t0;
          first = line;
        } else steady = line.steady;
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0 || !first || !steady) reject(new Error(`startup child (${args.model}) exited ${code}:\n${err}`));
      else resolve({ wallMs, first, steady });
    });
  });
}

const med = (xs: number[]): number => summarize(xs).median;

export interface StartupResult {
  model: string;
  config: Record<string, number>;
  runs: Run[];
  cold: { firstMs: number; steadyMs: number };
  /** Medians of the warm runs: start → kiln imported, bundle lookup + verify + load, and the rest up to the first result (input tensors, the first call, read-back). */
  warm: { firstMs: number; steadyMs: number; importMs: number; loadMs: number; callMs: number };
  /** Median warm ÷ median cold, from process start to first result (target ≤ 0.05). */
  ratio: number;
  /** Every warm run loaded its bundle with zero traces and compiles. */
  warmFromBundle: boolean;
}

function formatTable(results: StartupResult[]): string {
  const rows = [
    ['model', 'cold first', 'warm first', 'warm/cold', 'warm: start→import', 'load', 'first call', 'cold ms/call', 'warm ms/call', 'warm source'],
    ...results.map((r) => [
      r.model,
      `${r.cold.firstMs.toFixed(0)} ms`,
      `${r.warm.firstMs.toFixed(0)} ms`,
      r.ratio.toFixed(3),
      `${r.warm.importMs.toFixed(0)} ms`,
      `${r.warm.loadMs.toFixed(1)} ms`,
      `${r.warm.callMs.toFixed(0)} ms`,
      r.cold.steadyMs.toFixed(2),
      r.warm.steadyMs.toFixed(2),
      r.warmFromBundle ? 'bundle' : 'NOT a bundle',
    ]),
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  return rows.map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')).join('\n');
}

/** Runs the startup benchmark; resolves to the exit code (1 when a warm start did not load a bundle). */
export async function startupBench(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(STARTUP_USAGE);
    return 0;
  }
  let args: Args;
  try {
    args = parseArgs(argv, env);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`kiln bench startup: ${e.message}\n\n${STARTUP_USAGE}`);
    return 2;
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the parent only: generating weights
  const models = require('./models') as typeof import('./models');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-startup-'));
  const loadBefore = os.loadavg()[0];
  const results: StartupResult[] = [];
  try {
    for (const name of args.models as ('mlp' | 'block')[]) {
      const m = name === 'mlp' ? models.mlp() : models.block();
      const checkpoint = path.join(tmp, `${name}.bin`);
      writeCheckpoint(checkpoint, [...(m.inputs as Weight[]), ...m.weights]); // mlp and block: one float32 input
      const runs: Run[] = [];
      for (let rep = 0; rep < args.reps; rep++) {
        const cacheDir = path.join(tmp, `cache-${name}-${rep}`);
        for (const kind of ['cold', 'warm'] as const) {
          process.stderr.write(`[${name}] rep ${rep + 1}/${args.reps}: ${kind} start…`);
          const r: Run = { ...(await runChild({ model: name, checkpoint, cacheDir, calls: args.calls }, args.threads)), kind };
          process.stderr.write(` first result after ${r.wallMs.toFixed(0)} ms (${String(r.first.stats.source)}), ${r.steady.median.toFixed(2)} ms/call\n`);
          runs.push(r);
        }
      }
      const of = (kind: Run['kind']) => runs.filter((r) => r.kind === kind);
      const cold = { firstMs: med(of('cold').map((r) => r.wallMs)), steadyMs: med(of('cold').map((r) => r.steady.median)) };
      const warmRuns = of('warm');
      const warm = {
        firstMs: med(warmRuns.map((r) => r.wallMs)),
        steadyMs: med(warmRuns.map((r) => r.steady.median)),
        importMs: med(warmRuns.map((r) => r.first.importMs)),
        loadMs: med(warmRuns.map((r) => Number(r.first.stats.loadMs))),
        callMs: med(warmRuns.map((r) => r.first.firstMs - r.first.modelMs - Number(r.first.stats.loadMs))),
      };
      const warmFromBundle = warmRuns.every((r) => r.first.stats.source === 'bundle' && r.first.counters.traces === 0 && r.first.counters.compiles === 0);
      results.push({ model: name, config: m.config, runs, cold, warm, ratio: warm.firstMs / cold.firstMs, warmFromBundle });
    }
  } finally {
    if (!args.keep) fs.rmSync(tmp, { recursive: true, force: true });
  }

  const cpu = cpuInfo();
  const date = new Date().toISOString();
  const loadAfter = os.loadavg()[0];
  console.log(`\nkiln startup, fresh processes: ${args.reps} cold/warm pair(s) per model, ${args.threads} kernel thread(s), ${cpu.model} (${cpu.cores} cores), Node ${process.version}, ${date}`);
  console.log('first = spawn → first result read back (median of reps); warm/cold target ≤ 0.05. Warm breakdown (ms since the child started):');
  console.log('start→import = Node start + kiln import; load = bundle lookup, verify, graph.json, dlopen; first call = inputs, first call, read-back.');
  console.log('ms/call = median of the steady-state calls after the first\n');
  console.log(formatTable(results));
  console.log(`\nload average (1 min) before ${loadBefore.toFixed(2)}, after ${loadAfter.toFixed(2)}${args.keep ? `; kept ${tmp}` : ''}`);
  const report = {
    benchmark: 'startup',
    date,
    cpu: cpu.model,
    simd: cpu.features,
    cores: cpu.cores,
    threads: args.threads,
    node: process.version,
    versions: { node: process.version, kiln: kilnVersion() },
    reps: args.reps,
    calls: args.calls,
    loadAverage1m: { before: loadBefore, after: loadAfter },
    timing:
      'firstMs: parent wall clock from spawn to the child reading back its first result (Node start, kiln import, checkpoint read, compile or bundle load, first call); child times are ms since its process start',
    target: { warmOverCold: 0.05 },
    results,
  };
  fs.mkdirSync(path.dirname(path.resolve(args.out)), { recursive: true });
  fs.writeFileSync(args.out, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`wrote ${args.out}`);
  if (args.report) for (const p of writeReport({ startupJson: args.out })) console.log(`wrote ${p}`);
  return results.every((r) => r.warmFromBundle) ? 0 : 1;
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    child(JSON.parse(argv[1]) as ChildArgs).catch((e: unknown) => {
      console.error(e);
      process.exitCode = 1;
    });
  } else {
    startupBench(argv).then((code) => (process.exitCode = code));
  }
}
