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
import { allocStorage, isStorageOf, ITEMSIZE, type DType, type Storage } from '../ir/dtype';
import type { Constant, SymbolBinding } from '../ir/graph';
import type { LaunchPlan } from '../ir/plan';
import { evalDim, parseDim, type Dim } from '../ir/sym';
import { readEnv } from '../util/env';
import { ArgumentError, CompilerError, KilnError, ShapeError } from '../util/errors';
import { cpuLoad, type CpuLibrary, type HostBuffer } from './native';
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
 * (`cppFlags()`); `-shared -fPIC` and `$KILN_CXXFLAGS` are added. The library is written
 * under a temporary name and renamed, so `kernels.so` is never seen half-written.
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
}

const offsetOf = (offsets: ArenaLayout['offsets'], id: number): number | undefined =>
  offsets instanceof Map ? offsets.get(id) : (offsets as Record<number, number>)[id];

/** Number of kernel threads from `KILN_CPU_THREADS` (a positive integer), else all cores. */
export function cpuThreads(env: NodeJS.ProcessEnv = process.env): number {
  const text = readEnv('KILN_CPU_THREADS', env);
  if (text === undefined) return availableParallelism();
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ArgumentError('KILN_BAD_ENV', `KILN_CPU_THREADS=${text} must be a positive integer`);
  }
  return n;
}

/**
 * A loaded CPU program: a shared object plus the plan it runs. `run` is asynchronous (the
 * kernels run on libuv's pool) and may be called concurrently: each call gets its own
 * outputs and arena.
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
  #spareArena: ArrayBuffer | undefined;
  // Arena layouts by symbol values: placement is pure, and calls mostly repeat sizes.
  readonly #layouts = new Map<string, ArenaLayout>();
  readonly #packs: PackCache | undefined;

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
   */
  async run(inputs: readonly RawTensor[]): Promise<RawTensor[]> {
    const plan = this.plan;
    const syms = this.bindSymbols(inputs);
    const elems = (id: number): number => evalDim(this.#elems[id], syms);
    const bufs: HostBuffer[] = [];
    const outputs = new Map<number, Storage>();
    const temps: number[] = [];
    for (const b of plan.buffers) {
      switch (b.role) {
        case 'input': {
          const x = inputs[Number(b.source)];
          if (!x) throw new ArgumentError('KILN_INPUT_COUNT', `the program reads input ${String(b.source)}, but only ${inputs.length} were given`);
          if (x.dtype !== b.dtype || !isStorageOf(b.dtype, x.data) || x.data.length !== elems(b.id)) {
            throw new ShapeError(
              'KILN_INPUT_SHAPE',
              `input ${String(b.source)} must be ${b.dtype} with ${elems(b.id)} elements; got ${x.dtype}[${x.shape}] with ${x.data.length}`,
            );
          }
          bufs[b.id] = x.data;
          break;
        }
        case 'output': {
          const data = allocStorage(b.dtype, elems(b.id));
          outputs.set(b.id, data);
          bufs[b.id] = data;
          break;
        }
        case 'const':
          bufs[b.id] = this.#consts.get(b.id) as Storage;
          break;
        case 'temp':
          temps.push(b.id);
          break;
        default:
          return b.role satisfies never;
      }
    }
    const arena = this.#takeArena(temps.length ? this.#layoutFor(syms) : { offsets: [], bytes: 0 });
    for (const id of temps) {
      const offset = offsetOf(arena.layout.offsets, id);
      const b = plan.buffers[id];
      const bytes = elems(id) * ITEMSIZE[b.dtype];
      if (offset === undefined || offset % 64 !== 0 || offset + bytes > arena.layout.bytes) {
        throw internal(`arena layout places temp buffer ${id} (${bytes} bytes) at ${offset} in ${arena.layout.bytes} bytes`);
      }
      bufs[id] = new Uint8Array(arena.buffer, offset, bytes);
    }
    for (let i = 0; i < bufs.length; i++) bufs[i] ??= new ArrayBuffer(0); // ids the plan does not use
    const symValues = BigInt64Array.from(plan.symbols, (name) => BigInt(syms[name]));
    const packs = this.#packs?.begin(bufs);
    let ok = false;
    try {
      if (packs) {
        const ints = new BigInt64Array(symValues.length + packs.states.length);
        ints.set(symValues);
        ints.set(packs.states, symValues.length);
        await this.lib.callAsync('kiln_run_packed', [...bufs, ...packs.buffers], ints);
      } else {
        await this.lib.callAsync('kiln_run', bufs, symValues);
      }
      ok = true;
    } finally {
      this.#spareArena = arena.buffer;
      if (packs) this.#packs?.end(packs, ok);
    }
    return plan.outputs.map((o, i) => {
      const shape = this.#outShapes[i].map((d) => evalDim(d, syms));
      const own = outputs.get(o.buffer);
      // An output that is an input, a constant or a temp, or a buffer shared by two
      // outputs: each returned tensor gets its own copy, so no caller aliases another's data.
      const shared = plan.outputs.findIndex((p) => p.buffer === o.buffer) !== i;
      const data = own && !shared ? own : copyStorage(o.dtype, bufs[o.buffer], shape.reduce((a, d) => a * d, 1));
      return { dtype: o.dtype, shape, data };
    });
  }

  #layoutFor(syms: Record<string, number>): ArenaLayout {
    const key = this.plan.symbols.map((n) => syms[n]).join(',');
    let layout = this.#layouts.get(key);
    if (!layout) {
      layout = this.#layout(this.plan, syms);
      if (this.#layouts.size >= 64) this.#layouts.delete(this.#layouts.keys().next().value as string);
      this.#layouts.set(key, layout);
    }
    return layout;
  }

  /** One arena per call; the last one is kept for the next call when it is big enough. */
  #takeArena(layout: ArenaLayout): { buffer: ArrayBuffer; layout: ArenaLayout } {
    const spare = this.#spareArena;
    if (spare && spare.byteLength >= layout.bytes) {
      this.#spareArena = undefined;
      return { buffer: spare, layout };
    }
    return { buffer: new ArrayBuffer(layout.bytes), layout };
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
