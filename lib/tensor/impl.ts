/**
 * What a Tensor holds, and the single point where primitive ops are applied. An eager
 * value holds concrete storage and is computed at once by the interpreter's `evalOp`; a
 * traced value holds an IR node of the Tracer it belongs to. `apply` validates through the
 * IR's `inferOp` in both modes, so eager and traced programs fail (and compute) alike.
 */
import { ArgumentError, ShapeError, TraceError } from '../util/errors';
import {
  constantKey,
  type CapturedTensor,
  decodeStorage,
  encodeStorage,
  inferOp,
  NodeTable,
  dimStr,
  shapeStr,
  type Constant,
  type Dim,
  type DType,
  type Hint,
  type Node,
  type Op,
  type OpArgs,
  type ShapeGuard,
  type Site,
  type Storage,
} from '../ir';
import type { DeviceTensor } from '../runtime/cuda';
import { evalOp } from '../runtime/interpreter';
import { upload } from './device';
import { userSites } from './site';

/**
 * The device a tensor belongs to. A 'cuda' tensor's data is in GPU memory where a GPU was
 * found, else on the host; eager ops on either are computed on the host by the interpreter.
 */
export type Device = 'cpu' | 'cuda';

// Creation numbers of eager tensors: a count, not dispatch state. A trace notes the count
// when it starts, so it can tell tensors captured from the traced function's closure (made
// before) from tensors its body makes (docs/BUNDLES.md, "What the key does not see").
let eagerCount = 0;

/** The creation number the next new eager tensor gets. */
export function nextEagerNumber(): number {
  return eagerCount;
}

const NO_STORAGE = new Uint8Array(0);

/**
 * A concrete tensor: storage in its dtype's typed array, and for a 'cuda' tensor, or only,
 * its data in GPU memory (`gpu`). Values are immutable, so a host copy and a GPU copy of one
 * tensor never disagree: whichever is missing is made from the other when first needed
 * (a download for an eager op, an upload when a compiled function reads it) and kept.
 */
export class EagerImpl {
  readonly kind = 'eager';
  /**
   * Creation number of the oldest tensor this value's data came from: a fresh number for a
   * new tensor, the smallest of its operands' for an op's result (`w.transpose(0, 1)` inside
   * a traced function is as old as `w`).
   */
  readonly born: number;
  // Disposed exactly when both are null: a tensor in GPU memory may have no host copy.
  #storage: Storage | null;
  #gpu: DeviceTensor | null = null;

  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly device: Device,
    storage: Storage,
    born?: number,
  ) {
    this.#storage = storage;
    this.born = born ?? eagerCount++;
  }

  /** A 'cuda' tensor whose data is `t`'s device memory (it takes ownership of `t`). */
  static onGpu(t: DeviceTensor, born?: number): EagerImpl {
    const impl = new EagerImpl(t.dtype, [...t.shape], 'cuda', NO_STORAGE, born);
    impl.#storage = null; // downloaded when first read
    impl.#gpu = t;
    return impl;
  }

  /**
   * The storage; throws if disposed. Treat as read-only: it may be shared by views. For a
   * tensor in GPU memory the first read downloads it (blocking) and keeps the host copy.
   */
  get storage(): Storage {
    const s = this.#storage;
    if (s !== null) return s;
    return this.#download();
  }

  #download(): Storage {
    const gpu = this.#gpu;
    if (gpu === null) throw new ArgumentError('KILN_DISPOSED', 'this tensor was disposed and its data released');
    if (gpu.disposed) throw new ArgumentError('KILN_DISPOSED', "this tensor's device memory was released");
    const s = gpu.toHostSync().data;
    this.#storage = s;
    return s;
  }

  get disposed(): boolean {
    return this.#storage === null && this.#gpu === null;
  }

  /** The host copy if there is one (no download). */
  get hostStorage(): Storage | null {
    return this.#storage;
  }

  /** The data in GPU memory, if it is there (no upload). */
  get gpu(): DeviceTensor | null {
    return this.#gpu;
  }

  /**
   * The data in GPU memory, uploaded now (blocking) and kept when it is only on the host;
   * null for a cpu tensor or where there is no GPU.
   */
  placeOnGpu(): DeviceTensor | null {
    if (this.device !== 'cuda') return null;
    if (this.#gpu === null && this.#storage !== null) this.#gpu = upload(this.dtype, this.shape, this.#storage);
    return this.#gpu;
  }

  /** Drops the host copy of a tensor that is in GPU memory (at creation: the data lives there). */
  releaseHost(): void {
    if (this.#gpu !== null) this.#storage = null;
  }

  /** Element values in float64. */
  values(): Float64Array {
    return decodeStorage(this.dtype, this.storage);
  }

  /** Releases the host data and frees the device memory now; idempotent. */
  dispose(): void {
    this.#storage = null;
    const gpu = this.#gpu;
    this.#gpu = null;
    gpu?.dispose();
  }
}

/** A tensor inside a trace: an IR node owned by `tracer`. */
export class TracedImpl {
  readonly kind = 'traced';
  constructor(
    readonly node: Node,
    readonly tracer: Tracer,
    readonly device: Device,
  ) {}
  get dtype(): DType {
    return this.node.dtype;
  }
  get shape(): readonly Dim[] {
    return this.node.shape;
  }
}

/** Either kind of tensor value. */
export type Impl = EagerImpl | TracedImpl;

/**
 * The state of one trace: its node table, captured constants and call sites. Created by
 * `trace` and passed along inside traced tensors (never global); closed when the traced
 * function returns, after which its tensors can no longer be used.
 */
export class Tracer {
  readonly table = new NodeTable();
  readonly constants = new Map<string, Constant>();
  readonly sites = new Map<Node, Site>();
  /** Every user file on the stack of a traced op, up to the trace (what bundles guard on). */
  readonly files = new Set<string>();
  /** Conditions on dynamic sizes that traced ops relied on. */
  readonly guards: ShapeGuard[] = [];
  /** Constants from tensors older than the trace: captured from the closure, not made by the function. */
  readonly captured: CapturedTensor[] = [];
  readonly #captured = new WeakMap<EagerImpl, Node>();
  // Eager tensors numbered below this existed before the trace began.
  readonly #start = nextEagerNumber();
  #closed = false;

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#closed = true;
  }

  /** The INPUT node for argument `index`. */
  input(index: number, dtype: DType, shape: readonly Dim[], device: Device): TracedImpl {
    return new TracedImpl(this.table.make('INPUT', [], index, { dtype, shape }), this, device);
  }

  /** A concrete tensor used inside the trace becomes a TENSOR_CONST (its data is copied in). */
  capture(e: EagerImpl): Node {
    const hit = this.#captured.get(e);
    if (hit) return hit;
    const data = e.storage.slice(); // snapshot: later changes to the eager tensor cannot leak in
    const key = constantKey(e.dtype, e.shape, data);
    if (!this.constants.has(key)) this.constants.set(key, { dtype: e.dtype, shape: [...e.shape], data });
    const node = this.table.make('TENSOR_CONST', [], key, { dtype: e.dtype, shape: e.shape });
    this.#captured.set(e, node);
    if (e.born < this.#start) this.captured.push({ dtype: e.dtype, shape: [...e.shape], key });
    return node;
  }

  /** Require a condition on the dynamic sizes (once per distinct condition). */
  guard(g: ShapeGuard): void {
    const same = (h: ShapeGuard): boolean => dimStr(h.dim) === dimStr(g.dim) && h.min === g.min && h.max === g.max;
    if (!this.guards.some(same)) this.guards.push(g);
  }

  /** Record the user's call site for a node made by a traced op (the first site wins) and the files the call went through. */
  record(node: Node): void {
    if (node.op === 'INPUT') return;
    // An op interned earlier still counts for the files of this path to it.
    const sites = userSites(true);
    if (sites.length && !this.sites.has(node)) this.sites.set(node, sites[0]);
    for (const s of sites) this.files.add(s.file);
  }
}

function tracerOf(values: readonly Impl[]): Tracer | undefined {
  let tracer: Tracer | undefined;
  for (const v of values) {
    if (v.kind !== 'traced') continue;
    if (v.tracer.closed) {
      throw new TraceError('KILN_TRACE_CLOSED', 'this tensor belongs to a finished trace; traced tensors cannot be used outside the function being compiled');
    }
    if (tracer && tracer !== v.tracer) throw new TraceError('KILN_TRACE_MIXED', 'tensors from two different traces were mixed in one op');
    tracer = v.tracer;
  }
  return tracer;
}

/**
 * The values in one mode: when any is traced, concrete ones become constants of that
 * trace, so that ops on them (reshapes, broadcasts to symbolic shapes) are traced too.
 */
export function lift(values: readonly Impl[]): Impl[] {
  const tracer = tracerOf(values);
  if (!tracer) return [...values];
  return values.map((v) => (v.kind === 'traced' ? v : new TracedImpl(tracer.capture(v), tracer, v.device)));
}

/**
 * Apply a primitive op. `like` gives the mode (eager or the trace) and device when there
 * are no sources (CONST). Throws ShapeError for invalid operands, in both modes.
 */
export function apply<O extends Op>(op: O, src: readonly Impl[], arg: OpArgs[O], hint: Hint = {}, like?: Impl): Impl {
  const all = like ? [...src, like] : src;
  const tracer = tracerOf(all);
  const device = (src[0] ?? like)?.device ?? 'cpu';
  if (tracer) {
    const nodes = src.map((s) => (s.kind === 'traced' ? s.node : tracer.capture(s)));
    const node = tracer.table.make(op, nodes, arg, hint);
    tracer.record(node);
    return new TracedImpl(node, tracer, device);
  }
  const eager = src as readonly EagerImpl[];
  const mismatch = eager.find((s) => s.device !== device);
  if (mismatch) throw new ShapeError('KILN_DEVICE_MISMATCH', `${op}: tensors on ${device} and ${mismatch.device} were mixed`);
  const info = inferOp(op, eager, arg, hint);
  if (info.shape.some((d) => typeof d !== 'number')) {
    // Only a traced operand ties an op to a trace: a concrete tensor alone cannot take a
    // dynamic shape (e.g. capturedBias.expand(x.dims)).
    throw new TraceError(
      'KILN_SYMBOLIC_DIM',
      `${op}: a concrete tensor of shape ${shapeStr(eager[0]?.shape ?? [])} cannot take the dynamic shape ${shapeStr(info.shape)} on its own; ` +
        'combine it with a traced tensor instead (binary ops broadcast it: x.add(bias)), or pass it to the compiled function as an input',
    );
  }
  const shape = info.shape as readonly number[]; // eager shapes are always static
  // A result is as old as its oldest operand: derived from a captured tensor, it is captured too.
  const born = eager.length ? Math.min(...eager.map((s) => s.born)) : undefined;
  if (op === 'RESHAPE') return new EagerImpl(info.dtype, shape, device, eager[0].storage, born); // views share storage
  const data = evalOp(op, arg, info.dtype, shape, eager.map((s) => ({ shape: s.shape, data: s.values() })));
  return new EagerImpl(info.dtype, shape, device, encodeStorage(info.dtype, data), born);
}
