/**
 * Who may write the cache. A bundle is executable code (a shared object kiln dlopens, a
 * cubin it loads), so a cache that another user can write is a way to run their code in
 * our process. The rule (docs/BUNDLES.md, "Security"):
 * - the cache dir must be owned by us (or root) and not writable by group or others; a
 *   group/other-writable cache dir is accepted only when it has the sticky bit and is owned
 *   by us (others may then add entries but never rename or delete ours);
 * - every directory kiln uses below it (v1/, namespaces, bundles, tmp/, locks/) must be
 *   owned by us (or root) and not writable by group or others — a bundle dir that fails is
 *   treated as invalid, never loaded;
 * - no ancestor of the cache dir may be writable by others without the sticky bit.
 * Shipped bundle directories are trusted like the package's own JavaScript beside them
 * (whoever owns them, group-writable too), but not when any user may write them: a shipped
 * root, or a directory below it down to the bundle, writable by others without the sticky
 * bit, or an artifact writable by others, lets another user swap a kernels.so between
 * verification and dlopen. Such a bundle is untrusted (`untrustedShippedDir`,
 * `untrustedShippedFile`): passed over with one warning, and kiln compiles into the cache
 * instead.
 * Platforms without uids (Windows) skip the ownership checks.
 */
import { lstatSync, realpathSync, statSync, type Stats } from 'fs';
import { dirname, relative, sep } from 'path';
import { CacheError } from '../util/errors';
import { errnoOf } from './io';

const uid = (): number | undefined => (typeof process.getuid === 'function' ? process.getuid() : undefined);

function mode(st: Stats): string {
  return '0' + (st.mode & 0o7777).toString(8);
}

/**
 * Why a directory inside the cache is not trustworthy, or undefined when it is. `st` is an
 * lstat: a symlink is never trusted (it could point anywhere).
 */
export function untrustedDir(path: string, st: Stats): string | undefined {
  if (st.isSymbolicLink()) return `${path} is a symbolic link`;
  if (!st.isDirectory()) return `${path} is not a directory`;
  const me = uid();
  if (me === undefined) return undefined;
  if (st.uid !== me && st.uid !== 0) return `${path} is owned by uid ${st.uid}, not by this user (uid ${me})`;
  if (st.mode & 0o022) return `${path} is writable by group or others (mode ${mode(st)})`;
  return undefined;
}

/** Why a bundle file (an fstat) could be changed by someone else after verification, if it could. */
export function untrustedFile(name: string, st: Stats): string | undefined {
  const me = uid();
  if (me === undefined) return undefined;
  if (st.uid !== me && st.uid !== 0) return `${name} is owned by uid ${st.uid}, not by this user (uid ${me})`;
  if (st.mode & 0o022) return `${name} is writable by group or others (mode ${mode(st)})`;
  return undefined;
}

/**
 * Why a shipped bundle's artifact could be changed by another user: it is writable by any
 * user (as `untrustedShippedDir` asks of its directories; group-write and ownership pass).
 */
export function untrustedShippedFile(name: string, st: Stats): string | undefined {
  if (uid() === undefined) return undefined;
  return st.mode & 0o002 ? `${name} is writable by any user (mode ${mode(st)}); fix it with \`chmod o-w\`` : undefined;
}

const trustedRoots = new Set<string>();

/**
 * Why this user cannot reach `dir` at all (a parent it may not search, a file in the way),
 * or undefined when it can, or when `dir` does not exist yet.
 */
export function unreachableDir(dir: string): string | undefined {
  try {
    realpathSync(dir);
    return undefined;
  } catch (e) {
    const code = errnoOf(e);
    return code === 'ENOENT' ? undefined : (e as Error).message;
  }
}

/**
 * Throws CacheError KILN_CACHE_INSECURE unless `dir` (when it exists) and its ancestors
 * pass the rule above. Remembered per process once passed.
 */
export function assertTrustedCacheDir(dir: string): void {
  if (trustedRoots.has(dir) || uid() === undefined) return;
  let real: string;
  try {
    real = realpathSync(dir);
  } catch (e) {
    if (errnoOf(e) !== 'ENOENT') throw e;
    checkAncestors(dir, nearestExisting(dir));
    return; // created later by publish with mode 0755; checked again once it exists
  }
  const st = statSync(real);
  const me = uid();
  const insecure = (why: string) =>
    new CacheError(
      'KILN_CACHE_INSECURE',
      `refusing the kiln cache at ${dir}: ${why}. Bundles are executable code; fix it with \`chmod go-w ${real}\` (and chown to yourself), choose another KILN_CACHE_DIR, or run with cache: 'off'.`,
    );
  if (!st.isDirectory()) throw insecure(`${real} is not a directory`);
  if (st.uid !== me && st.uid !== 0) throw insecure(`it is owned by uid ${st.uid}, not by this user (uid ${me})`);
  const sticky = (st.mode & 0o1000) !== 0;
  if (st.mode & 0o022 && !(sticky && st.uid === me)) throw insecure(`it is writable by group or others (mode ${mode(st)}) and not sticky and owned by this user`);
  checkAncestors(dir, dirname(real));
  trustedRoots.add(dir);
}

function nearestExisting(p: string): string {
  for (;;) {
    try {
      return realpathSync(p);
    } catch {
      const up = dirname(p);
      if (up === p) return p;
      p = up;
    }
  }
}

function checkAncestors(dir: string, from: string): void {
  for (let p = from; ; p = dirname(p)) {
    let st: Stats;
    try {
      st = lstatSync(p);
    } catch {
      st = undefined as unknown as Stats;
    }
    if (st && st.mode & 0o002 && !(st.mode & 0o1000)) {
      throw new CacheError(
        'KILN_CACHE_INSECURE',
        `refusing the kiln cache at ${dir}: its parent ${p} is writable by everyone without the sticky bit (mode ${mode(st)}), so anyone could replace the cache. Choose another KILN_CACHE_DIR or run with cache: 'off'.`,
      );
    }
    if (dirname(p) === p) return;
  }
}

/**
 * Why what is loaded from `dir`, a bundle dir below the shipped root `root`, could be changed
 * by another user, if it could: the root or a directory between it and `dir` (both included)
 * is writable by others without the sticky bit, so any user could swap a kernels.so between
 * its verification and dlopen. Group-writable directories pass: with the usual umask 002 and
 * a group per user, an unpacked app's directories are 0775. Ownership is not asked (shipped
 * bundles may belong to whoever installed the app); a missing directory is a miss, not a
 * trust problem. Directories are stat'ed through symbolic links: a link is as safe as what it
 * points to. The store treats such a bundle as `untrusted`, as it does a cache one: warned
 * once (KILN_BUNDLE_INVALID) and passed over, so the app compiles into the cache instead.
 */
export function untrustedShippedDir(root: string, dir: string): string | undefined {
  if (uid() === undefined) return undefined;
  const rel = relative(root, dir);
  const parts = rel === '' || rel.startsWith('..') ? [] : rel.split(sep);
  let p = root;
  for (const part of ['', ...parts]) {
    if (part) p = `${p}${sep}${part}`;
    let st: Stats;
    try {
      st = statSync(p);
    } catch {
      return undefined;
    }
    if (st.mode & 0o002 && !(st.mode & 0o1000)) {
      return `${p} is writable by any user without the sticky bit (mode ${mode(st)}), so another user could swap a bundle between its verification and loading; fix it with \`chmod o-w ${p}\``;
    }
  }
  return undefined;
}
