/**
 * `kiln.compile(fn, opts)`: the public entry point. On the first call it asks the engine
 * for a program for the inputs' signature (dtypes and static dims; dims named in `dynamic`
 * become symbols, so one program serves every size): one this process already holds, a
 * verified bundle (no trace, no compile), or — only then — `fn` traced, compiled and
 * published as a bundle (docs/BUNDLES.md, "The engine"). Later calls check their inputs
 * against that signature and run the same program.
 *
 * The signature is fixed by the first call, as in ahead-of-time compilation: a call whose
 * dtypes or static dims differ is an error naming the input (make the dim dynamic, or
 * compile another function), never a silent recompile. So the first call must match `fn`'s
 * parameters: fewer inputs, or more than a fixed parameter list takes, is refused before
 * any trace (`parameterLimit`).
 */
import { rebuildStructure } from '../ir/graph';
import type { DType } from '../ir/dtype';
import { canonicalJson, isNamespace, type InputSignature } from '../cache/key';
import { CACHE_MODES, resolveCacheMode, resolveFailOnRecompile, type CacheMode } from '../cache/mode';
// The engine's warm-path modules only: the passes, renderer and compiler load on a compile.
import { packageRootOf } from '../engine/bundle';
import { bundleBackend } from '../engine/bundle-target';
import { cudaFacts } from '../engine/cuda-facts';
import type { CompiledProgram, RawTensor } from '../engine/program';
import type { ProgramInput } from '../runtime/cuda';
import { isCudaProgram, run, runCuda } from '../engine/run';
import { compileCount, getProgram, releaseProgram, type ObtainedProgram, type ProgramRequest } from '../engine/store';
import { chooseBackend, requireBackend, type Backend, type BackendFacts, type Choice } from '../runtime/select';
import { callSite } from '../tensor/site';
import { ArgumentError, ShapeError } from '../util/errors';
import { programInput, rawInput, refuseTraced, tensorFromDevice, tensorFromRaw, traceGraph, type Tensor } from './tensors';

/** Options of `kiln.compile`. */
export interface CompileOptions {
  /** Name of the compiled function (bundle namespace); default: `fn.name`. */
  name?: string;
  /** Where to run: `'auto'` (default) picks CUDA when usable, else the CPU. */
  device?: 'auto' | 'cpu' | 'cuda';
  /** Dynamic dims: input index → its dims that may vary, e.g. `{ 0: [0] }`. */
  dynamic?: Readonly<Record<number, readonly number[]>>;
  /** Bundle cache mode (default `$KILN_CACHE`, else `'auto'`). */
  cache?: CacheMode;
  /** Bundle cache directory (default `$KILN_CACHE_DIR`, else the user cache). */
  cacheDir?: string;
  /**
   * Shipped bundle directories: read-only roots, laid out as a cache dir (what `kiln build
   * --out DIR` or `kiln.build(fn, inputs, { cacheDir: DIR })` writes), searched in order
   * before the cache, so an app can ship bundles inside its npm package — e.g.
   * `bundlePath: path.join(__dirname, 'bundles')`. One directory or a list; relative paths
   * resolve against the working directory. Like the other options it replaces its
   * environment variable: when given, `$KILN_BUNDLE_PATH` (':'-separated) is not read, and
   * `[]` searches no shipped directory at all. Default `$KILN_BUNDLE_PATH`.
   */
  bundlePath?: string | readonly string[];
  /** Make any trace or compile throw (KILN_RECOMPILE): proves a warm start compiles nothing. */
  failOnRecompile?: boolean;
  /**
   * Values the function depends on that its source text and inputs don't show — e.g.
   * hyperparameters captured from the closure. Plain JSON data; its canonical JSON is part
   * of the bundle key, so each value gets its own bundle. kiln cannot see numbers a
   * function captures: without this, a warm start runs with the values the bundle was
   * built with (docs/BUNDLES.md, "What the key does not see").
   */
  key?: unknown;
  /**
   * Let float32 matmuls use TF32 tensor cores on the CUDA backend (sm_80 and newer), like
   * PyTorch's `torch.backends.cuda.matmul.allow_tf32`: operands are rounded to TF32 (10
   * mantissa bits, float32's range) and products summed in float32 — several times faster,
   * with a relative error of about 1e-3 instead of float32's 1e-7. Default `false`: float32
   * matmuls keep float32 accuracy. Part of a CUDA program's bundle key; no effect on the CPU
   * backend (its bundles are the same either way) nor on float16/bfloat16 matmuls, which
   * always use tensor cores.
   */
  tf32?: boolean;
}

/** What the last call of a compiled function did. */
export interface CompileStats {
  /** Where the program came from: already in memory, a bundle, or compiled now. */
  source: 'memory' | 'bundle' | 'compiled';
  traceMs: number;
  /** Passes, rendering and the compiler. */
  compileMs: number;
  /** Loading the binary. */
  loadMs: number;
  /** Kernels in the program. */
  kernels: number;
  bundleDir?: string;
}

/** A compiled function: call it like `fn`, await the result. */
export type CompiledFunction<A extends Tensor[], R> = ((...args: A) => Promise<R>) & {
  /** Stats of the last finished call; undefined before the first. */
  readonly stats: CompileStats | undefined;
  /**
   * Gives its program back: later calls throw ArgumentError KILN_DISPOSED, and once the calls
   * in flight have finished and no other compiled function uses the same program, the
   * program's memory (on a GPU: its module, constants and work space) is freed. Tensors it
   * returned stay valid. Idempotent.
   */
  dispose(): void;
  [Symbol.dispose](): void;
};

// Process-wide count of traces (compiles are counted by the engine).
let traces = 0;

/** How many traces and compiles this process has done (for tests and diagnostics). */
export function counters(): { traces: number; compiles: number } {
  return { traces, compiles: compileCount() };
}

const OPTION_KEYS = ['name', 'device', 'dynamic', 'cache', 'cacheDir', 'failOnRecompile', 'key', 'tf32', 'bundlePath'] as const;
const DEVICES = ['auto', 'cpu', 'cuda'] as const;

/** `kiln.compile`'s options, checked and resolved. */
export interface Settings {
  name: string;
  device: (typeof DEVICES)[number];
  dynamic: Map<number, number[]>;
  cache: CacheMode;
  cacheDir?: string;
  /** Shipped bundle directories from the option; undefined: `$KILN_BUNDLE_PATH` decides. */
  bundlePath?: string[];
  failOnRecompile: boolean;
  /** The `key` option as canonical JSON, taken when `compile` is called (later mutation does not leak in). */
  key?: string;
  /** float32 matmuls on TF32 tensor cores (CUDA). */
  tf32: boolean;
}

function badOption(msg: string): never {
  throw new ArgumentError('KILN_BAD_OPTION', `kiln.compile: ${msg}`);
}

const list = (xs: readonly string[]): string => xs.map((x) => `'${x}'`).join(', ');

export function readOptions(fn: unknown, opts: unknown): Settings {
  if (typeof fn !== 'function') throw new ArgumentError('KILN_BAD_ARGUMENT', `kiln.compile: fn must be a function, got ${typeof fn}`);
  if (opts === undefined || opts === null) opts = {};
  if (typeof opts !== 'object' || Array.isArray(opts)) badOption(`options must be an object, got ${Array.isArray(opts) ? 'an array' : typeof opts}`);
  const o = opts as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(OPTION_KEYS as readonly string[]).includes(k)) badOption(`unknown option '${k}'; valid options are ${list(OPTION_KEYS)}`);
  }
  // The default name is made valid; an explicit one must be (it names the bundle namespace).
  const name = o.name ?? ((fn.name || 'anonymous').replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[.-]/, '_').slice(0, 64));
  if (!isNamespace(name)) {
    badOption(`name must be 1-64 characters of letters, digits, '_', '.' or '-', not starting with '.' or '-'; got ${JSON.stringify(name)}`);
  }
  const device = o.device ?? 'auto';
  if (!(DEVICES as readonly unknown[]).includes(device)) badOption(`device must be one of ${list(DEVICES)}; got ${JSON.stringify(device)}`);
  if (o.cache !== undefined && typeof o.cache !== 'string') badOption(`cache must be one of ${list(CACHE_MODES)}; got ${JSON.stringify(o.cache)}`);
  const cache = resolveCacheMode(o.cache as string | undefined);
  if (o.cacheDir !== undefined && (typeof o.cacheDir !== 'string' || o.cacheDir === '')) badOption(`cacheDir must be a non-empty string; got ${JSON.stringify(o.cacheDir)}`);
  const bundlePath = readBundlePath(o.bundlePath);
  if (o.failOnRecompile !== undefined && typeof o.failOnRecompile !== 'boolean') badOption(`failOnRecompile must be true or false; got ${JSON.stringify(o.failOnRecompile)}`);
  if (o.tf32 !== undefined && typeof o.tf32 !== 'boolean') badOption(`tf32 must be true or false; got ${JSON.stringify(o.tf32)}`);
  const key = readKey(o.key);
  return {
    name,
    device: device as Settings['device'],
    dynamic: readDynamic(o.dynamic),
    cache,
    ...(o.cacheDir !== undefined ? { cacheDir: o.cacheDir as string } : {}),
    ...(bundlePath !== undefined ? { bundlePath } : {}),
    failOnRecompile: resolveFailOnRecompile(o.failOnRecompile as boolean | undefined),
    ...(key !== undefined ? { key } : {}),
    tf32: o.tf32 === true,
  };
}

/** The `bundlePath` option as a list of directories; ArgumentError KILN_BAD_OPTION unless it is a non-empty string or an array of them. */
function readBundlePath(p: unknown): string[] | undefined {
  if (p === undefined) return undefined;
  const dirs = typeof p === 'string' ? [p] : p;
  if (!Array.isArray(dirs) || !dirs.every((d) => typeof d === 'string' && d !== '')) {
    badOption(`bundlePath must be a directory (a non-empty string) or an array of them; got ${JSON.stringify(p)}`);
  }
  return [...(dirs as string[])];
}

/** The `key` option as canonical JSON; ArgumentError KILN_BAD_OPTION for anything but plain JSON data. */
function readKey(key: unknown): string | undefined {
  if (key === undefined) return undefined;
  try {
    return canonicalJson(key);
  } catch (e) {
    const why = (e as Error).message.replace(/^\$/, 'key');
    return badOption(`key must be JSON data (objects, arrays, strings, finite numbers, booleans, null): ${why}`);
  }
}

export function readDynamic(d: unknown): Map<number, number[]> {
  const out = new Map<number, number[]>();
  if (d === undefined) return out;
  const form = 'dynamic must map input indices to arrays of dims, e.g. { 0: [0] }';
  if (typeof d !== 'object' || d === null || Array.isArray(d)) badOption(`${form}; got ${JSON.stringify(d)}`);
  for (const [k, dims] of Object.entries(d)) {
    if (!/^(0|[1-9]\d*)$/.test(k)) badOption(`${form}; '${k}' is not an input index`);
    if (!Array.isArray(dims) || dims.some((x) => !Number.isInteger(x))) badOption(`${form}; input ${k} has ${JSON.stringify(dims)}`);
    out.set(Number(k), [...new Set(dims as number[])]);
  }
  return out;
}

/** What the signature checks read of an input, host or device. */
type InputShape = { readonly dtype: DType; readonly shape: readonly number[] };

/** One input's dtype and dims; `null` marks a dynamic dim. */
export interface InputSpec {
  dtype: DType;
  dims: (number | null)[];
}

const specText = (s: InputSpec): string => `${s.dtype}[${s.dims.map((d) => d ?? '?').join(',')}]`;

/** The signature of the first call; negative dynamic dims are normalized against its ranks. */
export function signatureOf(inputs: readonly InputShape[], dynamic: ReadonlyMap<number, number[]>): InputSpec[] {
  for (const [i, dims] of dynamic) {
    if (i >= inputs.length) badOption(`dynamic names input ${i}, but the function was called with ${inputs.length} input${inputs.length === 1 ? '' : 's'}`);
    const rank = inputs[i].shape.length;
    for (const d of dims) if (d < -rank || d >= rank) badOption(`dynamic: input ${i} has rank ${rank}, so it has no dim ${d}`);
  }
  return inputs.map((t, i) => {
    const dyn = (dynamic.get(i) ?? []).map((d) => (d < 0 ? d + t.shape.length : d));
    return { dtype: t.dtype, dims: t.shape.map((n, j) => (dyn.includes(j) ? null : n)) };
  });
}

/** The dynamic dims of a signature, normalized, by input index. */
export function dynamicDims(signature: readonly InputSpec[]): Map<number, number[]> {
  const out = new Map<number, number[]>();
  signature.forEach((s, i) => {
    const dims = s.dims.flatMap((d, j) => (d === null ? [j] : []));
    if (dims.length) out.set(i, dims);
  });
  return out;
}

/** Checks a call's inputs against the compiled signature; errors name the input. */
function checkInputs(name: string, want: readonly InputSpec[], inputs: readonly InputShape[]): void {
  if (inputs.length !== want.length) {
    throw new ArgumentError('KILN_INPUT_COUNT', `${name}: expected ${want.length} input${want.length === 1 ? '' : 's'} (${want.map(specText).join(', ')}), got ${inputs.length}`);
  }
  inputs.forEach((t, i) => {
    const w = want[i];
    const got = `${t.dtype}[${t.shape.join(',')}]`;
    if (t.dtype !== w.dtype) {
      throw new ArgumentError('KILN_INPUT_DTYPE', `${name}: input ${i} must be ${w.dtype} (compiled for ${specText(w)}), got ${got}`);
    }
    if (t.shape.length !== w.dims.length) {
      throw new ShapeError('KILN_INPUT_SHAPE', `${name}: input ${i} must have rank ${w.dims.length} (compiled for ${specText(w)}), got ${got}`);
    }
    const j = w.dims.findIndex((d, k) => d !== null && d !== t.shape[k]);
    if (j >= 0) {
      throw new ShapeError(
        'KILN_INPUT_SHAPE',
        `${name}: input ${i} dim ${j} must be ${w.dims[j]} (compiled for ${specText(w)}), got ${got}; ` +
          `to let it vary, compile with dynamic: { ${i}: [${j}] }`,
      );
    }
  });
}

/**
 * The backend a device option resolves to on this machine. `auto` does not look for the C++
 * compiler: the CPU backend runs bundles without one (shipped or built earlier), and a warm
 * start must not even search PATH for it. Only a compile needs it (KILN_NO_CXX then).
 * `'cuda'` is not probed here: the first call asks the driver for the GPU's target (its
 * bundle key) and says what is missing (KILN_NO_CUDA_DEVICE) on a machine without one.
 */
export function resolveDevice(device: Settings['device']): Backend {
  if (device !== 'auto') return bundleBackend(device).device;
  return requireBackend(autoBackend(cudaFacts())); // CUDA when the driver reports a GPU and NVRTC loads
}

/**
 * The backend `device: 'auto'` runs on for these facts, as `chooseBackend` picks it, without
 * asking the CPU backend for its compiler (looked for only when a compile is needed).
 * `kiln doctor` reports the same choice.
 */
export function autoBackend(facts: Pick<BackendFacts, 'driver' | 'nvrtc'>, env: NodeJS.ProcessEnv = process.env): Choice {
  return chooseBackend({ ...facts, cxx: { available: true, path: '(looked for only when a compile is needed)' } }, env);
}

/**
 * How many inputs `fn` can take at most: its parameter count when its source shows a fixed
 * list of plain parameters, else undefined (a rest parameter, defaults — which `fn.length`
 * does not count —, `arguments`, a bound or native function, or source this reader is
 * unsure of). Undefined never rejects a call, so any doubt errs on accepting extra inputs.
 */
export function parameterLimit(fn: (...args: never[]) => unknown): number | undefined {
  if (fn.length === 0) return undefined; // nothing declared: maybe `arguments`, maybe a wrapper
  const src = fn.toString();
  if (/\barguments\b|\[native code\]/.test(src)) return undefined;
  if (/^(async\s+)?[\w$]+\s*=>/.test(src)) return 1; // `x => ...`
  const open = src.indexOf('(');
  // Before the list: an arrow's nothing or `async`, `function name`, `function*`, a method's name.
  if (open < 0 || !/^(async\s*)?(function\s*\*?\s*[\w$]*|\*?\s*[\w$]+)?\s*$/.test(src.slice(0, open))) return undefined;
  let depth = 0;
  let params = 1;
  for (let i = open + 1; i < src.length; i++) {
    const c = src[i];
    // Strings, comments, regexps and defaults could hide brackets or commas: unsure.
    if ('\'"`/='.includes(c)) return undefined;
    if (c === '.' && src.startsWith('...', i)) return undefined; // a rest parameter
    if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c) && depth-- === 0) {
      if (/,\s*$/.test(src.slice(open + 1, i))) params--; // a trailing comma
      return params === fn.length ? params : undefined;
    } else if (c === ',' && depth === 0) params++;
  }
  return undefined;
}

/** The key inputs of a signature: each input's example shape and its dynamic dims. */
export function keySignature(signature: readonly InputSpec[], examples: readonly Pick<InputShape, 'shape'>[]): InputSignature[] {
  return signature.map((s, i) => ({ dtype: s.dtype, shape: [...examples[i].shape], dynamic: s.dims.flatMap((d, j) => (d === null ? [j] : [])) }));
}

/** The package root of the user code that called kiln (base of relative source guards). */
export function callerRoot(): () => string | undefined {
  const site = callSite();
  return () => (site ? packageRootOf(site.file) : undefined);
}

/** What `kiln.build` needs to build the same bundle a compiled function would load. */
export interface CompileSpec {
  fn: (...args: Tensor[]) => unknown;
  settings: Settings;
}

/** Compiled functions carry their spec under this symbol (read by `kiln.build` and `kiln build`). */
export const COMPILE_SPEC: unique symbol = Symbol.for('kiln.compileSpec') as never;

interface Ready {
  program: CompiledProgram;
  stats: CompileStats;
  /** What the store handed out, given back by `dispose`. */
  got: ObtainedProgram;
}

/**
 * `DeviceTensor.pin` for each device input of a CUDA call (host data passes through), told
 * apart by shape so that importing kiln loads no CUDA runtime. `programInput` has refused a
 * disposed tensor already.
 */
function pinDeviceInputs(inputs: readonly ProgramInput[]): ProgramInput[] {
  const held: ProgramInput[] = [];
  try {
    for (const x of inputs) held.push('pin' in x ? x.pin() : x);
  } catch (e) {
    unpinDeviceInputs(held);
    throw e;
  }
  return held;
}

function unpinDeviceInputs(held: readonly ProgramInput[]): void {
  for (const x of held) if ('pin' in x) x.dispose();
}

/** A compiled function's state: the signature of its first call, the device and its program. */
interface Entry {
  signature: InputSpec[];
  device: Backend;
  ready: Promise<Ready>;
  /** `ready`'s value once it has one. */
  done?: Ready;
}

/**
 * Compiles `fn` ahead of time. Returns an async function with the same parameters; its
 * `stats` describe the last call.
 */
export function compile<A extends Tensor[], R>(fn: (...args: A) => R, opts?: CompileOptions): CompiledFunction<A, R> {
  const settings = readOptions(fn, opts);
  const { name } = settings;
  let entry: Entry | undefined;
  let stats: CompileStats | undefined;

  const root = callerRoot();
  const most = parameterLimit(fn);

  const build = async (signature: InputSpec[], examples: readonly InputShape[], device: Backend): Promise<Ready> => {
    const sourceRoot = root();
    const request: ProgramRequest = {
      name,
      fnSource: fn.toString(),
      inputs: keySignature(signature, examples),
      device,
      ...(settings.key !== undefined ? { userKey: settings.key } : {}),
      ...(settings.tf32 ? { tf32: true } : {}),
      ...(sourceRoot ? { sourceRoot } : {}),
    };
    const store = {
      mode: settings.cache,
      failOnRecompile: settings.failOnRecompile,
      ...(settings.cacheDir ? { cacheDir: settings.cacheDir } : {}),
      ...(settings.bundlePath ? { bundlePath: settings.bundlePath } : {}),
    };
    const got = await getProgram(request, store, () => {
      traces++;
      return traceGraph(fn as (...args: Tensor[]) => unknown, examples, dynamicDims(signature));
    });
    return {
      program: got.program,
      got,
      stats: {
        source: got.origin,
        traceMs: got.traceMs,
        compileMs: got.compileMs,
        loadMs: got.loadMs,
        kernels: got.program.kernels,
        ...(got.bundleDir ? { bundleDir: got.bundleDir } : {}),
      },
    };
  };

  let inflight = 0;
  let disposed = false;
  const giveBack = (): void => {
    const mine = entry;
    entry = undefined;
    // At once when the program is there, so that the next compile of the same key sees it gone.
    if (mine?.done) releaseProgram(mine.done.got);
    else mine?.ready.then((r) => releaseProgram(r.got), () => undefined);
  };

  const call = (...args: unknown[]): Promise<R> => {
    refuseTraced(name, args); // thrown into the trace that made the tensor, not left in a Promise nobody awaits
    return callAsync(args);
  };

  const callAsync = async (args: unknown[]): Promise<R> => {
    if (disposed) throw new ArgumentError('KILN_DISPOSED', `${name}: this compiled function was disposed`);
    inflight++;
    try {
      return await callOnce(args);
    } finally {
      if (--inflight === 0 && disposed) giveBack();
    }
  };

  const callOnce = async (args: unknown[]): Promise<R> => {
    // A CUDA program takes tensors where they live (a 'cuda' tensor's device memory, else
    // host data it uploads) and leaves its outputs on the GPU; a CPU program takes host data.
    const device = entry?.device ?? resolveDevice(settings.device);
    const inputs = args.map((a, i) => (device === 'cuda' ? programInput(name, a, i) : rawInput(name, a, i)));
    let fresh = false;
    if (!entry) {
      if (inputs.length < fn.length || (most !== undefined && inputs.length > most)) {
        const expected = inputs.length < fn.length && most === undefined ? `at least ${fn.length}` : `${fn.length}`;
        throw new ArgumentError('KILN_INPUT_COUNT', `${name}: expected ${expected} input${fn.length === 1 ? '' : 's'} (the function's parameters), got ${inputs.length}`);
      }
      const signature = signatureOf(inputs, settings.dynamic);
      const mine: Entry = { signature, device, ready: build(signature, inputs, device) };
      entry = mine;
      fresh = true;
      mine.ready.then(
        (r) => void (mine.done = r),
        () => {
          if (entry === mine) entry = undefined; // a failed build is retried by the next call
        },
      );
    } else checkInputs(name, entry.signature, inputs);
    // The inputs are taken now, before the first await: a cpu tensor's typed array (above),
    // a 'cuda' tensor's device memory pinned here, so `const p = f(x); x.dispose(); await p`
    // computes with x (its memory is freed once the call's work is queued).
    const held = device === 'cuda' ? pinDeviceInputs(inputs) : undefined;
    try {
      const { program, stats: built } = await entry.ready;
      const tensors = isCudaProgram(program)
        ? (await runCuda(program, held ?? inputs)).map(tensorFromDevice)
        : (await run(program, inputs as RawTensor[])).map((o) => tensorFromRaw(o, program.device));
      stats = fresh ? built : { source: 'memory', traceMs: 0, compileMs: 0, loadMs: 0, kernels: built.kernels, ...(built.bundleDir ? { bundleDir: built.bundleDir } : {}) };
      return rebuildStructure(program.graph.outputStructure, tensors) as R;
    } finally {
      if (held) unpinDeviceInputs(held);
    }
  };

  const dispose = (): void => {
    if (disposed) return;
    disposed = true;
    if (inflight === 0) giveBack();
  };
  Object.defineProperty(call, 'stats', { get: () => stats, enumerable: true });
  Object.defineProperty(call, 'dispose', { value: dispose });
  Object.defineProperty(call, Symbol.dispose, { value: dispose });
  Object.defineProperty(call, 'name', { value: name });
  Object.defineProperty(call, COMPILE_SPEC, { value: { fn: fn as (...args: Tensor[]) => unknown, settings } satisfies CompileSpec });
  return call as unknown as CompiledFunction<A, R>;
}
