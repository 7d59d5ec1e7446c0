/**
 * kiln's public entry point: `import * as kiln from 'kiln'`.
 *
 * Tensors and ops run eagerly through kiln's reference interpreter; inside `kiln.compile`
 * the same ops are traced into a graph, compiled, and cached as bundles.
 */

// Tensors and op functions.
export { Tensor, tensor, type Scalar, type TensorArray } from './tensor/tensor';
export type { Device } from './tensor/impl';
export type { AttentionOptions } from './tensor/nn';
export * from './tensor/functional';

// Types and errors.
export type { DType } from './ir/dtype';
export type { Dim, Sym } from './ir/sym';
export {
  KilnError,
  AddonError,
  CudaError,
  NvrtcError,
  CompilerError,
  ShapeError,
  ArgumentError,
  TraceError,
  FormatError,
  CacheError,
  FileError,
} from './util/errors';

// Compilation.
export { compile, counters, type CompileOptions, type CompileStats, type CompiledFunction } from './api/compile';
export { build, type BuildOptions, type BuildResult, type ExampleInput } from './api/build';

// GPU memory: the caching allocator's counters (all zero without a GPU) and giving its cached blocks back.
export { deviceMemoryStats, trimDeviceMemory, type DeviceMemoryStats } from './runtime/cuda-driver';
export type { PoolStats } from './runtime/native';

// Weights files.
export { loadSafetensors, saveSafetensors, decodeSafetensors, encodeSafetensors, type Safetensors } from './api/weights';
