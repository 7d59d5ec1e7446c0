/**
 * Running a compiled program: check the inputs against the graph (count, dtypes, ranks,
 * static dims, and that duck-sized dynamic dims agree — the interpreter's own check, so
 * every device reports alike), then execute on the program's device. `run` takes and returns
 * host tensors; `runCuda` lets a CUDA program take device or host inputs and keep its outputs
 * on the GPU.
 */
import { bindSymbols } from '../runtime/interpreter';
import { isStorageOf } from '../ir/dtype';
import type { DeviceTensor, ProgramInput } from '../runtime/cuda';
import { ArgumentError } from '../util/errors';
import type { CudaCompiledProgram } from './cuda-load';
import type { CompiledProgram, RawTensor } from './program';

function checkInputs(program: CompiledProgram, inputs: readonly (RawTensor | ProgramInput)[]): void {
  bindSymbols(program.graph, inputs);
  inputs.forEach((t, i) => {
    if (!('data' in t)) return; // already in device memory: the runtime checks its buffer
    const n = t.shape.reduce((a, d) => a * d, 1);
    if (!isStorageOf(t.dtype, t.data) || t.data.length !== n) {
      throw new ArgumentError('KILN_INPUT_DATA', `input ${i} data must be ${n} elements of ${t.dtype} storage, got ${t.data.constructor.name}(${t.data.length})`);
    }
  });
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
