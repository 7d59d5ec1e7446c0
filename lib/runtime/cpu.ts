/**
 * The CPU device: compile generated C++ into a shared object with the system compiler,
 * load it, and run a LaunchPlan against it. The plan is data (lib/ir/plan.ts); this file
 * only binds it to memory: inputs, freshly allocated outputs, one temp arena per call, the
 * graph's constants, and the symbol values read from the input shapes.
 *
 * The generated library's C ABI (rendered by lib/codegen's C++ renderer):
 *   extern "C" void kiln_run(void** bufs, const int64_t* syms);          bufs[i] = plan buffer i
 *   extern "C" void kiln_set_threads(void** bufs, const int64_t* ints);  optional, ints[0] = threads
 *   extern "C" void kiln_run_pack_slots(void** out, const int64_t* cap); optional, see PackCache
 *   extern "C" void kiln_run_packed(void** bufs, const int64_t* syms);   kiln_run + packed weights
 */
import type { ExecFileException } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as timers from 'node:timers';
import { allocStorage, isStorageOf, ITEMSIZE, type DType, type Storage } from '../ir/dtype';
import type { Constant, SymbolBinding } from '../ir/graph';
import type { LaunchPlan } from '../ir/plan';
import { evalDim, parseDim, type Dim } from '../ir/sym';
import { envInt, readEnv } from '../util/env';
import { ArgumentError, CompilerError, KilnError, ShapeError } from '../util/errors';
import { checkNativeEnv, cpuLoad, type CpuLibrary, type HostBuffer } from './native';
import { findCxx, type CxxInfo } from './toolchain';

// ---- compiling -------------------------------------------------------------------------

/** What `compileSharedObject` produced. */
export interface SharedObject {
  /** `<dir>/kernels.so` */
  soPath: string;
  /** `<dir>/kernels.cpp` */
  sourcePath: string;
  /** The compiler that built it (its identity belongs in a bundle key). */
  cxx: CxxInfo;
  /** The full argument list after the compiler path. */
  args: string[];
  /** Compiler output of a successful build (warnings), usually empty. */
  log: string;
  ms: number;
}

export interface CompileOptions {
  /** Environment to find the compiler in (`CXX`, `PATH`) and read `KILN_CXXFLAGS` from. */
  env?: NodeJS.ProcessEnv;
}

/** Flags every build needs regardless of what the renderer asks for. */
const REQUIRED_FLAGS = ['-shared', '-fPIC'];

// At most this many compiler processes at once: each one wants a core and hundreds of MB.
const maxJobs = Math.max(1, availableParallelism());
let running = 0;
const waiting: (() => void)[] = [];

async function withCompileSlot<T>(work: () => Promise<T>): Promise<T> {
  if (running >= maxJobs) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await work();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/**
 * Compiles `source` into `<dir>/kernels.so` (source kept as `<dir>/kernels.cpp`) with the
 * compiler `findCxx` picks, off the event loop. `flags` come from the renderer
 * (`cppFlags(features)`: the ISA the bundle target names); `-shared -fPIC` and
 * `$KILN_CXXFLAGS` are added. The library is written under a temporary name and renamed,
 * so `kernels.so` is never seen half-written.
 *
 * Rejects with CompilerError: KILN_NO_CXX when there is no compiler (the message says
 * what to install), KILN_CXX_COMPILE when compiling fails (the message names the first
 * `file:line:col: error`, `.log` holds the whole output).
 */
export async function compileSharedObject(source: string, flags: readonly string[], dir: string, opts: CompileOptions = {}): Promise<SharedObject> {
  const env = opts.env ?? process.env;
  const cxx = requireCxx(env);
  await fsp.mkdir(dir, { recursive: true });
  const sourcePath = path.join(dir, 'kernels.cpp');
  const soPath = path.join(dir, 'kernels.so');
  const tmpPath = path.join(dir, `.kernels.${process.pid}.${Math.random().toString(36).slice(2)}.so`);
  await fsp.writeFile(sourcePath, source);
  const extra = readEnv('KILN_CXXFLAGS', env)?.split(/\s+/).filter(Boolean) ?? [];
  const args = [...REQUIRED_FLAGS.filter((f) => !flags.includes(f)), ...flags, ...extra, '-o', tmpPath, sourcePath];
  const t0 = performance.now();
  const result = await withCompileSlot(() => runCompiler(cxx.path, args, env));
  const ms = performance.now() - t0;
  if (result.error) {
    await fsp.rm(tmpPath, { force: true });
    if (result.error.code === 'ENOENT') throw noCompiler(`${cxx.path} disappeared (ENOENT)`);
    throw compileFailure(cxx.path, sourcePath, result.log, result.error);
  }
  await fsp.rename(tmpPath, soPath);
  return { soPath, sourcePath, cxx, args, log: result.log, ms };
}

/** The C++ compiler, or CompilerError KILN_NO_CXX saying what to install (callers fail fast with it). */
export function requireCxx(env: NodeJS.ProcessEnv = process.env): CxxInfo {
  const cxx = findCxx(env);
  if (!cxx.available) throw noCompiler(cxx.reason);
  return cxx;
}

interface RunResult {
  log: string;
  error?: ExecFileException;
}

function runCompiler(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve) => {
    // LC_ALL=C: English diagnostics, so `file:line:col: error` can be found in the log.
    // Required here, not at the top: loading a bundle never runs a compiler (docs/BUNDLES.md, warm path).
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: child_process costs a warm start ~5 ms
    const { execFile } = require('node:child_process') as typeof import('node:child_process');
    execFile(file, args, { env: { ...env, LC_ALL: 'C' }, maxBuffer: 64 * 2 ** 20 }, (error, stdout, stderr) => {
      const log = `${stdout}${stderr}`;
      resolve(error ? { log, error } : { log });
    });
  });
}

function noCompiler(reason: string): CompilerError {
  return new CompilerError(
    'KILN_NO_CXX',
    `the CPU backend needs a C++ compiler: ${reason}. Install g++ or clang++ (e.g. \`apt-get install g++\`) ` +
      'or set CXX to one; `npx kiln doctor` shows what kiln finds.',
  );
}

/** First `file:line[:col]: error` (or `fatal error`) in a GCC/Clang log. */
export function firstCompilerError(log: string): string | undefined {
  const lines = log.split('\n');
  const located = lines.find((l) => /^[^\s:][^:]*:\d+(:\d+)?: (fatal )?error\b/.test(l));
  return (located ?? lines.find((l) => /\berror\b/i.test(l)))?.trim();
}

function compileFailure(cxxPath: string, sourcePath: string, log: string, error: RunResult['error']): CompilerError {
  const first = firstCompilerError(log);
  const how = error?.signal ? `was killed by ${error.signal}` : `exited with status ${String(error?.code)}`;
  const message =
    `C++ compile of ${sourcePath} failed (${path.basename(cxxPath)} ${how})` +
    (first ? `: ${first}` : '') +
    '. The full compiler output is in the error\'s `log`.';
  return new CompilerError('KILN_CXX_COMPILE', message, log);
}

// ---- running ---------------------------------------------------------------------------

/** A tensor's raw data as the engine passes it: contiguous storage in the dtype's typed array. */
export interface RawTensor {
  dtype: DType;
  shape: number[];
  data: Storage;
}

/** Where each temp buffer lives in the per-call arena (byte offsets, 64-byte aligned). */
export interface ArenaLayout {
  /** Byte offset by buffer id; entries exist for temps only. */
  readonly offsets: ReadonlyMap<number, number> | Readonly<Record<number, number>> | readonly number[];
  /** Total arena bytes. */
  readonly bytes: number;
}

/** Places a plan's temps for concrete symbol values (lib/passes' `arenaLayout`). */
export type ArenaLayoutFn = (plan: LaunchPlan, syms: Readonly<Record<string, number>>) => ArenaLayout;

export interface CpuProgramParts {
  plan: LaunchPlan;
  /** How each symbol binds to input dims (the graph's duck-sized bindings). */
  symbols: readonly SymbolBinding[];
  /** The graph's constant table (plan const buffers name their entry by `source`). */
  constants: ReadonlyMap<string, Constant>;
  layout: ArenaLayoutFn;
  /** Threads for the kernels (default: `$KILN_CPU_THREADS`, else all cores). */
  threads?: number;
  /** Keep packed copies of matmul weights across calls (default true; see PackCache). */
  prepack?: boolean;
  /** Longest previous run, in µs, after which a call may run on the JS thread (default: `$KILN_CPU_INLINE_US`, else 1000; 0 = never). */
  inlineUs?: number;
}

const offsetOf = (offsets: ArenaLayout['offsets'], id: number): number | undefined =>
  offsets instanceof Map ? offsets.get(id) : (offsets as Record<number, number>)[id];

/** Number of kernel threads from `KILN_CPU_THREADS` (a positive integer), else all cores. */
export function cpuThreads(env: NodeJS.ProcessEnv = process.env): number {
  return envInt('KILN_CPU_THREADS', { min: 1, max: Number.MAX_SAFE_INTEGER, fallback: availableParallelism(), unit: 'threads for CPU kernels', unset: 'all cores' }, env);
}

/** Default of KILN_CPU_INLINE_US: a run this short costs less than the two thread wake-ups it saves. */
const DEFAULT_INLINE_US = 1000;

/** The longest previous run (µs) after which a call runs on the JS thread, from `KILN_CPU_INLINE_US` (0 = never). */
export function cpuInlineUs(env: NodeJS.ProcessEnv = process.env): number {
  return envInt('KILN_CPU_INLINE_US', { min: 0, max: Number.MAX_SAFE_INTEGER, fallback: DEFAULT_INLINE_US, unit: "microseconds; 0 runs every call on kiln's compute thread" }, env);
}

/**
 * Checks the variables a CPU program reads when it loads (`KILN_CPU_THREADS`,
 * `KILN_CPU_INLINE_US`, and the native addon's own: `checkNativeEnv`): ArgumentError
 * KILN_BAD_ENV for a bad value. The engine calls it before it looks up a bundle, so that the
 * caller's mistake is never taken for a bundle that fails to load (which would be discarded).
 */
export function checkCpuEnv(env: NodeJS.ProcessEnv = process.env): void {
  cpuThreads(env);
  cpuInlineUs(env);
  checkNativeEnv(env);
}

// Calls run inline back to back never let the event loop turn (an awaited loop of them is
// all microtasks): after this many in a row, calls go to the compute thread until the loop
// has turned once (an immediate, on node:timers' setImmediate as kiln loaded it, resets the
// streak). Nothing waits on that timer: fake timers that never run it cost speed, not a hang.
const INLINE_STREAK = 16;
let inlineStreak = 0;
let turnWatch = false;
const later = timers.setImmediate;

function ranInline(): void {
  inlineStreak++;
  if (turnWatch) return;
  turnWatch = true;
  later(() => {
    turnWatch = false;
    inlineStreak = 0;
  }).unref();
}
// Calls of this thread on the compute thread whose Promises have not settled: while there
// are any, a call does not run inline (it would settle before them).
let inFlight = 0;

/** What one set of symbol values fixes for every call with them (sizes, arena, shapes). */
interface Bound {
  /** Element count by buffer id. */
  readonly elems: readonly number[];
  /** The symbol values as the library takes them (plan.symbols order). */
  readonly symValues: BigInt64Array;
  readonly layout: ArenaLayout;
  readonly outShapes: readonly number[][];
  readonly outElems: readonly number[];
  /** Wall time of the last run at these sizes, µs; Infinity until one finished (see `run`). */
  lastUs: number;
}

/** A kept arena and the buffer list its views were made for: consts, temps and unused ids filled in. */
interface Arena {
  readonly buffer: ArrayBuffer;
  readonly bound: Bound;
  readonly template: HostBuffer[];
}

/**
 * A loaded CPU program: a shared object plus the plan it runs. `run` is asynchronous and
 * may be called concurrently: each call gets its own outputs and arena. Its kernels run on
 * kiln's compute thread, or on the calling JS thread when the program's previous run at the
 * same sizes took at most `inlineUs` µs and nothing else is in flight (see `run`).
 */
export class CpuProgram {
  readonly lib: CpuLibrary;
  readonly plan: LaunchPlan;
  /** Threads the kernels were told to use, or undefined when the library has no kiln_set_threads. */
  readonly threads: number | undefined;
  readonly #symbols: readonly SymbolBinding[];
  readonly #layout: ArenaLayoutFn;
  readonly #elems: Dim[];
  readonly #outShapes: Dim[][];
  readonly #consts = new Map<number, Storage>();
  #spareArena: Arena | undefined;
  // Sizes and arena layouts by symbol values: placement is pure, and calls mostly repeat sizes.
  readonly #bound = new Map<string, Bound>();
  readonly #packs: PackCache | undefined;
  readonly #inputs: { id: number; index: number; dtype: DType }[] = [];
  readonly #outputs: { id: number; dtype: DType }[] = [];
  readonly #temps: number[] = [];
  /** Whether each plan output gets a copy (it is not a fresh output buffer of its own). */
  readonly #copyOut: boolean[];
  readonly #inlineUs: number;

  /** Loads `soPath` (dlopen) and checks the plan against the symbol bindings and constants. */
  static load(soPath: string, parts: CpuProgramParts): CpuProgram {
    return new CpuProgram(cpuLoad(soPath), parts);
  }

  constructor(lib: CpuLibrary, parts: CpuProgramParts) {
    this.lib = lib;
    this.plan = parts.plan;
    this.#symbols = parts.symbols;
    this.#layout = parts.layout;
    const plan = parts.plan;
    for (const name of plan.symbols) {
      if (!parts.symbols.some((s) => s.name === name)) throw internal(`plan symbol ${name} has no binding to an input dim`);
    }
    this.#elems = [];
    for (const b of plan.buffers) this.#elems[b.id] = parseDim(b.elems);
    this.#outShapes = plan.outputs.map((o) => o.shape.map(parseDim));
    for (const b of plan.buffers) {
      if (b.role !== 'const') continue;
      const c = parts.constants.get(String(b.source));
      if (!c) throw internal(`plan buffer ${b.id} names constant ${String(b.source)}, which the graph lacks`);
      const n = c.shape.reduce((a, d) => a * d, 1);
      if (c.dtype !== b.dtype || !isStorageOf(c.dtype, c.data) || c.data.length !== n || this.#elems[b.id] !== n) {
        throw internal(`constant ${String(b.source)} (${c.dtype}[${c.shape}]) does not fit plan buffer ${b.id} (${b.dtype}, ${b.elems} elements)`);
      }
      this.#consts.set(b.id, c.data);
    }
    for (const b of plan.buffers) {
      if (b.role === 'input') this.#inputs.push({ id: b.id, index: Number(b.source), dtype: b.dtype });
      else if (b.role === 'output') this.#outputs.push({ id: b.id, dtype: b.dtype });
      else if (b.role === 'temp') this.#temps.push(b.id);
    }
    // An output that is an input, a constant or a temp, or a buffer shared by two outputs:
    // each returned tensor gets its own copy, so no caller aliases another's data.
    this.#copyOut = plan.outputs.map((o, i) => plan.buffers[o.buffer]?.role !== 'output' || plan.outputs.findIndex((p) => p.buffer === o.buffer) !== i);
    this.#inlineUs = parts.inlineUs ?? cpuInlineUs();
    this.threads = this.#setThreads(parts.threads ?? cpuThreads());
    const slots = parts.prepack === false ? [] : readPackSlots(lib, plan);
    this.#packs = slots.length ? new PackCache(slots) : undefined;
  }

  /** Tells the library how many threads to use, if it exports kiln_set_threads. */
  #setThreads(n: number): number | undefined {
    try {
      this.lib.call('kiln_set_threads', [], [n]);
      return n;
    } catch (e) {
      if (e instanceof KilnError && e.code === 'KILN_DLOPEN' && /not found/.test(e.message)) return undefined;
      throw e;
    }
  }

  /** Symbol values from the input shapes; every dim that carries a symbol must agree. */
  bindSymbols(inputs: readonly RawTensor[]): Record<string, number> {
    const values: Record<string, number> = {};
    for (const s of this.#symbols) {
      let first: { input: number; dim: number; value: number } | undefined;
      for (const { input, dim } of s.sources) {
        const shape = inputs[input]?.shape;
        if (!shape || dim >= shape.length) {
          throw new ShapeError('KILN_INPUT_SHAPE', `input ${input} has no dim ${dim}, which carries the dynamic size ${s.name}`);
        }
        const value = shape[dim];
        if (!first) first = { input, dim, value };
        else if (value !== first.value) {
          throw new ShapeError(
            'KILN_DYNAMIC_DIM_MISMATCH',
            `input ${input} dim ${dim} is ${value} but input ${first.input} dim ${first.dim} is ${first.value}; ` +
              `both are the dynamic size ${s.name} (they were equal when traced, so they must stay equal)`,
          );
        }
      }
      if (first) values[s.name] = first.value;
    }
    return values;
  }

  /**
   * Runs the plan. Inputs are checked against the plan's buffer sizes (a wrong size would
   * let native code read past an array); returns one tensor per plan output.
   *
   * Where the kernels run: a call runs on the calling JS thread, blocking it, when the
   * program's previous run at the same sizes took at most `inlineUs` µs (KILN_CPU_INLINE_US),
   * no earlier call of this thread is still in flight (Promises settle in call order) and
   * the compute thread has nothing queued or running; else on kiln's compute thread. Inline saves the
   * compute thread's wake-up and the completion's wake-up of the JS thread (tens of µs on
   * a loaded VM); either way calls run one at a time, in call order. After INLINE_STREAK
   * inline calls in a row, calls run on the compute thread until the event loop has turned.
   */
  async run(inputs: readonly RawTensor[]): Promise<RawTensor[]> {
    const plan = this.plan;
    const syms = this.bindSymbols(inputs);
    const bound = this.#boundFor(syms);
    const inline = bound.lastUs <= this.#inlineUs && inlineStreak < INLINE_STREAK && inFlight === 0;
    for (const { id, index, dtype } of this.#inputs) {
      const x = inputs[index];
      if (!x) throw new ArgumentError('KILN_INPUT_COUNT', `the program reads input ${index}, but only ${inputs.length} were given`);
      if (x.dtype !== dtype || !isStorageOf(dtype, x.data) || x.data.length !== bound.elems[id]) {
        throw new ShapeError(
          'KILN_INPUT_SHAPE',
          `input ${index} must be ${dtype} with ${bound.elems[id]} elements; got ${x.dtype}[${x.shape}] with ${x.data.length}`,
        );
      }
    }
    const arena = this.#takeArena(bound);
    // The library's buffer list: the arena's template (consts, temps), this call's inputs
    // and outputs, then the packed-weight slots.
    const bufs = arena.template.slice();
    for (const { id, index } of this.#inputs) bufs[id] = inputs[index].data;
    const outputs: Storage[] = [];
    for (const { id, dtype } of this.#outputs) {
      const data = allocStorage(dtype, bound.elems[id]);
      outputs.push(data);
      bufs[id] = data;
    }
    const packs = this.#packs?.begin(bufs);
    let ints = bound.symValues;
    if (packs) {
      for (const b of packs.buffers) bufs.push(b);
      ints = new BigInt64Array(bound.symValues.length + packs.states.length);
      ints.set(bound.symValues);
      ints.set(packs.states, bound.symValues.length);
    }
    const symbol = packs ? 'kiln_run_packed' : 'kiln_run';
    let ok = false;
    try {
      let us = inline ? this.lib.tryCall(symbol, bufs, ints) : -1;
      if (us >= 0) ranInline();
      else {
        inFlight++;
        try {
          us = await this.lib.callAsync(symbol, bufs, ints);
        } finally {
          inFlight--;
        }
      }
      bound.lastUs = us;
      ok = true;
    } finally {
      this.#spareArena = arena;
      if (packs) this.#packs?.end(packs, ok);
    }
    let nextOwn = 0;
    const own = new Map<number, Storage>();
    for (const { id } of this.#outputs) own.set(id, outputs[nextOwn++]);
    return plan.outputs.map((o, i) => {
      const shape = bound.outShapes[i];
      const data = this.#copyOut[i] ? copyStorage(o.dtype, bufs[o.buffer], bound.outElems[i]) : (own.get(o.buffer) as Storage);
      return { dtype: o.dtype, shape: shape.slice(), data };
    });
  }

  /** Sizes, symbol values and arena layout for these symbol values (cached: calls mostly repeat sizes). */
  #boundFor(syms: Record<string, number>): Bound {
    const names = this.plan.symbols;
    const key = names.length ? names.map((n) => syms[n]).join(',') : '';
    let bound = this.#bound.get(key);
    if (bound) return bound;
    const plan = this.plan;
    const elems = plan.buffers.map((b) => evalDim(this.#elems[b.id], syms));
    const layout = this.#temps.length ? this.#layout(plan, syms) : { offsets: [], bytes: 0 };
    for (const id of this.#temps) {
      const offset = offsetOf(layout.offsets, id);
      const bytes = elems[id] * ITEMSIZE[plan.buffers[id].dtype];
      if (offset === undefined || offset % 64 !== 0 || offset + bytes > layout.bytes) {
        throw internal(`arena layout places temp buffer ${id} (${bytes} bytes) at ${offset} in ${layout.bytes} bytes`);
      }
    }
    const outShapes = this.#outShapes.map((s) => s.map((d) => evalDim(d, syms)));
    bound = {
      elems,
      symValues: BigInt64Array.from(names, (name) => BigInt(syms[name])),
      layout,
      outShapes,
      outElems: outShapes.map((s) => s.reduce((a, d) => a * d, 1)),
      lastUs: Infinity,
    };
    if (this.#bound.size >= 64) this.#bound.delete(this.#bound.keys().next().value as string);
    this.#bound.set(key, bound);
    return bound;
  }

  /**
   * One arena per call; the last one is kept for the next call, with its buffer list, when
   * it was made for the same sizes (else when it is big enough: its views are made anew).
   */
  #takeArena(bound: Bound): Arena {
    const spare = this.#spareArena;
    if (spare && spare.bound === bound) {
      this.#spareArena = undefined;
      return spare;
    }
    const fits = spare && spare.buffer.byteLength >= bound.layout.bytes;
    if (fits) this.#spareArena = undefined;
    const buffer = fits ? spare.buffer : new ArrayBuffer(bound.layout.bytes);
    const template: HostBuffer[] = [];
    for (const b of this.plan.buffers) {
      if (b.role === 'const') template[b.id] = this.#consts.get(b.id) as Storage;
      else if (b.role === 'temp') {
        template[b.id] = new Uint8Array(buffer, offsetOf(bound.layout.offsets, b.id) as number, bound.elems[b.id] * ITEMSIZE[b.dtype]);
      }
    }
    for (let i = 0; i < template.length; i++) template[i] ??= EMPTY; // inputs and outputs are set per call; ids the plan does not use
    return { buffer, bound, template };
  }
}

// ---- packed weights ---------------------------------------------------------------------

/** A matmul B operand that the library can keep packed: plan buffer `buffer`, `bytes` packed. */
interface PackSlot {
  readonly buffer: number;
  readonly bytes: number;
}

/** The library's pack slots (none when it predates them). */
function readPackSlots(lib: CpuLibrary, plan: LaunchPlan): PackSlot[] {
  const cap = 256;
  const out = new BigInt64Array(1 + 3 * cap);
  try {
    lib.call('kiln_run_pack_slots', [out], [cap]);
  } catch (e) {
    if (e instanceof KilnError && e.code === 'KILN_DLOPEN' && /not found/.test(e.message)) return [];
    throw e;
  }
  const n = Number(out[0]);
  if (n > cap) return []; // never generated; the whole program then packs per call
  const slots: PackSlot[] = [];
  for (let s = 0; s < n; s++) {
    const buffer = Number(out[1 + 3 * s]);
    const role = plan.buffers[buffer]?.role;
    if (role !== 'input' && role !== 'const') throw internal(`pack slot ${s} names buffer ${buffer} (${String(role)}), not an input or constant`);
    slots.push({ buffer, bytes: Number(out[2 + 3 * s]) });
  }
  return slots;
}

/** One packed copy: of which storage, whether it is filled, whether a call is filling it. */
interface PackEntry {
  readonly key: WeakRef<object>;
  buffer: ArrayBuffer | undefined;
  state: 'seen' | 'packing' | 'ready';
}

/** What one call passes for the slots, and which entries it is filling. */
interface PackCall {
  readonly buffers: ArrayBuffer[];
  readonly states: BigInt64Array;
  readonly filling: PackEntry[];
}

/**
 * Packed matmul weights kept across calls. A matmul whose B operand is a program input or a
 * constant has a slot; while the same storage object is passed for it, the generated code
 * reuses one packed copy instead of packing B again (onnxruntime pre-packs its constant
 * initializers at session creation the same way).
 *
 * Why this is never stale: kiln tensors are immutable (no op writes into an existing
 * tensor, `kiln.tensor` copies its data, outputs are fresh storage), so a storage object's
 * contents never change. Entries are keyed by the storage *object* (identity, held weakly),
 * never by its address: a new tensor is a new object, even where the allocator reuses the
 * memory of a collected one. The packed bytes depend only on the data and on the slot's
 * operand view, which the program fixes.
 *
 * Cost control: a storage is packed into a slot's cache on its second call (the first only
 * records it), so operands that change every call never pay for a packed copy; each slot
 * keeps at most SLOT_ENTRIES copies (least recently used evicted), so memory stays bounded
 * by the program, not by how many distinct weights pass through it. A call that fails
 * drops the copies it was filling; a copy another call is still filling is not used.
 */
class PackCache {
  static readonly SLOT_ENTRIES = 2;
  readonly #slots: readonly PackSlot[];
  readonly #entries: PackEntry[][];

  constructor(slots: readonly PackSlot[]) {
    this.#slots = slots;
    this.#entries = slots.map(() => []);
  }

  begin(bufs: readonly HostBuffer[]): PackCall {
    const buffers: ArrayBuffer[] = [];
    const states = new BigInt64Array(this.#slots.length);
    const filling: PackEntry[] = [];
    this.#slots.forEach((slot, s) => {
      const key = bufs[slot.buffer] as object;
      const list = this.#entries[s];
      const head = list[0];
      if (head !== undefined && head.state === 'ready' && head.buffer && head.key.deref() === key) {
        buffers.push(head.buffer); // the usual call: the same weights as last time, packed
        states[s] = 2n;
        return;
      }
      let i = list.findIndex((e) => e.key.deref() === key);
      let e: PackEntry;
      if (i < 0) {
        e = { key: new WeakRef(key), buffer: undefined, state: 'seen' };
        list.unshift(e);
        i = 0;
        for (let j = list.length - 1; j > 0 && list.length > PackCache.SLOT_ENTRIES; j--) if (list[j].state !== 'packing') list.splice(j, 1);
      } else {
        e = list[i];
        list.splice(i, 1);
        list.unshift(e);
        if (e.state === 'seen') {
          e.buffer = new ArrayBuffer(slot.bytes);
          e.state = 'packing';
          filling.push(e);
          buffers.push(e.buffer);
          states[s] = 1n;
          return;
        }
      }
      if (e.state === 'ready' && e.buffer) {
        buffers.push(e.buffer);
        states[s] = 2n;
      } else {
        buffers.push(EMPTY);
        states[s] = 0n;
      }
    });
    return { buffers, states, filling };
  }

  end(call: PackCall, ok: boolean): void {
    for (const e of call.filling) {
      if (ok) {
        e.state = 'ready';
      } else {
        e.state = 'seen';
        e.buffer = undefined;
      }
    }
  }
}

const EMPTY = new ArrayBuffer(0);

/** A fresh `dtype` storage holding the first `n` elements of `src`. */
function copyStorage(dtype: DType, src: HostBuffer, n: number): Storage {
  const out = allocStorage(dtype, n);
  const bytes = src instanceof ArrayBuffer ? new Uint8Array(src) : new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(bytes.subarray(0, out.byteLength));
  return out;
}

function internal(msg: string): KilnError {
  return new KilnError('KILN_INTERNAL', `CPU program: ${msg}`);
}
