/**
 * The binding to kiln's native addon: loads it (a prebuild or a local build) through
 * node-gyp-build, finds NVRTC, and wraps every native call so that failures surface as the
 * typed errors of lib/util/errors.ts. Nothing here runs at require time: the addon loads on
 * first use, the CUDA driver on the first GPU call, NVRTC on the first compile or info().
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AddonError, ArgumentError, CudaError, KilnError, NvrtcError } from '../util/errors';
import { envInt, readEnv } from '../util/env';

/** One CUDA device. */
export interface DeviceInfo {
  index: number;
  name: string;
  computeCapability: [number, number];
  totalMemory: number;
  smCount: number;
}

/** Either the thing and its details, or the reason it is missing. */
export type Availability<T> = ({ available: true } & T) | { available: false; reason: string };

/** What `kiln doctor` and backend selection need to know about the native side. */
export interface NativeInfo {
  addon: { path: string; source: 'prebuild' | 'build' };
  driver: Availability<{ version: number; devices: DeviceInfo[] }>;
  nvrtc: Availability<{ path: string; foundBy: string; version: [number, number]; archs: string[] }> & {
    tried: string[];
  };
}

/** An NVRTC compile: `target` sm_XX gives a cubin, compute_XX gives PTX. */
export interface NvrtcRequest {
  source: string;
  name: string;
  target: string;
  options?: string[];
}

/** A finished compile: the binary, NVRTC's log (warnings, `--ptxas-options=-v` output). */
export interface NvrtcResult {
  binary: Buffer;
  log: string;
  kind: 'cubin' | 'ptx';
}

/** Host memory a kernel or a copy reads or writes. */
export type HostBuffer = ArrayBuffer | ArrayBufferView;

/** A dlopen'd CPU kernel library: entry points are `void fn(void** bufs, const int64_t* ints)`. */
export interface CpuLibrary {
  readonly path: string;
  /** Calls `symbol` on the JS thread (for short kernels). */
  call(symbol: string, buffers: HostBuffer[], ints?: BigInt64Array | number[]): void;
  /**
   * Calls `symbol` on kiln's compute thread (one per process, calls in submission order);
   * resolves with the call's wall time in microseconds. Neither `buffers` (the array is kept
   * as it is) nor the buffers may be touched until it resolves.
   */
  callAsync(symbol: string, buffers: HostBuffer[], ints?: BigInt64Array | number[]): Promise<number>;
  /**
   * Calls `symbol` on this (the JS) thread if the compute thread is idle, nothing being
   * queued or running, and returns its wall time in microseconds; returns -1 without calling
   * it when the compute thread is busy or the library parallelizes with OpenMP (a second
   * team of threads for this thread). Calls stay one at a time, process-wide.
   */
  tryCall(symbol: string, buffers: HostBuffer[], ints?: BigInt64Array | number[]): number;
}

/** An opaque native handle (device memory — its address —, module, kernel, executor). */
export type Handle = { readonly __kilnHandle: unique symbol };
type NvrtcStatus =
  | { available: true; path: string; foundBy: string; version: [number, number]; archs: string[]; tried: string[] }
  | { available: false; code: string; reason: string; tried: string[] };

/** The addon's raw surface (see native/kiln.cc). */
export interface RawAddon {
  info(): { napiVersion: number; compileJobs: number; driver: NativeInfo['driver'] };
  nvrtcLoad(search: { envPath?: string; cudaHomes: string[]; siteDirs: string[] }): NvrtcStatus;
  nvrtcCompile(req: NvrtcRequest): Promise<NvrtcResult>;
  cpuLoad(path: string): Handle;
  cpuCall(lib: Handle, symbol: string, buffers: HostBuffer[], ints?: BigInt64Array | number[]): void;
  cpuCallAsync(lib: Handle, symbol: string, buffers: HostBuffer[], ints?: BigInt64Array | number[]): Promise<number>;
  cpuTryCall(lib: Handle, symbol: string, buffers: HostBuffer[], ints?: BigInt64Array | number[]): number;
  /** A block's handle is its device address as a BigInt (also written to `ptrOut[0]`). */
  memAlloc(bytes: number, device: number, ptrOut?: BigUint64Array): Handle;
  memFree(mem: Handle): void;
  memInfo(mem: Handle): { ptr: bigint; bytes: number; device: number; freed: boolean };
  memStats(device: number): PoolStats;
  memTrim(device: number): number;
  memcpyHtoD(dst: Handle, dstOffset: number, src: HostBuffer): Promise<void>;
  memcpyDtoH(dst: HostBuffer, src: Handle, srcOffset: number): Promise<void>;
  memcpyDtoD(dst: Handle, dstOffset: number, src: Handle, srcOffset: number, bytes: number): void;
  memset(dst: Handle, offset: number, value: number, bytes: number): void;
  moduleLoad(image: HostBuffer, device: number): Handle;
  moduleUnload(mod: Handle): void;
  moduleGetFunction(mod: Handle, name: string): Handle;
  launch(fn: Handle, grid: number[], block: number[], sharedMemBytes: number, args: HostBuffer): void;
  synchronize(device: number): Promise<void>;
  execCreate(mod: Handle, spec: RawExecutorSpec): Handle;
  execRun(exec: Handle, ptrs: BigUint64Array, syms: BigInt64Array, grids: Uint32Array, graph: boolean, copyBytes?: BigUint64Array): Promise<void>;
  execStats(exec: Handle): ExecutorStats;
  execDispose(exec: Handle): void;
}

/** Counters of a device's caching allocator (bytes are block sizes unless named "requested"). */
export interface PoolStats {
  /** In blocks handed out and not yet freed. */
  liveBytes: number;
  liveAllocations: number;
  /** What the live allocations asked for, before rounding to size classes. */
  requestedBytes: number;
  /** Freed blocks kept for reuse (`trimDeviceMemory` gives them back). */
  cachedBytes: number;
  cachedBlocks: number;
  /** live + cached: what the driver holds for kiln. */
  reservedBytes: number;
  peakLiveBytes: number;
  peakReservedBytes: number;
  /** Every successful allocation, and those served from the cache. */
  allocations: number;
  cacheHits: number;
  /** Real cuMemAlloc / cuMemFree calls. */
  driverAllocations: number;
  driverFrees: number;
  /** Allocations that succeeded only after the cache was released on out-of-memory. */
  oomRecoveries: number;
}

/** A plan as the native executor takes it: kernels by index, buffers by plan id. */
export interface RawExecutorSpec {
  numBuffers: number;
  numSymbols: number;
  kernels: string[];
  steps: { kernel: number; buffers: readonly number[]; block: readonly number[]; sharedBytes: number }[];
  /** Device copies queued after the steps, buffer `src` into buffer `dst` (sizes per run). */
  copies?: readonly { dst: number; src: number }[];
}

/** What an executor did, and what its kernels are. */
export interface ExecutorStats {
  runs: number;
  /** Kernels launched one by one (runs without a graph), and copies queued so. */
  kernelLaunches: number;
  copies: number;
  /** Replays of a captured graph, and captures. */
  graphLaunches: number;
  graphCaptures: number;
  graphEvictions: number;
  graphsCached: number;
  /** Host time spent inside the native run call, summed over runs, and of the last run. */
  enqueueNs: number;
  lastEnqueueNs: number;
  /** Part of enqueueNs spent capturing and instantiating graphs. */
  captureNs: number;
  /** Why graph capture failed (graphs are then off for this executor). */
  graphError?: string;
  kernels: { name: string; registers: number; localBytes: number; maxThreadsPerBlock: number; params: number | null }[];
}

/** Out of GPU memory even after the caching allocator released its cache (KILN_CUDA_OOM). */
export class CudaOomError extends CudaError {
  readonly requestedBytes: number;
  /** kiln's live buffers, and what it had cached (released before the retry). */
  readonly liveBytes: number;
  readonly cachedBytes: number;
  /** The device's free and total memory when the retry failed. */
  readonly freeBytes: number;
  readonly totalBytes: number;
  constructor(message: string, f: { requestedBytes: number; liveBytes: number; cachedBytes: number; freeBytes: number; totalBytes: number }) {
    super('KILN_CUDA_OOM', message, 'CUDA_ERROR_OUT_OF_MEMORY');
    this.requestedBytes = f.requestedBytes;
    this.liveBytes = f.liveBytes;
    this.cachedBytes = f.cachedBytes;
    this.freeBytes = f.freeBytes;
    this.totalBytes = f.totalBytes;
  }
}

const FAULT =
  'A kernel faulted: the CUDA context is now unusable, so restart the process. This is a kiln bug ' +
  "if kiln generated the kernel: please report it with the bundle's kernels.cu";
/** What to do about a driver error, appended to its message. */
const CUDA_HINTS: Readonly<Record<string, string>> = {
  CUDA_ERROR_ILLEGAL_ADDRESS: FAULT,
  CUDA_ERROR_MISALIGNED_ADDRESS: FAULT,
  CUDA_ERROR_ILLEGAL_INSTRUCTION: FAULT,
  CUDA_ERROR_LAUNCH_FAILED: FAULT,
  CUDA_ERROR_HARDWARE_STACK_ERROR: FAULT,
  CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: 'The kernel needs more registers or shared memory than its block size allows: launch it with a smaller block',
  CUDA_ERROR_NO_BINARY_FOR_GPU: "The binary was built for another GPU: rebuild it (or the bundle) for this device's sm_XY",
  CUDA_ERROR_INVALID_IMAGE: 'The cubin is corrupt or for another GPU: delete the bundle so that it is rebuilt',
  CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
    "NVRTC is newer than the NVIDIA driver: update the driver, or set KILN_NVRTC_PATH to an NVRTC no newer than the driver's CUDA version",
  CUDA_ERROR_INVALID_PTX: 'The driver rejected the PTX: check that NVRTC and the driver are compatible (see `kiln doctor`)',
  CUDA_ERROR_NOT_FOUND: 'The module lacks a kernel the plan names: the bundle is inconsistent; delete it so that it is rebuilt',
  CUDA_ERROR_OUT_OF_MEMORY: 'Free GPU memory (dispose tensors you no longer need) or use smaller inputs',
  CUDA_ERROR_INVALID_VALUE: 'The driver rejected an argument: this is a kiln bug, please report it with this message',
};

/** Turns an error thrown by the addon (which carries `code`) into kiln's typed error. */
export function translateNativeError(e: unknown): KilnError {
  if (e instanceof KilnError) return e;
  const err = (e ?? {}) as { code?: unknown; message?: unknown; cudaError?: unknown; log?: unknown };
  const code = typeof err.code === 'string' ? err.code : 'KILN_NATIVE';
  const message = typeof err.message === 'string' ? err.message : String(e);
  let out: KilnError;
  if (code === 'KILN_CUDA_OOM') {
    const n = (k: string): number => Number((e as Record<string, unknown>)[k] ?? NaN);
    out = new CudaOomError(message, {
      requestedBytes: n('requestedBytes'),
      liveBytes: n('liveBytes'),
      cachedBytes: n('cachedBytes'),
      freeBytes: n('freeBytes'),
      totalBytes: n('totalBytes'),
    });
  } else if (code.startsWith('KILN_CUDA')) {
    const cudaError = typeof err.cudaError === 'string' ? err.cudaError : undefined;
    const hint = cudaError ? CUDA_HINTS[cudaError] : undefined;
    out = new CudaError(code, hint ? `${message}. ${hint}` : message, cudaError);
  } else if (code.startsWith('KILN_NVRTC')) {
    out = new NvrtcError(code, message, typeof err.log === 'string' ? err.log : '');
  } else if (code === 'KILN_ARGUMENT') {
    out = new ArgumentError(code, message);
  } else {
    out = new KilnError(code, message); // KILN_DLOPEN, KILN_NATIVE
  }
  // Keep the original for debugging without making it part of the message.
  Object.defineProperty(out, 'cause', { value: e, enumerable: false });
  return out;
}

/** Runs a native call, translating what it throws. */
export function guard<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw translateNativeError(e);
  }
}

/** Awaits a native call's Promise, translating a rejection or throw. */
export async function guardAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw translateNativeError(e);
  }
}

// ---- loading the addon ---------------------------------------------------------------

let loaded: { addon: RawAddon; path: string; source: 'prebuild' | 'build' } | undefined;

/** The package root: the nearest folder above this file whose package.json is kiln's. */
function packageRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'kiln') return dir;
    } catch {
      // no package.json here; keep walking up
    }
    if (path.dirname(dir) === dir) return path.resolve(__dirname, '..', '..');
  }
}

// ---- the variables the addon itself reads ----------------------------------------------

/** KILN_NVRTC_JOBS: concurrent NVRTC compiles (native/kiln.cc reads it when the addon loads). */
export function nvrtcJobs(env: NodeJS.ProcessEnv = process.env): number {
  return envInt('KILN_NVRTC_JOBS', { min: 1, max: 64, fallback: 2, unit: 'concurrent NVRTC compiles' }, env);
}

/** KILN_CUDA_POLL_US: µs a CUDA run is polled on the JS thread (native/completion.cc reads it when the first run starts). */
export function cudaPollUs(env: NodeJS.ProcessEnv = process.env): number {
  return envInt('KILN_CUDA_POLL_US', { min: 0, max: 10_000, fallback: 50, unit: 'microseconds; 0 leaves every run to the waiter thread' }, env);
}

/**
 * Checks the variables the native addon reads (`KILN_NVRTC_JOBS`, `KILN_CUDA_POLL_US`):
 * ArgumentError KILN_BAD_ENV for a bad value. The addon itself would quietly use its
 * default, so kiln says so first, before the engine looks up a bundle (checkCpuEnv,
 * checkCudaEnv). Not when the addon loads: callers that probe the addon (doctor, device
 * placement) would read a bad value as a broken install.
 */
export function checkNativeEnv(env: NodeJS.ProcessEnv = process.env): void {
  nvrtcJobs(env);
  cudaPollUs(env);
}

/** The raw addon, loaded on first use; throws AddonError when it cannot load. */
export function addon(): RawAddon {
  if (loaded) return loaded.addon;
  const root = packageRoot();
  let file: string;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily, on first use
    const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    file = nodeGypBuild.resolve(root);
  } catch (e) {
    throw new AddonError(
      'KILN_ADDON_LOAD',
      `kiln's native addon was not found under ${root} (no prebuilds/ for ${process.platform}-${process.arch} ` +
        `and no build/Release): run \`npm run build:native\`. ${(e as Error).message}`,
      { cause: e },
    );
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a .node file found at run time
    const raw = require(file) as RawAddon;
    const source = file.split(path.sep).includes('prebuilds') ? 'prebuild' : 'build';
    loaded = { addon: raw, path: file, source };
    return raw;
  } catch (e) {
    throw new AddonError('KILN_ADDON_LOAD', `kiln's native addon ${file} failed to load: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

// ---- NVRTC discovery -----------------------------------------------------------------

let nvrtcStatus: NvrtcStatus | undefined;
let pythonDirs: { dirs: string[]; note?: string } | undefined;

/** NVRTC lib dirs inside Python's site-packages; asks python3 once per process. */
function pythonNvrtcDirs(): { dirs: string[]; note?: string } {
  if (pythonDirs) return pythonDirs;
  const python = readEnv('KILN_PYTHON') ?? 'python3';
  const script =
    'import json, site, sys\n' +
    'p = list(getattr(site, "getsitepackages", lambda: [])())\n' +
    'p.append(site.getusersitepackages())\n' +
    'print(json.dumps(p + [x for x in sys.path if x]))';
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: only NVRTC discovery runs python3
  const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
  const r = spawnSync(python, ['-c', script], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0 || r.error) {
    const why = r.error ? r.error.message : (r.stderr || '').trim().split('\n').pop();
    pythonDirs = { dirs: [], note: `${python} [site-packages]: could not list site-packages (${why})` };
    return pythonDirs;
  }
  let roots: string[];
  try {
    roots = JSON.parse(r.stdout) as string[];
  } catch {
    pythonDirs = { dirs: [], note: `${python} [site-packages]: unreadable output ${JSON.stringify(r.stdout.slice(0, 80))}` };
    return pythonDirs;
  }
  const dirs = new Set<string>();
  for (const root of roots) {
    // CUDA 13 wheels install to nvidia/cu13/lib, CUDA 12 wheels to nvidia/cuda_nvrtc/lib.
    for (const sub of [['nvidia', 'cu13', 'lib'], ['nvidia', 'cuda_nvrtc', 'lib']]) {
      const dir = path.join(root, ...sub);
      if (fs.existsSync(dir)) dirs.add(dir);
    }
  }
  pythonDirs = { dirs: [...dirs] };
  if (dirs.size === 0) pythonDirs.note = `${python} [site-packages]: no nvidia/cu13/lib or nvidia/cuda_nvrtc/lib`;
  return pythonDirs;
}

/** Finds and loads NVRTC once per process (Python is asked only if the rest fails). */
function nvrtc(): NvrtcStatus {
  if (nvrtcStatus) return nvrtcStatus;
  const raw = addon();
  const env = process.env;
  const cudaHomes = (['CUDA_PATH', 'CUDA_HOME'] as const).filter((k) => env[k]).map((k) => `${k}=${env[k]}`);
  const envPath = env.KILN_NVRTC_PATH ? path.resolve(env.KILN_NVRTC_PATH) : undefined;
  const search = { cudaHomes, siteDirs: [] as string[], ...(envPath ? { envPath } : {}) };
  let st = guard(() => raw.nvrtcLoad(search));
  if (!st.available && st.code !== 'KILN_NVRTC_BAD_PATH') {
    const py = pythonNvrtcDirs();
    st = guard(() => raw.nvrtcLoad({ ...search, siteDirs: py.dirs }));
    if (!st.available && py.note) st.tried.push(py.note);
  }
  nvrtcStatus = st;
  return st;
}

// ---- the API -------------------------------------------------------------------------

/**
 * What the native side found: the addon, the CUDA driver and its devices, NVRTC. Never
 * throws for a missing GPU, driver or NVRTC (those are reported with a reason); throws
 * AddonError when the addon itself cannot load.
 */
export function addonInfo(): NativeInfo {
  const raw = addon();
  const { driver } = guard(() => raw.info());
  const st = nvrtc();
  const nv: NativeInfo['nvrtc'] = st.available
    ? { available: true, path: st.path, foundBy: st.foundBy, version: st.version, archs: st.archs, tried: st.tried }
    : { available: false, reason: st.reason, tried: st.tried };
  return { addon: { path: loaded!.path, source: loaded!.source }, driver, nvrtc: nv };
}

/**
 * Compiles CUDA C with NVRTC off the JS thread (`--gpu-architecture` comes from `target`).
 * Rejects with NvrtcError: KILN_NVRTC_UNAVAILABLE / KILN_NVRTC_BAD_PATH when NVRTC cannot be
 * loaded, KILN_NVRTC_COMPILE with the compiler's `.log` when the source does not compile.
 */
export async function nvrtcCompile(req: NvrtcRequest): Promise<NvrtcResult> {
  const st = nvrtc();
  if (!st.available) throw new NvrtcError(st.code, st.reason, st.tried.join('\n'));
  const raw = addon();
  return guardAsync(() => raw.nvrtcCompile({ ...req, options: req.options ?? [] }));
}

/** dlopens a CPU kernel library (RTLD_NOW | RTLD_LOCAL); throws KilnError KILN_DLOPEN. */
export function cpuLoad(file: string): CpuLibrary {
  const raw = addon();
  const abs = path.resolve(file);
  const lib = guard(() => raw.cpuLoad(abs));
  return {
    path: abs,
    call: (symbol, buffers, ints) => guard(() => raw.cpuCall(lib, symbol, buffers, ints)),
    callAsync: (symbol, buffers, ints) => guardAsync(() => raw.cpuCallAsync(lib, symbol, buffers, ints)),
    tryCall: (symbol, buffers, ints) => guard(() => raw.cpuTryCall(lib, symbol, buffers, ints)),
  };
}
