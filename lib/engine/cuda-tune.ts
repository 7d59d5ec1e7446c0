/**
 * The autotuner: for every kernel with more than one candidate configuration
 * (lib/passes/gpu.ts: block sizes, lanes, threads per row, matmul tiles and pipeline
 * depths), all candidates are compiled in ONE NVRTC program, and each is timed on the GPU
 * as a captured CUDA graph of 20 back-to-back launches on zero-filled buffers sized for the
 * plan at the tuning sizes. The fastest wins (the heuristic default keeps its place unless
 * another is at least 3% faster); variants that spill registers or fail to launch are
 * skipped. The result is data (kernel name → configuration) that the bundle stores, so a
 * warm start never tunes. Inductor's max-autotune and Triton's autotuner work alike.
 */
import { renderCudaVariants, type KernelVariant } from '../codegen/cuda';
import { ITEMSIZE } from '../ir/dtype';
import { evalDim, isStatic, parseDim, type Dim } from '../ir/sym';
import { bufferElems, type Kernel, type Program } from '../passes';
import { candidateConfigs, gpuPlan, type GpuConfig, type GpuFacts } from '../passes/gpu';
import { evalGridDim, parseGridDim } from '../runtime/cuda';
import { parsePtxasLog, type CudaTarget } from '../runtime/cuda-arch';
import { CudaModule, DeviceBuffer, PlanExecutor } from '../runtime/cuda-driver';
import { nvrtcCompile } from '../runtime/native';
import { CUDA_NVRTC_OPTIONS, type CudaTuning } from './cuda';

/** One timed candidate. */
export interface TuneMeasurement {
  readonly kernel: string;
  readonly config: GpuConfig;
  /** Microseconds per launch; null when it was not timed (`why` says why). */
  readonly us: number | null;
  readonly why?: string;
}

export interface TuneOptions {
  device?: number;
  /** Symbol values to measure at (default 256 each). */
  sizes?: Readonly<Record<string, number>>;
  /** Launches per timed graph (default 20) and timed replays (default 3). */
  reps?: number;
  replays?: number;
}

/** Kernels too small for their configuration to matter are not timed (launch cost dominates). */
export function worthTuning(k: Kernel, sizes?: Readonly<Record<string, number>>): boolean {
  const at = (d: Dim): number => (isStatic(d) ? d : evalDim(d, Object.fromEntries(d.vars.map((v) => [v, sizes?.[v] ?? 256]))));
  const n = k.domain.reduce<number>((a, d) => a * at(d), 1);
  return k.kind === 'matmul' ? 2 * n * at(k.matmul!.k) >= 2 ** 24 : n >= 2 ** 16;
}

/** Picks per kernel: the fastest measured candidate, the first (default) unless beaten by 3%. */
export function pickFastest(measurements: readonly TuneMeasurement[]): CudaTuning {
  const byKernel = new Map<string, TuneMeasurement[]>();
  for (const m of measurements) byKernel.set(m.kernel, [...(byKernel.get(m.kernel) ?? []), m]);
  const out: CudaTuning = {};
  for (const [kernel, ms] of byKernel) {
    const timed = ms.filter((m) => m.us !== null && Number.isFinite(m.us));
    if (timed.length === 0) continue;
    const first = ms[0];
    let best = first.us !== null ? first : timed[0];
    for (const m of timed) if ((m.us as number) < (best.us as number) * 0.97) best = m;
    out[kernel] = best.config;
  }
  return out;
}

/** Times every candidate configuration of `program`'s kernels on the GPU; see the module comment. */
export async function autotuneCuda(program: Program, target: CudaTarget, facts: GpuFacts, opts: TuneOptions = {}): Promise<{ tuning: CudaTuning; measurements: TuneMeasurement[] }> {
  const device = opts.device ?? 0;
  const reps = opts.reps ?? 20;
  const replays = opts.replays ?? 3;
  const plan = program.plan;
  const variants: (KernelVariant & { step: number })[] = [];
  program.kernels.forEach((k, step) => {
    const cands = candidateConfigs(k, facts);
    if (cands.length > 1 && worthTuning(k, opts.sizes)) cands.forEach((config, j) => variants.push({ kernel: k, config, name: `${k.name}__t${j}`, step }));
  });
  if (variants.length === 0) return { tuning: {}, measurements: [] };
  const source = renderCudaVariants(plan.symbols, facts, variants);
  const compiled = await nvrtcCompile({ source, name: 'tune.cu', target: target.target, options: [...CUDA_NVRTC_OPTIONS] });
  const ptx = parsePtxasLog(compiled.log);
  const values: Record<string, number> = Object.fromEntries(plan.symbols.map((s) => [s, opts.sizes?.[s] ?? 256]));
  const elems = bufferElems(plan, values);
  const module = new CudaModule(compiled.binary, device);
  const buffers: DeviceBuffer[] = [];
  const measurements: TuneMeasurement[] = [];
  try {
    for (const b of plan.buffers) {
      const buf = new DeviceBuffer(Math.max(16, (elems.get(b.id) as number) * ITEMSIZE[b.dtype]), device);
      buf.fill(0);
      buffers.push(buf);
    }
    const syms = BigInt64Array.from(plan.symbols, (s) => BigInt(values[s]));
    for (const v of variants) {
      const base = { kernel: v.kernel.name, config: v.config };
      // Both kernels of a two-level configuration (split reduction, split-K) must not spill.
      const spill = [v.name, `${v.name}__part`].map((n) => ptx[n]).find((f) => f && (f.spillStores > 0 || f.spillLoads > 0));
      if (spill) {
        measurements.push({ ...base, us: null, why: `spills ${spill.spillStores} bytes` });
        continue;
      }
      // The variant's own plan: one step, or two for a split reduction (with its partials buffer).
      const mini = gpuPlan({ ...plan, steps: [plan.steps[v.step]] }, [v.kernel], [v.config]);
      const grids = mini.steps.flatMap((st) => [0, 1, 2].map((j) => (j < st.grid!.length ? evalGridDim(parseGridDim(st.grid![j]), values) : 1)));
      if (grids.some((x) => x === 0)) {
        measurements.push({ ...base, us: null, why: 'empty at the tuning sizes' });
        continue;
      }
      const extra = mini.buffers.slice(plan.buffers.length).map((b) => new DeviceBuffer(Math.max(16, evalDim(parseDim(b.elems), values) * ITEMSIZE[b.dtype]), device));
      const vptrs = BigUint64Array.from([...buffers, ...extra], (b) => b.ptr);
      const steps = mini.steps.map((st) => ({ kernel: st.kernel.replace(v.kernel.name, v.name), buffers: st.buffers, block: st.block!, sharedBytes: st.sharedBytes ?? 0 }));
      let exec: PlanExecutor | undefined;
      try {
        exec = new PlanExecutor(module, { numBuffers: mini.buffers.length, numSymbols: plan.symbols.length, steps: Array.from({ length: reps }, () => steps).flat() });
        const all = Uint32Array.from({ length: grids.length * reps }, (_, i) => grids[i % grids.length]);
        await exec.run(vptrs, syms, all, true); // capture (or the first eager run) and warm-up
        await exec.run(vptrs, syms, all, true);
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < replays; i++) await exec.run(vptrs, syms, all, true);
        measurements.push({ ...base, us: Number(process.hrtime.bigint() - t0) / 1e3 / (replays * reps) });
      } catch (e) {
        measurements.push({ ...base, us: null, why: (e as Error).message.split('\n')[0] });
      } finally {
        exec?.dispose();
        for (const b of extra) b.dispose();
      }
    }
  } finally {
    for (const b of buffers) b.dispose();
    module.unload();
  }
  return { tuning: pickFastest(measurements), measurements };
}
