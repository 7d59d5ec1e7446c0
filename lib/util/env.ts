/**
 * The registry of every environment variable kiln reads. Each entry says whether it
 * changes compiled output (`affectsCode`): exactly those feed the bundle key, so a
 * variable that only steers cache behaviour can never split or stale the cache.
 * Reading a variable that is not registered here is a programming error.
 */
import { ArgumentError } from './errors';

export interface EnvVar {
  readonly name: string;
  readonly affectsCode: boolean;
  /**
   * Which bundles it is keyed for, when not all (as README's table says it): a code-relevant
   * variable of one target kind (`targetKind`), or one keyed through a key option instead of
   * `codeRelevantEnv` (KILN_CUDA_WGMMA: `keyInput` in lib/engine/bundle-target.ts).
   */
  readonly keyedFor?: string;
  /** A code-relevant variable that changes only bundles of this target kind: keyed for those alone. */
  readonly targetKind?: 'cpu' | 'cuda';
  readonly doc: string;
}

const vars = [
  { name: 'KILN_CACHE_DIR', affectsCode: false, doc: 'Bundle cache directory (default $XDG_CACHE_HOME/kiln, else ~/.cache/kiln).' },
  { name: 'KILN_CACHE', affectsCode: false, doc: 'Cache mode: auto | off | force-load | read-only.' },
  { name: 'KILN_CACHE_MAX_BYTES', affectsCode: false, doc: 'Size cap of the cache; least-recently-used bundles are evicted past it.' },
  { name: 'KILN_BUNDLE_PATH', affectsCode: false, doc: 'Extra read-only bundle directories (":"-separated), searched before the cache.' },
  { name: 'KILN_FAIL_ON_RECOMPILE', affectsCode: false, doc: 'When on (1/true/yes/on; 0/false/no/off or unset: off), any trace or compile throws (proves a warm start compiles nothing).' },
  { name: 'KILN_NVRTC_PATH', affectsCode: false, doc: 'NVRTC library file or directory to use; overrides the search.' },
  { name: 'KILN_NVRTC_JOBS', affectsCode: false, doc: 'Maximum concurrent NVRTC compiles, 1 to 64 (default 2; read when the native addon loads).' },
  { name: 'KILN_REQUIRE_NVRTC', affectsCode: false, doc: 'Tests: when 1, a missing NVRTC fails instead of skipping.' },
  { name: 'KILN_REQUIRE_GPU', affectsCode: false, doc: 'Tests and gpu-check: when 1, a missing GPU fails instead of skipping.' },
  { name: 'KILN_DEVICE', affectsCode: false, doc: "Overrides device: 'auto' (cpu | cuda)." },
  // Not code-relevant: any C++ compiler builds an equivalent library from kiln's source, so
  // which one did is recorded in a bundle's manifest but is not part of its key.
  { name: 'CXX', affectsCode: false, doc: 'C++ compiler for the CPU backend (default: c++, g++, clang++); looked for only when kiln compiles.' },
  // Keyed for CPU targets only: NVRTC never sees these flags, so CUDA bundles stay shared.
  { name: 'KILN_CXXFLAGS', affectsCode: true, targetKind: 'cpu', keyedFor: 'CPU bundles', doc: 'Extra flags appended to the CPU backend compile.' },
  // Not code-relevant: tuned or not, a CUDA program computes the same; its bundle records the configurations it uses.
  { name: 'KILN_CUDA_TUNE', affectsCode: false, doc: 'When off (0/false/no/off; default on), a CUDA compile skips timing candidate kernel configurations on the GPU (heuristic choices).' },
  // Keyed for sm_90a targets only (keyInput), where it changes the matmul kernels; other bundles stay shared.
  { name: 'KILN_CUDA_WGMMA', affectsCode: false, keyedFor: 'sm_90a bundles', doc: 'When off (0/false/no/off; default on), matmuls on Hopper (sm_90a) use the mma.sync kernel instead of warpgroup MMA (wgmma).' },
  { name: 'KILN_CUDA_POLL_US', affectsCode: false, doc: 'Microseconds the JS thread polls a CUDA run for completion before leaving it to the waiter thread, when nothing else is pending (0 to 10000, default 50, 0 = off; read when the first run starts).' },
  { name: 'KILN_CPU_THREADS', affectsCode: false, doc: 'Threads used by CPU kernels (default: all cores).' },
  { name: 'KILN_CPU_INLINE_US', affectsCode: false, doc: "A CPU call runs on the calling JS thread (blocking it) when the program's previous run at the same sizes took at most this many microseconds, no earlier call is in flight and kiln's compute thread is idle (default 1000, 0 = never; read when a program loads)." },
  { name: 'KILN_PYTHON', affectsCode: false, doc: 'Python interpreter asked where a pip-installed NVRTC lives (default python3).' },
  { name: 'CUDA_PATH', affectsCode: false, doc: 'CUDA toolkit root; searched for NVRTC.' },
  { name: 'CUDA_HOME', affectsCode: false, doc: 'CUDA toolkit root; searched for NVRTC.' },
  { name: 'KILN_TEST_FAULT', affectsCode: false, doc: 'Tests only: inject a fault into a bundle publish, <stage>:<kill|enospc|eacces|erofs> (docs/BUNDLES.md).' },
  { name: 'XDG_CACHE_HOME', affectsCode: false, doc: 'Base of the default cache directory.' },
] as const satisfies readonly EnvVar[];

export type EnvName = (typeof vars)[number]['name'];

/** Every registered variable, for docs and `kiln doctor`. */
export const ENV_VARS: readonly EnvVar[] = vars;

/** Reads a registered environment variable; empty strings count as unset. */
export function readEnv(name: EnvName, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

const TRUE_WORDS = ['1', 'true', 'yes', 'on'];
const FALSE_WORDS = ['0', 'false', 'no', 'off'];

/**
 * A registered on/off variable: 1/true/yes/on or 0/false/no/off (any case); unset or empty
 * gives `fallback`. Anything else is ArgumentError KILN_BAD_ENV, never a silent default: a
 * guard like `KILN_FAIL_ON_RECOMPILE=maybe` must not quietly turn itself off.
 */
export function envFlag(name: EnvName, env: NodeJS.ProcessEnv = process.env, fallback = false): boolean {
  const text = readEnv(name, env);
  if (text === undefined) return fallback;
  const word = text.trim().toLowerCase();
  if (TRUE_WORDS.includes(word)) return true;
  if (FALSE_WORDS.includes(word)) return false;
  throw new ArgumentError(
    'KILN_BAD_ENV',
    `${name}=${text} is not an on/off value; use 1, true, yes or on, or 0, false, no or off (unset: ${fallback ? 'on' : 'off'})`,
  );
}

/** Bounds and default of an integer variable (`envInt`). */
export interface IntRange {
  readonly min: number;
  readonly max: number;
  /** The value when the variable is unset or empty. */
  readonly fallback: number;
  /** What the number counts and what its special values mean, for the error message. */
  readonly unit?: string;
  /** How the default reads in the error message (default: `fallback`). */
  readonly unset?: string;
}

/**
 * A registered integer variable: decimal digits within `[min, max]` (min ≥ 0); unset or empty
 * gives `fallback`. Anything else (`abc`, `-1`, `1.5`, out of range) is ArgumentError
 * KILN_BAD_ENV naming the variable, the value and the accepted range.
 */
export function envInt(name: EnvName, range: IntRange, env: NodeJS.ProcessEnv = process.env): number {
  const text = readEnv(name, env);
  if (text === undefined) return range.fallback;
  const n = /^\d+$/.test(text) ? Number(text) : NaN; // digits only, as the addon's strtol reads them
  if (Number.isSafeInteger(n) && n >= range.min && n <= range.max) return n;
  const bounds = range.max >= Number.MAX_SAFE_INTEGER ? `an integer ≥ ${range.min}` : `an integer from ${range.min} to ${range.max}`;
  throw new ArgumentError('KILN_BAD_ENV', `${name}=${text} is not ${bounds}${range.unit ? ` (${range.unit})` : ''}; unset: ${range.unset ?? range.fallback}`);
}

/**
 * The code-relevant variables for a bundle of `kind` and their values, in a fixed order, for
 * the bundle key (a variable of another target kind is left out: it cannot change this code).
 */
export function codeRelevantEnv(kind: 'cpu' | 'cuda', env: NodeJS.ProcessEnv = process.env): [string, string][] {
  return (vars as readonly EnvVar[]).filter((v) => v.affectsCode && (v.targetKind === undefined || v.targetKind === kind)).map((v) => [v.name, env[v.name] ?? '']);
}
