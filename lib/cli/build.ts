/**
 * `kiln build <module> --target cpu[,sm_90] --out DIR`: build bundles ahead of time from a
 * module that describes compiled functions (the convention is in `buildUsage`), so an app
 * can ship them (KILN_BUNDLE_PATH) or a fleet can pre-fill its cache. Exit status: 0 all
 * built, 1 a build failed, 2 a usage error.
 */
import { existsSync } from 'fs';
import { isAbsolute, resolve } from 'path';
import { build, type BuildResult, type ExampleInput } from '../api/build';
import type { CompileOptions } from '../api/compile';
import { packageRootOf } from '../engine/bundle';
import type { Tensor } from '../tensor/tensor';
import { KilnError } from '../util/errors';

export const buildSummary = 'build bundles ahead of time from a module of function specs (to ship, or to pre-fill a cache)';

export const buildUsage = `kiln build <module> [--target cpu[,sm_90,...]] [--out DIR] [--export NAME] [--source-root DIR] [--json]

  <module>             a JavaScript module (CommonJS; ESM on Node >= 20.19) describing what to build
  --target LIST        comma-separated targets: cpu (this machine's CPU and C++ compiler), sm_XY
                       (a CUDA cubin for compute capability X.Y, e.g. sm_80), sm_XYa (its
                       arch-specific cubin: sm_90a is what an H100/H200 compiles for itself,
                       with warpgroup-MMA matmuls), compute_XY (PTX for X.Y and newer; a GPU
                       loads it when no bundle of its own target is there); CUDA targets need
                       NVRTC, not a GPU. Default: cpu
  --out DIR            bundle root to write (the cache layout: DIR/v1/...); ship it and point
                       KILN_BUNDLE_PATH at it. Default: the cache (KILN_CACHE_DIR, else ~/.cache/kiln)
  --export NAME        build only this named export of the module (repeatable)
  --source-root DIR    base of relative source guards (default: the package root above <module>;
                       the app must load the bundles from the same package layout)
  --json               print the results as JSON on stdout

The module exports one spec, an array of specs, or named exports that are specs (or arrays):

  // model.js
  const kiln = require('kiln');
  function mlp(x, w, b) { return x.matmul(w).add(b).gelu(); }
  module.exports = {
    fn: mlp,                                    // the plain function, or what kiln.compile returned
    inputs: [{ shape: [64, 1024] }, { shape: [1024, 1024] }, { shape: [1024], dtype: 'float32' }],
    options: { name: 'mlp', dynamic: { 0: [0] } },  // kiln.compile's name, dynamic, key and tf32 (optional)
  };

Each spec builds the very bundle that kiln.compile(fn, options) loads when called with inputs
of that signature (dims listed in dynamic may then take any size). A compiled function as fn
brings its own name, dynamic dims, key and tf32. A function that captures tensors from its closure
cannot be built (KILN_CAPTURED_TENSORS): pass them as inputs. Inputs are shapes and dtypes ({ shape, dtype? }, dtype
default float32) or example Tensors.`;

/** One function to build, as found in the module. */
export interface BuildSpec {
  fn: (...args: Tensor[]) => unknown;
  inputs: ExampleInput[];
  options?: Pick<CompileOptions, 'name' | 'dynamic' | 'key' | 'tf32'>;
}

/** One (spec, target) build and how it went. */
export interface BuildJob {
  export: string;
  name: string;
  target: string;
  status: 'built' | 'exists' | 'failed';
  ms: number;
  result?: BuildResult;
  error?: { code?: string; message: string };
}

class UsageError extends Error {}

interface Args {
  module: string;
  targets: string[];
  out?: string;
  exports: string[];
  sourceRoot?: string;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const positional: string[] = [];
  const exports: string[] = [];
  let targets = ['cpu'];
  let out: string | undefined;
  let sourceRoot: string | undefined;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const value = (): string => {
      const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined || v === '') throw new UsageError(`${name} needs a value`);
      return v;
    };
    if (name === '--target') targets = value().split(',').map((t) => t.trim()).filter(Boolean);
    else if (name === '--out') out = value();
    else if (name === '--export') exports.push(value());
    else if (name === '--source-root') sourceRoot = value();
    else if (name === '--json') json = true;
    else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else positional.push(a);
  }
  if (positional.length !== 1) throw new UsageError(positional.length ? `one module, got ${positional.join(' ')}` : 'which module? kiln build <module>');
  if (!targets.length) throw new UsageError('--target needs at least one target');
  return { module: positional[0], targets, ...(out ? { out } : {}), exports, ...(sourceRoot ? { sourceRoot } : {}), json };
}

function isSpec(x: unknown): x is BuildSpec {
  return typeof x === 'object' && x !== null && typeof (x as BuildSpec).fn === 'function' && Array.isArray((x as BuildSpec).inputs);
}

/** The specs a module exports, by export name (`default`, `default[1]`, `mlp`, `models[0]`, ...). */
export function findSpecs(mod: unknown, only: readonly string[]): [string, BuildSpec][] {
  const named = (name: string, v: unknown): [string, BuildSpec][] =>
    isSpec(v) ? [[name, v]] : Array.isArray(v) && v.length > 0 && v.every(isSpec) ? v.map((s, i): [string, BuildSpec] => [`${name}[${i}]`, s]) : [];
  const m = mod as Record<string, unknown> | null;
  if (only.length) {
    return only.flatMap((name) => {
      const got = m && typeof m === 'object' ? named(name, m[name]) : [];
      if (!got.length) throw new UsageError(`the module has no export '${name}' that is a spec ({ fn, inputs, options? }) or an array of them`);
      return got;
    });
  }
  const whole = named('default', mod);
  if (whole.length) return whole;
  if (m && typeof m === 'object') {
    const fromDefault = named('default', m.default);
    if (fromDefault.length) return fromDefault;
    const all = Object.keys(m).flatMap((k) => named(k, m[k]));
    if (all.length) return all;
  }
  throw new UsageError('the module exports no spec: export { fn, inputs, options? }, an array of them, or named exports of them (see kiln build --help)');
}

function loadModule(file: string): unknown {
  if (!existsSync(file)) throw new UsageError(`no module at ${file}`);
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the user's module, named on the command line
    return require(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ERR_REQUIRE_ESM') throw new UsageError(`${file} is an ES module, which needs Node >= 20.19 here; use CommonJS or a newer Node`);
    throw e;
  }
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

/** A progress reporter: one rewritten line on a TTY, plain lines otherwise. */
function progress(stream: NodeJS.WriteStream): { update(line: string): void; done(line: string): void } {
  const tty = stream.isTTY === true;
  return {
    update(line) {
      if (tty) stream.write(`\r\x1b[K${line}`);
    },
    done(line) {
      stream.write(tty ? `\r\x1b[K${line}\n` : `${line}\n`);
    },
  };
}

function table(jobs: readonly BuildJob[]): string {
  const rows = [['function', 'target', 'status', 'time', 'key', 'bundle'], ...jobs.map((j) => [j.name, j.result?.target ?? j.target, j.status, seconds(j.ms), j.result?.key.slice(0, 12) ?? '-', j.result?.bundleDir ?? j.error?.message ?? ''])];
  const last = rows[0].length - 1; // the bundle path (or error) is not padded
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => (c === last ? cell : cell.padEnd(widths[c]))).join('  ')).join('\n');
}

/** Runs `kiln build`; resolves to the exit status. */
export async function buildCommand(argv: string[]): Promise<number> {
  let args: Args;
  let specs: [string, BuildSpec][];
  try {
    if (argv.includes('--help') || argv.includes('-h')) {
      console.log(`${buildSummary}\n\nUsage: ${buildUsage}`);
      return 0;
    }
    args = parseArgs(argv);
    const file = resolve(args.module);
    specs = findSpecs(loadModule(file), args.exports);
    args.sourceRoot ??= packageRootOf(file);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`kiln build: ${e.message}\n\nUsage: ${buildUsage}`);
    return 2;
  }
  const out = args.out !== undefined ? (isAbsolute(args.out) ? args.out : resolve(args.out)) : undefined;
  const log = progress(process.stderr);
  const jobs: BuildJob[] = [];
  const total = specs.length * args.targets.length;
  for (const [exportName, spec] of specs) {
    for (const target of args.targets) {
      const n = jobs.length + 1;
      const name = spec.options?.name ?? (spec.fn as { name?: string }).name ?? exportName;
      const tag = `[${n}/${total}] ${name} → ${target}`;
      log.update(`${tag}: tracing and compiling…`);
      const t0 = performance.now();
      const job: BuildJob = { export: exportName, name, target, status: 'failed', ms: 0 };
      try {
        const result = await build(spec.fn, spec.inputs, {
          target,
          ...(out !== undefined ? { cacheDir: out } : {}),
          ...(spec.options?.name !== undefined ? { name: spec.options.name } : {}),
          ...(spec.options?.dynamic !== undefined ? { dynamic: spec.options.dynamic } : {}),
          ...(spec.options?.key !== undefined ? { key: spec.options.key } : {}),
          ...(spec.options?.tf32 !== undefined ? { tf32: spec.options.tf32 } : {}),
          ...(args.sourceRoot !== undefined ? { sourceRoot: args.sourceRoot } : {}),
        });
        Object.assign(job, { name: result.namespace, status: result.source === 'compiled' ? 'built' : 'exists', result });
      } catch (e) {
        job.error = { ...(e instanceof KilnError ? { code: e.code } : {}), message: e instanceof Error ? e.message : String(e) };
      }
      job.ms = performance.now() - t0;
      jobs.push(job);
      const what = job.status === 'failed' ? `failed: ${job.error?.message}${job.error?.code ? ` [${job.error.code}]` : ''}` : `${job.status === 'built' ? 'built' : 'already built'} in ${seconds(job.ms)} → ${job.result?.bundleDir}`;
      log.done(`${tag}: ${what}`);
    }
  }
  if (args.json) console.log(JSON.stringify(jobs, null, 2));
  else console.log(`\n${table(jobs)}\n\n${jobs.filter((j) => j.status !== 'failed').length} of ${jobs.length} bundles ready${out ? ` in ${out} (KILN_BUNDLE_PATH=${out})` : ''}.`);
  return jobs.some((j) => j.status === 'failed') ? 1 : 0;
}
