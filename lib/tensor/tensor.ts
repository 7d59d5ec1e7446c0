/**
 * The public Tensor class and `kiln.tensor`. A Tensor wraps an eager or traced value; every
 * method lowers to the same primitive ops either way. Errors from an op are re-labelled
 * with the public op's name and the user's call site (computed only when an error occurs).
 */
import { ArgumentError, KilnError, TraceError } from '../util/errors';
import { checkDType, encodeStorage, decodeStorage, Sym, symbolicDimError, type Dim, type DType, type Storage } from '../ir';
import type { DeviceTensor } from '../runtime/cuda';
import { EagerImpl, type Device, type Impl } from './impl';
import * as nn from './nn';
import * as ops from './ops';
import { callSite, siteStr } from './site';

/** A scalar operand. */
export type Scalar = number | boolean;
/** What `toArray()` resolves to: Float32Array for float dtypes, Int32Array, Uint8Array for bool. */
export type TensorArray = Float32Array | Int32Array | Uint8Array;

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The message without labels: leading `name: ` prefixes (in any case, so the primitive's
 * `EXPAND: ` goes with the public `expand`) and trailing ` (at file:line:col)` sites.
 */
function unlabelled(message: string, name: string): string {
  const prefix = new RegExp(`^(?:${escape(name)}: )+`, 'i');
  return message.replace(prefix, '').replace(/(?: \(at [^()]*:\d+:\d+\))+$/, '');
}

/**
 * Label an op error with the public op name and the user's call site, exactly once: the
 * innermost public op wins (kiln.softmax calling Tensor.softmax labels once), and the
 * labels live on the error (`op`, `site`), so no path can add them twice.
 */
function label(e: unknown, name: string): unknown {
  if (!(e instanceof KilnError) || e.op !== undefined) return e;
  const site = callSite();
  const old = e.message;
  const stack = e.stack; // read first: V8 formats the stack lazily, from the message at first access
  e.op = name;
  if (site) e.site = siteStr(site);
  e.message = `${name}: ${unlabelled(old, name)}${e.site ? ` (at ${e.site})` : ''}`;
  if (stack) e.stack = stack.replace(old, e.message);
  return e;
}

/** @internal Run a public op, labelling its errors. */
export function api<T>(name: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw label(e, name);
  }
}

/** @internal The value inside a tensor; ArgumentError for anything that is not a Tensor. */
export function implOf(t: unknown, what = 'argument'): Impl {
  if (!(t instanceof Tensor)) throw new ArgumentError('KILN_BAD_ARGUMENT', `${what} must be a kiln Tensor, got ${t === null ? 'null' : typeof t}`);
  return Tensor.unwrap(t);
}

/**
 * @internal Tensor or scalar operand. A symbolic dim (a dynamic `x.shape[i]` inside a trace)
 * has no number to use: TraceError KILN_SYMBOLIC_DIM, as for arithmetic on it.
 */
export function operand(x: unknown, what = 'operand'): ops.Operand {
  if (typeof x === 'number' || typeof x === 'boolean') return x;
  if (x instanceof Tensor) return Tensor.unwrap(x);
  if (x instanceof Sym) throw symbolicDimError(x);
  throw new ArgumentError('KILN_BAD_ARGUMENT', `${what} must be a kiln Tensor or a number, got ${described(x)}`);
}

/** A wrong value for a message: its type, and the value where it is short to show. */
function described(x: unknown): string {
  if (x === null || x === undefined) return String(x);
  if (typeof x === 'function') return 'a function';
  if (Array.isArray(x)) return `the array ${ops.show(x)}`;
  if (typeof x === 'object') {
    const cls = (Object.getPrototypeOf(x) as { constructor?: { name?: string } } | null)?.constructor?.name;
    return cls && cls !== 'Object' ? `a ${cls}` : `the object ${ops.show(x)}`;
  }
  return `the ${typeof x} ${ops.show(x)}`;
}

/** @internal Wrap a value as a public Tensor. */
export function wrap(impl: Impl): Tensor {
  return Tensor.wrap(impl);
}

function dimsArg(first: readonly Dim[] | Dim | undefined, rest: readonly Dim[]): Dim[] {
  if (Array.isArray(first)) return [...first];
  return first === undefined ? [...rest] : [first as Dim, ...rest];
}

/**
 * A shape argument of reshape/expand: an array or dims as arguments, each a safe integer or
 * a symbolic dim; anything else is ArgumentError KILN_BAD_SHAPE naming the dim and the value.
 */
function shapeArg(name: string, first: unknown, rest: readonly unknown[]): Dim[] {
  const dims = dimsArg(first as Dim, rest as Dim[]);
  dims.forEach((d, i) => {
    if (Number.isSafeInteger(d) || d instanceof Sym) return;
    throw new ArgumentError(
      'KILN_BAD_SHAPE',
      `dim ${i} of the shape is ${described(d)}; each dim must be an integer (-1 to infer one), or a dim of x.shape inside kiln.compile, e.g. x.${name}([2, -1])`,
    );
  });
  return dims;
}

/**
 * A tensor: eager (concrete data, computed at once by kiln's reference interpreter) or
 * traced (a node of a program being compiled). Create eager tensors with `kiln.tensor`.
 * An eager tensor's data is host memory, or GPU memory for a 'cuda' tensor where a GPU was
 * found (see `isOnGpu`; README.md, "Where a tensor's data lives").
 */
export class Tensor {
  readonly #impl: Impl;

  private constructor(impl: Impl) {
    this.#impl = impl;
  }

  /** @internal */
  static wrap(impl: Impl): Tensor {
    return new Tensor(impl);
  }

  /** @internal */
  static unwrap(t: Tensor): Impl {
    return t.#impl;
  }

  /**
   * Sizes of the dims. Inside a trace a dynamic dim is a symbolic dim object: pass it on to
   * reshape/expand as is; using it as a number throws TraceError (see `dims`).
   */
  get shape(): number[] {
    return [...this.#impl.shape] as number[];
  }
  /** Sizes of the dims, typed honestly: numbers, or symbolic dims inside a trace. */
  get dims(): Dim[] {
    return [...this.#impl.shape];
  }
  /** Number of dims. */
  get ndim(): number {
    return this.#impl.shape.length;
  }
  get dtype(): DType {
    return this.#impl.dtype;
  }
  /** The device the tensor belongs to; `isOnGpu` tells whether a 'cuda' tensor's data is in GPU memory now. */
  get device(): Device {
    return this.#impl.device;
  }
  /** True inside `kiln.compile` tracing, where values are not available. */
  get isTraced(): boolean {
    return this.#impl.kind === 'traced';
  }

  /**
   * The elements in row-major order: Float32Array for float32/float16/bfloat16, Int32Array
   * for int32, Uint8Array (0/1) for bool. Throws TraceError at once for a traced tensor.
   */
  toArray(): Promise<TensorArray> {
    const impl = this.#impl;
    if (impl.kind === 'traced') {
      throw new TraceError(
        'KILN_TRACED_READ',
        'cannot read values of a traced tensor inside kiln.compile: data-dependent control flow is not supported; ' +
          'compute the whole result with tensor ops (kiln.where for conditionals) and read it after the call',
      );
    }
    const gpu = impl.gpu;
    if (impl.hostStorage === null && gpu && !gpu.disposed) return readGpu(gpu); // off the JS thread
    return Promise.resolve(hostArray(impl.dtype, impl.storage));
  }

  /**
   * True when the data is in GPU memory: a 'cuda' tensor made where a GPU was found, or a
   * compiled function's CUDA output. False for cpu tensors, for traced and disposed ones, and
   * for 'cuda' tensors whose data is on the host (no GPU, or an eager op's result, which a
   * compiled function uploads the first time it reads it).
   */
  get isOnGpu(): boolean {
    const impl = this.#impl;
    return impl.kind === 'eager' && impl.gpu !== null && !impl.gpu.disposed;
  }

  /**
   * Release the data (eager): host memory to the garbage collector, device memory at once.
   * Idempotent; a no-op for traced tensors. Using the tensor afterwards throws.
   */
  dispose(): void {
    if (this.#impl.kind === 'eager') this.#impl.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** E.g. `Tensor(float32[2,3], cuda)`; notes `traced`, `disposed`, or `host` for a 'cuda' tensor not in GPU memory. */
  toString(): string {
    const impl = this.#impl;
    const gone = impl.kind === 'eager' && (impl.disposed || (impl.hostStorage === null && impl.gpu?.disposed));
    const note = impl.kind === 'traced' ? ', traced' : gone ? ', disposed' : impl.device === 'cuda' && !this.isOnGpu ? ', host' : '';
    return `Tensor(${this.dtype}[${impl.shape.map(String).join(',')}], ${this.device}${note})`;
  }

  add(other: Tensor | Scalar): Tensor { return bin('add', this, other); }
  sub(other: Tensor | Scalar): Tensor { return bin('sub', this, other); }
  mul(other: Tensor | Scalar): Tensor { return bin('mul', this, other); }
  div(other: Tensor | Scalar): Tensor { return bin('div', this, other); }
  pow(other: Tensor | Scalar): Tensor { return bin('pow', this, other); }
  maximum(other: Tensor | Scalar): Tensor { return bin('maximum', this, other); }
  minimum(other: Tensor | Scalar): Tensor { return bin('minimum', this, other); }
  eq(other: Tensor | Scalar): Tensor { return bin('eq', this, other); }
  ne(other: Tensor | Scalar): Tensor { return bin('ne', this, other); }
  lt(other: Tensor | Scalar): Tensor { return bin('lt', this, other); }
  le(other: Tensor | Scalar): Tensor { return bin('le', this, other); }
  gt(other: Tensor | Scalar): Tensor { return bin('gt', this, other); }
  ge(other: Tensor | Scalar): Tensor { return bin('ge', this, other); }

  neg(): Tensor { return un('neg', 'NEG', this); }
  abs(): Tensor { return un('abs', 'ABS', this); }
  exp(): Tensor { return un('exp', 'EXP', this); }
  log(): Tensor { return un('log', 'LOG', this); }
  sqrt(): Tensor { return un('sqrt', 'SQRT', this); }
  sin(): Tensor { return un('sin', 'SIN', this); }
  cos(): Tensor { return un('cos', 'COS', this); }
  tanh(): Tensor { return un('tanh', 'TANH', this); }
  erf(): Tensor { return un('erf', 'ERF', this); }
  reciprocal(): Tensor { return un('reciprocal', 'RECIP', this); }
  rsqrt(): Tensor { return api('rsqrt', () => wrap(ops.rsqrt(this.#impl))); }
  sigmoid(): Tensor { return api('sigmoid', () => wrap(nn.sigmoid(this.#impl))); }
  relu(): Tensor { return api('relu', () => wrap(nn.relu(this.#impl))); }
  silu(): Tensor { return api('silu', () => wrap(nn.silu(this.#impl))); }
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor { return api('gelu', () => wrap(nn.gelu(this.#impl, approximate))); }

  /** Convert to another dtype (returns this tensor when the dtype is unchanged). */
  to(dtype: DType): Tensor {
    return api('to', () => {
      const r = ops.to(this.#impl, dtype);
      return r === this.#impl ? this : wrap(r);
    });
  }

  sum(dim?: number | readonly number[], keepdim = false): Tensor { return api('sum', () => wrap(ops.sum(this.#impl, dim, keepdim))); }
  mean(dim?: number | readonly number[], keepdim = false): Tensor { return api('mean', () => wrap(ops.mean(this.#impl, dim, keepdim))); }
  /** Maximum values over dims (values only, no indices). */
  max(dim?: number | readonly number[], keepdim = false): Tensor { return api('max', () => wrap(ops.maxmin('max', this.#impl, dim, keepdim))); }
  /** Minimum values over dims (values only, no indices). */
  min(dim?: number | readonly number[], keepdim = false): Tensor { return api('min', () => wrap(ops.maxmin('min', this.#impl, dim, keepdim))); }
  softmax(dim = -1): Tensor { return api('softmax', () => wrap(nn.softmax(this.#impl, dim))); }
  logSoftmax(dim = -1): Tensor { return api('logSoftmax', () => wrap(nn.logSoftmax(this.#impl, dim))); }
  matmul(other: Tensor): Tensor { return api('matmul', () => wrap(ops.matmul(this.#impl, implOf(other)))); }

  /** New shape (an array, or dims as arguments); one dim may be -1. */
  reshape(shape: readonly Dim[] | Dim, ...rest: Dim[]): Tensor { return api('reshape', () => wrap(ops.reshape(this.#impl, shapeArg('reshape', shape, rest)))); }
  permute(dims: readonly number[] | number, ...rest: number[]): Tensor { return api('permute', () => wrap(ops.permute(this.#impl, dimsArg(dims, rest) as number[]))); }
  transpose(dim0: number, dim1: number): Tensor { return api('transpose', () => wrap(ops.transpose(this.#impl, dim0, dim1))); }
  /** Broadcast to a shape; -1 keeps a dim. */
  expand(shape: readonly Dim[] | Dim, ...rest: Dim[]): Tensor { return api('expand', () => wrap(ops.expand(this.#impl, shapeArg('expand', shape, rest)))); }
  unsqueeze(dim: number): Tensor { return api('unsqueeze', () => wrap(ops.unsqueeze(this.#impl, dim))); }
  squeeze(dim?: number | readonly number[]): Tensor { return api('squeeze', () => wrap(ops.squeeze(this.#impl, dim))); }
  flatten(startDim = 0, endDim = -1): Tensor { return api('flatten', () => wrap(ops.flatten(this.#impl, startDim, endDim))); }
  /** Elements start, start+step, … below end along `dim` (negative bounds count from the end). */
  slice(dim: number, start = 0, end?: number, step = 1): Tensor { return api('slice', () => wrap(ops.slice(this.#impl, dim, start, end, step))); }
}

function bin(name: ops.BinaryName, a: unknown, b: unknown): Tensor {
  return api(name, () => wrap(ops.binary(name, operand(a), operand(b))));
}

function un(name: string, op: 'NEG' | 'ABS' | 'EXP' | 'LOG' | 'SQRT' | 'SIN' | 'COS' | 'TANH' | 'ERF' | 'RECIP', x: unknown): Tensor {
  return api(name, () => wrap(ops.unary(name, op, implOf(x))));
}

/** kiln has no 64-bit integer dtype: bigint data is rejected rather than narrowed silently. */
function noBigInt(what: string): never {
  throw new ArgumentError(
    'KILN_BAD_ARGUMENT',
    `${what}, but kiln has no int64 dtype; convert to numbers first, e.g. kiln.tensor(Array.from(ids, Number), shape, 'int32') ` +
      '(token ids fit int32; values int32 cannot hold are reported, not wrapped)',
  );
}

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

/**
 * Throws unless every value converts to int32 without wrapping: NaN, ±Infinity and values
 * past the int32 range are ArgumentError KILN_SCALAR_OVERFLOW (as an int32 scalar operand
 * is). Finite in-range non-integers truncate toward zero, as PyTorch's torch.tensor does.
 */
function checkInt32(values: ArrayLike<number>): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v > INT32_MIN - 1 && v < INT32_MAX + 1) continue; // false for NaN
    throw new ArgumentError(
      'KILN_SCALAR_OVERFLOW',
      `element ${i} is ${v}, which int32 cannot represent (int32 holds integers from ${INT32_MIN} to ${INT32_MAX}; fractions in range truncate toward zero); ` +
        "use dtype 'float32' for such values, or fix the data",
    );
  }
}

/** What `toArray` resolves to for host storage: a copy, float16/bfloat16 widened to float32. */
function hostArray(dtype: DType, s: Storage): TensorArray {
  if (dtype === 'float16' || dtype === 'bfloat16') return Float32Array.from(decodeStorage(dtype, s));
  return s.slice() as TensorArray;
}

/** Downloads device data off the JS thread (the tensor keeps no host copy of it). */
async function readGpu(gpu: DeviceTensor): Promise<TensorArray> {
  const t = await gpu.toHost();
  return t.dtype === 'float16' || t.dtype === 'bfloat16' ? hostArray(t.dtype, t.data) : (t.data as TensorArray);
}

/** @internal Public binary op as a function of two operands (used by the module functions). */
export const binaryFn = (name: ops.BinaryName) => (a: Tensor | Scalar, b: Tensor | Scalar): Tensor => bin(name, a, b);
/** @internal Public unary op as a function. */
export const unaryFn = (name: string, op: 'NEG' | 'ABS' | 'EXP' | 'LOG' | 'SQRT' | 'SIN' | 'COS' | 'TANH' | 'ERF' | 'RECIP') => (x: Tensor): Tensor => un(name, op, x);

/**
 * Create an eager tensor from values (copied, and rounded to `dtype`), a shape, a dtype
 * (default float32) and a device ('cpu' default). A 'cuda' tensor is copied into GPU memory
 * now (blocking) and keeps no host copy, where a GPU is found; elsewhere it keeps its data
 * on the host (`isOnGpu` tells which). Eager ops on either are computed on the host by the
 * reference interpreter, downloading GPU data once. For int32, fractions truncate toward
 * zero, as in PyTorch; NaN, ±Infinity and values past the int32 range throw ArgumentError
 * KILN_SCALAR_OVERFLOW. bigint data (BigInt64Array) throws ArgumentError KILN_BAD_ARGUMENT:
 * kiln has no int64 dtype, so convert token ids with `Array.from(ids, Number)`.
 */
export function tensor(data: ArrayLike<number | boolean>, shape: readonly number[], dtype: DType = 'float32', device: Device = 'cpu'): Tensor {
  return api('tensor', () => {
    const dt = checkDType(dtype);
    if (device !== 'cpu' && device !== 'cuda') throw new ArgumentError('KILN_BAD_DEVICE', `device must be 'cpu' or 'cuda', got ${JSON.stringify(device)}`);
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new ArgumentError('KILN_BAD_SHAPE', `shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (data === null || typeof data !== 'object' || typeof data.length !== 'number') {
      throw new ArgumentError('KILN_BAD_ARGUMENT', 'data must be an array or typed array of numbers');
    }
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) {
      throw new ArgumentError('KILN_BAD_SHAPE', `data has ${data.length} elements but shape [${shape.join(',')}] needs ${n}`);
    }
    if (data instanceof BigInt64Array || data instanceof BigUint64Array) noBigInt(`data is a ${data.constructor.name}`);
    let values: ArrayLike<number>;
    if (ArrayBuffer.isView(data)) values = data as ArrayLike<number>;
    else {
      // A plain loop: Float64Array.from(data, Number) calls a global per element (slow under Jest).
      const f = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const v: unknown = data[i];
        if (typeof v === 'bigint') noBigInt(`data[${i}] is the bigint ${v}n`);
        f[i] = +(v as number);
      }
      values = f;
    }
    if (dt === 'int32' && !(values instanceof Int32Array)) checkInt32(values);
    const impl = new EagerImpl(dt, [...shape], device, encodeStorage(dt, values));
    if (impl.placeOnGpu()) impl.releaseHost(); // the data lives on the GPU now
    return wrap(impl);
  });
}
