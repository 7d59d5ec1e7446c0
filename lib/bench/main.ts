/**
 * `kiln bench` / `npm run bench`: the CPU benchmark against onnxruntime-node. Prints a table
 * and writes machine-readable results (with the CPU model, thread count and date).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cpuInfo as hostCpu } from '../runtime/toolchain';
import { block, mlp, type BenchModel } from './models';
import { gpt } from './gpt';
import { formatTable, runCpuBench, type KilnMode } from './cpu';
import { formatProfile, profileDir, profileModel } from './profile';
import { writeReport } from './report';
import { parseCommandLine, UsageError } from './command-line';

export const BENCH_USAGE = `kiln bench [options]

Times kiln's CPU backend against onnxruntime-node on the same models, weights, input and
thread count, in one process, and checks that both compute the same output. The models:
mlp (4 Linear layers of 1024, GELU, batch 64), block (a GPT-2 transformer block, d 768,
12 heads, seq 128) and gpt (the GPT-style character model of examples/gpt.js with its
weights from examples/weights, on a full-length sequence; needs a kiln checkout).

  --threads N     threads for both engines (default: KILN_CPU_THREADS, else all cores)
  --models LIST   comma-separated: mlp, block, gpt (default: mlp,block,gpt)
  --iters N       timed iterations per engine (default 50)
  --warmup N      untimed iterations per engine first (default 5)
  --eager         run kiln eagerly (reference interpreter) instead of compiled: a correctness
                  check of the ONNX side; implies --small unless --full is given
  --small         reduced sizes (mlp 8×128×4, block seq 16 d 64 4 heads, gpt seq 16)
  --full          full sizes even with --eager
  --ort-no-prepack  stop onnxruntime from pre-packing its constant weights (kiln receives
                  the weights as inputs; this shows what pre-packing is worth to onnxruntime)
  --profile       instead of the side-by-side timing: per-kernel times of kiln's generated
                  kernels and per-node times of onnxruntime's profiler (--iters repetitions)
  --tolerance X   accepted max|kiln − ort| / max|ort| (default 1e-4)
  --out PATH      JSON results (default bench-results/cpu.json)
  --report        then rewrite the CPU section and chart of docs/BENCHMARKS.md from the
                  JSON (see \`kiln bench report --help\`)

Exit status 0 when every model agrees within the tolerance, 1 otherwise.`;

interface Args {
  threads: number;
  models: string[];
  iters: number;
  warmup: number;
  mode: KilnMode;
  small: boolean;
  ortPrepack: boolean;
  profile: boolean;
  tolerance: number;
  out: string;
  report: boolean;
}

function parseArgs(argv: string[], env: NodeJS.ProcessEnv): Args {
  const envThreads = env.KILN_CPU_THREADS ? Number(env.KILN_CPU_THREADS) : undefined;
  const a: Args = {
    threads: envThreads ?? os.availableParallelism(),
    models: [...MODELS],
    iters: 50,
    warmup: 5,
    mode: 'compiled',
    small: false,
    ortPrepack: true,
    profile: false,
    tolerance: 1e-4,
    out: path.join('bench-results', 'cpu.json'),
    report: false,
  };
  let full = false;
  const value = (i: number) => {
    const v = argv[i + 1];
    if (v === undefined) throw new UsageError(`${argv[i]} needs a value`);
    return v;
  };
  const count = (i: number, min: number) => {
    const n = Number(value(i));
    if (!Number.isInteger(n) || n < min) throw new UsageError(`${argv[i]} must be an integer ≥ ${min}, got '${argv[i + 1]}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--threads': a.threads = count(i++, 1); break;
      case '--iters': a.iters = count(i++, 1); break;
      case '--warmup': a.warmup = count(i++, 0); break;
      case '--models': a.models = value(i++).split(',').filter(Boolean); break;
      case '--tolerance': a.tolerance = Number(value(i++)); break;
      case '--out': a.out = value(i++); break;
      case '--eager': a.mode = 'eager'; break;
      case '--small': a.small = true; break;
      case '--full': full = true; break;
      case '--ort-no-prepack': a.ortPrepack = false; break;
      case '--profile': a.profile = true; break;
      case '--report': a.report = true; break;
      default: throw new UsageError(`unknown option '${argv[i]}'`);
    }
  }
  if (a.mode === 'eager' && !full) a.small = true;
  if (!Number.isInteger(a.threads) || a.threads < 1) throw new UsageError(`KILN_CPU_THREADS must be a positive integer`);
  if (!(a.tolerance > 0)) throw new UsageError('--tolerance must be a positive number');
  for (const m of a.models) if (!(MODELS as readonly string[]).includes(m)) throw new UsageError(`unknown model '${m}' (${MODELS.join(', ')})`);
  if (a.report && a.profile) throw new UsageError('--report reports the side-by-side timing, not --profile');
  return a;
}

/** The benchmark models, by name. */
export const MODELS = ['mlp', 'block', 'gpt'] as const;

async function buildModels(names: string[], small: boolean): Promise<BenchModel[]> {
  const out: BenchModel[] = [];
  for (const n of names) {
    if (n === 'mlp') out.push(mlp(small ? { batch: 8, width: 128, layers: 4 } : undefined));
    else if (n === 'block') out.push(block(small ? { batch: 1, seq: 16, d: 64, heads: 4 } : undefined));
    else out.push(await gpt(small ? { seq: 16 } : {}));
  }
  return out;
}

/** The CPU model and its SIMD features, as kiln's toolchain probe reads them. */
export function cpuInfo(): { model: string; simd: string[] } {
  const cpu = hostCpu();
  return { model: cpu.model, simd: cpu.features };
}

/** `version` of a package.json, by module specifier. */
function packageVersion(spec: string): string {
  try {
    return (JSON.parse(fs.readFileSync(require.resolve(spec), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Runs the benchmark; resolves to the exit code. */
export async function bench(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const args = parseCommandLine(argv, 'kiln bench', BENCH_USAGE, (a) => parseArgs(a, env));
  if (typeof args === 'number') return args; // --help, or a usage error
  // kiln's CPU kernels read their thread count from KILN_CPU_THREADS; pin it to the number
  // onnxruntime is given, so the two always run with the same threads.
  env.KILN_CPU_THREADS = String(args.threads);

  if (args.profile) return runProfile(args);

  // Other processes on the machine skew the numbers; the load averages go into the report.
  const loadBefore = os.loadavg();
  const results = await runCpuBench({
    models: await buildModels(args.models, args.small),
    threads: args.threads,
    iters: args.iters,
    warmup: args.warmup,
    mode: args.mode,
    ortPrepack: args.ortPrepack,
    tolerance: args.tolerance,
  });

  const loadAfter = os.loadavg();
  const { model: cpu, simd } = cpuInfo();
  const date = new Date().toISOString();
  console.log(`\nkiln (${args.mode}) vs onnxruntime-node ${packageVersion('onnxruntime-node/package.json')}, ${args.threads} thread(s), ${cpu} (${simd.join(' ')}), ${date}`);
  if (!args.ortPrepack) console.log('onnxruntime weight pre-packing disabled (--ort-no-prepack)');
  console.log(`median of ${args.iters} interleaved iterations after ${args.warmup} warm-up; ratio = kiln/ort (target ≤ 1.00)\n`);
  console.log(formatTable(results));
  console.log(`\nload average (1 min) before ${loadBefore[0].toFixed(2)}, after ${loadAfter[0].toFixed(2)} on ${os.availableParallelism()} cores`);

  const report = {
    benchmark: 'cpu',
    date,
    cpu,
    simd,
    cores: os.availableParallelism(),
    threads: args.threads,
    loadAverage1m: { before: loadBefore[0], after: loadAfter[0] },
    kilnMode: args.mode,
    ortPrepack: args.ortPrepack,
    sizes: args.small ? 'small' : 'full',
    iters: args.iters,
    warmup: args.warmup,
    tolerance: args.tolerance,
    versions: { node: process.version, kiln: packageVersion('../../package.json'), onnxruntime: packageVersion('onnxruntime-node/package.json') },
    timing: 'ms per call, from the call until the output is in a JS typed array; weights and input resident',
    results,
  };
  fs.mkdirSync(path.dirname(path.resolve(args.out)), { recursive: true });
  fs.writeFileSync(args.out, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nwrote ${args.out}`);
  if (args.report) for (const p of writeReport({ cpuJson: args.out })) console.log(`wrote ${p}`);
  return results.every((r) => r.agree) ? 0 : 1;
}

async function runProfile(args: Args): Promise<number> {
  const dir = profileDir();
  const profiles = [];
  for (const m of await buildModels(args.models, args.small)) {
    process.stderr.write(`[${m.name}] profiling kiln kernels and onnxruntime nodes, ${args.threads} thread(s)\n`);
    const p = await profileModel(m, args.threads, args.iters, dir);
    console.log(`\n${formatProfile(p)}`);
    profiles.push(p);
  }
  const { model: cpu, simd } = cpuInfo();
  const report = { benchmark: 'cpu-profile', date: new Date().toISOString(), cpu, simd, cores: os.availableParallelism(), threads: args.threads, reps: args.iters, loadAverage1m: os.loadavg()[0], profiles };
  const out = args.out.endsWith('cpu.json') ? args.out.replace(/cpu\.json$/, 'cpu-profile.json') : args.out;
  fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nwrote ${out} (build and profiler files in ${dir})`);
  return 0;
}

if (require.main === module) {
  bench(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
