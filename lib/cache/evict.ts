/**
 * Listing and eviction. The LRU clock is each bundle directory's mtime, set on publish and
 * touched on every hit (cuda.core's explicit touch; Triton, CuPy and Inductor have no
 * eviction and their caches grow without bound). Bundles are removed by moving them aside
 * first, so a reader sees a bundle whole or not at all.
 */
import { lstatSync, readFileSync, type Stats } from 'fs';
import { join } from 'path';
import { LAYOUT_DIR, bundlePath } from './bundle';
import { isKey, isNamespace } from './key';
import { lockFile, moveAside, names, prepareCacheDir, sweep, type StoreConfig } from './layout';
import { isLocked } from './lock';
import { MANIFEST_NAME, parseManifest, type Manifest } from './manifest';

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

/** Removes every cache bundle, staging dir and remembered toolchain (not live locks). */
export function clearCache(cacheDir: string): void {
  prepareCacheDir(cacheDir);
  for (const sub of [LAYOUT_DIR, 'toolchains']) moveAside(cacheDir, join(cacheDir, sub));
  sweep(cacheDir); // staging dirs of live publishers are theirs to finish
}

