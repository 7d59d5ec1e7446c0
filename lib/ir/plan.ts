/**
 * The launch plan: the host side of a compiled program, as plain data. The scheduler
 * (lib/passes) builds it, the bundle stores it (graph.json), and a device runtime
 * (lib/runtime) executes it. Nothing here is code: sizes are dims (numbers or canonical
 * symbolic text such as `s0*768`) resolved against the symbol values of each call.
 */
import type { DType } from './dtype';

/** A dim in JSON form: a number, or canonical Sym text (see `parseDim`). */
export type DimJSON = number | string;

/** What a buffer holds. Temps are placed in one arena by `arenaLayout` at call time. */
export type BufferRole = 'input' | 'output' | 'temp' | 'const';

export interface PlanBuffer {
  readonly id: number;
  readonly dtype: DType;
  /** Element count. */
  readonly elems: DimJSON;
  readonly role: BufferRole;
  /** For inputs: the input index. For consts: the constant's content key. */
  readonly source?: number | string;
  /** First and last step index that touch the buffer (lifetime for arena reuse). */
  readonly first: number;
  readonly last: number;
}

/** One kernel launch. `buffers` are the kernel's buffer parameters, in order. */
export interface PlanStep {
  readonly kernel: string;
  readonly kind: 'elementwise' | 'reduce' | 'matmul';
  readonly buffers: readonly number[];
  /** GPU launch geometry (dims resolved at call time); absent on the CPU. */
  readonly grid?: readonly DimJSON[];
  readonly block?: readonly number[];
  readonly sharedBytes?: number;
}

export interface PlanOutput {
  readonly buffer: number;
  readonly dtype: DType;
  readonly shape: readonly DimJSON[];
}

export interface LaunchPlan {
  readonly version: 1;
  /** Symbol names in the order their values are passed to kernels (`syms[i]`). */
  readonly symbols: readonly string[];
  readonly buffers: readonly PlanBuffer[];
  readonly steps: readonly PlanStep[];
  /** One per graph output, in graph order. Several outputs may share a buffer. */
  readonly outputs: readonly PlanOutput[];
}
