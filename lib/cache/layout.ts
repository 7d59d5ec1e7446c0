/**
 * The cache directory's layout and housekeeping: where staging, trash and locks live, how
 * staging dirs are named (host hash and pid, so a sweep can tell a dead owner), moving a
 * bundle aside atomically, and sweeping what crashed processes left behind.
 *
 *   <cacheDir>/v1/<namespace>/<key[0:2]>/<key>/   bundles
 *   <cacheDir>/tmp/stage-<host>-<pid>-<rand>/      bundles being built (same filesystem)
 *   <cacheDir>/tmp/trash-<host>-<pid>-<rand>/      bundles being deleted
 *   <cacheDir>/locks/<key>.lock                    per-key compile locks
 *   <cacheDir>/toolchains/<file identity>.json     remembered toolchain versions
 */
import { createHash, randomBytes } from 'crypto';
import { lstatSync, readdirSync, renameSync } from 'fs';
import { hostname } from 'os';
import { join } from 'path';
import { CacheError } from '../util/errors';
import { errnoOf, mkdirp, removeTree } from './io';
import { pidAlive } from './lock';
import { assertTrustedCacheDir, untrustedDir } from './trust';

export interface StoreConfig {
  cacheDir: string;
  /** Shipped, read-only bundle roots, searched in order before the cache. */
  bundlePath: readonly string[];
  /** Write nothing (read-only mode, or a cache dir we cannot write). */
  readOnly: boolean;
  /** The cache dir cannot be reached by this user: only the shipped roots are searched. */
  unreachable?: boolean;
  /** Size cap of the cache in bytes; 0 means no cap. */
  maxBytes: number;
}

/** Staging and trash dir names carry a hash of the host and the pid, so the sweep can tell dead owners. */
export const hostTag = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
const STAGING_MAX_AGE_MS = 10 * 60_000;
const LOCK_LITTER_MAX_AGE_MS = 60_000;

export const tmpDir = (cacheDir: string): string => join(cacheDir, 'tmp');
export const lockDir = (cacheDir: string): string => join(cacheDir, 'locks');
export const lockFile = (cacheDir: string, key: string): string => join(lockDir(cacheDir), `${key}.lock`);

/** A fresh, unique name for a staging or trash entry in tmp/. */
export function tmpName(cacheDir: string, kind: 'stage' | 'trash'): string {
  return join(tmpDir(cacheDir), `${kind}-${hostTag}-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** Renames a bundle dir into tmp/ (atomic: readers see it whole or not at all), then deletes it. */
export function moveAside(cacheDir: string, dir: string): void {
  const trash = tmpName(cacheDir, 'trash');
  try {
    renameSync(dir, trash);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return;
    throw e;
  }
  removeTree(trash);
}

/**
 * Removes what crashed or finished processes left: staging and trash dirs whose owner is
 * dead on this host (or older than 10 minutes), and lock-file litter older than a minute.
 */
export function sweep(cacheDir: string, now = Date.now()): void {
  const tmp = tmpDir(cacheDir);
  for (const n of names(tmp)) {
    const m = /^(stage|trash)-([0-9a-f]{8})-(\d+)-/.exec(n);
    if (!m) continue;
    const p = join(tmp, n);
    // Owner tests only for this host's entries: on a shared (NFS) cache, another host's pid
    // says nothing here, and its trash may still be read back by that host's discard.
    const mine = m[2] === hostTag;
    const deadOwner = mine && !pidAlive(Number(m[3]));
    if (deadOwner || now - mtimeOf(p) > STAGING_MAX_AGE_MS || (mine && m[1] === 'trash' && Number(m[3]) === process.pid)) removeTree(p);
  }
  const locks = lockDir(cacheDir);
  for (const n of names(locks)) {
    if (/\.lock\.[0-9a-f]+$|\.lock\.stale\.[0-9a-f]+$/.test(n) && now - mtimeOf(join(locks, n)) > LOCK_LITTER_MAX_AGE_MS) removeTree(join(locks, n));
  }
}

function mtimeOf(p: string): number {
  try {
    return lstatSync(p).mtimeMs;
  } catch {
    return Date.now();
  }
}

/** Sorted entries of a directory; none when it is missing. */
export function names(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** Creates the cache dir, tmp/ and locks/ (mode 0755) and checks they can be trusted. */
export function prepareCacheDir(cacheDir: string): void {
  assertTrustedCacheDir(cacheDir); // before creating anything inside it
  mkdirp(tmpDir(cacheDir));
  mkdirp(lockDir(cacheDir));
  assertTrustedCacheDir(cacheDir); // now that it exists
  for (const d of [tmpDir(cacheDir), lockDir(cacheDir)]) {
    const why = untrustedDir(d, lstatSync(d));
    if (why) throw new CacheError('KILN_CACHE_INSECURE', why);
  }
}
