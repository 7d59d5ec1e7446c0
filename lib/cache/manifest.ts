/**
 * manifest.json, bundle format v1: what a bundle is, what built it, what it guards on and
 * which files it holds. Parsing is strict: an unknown format or schema, a missing or
 * mistyped field, an unknown field, or an artifact name that could leave the bundle
 * directory is a FormatError before any artifact is opened.
 */
import { FormatError } from '../util/errors';
import { isKey, isNamespace, keyOf, type KeyFields } from './key';
import { parseTarget } from './target';

export const BUNDLE_FORMAT = 'kiln-bundle';
export const BUNDLE_SCHEMA = 1;
export const MANIFEST_NAME = 'manifest.json';

export interface ArtifactEntry {
  /** A plain file name inside the bundle directory (see `checkArtifactName`). */
  name: string;
  size: number;
  sha256: string;
}

/** A user source file that produced traced ops, and its content hash when the bundle was built. */
export interface SourceGuard {
  /** Absolute, or relative to the source root the engine passes to verification. */
  path: string;
  sha256: string;
}

/** The toolchain that built the bundle (informational beyond `id`, which is in the key). */
export interface ToolchainIdentity {
  id: string;
  version?: string;
  path?: string;
}

export interface BundleGuards {
  sources: SourceGuard[];
  target: string;
  toolchain: ToolchainIdentity;
}

/** Flat, informational facts the engine wants `kiln cache show` to print (kernel count, fn name). */
export type ManifestInfo = Record<string, string | number | boolean>;

export interface Manifest {
  format: typeof BUNDLE_FORMAT;
  schema: typeof BUNDLE_SCHEMA;
  kilnVersion: string;
  key: string;
  keyFields: KeyFields;
  guards: BundleGuards;
  /** ISO time of publishing; informational only (never a key, never a guard). */
  created: string;
  artifacts: ArtifactEntry[];
  info?: ManifestInfo;
}

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const SHA_RE = /^[0-9a-f]{64}$/;

/**
 * Returns `name` when it is a plain file name that stays inside the bundle directory:
 * no '/', '\\', NUL, '..', absolute form or leading dot, and not the manifest itself.
 * Throws FormatError (KILN_BUNDLE_NAME) otherwise.
 */
export function checkArtifactName(name: unknown): string {
  if (typeof name !== 'string' || !NAME_RE.test(name) || name.includes('..') || name === MANIFEST_NAME) {
    throw new FormatError('KILN_BUNDLE_NAME', `artifact name ${JSON.stringify(name)} is not a plain file name inside the bundle (letters, digits, '._-', no '..' or '/')`);
  }
  return name;
}

function fail(what: string): never {
  throw new FormatError('KILN_BUNDLE_MANIFEST', `manifest.json: ${what}`);
}

type Obj = Record<string, unknown>;

function obj(v: unknown, at: string, keys: readonly string[], optional: readonly string[] = []): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`${at} must be an object`);
  const o = v as Obj;
  for (const k of Object.keys(o)) if (!keys.includes(k) && !optional.includes(k)) fail(`${at} has an unknown field '${k}'`);
  for (const k of keys) if (!(k in o)) fail(`${at}.${k} is missing`);
  return o;
}

function str(v: unknown, at: string, re?: RegExp): string {
  if (typeof v !== 'string' || v.includes('\0') || (re && !re.test(v))) fail(`${at} is not a valid string: ${JSON.stringify(v)}`);
  return v;
}

function arr(v: unknown, at: string): unknown[] {
  if (!Array.isArray(v)) fail(`${at} must be a list`);
  return v;
}

function parseKeyFields(v: unknown): KeyFields {
  // Schema 1 key fields predate `userKey`; they still parse (and their keys recompute).
  const schema1 = typeof v === 'object' && v !== null && (v as Obj).schema === 1;
  const fields = ['schema', 'kilnVersion', 'namespace', 'sourceSha256', 'inputs', 'options', 'target', 'toolchain', 'env'];
  const o = obj(v, 'keyFields', schema1 ? fields : [...fields, 'userKey'], schema1 ? ['userKey'] : []);
  if (!Number.isSafeInteger(o.schema)) fail('keyFields.schema must be an integer');
  if (!isNamespace(o.namespace)) fail(`keyFields.namespace ${JSON.stringify(o.namespace)} is not a valid namespace`);
  const env = obj(o.env, 'keyFields.env', Object.keys(o.env ?? {}));
  for (const [k, x] of Object.entries(env)) str(x, `keyFields.env.${k}`);
  return {
    schema: o.schema as number,
    kilnVersion: str(o.kilnVersion, 'keyFields.kilnVersion'),
    namespace: o.namespace,
    sourceSha256: str(o.sourceSha256, 'keyFields.sourceSha256', SHA_RE),
    inputs: arr(o.inputs, 'keyFields.inputs').map((x, i) => str(x, `keyFields.inputs[${i}]`)),
    options: str(o.options, 'keyFields.options'),
    userKey: schema1 ? '' : str(o.userKey, 'keyFields.userKey'),
    target: str(o.target, 'keyFields.target'),
    toolchain: str(o.toolchain, 'keyFields.toolchain'),
    env: env as Record<string, string>,
  };
}

function parseGuards(v: unknown): BundleGuards {
  const o = obj(v, 'guards', ['sources', 'target', 'toolchain']);
  const sources = arr(o.sources, 'guards.sources').map((s, i) => {
    const g = obj(s, `guards.sources[${i}]`, ['path', 'sha256']);
    return { path: str(g.path, `guards.sources[${i}].path`, /./), sha256: str(g.sha256, `guards.sources[${i}].sha256`, SHA_RE) };
  });
  const target = str(o.target, 'guards.target');
  if (!parseTarget(target)) fail(`guards.target '${target}' is not a known target`);
  const t = obj(o.toolchain, 'guards.toolchain', ['id'], ['version', 'path']);
  const toolchain: ToolchainIdentity = { id: str(t.id, 'guards.toolchain.id', /./) };
  if (t.version !== undefined) toolchain.version = str(t.version, 'guards.toolchain.version');
  if (t.path !== undefined) toolchain.path = str(t.path, 'guards.toolchain.path');
  return { sources, target, toolchain };
}

/**
 * Parses and validates manifest.json. Throws FormatError: KILN_BUNDLE_SCHEMA for another
 * format or schema, KILN_BUNDLE_NAME for an unsafe artifact name, KILN_BUNDLE_MANIFEST for
 * anything else malformed (including key fields that do not hash to the recorded key).
 */
export function parseManifest(text: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    fail(`not JSON (${(e as Error).message}); the file is truncated or corrupted`);
  }
  if (typeof raw !== 'object' || raw === null) fail('must be an object');
  const { format, schema } = raw as Obj;
  if (format !== BUNDLE_FORMAT || schema !== BUNDLE_SCHEMA) {
    throw new FormatError('KILN_BUNDLE_SCHEMA', `manifest.json is format ${JSON.stringify(format)} schema ${JSON.stringify(schema)}; this kiln reads ${BUNDLE_FORMAT} schema ${BUNDLE_SCHEMA}`);
  }
  const o = obj(raw, 'manifest', ['format', 'schema', 'kilnVersion', 'key', 'keyFields', 'guards', 'created', 'artifacts'], ['info']);
  const key = str(o.key, 'key');
  if (!isKey(key)) fail(`key '${key}' is not 64 hex digits`);
  const artifacts = arr(o.artifacts, 'artifacts').map((a, i) => {
    const e = obj(a, `artifacts[${i}]`, ['name', 'size', 'sha256']);
    const name = checkArtifactName(e.name);
    if (!Number.isSafeInteger(e.size) || (e.size as number) < 0) fail(`artifacts[${i}].size must be a byte count`);
    return { name, size: e.size as number, sha256: str(e.sha256, `artifacts[${i}].sha256`, SHA_RE) };
  });
  const names = new Set(artifacts.map((a) => a.name));
  if (names.size !== artifacts.length) fail('artifacts lists a name twice');
  const keyFields = parseKeyFields(o.keyFields);
  if (keyOf(keyFields) !== key) fail('keyFields do not hash to key; the manifest was edited or corrupted');
  const m: Manifest = {
    format: BUNDLE_FORMAT,
    schema: BUNDLE_SCHEMA,
    kilnVersion: str(o.kilnVersion, 'kilnVersion', /./),
    key,
    keyFields,
    guards: parseGuards(o.guards),
    created: str(o.created, 'created'),
    artifacts,
  };
  if (m.guards.target !== keyFields.target) fail('guards.target differs from keyFields.target');
  if (o.info !== undefined) {
    const info = obj(o.info, 'info', Object.keys(o.info ?? {}));
    for (const [k, x] of Object.entries(info)) {
      if (!['string', 'number', 'boolean'].includes(typeof x)) fail(`info.${k} must be a string, number or boolean`);
    }
    m.info = info as ManifestInfo;
  }
  return m;
}

/** The manifest as written: stable field order, two-space indent, trailing newline. */
export function serializeManifest(m: Manifest): string {
  return JSON.stringify(m, null, 2) + '\n';
}
