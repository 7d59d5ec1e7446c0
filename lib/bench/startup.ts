/**
 * Startup benchmark: how long a fresh process takes from its start to the first result of a
 * compiled model, cold (empty bundle cache: trace, compile, publish) and warm (the same
 * cache: load the bundle), and whether the warm program is as fast per call afterwards.
 * The models are the CPU benchmark's (lib/bench/models.ts): the MLP (4×1024, batch 64) and
 * the GPT block (d=768, 12 heads, seq 128).
 *
 * Each model's weights are written once to a checkpoint file, as an app ships them; each
 * child process (lib/bench/startup-child.ts, which loads nothing of the driver) is a small
 * app: start Node, import kiln (dist/), read the checkpoint, kiln.compile the model's
 * function, make the tensors, call it, read the output back. The parent times from spawn to
 * the child's first-result line; the child reports its own breakdown, kiln's stats, then the
 * median of steady-state calls. Repetitions alternate cold and warm, and each pair is
 * followed by bare Node starts (`node -e`) of the same environment: what Node alone costs
 * on this machine, the floor under any warm start. Requires `npm run build:ts` (children
 * run dist/).
 *
 * The children run an installed copy of this kiln (package.json, dist/, the addon, its
 * dependencies linked), made once per run, as an app's node_modules/kiln is: a development
 * checkout (dist/ beside .git) also hashes its built code generator into the bundle key at
 * every start (`kilnBuild`, lib/engine/bundle-target.ts: 5–14 ms on the 2-core VM), which a
 * shipped package does not, and a colleague's `npm run build:ts` between a cold and a warm
 * run would change that key and turn the warm run into a compile.
 *
 * Children run without NODE_EXTRA_CA_CERTS unless --keep-ca-certs is given: Node 20 loads
 * its root store and that file at every start when the variable is set (nodejs/node#40524;
 * later Node versions load them on first TLS use), 40–100 ms on the 2-core VM this was
 * written on, for apps that make no TLS connection. The JSON records what was dropped and
 * the bare start with the variable, so both figures can be reported.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cpuInfo } from '../runtime/toolchain';
import { kilnVersion } from '../util/version';
import { writeReport } from './report';
import { parseCommandLine, UsageError } from './command-line';
import { summarize, type Timing } from './stats';
import type { ChildArgs, DoneLine, FirstLine } from './startup-child';
import type { Weight } from './models';

export const STARTUP_USAGE = `kiln bench startup [options]   (node dist/bench/startup.js, scripts/bench-startup.cjs)

Times fresh processes from start to the first result of a compiled model: cold (empty bundle
cache: trace, compile, publish) against warm (the same cache: load the bundle), and the
steady-state time per call of each. Target: warm ÷ cold ≤ 0.05. The children run an
installed copy of this kiln (made in a temporary dir from dist/ and the addon), as an app
does, and bare Node starts are timed alongside.

  --models LIST   comma-separated: mlp, block (default: mlp,block)
  --device D      cpu or cuda (default cpu); cuda needs a GPU and NVRTC, and its cold
                  starts autotune on the GPU, as kiln.compile(fn, { device: 'cuda' }) does
  --reps N        cold/warm pairs per model (default 3)
  --calls N       steady-state calls timed per process after the first (default 30)
  --threads N     KILN_CPU_THREADS of the children (default: KILN_CPU_THREADS, else all cores)
  --out PATH      JSON results (default bench-results/startup.json, startup-cuda.json for cuda)
  --report        then rewrite the startup section and chart of docs/BENCHMARKS.md from the
                  JSON (see \`kiln bench report --help\`; CPU only)
  --keep-ca-certs children inherit NODE_EXTRA_CA_CERTS (dropped by default: with it Node 20
                  reads its whole CA store at every start, which no TLS-free app needs)
  --keep          keep the temporary caches and checkpoints (printed at the end)`;

interface Args {
  models: string[];
  device: 'cpu' | 'cuda';
  reps: number;
  calls: number;
  threads: number;
  out: string;
  keep: boolean;
  keepCaCerts: boolean;
  report: boolean;
}

function parseArgs(argv: string[], env: NodeJS.ProcessEnv): Args {
  const a: Args = { models: ['mlp', 'block'], device: 'cpu', reps: 3, calls: 30, threads: Number(env.KILN_CPU_THREADS || os.availableParallelism()), out: '', keep: false, keepCaCerts: false, report: false };
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
      case '--device': {
        const d = argv[++i];
        if (d !== 'cpu' && d !== 'cuda') throw new UsageError(`--device must be cpu or cuda, got '${d ?? ''}'`);
        a.device = d;
        break;
      }
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
      case '--keep-ca-certs':
        a.keepCaCerts = true;
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
  if (a.report && a.device === 'cuda') throw new UsageError('--report rewrites the CPU figures; GPU figures are recorded with their card in docs/BENCHMARKS.md');
  a.out ||= path.join('bench-results', a.device === 'cuda' ? 'startup-cuda.json' : 'startup.json');
  return a;
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

/** Variables a child never inherits: kiln's cache settings (each run picks its own cache). */
const KILN_CACHE_ENV = /^KILN_(CACHE|BUNDLE_PATH|FAIL_ON_RECOMPILE)/;

/** The children's environment, and what was left out of it besides kiln's cache settings. */
function childEnv(threads: number, keepCaCerts: boolean): { env: NodeJS.ProcessEnv; dropped: string[] } {
  const env: NodeJS.ProcessEnv = {};
  const dropped: string[] = [];
  for (const [k, v] of Object.entries(process.env)) {
    if (KILN_CACHE_ENV.test(k)) continue;
    if (k === 'NODE_EXTRA_CA_CERTS' && !keepCaCerts) dropped.push(k);
    else env[k] = v;
  }
  env.KILN_CPU_THREADS = String(threads);
  return { env, dropped };
}

/** Spawns `node argv…` and resolves to the ms from spawn to its first line on stdout, and every line, once it exits 0. */
function spawnTimed(argv: string[], env: NodeJS.ProcessEnv, what: string): Promise<{ firstLineMs: number; lines: string[] }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let err = '';
    let firstLineMs: number | undefined;
    const lines: string[] = [];
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        firstLineMs ??= performance.now() - t0;
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0 || firstLineMs === undefined) reject(new Error(`${what} exited ${code}:\n${err}`));
      else resolve({ firstLineMs, lines });
    });
  });
}

/**
 * Copies the package as npm would install it (package.json, dist/, the built addon and the
 * prebuilds) into `dir`/kiln, its node_modules linked to this checkout's; returns the copy's
 * root. Needs dist/ (npm run build:ts).
 */
function installCopy(dir: string): string {
  const root = path.resolve(__dirname, '..', '..');
  const to = path.join(dir, 'kiln');
  fs.mkdirSync(path.join(to, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(path.join(root, 'package.json'), path.join(to, 'package.json'));
  fs.cpSync(path.join(root, 'dist'), path.join(to, 'dist'), { recursive: true });
  const addon = path.join(root, 'build', 'Release', 'kiln.node');
  if (fs.existsSync(addon)) fs.copyFileSync(addon, path.join(to, 'build', 'Release', 'kiln.node'));
  if (fs.existsSync(path.join(root, 'prebuilds'))) fs.cpSync(path.join(root, 'prebuilds'), path.join(to, 'prebuilds'), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(to, 'node_modules'), 'dir');
  return to;
}

async function runChild(kilnRoot: string, args: ChildArgs, env: NodeJS.ProcessEnv): Promise<Omit<Run, 'kind'>> {
  const child = path.join(kilnRoot, 'dist', 'bench', 'startup-child.js');
  const { firstLineMs, lines } = await spawnTimed([child, JSON.stringify(args)], env, `startup child (${args.model})`);
  const parsed = lines.map((l) => JSON.parse(l) as FirstLine | DoneLine);
  const first = parsed.find((l): l is FirstLine => l.phase === 'first');
  const done = parsed.find((l): l is DoneLine => l.phase === 'done');
  if (!first || !done) throw new Error(`startup child (${args.model}) wrote no result`);
  return { wallMs: firstLineMs, first, steady: done.steady };
}

/** A bare Node start with this environment: spawn → first line of `node -e`. */
async function bareNode(env: NodeJS.ProcessEnv): Promise<number> {
  return (await spawnTimed(['-e', 'process.stdout.write("up\\n")'], env, 'node -e')).firstLineMs;
}

const med = (xs: number[]): number => summarize(xs).median;

/** The first GPU's name, for the report (the parent asks the driver; children load the bundle). */
function gpuName(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the parent only, and only for --device cuda
  const { addonInfo } = require('../runtime/native') as typeof import('../runtime/native');
  const d = addonInfo().driver;
  return d.available && d.devices.length ? d.devices[0].name : 'no GPU';
}

export interface StartupResult {
  model: string;
  config: Record<string, number>;
  runs: Run[];
  cold: { firstMs: number; steadyMs: number };
  /**
   * Medians of the warm runs, each step's own time: start → kiln imported (Node's start
   * included), the checkpoint read, kiln.compile plus kiln.tensor of the input and weights
   * (`tensorsMs`), bundle lookup + verify + load (`loadMs`, inside the first call), and the
   * first call without the load, up to its result read back (`callMs`). Files written before
   * the breakdown was refined lack `checkpointMs` and `tensorsMs`, and their `callMs`
   * includes the tensors.
   */
  warm: { firstMs: number; steadyMs: number; importMs: number; checkpointMs?: number; tensorsMs?: number; loadMs: number; callMs: number };
  /** Median warm ÷ median cold, from process start to first result (target ≤ 0.05). */
  ratio: number;
  /** Every warm run loaded its bundle with zero traces and compiles. */
  warmFromBundle: boolean;
}

/** Bare Node starts measured alongside (absent in older files). */
export interface NodeStart {
  /** Median spawn → first line of `node -e`, in the children's environment. */
  bareMs: number;
  samples: number;
  /** The same with the parent's NODE_EXTRA_CA_CERTS, when the children ran without it. */
  withCaCertsMs?: number;
  /** Variables the children did not inherit (besides kiln's cache settings). */
  dropped: string[];
}

function formatTable(results: StartupResult[]): string {
  const opt = (v: number | undefined, d: number) => (v === undefined ? '—' : `${v.toFixed(d)} ms`);
  const rows = [
    ['model', 'cold first', 'warm first', 'warm/cold', 'start→import', 'checkpoint', 'tensors', 'load', 'first call', 'cold ms/call', 'warm ms/call', 'warm source'],
    ...results.map((r) => [
      r.model,
      `${r.cold.firstMs.toFixed(0)} ms`,
      `${r.warm.firstMs.toFixed(0)} ms`,
      r.ratio.toFixed(3),
      `${r.warm.importMs.toFixed(0)} ms`,
      opt(r.warm.checkpointMs, 1),
      opt(r.warm.tensorsMs, 1),
      `${r.warm.loadMs.toFixed(1)} ms`,
      `${r.warm.callMs.toFixed(1)} ms`,
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
  const args = parseCommandLine(argv, 'kiln bench startup', STARTUP_USAGE, (a) => parseArgs(a, env));
  if (typeof args === 'number') return args; // --help, or a usage error
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the parent only: generating weights
  const models = require('./models') as typeof import('./models');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-startup-'));
  const kilnRoot = installCopy(tmp);
  const { env: envOfChildren, dropped } = childEnv(args.threads, args.keepCaCerts);
  const envWithCa = dropped.length ? { ...envOfChildren, NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS } : undefined;
  const bare: number[] = [];
  const bareWithCa: number[] = [];
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
          const r: Run = { ...(await runChild(kilnRoot, { model: name, device: args.device, checkpoint, cacheDir, calls: args.calls }, envOfChildren)), kind };
          process.stderr.write(` first result after ${r.wallMs.toFixed(0)} ms (${String(r.first.stats.source)}), ${r.steady.median.toFixed(2)} ms/call\n`);
          runs.push(r);
        }
        // Bare Node starts between the pairs, so they see the same machine load.
        for (let i = 0; i < 2; i++) {
          bare.push(await bareNode(envOfChildren));
          if (envWithCa) bareWithCa.push(await bareNode(envWithCa));
        }
      }
      const of = (kind: Run['kind']) => runs.filter((r) => r.kind === kind);
      const cold = { firstMs: med(of('cold').map((r) => r.wallMs)), steadyMs: med(of('cold').map((r) => r.steady.median)) };
      const warmRuns = of('warm');
      const warm = {
        firstMs: med(warmRuns.map((r) => r.wallMs)),
        steadyMs: med(warmRuns.map((r) => r.steady.median)),
        importMs: med(warmRuns.map((r) => r.first.importMs)),
        checkpointMs: med(warmRuns.map((r) => r.first.checkpointMs - r.first.importMs)),
        tensorsMs: med(warmRuns.map((r) => r.first.tensorsMs - r.first.modelMs)),
        loadMs: med(warmRuns.map((r) => Number(r.first.stats.loadMs))),
        callMs: med(warmRuns.map((r) => r.first.firstMs - r.first.tensorsMs - Number(r.first.stats.loadMs))),
      };
      const warmFromBundle = warmRuns.every((r) => r.first.stats.source === 'bundle' && r.first.counters.traces === 0 && r.first.counters.compiles === 0);
      results.push({ model: name, config: m.config, runs, cold, warm, ratio: warm.firstMs / cold.firstMs, warmFromBundle });
    }
  } finally {
    if (!args.keep) fs.rmSync(tmp, { recursive: true, force: true });
  }

  const cpu = cpuInfo();
  const gpu = args.device === 'cuda' ? gpuName() : undefined;
  const date = new Date().toISOString();
  const loadAfter = os.loadavg()[0];
  const nodeStart: NodeStart = { bareMs: med(bare), samples: bare.length, ...(bareWithCa.length ? { withCaCertsMs: med(bareWithCa) } : {}), dropped };
  const where = gpu ? `on ${gpu} (CUDA), host ${cpu.model} (${cpu.cores} cores)` : `${args.threads} kernel thread(s), ${cpu.model} (${cpu.cores} cores)`;
  console.log(`\nkiln startup, fresh processes: ${args.reps} cold/warm pair(s) per model, ${where}, Node ${process.version}, ${date}`);
  console.log('first = spawn → first result read back (median of reps); warm/cold target ≤ 0.05. Warm breakdown (ms since the child started):');
  console.log('start→import = Node start + kiln import; checkpoint = reading the weights file; tensors = kiln.compile + kiln.tensor of input and weights;');
  console.log('load = bundle lookup, verify, graph.json, dlopen (in the first call); first call = the first call without the load, read-back included.');
  console.log('ms/call = median of the steady-state calls after the first\n');
  console.log(formatTable(results));
  const caNote = nodeStart.withCaCertsMs !== undefined ? `; with the parent's NODE_EXTRA_CA_CERTS ${nodeStart.withCaCertsMs.toFixed(0)} ms (children ran without it; --keep-ca-certs keeps it)` : '';
  console.log(`\nbare Node start (node -e, median of ${nodeStart.samples}): ${nodeStart.bareMs.toFixed(0)} ms${caNote}`);
  console.log(`load average (1 min) before ${loadBefore.toFixed(2)}, after ${loadAfter.toFixed(2)}${args.keep ? `; kept ${tmp}` : ''}`);
  const report = {
    benchmark: 'startup',
    device: args.device,
    ...(gpu ? { gpu } : {}),
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
    nodeStart,
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
  startupBench(process.argv.slice(2)).then((code) => (process.exitCode = code));
}
