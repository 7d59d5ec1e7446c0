/**
 * What a bundle key needs from the machine, computed without tracing and without looking
 * for a compiler: the target string and the code-generation identity. One `BundleBackend`
 * per device is the seam "target → renderer + compiler": the CPU one is here; CUDA targets
 * (`sm_XY`) report KILN_NO_CUDA_BACKEND until the CUDA renderer lands.
 *
 * The compiler is not part of a key (docs/BUNDLES.md, "Toolchain: code generation, not the
 * compiler"): a CPU library computes the same whichever C++ compiler built it, so a machine
 * without one loads shipped bundles. A warm start therefore never looks for the compiler,
 * not even on PATH; it reads /proc/cpuinfo once per process for the target.
 */
import { readdirSync, readFileSync, statSync } from 'fs';
import { basename, dirname, join } from 'path';
import { cpuTarget, type Host, type InputSignature, type KeyInput } from '../cache';
import type { Backend } from '../runtime/select';
import { cpuInfo } from '../runtime/toolchain';
import { KilnError } from '../util/errors';
import { hashFields } from '../util/hash';
import { kilnVersion } from '../util/version';

/** How a device builds and identifies bundles. */
export interface BundleBackend {
  readonly device: Backend;
  /** The target string of this machine (`cpu-x64+avx2+fma`, later `sm_90`). */
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

/**
 * The CPU code-generation identity, e.g. `cpp:kiln-0.1.0:march=native`: kiln's version
 * (which versions the renderer and kiln's own compiler flags) plus, in a development
 * checkout running from dist/, the hash of its built code generator. The ISA the code may
 * use is the `target` key field; user flags (`KILN_CXXFLAGS`) are an `env` key field.
 */
export function cpuCodegen(): string {
  const build = kilnBuild();
  return `cpp:kiln-${kilnVersion()}${build ? `+${build}` : ''}:march=native`;
}

const CPU_BACKEND: BundleBackend = {
  device: 'cpu',
  target: () => cpuHost().target,
  host: () => cpuHost().host,
  codegen: cpuCodegen,
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

/** The key's input: namespace, source, signature, the options that change code, the user's key, target, code generation. */
export function keyInput(sig: ProgramSignature, target: string, codegen: string): KeyInput {
  const groups = dynamicGroups(sig.inputs);
  return {
    namespace: sig.name,
    source: sig.fnSource,
    inputs: sig.inputs,
    options: groups.length ? { dynamicGroups: groups } : {},
    ...(sig.userKey !== undefined ? { userKey: sig.userKey } : {}),
    target,
    toolchain: codegen,
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
 * loaded after it. When kiln runs from its build output (dist/) there, the code-generation
 * identity (`cpuCodegen`, the key's toolchain field) also carries a hash of the built code that generates and compiles programs (ir, passes, codegen, the
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
