/**
 * The bundle store: atomic publish, lookup across shipped and cached bundles, the LRU
 * touch, and the remembered toolchain versions. Layout and cleanup: layout.ts; listing
 * and eviction: evict.ts.
 *
 * Publishing (the JAX/PyCUDA lessons: never write final files in place): build the whole
 * bundle in `tmp/stage-*` on the same filesystem, each file created exclusively and
 * fsynced, manifest.json last, fsync the directory, rename it into place, fsync the
 * parent. A crash at any point leaves either no bundle or a whole one; staging dirs of
 * dead processes are swept by the next publish. When the destination exists, the first
 * rename won: an intact equivalent bundle is used and ours discarded; an invalid or stale
 * one (other source hashes) is moved aside and replaced. Any I/O error only warns.
 */
import { lstatSync, mkdirSync, readFileSync, renameSync, statSync, utimesSync, type Stats } from 'fs';
import { dirname, join, sep } from 'path';
import { ArgumentError, CacheError, FormatError } from '../util/errors';
import { sha256Hex } from '../util/hash';
import { bundlePath, verifyBundle, type VerifiedBundle, type VerifyExpect, type VerifyReason } from './bundle';
import { evictBundles } from './evict';
import { errnoOf, faultAt, fsyncDir, mkdirp, removeTree, warnOnce, writeFileExclusive } from './io';
import { isKey, isNamespace, keyOf, kilnVersion, fileIdentity, toolchainFingerprint, type KeyFields, type ToolchainFingerprint } from './key';
import { moveAside, prepareCacheDir, sweep, tmpName, type StoreConfig } from './layout';
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
import { untrustedDir, untrustedShippedDir } from './trust';

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
    staging = tmpName(cfg.cacheDir, 'stage');
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
    afterPlace(cfg, placed, final);
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

/** Durability of the rename, the LRU mark and eviction: trouble here warns, the bundle stays published. */
function afterPlace(cfg: StoreConfig, placed: PublishResult, final: string): void {
  try {
    fsyncDir(dirname(final));
    faultAt('renamed');
    if (placed.status !== 'published') return;
    touch(final);
    if (cfg.maxBytes > 0) evictBundles(cfg, { maxBytes: cfg.maxBytes, keep: [final] });
  } catch (e) {
    warnOnce('KILN_CACHE_WRITE', `kiln: after publishing ${final}: ${(e as Error).message}`, `after:${cfg.cacheDir}:${errnoOf(e) ?? 'error'}`);
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

/**
 * Removes a cache bundle that verified but then failed to load (the driver rejected the
 * cubin, dlopen failed), so the next lookup misses and rebuilds it once. Only the very
 * bundle that was verified is removed: it is moved aside first and, if its manifest is not
 * the one verified (another process replaced it meanwhile), put back. Shipped bundles and
 * read-only caches are never changed. True when the bundle was removed.
 */
export function discardBundle(cfg: StoreConfig, bundle: VerifiedBundle): boolean {
  if (cfg.readOnly || !bundle.dir.startsWith(cfg.cacheDir + sep)) return false;
  const trash = tmpName(cfg.cacheDir, 'trash');
  try {
    renameSync(bundle.dir, trash);
  } catch {
    return false; // gone already
  }
  // Same directory (inode; ext4 reuses freed inodes at once, hence also the manifest).
  let same = false;
  try {
    const st = lstatSync(trash);
    const m = parseManifest(readFileSync(join(trash, MANIFEST_NAME), 'utf8'));
    same = `${st.dev}:${st.ino}` === bundle.identity && m.created === bundle.manifest.created && JSON.stringify(m.artifacts) === JSON.stringify(bundle.manifest.artifacts);
  } catch {
    same = false;
  }
  if (!same) {
    try {
      renameSync(trash, bundle.dir); // a newer bundle: put it back unless yet another took its place
      return false;
    } catch {
      // the newer one stays
    }
  }
  removeTree(trash);
  return same;
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
 * one's when both failed, as that is the one a rebuild replaces). Shipped bundle dirs in
 * `skip` (ones that verified but failed to load in this process) are passed over as if absent.
 */
export function lookupBundle(cfg: StoreConfig, key: string, namespace: string, expect: VerifyExpect = {}, skip?: ReadonlySet<string>): LookupResult {
  const roots: [string, 'cache' | 'shipped'][] = cfg.bundlePath.map((r): [string, 'shipped'] => [r, 'shipped']);
  if (!cfg.unreachable) roots.push([cfg.cacheDir, 'cache']);
  let invalid: Extract<LookupResult, { status: 'invalid' }> | undefined;
  for (const [root, source] of roots) {
    const dir = bundlePath(root, namespace, key);
    if (source === 'shipped' && skip?.has(dir)) continue;
    // A shipped root is asked only for a bundle it holds: one that is not there is a miss.
    const distrust = source === 'cache' ? untrustedChain(root, dir, false) : existsDir(dir) ? untrustedShippedDir(root, dir) : undefined;
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

/**
 * device:inode of the cache's bundle dir for the key when it holds a manifest (cheap; no
 * verification). Waiters on a key lock compare it with its value when they started
 * waiting: an invalid bundle that is being replaced must not end the wait, a new one must.
 */
export function bundleIdentity(cfg: StoreConfig, key: string, namespace: string): string | undefined {
  const dir = bundlePath(cfg.cacheDir, namespace, key);
  try {
    if (!statSync(join(dir, MANIFEST_NAME)).isFile()) return undefined;
    const st = lstatSync(dir);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
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
    const temp = tmpName(cacheDir, 'stage');
    writeFileExclusive(temp, Buffer.from(JSON.stringify({ version }) + '\n'));
    renameSync(temp, memoFile);
  } catch {
    // remembering is an optimization; the next process probes again
  }
}
