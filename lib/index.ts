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
export type { Dim } from './ir/sym';
/**
 * A symbolic dimension. Inside a function being traced by `kiln.compile`, a dim named in the
 * `dynamic` option is a `Sym` in `x.dims` and `x.shape`, not a number: an integer polynomial
 * over size variables (`s0`, `2*s0`, `s0*s1`). Only its type is exported (kiln makes them).
 * `String(d)` gives its canonical text. Pass it on to `reshape` / `expand` as it is; it never
 * becomes a number (arithmetic such as `x.shape[0] * 2` throws TraceError KILN_SYMBOLIC_DIM),
 * as a number would bake one example size into the compiled program.
 */
export type { Sym } from './ir/sym';
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
