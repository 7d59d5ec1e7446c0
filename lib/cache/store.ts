/**
 * The bundle store: atomic publish, lookup across shipped and cached bundles, the LRU
 * touch, eviction under a size cap, and cleanup of what crashed processes left behind.
 *
 * Publishing (the JAX/PyCUDA lessons: never write final files in place): build the whole
 * bundle in `tmp/stage-*` on the same filesystem, each file created exclusively and
 * fsynced, manifest.json last, fsync the directory, rename it into place, fsync the
 * parent. A crash at any point leaves either no bundle or a whole one; staging dirs of
 * dead processes are swept by the next publish. When the destination exists, the first
 * rename won: an intact equivalent bundle is used and ours discarded; an invalid or stale
 * one (other source hashes) is moved aside and replaced. Any I/O error only warns.
 */
import { createHash, randomBytes } from 'crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, type Stats } from 'fs';
import { hostname } from 'os';
import { dirname, join } from 'path';
import { ArgumentError, CacheError, FormatError } from '../util/errors';
import { sha256Hex } from '../util/hash';
import { LAYOUT_DIR, bundlePath, verifyBundle, type VerifiedBundle, type VerifyExpect, type VerifyReason } from './bundle';
import { errnoOf, faultAt, fsyncDir, mkdirp, removeTree, warnOnce, writeFileExclusive } from './io';
import { isKey, isNamespace, keyOf, kilnVersion, fileIdentity, toolchainFingerprint, type KeyFields, type ToolchainFingerprint } from './key';
import { isLocked, pidAlive } from './lock';
import {
  BUNDLE_FORMAT,
  BUNDLE_SCHEMA,
  MANIFEST_NAME,
  checkArtifactName,
  parseManifest,
  serializeManifest,
  type BundleGuards,
  type Manifest,
  type ManifestInfo,
} from './manifest';
import { assertTrustedCacheDir, untrustedDir } from './trust';

export interface StoreConfig {
  cacheDir: string;
  /** Shipped, read-only bundle roots, searched in order before the cache. */
  bundlePath: readonly string[];
  /** Write nothing (read-only mode, or a cache dir we cannot write). */
  readOnly: boolean;
  /** Size cap of the cache in bytes; 0 means no cap. */
  maxBytes: number;
}

export interface PublishFile {
  name: string;
  data: string | Uint8Array;
}

/** What the caller records besides the artifacts: every key field, the guards, and facts for `kiln cache show`. */
export interface ManifestFields {
  keyFields: KeyFields;
  guards: BundleGuards;
  info?: ManifestInfo;
}

export type PublishResult =
  /** Our bundle is in place. */
  | { status: 'published'; dir: string; manifest: Manifest }
  /** Another process published an equivalent bundle first; it is the one in place. */
  | { status: 'exists'; dir: string; manifest: Manifest }
  /** Nothing was written; the caller's result stands without a bundle. */
  | { status: 'skipped'; reason: 'read-only' | 'off' | 'io-error'; error?: unknown };

export type LookupResult =
  | { status: 'hit'; bundle: VerifiedBundle; source: 'cache' | 'shipped' }
  | { status: 'miss' }
  | { status: 'invalid'; dir: string; source: 'cache' | 'shipped'; reason: VerifyReason; detail: string };

/** Staging and trash dir names carry a hash of the host and the pid, so the sweep can tell dead owners. */
const hostTag = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
const STAGING_MAX_AGE_MS = 10 * 60_000;
const LOCK_LITTER_MAX_AGE_MS = 60_000;

export const tmpDir = (cacheDir: string): string => join(cacheDir, 'tmp');
export const lockDir = (cacheDir: string): string => join(cacheDir, 'locks');
export const lockFile = (cacheDir: string, key: string): string => join(lockDir(cacheDir), `${key}.lock`);

/**
 * Publishes a bundle atomically. Invalid arguments (a bad key, key fields that do not hash
 * to the key, an unsafe artifact name) throw; cache trouble (ENOSPC, EACCES, EROFS, an
 * untrusted subdirectory) warns once and returns `skipped`, leaving the cache consistent.
 */
export function publishBundle(cfg: StoreConfig, key: string, namespace: string, files: readonly PublishFile[], fields: ManifestFields): PublishResult {
  if (!isKey(key) || !isNamespace(namespace)) throw new ArgumentError('KILN_BAD_KEY_FIELD', `not a bundle address: ${namespace}/${key}`);
  if (fields.keyFields.namespace !== namespace || keyOf(fields.keyFields) !== key) {
    throw new ArgumentError('KILN_BAD_KEY_FIELD', `key fields do not hash to key ${key.slice(0, 12)} in namespace ${namespace}`);
  }
  if (fields.guards.target !== fields.keyFields.target) throw new ArgumentError('KILN_BAD_KEY_FIELD', 'guards.target must equal keyFields.target');
  const entries = files.map((f) => ({ name: checkArtifactName(f.name), data: typeof f.data === 'string' ? Buffer.from(f.data, 'utf8') : f.data }));
  if (new Set(entries.map((e) => e.name)).size !== entries.length) throw new FormatError('KILN_BUNDLE_NAME', 'an artifact name is given twice');
  if (cfg.readOnly) return { status: 'skipped', reason: 'read-only' };

  const manifest: Manifest = {
    format: BUNDLE_FORMAT,
    schema: BUNDLE_SCHEMA,
    kilnVersion: kilnVersion(),
    key,
    keyFields: fields.keyFields,
    guards: fields.guards,
    created: new Date().toISOString(),
    artifacts: entries.map((e) => ({ name: e.name, size: e.data.length, sha256: sha256Hex(e.data) })),
    ...(fields.info ? { info: fields.info } : {}),
  };
  parseManifest(serializeManifest(manifest)); // what we write must be what we accept back

  let staging: string | undefined;
  try {
    prepareCacheDir(cfg.cacheDir);
    sweep(cfg.cacheDir);
    staging = join(tmpDir(cfg.cacheDir), `stage-${hostTag}-${process.pid}-${randomBytes(6).toString('hex')}`);
    mkdirSync(staging, { mode: 0o755 });
    faultAt('stage');
    entries.forEach((e, i) => writeFileExclusive(join(staging!, e.name), e.data, i === 0 ? 'write' : undefined));
    faultAt('fsync');
    writeFileExclusive(join(staging, MANIFEST_NAME), Buffer.from(serializeManifest(manifest), 'utf8'), 'manifest');
    fsyncDir(staging);
    faultAt('rename');
    const final = bundlePath(cfg.cacheDir, namespace, key);
    mkdirp(dirname(final));
    const distrust = untrustedChain(cfg.cacheDir, final, false);
    if (distrust) throw new CacheError('KILN_CACHE_INSECURE', distrust);
    const placed = place(cfg.cacheDir, staging, final, manifest);
    staging = undefined;
    fsyncDir(dirname(final));
    faultAt('renamed');
    if (placed.status === 'published') {
      touch(final);
      if (cfg.maxBytes > 0) evictBundles(cfg, { maxBytes: cfg.maxBytes, keep: [final] });
    }
    return placed;
  } catch (e) {
    if (staging) removeTree(staging);
    const errno = errnoOf(e) ?? (e as { code?: string }).code ?? 'error';
    warnOnce(
      'KILN_CACHE_WRITE',
      `kiln: could not publish bundle ${namespace}/${key.slice(0, 12)} to ${cfg.cacheDir} (${(e as Error).message}); the program continues without caching it`,
      `publish:${cfg.cacheDir}:${errno}`,
    );
    return { status: 'skipped', reason: 'io-error', error: e };
  }
}

/** Creates the cache dir, tmp/ and locks/ (mode 0755) and checks they can be trusted. */
export function prepareCacheDir(cacheDir: string): void {
  mkdirp(tmpDir(cacheDir));
  mkdirp(lockDir(cacheDir));
  assertTrustedCacheDir(cacheDir);
  for (const d of [tmpDir(cacheDir), lockDir(cacheDir)]) {
    const why = untrustedDir(d, lstatSync(d));
    if (why) throw new CacheError('KILN_CACHE_INSECURE', why);
  }
}

function place(cacheDir: string, staging: string, final: string, manifest: Manifest): PublishResult {
  for (let attempt = 0; attempt < 4; attempt++) {
    try {
      renameSync(staging, final);
      return { status: 'published', dir: final, manifest };
    } catch (e) {
      if (!['ENOTEMPTY', 'EEXIST', 'ENOTDIR', 'EISDIR'].includes(errnoOf(e) ?? '')) throw e;
    }
    const existing = verifyBundle(final, { key: manifest.key, checkSources: false });
    if (existing.ok && sameGuards(existing.manifest, manifest)) {
      removeTree(staging);
      return { status: 'exists', dir: final, manifest: existing.manifest };
    }
    moveAside(cacheDir, final); // invalid or built from other sources: replace it
  }
  removeTree(staging);
  throw new CacheError('KILN_CACHE_CONTENDED', `${final} kept changing under concurrent publishers`);
}

function sameGuards(a: Manifest, b: Manifest): boolean {
  const src = (m: Manifest) => JSON.stringify(m.guards.sources.map((s) => [s.path, s.sha256]).sort());
  return a.guards.target === b.guards.target && a.guards.toolchain.id === b.guards.toolchain.id && src(a) === src(b);
}

/** Renames a bundle dir into tmp/ (atomic: readers see it whole or not at all), then deletes it. */
function moveAside(cacheDir: string, dir: string): void {
  const trash = join(tmpDir(cacheDir), `trash-${hostTag}-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    renameSync(dir, trash);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return;
    throw e;
  }
  removeTree(trash);
}

/** Marks a bundle used now (its directory mtime is the LRU clock). */
export function touch(dir: string): void {
  try {
    const now = new Date();
    utimesSync(dir, now, now);
  } catch {
    // LRU order is advisory
  }
}

/** Why a cache bundle dir or one of its parents below the cache dir is untrusted, if it is. */
function untrustedChain(cacheDir: string, dir: string, includeBundle: boolean): string | undefined {
  const chain: string[] = [];
  for (let p = includeBundle ? dir : dirname(dir); p.length > cacheDir.length; p = dirname(p)) chain.push(p);
  for (const p of chain) {
    let st: Stats;
    try {
      st = lstatSync(p);
    } catch {
      return undefined; // missing: a miss, not a trust problem
    }
    const why = untrustedDir(p, st);
    if (why) return why;
  }
  return undefined;
}

/**
 * Finds and verifies the bundle for `key`: shipped roots first, then the cache. The first
 * bundle that verifies is a hit; on a cache hit the LRU mark is touched unless read-only.
 * When bundles exist but none verifies, the result is `invalid` with the reason (the cache
 * one's when both failed, as that is the one a rebuild replaces).
 */
export function lookupBundle(cfg: StoreConfig, key: string, namespace: string, expect: VerifyExpect = {}): LookupResult {
  const roots: [string, 'cache' | 'shipped'][] = [...cfg.bundlePath.map((r): [string, 'shipped'] => [r, 'shipped']), [cfg.cacheDir, 'cache']];
  let invalid: Extract<LookupResult, { status: 'invalid' }> | undefined;
  for (const [root, source] of roots) {
    const dir = bundlePath(root, namespace, key);
    const distrust = source === 'cache' ? untrustedChain(root, dir, false) : undefined;
    const v = distrust
      ? ({ ok: false, dir, reason: 'untrusted', detail: distrust } as const)
      : verifyBundle(dir, { ...expect, key, namespace, checkOwner: source === 'cache' });
    if (v.ok) {
      if (source === 'cache' && !cfg.readOnly) touch(dir);
      return { status: 'hit', bundle: v, source };
    }
    if (v.reason !== 'missing' || existsDir(dir)) invalid = { status: 'invalid', dir, source, reason: v.reason, detail: v.detail };
  }
  return invalid ?? { status: 'miss' };
}

function existsDir(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** True when a manifest exists for the key in any root (cheap; no verification). */
export function bundleExists(cfg: StoreConfig, key: string, namespace: string): boolean {
  return [...cfg.bundlePath, cfg.cacheDir].some((root) => {
    try {
      return statSync(join(bundlePath(root, namespace, key), MANIFEST_NAME)).isFile();
    } catch {
      return false;
    }
  });
}

export interface BundleEntry {
  source: 'cache' | 'shipped';
  root: string;
  namespace: string;
  key: string;
  dir: string;
  /** Bytes of all files in the bundle dir. */
  bytes: number;
  /** The LRU clock: the bundle dir's mtime (publish time or last use). */
  lastUsed: Date;
  manifest?: Manifest;
  /** Why the manifest could not be read, when it could not. */
  error?: string;
}

/** Every bundle under the cache dir and (unless `shipped: false`) the shipped roots. */
export function listBundles(cfg: Pick<StoreConfig, 'cacheDir' | 'bundlePath'>, opts: { shipped?: boolean; manifests?: boolean } = {}): BundleEntry[] {
  const roots: [string, 'cache' | 'shipped'][] = [[cfg.cacheDir, 'cache']];
  if (opts.shipped !== false) roots.push(...cfg.bundlePath.map((r): [string, 'shipped'] => [r, 'shipped']));
  const out: BundleEntry[] = [];
  for (const [root, source] of roots) {
    for (const namespace of names(join(root, LAYOUT_DIR)).filter(isNamespace)) {
      for (const prefix of names(join(root, LAYOUT_DIR, namespace)).filter((p) => /^[0-9a-f]{2}$/.test(p))) {
        for (const key of names(join(root, LAYOUT_DIR, namespace, prefix)).filter((k) => isKey(k) && k.startsWith(prefix))) {
          const dir = bundlePath(root, namespace, key);
          let st: Stats;
          try {
            st = lstatSync(dir);
          } catch {
            continue; // evicted while we looked
          }
          const entry: BundleEntry = { source, root, namespace, key, dir, bytes: dirBytes(dir), lastUsed: st.mtime };
          if (opts.manifests !== false) {
            try {
              entry.manifest = parseManifest(readFileSync(join(dir, MANIFEST_NAME), 'utf8'));
            } catch (e) {
              entry.error = (e as Error).message;
            }
          }
          out.push(entry);
        }
      }
    }
  }
  return out;
}

function names(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

function dirBytes(dir: string): number {
  let bytes = 0;
  for (const n of names(dir)) {
    try {
      const st = lstatSync(join(dir, n));
      bytes += st.isDirectory() ? dirBytes(join(dir, n)) : st.size;
    } catch {
      // removed meanwhile
    }
  }
  return bytes;
}

export interface EvictOptions {
  /** Evict least-recently-used bundles until the cache holds at most this many bytes. */
  maxBytes?: number;
  /** Evict bundles not used for this long. */
  olderThanMs?: number;
  /** Bundle dirs never evicted (the one just published). */
  keep?: readonly string[];
  /** Report what would go, remove nothing. */
  dryRun?: boolean;
}

/**
 * Evicts cache bundles (never shipped ones), least recently used first. A bundle whose
 * key is locked (being rebuilt) and those in `keep` are never evicted.
 */
export function evictBundles(cfg: Pick<StoreConfig, 'cacheDir' | 'bundlePath' | 'readOnly'>, opts: EvictOptions): { removed: BundleEntry[]; freedBytes: number; remainingBytes: number } {
  const all = listBundles(cfg, { shipped: false, manifests: false }).sort((a, b) => a.lastUsed.getTime() - b.lastUsed.getTime() || a.key.localeCompare(b.key));
  let total = all.reduce((s, b) => s + b.bytes, 0);
  const removed: BundleEntry[] = [];
  const keep = new Set(opts.keep ?? []);
  const now = Date.now();
  for (const b of all) {
    const tooOld = opts.olderThanMs !== undefined && now - b.lastUsed.getTime() > opts.olderThanMs;
    const overCap = opts.maxBytes !== undefined && total > opts.maxBytes;
    if (!tooOld && !overCap) continue;
    if (keep.has(b.dir) || isLocked(lockFile(cfg.cacheDir, b.key))) continue;
    if (!opts.dryRun && !cfg.readOnly) moveAside(cfg.cacheDir, b.dir);
    removed.push(b);
    total -= b.bytes;
  }
  return { removed, freedBytes: removed.reduce((s, b) => s + b.bytes, 0), remainingBytes: total };
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
    const deadOwner = m[2] === hostTag && !pidAlive(Number(m[3]));
    if (deadOwner || now - mtimeOf(p) > STAGING_MAX_AGE_MS || (m[1] === 'trash' && Number(m[3]) === process.pid)) removeTree(p);
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

/** Removes every cache bundle, staging dir and remembered toolchain (not live locks). */
export function clearCache(cacheDir: string): void {
  prepareCacheDir(cacheDir);
  for (const sub of [LAYOUT_DIR, 'toolchains']) moveAside(cacheDir, join(cacheDir, sub));
  sweep(cacheDir, Date.now() + 2 * STAGING_MAX_AGE_MS);
}

const toolchainMemo = new Map<string, string>();

/**
 * The toolchain fingerprint for the compiler at `path`, computed from a stat alone on a
 * warm start: the version `probe()` returned for this exact file (realpath, size, mtime)
 * is remembered in `<cacheDir>/toolchains/`, so `probe` (which runs the compiler or loads
 * NVRTC) runs once per toolchain install, not once per process.
 */
export function resolveToolchain(cfg: StoreConfig, path: string, probe: () => string, flags: readonly string[] = []): ToolchainFingerprint {
  const id = fileIdentity(toolchainFingerprint({ path }).file);
  const memoFile = join(cfg.cacheDir, 'toolchains', `${id}.json`);
  let version = toolchainMemo.get(id);
  if (version === undefined) {
    try {
      const j = JSON.parse(readFileSync(memoFile, 'utf8')) as { version?: unknown };
      if (typeof j.version === 'string') version = j.version;
    } catch {
      // not remembered yet
    }
  }
  if (version === undefined) {
    version = probe();
    if (!cfg.readOnly) rememberToolchain(cfg.cacheDir, memoFile, version);
  }
  toolchainMemo.set(id, version);
  return toolchainFingerprint({ path, version, flags });
}

function rememberToolchain(cacheDir: string, memoFile: string, version: string): void {
  try {
    prepareCacheDir(cacheDir);
    mkdirp(dirname(memoFile));
    const temp = join(tmpDir(cacheDir), `stage-${hostTag}-${process.pid}-${randomBytes(6).toString('hex')}`);
    writeFileExclusive(temp, Buffer.from(JSON.stringify({ version }) + '\n'));
    renameSync(temp, memoFile);
  } catch {
    // remembering is an optimization; the next process probes again
  }
}
