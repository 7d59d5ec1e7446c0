/**
 * The CUDA cold path: graph → passes → launch decisions → CUDA C → NVRTC → CudaProgram.
 *
 * - `buildCuda(graph, target)` needs NVRTC only (no GPU): it lowers the graph, picks each
 *   kernel's configuration (a stored tuning table, else the heuristic of lib/passes/gpu.ts),
 *   renders one translation unit, compiles it to an `sm_XY` cubin (or `compute_XY` PTX) and
 *   parses ptxas's report into per-kernel resources. `kiln build --target sm_90` uses it.
 * - `compileGraphCuda(graph)` does the same for this machine's GPU (target from
 *   `selectCudaTarget`), optionally autotunes first (cuda-tune.ts), and loads the result.
 * - `loadCudaProgram(parts)` loads a built image (a bundle's kernels.cubin and plan).
 *
 * NVRTC options: `-default-device --std=c++17` (no host code), `--fmad=false` (every op
 * rounds as the interpreter does; matmuls use fmaf explicitly), `--ptxas-options=-v` (the
 * resource report). See docs/CUDA.md.
 */
import { renderCuda } from '../codegen/cuda';
import type { Graph } from '../ir/graph';
import type { LaunchPlan } from '../ir/plan';
import { lower, type Program } from '../passes';
import { configFits, defaultConfig, gpuPlan, wgmmaProblem, type GpuConfig, type GpuFacts } from '../passes/gpu';
import { parsePtxasLog, selectCudaTarget, type CudaTarget } from '../runtime/cuda-arch';
import { addonInfo, nvrtcCompile } from '../runtime/native';
import { KilnError, NvrtcError } from '../util/errors';
import { cudaDevice, cudaTuneByDefault, cudaWgmmaAllowed } from './bundle-target';
import { cudaTarget, loadCudaProgram, type CudaCompiledProgram, type CudaKernelResources, type CudaTuning } from './cuda-load';

export { cudaTarget, loadCudaProgram, type CudaCompiledProgram, type CudaKernelResources, type CudaLoadParts, type CudaTuning } from './cuda-load';

/** NVRTC options of every CUDA program (`--gpu-architecture` is added from the target). */
export const CUDA_NVRTC_OPTIONS: readonly string[] = ['-default-device', '--std=c++17', '--fmad=false', '--ptxas-options=-v'];

/** A compiled CUDA program that is not loaded yet (what a bundle stores). */
export interface CudaBuild {
  /** `sm_90` (cubin) or `compute_90` (PTX), its kind and number. */
  readonly target: CudaTarget;
  /** The lowered program: kernels, the CPU-form plan and the optimized graph. */
  readonly program: Program;
  /** The launch plan with each step's grid, block and dynamic shared memory. */
  readonly plan: LaunchPlan;
  /** Configuration per kernel, in step order, and the same by kernel name. */
  readonly configs: readonly GpuConfig[];
  readonly tuning: CudaTuning;
  /** kernels.cu */
  readonly source: string;
  /** kernels.cubin (ELF) or PTX text. */
  readonly image: Buffer;
  /** NVRTC's log (warnings and ptxas's report). */
  readonly log: string;
  readonly resources: Record<string, CudaKernelResources>;
  readonly times: { lowerMs: number; renderMs: number; compileMs: number };
}

/** Options of `buildCuda`. */
export interface BuildCudaOptions {
  /** Configurations to use by kernel name (entries that do not fit a kernel are ignored). */
  tuning?: CudaTuning;
  /** Streaming multiprocessors of the GPU to fill (heuristics); default 132. */
  smCount?: number;
  /** An already lowered program of `graph` (the autotuner lowers once). */
  program?: Program;
  /** float32 matmuls on TF32 tensor cores (sm_80+; the `tf32` compile option). */
  tf32?: boolean;
}

/**
 * Kernel configurations for a program: tuned where the table fits, else the heuristic. An
 * explicit wgmma entry that cannot run its kernel is an error (KILN_BAD_TUNING), not a
 * silent fallback: it is only ever asked for on purpose.
 */
export function chooseConfigs(program: Program, facts: GpuFacts, tuning: CudaTuning = {}): GpuConfig[] {
  return program.kernels.map((k) => {
    const t = tuning[k.name];
    if (t?.kind === 'matmul' && t.variant === 'wgmma') {
      const why = k.kind === 'matmul' ? wgmmaProblem(k, t, facts) : 'not a matmul kernel';
      if (why) throw new KilnError('KILN_BAD_TUNING', `cuda: the wgmma configuration of ${k.name} (${JSON.stringify(t)}) ${why}`);
    }
    return t && configFits(k, t, facts) ? t : defaultConfig(k, facts);
  });
}

/**
 * What kernel choices depend on when building for `target`: its architecture, whether it is
 * arch-specific (`sm_90a`: the wgmma matmul, unless `KILN_CUDA_WGMMA=0`), the GPU's SMs when
 * known, and the tf32 option. The autotuner and the build must see the same facts.
 */
export function cudaFacts(target: CudaTarget, opts: { smCount?: number; tf32?: boolean } = {}): GpuFacts {
  return {
    arch: target.arch,
    archSpecific: /a$/.test(target.target),
    ...(cudaWgmmaAllowed() ? {} : { wgmma: false }),
    ...(opts.smCount !== undefined ? { smCount: opts.smCount } : {}),
    ...(opts.tf32 ? { tf32: true } : {}),
  };
}

/**
 * Builds the CUDA program of `graph` for `target` (`sm_90` or `compute_90`) without a GPU:
 * NVRTC only. Throws NvrtcError (KILN_NVRTC_UNAVAILABLE, KILN_NVRTC_COMPILE with the log).
 */
export async function buildCuda(graph: Graph, target: string | CudaTarget, opts: BuildCudaOptions = {}): Promise<CudaBuild> {
  const t = cudaTarget(target);
  const facts = cudaFacts(t, opts);
  const t0 = performance.now();
  const program = opts.program ?? lower(graph);
  const configs = chooseConfigs(program, facts, opts.tuning);
  const plan = gpuPlan(program.plan, program.kernels, configs);
  const t1 = performance.now();
  const source = renderCuda(program, facts, configs);
  const t2 = performance.now();
  const r = await nvrtcCompile({ source, name: 'kernels.cu', target: t.target, options: [...CUDA_NVRTC_OPTIONS] });
  const t3 = performance.now();
  const ptx = parsePtxasLog(r.log);
  // Per launched kernel: a two-level configuration's `<name>__part` kernel has an entry of its own.
  const resources: Record<string, CudaKernelResources> = {};
  const configOf = new Map(program.kernels.map((k, i) => [k.name, configs[i]]));
  for (const step of plan.steps) {
    const f = ptx[step.kernel] ?? { entry: true, registers: 0, sharedBytes: 0, spillStores: 0, spillLoads: 0, stackBytes: 0, barriers: 0 };
    const config = (configOf.get(step.kernel) ?? configOf.get(step.kernel.replace(/__part$/, ''))) as GpuConfig;
    resources[step.kernel] = { ...f, threads: step.block?.[0] ?? 0, dynamicSharedBytes: step.sharedBytes ?? 0, config };
  }
  const spills = Object.entries(resources).filter(([, f]) => f.spillStores > 0 || f.spillLoads > 0);
  if (spills.length) {
    process.emitWarning(`kiln: CUDA kernels spill registers to local memory (slower): ${spills.map(([n, f]) => `${n} (${f.spillStores}B stores)`).join(', ')}`, { code: 'KILN_CUDA_SPILL' });
  }
  const tuning: CudaTuning = Object.fromEntries(program.kernels.map((k, i) => [k.name, configs[i]]));
  return { target: t, program, plan, configs, tuning, source, image: r.binary, log: r.log, resources, times: { lowerMs: t1 - t0, renderMs: t2 - t1, compileMs: t3 - t2 } };
}

/**
 * A GPU and its compile target, or what is missing: CudaError KILN_NO_CUDA_DEVICE, NvrtcError
 * KILN_NVRTC_UNAVAILABLE (the class every missing NVRTC is thrown as). The target is the one the bundle key of `device: 'cuda'` names.
 */
export function localCudaTarget(device = 0): { target: CudaTarget; facts: GpuFacts; name: string } {
  const dev = cudaDevice(device);
  const info = addonInfo();
  if (!info.nvrtc.available) throw new NvrtcError('KILN_NVRTC_UNAVAILABLE', `device: 'cuda' needs NVRTC to compile kernels: ${info.nvrtc.reason}. \`npx kiln doctor\` shows where kiln looked.`);
  const target = selectCudaTarget({ computeCapability: dev.computeCapability, nvrtcArchs: info.nvrtc.archs, deviceName: dev.name, nvrtcVersion: info.nvrtc.version });
  return { target, facts: cudaFacts(target, { smCount: dev.smCount }), name: dev.name };
}

/** Options of `compileGraphCuda`. */
export interface CompileCudaOptions {
  /** CUDA device ordinal (default 0). */
  device?: number;
  /** Time candidate configurations on the GPU first (default: on unless `KILN_CUDA_TUNE` is off). */
  tune?: boolean;
  /** Configurations to use instead of tuning (e.g. a bundle's table). */
  tuning?: CudaTuning;
  /** Symbol values the tuner measures at (default 256 for each). */
  tuneSizes?: Readonly<Record<string, number>>;
  graphs?: boolean;
  /** float32 matmuls on TF32 tensor cores (sm_80+; the `tf32` compile option). */
  tf32?: boolean;
}

/**
 * Compiles `graph` for this machine's GPU and loads it: target from the device and NVRTC
 * (`selectCudaTarget`), configurations tuned on the GPU (unless disabled or given), one
 * NVRTC program. Throws CudaError KILN_NO_CUDA_DEVICE when there is no GPU, NvrtcError
 * KILN_NVRTC_UNAVAILABLE when there is no NVRTC.
 */
export async function compileGraphCuda(graph: Graph, opts: CompileCudaOptions = {}): Promise<CudaCompiledProgram> {
  const device = opts.device ?? 0;
  const local = localCudaTarget(device);
  const target = local.target;
  const facts: GpuFacts = { ...local.facts, ...(opts.tf32 ? { tf32: true } : {}) };
  const t0 = performance.now();
  const program = lower(graph);
  const lowerMs = performance.now() - t0;
  let tuning = opts.tuning;
  let tuneMs = 0;
  if (!tuning && (opts.tune ?? cudaTuneByDefault())) {
    const t1 = performance.now();
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the tuner loads only when it runs
    const { autotuneCuda } = require('./cuda-tune') as typeof import('./cuda-tune');
    tuning = (await autotuneCuda(program, target, facts, { device, ...(opts.tuneSizes ? { sizes: opts.tuneSizes } : {}) })).tuning;
    tuneMs = performance.now() - t1;
  }
  const built = await buildCuda(graph, target, { program, ...(tuning ? { tuning } : {}), ...(facts.smCount !== undefined ? { smCount: facts.smCount } : {}), ...(opts.tf32 ? { tf32: true } : {}) });
  const loaded = await loadCudaProgram({
    image: built.image,
    graph: program.graph,
    plan: built.plan,
    source: built.source,
    kernels: program.kernels.length,
    target,
    tuning: built.tuning,
    resources: built.resources,
    device,
    ...(opts.graphs !== undefined ? { graphs: opts.graphs } : {}),
  });
  const times = { lowerMs: lowerMs + built.times.lowerMs, renderMs: built.times.renderMs, compileMs: built.times.compileMs + tuneMs, loadMs: loaded.times.loadMs };
  return { ...loaded, times };
}
