/**
 * The binding to kiln's native addon: loads it (a prebuild or a local build) through
 * node-gyp-build, finds NVRTC, and wraps every native call so that failures surface as the
 * typed errors of lib/util/errors.ts. Nothing here runs at require time: the addon loads on
 * first use, the CUDA driver on the first GPU call, NVRTC on the first compile or info().
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AddonError, ArgumentError, CudaError, FormatError, KilnError, NvrtcError } from '../util/errors';

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
  /** Calls `symbol` on libuv's pool; the buffers must not be touched until it resolves. */
  callAsync(symbol: string, buffers: HostBuffer[], ints?: BigInt64Array | number[]): Promise<void>;
}

type Handle = { readonly __kilnHandle: unique symbol };
type NvrtcStatus =
  | { available: true; path: string; foundBy: string; version: [number, number]; archs: string[]; tried: string[] }
  | { available: false; code: string; reason: string; tried: string[] };

/** The addon's raw surface (see native/kiln.cc). */
interface RawAddon {
  info(): { napiVersion: number; compileJobs: number; driver: NativeInfo['driver'] };
  nvrtcLoad(search: { envPath?: string; cudaHomes: string[]; siteDirs: string[] }): NvrtcStatus;
  nvrtcCompile(req: NvrtcRequest): Promise<NvrtcResult>;
  cpuLoad(path: string): Handle;
  cpuCall(lib: Handle, symbol: string, buffers: HostBuffer[], ints?: BigInt64Array | number[]): void;
  cpuCallAsync(lib: Handle, symbol: string, buffers: HostBuffer[], ints?: BigInt64Array | number[]): Promise<void>;
  memAlloc(bytes: number, device: number): Handle;
  memFree(mem: Handle): void;
  memInfo(mem: Handle): { ptr: bigint; bytes: number; device: number; freed: boolean };
  memStats(): { liveBytes: number; liveAllocations: number };
  memcpyHtoD(dst: Handle, dstOffset: number, src: HostBuffer): Promise<void>;
  memcpyDtoH(dst: HostBuffer, src: Handle, srcOffset: number): Promise<void>;
  moduleLoad(image: HostBuffer, device: number): Handle;
  moduleUnload(mod: Handle): void;
  moduleGetFunction(mod: Handle, name: string): Handle;
  launch(fn: Handle, grid: number[], block: number[], sharedMemBytes: number, args: HostBuffer): void;
  synchronize(device: number): Promise<void>;
}

/** Turns an error thrown by the addon (which carries `code`) into kiln's typed error. */
export function translateNativeError(e: unknown): KilnError {
  if (e instanceof KilnError) return e;
  const err = (e ?? {}) as { code?: unknown; message?: unknown; cudaError?: unknown; log?: unknown };
  const code = typeof err.code === 'string' ? err.code : 'KILN_NATIVE';
  const message = typeof err.message === 'string' ? err.message : String(e);
  let out: KilnError;
  if (code.startsWith('KILN_CUDA')) {
    out = new CudaError(code, message, typeof err.cudaError === 'string' ? err.cudaError : undefined);
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

function guard<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw translateNativeError(e);
  }
}

async function guardAsync<T>(fn: () => Promise<T>): Promise<T> {
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

function addon(): RawAddon {
  if (loaded) return loaded.addon;
  const root = packageRoot();
  let file: string;
  try {
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
  const python = process.env.KILN_PYTHON || 'python3';
  const script =
    'import json, site, sys\n' +
    'p = list(getattr(site, "getsitepackages", lambda: [])())\n' +
    'p.append(site.getusersitepackages())\n' +
    'print(json.dumps(p + [x for x in sys.path if x]))';
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
  };
}

// ---- GPU primitives (CUDA driver) ------------------------------------------------------

/** Live device memory, counted process-wide (GPU memory is invisible to V8's GC). */
export function deviceMemoryStats(): { liveBytes: number; liveAllocations: number } {
  const raw = addon();
  return guard(() => raw.memStats());
}

/** A block of device memory. Free it explicitly (`free()` or `using`); GC only backs that up. */
export class DeviceBuffer {
  readonly #raw: RawAddon;
  readonly #handle: Handle;
  /** Size in bytes. */
  readonly bytes: number;
  /** CUDA device ordinal. */
  readonly device: number;

  /** Allocates `bytes` on `device`; throws CudaError (KILN_CUDA_UNAVAILABLE without a GPU). */
  constructor(bytes: number, device = 0) {
    this.#raw = addon();
    this.#handle = guard(() => this.#raw.memAlloc(bytes, device));
    this.bytes = bytes;
    this.device = device;
  }
  /** The device address, for packing into kernel arguments. */
  get ptr(): bigint {
    return guard(() => this.#raw.memInfo(this.#handle)).ptr;
  }
  get freed(): boolean {
    return guard(() => this.#raw.memInfo(this.#handle)).freed;
  }
  /** Frees the memory; calling it again does nothing. */
  free(): void {
    guard(() => this.#raw.memFree(this.#handle));
  }
  [Symbol.dispose](): void {
    this.free();
  }
  /** Copies `src` into this buffer at `offset` bytes, off the JS thread. */
  write(src: HostBuffer, offset = 0): Promise<void> {
    return guardAsync(() => this.#raw.memcpyHtoD(this.#handle, offset, src));
  }
  /** Copies from this buffer at `offset` bytes into `dst` (its whole length), off the JS thread. */
  read(dst: HostBuffer, offset = 0): Promise<void> {
    return guardAsync(() => this.#raw.memcpyDtoH(dst, this.#handle, offset));
  }
}

/** A kernel argument: a device buffer (its address), or a scalar of the given C type. */
export type KernelArg =
  | DeviceBuffer
  | { i32: number }
  | { u32: number }
  | { f32: number }
  | { i64: bigint | number }
  | { f64: number };

/**
 * Packs kernel arguments the way cuLaunchKernel's packed-buffer form reads them: each at an
 * offset aligned to its own size, as the C ABI lays out a kernel's parameters.
 */
export function packKernelArgs(args: KernelArg[]): Uint8Array {
  const out = new DataView(new ArrayBuffer(8 * args.length + 8));
  let at = 0;
  const place = (size: number): number => {
    at = Math.ceil(at / size) * size;
    const start = at;
    at += size;
    return start;
  };
  for (const a of args) {
    if (a instanceof DeviceBuffer) out.setBigUint64(place(8), a.ptr, true);
    else if ('i32' in a) out.setInt32(place(4), a.i32, true);
    else if ('u32' in a) out.setUint32(place(4), a.u32, true);
    else if ('f32' in a) out.setFloat32(place(4), a.f32, true);
    else if ('i64' in a) out.setBigInt64(place(8), BigInt(a.i64), true);
    else out.setFloat64(place(8), a.f64, true);
  }
  return new Uint8Array(out.buffer, 0, at);
}

/** A kernel in a loaded module. */
export class CudaKernel {
  readonly #raw: RawAddon;
  readonly #handle: Handle;
  readonly name: string;
  /** @internal made by CudaModule.getFunction */
  constructor(raw: RawAddon, handle: Handle, name: string) {
    this.#raw = raw;
    this.#handle = handle;
    this.name = name;
  }
  /** Launches on the default stream (asynchronous; `synchronize()` waits for it). */
  launch(grid: number[], block: number[], args: Uint8Array | KernelArg[], sharedMemBytes = 0): void {
    const packed = args instanceof Uint8Array ? args : packKernelArgs(args);
    guard(() => this.#raw.launch(this.#handle, grid, block, sharedMemBytes, packed));
  }
}

/** A module loaded from a cubin or PTX image (cuModuleLoadData). */
export class CudaModule {
  readonly #raw: RawAddon;
  readonly #handle: Handle;
  /** Loads `image` on `device`; throws CudaError (KILN_CUDA_UNAVAILABLE without a GPU). */
  constructor(image: HostBuffer, device = 0) {
    this.#raw = addon();
    this.#handle = guard(() => this.#raw.moduleLoad(image, device));
  }
  /** Looks up an `extern "C"` kernel by name. */
  getFunction(name: string): CudaKernel {
    return new CudaKernel(this.#raw, guard(() => this.#raw.moduleGetFunction(this.#handle, name)), name);
  }
  /** Unloads the module; its kernels can no longer launch. Calling it again does nothing. */
  unload(): void {
    guard(() => this.#raw.moduleUnload(this.#handle));
  }
  [Symbol.dispose](): void {
    this.unload();
  }
}

/** Waits, off the JS thread, until all work queued on `device`'s default stream is done. */
export function synchronize(device = 0): Promise<void> {
  return guardAsync(async () => addon().synchronize(device));
}

// ---- cubin inspection ------------------------------------------------------------------

/**
 * Reads the SM version a cubin was built for from its ELF header: EM_CUDA (190) machine,
 * and the SM in e_flags (bits 0-7 up to ELF ABI version 7; bits 8-15 from version 8, which
 * CUDA 12.8+/13 emit). Throws FormatError if `binary` is not a 64-bit CUDA ELF.
 */
export function readCubinArch(binary: Uint8Array): { sm: number; abiVersion: number } {
  const view = new DataView(binary.buffer, binary.byteOffset, binary.byteLength);
  const isElf = binary.length >= 64 && view.getUint32(0, false) === 0x7f454c46;
  if (!isElf || binary[4] !== 2 || view.getUint16(18, true) !== 190) {
    throw new FormatError('KILN_BAD_CUBIN', 'not a 64-bit CUDA ELF (cubin): wrong magic, class or machine');
  }
  const abiVersion = binary[8]!;
  const flags = view.getUint32(48, true);
  return { sm: abiVersion >= 8 ? (flags >> 8) & 0xff : flags & 0xff, abiVersion };
}
