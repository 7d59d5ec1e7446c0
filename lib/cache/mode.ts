/**
 * The cache as the engine sees it: one `openCache()` per compiled function resolves the
 * mode, the directories and the size cap (option first, then environment), checks the
 * cache dir can be trusted, and returns the few operations the engine calls.
 *
 * Modes: `auto` loads a valid bundle or compiles and publishes (an invalid bundle is a
 * miss, warned once, and replaced); `off` neither reads nor writes; `force-load` makes a
 * missing or invalid bundle a CacheError (KILN_BUNDLE_MISSING / KILN_BUNDLE_INVALID);
 * `read-only` loads but never writes — also entered automatically, with one warning, when
 * the cache dir is not writable. `failOnRecompile` is a stance the engine enforces: any
 * trace or compile throws.
 */
import { accessSync, constants } from 'fs';
import { dirname, resolve, sep } from 'path';
import { envFlag, readEnv } from '../util/env';
import { ArgumentError, CacheError } from '../util/errors';
import { type VerifiedBundle, type VerifyExpect } from './bundle';
import { cacheDir as defaultCacheDir } from './dirs';
import { warnOnce } from './io';
import { withFileLock, type LockOptions, type LockOutcome } from './lock';
import { type ToolchainFingerprint } from './key';
import { lockFile, prepareCacheDir, type StoreConfig } from './layout';
import {
  bundleIdentity,
  lookupBundle,
  publishBundle,
  resolveToolchain,
  discardBundle,
  type LookupResult,
  type ManifestFields,
  type PublishFile,
  type PublishResult,
} from './store';
import { assertTrustedCacheDir, unreachableDir } from './trust';

export type CacheMode = 'auto' | 'off' | 'force-load' | 'read-only';
export const CACHE_MODES: readonly CacheMode[] = ['auto', 'off', 'force-load', 'read-only'];

/** Default size cap: 2 GiB (a bundle is typically well under 10 MiB). */
export const DEFAULT_MAX_BYTES = 2 * 2 ** 30;

/** The mode from the option, else `KILN_CACHE`, else `auto`. */
export function resolveCacheMode(option?: string, env: NodeJS.ProcessEnv = process.env): CacheMode {
  const value = option ?? readEnv('KILN_CACHE', env) ?? 'auto';
  if (!(CACHE_MODES as readonly string[]).includes(value)) {
    const from = option !== undefined ? 'the cache option' : 'KILN_CACHE';
    throw new ArgumentError('KILN_BAD_CACHE_MODE', `${from} is ${JSON.stringify(value)}; use one of ${CACHE_MODES.join(', ')}`);
  }
  return value as CacheMode;
}

/** The option, else `KILN_FAIL_ON_RECOMPILE=1`. */
export function resolveFailOnRecompile(option?: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  return option ?? envFlag('KILN_FAIL_ON_RECOMPILE', env);
}

/**
 * Parses a byte count: `1048576`, `512K`, `100M`, `2G` (powers of 1024); `0` means no cap.
 * Anything else is ArgumentError KILN_BAD_ENV naming the variable `what`.
 */
export function parseBytes(text: string, what = 'KILN_CACHE_MAX_BYTES'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(text);
  if (!m) throw new ArgumentError('KILN_BAD_ENV', `${what}=${text} is not a byte count; give bytes, e.g. 2G, 500M or 1048576 (0: no cap)`);
  const scale = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * scale);
}

export interface OpenCacheOptions {
  mode?: CacheMode;
  /** Default `KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`. */
  cacheDir?: string;
  /** Shipped bundle roots; default `KILN_BUNDLE_PATH` (':'-separated). */
  bundlePath?: string | readonly string[];
  /** Default `KILN_CACHE_MAX_BYTES`, else 2 GiB; 0 means no cap. */
  maxBytes?: number;
  failOnRecompile?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface Cache {
  readonly mode: CacheMode;
  /** True in read-only mode and when the cache dir is not writable. */
  readonly readOnly: boolean;
  readonly failOnRecompile: boolean;
  readonly cacheDir: string;
  readonly bundlePath: readonly string[];
  readonly maxBytes: number;
  /**
   * Finds and verifies the bundle. `hit` means every guard passed and its artifacts may be
   * loaded. In auto/read-only mode an invalid bundle is a `miss` carrying `invalid` (warned
   * once); in force-load mode a miss or invalid bundle throws CacheError; `off` always misses.
   * Shipped bundle dirs in `skip` are passed over (ones that failed to load in this process).
   * `alternative`: the key is another target's, tried after this machine's own missed (a
   * CUDA fallback), so an invalid one is passed over rather than rebuilt.
   */
  lookup(key: string, namespace: string, expect?: VerifyExpect, skip?: ReadonlySet<string>, alternative?: boolean): CacheLookup;
  /** Publishes atomically; never throws for I/O trouble (see `PublishResult`). */
  publish(key: string, namespace: string, files: readonly PublishFile[], fields: ManifestFields): PublishResult;
  /**
   * Runs `fn` holding the per-key lock so concurrent cold processes compile once. With
   * `namespace`, waiters stop waiting when a new bundle is published for the key (not when
   * the invalid one being replaced is still there); `fn` should look up again first.
   * Without a writable cache, `fn` just runs.
   */
  withKeyLock<T>(key: string, fn: (outcome: LockOutcome) => Promise<T>, opts?: LockOptions & { namespace?: string }): Promise<T>;
  /** Toolchain fingerprint from a stat, probing the version once per toolchain install (see store.ts). */
  toolchain(path: string, probe: () => string, flags?: readonly string[]): ToolchainFingerprint;
  /**
   * After a hit failed to load (driver rejected the cubin, dlopen failed): removes that exact
   * bundle from the cache unless it was replaced meanwhile, so the engine recompiles once.
   */
  discard(bundle: VerifiedBundle): boolean;
  /**
   * Call before any trace or compile: with `failOnRecompile`, throws CacheError
   * KILN_RECOMPILE naming the function and why the lookup missed.
   */
  assertMayCompile(key: string, namespace: string, miss?: CacheLookup): void;
}

export type CacheLookup =
  | Extract<LookupResult, { status: 'hit' }>
  | { status: 'miss'; invalid?: Extract<LookupResult, { status: 'invalid' }> };

/** Resolves options and environment into a `Cache`. Throws CacheError KILN_CACHE_INSECURE for an untrusted cache dir. */
export function openCache(opts: OpenCacheOptions = {}): Cache {
  const env = opts.env ?? process.env;
  const mode = resolveCacheMode(opts.mode, env);
  const dir = resolve(opts.cacheDir ?? defaultCacheDir(env));
  const shipped = opts.bundlePath ?? readEnv('KILN_BUNDLE_PATH', env) ?? [];
  const bundlePath = (typeof shipped === 'string' ? shipped.split(':') : shipped).filter(Boolean).map((p) => resolve(p));
  const envCap = readEnv('KILN_CACHE_MAX_BYTES', env);
  const maxBytes = opts.maxBytes ?? (envCap !== undefined ? parseBytes(envCap) : DEFAULT_MAX_BYTES);
  const failOnRecompile = resolveFailOnRecompile(opts.failOnRecompile, env);

  let readOnly = mode === 'read-only' || mode === 'off';
  // A dir this user cannot reach is left alone (nothing read or written), so it needs no trust check.
  const unreachable = mode !== 'off' ? unreachableDir(dir) : undefined;
  if (mode !== 'off' && !unreachable) assertTrustedCacheDir(dir);
  if (unreachable) {
    readOnly = true;
    warnOnce(
      'KILN_CACHE_UNAVAILABLE',
      `kiln: cannot use the cache dir ${dir} (${unreachable}); running without it: no bundle is loaded from it or written to it (shipped bundles are still searched). Set KILN_CACHE_DIR to a directory this user can write, or KILN_CACHE=off to say this is intended.`,
    );
  } else if (!readOnly && !writable(dir)) {
    readOnly = true;
    warnOnce(
      'KILN_CACHE_READ_ONLY',
      `kiln: the cache dir ${dir} is not writable; bundles are loaded from it but none are written. Set KILN_CACHE_DIR to a writable directory, or KILN_CACHE=read-only to say this is intended.`,
    );
  }
  const cfg: StoreConfig = { cacheDir: dir, bundlePath, readOnly, maxBytes, ...(unreachable ? { unreachable: true } : {}) };

  return {
    mode,
    readOnly,
    failOnRecompile,
    cacheDir: dir,
    bundlePath,
    maxBytes,
    lookup(key, namespace, expect, skip, alternative) {
      if (mode === 'off') return { status: 'miss' };
      const r = lookupBundle(cfg, key, namespace, expect, skip);
      if (r.status === 'hit') return r;
      if (mode === 'force-load') {
        if (r.status === 'miss') {
          throw new CacheError('KILN_BUNDLE_MISSING', `force-load: no bundle for ${namespace}/${key.slice(0, 12)} in ${[...bundlePath, dir].join(', ')}; build it first (kiln build) or use cache: 'auto'`);
        }
        throw new CacheError('KILN_BUNDLE_INVALID', `force-load: the bundle ${r.dir} is invalid (${r.reason}): ${r.detail}`, { cause: r });
      }
      if (r.status === 'invalid') {
        const next = alternative
          ? "passing over it (another target's bundle)"
          : !r.dir.startsWith(dir + sep)
            ? 'compiling instead; the shipped bundle is left as it is'
            : readOnly
              ? 'compiling without replacing it (read-only)'
              : 'it will be rebuilt and replaced';
        warnOnce('KILN_BUNDLE_INVALID', `kiln: ignoring the bundle ${r.dir} (${r.reason}): ${r.detail}; ${next}`, `invalid:${r.dir}`);
        return { status: 'miss', invalid: r };
      }
      return r;
    },
    publish(key, namespace, files, fields) {
      if (mode === 'off') return { status: 'skipped', reason: 'off' };
      return publishBundle(cfg, key, namespace, files, fields);
    },
    async withKeyLock(key, fn, lockOpts = {}) {
      if (readOnly) return fn('unavailable');
      try {
        prepareCacheDir(dir);
      } catch {
        return fn('unavailable');
      }
      const ns = lockOpts.namespace;
      let ready = lockOpts.ready;
      if (!ready && ns !== undefined) {
        const before = bundleIdentity(cfg, key, ns);
        ready = () => {
          const now = bundleIdentity(cfg, key, ns);
          return now !== undefined && now !== before;
        };
      }
      return withFileLock(lockFile(dir, key), fn, { ...lockOpts, ready });
    },
    toolchain(path, probe, flags) {
      return resolveToolchain(cfg, path, probe, flags);
    },
    discard(bundle) {
      return discardBundle(cfg, bundle);
    },
    assertMayCompile(key, namespace, miss) {
      if (!failOnRecompile) return;
      const why = miss?.status === 'miss' && miss.invalid ? `the bundle ${miss.invalid.dir} is invalid (${miss.invalid.reason}: ${miss.invalid.detail})` : mode === 'off' ? "the cache is 'off'" : 'no bundle was found';
      throw new CacheError('KILN_RECOMPILE', `failOnRecompile: ${namespace}/${key.slice(0, 12)} would be traced and compiled because ${why}. Unset KILN_FAIL_ON_RECOMPILE (or the failOnRecompile option) to allow it.`);
    },
  };
}

/** Whether we can write `dir`, or create it (its nearest existing ancestor is writable). */
function writable(dir: string): boolean {
  for (let p = dir; ; p = dirname(p)) {
    try {
      accessSync(p, constants.W_OK);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(p) === p) return false;
    }
  }
}
