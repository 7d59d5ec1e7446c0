/**
 * The API layer's bridge between public Tensors and the engine's raw tensors, and the
 * call into the tracer. Everything compile.ts needs from lib/tensor goes through here.
 */
import type { Graph } from '../ir/graph';
import type { RawTensor } from '../engine';
import type { DeviceTensor, ProgramInput } from '../runtime/cuda';
import type { Backend } from '../runtime/select';
import { EagerImpl } from '../tensor/impl';
import { Tensor } from '../tensor/tensor';
import { trace } from '../tensor/trace';
import { ArgumentError, TraceError } from '../util/errors';

export { Tensor } from '../tensor/tensor';

/** The eager value of input `index` of a call; typed errors name the input. */
function inputImpl(fnName: string, x: unknown, index: number): EagerImpl {
  if (!(x instanceof Tensor)) {
    const got = x === null ? 'null' : Array.isArray(x) ? 'an array' : typeof x;
    throw new ArgumentError('KILN_INPUT_TYPE', `${fnName}: input ${index} must be a kiln Tensor (kiln.tensor(data, shape)), got ${got}`);
  }
  const impl = Tensor.unwrap(x);
  if (impl.kind === 'traced' && impl.tracer.closed) {
    throw new TraceError('KILN_TRACE_CLOSED', `${fnName}: input ${index} belongs to a finished trace; traced tensors cannot be used outside the function being compiled`);
  }
  if (impl.kind === 'traced') {
    throw new TraceError('KILN_NESTED_COMPILE', `${fnName}: a compiled function cannot be called inside another function being traced; call the plain function instead`);
  }
  if (impl.disposed || impl.gpu?.disposed) throw new ArgumentError('KILN_DISPOSED', `${fnName}: input ${index} was disposed`);
  return impl;
}

/**
 * Refuses, synchronously, a call of a compiled function inside another function being
 * traced (an argument is a tensor of a trace still open): TraceError KILN_NESTED_COMPILE
 * thrown into that trace fails it, so the outer compiled function's call rejects with it.
 * A tensor of a finished trace goes on to the call, which rejects with KILN_TRACE_CLOSED. Found only once
 * the call is awaited, it would be a Promise the traced function never awaits.
 */
export function refuseTraced(fnName: string, args: readonly unknown[]): void {
  for (const x of args) {
    const impl = x instanceof Tensor ? Tensor.unwrap(x) : undefined;
    if (impl?.kind === 'traced' && !impl.tracer.closed) {
      throw new TraceError('KILN_NESTED_COMPILE', `${fnName}: a compiled function cannot be called inside another function being traced; call the plain function instead`);
    }
  }
}

/**
 * Input `index` of a call as a raw (host) tensor; errors name the input. A tensor in GPU
 * memory is downloaded (once: the host copy is kept).
 */
export function rawInput(fnName: string, x: unknown, index: number): RawTensor {
  const impl = inputImpl(fnName, x, index);
  return { dtype: impl.dtype, shape: [...impl.shape], data: impl.storage };
}

/**
 * Input `index` of a call for a CUDA program: a 'cuda' tensor's DeviceTensor (the tensor
 * keeps owning it: the caller must not dispose it), else a RawTensor of the host data,
 * which the program uploads for the call. A 'cuda' tensor whose data is still on the host
 * (the result of an eager op) is uploaded here once, and the copy kept on the tensor; where
 * there is no GPU it stays a RawTensor. Errors as `rawInput`.
 */
export function programInput(fnName: string, x: unknown, index: number): ProgramInput {
  const impl = inputImpl(fnName, x, index);
  const gpu = impl.placeOnGpu();
  if (gpu) return gpu;
  return { dtype: impl.dtype, shape: [...impl.shape], data: impl.storage };
}

/** A program output as a public Tensor on `device` (it takes ownership of the data). */
export function tensorFromRaw(t: RawTensor, device: Backend): Tensor {
  return Tensor.wrap(new EagerImpl(t.dtype, t.shape, device, t.data));
}

/**
 * A CUDA program output as a public 'cuda' Tensor that owns `t`'s device memory: its
 * `dispose()` frees it, `toArray()` downloads it, eager ops download it once (blocking) and
 * keep the host copy. The garbage collector frees it if nobody disposes it.
 */
export function tensorFromDevice(t: DeviceTensor): Tensor {
  return Tensor.wrap(EagerImpl.onGpu(t));
}

/**
 * Traces `fn` for inputs shaped like `examples`; the dims listed in `dynamic` become symbols
 * (duck-sized: dynamic dims of equal example size share one).
 */
export function traceGraph(
  fn: (...args: Tensor[]) => unknown,
  examples: readonly { dtype: RawTensor['dtype']; shape: readonly number[] }[],
  dynamic: ReadonlyMap<number, readonly number[]>,
): Graph {
  return trace(fn, examples.map((e) => ({ shape: e.shape, dtype: e.dtype })), { dynamic });
}
