/**
 * Where programs come from: the seam between "the API needs a program for this key" and
 * "compile one". Today every request builds; the bundle cache (docs: BRIEF.md, The bundle)
 * plugs in here: look the key up in shipped bundle dirs and the cache, verify guards, load;
 * on a miss build, publish atomically, and return. Callers never learn which happened
 * except through `origin`.
 */
import type { CacheMode } from '../cache/mode';
import type { Backend } from '../runtime/select';
import { hashFields } from '../util/hash';
import { CacheError } from '../util/errors';
import type { CompiledProgram } from './program';

/**
 * What identifies a program before tracing (so a warm start can skip the trace). The
 * bundle key adds the schema and kiln versions, the target and toolchain fingerprints and
 * the code-relevant environment to these fields.
 */
export interface ProgramKey {
  /** The compiled function's name (bundle namespace). */
  readonly name: string;
  /** The function's source text (`fn.toString()`). */
  readonly fnSource: string;
  /** Input signature: dtypes, static dims and which dims are dynamic. */
  readonly signature: string;
  readonly device: Backend;
}

/** How to look a program up and where. */
export interface StoreOptions {
  readonly mode: CacheMode;
  /** Cache directory override (option `cacheDir`); unused until the bundle cache lands. */
  readonly cacheDir?: string;
}

/** sha256 over the key's labelled fields (in-memory identity today, the bundle key's core later). */
export function programKeyHash(key: ProgramKey): string {
  return hashFields([
    ['name', key.name],
    ['fn', key.fnSource],
    ['signature', key.signature],
    ['device', key.device],
  ]);
}

/** Where a program came from. */
export type ProgramOrigin = 'bundle' | 'compiled';

/**
 * A program for `key`: loaded from a bundle when one is valid (not yet: there is no bundle
 * store), else built by `build` (trace and compile). `force-load` without a bundle is an
 * error, as the mode promises.
 */
export async function getProgram(
  key: ProgramKey,
  store: StoreOptions,
  build: () => Promise<CompiledProgram>,
): Promise<{ program: CompiledProgram; origin: ProgramOrigin; bundleDir?: string }> {
  if (store.mode === 'force-load') {
    throw new CacheError(
      'KILN_BUNDLE_MISSING',
      `cache mode force-load: no bundle for ${key.name} (${programKeyHash(key).slice(0, 16)}); build one first, or use cache: 'auto'`,
    );
  }
  return { program: await build(), origin: 'compiled' };
}
