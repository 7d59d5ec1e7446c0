/**
 * The API layer's bridge between public Tensors and the engine's raw tensors, and the
 * call into the tracer. Everything compile.ts needs from lib/tensor goes through here.
 */
import type { Graph } from '../ir/graph';
import type { RawTensor } from '../engine';
import type { Backend } from '../runtime/select';
import { EagerImpl } from '../tensor/impl';
import { Tensor } from '../tensor/tensor';
import { trace } from '../tensor/trace';
import { ArgumentError, TraceError } from '../util/errors';

export { Tensor } from '../tensor/tensor';

/** Input `index` of a call as a raw tensor; errors name the input. */
export function rawInput(fnName: string, x: unknown, index: number): RawTensor {
  if (!(x instanceof Tensor)) {
    const got = x === null ? 'null' : Array.isArray(x) ? 'an array' : typeof x;
    throw new ArgumentError('KILN_INPUT_TYPE', `${fnName}: input ${index} must be a kiln Tensor (kiln.tensor(data, shape)), got ${got}`);
  }
  const impl = Tensor.unwrap(x);
  if (impl.kind === 'traced') {
    throw new TraceError('KILN_NESTED_COMPILE', `${fnName}: a compiled function cannot be called inside another function being traced; call the plain function instead`);
  }
  if (impl.disposed) throw new ArgumentError('KILN_DISPOSED', `${fnName}: input ${index} was disposed`);
  return { dtype: impl.dtype, shape: [...impl.shape], data: impl.storage };
}

/** A program output as a public Tensor on `device` (it takes ownership of the data). */
export function tensorFromRaw(t: RawTensor, device: Backend): Tensor {
  return Tensor.wrap(new EagerImpl(t.dtype, t.shape, device, t.data));
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
