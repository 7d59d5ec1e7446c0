/**
 * Running a compiled program: check the inputs against the graph (count, dtypes, ranks,
 * static dims, and that duck-sized dynamic dims agree — the interpreter's own check, so
 * every device reports alike), then execute on the program's device. `run` takes and returns
 * host tensors; `runCuda` lets a CUDA program take device or host inputs and keep its outputs
 * on the GPU.
 */
import { bindSymbols } from '../runtime/interpreter';
import { evalDim, toposort, type Dim, type Graph } from '../ir';
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
  for (const { input, rows } of idInputs(program.graph)) {
    const t = inputs[input];
    if (!('data' in t)) continue; // device ids: the kernels clamp them to the table
    const v = evalDim(rows, sizes);
    for (const id of t.data as Int32Array) {
      if (id < 0 || id >= v) throw new ArgumentError('KILN_INDEX_OUT_OF_RANGE', `embedding index ${id} (input ${input}) is out of range for a table of ${v} rows`);
    }
  }
}

const idInputsOf = new WeakMap<Graph, readonly { input: number; rows: Dim }[]>();

/**
 * Inputs every element of which is an embedding id (a GATHER's ids, through views that drop
 * none), with the row count of their table: checked on the host as eager execution checks
 * them, where the kernels could only clamp.
 */
function idInputs(graph: Graph): readonly { input: number; rows: Dim }[] {
  let found = idInputsOf.get(graph);
  if (!found) {
    found = toposort(graph).flatMap((n) => {
      if (n.op !== 'GATHER') return [];
      let ids = n.src[1];
      while (['RESHAPE', 'PERMUTE', 'EXPAND'].includes(ids.op)) ids = ids.src[0];
      return ids.op === 'INPUT' ? [{ input: ids.arg as number, rows: n.src[0].shape[0] }] : [];
    });
    idInputsOf.set(graph, found);
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
