/**
 * Where programs come from: memory, a bundle, or a compile. `getProgram` is the engine's
 * whole cache policy (docs/BUNDLES.md, "The engine's warm path"):
 *
 * 1. The bundle key from what is known before tracing: the function's name and source
 *    text, the input signature, the `key` option, target, code-generation identity,
 *    code-relevant env. Never the compiler: it is looked for only when a compile is needed.
 * 2. Memory: a program this process already has for the key is returned at once — no file
 *    is touched.
 * 3. Bundle: shipped roots, then the cache; every guard verified (checksums, source files,
 *    ISA or compute capability); graph.json and kernels.so (or kernels.cubin) loaded. No
 *    trace, no passes, no compiler. A verified bundle that fails to load by its own fault
 *    is discarded and rebuilt once (force-load: error); a shipped one, read-only, is passed
 *    over for the rest of the process and the next root looked up (the cache may hold a
 *    good copy). A CUDA bundle on a machine without a GPU (KILN_NO_CUDA_DEVICE), or one the
 *    driver fails to load for the machine's reasons (out of memory, a dead context), is
 *    never discarded: that error goes to the caller. Nor is one that fails by the caller's
 *    fault (a bad KILN_CPU_THREADS: ArgumentError KILN_BAD_ENV, checked before any lookup).
 * 4. Compile, under the per-key lock so concurrent cold processes compile once: look up
 *    again, trace, lower, render, compile (C++ compiler or NVRTC), publish atomically, and
 *    run what was built. An offline CUDA build (`kiln build --target sm_90`) compiles with
 *    NVRTC only and loads nothing.
 *
 * The tracer is the API layer's business (the engine never imports lib/tensor): callers
 * pass `trace`, which runs only on step 4.
 */
import { promises as fsp, readFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { realpathSync } from 'fs';
import { bundleKey, openCache, type Cache, type CacheLookup, type CacheMode, type KeyFields, type PublishFile, type ToolchainIdentity } from '../cache';
import { warnOnce } from '../cache/io';
import type { Graph } from '../ir/graph';
import { checkCpuEnv } from '../runtime/cpu';
import { addonInfo } from '../runtime/native';
import type { Backend } from '../runtime/select';
import { ArgumentError, CacheError, CompilerError, CudaError, FormatError, KilnError, NvrtcError } from '../util/errors';
import { cudaProgramFiles, loadBundle, programFiles, sourceGuards } from './bundle';
import { bundleBackend, fallbackTargets, imageFitsTarget, keyInput, type BundleBackend, type ProgramSignature } from './bundle-target';
import type { CudaCompiledProgram } from './cuda-load';
import type { CompiledProgram, StageTimes } from './program';

export type { ProgramSignature } from './bundle-target';

/** What the API asks the engine for. */
export interface ProgramRequest extends ProgramSignature {
  readonly device: Backend;
  /**
   * An offline target to build for (`sm_90`, `compute_90`: `kiln.build` on a machine that
   * may have no GPU); absent: this machine's CPU or GPU.
   */
  readonly target?: string;
  /**
   * Base of relative source guards: the package root of the code that called kiln.compile
   * (see `packageRootOf`). Undefined: guards are recorded as absolute paths.
   */
  readonly sourceRoot?: string;
}

/** How to look programs up and where. */
export interface StoreOptions {
  readonly mode: CacheMode;
  /** Cache directory (option `cacheDir`; default `KILN_CACHE_DIR`, else the user cache). */
  readonly cacheDir?: string;
  /** Any trace or compile throws CacheError KILN_RECOMPILE (default `KILN_FAIL_ON_RECOMPILE`). */
  readonly failOnRecompile?: boolean;
  /** Shipped bundle roots (default `KILN_BUNDLE_PATH`). */
  readonly bundlePath?: readonly string[];
  /** Size cap of the cache (default `KILN_CACHE_MAX_BYTES`, else 2 GiB; 0: none). */
  readonly maxBytes?: number;
}

/** Where a program came from. */
export type ProgramOrigin = 'memory' | 'bundle' | 'compiled';

export interface ObtainedProgram {
  program: CompiledProgram;
  origin: ProgramOrigin;
  key: string;
  /**
   * The traced function captures tensors from its closure (`dtype[dims]` of each): the
   * program is this caller's alone — never published, never shared through memory by key.
   */
  captured?: readonly string[];
  /** The bundle it was loaded from or published to; absent when there is none (cache off, read-only, publish failed). */
  bundleDir?: string;
  traceMs: number;
  /** Passes, rendering and the compiler. */
  compileMs: number;
  /** Looking up and verifying the bundle, reading graph.json, dlopen. */
  loadMs: number;
}

/** What `ensureBundle` made: a bundle, not a loaded program. */
export type BuiltBundle = Omit<ObtainedProgram, 'program' | 'bundleDir'> & { bundleDir: string };

/** Traces the user's function (called only when nothing can be loaded). */
export type TraceFn = () => Graph;

/** What the store's steps produce: a program unless this is an offline build, which loads nothing. */
type Outcome = Omit<ObtainedProgram, 'program'> & { program?: CompiledProgram };

// Programs of this process by bundle key (pending ones too: concurrent first calls share).
const memory = new Map<string, Promise<ObtainedProgram>>();

/** How many programs this process compiled through the store (0 while the compiler was never loaded). */
export function compileCount(): number {
  return compileModule?.compileCount() ?? 0;
}

// The cold path's modules (passes, renderer, compiler driver) load on first compile only.
let compileModule: typeof import('./compile') | undefined;
function compiler(): typeof import('./compile') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: a warm start never pays for the passes and renderer
  compileModule ??= require('./compile') as typeof import('./compile');
  return compileModule;
}

/** Everything fixed once the key is known. */
interface Context {
  /** `run`: kiln.compile's first call; `build`: kiln.build (a bundle must come of it). */
  purpose: 'run' | 'build';
  req: ProgramRequest;
  backend: BundleBackend;
  cache: Cache;
  key: string;
  keyFields: KeyFields;
  target: string;
  /** The code-generation identity (`BundleBackend.codegen`): the key's toolchain field. */
  codegen: string;
}

/** The key and the cache (opened only when the key is not served from memory). */
function prepare(req: ProgramRequest, store: StoreOptions, purpose: Context['purpose']): { key: string; open(): Context } {
  const backend = bundleBackend(req.target ?? req.device);
  // A bad KILN_CPU_THREADS or KILN_CPU_INLINE_US is the caller's error, said before any lookup:
  // found only when a bundle loads, it could be mistaken for the bundle's fault.
  if (backend.device === 'cpu') checkCpuEnv();
  const target = backend.target();
  let cache: Cache | undefined;
  const openIt = (): Cache =>
    (cache ??= openCache({
      mode: store.mode,
      ...(store.cacheDir !== undefined ? { cacheDir: store.cacheDir } : {}),
      ...(store.failOnRecompile !== undefined ? { failOnRecompile: store.failOnRecompile } : {}),
      ...(store.bundlePath !== undefined ? { bundlePath: store.bundlePath } : {}),
      ...(store.maxBytes !== undefined ? { maxBytes: store.maxBytes } : {}),
    }));
  // The key costs no I/O (the target is read once per process), so a memory hit touches no file.
  const codegen = backend.codegen();
  const { key, keyFields } = bundleKey(keyInput(req, target, codegen));
  return { key, open: () => ({ purpose, req, backend, cache: openIt(), key, keyFields, target, codegen }) };
}

// How many callers of getProgram hold each program in memory (see releaseProgram).
const users = new Map<string, number>();

/**
 * A program for `req`: from memory, from a bundle, or traced and compiled now (and then
 * published). In force-load mode a missing or invalid bundle is a CacheError; with
 * failOnRecompile any trace or compile is. The caller holds the program until it calls
 * `releaseProgram`.
 */
export async function getProgram(req: ProgramRequest, store: StoreOptions, trace: TraceFn): Promise<ObtainedProgram> {
  const prep = prepare(req, store, 'run');
  // Counted from the request on, so that a release meanwhile cannot free what this caller is about to get.
  users.set(prep.key, (users.get(prep.key) ?? 0) + 1);
  let shared = false;
  try {
    const got = await findProgram(prep, trace);
    shared = !got.captured;
    return got;
  } finally {
    if (!shared) release(prep.key);
  }
}

/** One holder fewer of `key`'s program; true when it was the last. */
function release(key: string): boolean {
  const left = (users.get(key) ?? 1) - 1;
  if (left > 0) users.set(key, left);
  else users.delete(key);
  return left <= 0;
}

/**
 * Gives back a program `getProgram` returned. The last holder's release forgets it (a later
 * request loads its bundle again) and frees what it holds outside the JS heap; the caller
 * makes sure none of its runs is still in flight.
 */
export function releaseProgram(got: ObtainedProgram): void {
  if (!got.captured) {
    if (!release(got.key)) return;
    memory.delete(got.key);
  }
  got.program.dispose?.();
}

async function findProgram(prep: ReturnType<typeof prepare>, trace: TraceFn): Promise<ObtainedProgram> {
  const known = memory.get(prep.key);
  if (known) {
    const got = await known;
    // A program that captured tensors belongs to the closure it was traced from: another
    // function of the same source may capture other values, so it traces its own.
    if (!got.captured) return { ...got, origin: 'memory', traceMs: 0, compileMs: 0, loadMs: 0 };
    return obtain(prep.open(), trace).then(loaded);
  }
  const pending = obtain(prep.open(), trace).then(loaded);
  memory.set(prep.key, pending);
  const forget = (): void => {
    if (memory.get(prep.key) === pending) memory.delete(prep.key);
  };
  pending.then((got) => got.captured && forget(), forget); // a failure is retried by the next caller
  return pending;
}

/**
 * Makes sure a bundle for `req` exists in `cacheDir` (shipped roots are not consulted):
 * verifies the one there (and loads it, for the CPU: one that can't be loaded is rebuilt),
 * or traces, compiles and publishes. For offline builds (`kiln.build`):
 * nothing is evicted from a directory being filled with bundles to ship.
 * Throws CacheError KILN_CACHE_WRITE when the bundle could not be written.
 */
export async function ensureBundle(req: ProgramRequest, cacheDir: string | undefined, trace: TraceFn): Promise<BuiltBundle> {
  const store: StoreOptions = { mode: 'auto', ...(cacheDir !== undefined ? { cacheDir } : {}), failOnRecompile: false, bundlePath: [], maxBytes: 0 };
  const ctx = prepare(req, store, 'build').open();
  if (ctx.cache.readOnly) throw new CacheError('KILN_CACHE_WRITE', `cannot build into ${ctx.cache.cacheDir}: it is not writable`);
  const { program: _loaded, bundleDir, ...got } = await obtain(ctx, trace);
  if (!bundleDir) throw new CacheError('KILN_CACHE_WRITE', `the bundle for ${req.name} could not be written to ${ctx.cache.cacheDir} (see the warning above)`);
  return { ...got, bundleDir };
}

/** A run's outcome always holds a program (only offline builds load none). */
function loaded(got: Outcome): ObtainedProgram {
  if (!got.program) throw new KilnError('KILN_INTERNAL', `no program was loaded for key ${got.key}`);
  return got as ObtainedProgram;
}

// Shipped bundle dirs that verified but failed to load in this process: read-only, so never
// discarded; later lookups pass over them to the next root (another shipped one, the cache).
const failedShipped = new Set<string>();

async function obtain(ctx: Context, trace: TraceFn): Promise<Outcome> {
  const { cache, key, req } = ctx;
  const expect = { host: ctx.backend.host(), toolchain: ctx.codegen, ...(req.sourceRoot !== undefined ? { sourceRoot: req.sourceRoot } : {}) };
  const t0 = performance.now();
  const lookup = (): CacheLookup => cache.lookup(key, req.name, expect, failedShipped);
  let found: CacheLookup;
  try {
    found = lookup(); // force-load: throws when missing or invalid
  } catch (e) {
    const other = await loadFallback(ctx, expect, t0);
    if (other) return other;
    throw explainMissing(ctx, trace, e);
  }
  const first = await loadFirst(ctx, found, lookup, t0);
  if (first.got) return first.got;
  const other = await loadFallback(ctx, expect, t0);
  if (other) return other;
  mayCompile(ctx, first.miss);
  return cache.withKeyLock(
    key,
    async () => {
      // Another process may have published it while we waited for the lock (not after a
      // failed load of the cache's bundle: it was discarded, or can't be, read-only).
      if (!first.cacheFailed) {
        const again = await loadFirst(ctx, lookup(), lookup, performance.now());
        if (again.got) return again.got;
      }
      return compileAndPublish(ctx, trace);
    },
    { namespace: req.name },
  );
}

/**
 * Loads the hit `found`. A shipped bundle that fails to load is passed over (it joins
 * failedShipped) and the next root is looked up, as another shipped root or the cache may
 * hold a good copy; the loop ends, as a cache hit is the last root. `cacheFailed`: the
 * cache's own bundle failed to load.
 */
async function loadFirst(ctx: Context, found: CacheLookup, lookup: () => CacheLookup, t0: number): Promise<{ got?: Outcome; miss: CacheLookup; cacheFailed: boolean }> {
  while (found.status === 'hit') {
    const got = await tryLoad(ctx, found, t0);
    if (got) return { got, miss: found, cacheFailed: false };
    if (found.source !== 'shipped') return { miss: { status: 'miss' }, cacheFailed: true };
    found = lookup(); // tryLoad throws in force-load, so this is auto or read-only: lookup never throws
  }
  return { miss: found, cacheFailed: false };
}

/**
 * This GPU's own key (`sm_XY`) found nothing that loads: a bundle built offline for another
 * target it runs (`kiln build --target sm_90a | compute_80`) has a key of its own, looked up
 * here in `fallbackTargets` order (docs/BUNDLES.md, "Offline builds"). Only a hit that loads
 * counts; a missing (force-load) or invalid fallback is passed over.
 */
async function loadFallback(ctx: Context, expect: Parameters<Cache['lookup']>[2], t0: number): Promise<Outcome | undefined> {
  if (ctx.purpose !== 'run' || ctx.req.target !== undefined || ctx.backend.device !== 'cuda') return undefined;
  for (const target of fallbackTargets(ctx.target)) {
    const { key, keyFields } = bundleKey(keyInput(ctx.req, target, ctx.codegen));
    const alt: Context = { ...ctx, key, keyFields, target };
    const lookup = (): CacheLookup => alt.cache.lookup(key, alt.req.name, expect, failedShipped, true);
    let found: CacheLookup;
    try {
      found = lookup();
    } catch {
      continue; // force-load: no bundle under this target
    }
    const got = await loadFirst(alt, found, lookup, t0);
    if (got.got) return got.got;
  }
  return undefined;
}

// CUDA load failures that are the bundle's own: its image or plan is wrong for the driver.
// Every other driver failure (out of memory, a context dead after a kernel fault, a driver
// older than the PTX, a busy or exclusive GPU, no GPU at all) says something about this
// machine or this moment: rebuilding would not help, and deleting the bundle would take it
// from everyone sharing the cache.
const CUDA_BUNDLE_CODES = new Set(['KILN_CUDA_ABI']);
const CUDA_BUNDLE_RESULTS = new Set([
  'CUDA_ERROR_INVALID_IMAGE',
  'CUDA_ERROR_INVALID_PTX',
  'CUDA_ERROR_NO_BINARY_FOR_GPU',
  'CUDA_ERROR_NOT_FOUND',
  // The names the addon gives them when the driver has no cuGetErrorName (native/driver.cc).
  'CUDA_ERROR_200',
  'CUDA_ERROR_218',
  'CUDA_ERROR_209',
  'CUDA_ERROR_500',
]);
// ... and for a shipped bundle, built elsewhere: PTX this driver cannot JIT (too new, or no JIT).
const SHIPPED_BUNDLE_RESULTS = new Set([
  'CUDA_ERROR_JIT_COMPILER_NOT_FOUND',
  'CUDA_ERROR_UNSUPPORTED_PTX_VERSION',
  'CUDA_ERROR_JIT_COMPILATION_DISABLED',
  'CUDA_ERROR_221',
  'CUDA_ERROR_222',
  'CUDA_ERROR_223',
]);

/**
 * Whether a verified bundle of `device` that failed to load with `e` is itself at fault, so
 * that discarding and rebuilding it can help. Never an ArgumentError: a bad option or
 * environment variable (KILN_BAD_ENV) is the caller's. CPU: any other failure (dlopen refused
 * kernels.so, a bad graph.json). CUDA: only a FormatError (graph.json, the image or a checksum is not what
 * the manifest says), KILN_CUDA_ABI (a kernel does not take what the plan passes), or a
 * driver result that names the image (CUDA_ERROR_INVALID_IMAGE, _INVALID_PTX,
 * _NO_BINARY_FOR_GPU, _NOT_FOUND). KILN_CUDA_ARCH_MISMATCH is not: the bundle passed the
 * target guard and its cubin is for its target, so the GPU is not the one the target was read
 * from, and a rebuild for the same key would be refused the same way. A shipped bundle whose
 * PTX this driver cannot JIT (newer than the driver, or no JIT: CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
 * _JIT_COMPILER_NOT_FOUND, _JIT_COMPILATION_DISABLED) is passed over too: it was built
 * elsewhere, by an NVRTC this machine need not have, and it is never deleted.
 */
export function loadFailureIsBundles(e: unknown, device: Backend, source: 'cache' | 'shipped' = 'cache'): boolean {
  if (e instanceof ArgumentError) return false; // the caller's (a bad option or KILN_* variable): the bundle is fine
  if (device === 'cpu') return true;
  if (e instanceof FormatError) return true;
  if (!(e instanceof CudaError)) return false;
  if (CUDA_BUNDLE_CODES.has(e.code)) return true;
  if (e.code !== 'KILN_CUDA_ERROR' || e.cudaError === undefined) return false;
  return CUDA_BUNDLE_RESULTS.has(e.cudaError) || (source === 'shipped' && SHIPPED_BUNDLE_RESULTS.has(e.cudaError));
}

/**
 * Loads a verified bundle; on failure discards it (auto) or throws (force-load). An offline
 * CUDA build loads nothing (this machine may have no GPU, or another one): the bundle verified
 * for its target is the result. A CPU build loads what it finds, as its target is this
 * machine: a bundle that verifies but can't be loaded is rebuilt, not shipped. A failure that
 * is not the bundle's (`loadFailureIsBundles`: no GPU, out of GPU memory, any other driver
 * trouble) goes to the caller unchanged, and the bundle stays.
 */
async function tryLoad(ctx: Context, found: Extract<CacheLookup, { status: 'hit' }>, t0: number): Promise<Outcome | undefined> {
  const { bundle, source } = found;
  const hit = { origin: 'bundle', key: ctx.key, bundleDir: bundle.dir, traceMs: 0, compileMs: 0 } as const;
  if (ctx.purpose === 'build' && ctx.backend.device === 'cuda') return { ...hit, loadMs: performance.now() - t0 };
  try {
    const program = await loadBundle(bundle);
    return { ...hit, program, loadMs: performance.now() - t0 };
  } catch (e) {
    if (!loadFailureIsBundles(e, ctx.backend.device, source)) throw e;
    const why = e instanceof Error ? e.message : String(e);
    if (ctx.cache.mode === 'force-load') {
      throw new CacheError('KILN_BUNDLE_INVALID', `force-load: the bundle ${bundle.dir} verified but could not be loaded: ${why}`, { cause: e });
    }
    let then: string;
    if (source === 'shipped') {
      failedShipped.add(bundle.dir); // read-only: it stays, so this process passes over it from now on
      then = `this process passes over it to the next bundle path or the cache, else ${ctx.req.name} is compiled once`;
    } else {
      then = `${ctx.cache.discard(bundle) ? 'it was removed and ' : ''}${ctx.req.name} is compiled once instead`;
    }
    warnOnce('KILN_BUNDLE_LOAD', `kiln: the bundle ${bundle.dir} verified but could not be loaded (${why}); ${then}`, `load:${bundle.dir}`);
    return undefined;
  }
}

/** failOnRecompile: the cache's KILN_RECOMPILE, led by the function and its signature. */
function mayCompile(ctx: Context, miss: CacheLookup): void {
  try {
    ctx.cache.assertMayCompile(ctx.key, ctx.req.name, miss);
  } catch (e) {
    if (!(e instanceof KilnError)) throw e;
    const sig = ctx.keyFields.inputs.join(', ');
    throw new CacheError('KILN_RECOMPILE', `${ctx.req.name}: failOnRecompile is set, but inputs ${sig} need a trace and a compile — ${e.message}`, { cause: e });
  }
}

/**
 * Runs a compile. A missing compiler (KILN_NO_CXX) or NVRTC (KILN_NVRTC_UNAVAILABLE, _BAD_PATH) is said
 * in the words of this call: the warm path never looks for one, so this is where a machine
 * without it learns that no bundle matched.
 */
async function explainMissingCompiler<T>(ctx: Context, compile: () => Promise<T>): Promise<T> {
  try {
    return await compile();
  } catch (e) {
    const why = ctx.purpose === 'build' ? 'building its bundle' : `no bundle matched inputs ${ctx.keyFields.inputs.join(', ')}, and compiling one`;
    if (e instanceof CompilerError && e.code === 'KILN_NO_CXX') {
      throw new CompilerError('KILN_NO_CXX', `${ctx.req.name}: ${why} needs a C++ compiler — ${e.message}`, e.log);
    }
    if (e instanceof KilnError && (e.code === 'KILN_NVRTC_UNAVAILABLE' || e.code === 'KILN_NVRTC_BAD_PATH')) {
      throw new NvrtcError(e.code, `${ctx.req.name}: ${why} needs NVRTC — ${e.message}`, e instanceof NvrtcError ? e.log : '');
    }
    throw e;
  }
}

/** Compiles the traced graph for this machine's device and loads it. */
function compileOrExplain(ctx: Context, graph: Graph, workDir?: string): Promise<CompiledProgram> {
  const tf32 = ctx.req.tf32 ? { tf32: true } : {};
  return explainMissingCompiler(ctx, () => compiler().compileGraph(graph, { device: ctx.req.device, ...(workDir !== undefined ? { workDir } : {}), ...tf32 }));
}

/**
 * `guards.toolchain`: the code-generation identity (the key's toolchain field), and the
 * compiler that built this library — recorded as information only: any compiler builds an
 * equivalent library, so it is neither keyed nor checked at load.
 */
function toolchainIdentity(codegen: string, program: Pick<CompiledProgram, 'compiler'>): ToolchainIdentity {
  const cc = program.compiler;
  if (!cc) return { id: codegen };
  let path = cc.path;
  try {
    path = realpathSync(cc.path); // /usr/bin/c++ → the compiler it stands for
  } catch {
    // keep the path it was run by
  }
  return { id: codegen, version: cc.version, path };
}

// ---- tensors captured from the closure -------------------------------------------------

/** `float32[1024,1024], float32[1024]` (the first few, then how many more). */
function capturedList(captured: readonly string[]): string {
  const shown = captured.slice(0, 4).join(', ');
  return captured.length > 4 ? `${shown} and ${captured.length - 4} more` : shown;
}

/** What a function that captures tensors gives up, and what to do instead. */
function capturedWhy(name: string, captured: readonly string[]): string {
  const one = captured.length === 1;
  return (
    `${name} captures ${one ? 'a tensor' : `${captured.length} tensors`} from its closure (${capturedList(captured)}); ` +
    `${one ? 'its value' : 'their values'} can't be part of a bundle key`
  );
}

function capturedOf(graph: Graph): string[] {
  return (graph.captured ?? []).map((c) => `${c.dtype}[${c.shape.join(',')}]`);
}

/**
 * force-load found no bundle. When that is because the function captures tensors (kiln
 * never publishes one for it), say so instead: a trace, no compile, and only on this error
 * path (never with failOnRecompile, which forbids traces). Otherwise the original error.
 */
function explainMissing(ctx: Context, trace: TraceFn, e: unknown): unknown {
  if (!(e instanceof KilnError) || e.code !== 'KILN_BUNDLE_MISSING' || ctx.cache.failOnRecompile) return e;
  let captured: string[];
  try {
    captured = capturedOf(trace());
  } catch {
    return e; // the function's own trouble shows when it is compiled; the bundle is still missing
  }
  if (!captured.length) return e;
  return new CacheError(
    'KILN_CAPTURED_TENSORS',
    `force-load: ${capturedWhy(ctx.req.name, captured)}, so kiln never publishes a bundle for it and force-load can never find one. ` +
      `Pass ${captured.length === 1 ? 'it as an argument' : 'them as arguments'} to enable bundles and warm starts.`,
    { cause: e },
  );
}

async function compileAndPublish(ctx: Context, trace: TraceFn): Promise<Outcome> {
  const { req, cache, key } = ctx;
  const t0 = performance.now();
  const graph = trace();
  const traceMs = performance.now() - t0;
  const captured = capturedOf(graph);
  if (captured.length) return compileCaptured(ctx, graph, captured, traceMs);
  // Hashed right after the trace, so an edit during the compile fails the guard next time.
  const sources = sourceGuards(graph.files, req.sourceRoot);
  const built = req.device === 'cpu' ? await compileCpu(ctx, graph) : await compileCuda(ctx, graph);
  const t = built.times;
  const compileMs = t.lowerMs + t.renderMs + t.compileMs;
  let bundleDir: string | undefined;
  try {
    // Cache trouble is 'skipped' (warned): the program is returned without a bundle, as on
    // the CPU. What throws is a bad argument: the call fails, and a GPU program is freed.
    const published = cache.publish(key, req.name, built.files, {
      keyFields: ctx.keyFields,
      guards: { sources, target: ctx.target, toolchain: built.toolchain },
      info: { function: req.name, device: req.device, kernels: built.kernels, compileMs: Math.round(compileMs) },
    });
    if (published.status !== 'skipped') bundleDir = published.dir;
  } catch (e) {
    if (built.program) disposeProgram(built.program);
    throw e;
  } finally {
    await built.cleanup?.();
  }
  return {
    ...(built.program ? { program: built.program } : {}),
    origin: 'compiled',
    key,
    ...(bundleDir !== undefined ? { bundleDir } : {}),
    traceMs,
    compileMs,
    loadMs: t.loadMs,
  };
}

/** A compile's bundle files and what it built (no program for an offline CUDA build). */
interface Built {
  program?: CompiledProgram;
  files: PublishFile[];
  toolchain: ToolchainIdentity;
  kernels: number;
  times: StageTimes;
  /** Removes the work dir once the files are published. */
  cleanup?: () => Promise<void>;
}

async function compileCpu(ctx: Context, graph: Graph): Promise<Built> {
  const workDir = await fsp.mkdtemp(join(tmpdir(), 'kiln-build-'));
  // On a compile error the work dir stays: the error names kernels.cpp in it.
  const program = await compileOrExplain(ctx, graph, workDir);
  const cleanup = (): Promise<void> => fsp.rm(workDir, { recursive: true, force: true });
  try {
    const files = programFiles(program, readFileSync(join(workDir, 'kernels.so')));
    return { program, files, toolchain: toolchainIdentity(ctx.codegen, program), kernels: program.kernels, times: program.times, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/**
 * CUDA: kiln.compile on this machine's GPU compiles (autotuning unless KILN_CUDA_TUNE=0) and
 * loads; an offline build (`kiln.build`, any target NVRTC knows) only compiles, with the
 * heuristic configurations. Either way the bundle holds the image, kernels.cu, and the plan,
 * tuning table and resources in graph.json.
 */
async function compileCuda(ctx: Context, graph: Graph): Promise<Built> {
  if (ctx.purpose === 'build') {
    const b = await explainMissingCompiler(ctx, () => compiler().buildGraphCuda(graph, ctx.target, ctx.req.tf32 ? { tf32: true } : {}));
    const kernels = b.program.kernels.length;
    const files = cudaProgramFiles({ graph: b.program.graph, plan: b.plan, kernels, source: b.source, image: b.image, target: b.target, tuning: b.tuning, resources: b.resources });
    return { files, toolchain: nvrtcIdentity(ctx.codegen), kernels, times: { ...b.times, loadMs: 0 } };
  }
  const program = (await compileOrExplain(ctx, graph)) as CudaCompiledProgram;
  try {
    if (!imageFitsTarget(ctx.target, program.cuda.target)) {
      // The key names the driver's sm_XY; NVRTC compiles that, or PTX when it is older than the GPU.
      throw new KilnError('KILN_INTERNAL', `${ctx.req.name}: compiled for ${program.cuda.target.target}, which does not run as the bundle key's target ${ctx.target}`);
    }
    const c = program.cuda;
    const files = cudaProgramFiles({ graph: program.graph, plan: program.plan, kernels: program.kernels, source: program.source, image: c.image, target: c.target, tuning: c.tuning, resources: c.resources });
    return { program, files, toolchain: nvrtcIdentity(ctx.codegen), kernels: program.kernels, times: program.times };
  } catch (e) {
    disposeProgram(program); // the call fails: free its module, constants and arena on the GPU
    throw e;
  }
}

/** Frees what a program that is not handed out holds: a CUDA program's module, constants and arena (a CPU program holds no device memory). */
function disposeProgram(program: CompiledProgram): void {
  if (program.device !== 'cuda' || !('cuda' in program)) return;
  try {
    (program as CudaCompiledProgram).cuda.program.dispose();
  } catch {
    // the error being thrown is the one to report
  }
}

/** `guards.toolchain` of a CUDA bundle (after the compile): the code-generation identity, and the NVRTC that built it as information. */
function nvrtcIdentity(codegen: string): ToolchainIdentity {
  const nvrtc = addonInfo().nvrtc;
  if (!nvrtc.available) return { id: codegen };
  return { id: codegen, version: `NVRTC ${nvrtc.version.join('.')}`, path: nvrtc.path };
}

/**
 * A function whose graph captures tensors: compiled and run, but kept in memory only — a
 * bundle keyed without those values would load stale results when they change. One warning
 * per function and process; `kiln.build` refuses it.
 */
async function compileCaptured(ctx: Context, graph: Graph, captured: string[], traceMs: number): Promise<Outcome> {
  const { req } = ctx;
  const pass = captured.length === 1 ? 'it as an argument' : 'them as arguments';
  if (ctx.purpose === 'build') {
    throw new CacheError('KILN_CAPTURED_TENSORS', `cannot build a bundle: ${capturedWhy(req.name, captured)}. Pass ${pass} (and build with matching example inputs) instead.`);
  }
  if (ctx.cache.mode !== 'off') {
    warnOnce(
      'KILN_CAPTURED_TENSORS',
      `kiln: ${capturedWhy(req.name, captured)}, so kiln keeps the compiled program in memory only. Pass ${pass} to enable warm starts.`,
      `captured:${req.name}:${ctx.key}`,
    );
  }
  const program = await compileOrExplain(ctx, graph);
  const t = program.times;
  return { program, origin: 'compiled', key: ctx.key, captured, traceMs, compileMs: t.lowerMs + t.renderMs + t.compileMs, loadMs: t.loadMs };
}
