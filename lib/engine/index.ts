/**
 * kiln's engine: compile a traced graph for a device, get programs through the (future)
 * bundle store, and run them. It never imports the tensor front end: it takes graphs and
 * raw tensors.
 */
export { backendMissing, compileCount, compileGraph, ENGINE_BACKENDS, type CompileGraphOptions } from './compile';
export type { CompiledProgram, RawTensor, StageTimes } from './program';
export { run } from './run';
export { getProgram, programKeyHash, type ProgramKey, type ProgramOrigin, type StoreOptions } from './store';
