/**
 * kiln's engine: compile a traced graph for a device, get programs through the bundle
 * store (memory, bundle, or compile and publish), and run them. It never imports the
 * tensor front end: it takes graphs and raw tensors.
 */
export { buildGraphCuda, compileCount, compileGraph, ENGINE_BACKENDS, type CompileGraphOptions } from './compile';
export type { CompiledProgram, RawTensor, StageTimes } from './program';
export { isCudaProgram, run, runCuda } from './run';
export {
  ensureBundle,
  getProgram,
  type ObtainedProgram,
  type ProgramOrigin,
  type ProgramRequest,
  type ProgramSignature,
  type StoreOptions,
  type TraceFn,
} from './store';
export { cudaProgramFiles, loadBundle, packageRootOf, programFiles, readProgramDocument, sourceGuards, PROGRAM_FORMAT, PROGRAM_VERSION, type CpuProgramDocument, type ProgramDocument } from './bundle';
export { bundleBackend, cpuCodegen, cudaCodegen, cudaDevice, dynamicGroups, keyInput, kilnBuild, type BundleBackend } from './bundle-target';
