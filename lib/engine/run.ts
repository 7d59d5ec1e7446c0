/**
 * Running a compiled program on raw tensors: check the inputs against the graph (count,
 * dtypes, ranks, static dims, and that duck-sized dynamic dims agree — the interpreter's
 * own check, so both report alike), then execute on the program's device.
 */
import { bindSymbols } from '../runtime/interpreter';
import { isStorageOf } from '../ir/dtype';
import { ArgumentError } from '../util/errors';
import type { CompiledProgram, RawTensor } from './program';

/** Runs `program`; outputs are in graph order (see `graph.outputStructure` to rebuild them). */
export async function run(program: CompiledProgram, inputs: readonly RawTensor[]): Promise<RawTensor[]> {
  bindSymbols(program.graph, inputs);
  inputs.forEach((t, i) => {
    const n = t.shape.reduce((a, d) => a * d, 1);
    if (!isStorageOf(t.dtype, t.data) || t.data.length !== n) {
      throw new ArgumentError('KILN_INPUT_DATA', `input ${i} data must be ${n} elements of ${t.dtype} storage, got ${t.data.constructor.name}(${t.data.length})`);
    }
  });
  return program.execute(inputs);
}
