/**
 * What a bundle key needs from the machine, computed without tracing and without looking
 * for a compiler: the target string and the code-generation identity. One `BundleBackend`
 * per device is the seam "target → renderer + compiler": the CPU's (this machine's ISA),
 * this machine's GPU (`sm_XY` from the driver, no NVRTC), and offline CUDA targets (`sm_80`,
 * `compute_90`) that `kiln build` compiles for without a GPU.
 *
 * The compiler is not part of a key (docs/BUNDLES.md, "Toolchain: code generation, not the
 * compiler"): a CPU library computes the same whichever C++ compiler built it, and a cubin
 * for sm_XY runs whatever NVRTC built it, so a machine without one loads shipped bundles. A
 * warm start therefore never looks for the C++ compiler, not even on PATH; it reads
 * /proc/cpuinfo once per process for the CPU target, or asks the driver for the GPU's.
 */
import { readdirSync, readFileSync, statSync } from 'fs';
import { basename, dirname, join } from 'path';
import { cpuTarget, parseTarget, type Host, type InputSignature, type KeyInput } from '../cache';
import { deviceCubinTarget, type CudaTarget } from '../runtime/cuda-arch';
import { addon, checkNativeEnv, type DeviceInfo } from '../runtime/native';
import type { Backend } from '../runtime/select';
import { cpuInfo } from '../runtime/toolchain';
import { ArgumentError, CudaError } from '../util/errors';
import { envFlag } from '../util/env';
import { hashFields } from '../util/hash';
import { kilnVersion } from '../util/version';

/** How a device builds and identifies bundles. */
export interface BundleBackend {
  readonly device: Backend;
  /** The target string: this machine's (`cpu-x64+avx2+fma`, `sm_90`) or the offline one asked for. */
  target(): string;
  /** The machine about to run the code, for the target guard. */
  host(): Host;
  /**
   * What generates the code, independent of the compiler that turns it into machine code:
   * the key's `toolchain` field and `guards.toolchain.id`. No I/O (beyond the one-time
   * hash of kiln's built code in a development checkout, see `kilnBuild`).
   */
  codegen(): string;
}

/**
 * The backend that builds bundles for `device` on this machine ('cpu', 'cuda'), or for an
 * offline CUDA target ('sm_90', 'compute_90', 'sm_90a'). Nothing is probed until `target()`
 * or `host()` is asked: then 'cuda' throws CudaError KILN_NO_CUDA_DEVICE on a machine
 * without a GPU. An unknown target is ArgumentError KILN_BAD_TARGET.
 */
export function bundleBackend(device: Backend | string): BundleBackend {
  if (device === 'cpu') return CPU_BACKEND;
  // A bad KILN_CUDA_* or NVRTC variable is the caller's error, said before any lookup (the
  // engine asks for the backend first): found only when a bundle loads or a compile starts,
  // it could be mistaken for the bundle's fault, or be noticed only on a cold start.
  if (device === 'cuda') {
    checkCudaEnv();
    return LOCAL_CUDA_BACKEND;
  }
  const t = parseTarget(device);
  if (t?.kind !== 'cuda') {
    throw new ArgumentError('KILN_BAD_TARGET', `target ${JSON.stringify(device)} is not 'cpu' or a CUDA architecture (sm_XY, sm_XYa, compute_XY)`);
  }
  checkCudaEnv();
  // An offline target's host is a device of exactly that capability: what the target guard
  // of a bundle found in the output dir is checked against (PTX: that capability or newer).
  return { device: 'cuda', target: () => device, host: () => ({ kind: 'cuda', computeCapability: t.cc }), codegen: cudaCodegen };
}

/** `KILN_CUDA_WGMMA`: whether matmuls on sm_90a may use the wgmma kernel (default on). */
export function cudaWgmmaAllowed(env: NodeJS.ProcessEnv = process.env): boolean {
  return envFlag('KILN_CUDA_WGMMA', env, true);
}

/** `KILN_CUDA_TUNE`: whether a CUDA compile times candidate configurations on the GPU (default on). */
export function cudaTuneByDefault(env: NodeJS.ProcessEnv = process.env): boolean {
  return envFlag('KILN_CUDA_TUNE', env, true);
}

/**
 * Checks every variable a CUDA program reads (`KILN_CUDA_WGMMA`, `KILN_CUDA_TUNE`, and the
 * native addon's: `checkNativeEnv`): ArgumentError KILN_BAD_ENV for a bad value.
 */
export function checkCudaEnv(env: NodeJS.ProcessEnv = process.env): void {
  cudaWgmmaAllowed(env);
  cudaTuneByDefault(env);
  checkNativeEnv(env);
}

// ---- CPU -------------------------------------------------------------------------------

type CpuHost = Extract<Host, { kind: 'cpu' }>;

let hostMemo: { target: string; host: CpuHost } | undefined;

/**
 * This machine as a CPU bundle target, read once per process: the target string and the
 * host for the target guard. `host.features` are the ISA features the C++ is compiled for
 * (`cppFlags(host.features, host.arch)`, engine/compile.ts): exactly those the target names,
 * so every host the guard accepts can run the code.
 */
export function cpuHost(): { target: string; host: CpuHost } {
  if (!hostMemo) {
    const info = cpuInfo();
    hostMemo = { target: cpuTarget(process.arch, info.features), host: { kind: 'cpu', arch: process.arch, features: info.features } };
  }
  return hostMemo;
}

/**
 * The CPU code-generation identity, e.g. `cpp:kiln-0.1.0:isa-flags`: kiln's version
 * (which versions the renderer and kiln's own compiler flags) plus, in a development
 * checkout running from dist/, the hash of its built code generator, and the code model:
 * compiled for the target's ISA features by explicit flags (`isaFlags`), not `-march=native`.
 * The ISA the code may use is the `target` key field; user flags (`KILN_CXXFLAGS`) are an
 * `env` key field.
 */
export function cpuCodegen(): string {
  const build = kilnBuild();
  return `cpp:kiln-${kilnVersion()}${build ? `+${build}` : ''}:isa-flags`;
}

const CPU_BACKEND: BundleBackend = {
  device: 'cpu',
  target: () => cpuHost().target,
  host: () => cpuHost().host,
  codegen: cpuCodegen,
};

// ---- CUDA ------------------------------------------------------------------------------

/**
 * CUDA device `ordinal` as the driver reports it (no NVRTC search: a warm start on a GPU
 * needs none), or CudaError KILN_NO_CUDA_DEVICE naming what is missing.
 */
export function cudaDevice(ordinal = 0): DeviceInfo {
  const use = "Use device: 'cpu' (or 'auto'); `npx kiln doctor` shows what kiln finds.";
  let driver: ReturnType<ReturnType<typeof addon>['info']>['driver'];
  try {
    driver = addon().info().driver;
  } catch (e) {
    throw new CudaError('KILN_NO_CUDA_DEVICE', `device: 'cuda' needs kiln's native addon, which did not load (${(e as Error).message}). ${use}`);
  }
  if (!driver.available) throw new CudaError('KILN_NO_CUDA_DEVICE', `device: 'cuda' needs the NVIDIA driver: ${driver.reason}. ${use}`);
  const dev = driver.devices[ordinal];
  if (!dev) {
    throw new CudaError('KILN_NO_CUDA_DEVICE', `device: 'cuda' needs a GPU, but the CUDA driver reports ${driver.devices.length} (no device ${ordinal}). ${use}`);
  }
  return dev;
}

let cudaMemo: { target: string; host: Host } | undefined;

/**
 * This machine's GPU as a bundle target: `sm_XY` of its compute capability (`sm_90a` on
 * Hopper: `deviceCubinTarget`), from the driver alone — a warm start neither loads nor even
 * looks for NVRTC (finding it can take longer than the whole warm start). When the NVRTC here is older than the GPU, a compile under this
 * key builds PTX for the newest architecture it knows, which the driver JIT-compiles for this
 * GPU (see `imageFitsTarget`).
 */
function localCuda(): { target: string; host: Host } {
  if (!cudaMemo) {
    const dev = cudaDevice(0);
    const [major, minor] = dev.computeCapability;
    cudaMemo = { target: deviceCubinTarget(major * 10 + minor), host: { kind: 'cuda', computeCapability: dev.computeCapability } };
  }
  return cudaMemo;
}

/**
 * Whether an image built for `image` may sit in a bundle whose (keyed, guarded) target is
 * `target`: the same target, or — for a GPU newer than the NVRTC that compiled it — PTX of an
 * older architecture in an `sm_XY` bundle, which the driver JIT-compiles for exactly that GPU.
 * Not arch-specific PTX (`compute_90a`): the driver JIT-compiles it for its own capability
 * only, never for a newer GPU.
 */
export function imageFitsTarget(target: string, image: CudaTarget): boolean {
  if (image.target === target) return true;
  const sm = /^sm_(\d+)a?$/.exec(target); // Hopper's own target is sm_90a
  if (sm === null || image.kind !== 'ptx' || image.arch > Number(sm[1])) return false;
  const t = parseTarget(image.target);
  return t?.kind === 'cuda' && t.output === 'ptx' && !t.archSpecific;
}

// Every CUDA architecture an NVRTC of CUDA 12 or 13 compiles for (compute capability × 10):
// the PTX targets a GPU's own target falls back to.
const KNOWN_CUDA_ARCHS: readonly number[] = [50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 88, 89, 90, 100, 101, 103, 110, 120, 121];

/**
 * The other bundle targets a GPU whose own target is `sm_XY` (or `sm_XYa`, Hopper's own) also
 * runs, best first: the other cubin of its capability (`sm_XYa` for `sm_XY` and back; sm_90
 * and newer only: earlier GPUs have no arch-specific targets) and `compute_XYa` PTX, then
 * `compute_ZW` PTX for XY and every known ZW below it, newest first (the driver JIT-compiles
 * PTX for a GPU of its capability or newer). What `kiln build --target sm_90` or `--target
 * compute_80` built has its own key (the target is a key field), so
 * `kiln.compile(fn, { device: 'cuda' })` finds it only by looking these up when its own key
 * misses. [] for any other target (a CPU target, PTX).
 */
export function fallbackTargets(target: string): string[] {
  const t = parseTarget(target);
  if (t?.kind !== 'cuda' || t.output !== 'cubin') return [];
  const cc = t.cc;
  const specific = cc >= 90 ? [t.archSpecific ? `sm_${cc}` : `sm_${cc}a`, `compute_${cc}a`] : [];
  const ptx = [...new Set([cc, ...KNOWN_CUDA_ARCHS.filter((a) => a <= cc)])].sort((a, b) => b - a).map((a) => `compute_${a}`);
  return [...specific, ...ptx];
}

/**
 * The CUDA code-generation identity, e.g. `cuda:kiln-0.1.0`: kiln's version (which versions
 * the renderer, the launch heuristics and kiln's NVRTC options) plus, in a development
 * checkout running from dist/, the hash of its built code generator. Not NVRTC's version: a
 * cubin for sm_XY is valid whatever NVRTC built it (it is recorded in the manifest instead).
 */
export function cudaCodegen(): string {
  const build = kilnBuild();
  return `cuda:kiln-${kilnVersion()}${build ? `+${build}` : ''}`;
}

const LOCAL_CUDA_BACKEND: BundleBackend = {
  device: 'cuda',
  target: () => localCuda().target,
  host: () => localCuda().host,
  codegen: cudaCodegen,
};

// ---- key input -------------------------------------------------------------------------

/** What identifies a program before tracing; the engine adds target, toolchain and env. */
export interface ProgramSignature {
  /** Bundle namespace (the compiled function's name). */
  readonly name: string;
  /** `fn.toString()`. */
  readonly fnSource: string;
  /** Each input's dtype and shape as first called, and which of its dims are dynamic. */
  readonly inputs: readonly InputSignature[];
  /** The `key` option as canonical JSON; absent when none was given. */
  readonly userKey?: string;
  /** The `tf32` option: float32 matmuls on TF32 tensor cores (CUDA only). */
  readonly tf32?: boolean;
}

/**
 * Which dynamic dims share one symbol. Tracing gives dynamic dims of equal example size one
 * symbol ("duck sizing"), so a program traced with x[4,·] and y[4,·] requires them equal
 * forever while one traced with x[4,·], y[8,·] does not: that choice changes the program,
 * so it is part of the key (the sizes themselves are not). Groups list `input.dim`, in the
 * order the tracer names its symbols.
 */
export function dynamicGroups(inputs: readonly InputSignature[]): string[][] {
  const bySize = new Map<number, string[]>();
  inputs.forEach((s, i) => {
    const dyn = new Set(s.dynamic ?? []);
    s.shape.forEach((size, d) => {
      if (!dyn.has(d)) return;
      const group = bySize.get(size) ?? [];
      group.push(`${i}.${d}`);
      bySize.set(size, group);
    });
  });
  return [...bySize.values()];
}

/**
 * The key's input: namespace, source, signature, the options that change code, the user's
 * key, target, code generation. `tf32` is an option field of CUDA targets only (it changes
 * their matmul kernels); the CPU backend ignores it, so CPU bundles stay shared. Absent when
 * off, so that keys from before the option stay valid. Likewise `wgmma: false`, for sm_90a
 * targets under `KILN_CUDA_WGMMA=0` (or false/no/off): turning the wgmma kernel off must not load a bundle
 * built with it.
 */
export function keyInput(sig: ProgramSignature, target: string, codegen: string): KeyInput {
  const groups = dynamicGroups(sig.inputs);
  const t = parseTarget(target);
  const tf32 = sig.tf32 === true && t?.kind === 'cuda';
  const noWgmma = t?.kind === 'cuda' && !cudaWgmmaAllowed() && t.archSpecific && t.cc === 90;
  return {
    namespace: sig.name,
    source: sig.fnSource,
    inputs: sig.inputs,
    options: { ...(groups.length ? { dynamicGroups: groups } : {}), ...(tf32 ? { tf32: true } : {}), ...(noWgmma ? { wgmma: false } : {}) },
    ...(sig.userKey !== undefined ? { userKey: sig.userKey } : {}),
    target,
    toolchain: codegen,
  };
}

// kiln's code that decides what is generated (the front end's lowering of ops too), how it
// is compiled and how bundles are written: whole folders, and single files (path without
// extension) of the others.
export const CODE_DIRS: readonly string[] = ['ir', 'tensor', 'passes', 'codegen'];
export const CODE_FILES: readonly string[] = [
  'runtime/cpu',
  'runtime/cuda',
  'runtime/cuda-arch',
  'engine/compile',
  'engine/bundle',
  'engine/cuda',
  'engine/cuda-tune',
  'engine/cuda-bundle',
  'engine/cuda-load',
];
let buildMemo: string | null | undefined;

/**
 * In a development checkout of kiln (a `.git` beside package.json) the version number does
 * not move when the code generator changes, so bundles built before a rebuild would be
 * loaded after it. When kiln runs from its build output (dist/) there, the code-generation
 * identity (`cpuCodegen`, `cudaCodegen`: the key's toolchain field) also carries a hash of
 * the built code that generates and compiles programs (ir, passes, codegen — the CUDA
 * renderer too —, the CPU runtime and its flags, the CUDA runtime's side of the kernel
 * parameter contract, grid parsing and temp placement, the CUDA target choice and ptxas
 * report, the engine's compile drivers, CUDA build, autotuner and bundle loader, and bundle
 * writers): it changes exactly when
 * `npm run build:ts` changes that code. Not when running from lib/ sources (tests, through
 * swc): they use temporary caches, and a hash of sources that colleagues edit in the same
 * checkout would change between a test's cold and warm processes. A released package has
 * no `.git`: the field is absent and kilnVersion alone versions the code.
 */
export function kilnBuild(): string | undefined {
  if (buildMemo !== undefined) return buildMemo ?? undefined;
  const codeRoot = join(__dirname, '..'); // lib/ or dist/
  try {
    if (basename(codeRoot) !== 'dist') throw new Error('running from sources');
    statSync(join(dirname(codeRoot), '.git'));
  } catch {
    buildMemo = null;
    return undefined;
  }
  const fields: [string, Uint8Array][] = [];
  for (const dir of CODE_DIRS) {
    let names: string[];
    try {
      names = readdirSync(join(codeRoot, dir)).filter((n) => n.endsWith('.js')).sort();
    } catch {
      continue;
    }
    for (const n of names) fields.push([`${dir}/${n}`, readFileSync(join(codeRoot, dir, n))]);
  }
  for (const f of CODE_FILES) {
    try {
      fields.push([f, readFileSync(join(codeRoot, `${f}.js`))]);
    } catch {
      // an older layout: the folders above still version the code
    }
  }
  buildMemo = 'dev-' + hashFields(fields).slice(0, 16);
  return buildMemo;
}
