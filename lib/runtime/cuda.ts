/**
 * The CUDA device: runs a compiled LaunchPlan (lib/ir/plan.ts) from one loaded module. The
 * plan is data; this file binds it to device memory (inputs, fresh outputs, one temp arena
 * per program, uploaded constants), resolves its symbolic dims for each call, and hands all
 * launches to the native executor in one call, optionally as a replayed CUDA graph.
 *
 * ## Kernel parameter ABI (the contract with lib/codegen's CUDA renderer)
 *
 *     extern "C" __global__ void <step.kernel>(T0* b0, const T1* b1, ..., long long s0, long long s1, ...)
 *
 * - One pointer per entry of `step.buffers`, in that order (the same plan buffer may appear
 *   twice). Element types follow the buffer's dtype: float32 `float`, float16 `__half` (or
 *   its 16 bits as `unsigned short`), bfloat16 `__nv_bfloat16` (likewise), int32 `int`,
 *   bool `unsigned char` (one byte, 0 or 1). `const` and `__restrict__` are the renderer's
 *   choice; the ABI only sees 8-byte pointers.
 * - Then one `long long` (int64) per plan symbol, for every symbol in `plan.symbols` order,
 *   whether or not the kernel uses it, so that every kernel of a program has the same tail.
 * - Every parameter is 8 bytes at offset 8*k; the runtime passes them as one packed buffer.
 *   Where the driver can tell (CUDA >= 12.4) a mismatch fails at load with KILN_CUDA_ABI.
 * - Names are `extern "C"` (unmangled) and equal `step.kernel`; all kernels of a program are
 *   in one module (one NVRTC program).
 * - Launch: grid = `step.grid` evaluated with the call's symbol values (missing dims are 1;
 *   a 0 dim skips the launch, as for an empty tensor), block = `step.block`, dynamic shared
 *   memory = `step.sharedBytes` (above 48 KiB the runtime opts the kernel in). A grid dim
 *   is a DimJSON, or `cdiv(<dim text>,<int>)` for a ceiling division, since a dynamic
 *   size rarely divides by the block (see `parseGridDim`).
 * - Memory comes from a caching allocator: outputs and temps are NOT zeroed, so a kernel
 *   must write every element it owns. Buffers start 256-byte aligned; temps sit in one
 *   arena at the offsets `arenaLayout` gives (64-byte aligned).
 */
import { ITEMSIZE, allocStorage, isStorageOf, type DType } from '../ir/dtype';
import type { Constant, SymbolBinding } from '../ir/graph';
import type { LaunchPlan } from '../ir/plan';
import { evalDim, parseDim, type Dim } from '../ir/sym';
import { ArgumentError, CudaError, KilnError, ShapeError } from '../util/errors';
import type { ArenaLayout, ArenaLayoutFn, RawTensor } from './cpu';
import { CudaModule, DeviceBuffer, PlanExecutor, type ExecutorStats } from './cuda-driver';

export { deviceMemoryStats, trimDeviceMemory, type DeviceMemoryStats } from './cuda-driver';

/** A tensor in device memory. Dispose it when done (`dispose()` or `using`). */
export class DeviceTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly buffer: DeviceBuffer;
  // A pin (`pin()`): disposing it releases its hold on `buffer`, never frees it directly.
  #release: (() => void) | undefined;
  #released = false;
  constructor(dtype: DType, shape: readonly number[], buffer: DeviceBuffer) {
    this.dtype = dtype;
    this.shape = shape;
    this.buffer = buffer;
  }
  /**
   * Another handle on this tensor's device memory that keeps it allocated until the handle
   * is disposed: disposing this tensor meanwhile frees the memory only after that. What a
   * call takes of its device inputs when it is called, so that `const p = f(x); x.dispose()`
   * is safe before the call's work is queued. ArgumentError KILN_DISPOSED when this tensor
   * was disposed.
   */
  pin(): DeviceTensor {
    if (this.disposed) throw new ArgumentError('KILN_DISPOSED', 'this device tensor was disposed');
    const t = new DeviceTensor(this.dtype, this.shape, this.buffer);
    t.#release = this.buffer.retain();
    return t;
  }
  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, d) => a * d, 1);
  }
  get device(): number {
    return this.buffer.device;
  }
  get disposed(): boolean {
    return this.#release ? this.#released : this.buffer.freed;
  }
  /** Copies a host tensor to `device` (off the JS thread). */
  static async fromHost(t: RawTensor, device = 0): Promise<DeviceTensor> {
    const n = checkHost(t);
    const buffer = new DeviceBuffer(Math.max(n * ITEMSIZE[t.dtype], 1), device);
    try {
      if (n > 0) await buffer.write(t.data);
    } catch (e) {
      buffer.dispose();
      throw e;
    }
    return new DeviceTensor(t.dtype, [...t.shape], buffer);
  }
  /**
   * Copies a host tensor to `device` and returns when the copy is done, blocking the JS
   * thread (see `DeviceBuffer.writeSync`): for a tensor placed on the GPU at creation.
   */
  static fromHostSync(t: RawTensor, device = 0): DeviceTensor {
    const n = checkHost(t);
    const buffer = new DeviceBuffer(Math.max(n * ITEMSIZE[t.dtype], 1), device);
    try {
      if (n > 0) buffer.writeSync(t.data);
    } catch (e) {
      buffer.dispose();
      throw e;
    }
    return new DeviceTensor(t.dtype, [...t.shape], buffer);
  }
  /**
   * Copies the tensor back to the host, blocking the JS thread until kiln's stream has done
   * all earlier work and the copy (f16/bf16 as raw 16-bit storage): for eager reads.
   */
  toHostSync(): RawTensor {
    const data = allocStorage(this.dtype, this.size);
    if (data.length > 0) this.buffer.readSync(data);
    return { dtype: this.dtype, shape: [...this.shape], data };
  }
  /** Copies the tensor back to the host (f16/bf16 as raw 16-bit storage). */
  async toHost(): Promise<RawTensor> {
    const data = allocStorage(this.dtype, this.size);
    if (data.length > 0) await this.buffer.read(data);
    return { dtype: this.dtype, shape: [...this.shape], data };
  }
  /** Frees the device memory (deferred while a pin or a copy still uses it); a pin releases its hold. Idempotent. */
  dispose(): void {
    if (!this.#release) return this.buffer.dispose();
    if (this.#released) return;
    this.#released = true;
    this.#release();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * Pins the device tensors among a call's inputs (`DeviceTensor.pin`); host inputs pass
 * through. ArgumentError KILN_DISPOSED, naming the input, for one already disposed (nothing
 * stays pinned then). Dispose the pins (`unpinInputs`) once the work that reads them is queued.
 */
export function pinInputs(inputs: readonly ProgramInput[]): ProgramInput[] {
  const held: ProgramInput[] = [];
  try {
    inputs.forEach((x, i) => {
      if (!(x instanceof DeviceTensor)) return void held.push(x);
      if (x.disposed) throw new ArgumentError('KILN_DISPOSED', `input ${i} was disposed`);
      held.push(x.pin());
    });
  } catch (e) {
    unpinInputs(held);
    throw e;
  }
  return held;
}

/** Releases what `pinInputs` pinned (idempotent). */
export function unpinInputs(held: readonly ProgramInput[]): void {
  for (const x of held) if (x instanceof DeviceTensor) x.dispose();
}

/** The element count of a host tensor whose data fits its dtype and shape; else ArgumentError. */
function checkHost(t: RawTensor): number {
  const n = t.shape.reduce((a, d) => a * d, 1);
  if (!isStorageOf(t.dtype, t.data) || t.data.length !== n) {
    throw new ArgumentError('KILN_INPUT_DATA', `tensor data must be ${n} elements of ${t.dtype} storage, got ${t.data.constructor.name}(${t.data.length})`);
  }
  return n;
}

/** An input of `CudaProgram.run`: already on the device, or host data to upload. */
export type ProgramInput = DeviceTensor | RawTensor;

export interface CudaProgramParts {
  plan: LaunchPlan;
  /** How each symbol binds to input dims (the graph's duck-sized bindings). */
  symbols: readonly SymbolBinding[];
  /** The graph's constant table (plan const buffers name their entry by `source`). */
  constants: ReadonlyMap<string, Constant>;
  /** Places temps for concrete symbol values (lib/passes' `arenaLayout`). */
  layout: ArenaLayoutFn;
  device?: number;
  /** Replay CUDA graphs for repeated (pointers, symbols) keys; default true. */
  graphs?: boolean;
}

/**
 * Everything a call needs that depends only on the symbol values, cached per values: the
 * values for the kernels, bytes per plan buffer, the grids, the temps' arena offsets
 * (checked once), the output shapes and the copies' sizes.
 */
interface Binding {
  syms: BigInt64Array;
  /** The plan symbols' values, in `plan.symbols` order: what the binding is cached by. */
  key: number[];
  elems: number[];
  bytes: number[];
  grids: Uint32Array;
  arenaBytes: number;
  /** Per temp of `CudaProgram.#temps`, its offset in the arena. */
  tempOffsets: bigint[];
  outShapes: number[][];
  /** Bytes of each copied output, in `CudaProgram.#copied` order (the executor's copies). */
  copyBytes: BigUint64Array;
}

/**
 * How a call hands plan output i to the caller: the first output naming a fresh output
 * buffer takes it; any other (an input, a constant, a temp, a buffer two outputs share) is
 * copied by the executor after the launches into a block of its own, at pointer slot `slot`.
 */
interface OutputPlan {
  buffer: number;
  dtype: DType;
  /** The copy's pointer slot (after the plan's buffers), or -1 for a fresh buffer. */
  slot: number;
}

/** A grid dim: a polynomial dim, or the ceiling of one divided by a positive integer. */
export type GridDim = { dim: Dim; div: number };

/**
 * Parses a plan grid entry: a DimJSON (`1024`, `s0*12`) or `cdiv(<dim>,<n>)`, meaning
 * ceil(dim / n). Throws ShapeError for anything else.
 */
export function parseGridDim(x: number | string): GridDim {
  const m = typeof x === 'string' ? /^\s*cdiv\((.+),\s*(\d+)\s*\)\s*$/.exec(x) : null;
  if (!m) return { dim: parseDim(x), div: 1 };
  const div = Number(m[2]);
  if (!(div >= 1)) throw new ShapeError('KILN_BAD_DIM', `grid dim ${x} divides by ${div}`);
  return { dim: parseDim(m[1]), div };
}

/** The value of a grid dim for symbol values. */
export function evalGridDim(g: GridDim, values: Readonly<Record<string, number>>): number {
  return Math.ceil(evalDim(g.dim, values) / g.div);
}

const MAX_BINDINGS = 64;
const offsetOf = (offsets: ArenaLayout['offsets'], id: number): number | undefined =>
  offsets instanceof Map ? offsets.get(id) : (offsets as Record<number, number>)[id];

/**
 * A loaded CUDA program. `run` may be called concurrently: calls queue on one stream, each
 * with its own outputs, sharing the temp arena in stream order.
 */
export class CudaProgram {
  readonly plan: LaunchPlan;
  readonly device: number;
  readonly executor: PlanExecutor;
  readonly #module: CudaModule;
  readonly #symbols: readonly SymbolBinding[];
  /** Per plan symbol, its index in #symbols. */
  readonly #planSymbols: number[];
  readonly #layout: ArenaLayoutFn;
  readonly #elems: Dim[] = [];
  readonly #grids: GridDim[][];
  readonly #outShapes: Dim[][];
  readonly #numBuffers: number;
  // The plan's buffers by role (ids), and what each output of a call is made of.
  readonly #inputs: { id: number; index: number; dtype: DType }[] = [];
  readonly #fresh: number[] = [];
  readonly #temps: number[] = [];
  readonly #outputs: OutputPlan[];
  /** The outputs that are copied, by their index in plan.outputs. */
  readonly #copied: number[] = [];
  /** Fresh output buffers no plan output names: freed once the launches are queued. */
  readonly #unclaimed: number[];
  readonly #consts = new Map<number, DeviceBuffer>();
  readonly #bindings = new Map<string, Binding>();
  #last: Binding | undefined;
  readonly #values: number[]; // scratch: this call's symbol values, by #symbols index
  // Scratch pointer list: filled and read by the executor within one synchronous stretch.
  readonly #ptrs: BigUint64Array;
  readonly #graphs: boolean;
  #arena: DeviceBuffer | undefined;
  #disposed = false;

  /** Loads `image` (cubin or PTX), checks the plan against it and uploads the constants. */
  static async load(image: Uint8Array, parts: CudaProgramParts): Promise<CudaProgram> {
    const program = new CudaProgram(image, parts);
    try {
      await program.#uploadConstants(parts.constants);
    } catch (e) {
      program.dispose();
      throw e;
    }
    return program;
  }

  private constructor(image: Uint8Array, parts: CudaProgramParts) {
    const plan = parts.plan;
    this.plan = plan;
    this.device = parts.device ?? 0;
    this.#symbols = parts.symbols;
    this.#layout = parts.layout;
    this.#graphs = parts.graphs ?? true;
    this.#planSymbols = plan.symbols.map((name) => {
      const i = parts.symbols.findIndex((s) => s.name === name);
      if (i < 0) throw internal(`plan symbol ${name} has no binding to an input dim`);
      return i;
    });
    this.#values = parts.symbols.map(() => 0);
    for (const b of plan.buffers) {
      this.#elems[b.id] = parseDim(b.elems);
      if (b.role === 'input') this.#inputs.push({ id: b.id, index: Number(b.source), dtype: b.dtype });
      else if (b.role === 'output') this.#fresh.push(b.id);
      else if (b.role === 'temp') this.#temps.push(b.id);
    }
    this.#numBuffers = this.#elems.length;
    const claimed = new Set<number>();
    this.#outputs = plan.outputs.map((o, i) => {
      const fresh = this.#fresh.includes(o.buffer) && !claimed.has(o.buffer);
      claimed.add(o.buffer);
      if (!fresh) this.#copied.push(i);
      return { buffer: o.buffer, dtype: o.dtype, slot: fresh ? -1 : this.#numBuffers + this.#copied.length - 1 };
    });
    this.#unclaimed = this.#fresh.filter((id) => !claimed.has(id));
    this.#ptrs = new BigUint64Array(this.#numBuffers + this.#copied.length);
    this.#outShapes = plan.outputs.map((o) => o.shape.map(parseDim));
    this.#grids = plan.steps.map((s, i) => {
      if (!s.grid || !s.block) throw internal(`step ${i} (${s.kernel}) has no grid/block: was the plan scheduled for the CPU?`);
      return s.grid.map(parseGridDim);
    });
    this.#module = new CudaModule(image, this.device);
    try {
      const steps = plan.steps.map((s) => ({ kernel: s.kernel, buffers: s.buffers, block: s.block ?? [], sharedBytes: s.sharedBytes ?? 0 }));
      const copies = this.#copied.map((i) => ({ dst: this.#outputs[i].slot, src: this.#outputs[i].buffer }));
      this.executor = new PlanExecutor(this.#module, { numBuffers: this.#ptrs.length, numSymbols: plan.symbols.length, steps, copies });
    } catch (e) {
      this.#module.unload();
      throw e;
    }
  }

  async #uploadConstants(constants: ReadonlyMap<string, Constant>): Promise<void> {
    const uploads: Promise<void>[] = [];
    for (const b of this.plan.buffers) {
      if (b.role !== 'const') continue;
      const c = constants.get(String(b.source));
      const n = c ? c.shape.reduce((a, d) => a * d, 1) : -1;
      if (!c || c.dtype !== b.dtype || !isStorageOf(c.dtype, c.data) || c.data.length !== n || this.#elems[b.id] !== n) {
        throw internal(`constant ${String(b.source)} is missing or does not fit plan buffer ${b.id} (${b.dtype}, ${b.elems} elements)`);
      }
      const buf = new DeviceBuffer(Math.max(n * ITEMSIZE[b.dtype], 1), this.device);
      this.#consts.set(b.id, buf);
      this.#ptrs[b.id] = buf.ptr; // constants never move
      if (n > 0) uploads.push(buf.write(c.data));
    }
    await Promise.all(uploads);
  }

  /** Counters of the executor: runs, graph captures and replays, host time per run. */
  stats(): ExecutorStats {
    return this.executor.stats();
  }

  /**
   * Runs the plan; resolves when the GPU is done, with one DeviceTensor per plan output
   * (the caller owns and disposes them). Host inputs are uploaded first and freed after.
   * Device inputs are pinned when `run` is called (`pinInputs`): disposing one before the
   * launches are queued (while host inputs upload) frees it after they are. Every error,
   * wrong inputs included, rejects the returned Promise.
   */
  run(inputs: readonly ProgramInput[], opts: { graphs?: boolean } = {}): Promise<DeviceTensor[]> {
    // Not an async function: with device inputs only, the call is synchronous up to the
    // executor and its Promise is a reaction on the executor's (see docs/CUDA.md §6).
    try {
      if (this.#disposed) throw new ArgumentError('KILN_DISPOSED', 'this CUDA program was disposed');
      let uploads = false;
      for (let i = 0; i < inputs.length; i++) {
        const x = inputs[i];
        if (!(x instanceof DeviceTensor)) uploads = true;
        else if (x.disposed) throw new ArgumentError('KILN_DISPOSED', `input ${i} was disposed`);
      }
      const b = this.#bind(inputs);
      if (uploads && this.#inputs.some(({ index }) => !(inputs[index] instanceof DeviceTensor))) {
        return this.#runWithUploads(inputs, b, opts.graphs ?? this.#graphs);
      }
      // Nothing is awaited before the launches are queued, so no input needs a pin.
      return this.#launch(inputs, b, opts.graphs ?? this.#graphs, []);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** `run` with host inputs: uploads them (awaited), then launches as `run` does. */
  async #runWithUploads(inputs: readonly ProgramInput[], b: Binding, graphs: boolean): Promise<DeviceTensor[]> {
    const held = pinInputs(inputs);
    const uploaded: DeviceBuffer[] = [];
    try {
      // Uploads are awaited, and nothing else may be placed before that await (a concurrent
      // call could grow the arena or recycle blocks meanwhile).
      const uploads: Promise<void>[] = [];
      for (const { id, index } of this.#inputs) {
        const x = held[index];
        if (x instanceof DeviceTensor) continue;
        const buf = new DeviceBuffer(Math.max(b.bytes[id], 1), this.device);
        uploaded.push(buf);
        if (b.bytes[id] > 0) uploads.push(buf.write(x.data));
      }
      if (uploads.length > 0) await Promise.all(uploads);
      if (this.#disposed) throw new ArgumentError('KILN_DISPOSED', 'this CUDA program was disposed during the call');
      const done = this.#launch(held, b, graphs, uploaded);
      unpinInputs(held); // the launches are queued: a dispose the pins deferred happens now
      return await done;
    } catch (e) {
      for (const buf of uploaded) buf.dispose(); // idempotent: #launch may have freed them
      throw e;
    } finally {
      unpinInputs(held); // idempotent
    }
  }

  /**
   * Places every buffer, allocates the outputs (fresh buffers and the copies' blocks), queues
   * the launches and copies, and returns the outputs' Promise; synchronous up to that (a
   * failure frees what it allocated). `uploaded` are the blocks holding the host inputs, in
   * #inputs order of the host ones.
   */
  #launch(inputs: readonly ProgramInput[], b: Binding, graphs: boolean, uploaded: DeviceBuffer[]): Promise<DeviceTensor[]> {
    const ptrs = this.#ptrs;
    const owned: DeviceBuffer[] = []; // by pointer slot: this call's fresh buffers and copies
    let done: Promise<void>;
    try {
      let up = 0;
      for (const { id, index } of this.#inputs) {
        const x = inputs[index];
        ptrs[id] = x instanceof DeviceTensor ? x.buffer.ptr : uploaded[up++].ptr;
      }
      for (const id of this.#fresh) {
        const buf = new DeviceBuffer(Math.max(b.bytes[id], 1), this.device);
        owned[id] = buf;
        ptrs[id] = buf.ptr;
      }
      for (let j = 0; j < this.#copied.length; j++) {
        const slot = this.#outputs[this.#copied[j]].slot;
        const buf = new DeviceBuffer(Math.max(Number(b.copyBytes[j]), 1), this.device);
        owned[slot] = buf;
        ptrs[slot] = buf.ptr;
      }
      if (this.#temps.length > 0) {
        const arena = this.#arenaOf(b.arenaBytes).ptr;
        for (let t = 0; t < this.#temps.length; t++) ptrs[this.#temps[t]] = arena + b.tempOffsets[t];
      }
      done = this.executor.run(ptrs, b.syms, b.grids, graphs, b.copyBytes);
    } catch (e) {
      for (const buf of owned) buf?.dispose();
      throw e;
    }
    const result: DeviceTensor[] = [];
    for (let i = 0; i < this.#outputs.length; i++) {
      const o = this.#outputs[i];
      result.push(new DeviceTensor(o.dtype, b.outShapes[i], owned[o.slot < 0 ? o.buffer : o.slot]));
    }
    // Stream order makes freeing now safe: a block is reused only by work queued later.
    for (const id of this.#unclaimed) owned[id].dispose();
    for (const buf of uploaded) buf.dispose();
    return done.then(
      () => result,
      (e: unknown) => {
        for (const t of result) t.dispose();
        throw e;
      },
    );
  }

  /** The program's temp arena, grown when a call needs more. */
  #arenaOf(bytes: number): DeviceBuffer {
    if (!this.#arena || this.#arena.bytes < bytes) {
      this.#arena?.dispose(); // stream order: runs already queued finish with it first
      this.#arena = new DeviceBuffer(Math.max(bytes, 1), this.device);
    }
    return this.#arena;
  }

  /** Symbol values from the input shapes, checked, and what depends on them (cached); checks the inputs. */
  #bind(inputs: readonly ProgramInput[]): Binding {
    const values = this.#values;
    for (let k = 0; k < this.#symbols.length; k++) {
      const s = this.#symbols[k];
      let first = NaN; // the value of the first source, s.sources[0]
      for (const { input, dim } of s.sources) {
        const value = inputs[input]?.shape[dim];
        if (value === undefined) throw new ShapeError('KILN_INPUT_SHAPE', `input ${input} has no dim ${dim}, which carries the dynamic size ${s.name}`);
        if (Number.isNaN(first)) first = value;
        else if (value !== first) {
          const { input: i0, dim: d0 } = s.sources[0];
          throw new ShapeError('KILN_DYNAMIC_DIM_MISMATCH', `input ${input} dim ${dim} is ${value} but input ${i0} dim ${d0} is ${first}; both are the dynamic size ${s.name}`);
        }
      }
      values[k] = first;
    }
    const b = this.#bindingFor(values);
    for (const { id, index, dtype } of this.#inputs) {
      const x = inputs[index];
      if (!x) throw new ArgumentError('KILN_INPUT_COUNT', `the program reads input ${index}, but only ${inputs.length} were given`);
      let n = 1;
      for (let j = 0; j < x.shape.length; j++) n *= x.shape[j];
      const isDevice = x instanceof DeviceTensor;
      if (x.dtype !== dtype || n !== b.elems[id] || !(isDevice || (isStorageOf(dtype, x.data) && x.data.length === n))) {
        const data = isDevice ? '' : ` with ${x.data.constructor.name}(${x.data.length}) data`;
        throw new ShapeError('KILN_INPUT_SHAPE', `input ${index} must be ${dtype} with ${b.elems[id]} elements; got ${x.dtype}[${x.shape.join(',')}]${data}`);
      }
      if (isDevice && x.device !== this.device) throw new ArgumentError('KILN_INPUT_DEVICE', `input ${index} is on device ${x.device}, the program on ${this.device}`);
    }
    return b;
  }

  /** The binding for symbol values (by #symbols index): the last call's, a cached one, or a new one. */
  #bindingFor(values: readonly number[]): Binding {
    const planSymbols = this.#planSymbols;
    const last = this.#last;
    if (last) {
      let j = 0;
      while (j < planSymbols.length && values[planSymbols[j]] === last.key[j]) j++;
      if (j === planSymbols.length) return last;
    }
    const key = planSymbols.map((k) => values[k]);
    const text = key.join(',');
    let b = this.#bindings.get(text);
    if (!b) {
      const record: Record<string, number> = {};
      this.#symbols.forEach((s, k) => {
        if (!Number.isNaN(values[k])) record[s.name] = values[k];
      });
      b = this.#resolve(record, key);
      if (this.#bindings.size >= MAX_BINDINGS) this.#bindings.delete(this.#bindings.keys().next().value as string);
      this.#bindings.set(text, b);
    }
    this.#last = b;
    return b;
  }

  #resolve(values: Record<string, number>, key: number[]): Binding {
    const plan = this.plan;
    const elems = this.#elems.map((d) => (d === undefined ? 0 : evalDim(d, values)));
    const bytes: number[] = [];
    for (const pb of plan.buffers) bytes[pb.id] = elems[pb.id] * ITEMSIZE[pb.dtype];
    const grids = new Uint32Array(3 * plan.steps.length);
    this.#grids.forEach((grid, i) => {
      for (let j = 0; j < 3; j++) {
        const v = j < grid.length ? evalGridDim(grid[j], values) : 1;
        if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) throw internal(`step ${i}'s grid dim ${j} evaluates to ${v}`);
        if (j > 0 && v > 65535) {
          const sizes = Object.entries(values).map(([n, x]) => `${n}=${x}`).join(', ');
          throw new CudaError(
            'KILN_CUDA_LAUNCH_CONFIG',
            `kernel ${plan.steps[i].kernel} would need ${v} blocks along grid.${'xyz'[j]} (at most 65535)${sizes ? ` at ${sizes}` : ''}: ` +
              "a matmul's column tiles ride on grid.y and its batch on grid.z; call with fewer columns or a smaller batch (split the input), or use device: 'cpu'",
          );
        }
        grids[3 * i + j] = v;
      }
    });
    const layout = this.#temps.length > 0 ? this.#layout(plan, values) : { offsets: [], bytes: 0 };
    const tempOffsets = this.#temps.map((id) => {
      const offset = offsetOf(layout.offsets, id);
      if (offset === undefined || offset % 64 !== 0 || offset + bytes[id] > layout.bytes) {
        throw internal(`arena layout places temp buffer ${id} (${bytes[id]} bytes) at ${offset} in ${layout.bytes} bytes`);
      }
      return BigInt(offset);
    });
    const syms = BigInt64Array.from(plan.symbols, (n) => BigInt(values[n]));
    const outShapes = this.#outShapes.map((s) => s.map((d) => evalDim(d, values)));
    const copyBytes = BigUint64Array.from(this.#copied, (i) => {
      const n = outShapes[i].reduce((a, d) => a * d, 1) * ITEMSIZE[plan.outputs[i].dtype];
      const from = plan.outputs[i].buffer;
      // The executor copies without a range check of its own: the plan must not ask for more.
      if (n > bytes[from]) throw internal(`output ${i} (${n} bytes) is larger than its buffer ${from} (${bytes[from]} bytes)`);
      return BigInt(n);
    });
    return { syms, key, elems, bytes, grids, arenaBytes: layout.bytes, tempOffsets, outShapes, copyBytes };
  }

  /** Frees the constants, the arena and the cached graphs, and unloads the module. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.executor?.dispose();
    for (const buf of this.#consts.values()) buf.dispose();
    this.#arena?.dispose();
    this.#module.unload();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

function internal(msg: string): KilnError {
  return new KilnError('KILN_INTERNAL', `CUDA program: ${msg}`);
}
