/**
 * One bundle on disk: `<root>/v1/<namespace>/<key[0:2]>/<key>/` holding manifest.json and
 * the artifacts it lists. `verifyBundle` is the only way to get a `VerifiedBundle`, and
 * only a `VerifiedBundle` hands out artifact paths: nothing is loaded from a bundle that
 * has not passed every check. Checks run cheapest first; hashing the artifacts is last.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, readSync, type Stats } from 'fs';
import { createHash } from 'crypto';
import { isAbsolute, join, resolve, sep } from 'path';
import { FormatError, KilnError } from '../util/errors';
import { sha256Hex } from '../util/hash';
import { isKey, isNamespace, kilnVersion } from './key';
import { MANIFEST_NAME, checkArtifactName, parseManifest, type Manifest } from './manifest';
import { checkTarget, type Host } from './target';
import { untrustedDir, untrustedFile, untrustedShippedFile } from './trust';

/** Directory name of format v1 under a cache or shipped-bundle root. */
export const LAYOUT_DIR = 'v1';
const MAX_MANIFEST_BYTES = 4 << 20;

/** `<root>/v1/<namespace>/<key[0:2]>/<key>`. */
export function bundlePath(root: string, namespace: string, key: string): string {
  if (!isNamespace(namespace) || !isKey(key)) throw new FormatError('KILN_BUNDLE_NAME', `not a bundle address: ${namespace}/${key}`);
  return join(root, LAYOUT_DIR, namespace, key.slice(0, 2), key);
}

export type VerifyReason =
  | 'missing'
  | 'untrusted'
  | 'manifest-invalid'
  | 'schema-unsupported'
  | 'key-mismatch'
  | 'kiln-version'
  | 'target-mismatch'
  | 'isa-missing'
  | 'compute-capability'
  | 'toolchain-changed'
  | 'source-missing'
  | 'source-changed'
  | 'artifact-missing'
  | 'artifact-size'
  | 'artifact-checksum';

/** A bundle that passed verification; its artifacts may be read and loaded. */
export interface VerifiedBundle {
  ok: true;
  dir: string;
  manifest: Manifest;
  /** device:inode of the bundle dir: tells this published bundle from a later one at the same path. */
  identity: string;
}

export type VerifyResult = VerifiedBundle | { ok: false; dir: string; reason: VerifyReason; detail: string };

export interface VerifyExpect {
  /** The key (and namespace) the caller looked up; the manifest must say the same. */
  key?: string;
  namespace?: string;
  /** The machine about to run the code; omitted, the target is not checked. */
  host?: Host;
  /** The toolchain id of this process; omitted, not checked (it is in the key anyway). */
  toolchain?: string;
  /** Base for relative source-guard paths (default: the cwd). */
  sourceRoot?: string;
  /** Check the source-file guards (default true). */
  checkSources?: boolean;
  /** Require this kiln version (default: ours); false skips the check. */
  kilnVersion?: string | false;
  /** Check the owner and mode of the bundle dir (default true; false for shipped bundles). */
  checkOwner?: boolean;
}

/**
 * Verifies a bundle directory: manifest schema and fields, key, kiln version, target
 * against the host, toolchain, source-file guards, and every artifact's size and sha256.
 * Never throws for a bad bundle: each failure is `{ ok: false, reason, detail }`.
 */
export function verifyBundle(dir: string, expect: VerifyExpect = {}): VerifyResult {
  const bad = (reason: VerifyReason, detail: string): VerifyResult => ({ ok: false, dir, reason, detail });
  let st: Stats;
  try {
    st = lstatSync(dir);
  } catch {
    return bad('missing', `no bundle at ${dir}`);
  }
  const distrust = expect.checkOwner === false ? (st.isDirectory() ? undefined : `${dir} is not a directory`) : untrustedDir(dir, st);
  if (distrust) return bad('untrusted', distrust);

  let manifest: Manifest;
  try {
    manifest = parseManifest(readSmallFile(join(dir, MANIFEST_NAME), MAX_MANIFEST_BYTES).toString('utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return bad('missing', `${dir} has no ${MANIFEST_NAME}`);
    if (e instanceof KilnError && e.code === 'KILN_BUNDLE_SCHEMA') return bad('schema-unsupported', e.message);
    return bad('manifest-invalid', e instanceof Error ? e.message : String(e));
  }

  const dirKey = dir.split(sep).pop();
  if (manifest.key !== dirKey) return bad('key-mismatch', `manifest key ${manifest.key.slice(0, 12)} does not match directory ${dirKey}`);
  if (expect.key !== undefined && manifest.key !== expect.key) return bad('key-mismatch', `bundle key ${manifest.key.slice(0, 12)}, expected ${expect.key.slice(0, 12)}`);
  if (expect.namespace !== undefined && manifest.keyFields.namespace !== expect.namespace) {
    return bad('key-mismatch', `bundle namespace '${manifest.keyFields.namespace}', expected '${expect.namespace}'`);
  }
  const wantVersion = expect.kilnVersion === undefined ? kilnVersion() : expect.kilnVersion;
  if (wantVersion !== false && manifest.kilnVersion !== wantVersion) {
    return bad('kiln-version', `bundle was built by kiln ${manifest.kilnVersion}; this is kiln ${wantVersion}`);
  }
  if (expect.host) {
    const t = checkTarget(manifest.guards.target, expect.host);
    if (!t.ok) return bad(t.reason, t.detail);
  }
  if (expect.toolchain !== undefined && manifest.guards.toolchain.id !== expect.toolchain) {
    const was = manifest.guards.toolchain.version ?? manifest.guards.toolchain.id;
    return bad('toolchain-changed', `bundle was built with toolchain ${was}; this process uses ${expect.toolchain}`);
  }
  if (expect.checkSources !== false) {
    for (const g of manifest.guards.sources) {
      const file = isAbsolute(g.path) ? g.path : resolve(expect.sourceRoot ?? process.cwd(), g.path);
      let text: Buffer;
      try {
        text = readFileSync(file);
      } catch {
        return bad('source-missing', `${g.path} (traced when the bundle was built) is missing`);
      }
      if (sha256Hex(text) !== g.sha256) return bad('source-changed', `${g.path} changed since the bundle was built`);
    }
  }
  for (const a of manifest.artifacts) {
    const file = join(dir, checkArtifactName(a.name));
    let fd: number;
    try {
      // O_NOFOLLOW: an artifact that is a symlink could point outside the bundle.
      fd = openSync(file, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ELOOP') return bad('untrusted', `${a.name} is a symbolic link`);
      return bad('artifact-missing', `${a.name} is missing from ${dir}`);
    }
    try {
      const ast = fstatSync(fd);
      if (!ast.isFile()) return bad('untrusted', `${a.name} is not a regular file`);
      // Cache files: ours and not group/other-writable; shipped ones: not writable by any user.
      const fileDistrust = expect.checkOwner === false ? untrustedShippedFile(a.name, ast) : untrustedFile(a.name, ast);
      if (fileDistrust) return bad('untrusted', fileDistrust);
      if (ast.size !== a.size) return bad('artifact-size', `${a.name} is ${ast.size} bytes, the manifest says ${a.size}; the file is truncated or was replaced`);
      if (hashFd(fd, ast.size) !== a.sha256) return bad('artifact-checksum', `${a.name} does not match its sha256; the file is corrupted`);
    } finally {
      closeSync(fd);
    }
  }
  return { ok: true, dir, manifest, identity: `${st.dev}:${st.ino}` };
}

function hashFd(fd: number, size: number): string {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(Math.min(Math.max(size, 1), 1 << 20));
  let pos = 0;
  for (;;) {
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) break;
    h.update(buf.subarray(0, n));
    pos += n;
  }
  return h.digest('hex');
}

function readSmallFile(file: string, max: number): Buffer {
  const fd = openSync(file, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new FormatError('KILN_BUNDLE_MANIFEST', `${file} is not a regular file`);
    if (st.size > max) throw new FormatError('KILN_BUNDLE_MANIFEST', `${file} is ${st.size} bytes; a manifest is at most ${max}`);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Path of an artifact of a verified bundle (e.g. for dlopen). */
export function artifactPath(bundle: VerifiedBundle, name: string): string {
  if (!bundle.manifest.artifacts.some((a) => a.name === name)) {
    throw new FormatError('KILN_BUNDLE_NAME', `bundle ${bundle.dir} has no artifact '${name}'`);
  }
  return join(bundle.dir, name);
}

/** Reads an artifact of a verified bundle, re-checking its sha256 (the bytes returned are the bytes verified). */
export function readArtifact(bundle: VerifiedBundle, name: string): Buffer {
  const entry = bundle.manifest.artifacts.find((a) => a.name === name);
  if (!entry) throw new FormatError('KILN_BUNDLE_NAME', `bundle ${bundle.dir} has no artifact '${name}'`);
  const data = readFileSync(join(bundle.dir, name));
  if (data.length !== entry.size || sha256Hex(data) !== entry.sha256) {
    throw new FormatError('KILN_BUNDLE_CHECKSUM', `${name} in ${bundle.dir} changed after verification`);
  }
  return data;
}
