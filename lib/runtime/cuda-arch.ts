/**
 * Which GPU architecture to compile for, and what ptxas said about the result. Pure logic
 * over facts the native layer reports (device compute capability, NVRTC's supported archs,
 * NVRTC's log), so it is tested on machines without a GPU.
 *
 * Target choice follows LESSONS.md (NVRTC in practice): an `sm_XY` cubin for the device's
 * exact compute capability when NVRTC supports it (no driver JIT, nothing to fail at load;
 * `sm_90a` on Hopper, see `deviceCubinTarget`);
 * only when the device is newer than NVRTC knows, PTX for the highest `compute_XY` below it,
 * which the driver JIT-compiles at load (PyTorch does the same).
 */
import { CudaError } from '../util/errors';

/** What to ask NVRTC for. */
export interface CudaTarget {
  /** `sm_90` (cubin) or `compute_90` (PTX). */
  target: string;
  kind: 'cubin' | 'ptx';
  /** The architecture number compiled for, e.g. 90. */
  arch: number;
  /** Set when falling back to PTX: why, and what it costs. */
  warning?: string;
}

/** Facts about the device and NVRTC, as `addonInfo()` reports them. */
export interface TargetFacts {
  /** [major, minor], e.g. [9, 0]. */
  computeCapability: readonly number[];
  /** NVRTC's supported archs, e.g. ['sm_75', 'sm_80', ...]. */
  nvrtcArchs: readonly string[];
  /** For messages only. */
  deviceName?: string;
  nvrtcVersion?: readonly number[];
}

const warned = new Set<string>();

/**
 * The cubin target for a GPU of compute capability `cc` (× 10) that NVRTC supports: the
 * arch-specific `sm_90a` on Hopper, whose matmuls use warpgroup MMA (`wgmma`, which no other
 * target has; an sm_90a cubin loads on 9.0 GPUs only, which is the one it is built for),
 * else `sm_XY`. The store keys a GPU's bundles by this target, from the driver alone.
 */
export function deviceCubinTarget(cc: number): string {
  return cc === 90 ? 'sm_90a' : `sm_${cc}`;
}

/**
 * Picks the compile target for a device. Throws CudaError KILN_CUDA_UNSUPPORTED_DEVICE when
 * the device is older than every arch NVRTC supports (NVRTC 13 starts at sm_75). A PTX
 * fallback is announced once per process with a `KILN_PTX_JIT` warning unless `warn` is false.
 */
export function selectCudaTarget(facts: TargetFacts, warn = true): CudaTarget {
  const [major, minor] = facts.computeCapability;
  const device = major * 10 + minor;
  const archs = facts.nvrtcArchs
    .map((a) => /^sm_(\d+)$/.exec(a))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  const gpu = `${facts.deviceName ?? 'the GPU'} (compute capability ${major}.${minor})`;
  const nvrtc = `NVRTC ${facts.nvrtcVersion?.join('.') ?? ''}`.trim();
  if (archs.includes(device)) return { target: deviceCubinTarget(device), kind: 'cubin', arch: device };
  const below = archs.filter((a) => a <= device);
  if (below.length === 0) {
    const range = archs.length ? `sm_${archs[0]} to sm_${archs[archs.length - 1]}` : 'no architectures';
    throw new CudaError(
      'KILN_CUDA_UNSUPPORTED_DEVICE',
      `${gpu} is older than ${nvrtc} supports (${range}). Use an NVRTC that still targets it ` +
        '(e.g. CUDA 12\'s, from the nvidia-cuda-nvrtc-cu12 pip wheel, via KILN_NVRTC_PATH), or run on the CPU backend ' +
        "(device: 'cpu').",
    );
  }
  const arch = below[below.length - 1];
  const warning =
    `${gpu} is newer than ${nvrtc} supports (newest: sm_${archs[archs.length - 1]}): kiln compiles PTX for ` +
    `compute_${arch}, which the driver JIT-compiles at load (a slower first load, maybe slower kernels). ` +
    'Install a newer NVRTC for native cubins.';
  const key = `${device}/${archs.join(',')}`;
  if (warn && !warned.has(key)) {
    warned.add(key);
    process.emitWarning(warning, { code: 'KILN_PTX_JIT' });
  }
  return { target: `compute_${arch}`, kind: 'ptx', arch, warning };
}

/** What ptxas reported for one function (`--ptxas-options=-v`). */
export interface PtxasFunctionInfo {
  /** True for `__global__` kernels (entry functions). */
  entry: boolean;
  registers: number;
  /** Static shared memory. */
  sharedBytes: number;
  spillStores: number;
  spillLoads: number;
  stackBytes: number;
  barriers: number;
}

/**
 * Parses NVRTC's log of a compile with `--ptxas-options=-v` into per-function figures,
 * keyed by (mangled) function name. Lines it does not know are ignored.
 */
export function parsePtxasLog(log: string): Record<string, PtxasFunctionInfo> {
  const out: Record<string, PtxasFunctionInfo> = {};
  const get = (name: string, entry = false): PtxasFunctionInfo => {
    out[name] ??= { entry, registers: 0, sharedBytes: 0, spillStores: 0, spillLoads: 0, stackBytes: 0, barriers: 0 };
    if (entry) out[name].entry = true;
    return out[name];
  };
  const num = (re: RegExp, line: string): number | undefined => {
    const m = re.exec(line);
    return m ? Number(m[1]) : undefined;
  };
  let entry: string | undefined; // the entry function being compiled ("Used ..." lines)
  let props: string | undefined; // the function whose properties come next (stack/spills)
  for (const line of log.split('\n')) {
    let m = /Compiling entry function '([^']+)'/.exec(line);
    if (m) {
      entry = m[1];
      get(entry, true);
      continue;
    }
    m = /Function properties for (\S+)/.exec(line);
    if (m) {
      props = m[1];
      continue;
    }
    m = /spilled to local memory in function '([^']+)'/.exec(line);
    const target = m ? m[1] : /bytes stack frame/.test(line) ? props : undefined;
    if (target !== undefined) {
      const f = get(target);
      f.stackBytes = num(/(\d+) bytes stack frame/, line) ?? f.stackBytes;
      f.spillStores = num(/(\d+) bytes spill stores/, line) ?? f.spillStores;
      f.spillLoads = num(/(\d+) bytes spill loads/, line) ?? f.spillLoads;
      continue;
    }
    if (entry !== undefined && /Used \d+ registers/.test(line)) {
      const f = get(entry, true);
      f.registers = num(/Used (\d+) registers/, line) ?? 0;
      f.barriers = num(/used (\d+) barriers/, line) ?? 0;
      f.sharedBytes = num(/(\d+) bytes smem/, line) ?? 0;
    }
  }
  return out;
}

/** Names of the functions in a parsed log that spill registers to local memory. */
export function spillingFunctions(info: Record<string, PtxasFunctionInfo>): string[] {
  return Object.entries(info)
    .filter(([, f]) => f.spillStores > 0 || f.spillLoads > 0)
    .map(([name]) => name);
}
