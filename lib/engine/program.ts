/**
 * What the engine hands to the API layer: a compiled, loaded program of one device, the
 * optimized graph it came from (inputs, outputs, symbols, constants), its launch plan and
 * how long each stage took. Device specifics stay behind `run`.
 */
import type { Graph } from '../ir/graph';
import type { LaunchPlan } from '../ir/plan';
import type { RawTensor } from '../runtime/cpu';
import type { Backend } from '../runtime/select';

export type { RawTensor } from '../runtime/cpu';

/** Milliseconds spent in each stage of building a program (0 for stages that did not run). */
export interface StageTimes {
  /** Graph passes: fusion and scheduling into kernels and a launch plan. */
  lowerMs: number;
  /** Rendering kernels into source text. */
  renderMs: number;
  /** The compiler (system C++ compiler or NVRTC). */
  compileMs: number;
  /** Loading the binary (dlopen / module load) and preparing buffers. */
  loadMs: number;
}

/** A program ready to run. */
export interface CompiledProgram {
  readonly device: Backend;
  /** The optimized graph: its inputs, outputs, output structure, symbols and constants. */
  readonly graph: Graph;
  readonly plan: LaunchPlan;
  /** Number of generated kernels. */
  readonly kernels: number;
  /** Generated source (C++ or CUDA C), kept for debugging and for the bundle. */
  readonly source: string;
  readonly times: StageTimes;
  /** The compiler that built it (compiled now; absent for a program loaded from a bundle). */
  readonly compiler?: { readonly path: string; readonly version: string };
  /** Runs the plan on inputs already checked by the engine's `run`. */
  execute(inputs: readonly RawTensor[]): Promise<RawTensor[]>;
  /** Frees what the program holds outside the JS heap (a CUDA module, device memory); absent when the garbage collector suffices. */
  dispose?(): void;
}
