/**
 * The cold path: graph → passes → rendered source → compiler → loaded program, timing
 * each stage. One function per device; `compileGraph` picks it. Which backends this build
 * contains is `ENGINE_BACKENDS` (the API layer steers `device: 'auto'` by it).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { cppFlags, renderCpp } from '../codegen';
import type { Graph } from '../ir/graph';
import { arenaLayout, lower } from '../passes';
import { compileSharedObject, CpuProgram, requireCxx } from '../runtime/cpu';
import type { Backend } from '../runtime/select';
import { cpuHost } from './bundle-target';
import { buildCuda, compileGraphCuda, cudaTarget, type CudaBuild } from './cuda';
import type { CompiledProgram } from './program';

/** Backends this build of kiln can compile for. */
export const ENGINE_BACKENDS: readonly Backend[] = ['cpu', 'cuda'];

export interface CompileGraphOptions {
  device: Backend;
  /**
   * Directory to build in; it keeps kernels.cpp and kernels.so. Default: a fresh temporary
   * directory, removed once the library is loaded (the mapping outlives the file) and kept
   * when the compile fails, so the source named in the error can be read.
   */
  workDir?: string;
  /** Environment for the compiler lookup and its flags (tests inject a missing compiler). */
  env?: NodeJS.ProcessEnv;
  /** CUDA: float32 matmuls on TF32 tensor cores (the `tf32` compile option); the CPU ignores it. */
  tf32?: boolean;
}

// Process-wide count of programs compiled (read by tests through the API's counters()).
let compiles = 0;

/** How many programs this process has compiled. */
export function compileCount(): number {
  return compiles;
}

/** Compiles a traced graph for `device` and loads it. */
export async function compileGraph(graph: Graph, opts: CompileGraphOptions): Promise<CompiledProgram> {
  switch (opts.device) {
    case 'cpu':
      return compileCpu(graph, opts);
    case 'cuda':
      compiles++;
      return compileGraphCuda(graph, opts.tf32 ? { tf32: true } : {}); // this machine's GPU (lib/engine/cuda.ts)
    default:
      return opts.device satisfies never;
  }
}

// SMs of the data-center GPU of an architecture (A100, H100 SXM, B200): what the launch
// heuristics fill when no GPU is there to ask. Others get the heuristics' default.
const OFFLINE_SM_COUNT: Readonly<Record<number, number>> = { 80: 108, 90: 132, 100: 148 };

/**
 * Builds a traced graph for an offline CUDA target (`sm_90`, `compute_90`) without loading
 * it: NVRTC only, no GPU (`kiln build --target sm_90`), heuristic configurations sized for
 * the architecture's data-center GPU. Counted as a compile.
 */
export async function buildGraphCuda(graph: Graph, target: string, opts: { tf32?: boolean } = {}): Promise<CudaBuild> {
  compiles++;
  const smCount = OFFLINE_SM_COUNT[cudaTarget(target).arch];
  return buildCuda(graph, target, { ...(smCount !== undefined ? { smCount } : {}), ...(opts.tf32 ? { tf32: true } : {}) });
}

async function compileCpu(graph: Graph, opts: CompileGraphOptions): Promise<CompiledProgram> {
  requireCxx(opts.env); // before the passes: a missing compiler should fail fast
  compiles++;
  const t0 = performance.now();
  const program = lower(graph);
  const t1 = performance.now();
  const source = renderCpp(program);
  const t2 = performance.now();
  const dir = opts.workDir ?? (await mkdtemp(path.join(tmpdir(), 'kiln-build-')));
  // exactly the ISA features the bundle's target names (bundle-target.ts), no more
  const { host } = cpuHost();
  const so = await compileSharedObject(source, cppFlags(host.features, host.arch), dir, opts.env ? { env: opts.env } : {});
  const t3 = performance.now();
  const g = program.graph;
  const cpu = CpuProgram.load(so.soPath, { plan: program.plan, symbols: g.symbols, constants: g.constants, layout: arenaLayout });
  const t4 = performance.now();
  if (!opts.workDir) await rm(dir, { recursive: true, force: true });
  return {
    device: 'cpu',
    graph: g,
    plan: program.plan,
    kernels: program.kernels.length,
    source,
    times: { lowerMs: t1 - t0, renderMs: t2 - t1, compileMs: t3 - t2, loadMs: t4 - t3 },
    compiler: { path: so.cxx.path, version: so.cxx.version },
    execute: (inputs) => cpu.run(inputs),
  };
}
