/**
 * Running a compiled program: check the inputs against the graph (count, dtypes, ranks,
 * static dims, and that duck-sized dynamic dims agree — the interpreter's own check, so
 * every device reports alike), then execute on the program's device. `run` takes and returns
 * host tensors; `runCuda` lets a CUDA program take device or host inputs and keep its outputs
 * on the GPU.
 */
import { bindSymbols, concreteArg, evalOp, type Value } from '../runtime/interpreter';
import { evalDim, evalShape, toposort, type Dim, type Graph, type Node } from '../ir';
import { isStorageOf } from '../ir/dtype';
import type { DeviceTensor, ProgramInput } from '../runtime/cuda';
import { ArgumentError } from '../util/errors';
import type { CudaCompiledProgram } from './cuda-load';
import type { CompiledProgram, RawTensor } from './program';

function checkInputs(program: CompiledProgram, inputs: readonly (RawTensor | ProgramInput)[]): void {
  const sizes = bindSymbols(program.graph, inputs);
  inputs.forEach((t, i) => {
    if (!('data' in t)) return; // already in device memory: the runtime checks its buffer
    const n = t.shape.reduce((a, d) => a * d, 1);
    if (!isStorageOf(t.dtype, t.data) || t.data.length !== n) {
      throw new ArgumentError('KILN_INPUT_DATA', `input ${i} data must be ${n} elements of ${t.dtype} storage, got ${t.data.constructor.name}(${t.data.length})`);
    }
  });
  for (const { input, views, rows } of idReads(program.graph)) {
    const t = inputs[input];
    if (!('data' in t)) continue; // device ids: the kernels clamp them to the table
    // The ids the gather reads: the input through its views, as the interpreter computes them.
    let ids: Value = { shape: t.shape, data: Float64Array.from(t.data as Int32Array) };
    for (const m of views) {
      const shape = evalShape(m.shape, sizes);
      ids = { shape, data: evalOp(m.op, concreteArg(m.op, m.arg, sizes), m.dtype, shape, [ids]) };
    }
    const v = evalDim(rows, sizes);
    for (const id of ids.data) {
      if (id < 0 || id >= v) throw new ArgumentError('KILN_INDEX_OUT_OF_RANGE', `embedding index ${id} (input ${input}) is out of range for a table of ${v} rows`);
    }
  }
}

/** A gather whose ids are a program input through views (`views`, input side first), with its table's row count. */
interface IdRead {
  readonly input: number;
  readonly views: readonly Node[];
  readonly rows: Dim;
}

const idReadsOf = new WeakMap<Graph, readonly IdRead[]>();
const VIEWS = new Set(['RESHAPE', 'PERMUTE', 'EXPAND', 'SHRINK', 'PAD']);

/**
 * The gathers that read ids from a program input: checked on the host as eager execution
 * checks them, where the kernels could only clamp.
 */
function idReads(graph: Graph): readonly IdRead[] {
  let found = idReadsOf.get(graph);
  if (!found) {
    found = toposort(graph).flatMap((n) => {
      if (n.op !== 'GATHER') return [];
      const views: Node[] = [];
      let ids = n.src[1];
      for (; VIEWS.has(ids.op); ids = ids.src[0]) views.unshift(ids);
      return ids.op === 'INPUT' ? [{ input: ids.arg as number, views, rows: n.src[0].shape[0] }] : [];
    });
    idReadsOf.set(graph, found);
  }
  return found;
}

/** Runs `program`; outputs are in graph order (see `graph.outputStructure` to rebuild them). */
export async function run(program: CompiledProgram, inputs: readonly RawTensor[]): Promise<RawTensor[]> {
  checkInputs(program, inputs);
  return program.execute(inputs);
}

/** Whether `program` is a loaded CUDA program (it can run on device tensors). */
export function isCudaProgram(program: CompiledProgram): program is CudaCompiledProgram {
  return program.device === 'cuda' && 'cuda' in program;
}

/**
 * Runs a CUDA program on device tensors or host data (uploaded for the call); the outputs
 * stay in device memory, in graph order, owned by the caller.
 */
export async function runCuda(program: CudaCompiledProgram, inputs: readonly ProgramInput[]): Promise<DeviceTensor[]> {
  checkInputs(program, inputs);
  return program.cuda.run(inputs);
}
