/**
 * The bundle key: sha256 over labelled, length-prefixed fields, schema version first (the
 * shape cuda.core's program cache uses). Every field that changes the compiled code is in
 * it, and nothing else: never a path, HOME, the cwd, a pid, a time, or a variable that only
 * steers the cache (vLLM once hashed its own force-load switch and split its cache).
 * docs/BUNDLES.md, "Key", explains each field.
 */
import { kilnVersion } from '../util/version';
import { realpathSync, statSync } from 'fs';
import { isDType, type DType } from '../ir/dtype';
import { codeRelevantEnv } from '../util/env';
import { ArgumentError } from '../util/errors';
import { hashFields, sha256Hex } from '../util/hash';
import { parseTarget } from './target';

/**
 * Version of the key's field list; bump when a field is added, removed or re-encoded.
 * 2: `userKey` added (the `key` option).
 */
export const KEY_SCHEMA = 2;

export { kilnVersion };

/** One input of the compiled function: dtype, static shape, and which dims are dynamic. */
export interface InputSignature {
  dtype: DType;
  shape: readonly number[];
  /** Indices of dims that are symbolic; their sizes in `shape` do not enter the key. */
  dynamic?: readonly number[];
}

export interface KeyInput {
  /** Groups bundles (e.g. the function's `name`); a path component: [A-Za-z0-9._-], at most 64. */
  namespace: string;
  /** The traced function's source text (`fn.toString()`); only its sha256 is kept. */
  source: string;
  inputs: readonly InputSignature[];
  /** Options that change generated code, as a plain JSON-able object. */
  options?: Readonly<Record<string, unknown>>;
  /**
   * The user's `key` option as canonical JSON (`canonicalJson`): values the function depends
   * on that its source text and inputs don't show. Absent: none given.
   */
  userKey?: string;
  /** `cpu-<arch>+<features>`, `sm_XY` or `compute_XY` (see target.ts). */
  target: string;
  /** `ToolchainFingerprint.id` of the compiler that builds the code. */
  toolchain: string;
  /** Environment to read code-relevant variables from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Every key field by name, as recorded in the manifest; `keyOf(fields)` recomputes the key. */
export interface KeyFields {
  schema: number;
  kilnVersion: string;
  namespace: string;
  sourceSha256: string;
  /** One entry per input, e.g. `float32[?,768]` (`?` marks a dynamic dim). */
  inputs: string[];
  /** Canonical JSON of the code-relevant options. */
  options: string;
  /** Canonical JSON of the user's `key` option; '' when none was given (schema 1 manifests: always ''). */
  userKey: string;
  target: string;
  toolchain: string;
  /** The target kind's code-relevant environment variables from the registry in lib/util/env.ts ('' when unset). */
  env: Record<string, string>;
}

const NAMESPACE_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/;
const KEY_RE = /^[0-9a-f]{64}$/;

/** True for a valid namespace (a safe single path component). */
export function isNamespace(s: unknown): s is string {
  return typeof s === 'string' && NAMESPACE_RE.test(s);
}

/** True for a 64-digit lowercase hex key. */
export function isKey(s: unknown): s is string {
  return typeof s === 'string' && KEY_RE.test(s);
}

/** Computes the key and its fields. Throws ArgumentError for a field that cannot be keyed. */
export function bundleKey(input: KeyInput): { key: string; keyFields: KeyFields } {
  if (!isNamespace(input.namespace)) {
    throw new ArgumentError('KILN_BAD_NAMESPACE', `namespace ${JSON.stringify(input.namespace)} must be 1-64 characters of [A-Za-z0-9._-], not starting with '.' or '-'`);
  }
  const target = parseTarget(input.target);
  if (!target) {
    throw new ArgumentError('KILN_BAD_TARGET', `target ${JSON.stringify(input.target)} is not cpu-<arch>[+features], sm_XY or compute_XY`);
  }
  if (typeof input.toolchain !== 'string' || input.toolchain === '') {
    throw new ArgumentError('KILN_BAD_KEY_FIELD', 'toolchain fingerprint must be a non-empty string');
  }
  if (input.userKey !== undefined && typeof input.userKey !== 'string') {
    throw new ArgumentError('KILN_BAD_KEY_FIELD', 'userKey must be canonical JSON text');
  }
  const keyFields: KeyFields = {
    schema: KEY_SCHEMA,
    kilnVersion: kilnVersion(),
    namespace: input.namespace,
    sourceSha256: sha256Hex(input.source),
    inputs: input.inputs.map(signatureText),
    options: canonicalJson(input.options ?? {}),
    userKey: input.userKey ?? '',
    target: input.target,
    toolchain: input.toolchain,
    env: Object.fromEntries(codeRelevantEnv(target.kind, input.env)),
  };
  return { key: keyOf(keyFields), keyFields };
}

/**
 * The key of recorded fields; schema first, each field labelled and length-prefixed. Keys
 * of schema 1 manifests (no `userKey`) still recompute, so `kiln cache verify` accepts them.
 */
export function keyOf(f: KeyFields): string {
  return hashFields([
    ['schema', String(f.schema)],
    ['kilnVersion', f.kilnVersion],
    ['namespace', f.namespace],
    ['sourceSha256', f.sourceSha256],
    ['inputs', canonicalJson(f.inputs)],
    ['options', f.options],
    ...(f.schema >= 2 ? [['userKey', f.userKey] as [string, string]] : []),
    ['target', f.target],
    ['toolchain', f.toolchain],
    ['env', canonicalJson(f.env)],
  ]);
}

/** `float32[?,768]`: dtype, then each dim, `?` for a dynamic one. */
export function signatureText(sig: InputSignature): string {
  if (!isDType(sig.dtype)) throw new ArgumentError('KILN_BAD_KEY_FIELD', `input dtype ${JSON.stringify(sig.dtype)} is not a kiln dtype`);
  const dyn = new Set(sig.dynamic ?? []);
  for (const d of dyn) {
    if (!Number.isSafeInteger(d) || d < 0 || d >= sig.shape.length) {
      throw new ArgumentError('KILN_BAD_KEY_FIELD', `dynamic dim ${d} is out of range for a rank-${sig.shape.length} input`);
    }
  }
  const dims = sig.shape.map((n, i) => {
    if (dyn.has(i)) return '?';
    if (!Number.isSafeInteger(n) || n < 0) throw new ArgumentError('KILN_BAD_KEY_FIELD', `dim ${i} of an input is ${n}, not a size`);
    return String(n);
  });
  return `${sig.dtype}[${dims.join(',')}]`;
}

/**
 * JSON with object keys sorted and `undefined` members dropped, so equal values have one
 * text. Only plain data is accepted: a function, symbol, bigint, non-finite number or class
 * instance in code-relevant options is a bug that would make the key lie.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(canonical(value, '$', []));
}

function canonical(v: unknown, at: string, parents: object[]): unknown {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new ArgumentError('KILN_BAD_KEY_FIELD', `${at} is ${v}; key fields must be finite numbers`);
    return v;
  }
  if (typeof v === 'object' && parents.includes(v)) throw new ArgumentError('KILN_BAD_KEY_FIELD', `${at} refers back to an enclosing value; key fields must be a tree of plain data`);
  const inner = typeof v === 'object' ? [...parents, v] : parents;
  if (Array.isArray(v)) return v.map((x, i) => canonical(x === undefined ? null : x, `${at}[${i}]`, inner));
  if (typeof v === 'object') {
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) {
      throw new ArgumentError('KILN_BAD_KEY_FIELD', `${at} is a ${proto?.constructor?.name ?? 'non-plain'} object; key fields must be plain data`);
    }
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v as object).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = canonical(x, `${at}.${k}`, inner);
    }
    return out;
  }
  throw new ArgumentError('KILN_BAD_KEY_FIELD', `${at} is a ${typeof v}; key fields must be plain data`);
}

/** The identity of the compiler (or NVRTC library) that builds a bundle. */
export interface ToolchainFingerprint {
  /** What enters the key: `ver:<sha256>` when the version is known, else `file:<sha256>`. */
  id: string;
  version?: string;
  /** The file's identity: realpath, size, mtime (ms). Recorded in guards, not in the key. */
  file: { realpath: string; size: number; mtimeMs: number };
  flags: string[];
}

/**
 * Fingerprints a toolchain from a `stat` of its binary, without running it: a warm start
 * must not probe the compiler. With `version` (the full version string, e.g. the first line
 * of `c++ --version` or NVRTC's version), the id depends on version and flags only, so it
 * is equal on every machine with the same toolchain and shipped or offline-built bundles
 * match. Without it, the id falls back to realpath + size + mtime: correct, but local to
 * this machine. The cache's `toolchain()` helper remembers version by file identity so a
 * warm start always knows it (docs/BUNDLES.md, "Toolchain fingerprint").
 */
export function toolchainFingerprint(t: { path: string; version?: string; flags?: readonly string[] }): ToolchainFingerprint {
  const realpath = realpathSync(t.path);
  const st = statSync(realpath);
  const file = { realpath, size: st.size, mtimeMs: Math.floor(st.mtimeMs) };
  const flags = [...(t.flags ?? [])];
  const id =
    t.version !== undefined
      ? 'ver:' + hashFields([['version', t.version], ['flags', canonicalJson(flags)]])
      : 'file:' + hashFields([['realpath', realpath], ['size', String(file.size)], ['mtimeMs', String(file.mtimeMs)], ['flags', canonicalJson(flags)]]);
  return t.version !== undefined ? { id, version: t.version, file, flags } : { id, file, flags };
}

/** The stat identity of a toolchain binary, used to remember its version across processes. */
export function fileIdentity(file: ToolchainFingerprint['file']): string {
  return hashFields([['realpath', file.realpath], ['size', String(file.size)], ['mtimeMs', String(file.mtimeMs)]]);
}
