/**
 * What a bundle key needs from the machine, computed without tracing and without running
 * the compiler: the target string, the toolchain fingerprint, and the code-relevant options.
 * One `BundleBackend` per device is the seam "target → renderer + compiler": the CPU one is
 * here; CUDA targets (`sm_XY`) report KILN_NO_CUDA_BACKEND until the CUDA renderer lands.
 *
 * Cost on a warm start (docs/BUNDLES.md, "The engine's warm path"): the compiler is found
 * by a PATH lookup (never `--version`), its version comes from the cache's toolchain memo
 * (one stat and one small read), /proc/cpuinfo is read once; all three are remembered for
 * the life of the process, so a second compiled function with the same key touches no file.
 */
import { execFileSync } from 'child_process';
import { readdirSync, readFileSync, statSync } from 'fs';
import { basename, dirname, join } from 'path';
import { cpuTarget, type Cache, type Host, type InputSignature, type KeyInput, type ToolchainFingerprint } from '../cache';
import type { Backend } from '../runtime/select';
import { cpuInfo, whichSync } from '../runtime/toolchain';
import { readEnv } from '../util/env';
import { CompilerError, KilnError } from '../util/errors';
import { hashFields } from '../util/hash';

/** How a device builds and identifies bundles. */
export interface BundleBackend {
  readonly device: Backend;
  /** The target string of this machine (`cpu-x64+avx2+fma`, later `sm_90`). */
  target(): string;
  /** The machine about to run the code, for the target guard. */
  host(): Host;
  /** The toolchain fingerprint when this process already knows it (no I/O); else undefined. */
  knownToolchain(): ToolchainFingerprint | undefined;
  /** The toolchain fingerprint, probing the version only when the cache has not remembered it. */
  toolchain(cache: Cache): ToolchainFingerprint;
}

/**
 * The backend that builds bundles for `device`, or for an offline target ('cpu', 'sm_90').
 * Throws KilnError KILN_NO_CUDA_BACKEND for CUDA until its renderer lands.
 */
export function bundleBackend(device: Backend | string): BundleBackend {
  if (device === 'cpu') return CPU_BACKEND;
  const what = device === 'cuda' ? "device: 'cuda'" : `target '${device}'`;
  throw new KilnError(
    'KILN_NO_CUDA_BACKEND',
    `${what} — kiln's CUDA backend is not available in this build yet (no CUDA renderer, so no CUDA bundles to build or load); ` +
      `use ${device === 'cuda' ? "device: 'cpu' (or 'auto')" : "target 'cpu'"}. \`npx kiln doctor\` shows what kiln finds.`,
  );
}

// ---- CPU -------------------------------------------------------------------------------

let hostMemo: { target: string; host: Host } | undefined;

function cpuHost(): { target: string; host: Host } {
  if (!hostMemo) {
    const info = cpuInfo();
    // The generated C++ is compiled with -march=native, so it may use every ISA feature of
    // the building CPU: the target names all of them that kiln tracks (toolchain.ts).
    hostMemo = { target: cpuTarget(process.arch, info.features), host: { kind: 'cpu', arch: process.arch, features: info.features } };
  }
  return hostMemo;
}

const cxxPathMemo = new Map<string, string | undefined>();

/**
 * The C++ compiler's path as the CPU backend would pick it (`$CXX`, else c++, g++, clang++
 * on PATH), by PATH lookup only: unlike `findCxx` it never runs the compiler.
 */
export function cxxPath(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = readEnv('CXX', env);
  const memoKey = `${fromEnv ?? ''}\0${env.PATH ?? ''}`;
  if (cxxPathMemo.has(memoKey)) return cxxPathMemo.get(memoKey);
  let found: string | undefined;
  for (const name of fromEnv ? [fromEnv] : ['c++', 'g++', 'clang++']) {
    found = whichSync(name, env);
    if (found) break;
  }
  cxxPathMemo.set(memoKey, found);
  return found;
}

/** Whether a C++ compiler is there, by PATH lookup only (for choosing `device: 'auto'` on a warm start). */
export function cxxFacts(env: NodeJS.ProcessEnv = process.env): { available: true; path: string } | { available: false; reason: string } {
  const path = cxxPath(env);
  return path !== undefined ? { available: true, path } : { available: false, reason: cxxMissing(env) };
}

function cxxMissing(env: NodeJS.ProcessEnv, hint = true): string {
  const fromEnv = readEnv('CXX', env);
  if (fromEnv) return `CXX=${fromEnv} was not found on PATH`;
  return `no C++ compiler found (looked for c++, g++, clang++ on PATH)${hint ? '; install one (e.g. apt-get install g++) or set CXX' : ''}`;
}

function noCxx(): CompilerError {
  const why = cxxMissing(process.env, false);
  return new CompilerError(
    'KILN_NO_CXX',
    `the CPU backend needs a C++ compiler: ${why}. Its identity is part of every CPU bundle key, so bundles cannot be looked up without one either. ` +
      'Install g++ or clang++ (e.g. `apt-get install g++`) or set CXX to one; `npx kiln doctor` shows what kiln finds.',
  );
}

/** First line of `<cxx> --version`: what the toolchain memo remembers per compiler file. */
function cxxVersion(path: string): string {
  try {
    return execFileSync(path, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000, env: { ...process.env, LC_ALL: 'C' } })
      .split('\n')[0]
      .trim();
  } catch (e) {
    throw new CompilerError('KILN_NO_CXX', `the C++ compiler ${path} did not run (${(e as Error).message}); install g++ or clang++ or set CXX`);
  }
}

const toolchainMemo = new Map<string, ToolchainFingerprint>();

const CPU_BACKEND: BundleBackend = {
  device: 'cpu',
  target: () => cpuHost().target,
  host: () => cpuHost().host,
  knownToolchain() {
    const path = cxxPath();
    return path === undefined ? undefined : toolchainMemo.get(path);
  },
  toolchain(cache) {
    const path = cxxPath();
    if (path === undefined) throw noCxx();
    let tc = toolchainMemo.get(path);
    if (!tc) {
      // Compiler flags are kiln's own code (versioned with kiln, see kilnBuild below);
      // user flags come from KILN_CXXFLAGS, a code-relevant env var of the key.
      tc = cache.toolchain(path, () => cxxVersion(path));
      toolchainMemo.set(path, tc);
    }
    return tc;
  },
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

/** The key's input: namespace, source, signature, the options that change code, the user's key, target, toolchain. */
export function keyInput(sig: ProgramSignature, target: string, toolchain: string): KeyInput {
  const groups = dynamicGroups(sig.inputs);
  const build = kilnBuild();
  return {
    namespace: sig.name,
    source: sig.fnSource,
    inputs: sig.inputs,
    options: { ...(groups.length ? { dynamicGroups: groups } : {}), ...(build ? { kilnBuild: build } : {}) },
    ...(sig.userKey !== undefined ? { userKey: sig.userKey } : {}),
    target,
    toolchain,
  };
}

// kiln's code that decides what is generated, how it is compiled and how bundles are
// written: whole folders, and single files (path without extension) of the others.
const CODE_DIRS = ['ir', 'passes', 'codegen'];
const CODE_FILES = ['runtime/cpu', 'engine/compile', 'engine/bundle'];
let buildMemo: string | null | undefined;

/**
 * In a development checkout of kiln (a `.git` beside package.json) the version number does
 * not move when the code generator changes, so bundles built before a rebuild would be
 * loaded after it. When kiln runs from its build output (dist/) there, the key also carries
 * a hash of the built code that generates and compiles programs (ir, passes, codegen, the
 * CPU runtime, the engine's compile and bundle writer): it changes exactly when
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
