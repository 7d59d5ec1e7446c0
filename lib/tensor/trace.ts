/**
 * Tracing: run a user function on traced tensors and record the program it builds as a
 * Graph. Dynamic dims become symbols; as in PyTorch, dynamic dims with equal example sizes
 * share one symbol ("duck sizing"), and the runtime checks that they agree on every call.
 */
import { ArgumentError, TraceError } from '../util/errors';
import { checkDType, sym, type Dim, type DType, type Graph, type Node, type OutputStructure, type Sym, type SymbolBinding } from '../ir';
import { bindSymbols } from '../runtime/interpreter';
import { Tracer, type Device } from './impl';
import { implOf, Tensor, wrap } from './tensor';

/** One input of the traced function. */
export interface InputSpec {
  readonly shape: readonly number[];
  readonly dtype?: DType;
  readonly device?: Device;
}

/** Options of `trace`. */
export interface TraceOptions {
  /** Input index → its dynamic dims (negative dims count from the end), e.g. `{0: [0]}` (a Map works too). */
  readonly dynamic?: Readonly<Record<number, readonly number[]>> | ReadonlyMap<number, readonly number[]>;
}

/** A function being traced: takes tensors, returns a Tensor, an array or an object of Tensors. */
export type TracedFn = (...inputs: Tensor[]) => unknown;

function checkSpecs(specs: readonly InputSpec[], dynamic: NonNullable<TraceOptions['dynamic']>): Set<number>[] {
  if (!Array.isArray(specs)) throw new ArgumentError('KILN_BAD_ARGUMENT', 'input specs must be an array of {shape, dtype}');
  const dyn = specs.map(() => new Set<number>());
  specs.forEach((s, i) => {
    const ok = s && Array.isArray(s.shape) && s.shape.every((d: number) => Number.isSafeInteger(d) && d >= 0);
    if (!ok) throw new ArgumentError('KILN_BAD_SHAPE', `input ${i}: shape must be an array of non-negative integers, got ${JSON.stringify(s?.shape)}`);
    if (s.dtype !== undefined) checkDType(s.dtype, `input ${i} dtype`);
  });
  const entries = dynamic instanceof Map ? [...dynamic.entries()] : Object.entries(dynamic);
  for (const [key, dims] of entries) {
    const i = Number(key);
    if (!Number.isInteger(i) || i < 0 || i >= specs.length) throw new ArgumentError('KILN_BAD_DYNAMIC', `dynamic: input ${key} does not exist (${specs.length} inputs)`);
    const rank = specs[i].shape.length;
    if (!Array.isArray(dims)) throw new ArgumentError('KILN_BAD_DYNAMIC', `dynamic[${key}] must be an array of dims`);
    for (const d of dims) {
      if (!Number.isInteger(d) || d < -rank || d >= rank) throw new ArgumentError('KILN_BAD_DYNAMIC', `dynamic: input ${i} has no dim ${d} (rank ${rank})`);
      dyn[i].add(d < 0 ? d + rank : d);
    }
  }
  return dyn;
}

/**
 * Symbolic input shapes and symbol bindings. Symbols are named s0, s1, … in order of first
 * appearance (input by input, dim by dim), so equal signatures give equal graphs.
 */
function symbolicShapes(specs: readonly InputSpec[], dyn: readonly Set<number>[]): { shapes: Dim[][]; symbols: SymbolBinding[] } {
  const bySize = new Map<number, { sym: Sym; sources: { input: number; dim: number }[] }>();
  const shapes = specs.map((s, i) =>
    s.shape.map((size, d) => {
      if (!dyn[i].has(d)) return size;
      let entry = bySize.get(size);
      if (!entry) {
        entry = { sym: sym(`s${bySize.size}`), sources: [] };
        bySize.set(size, entry);
      }
      entry.sources.push({ input: i, dim: d });
      return entry.sym;
    }),
  );
  const symbols = [...bySize.values()].map((e) => ({ name: e.sym.toString(), sources: e.sources }));
  return { shapes, symbols };
}

function collect(value: unknown, tracer: Tracer, outputs: Node[]): OutputStructure {
  if (value instanceof Tensor) {
    const impl = implOf(value);
    let node: Node;
    if (impl.kind === 'eager') node = tracer.capture(impl); // a constant result
    else if (impl.tracer !== tracer) throw new TraceError('KILN_TRACE_MIXED', 'the traced function returned a tensor from another trace');
    else node = impl.node;
    outputs.push(node);
    return { kind: 'tensor', index: outputs.length - 1 };
  }
  if (Array.isArray(value)) return { kind: 'array', items: value.map((v) => collect(v, tracer, outputs)) };
  const plain = value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype;
  if (plain) {
    return { kind: 'object', entries: Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, collect(v, tracer, outputs)] as const) };
  }
  const what = value === null ? 'null' : typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value;
  throw new ArgumentError('KILN_BAD_RETURN', `a compiled function must return a Tensor, an array or an object of Tensors; got ${what}`);
}

/**
 * Trace `fn` on inputs described by `specs` and return its program as a Graph. The
 * function runs once, synchronously, on traced tensors: reading their values throws
 * TraceError; concrete tensors it uses become constants of the graph, and those that
 * existed before the trace began (captured from the closure) are listed in `captured`.
 */
export function trace(fn: TracedFn, specs: readonly InputSpec[], opts: TraceOptions = {}): Graph {
  if (typeof fn !== 'function') throw new ArgumentError('KILN_BAD_ARGUMENT', 'trace: fn must be a function');
  const dyn = checkSpecs(specs, opts.dynamic ?? {});
  const { shapes, symbols } = symbolicShapes(specs, dyn);
  const tracer = new Tracer();
  const inputs = specs.map((s, i) => tracer.input(i, s.dtype ?? 'float32', shapes[i], s.device ?? 'cpu'));
  try {
    const result = fn(...inputs.map(wrap));
    if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
      throw new ArgumentError('KILN_ASYNC_FN', 'a compiled function must be synchronous (it returned a Promise); tensor ops need no await inside it');
    }
    const outputs: Node[] = [];
    const outputStructure = collect(result, tracer, outputs);
    const graph: Graph = {
      inputs: inputs.map((t) => t.node),
      outputs,
      outputStructure,
      constants: tracer.constants,
      symbols,
      ...(tracer.guards.length ? { guards: tracer.guards } : {}),
      sites: tracer.sites,
      files: [...tracer.files].sort(),
      table: tracer.table,
      captured: tracer.captured,
    };
    // The example sizes must meet the program's own shape guards: refused now, not after a compile.
    if (graph.guards) bindSymbols(graph, specs.map((s) => ({ dtype: s.dtype ?? 'float32', shape: s.shape })));
    return graph;
  } finally {
    tracer.close();
  }
}
