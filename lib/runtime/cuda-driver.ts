/**
 * GPU primitives over the CUDA driver, as thin typed wrappers of the addon: device memory
 * from the caching allocator, modules and kernels, the plan executor, and cubin inspection.
 * Every failure is a CudaError (KILN_CUDA_UNAVAILABLE on a machine without a GPU). All work
 * runs on kiln's one stream per device, in the order it was queued.
 */
import * as timers from 'node:timers';
import { AddonError, ArgumentError, FormatError } from '../util/errors';
import {
  addon,
  guard,
  guardAsync,
  type ExecutorStats,
  type Handle,
  type HostBuffer,
  type PoolStats,
  type RawAddon,
  translateNativeError,
} from './native';

export type { ExecutorStats, PoolStats } from './native';

// ---- device memory ---------------------------------------------------------------------

/** Buffers the GC freed because nobody disposed them (a leak indicator for users). */
const leaks = { buffers: 0, bytes: 0 };
let liveBuffers = 0;
const ptrOut = new BigUint64Array(1); // memAlloc writes the new block's address here

/** What the registry holds for a buffer: its block, until dispose() frees it. */
interface Block {
  raw: RawAddon;
  handle: Handle;
  bytes: number;
  live: boolean;
}

// The safety net: GPU memory is invisible to V8, so dispose() is the real mechanism and
// this only returns what a forgotten buffer held, counting it as a leak. A registration
// costs more than the rest of a buffer's life (a WeakCell the GC tracks, a cleanup call
// after it dies, an unregister by token), while most buffers are disposed within a turn or
// two of the event loop (the outputs of an awaited call). So a buffer is registered only
// once it has lived through two turns (`age`, on setImmediate), and never unregistered:
// dispose() marks its block freed. A forgotten buffer is still freed by the GC, a turn or
// two later than it could be.
const registry = new FinalizationRegistry<Block>((held) => {
  if (!held.live) return;
  held.live = false;
  leaks.buffers++;
  leaks.bytes += held.bytes;
  liveBuffers--;
  try {
    held.raw.memFree(held.handle);
  } catch {
    // nothing to report to from a finalizer
  }
});

// Buffers made since the last `age` (young) and before it (old), with their blocks; a
// buffer and its block share an index.
let young: DeviceBuffer[] = [], youngBlocks: Block[] = [];
let old: DeviceBuffer[] = [], oldBlocks: Block[] = [];
let youngBytes = 0;
let aging = false;
// Past this many young buffers or bytes (a long synchronous stretch, or test fake timers
// that never run `age`), they are registered at once.
const MAX_YOUNG = 256;
const MAX_YOUNG_BYTES = 256 * 2 ** 20;
// node:timers' setImmediate as it is when kiln loads: fake timers installed later (also
// those that patch the node:timers module) cannot hold `age` back.
const later = timers.setImmediate;

function remember(buf: DeviceBuffer, block: Block): void {
  young.push(buf);
  youngBlocks.push(block);
  youngBytes += block.bytes;
  if (young.length > MAX_YOUNG || youngBytes > MAX_YOUNG_BYTES) {
    register(old, oldBlocks);
    register(young, youngBlocks);
    youngBytes = 0;
  } else if (!aging) {
    aging = true;
    later(age).unref();
  }
}

/** Registers the old buffers still live; the young become old. */
function age(): void {
  aging = false;
  register(old, oldBlocks);
  [old, young] = [young, old];
  [oldBlocks, youngBlocks] = [youngBlocks, oldBlocks];
  youngBytes = 0;
  if (old.length > 0) {
    aging = true;
    later(age).unref();
  }
}

function register(bufs: DeviceBuffer[], blocks: Block[]): void {
  for (let i = 0; i < bufs.length; i++) if (blocks[i].live) registry.register(bufs[i], blocks[i]);
  bufs.length = 0;
  blocks.length = 0;
}

/** The caching allocator's counters for `device`, plus kiln's JS-side buffer counts. */
export interface DeviceMemoryStats extends PoolStats {
  /** DeviceBuffers alive in this JS environment. */
  jsLiveBuffers: number;
  /** Buffers (and their bytes) freed by the garbage collector instead of dispose(). */
  gcFreedBuffers: number;
  gcFreedBytes: number;
}

/**
 * Memory counters of `device` (all zero on a machine without a GPU, or for an ordinal that
 * names no GPU). Reads the allocator's counters; where a driver is installed, the first call
 * in a process loads it (libcuda, cuInit).
 */
export function deviceMemoryStats(device = 0): DeviceMemoryStats {
  const stats = guard(() => addon().memStats(device));
  return { ...stats, jsLiveBuffers: liveBuffers, gcFreedBuffers: leaks.buffers, gcFreedBytes: leaks.bytes };
}

/**
 * Gives the allocator's cached blocks on `device` back to the driver; returns the bytes (0 on
 * a machine without a GPU, and with nothing cached). ArgumentError KILN_ARGUMENT for an
 * ordinal that is not a non-negative integer, or (where the driver reports GPUs) names none
 * of them — as the addon's memTrim says it. Where a driver is installed, the first call
 * loads it (libcuda, cuInit) to read the device list, as `deviceMemoryStats` does.
 */
export function trimDeviceMemory(device = 0): number {
  if (!Number.isInteger(device) || device < 0) throw new ArgumentError('KILN_ARGUMENT', `device must be a non-negative integer, got ${String(device)}`);
  const { driver } = guard(() => addon().info());
  const count = driver.available ? driver.devices.length : 0;
  if (count === 0) return 0; // no GPU: nothing was ever allocated
  if (device >= count) throw new ArgumentError('KILN_ARGUMENT', `device ${device} does not exist (${count} CUDA device${count === 1 ? '' : 's'})`);
  if (deviceMemoryStats(device).cachedBytes === 0) return 0; // nothing cached: the allocator has nothing to give back
  return guard(() => addon().memTrim(device));
}

/**
 * A block of device memory from the caching allocator. Dispose it (`dispose()`, `free()` or
 * `using`); the garbage collector only backs that up. Blocks are reused in stream order, so
 * disposing right after queueing work that reads the buffer is safe.
 */
export class DeviceBuffer {
  readonly #block: Block; // the addon, the handle, and whether it is still to be freed
  /** Size in bytes. */
  readonly bytes: number;
  /** CUDA device ordinal. */
  readonly device: number;
  /** The device address, for kernel arguments. */
  readonly ptr: bigint;
  #freed = false;
  // Host copies in flight (they run on a worker thread, after later JS code) and holds
  // (`retain`): a dispose() meanwhile frees the block when the last of them ends.
  #pending = 0;
  #freeWhenIdle = false;

  /** Allocates `bytes` on `device`; throws CudaError (KILN_CUDA_OOM when the GPU is full). */
  constructor(bytes: number, device = 0) {
    const raw = addon();
    let handle: Handle;
    try {
      handle = raw.memAlloc(bytes, device, ptrOut);
    } catch (e) {
      throw translateNativeError(e);
    }
    this.bytes = bytes;
    this.device = device;
    this.ptr = ptrOut[0];
    liveBuffers++;
    this.#block = { raw, handle, bytes, live: true };
    remember(this, this.#block);
  }
  /** True once disposed (or disposal was requested while a copy was in flight). */
  get freed(): boolean {
    return this.#freed || this.#freeWhenIdle;
  }
  /** Returns the block to the allocator; calling it again does nothing. */
  dispose(): void {
    if (this.#freed) return;
    if (this.#pending > 0) {
      this.#freeWhenIdle = true; // a host copy still uses it: free when that settles
      return;
    }
    this.#freed = true;
    this.#block.live = false;
    liveBuffers--;
    try {
      this.#block.raw.memFree(this.#block.handle);
    } catch (e) {
      throw translateNativeError(e);
    }
  }
  /**
   * Keeps the block allocated until the returned release is called (once; later calls do
   * nothing): a dispose() meanwhile is deferred to then, as for a copy in flight. For work
   * that reads the buffer and is queued later (a compiled call holds its device inputs from
   * the moment it is called). ArgumentError KILN_ARGUMENT once the block was freed; allowed
   * while a requested dispose waits, since the memory is still there.
   */
  retain(): () => void {
    if (this.#freed) throw new ArgumentError('KILN_ARGUMENT', 'device memory was already freed');
    this.#pending++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.#settle();
    };
  }
  #settle(): void {
    if (--this.#pending === 0 && this.#freeWhenIdle) {
      this.#freeWhenIdle = false;
      this.dispose();
    }
  }
  /** Same as dispose(). */
  free(): void {
    this.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  /** Copies `src` into this buffer at `offset` bytes, off the JS thread. */
  write(src: HostBuffer, offset = 0): Promise<void> {
    return this.#track(() => this.#block.raw.memcpyHtoD(this.#block.handle, offset, src));
  }
  /** Copies from this buffer at `offset` bytes into `dst` (its whole length), off the JS thread. */
  read(dst: HostBuffer, offset = 0): Promise<void> {
    return this.#track(() => this.#block.raw.memcpyDtoH(dst, this.#block.handle, offset));
  }
  /**
   * Copies `src` into this buffer at `offset` bytes and returns when it is done, blocking the
   * JS thread (queued after earlier work on kiln's stream). For one-off transfers where a
   * promise does not fit (a tensor uploaded at creation); prefer `write` elsewhere.
   */
  writeSync(src: HostBuffer, offset = 0): void {
    this.#checkLive();
    guard(() => syncCopies(this.#block.raw).memcpyHtoDSync(this.#block.handle, offset, src));
  }
  /**
   * Copies from this buffer at `offset` bytes into `dst` and returns when it is done,
   * blocking the JS thread until kiln's stream has finished all earlier work. For eager
   * reads of device data; prefer `read` elsewhere.
   */
  readSync(dst: HostBuffer, offset = 0): void {
    this.#checkLive();
    guard(() => syncCopies(this.#block.raw).memcpyDtoHSync(dst, this.#block.handle, offset));
  }
  #checkLive(): void {
    if (this.freed) throw new ArgumentError('KILN_ARGUMENT', 'device memory was already freed');
  }
  /** Queues a device-to-device copy of `bytes` from `src` (returns at once). */
  copyFrom(src: DeviceBuffer, bytes: number, dstOffset = 0, srcOffset = 0): void {
    guard(() => this.#block.raw.memcpyDtoD(this.#block.handle, dstOffset, src.#block.handle, srcOffset, bytes));
  }
  /** Queues setting `bytes` bytes at `offset` to `value` (returns at once). */
  fill(value: number, offset = 0, bytes = this.bytes - offset): void {
    guard(() => this.#block.raw.memset(this.#block.handle, offset, value, bytes));
  }
  async #track(start: () => Promise<void>): Promise<void> {
    if (this.freed) throw new ArgumentError('KILN_ARGUMENT', 'device memory was already freed');
    this.#pending++;
    try {
      await guardAsync(start);
    } finally {
      this.#settle();
    }
  }
}

/** The addon's blocking copies (added after the promise-based ones; an older build lacks them). */
interface SyncCopies {
  memcpyHtoDSync(dst: Handle, dstOffset: number, src: HostBuffer): void;
  memcpyDtoHSync(dst: HostBuffer, src: Handle, srcOffset: number): void;
}

function syncCopies(raw: RawAddon): SyncCopies {
  const r = raw as RawAddon & Partial<SyncCopies>;
  if (typeof r.memcpyHtoDSync !== 'function' || typeof r.memcpyDtoHSync !== 'function') {
    throw new AddonError('KILN_ADDON_OUTDATED', "kiln's native addon predates blocking device copies: rebuild it (`npm run build:native`)");
  }
  return r as RawAddon & SyncCopies;
}

/** True when the loaded addon has blocking copies (`DeviceBuffer.readSync` / `writeSync`). */
export function hasSyncCopies(): boolean {
  const r = addon() as RawAddon & Partial<SyncCopies>;
  return typeof r.memcpyHtoDSync === 'function' && typeof r.memcpyDtoHSync === 'function';
}

// ---- modules and kernels ---------------------------------------------------------------

/** A kernel argument: a device buffer (its address), or a scalar of the given C type. */
export type KernelArg =
  | DeviceBuffer
  | { i32: number }
  | { u32: number }
  | { f32: number }
  | { i64: bigint | number }
  | { f64: number };

/**
 * Packs kernel arguments the way cuLaunchKernel's packed-buffer form reads them: each at an
 * offset aligned to its own size, as the C ABI lays out a kernel's parameters.
 */
export function packKernelArgs(args: KernelArg[]): Uint8Array {
  const out = new DataView(new ArrayBuffer(8 * args.length + 8));
  let at = 0;
  const place = (size: number): number => {
    at = Math.ceil(at / size) * size;
    const start = at;
    at += size;
    return start;
  };
  for (const a of args) {
    if (a instanceof DeviceBuffer) out.setBigUint64(place(8), a.ptr, true);
    else if ('i32' in a) out.setInt32(place(4), a.i32, true);
    else if ('u32' in a) out.setUint32(place(4), a.u32, true);
    else if ('f32' in a) out.setFloat32(place(4), a.f32, true);
    else if ('i64' in a) out.setBigInt64(place(8), BigInt(a.i64), true);
    else out.setFloat64(place(8), a.f64, true);
  }
  return new Uint8Array(out.buffer, 0, at);
}

/** A kernel in a loaded module. */
export class CudaKernel {
  readonly #raw: RawAddon;
  readonly #handle: Handle;
  readonly name: string;
  /** @internal made by CudaModule.getFunction */
  constructor(raw: RawAddon, handle: Handle, name: string) {
    this.#raw = raw;
    this.#handle = handle;
    this.name = name;
  }
  /** Queues a launch on kiln's stream (`synchronize()` waits for it). */
  launch(grid: number[], block: number[], args: Uint8Array | KernelArg[], sharedMemBytes = 0): void {
    const packed = args instanceof Uint8Array ? args : packKernelArgs(args);
    guard(() => this.#raw.launch(this.#handle, grid, block, sharedMemBytes, packed));
  }
}

const moduleHandles = new WeakMap<CudaModule, Handle>();

/** A module loaded from a cubin or PTX image (cuModuleLoadData). */
export class CudaModule {
  readonly #raw: RawAddon;
  readonly #handle: Handle;
  readonly device: number;
  /** Loads `image` on `device`; throws CudaError (KILN_CUDA_UNAVAILABLE without a GPU). */
  constructor(image: HostBuffer, device = 0) {
    this.#raw = addon();
    this.#handle = guard(() => this.#raw.moduleLoad(image, device));
    this.device = device;
    moduleHandles.set(this, this.#handle);
  }
  /** Looks up an `extern "C"` kernel by name. */
  getFunction(name: string): CudaKernel {
    return new CudaKernel(this.#raw, guard(() => this.#raw.moduleGetFunction(this.#handle, name)), name);
  }
  /** Waits for queued work, then unloads; its kernels can no longer launch. Idempotent. */
  unload(): void {
    guard(() => this.#raw.moduleUnload(this.#handle));
  }
  [Symbol.dispose](): void {
    this.unload();
  }
}

/** Waits, off the JS thread, until all work queued on `device`'s kiln stream is done. */
export function synchronize(device = 0): Promise<void> {
  return guardAsync(async () => addon().synchronize(device));
}

// ---- the plan executor -----------------------------------------------------------------

/** One launch of an executor: kernel name, buffer ids (its pointer params), block, shared. */
export interface ExecutorStep {
  kernel: string;
  buffers: readonly number[];
  block: readonly number[];
  sharedBytes?: number;
}

/**
 * A compiled program's launches, then its device-to-device copies, run in one native call
 * per `run` (see native/executor.cc): kernels are checked once against the parameter ABI
 * (lib/runtime/cuda.ts) where the driver can tell (CUDA >= 12.4), and runs may replay CUDA
 * graphs, which then hold the copies too.
 */
export class PlanExecutor {
  readonly #raw: RawAddon;
  readonly #handle: Handle;
  readonly steps: number;
  readonly module: CudaModule;

  /** Resolves every kernel and validates the steps; throws CudaError / ArgumentError. */
  constructor(
    module: CudaModule,
    spec: { numBuffers: number; numSymbols: number; steps: readonly ExecutorStep[]; copies?: readonly { dst: number; src: number }[] },
  ) {
    this.#raw = addon();
    const kernels = [...new Set(spec.steps.map((s) => s.kernel))];
    const steps = spec.steps.map((s) => ({
      kernel: kernels.indexOf(s.kernel),
      buffers: s.buffers,
      block: s.block,
      sharedBytes: s.sharedBytes ?? 0,
    }));
    const mod = moduleHandles.get(module) as Handle;
    const copies = spec.copies ?? [];
    this.#handle = guard(() => this.#raw.execCreate(mod, { numBuffers: spec.numBuffers, numSymbols: spec.numSymbols, kernels, steps, copies }));
    if (copies.length > 0 && typeof this.stats().copies !== 'number') {
      this.dispose(); // an addon built before executor copies would ignore them
      throw new AddonError('KILN_ADDON_OUTDATED', "kiln's native addon predates executor copies: rebuild it (`npm run build:native`)");
    }
    this.steps = steps.length;
    this.module = module;
  }
  /**
   * Queues every step on kiln's stream and resolves when the GPU has finished them.
   * `ptrs[id]` is plan buffer id's device address, `syms` the plan's symbol values, `grids`
   * three dims per step (a 0 skips the step), `copyBytes` the bytes of each copy (a 0 skips
   * it; needed when the executor has copies). With `graph`, a (ptrs, syms, grids, copyBytes)
   * key seen before is captured once as a CUDA graph and replayed from then on.
   */
  run(ptrs: BigUint64Array, syms: BigInt64Array, grids: Uint32Array, graph = false, copyBytes?: BigUint64Array): Promise<void> {
    // One reaction on the addon's Promise, not an async wrapper: this is every call's path.
    let done: Promise<void>;
    try {
      done = this.#raw.execRun(this.#handle, ptrs, syms, grids, graph, copyBytes);
    } catch (e) {
      return Promise.reject(translateNativeError(e));
    }
    return done.then(undefined, rejectTranslated);
  }
  /** Counters (runs, graph captures and replays, host ns per run) and kernel attributes. */
  stats(): ExecutorStats {
    return guard(() => this.#raw.execStats(this.#handle));
  }
  /** Destroys the cached graphs; the executor can no longer run. Idempotent. */
  dispose(): void {
    guard(() => this.#raw.execDispose(this.#handle));
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

function rejectTranslated(e: unknown): never {
  throw translateNativeError(e);
}

// ---- cubin inspection ------------------------------------------------------------------

/**
 * Reads the SM version a cubin was built for from its ELF header: EM_CUDA (190) machine,
 * and the SM in e_flags (bits 0-7 up to ELF ABI version 7; bits 8-15 from version 8, which
 * CUDA 12.8+/13 emit). Throws FormatError if `binary` is not a 64-bit CUDA ELF.
 */
export function readCubinArch(binary: Uint8Array): { sm: number; abiVersion: number } {
  const view = new DataView(binary.buffer, binary.byteOffset, binary.byteLength);
  const isElf = binary.length >= 64 && view.getUint32(0, false) === 0x7f454c46;
  if (!isElf || binary[4] !== 2 || view.getUint16(18, true) !== 190) {
    throw new FormatError('KILN_BAD_CUBIN', 'not a 64-bit CUDA ELF (cubin): wrong magic, class or machine');
  }
  const abiVersion = binary[8]!;
  const flags = view.getUint32(48, true);
  return { sm: abiVersion >= 8 ? (flags >> 8) & 0xff : flags & 0xff, abiVersion };
}
