/**
 * Loading a built CUDA program — the warm path's part of the CUDA engine (a bundle's
 * kernels.cubin and plan): no passes, renderer or compiler are imported here. The cold path
 * (lib/engine/cuda.ts) builds what this loads.
 */
import type { Graph } from '../ir/graph';
import type { LaunchPlan } from '../ir/plan';
import { arenaLayout } from '../passes/memory';
import type { GpuConfig } from '../passes/gpu';
import { CudaProgram, type DeviceTensor, type ProgramInput } from '../runtime/cuda';
import type { CudaTarget, PtxasFunctionInfo } from '../runtime/cuda-arch';
import { readCubinArch } from '../runtime/cuda-driver';
import { addon } from '../runtime/native';
import { ArgumentError, CudaError } from '../util/errors';
import type { CompiledProgram, RawTensor } from './program';

/** Each kernel's chosen configuration, by kernel name: the autotuner's result, stored in the bundle. */
export type CudaTuning = Record<string, GpuConfig>;

/** What ptxas reported for one kernel, with its launch shape. */
export interface CudaKernelResources extends PtxasFunctionInfo {
  readonly threads: number;
  /** Dynamic shared memory per launch (static shared memory is `sharedBytes`). */
  readonly dynamicSharedBytes: number;
  readonly config: GpuConfig;
}

/** Parses `sm_90` / `compute_90` into a CudaTarget. */
export function cudaTarget(target: string | CudaTarget): CudaTarget {
  if (typeof target !== 'string') return target;
  const m = /^(sm|compute)_(\d+)a?$/.exec(target);
  if (!m) throw new ArgumentError('KILN_BAD_TARGET', `CUDA target must be sm_XY or compute_XY, got ${JSON.stringify(target)}`);
  return { target, kind: m[1] === 'sm' ? 'cubin' : 'ptx', arch: Number(m[2]) };
}

/** A loaded CUDA program: the engine's CompiledProgram plus the device-side handles. */
export interface CudaCompiledProgram extends CompiledProgram {
  readonly device: 'cuda';
  readonly cuda: {
    readonly program: CudaProgram;
    readonly target: CudaTarget;
    readonly tuning: CudaTuning;
    readonly resources: Record<string, CudaKernelResources>;
    readonly image: Buffer;
    /** Runs with inputs on the device or host; outputs stay on the device (the caller disposes them). */
    run(inputs: readonly ProgramInput[]): Promise<DeviceTensor[]>;
  };
}

/** What loading needs: an image built for this GPU and the plan built with it. */
export interface CudaLoadParts {
  readonly image: Uint8Array;
  readonly graph: Graph;
  /** The CUDA plan (steps with grid and block). */
  readonly plan: LaunchPlan;
  readonly source?: string;
  readonly kernels?: number;
  readonly target?: CudaTarget;
  readonly tuning?: CudaTuning;
  readonly resources?: Record<string, CudaKernelResources>;
  readonly device?: number;
  /** Replay CUDA graphs for repeated calls (default true). */
  readonly graphs?: boolean;
}

/**
 * Loads a built CUDA program on `device` (uploads its constants). A cubin must be for this
 * GPU's exact architecture: checked here so a mismatch is a clear error rather than the
 * driver's CUDA_ERROR_NO_BINARY_FOR_GPU.
 */
export async function loadCudaProgram(parts: CudaLoadParts): Promise<CudaCompiledProgram> {
  const t0 = performance.now();
  const device = parts.device ?? 0;
  const target = parts.target ?? (isElf(parts.image) ? cudaTarget(`sm_${readCubinArch(parts.image).sm}`) : cudaTarget('compute_75'));
  if (isElf(parts.image)) {
    const { sm } = readCubinArch(parts.image);
    const driver = addon().info().driver; // the driver alone: loading needs no NVRTC, so none is searched for
    const dev = driver.available ? driver.devices[device] : undefined;
    const cc = dev ? dev.computeCapability[0] * 10 + dev.computeCapability[1] : undefined;
    if (cc !== undefined && cc !== sm) {
      throw new CudaError('KILN_CUDA_ARCH_MISMATCH', `the CUDA program was built for sm_${sm}, but ${dev!.name} is sm_${cc}: rebuild it for sm_${cc}`);
    }
  }
  const g = parts.graph;
  const program = await CudaProgram.load(parts.image, { plan: parts.plan, symbols: g.symbols, constants: g.constants, layout: arenaLayout, device, graphs: parts.graphs ?? true });
  const loadMs = performance.now() - t0;
  const execute = async (inputs: readonly RawTensor[]): Promise<RawTensor[]> => {
    const outs = await program.run(inputs);
    try {
      return await Promise.all(outs.map((t) => t.toHost()));
    } finally {
      for (const t of outs) t.dispose();
    }
  };
  return {
    device: 'cuda',
    graph: g,
    plan: parts.plan,
    kernels: parts.kernels ?? parts.plan.steps.length,
    source: parts.source ?? '',
    times: { lowerMs: 0, renderMs: 0, compileMs: 0, loadMs },
    execute,
    dispose: () => program.dispose(),
    cuda: {
      program,
      target,
      tuning: parts.tuning ?? {},
      resources: parts.resources ?? {},
      image: Buffer.from(parts.image.buffer, parts.image.byteOffset, parts.image.byteLength),
      run: (inputs) => program.run(inputs),
    },
  };
}

const isElf = (b: Uint8Array): boolean => b.length >= 4 && b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46;

