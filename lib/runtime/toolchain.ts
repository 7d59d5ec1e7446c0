/**
 * The host toolchain the CPU backend compiles with, and the host CPU it targets.
 * Probing runs the compiler (`--version`), so it is done once per process and only on
 * the cold path or by `kiln doctor` — never on a warm start.
 */
import { accessSync, constants, readFileSync } from 'fs';
import { cpus } from 'os';
import { delimiter, isAbsolute, join } from 'path';
import { readEnv } from '../util/env';

export type Found<T> = ({ available: true } & T) | { available: false; reason: string };

export interface CxxInfo {
  /** Absolute path of the compiler executable. */
  path: string;
  /** First line of `--version`, e.g. `g++ (Debian 12.2.0-14) 12.2.0`. */
  version: string;
  /** Target triple from `-dumpmachine`, e.g. `x86_64-linux-gnu`. */
  machine: string;
  /** How it was chosen: `env CXX` or `PATH`. */
  foundBy: string;
}

/** Resolves a command name against PATH; absolute or relative paths are checked as given. */
export function whichSync(cmd: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const candidates = cmd.includes('/')
    ? [isAbsolute(cmd) ? cmd : join(process.cwd(), cmd)]
    : (env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, cmd));
  for (const p of candidates) {
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here; try the next directory
    }
  }
  return undefined;
}

let cxxMemo: Found<CxxInfo> | undefined;

/** Finds the C++ compiler: `$CXX`, else c++, g++, clang++ on PATH. Memoized per process. */
export function findCxx(env: NodeJS.ProcessEnv = process.env): Found<CxxInfo> {
  if (cxxMemo && env === process.env) return cxxMemo;
  const result = probeCxx(env);
  if (env === process.env) cxxMemo = result;
  return result;
}

function probeCxx(env: NodeJS.ProcessEnv): Found<CxxInfo> {
  const fromEnv = readEnv('CXX', env);
  const names = fromEnv ? [fromEnv] : ['c++', 'g++', 'clang++'];
  for (const name of names) {
    const path = whichSync(name, env);
    if (!path) continue;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: only probing a compiler runs one
      const { execFileSync } = require('child_process') as typeof import('child_process');
      const run = (arg: string) => execFileSync(path, [arg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 });
      const version = run('--version').split('\n')[0].trim();
      const machine = run('-dumpmachine').trim();
      return { available: true, path, version, machine, foundBy: fromEnv ? 'env CXX' : 'PATH' };
    } catch (e) {
      if (fromEnv) return { available: false, reason: `CXX=${fromEnv} did not run: ${(e as Error).message}` };
    }
  }
  return {
    available: false,
    reason: fromEnv
      ? `CXX=${fromEnv} was not found on PATH`
      : 'no C++ compiler found (looked for c++, g++, clang++ on PATH); install one (e.g. apt-get install g++) or set CXX',
  };
}

export interface CpuInfo {
  model: string;
  cores: number;
  /**
   * The tracked ISA features this CPU has, sorted (e.g. avx2, avx512f, fma): what kiln's
   * generated code is compiled for here (`cppFlags`) and what a CPU bundle's target names.
   */
  features: string[];
  arch: string;
}

/**
 * The ISA features kiln tracks, as /proc/cpuinfo spells them: x86-64 (`flags`), then aarch64
 * (`Features`). The C++ is compiled for exactly the tracked features of the building CPU
 * (codegen/cpp.ts `isaFlags` has a flag for each), never `-march=native` on these
 * architectures, so the bundle target that names them is all a host needs to run the code.
 */
export const TRACKED_FEATURES: readonly string[] = ['sse4_2', 'avx', 'avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16', 'asimd', 'sve'];

/** Reads the host CPU's model and its tracked ISA features (those the generated code is compiled for). */
export function cpuInfo(): CpuInfo {
  let text = '';
  try {
    text = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    // not Linux: features stay unknown and the ISA guard degrades to the arch name
  }
  const flagLine = /^(flags|Features)\s*:(.*)$/m.exec(text)?.[2] ?? '';
  const flags = new Set(flagLine.trim().split(/\s+/));
  const model = /^model name\s*:(.*)$/m.exec(text)?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown';
  return { model, cores: cpus().length, features: TRACKED_FEATURES.filter((f) => flags.has(f)).sort(), arch: process.arch };
}
