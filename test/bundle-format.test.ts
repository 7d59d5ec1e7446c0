/**
 * Bundle format v1 and verification: every way a bundle can be wrong is detected by
 * `verifyBundle` before anything is loaded, with a reason that names the cause.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, unlinkSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import {
  artifactPath,
  checkArtifactName,
  checkTarget,
  cpuTarget,
  keyOf,
  openCache,
  parseManifest,
  readArtifact,
  verifyBundle,
  type Cache,
  type VerifiedBundle,
} from '../lib/cache';
import { sha256Hex } from '../lib/util/hash';
import { FormatError } from '../lib/util/errors';
import { CPU_HOST, sample, type Sample } from './fixtures/cache/sample';

let tmp: string;
let n = 0;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-bundle-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A fresh cache with one published bundle. */
function published(opts: Parameters<typeof sample>[0] = {}): { cache: Cache; s: Sample; dir: string } {
  const cache = openCache({ cacheDir: join(tmp, `c${n++}`), env: {} });
  const s = sample(opts);
  const r = cache.publish(s.key, s.namespace, s.files, s.fields);
  if (r.status !== 'published') throw new Error(`publish: ${r.status}`);
  return { cache, s, dir: r.dir };
}

const editManifest = (dir: string, edit: (m: Record<string, unknown>) => void) => {
  const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  edit(m);
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
};

describe('bundle layout and manifest', () => {
  test('v1/<namespace>/<key[0:2]>/<key>/ with the manifest, the graph and the kernels', () => {
    const { s, dir, cache } = published();
    expect(dir).toBe(join(cache.cacheDir, 'v1', s.namespace, s.key.slice(0, 2), s.key));
    const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    expect(m.format).toBe('kiln-bundle');
    expect(m.schema).toBe(1);
    expect(m.key).toBe(s.key);
    expect(m.keyFields).toEqual(s.fields.keyFields);
    expect(m.guards).toEqual(s.fields.guards);
    expect(m.artifacts.map((a: { name: string }) => a.name)).toEqual(['graph.json', 'kernels.so', 'kernels.cpp']);
    for (const a of m.artifacts) expect(a.sha256).toBe(sha256Hex(readFileSync(join(dir, a.name))));
    expect(Number.isNaN(Date.parse(m.created))).toBe(false);
  });

  test('a verified bundle hands out its artifacts, and only those', () => {
    const { dir } = published();
    const v = verifyBundle(dir, { host: CPU_HOST });
    expect(v.ok).toBe(true);
    const b = v as VerifiedBundle;
    expect(artifactPath(b, 'kernels.so')).toBe(join(dir, 'kernels.so'));
    expect(JSON.parse(readArtifact(b, 'graph.json').toString()).seed).toBe('a');
    expect(() => artifactPath(b, 'manifest.json')).toThrow(FormatError);
    writeFileSync(join(dir, 'graph.json'), '{"seed":"b","steps":[]}');
    expect(() => readArtifact(b, 'graph.json')).toThrow(/changed after verification/);
  });

  test.each(['../kernels.so', '/etc/passwd', 'a/b', 'a\\b', '..', '.', '', 'x\0y', '.hidden', 'manifest.json', 'a'.repeat(200), 5])(
    'artifact name %j is refused (FormatError) before anything is read',
    (name) => {
      expect(() => checkArtifactName(name)).toThrow(FormatError);
      const { dir } = published();
      // The escaping file exists and matches the recorded hash: only the name check can stop it.
      writeFileSync(join(dir, '..', 'kernels.so'), 'outside');
      editManifest(dir, (m) => {
        (m.artifacts as Record<string, unknown>[])[1] = { name, size: 7, sha256: sha256Hex('outside') };
      });
      const v = verifyBundle(dir);
      expect(v).toMatchObject({ ok: false, reason: 'manifest-invalid' });
      expect(() => parseManifest(readFileSync(join(dir, 'manifest.json'), 'utf8'))).toThrow(FormatError);
    },
  );

  test('publish refuses an unsafe artifact name as a programming error', () => {
    const cache = openCache({ cacheDir: join(tmp, 'names'), env: {} });
    const s = sample();
    expect(() => cache.publish(s.key, s.namespace, [{ name: '../x', data: 'x' }], s.fields)).toThrow(FormatError);
    expect(() => cache.publish(s.key, s.namespace, [{ name: 'x', data: '1' }, { name: 'x', data: '2' }], s.fields)).toThrow(FormatError);
    expect(() => cache.publish(s.key, 'other', s.files, s.fields)).toThrow(/do not hash/);
  });
});

describe('verifyBundle finds each fault and names it', () => {
  test('truncated artifact', () => {
    const { dir } = published();
    truncateSync(join(dir, 'kernels.so'), 100);
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'artifact-size', detail: expect.stringContaining('kernels.so is 100 bytes') });
  });

  test('zero-byte artifact (a writer that opened the destination before serializing)', () => {
    const { dir } = published();
    truncateSync(join(dir, 'graph.json'), 0);
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'artifact-size' });
  });

  test('one flipped bit', () => {
    const { dir } = published();
    const so = readFileSync(join(dir, 'kernels.so'));
    so[1234] ^= 0x10;
    writeFileSync(join(dir, 'kernels.so'), so);
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'artifact-checksum', detail: expect.stringContaining('kernels.so') });
  });

  test('missing artifact, missing manifest, missing bundle', () => {
    const { dir } = published();
    unlinkSync(join(dir, 'kernels.cpp'));
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'artifact-missing' });
    unlinkSync(join(dir, 'manifest.json'));
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'missing' });
    expect(verifyBundle(join(tmp, 'nowhere'))).toMatchObject({ ok: false, reason: 'missing' });
  });

  test('an artifact that is a symlink is not followed', () => {
    const { dir } = published();
    const outside = join(tmp, 'outside.so');
    writeFileSync(outside, readFileSync(join(dir, 'kernels.so')));
    unlinkSync(join(dir, 'kernels.so'));
    symlinkSync(outside, join(dir, 'kernels.so'));
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'untrusted' });
  });

  test('an artifact others could rewrite after verification is not trusted', () => {
    const { dir } = published();
    chmodSync(join(dir, 'kernels.so'), 0o666);
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'untrusted', detail: expect.stringContaining('kernels.so is writable by group or others') });
    // Shipped bundles: any owner, group-writable too (umask 002); writable by any user is not.
    expect(verifyBundle(dir, { checkOwner: false })).toMatchObject({ ok: false, reason: 'untrusted', detail: expect.stringContaining('kernels.so is writable by any user (mode 0666)') });
    chmodSync(join(dir, 'kernels.so'), 0o664);
    expect(verifyBundle(dir, { checkOwner: false }).ok).toBe(true);
  });

  test('unknown schema or format', () => {
    const { dir } = published();
    editManifest(dir, (m) => (m.schema = 2));
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'schema-unsupported', detail: expect.stringContaining('schema 2') });
    editManifest(dir, (m) => Object.assign(m, { schema: 1, format: 'other' }));
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'schema-unsupported' });
  });

  test('malformed manifest: truncated JSON, unknown field, wrong type, edited key field', () => {
    const { dir } = published();
    const text = readFileSync(join(dir, 'manifest.json'), 'utf8');
    writeFileSync(join(dir, 'manifest.json'), text.slice(0, text.length >> 1));
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'manifest-invalid', detail: expect.stringContaining('truncated') });
    writeFileSync(join(dir, 'manifest.json'), text);
    editManifest(dir, (m) => (m.extra = 1));
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'manifest-invalid', detail: expect.stringContaining("unknown field 'extra'") });
    writeFileSync(join(dir, 'manifest.json'), text);
    editManifest(dir, (m) => ((m.artifacts as { size: unknown }[])[0].size = '12'));
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'manifest-invalid' });
    writeFileSync(join(dir, 'manifest.json'), text);
    editManifest(dir, (m) => ((m.keyFields as { options: string }).options = '{"fastMath":true}'));
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'manifest-invalid', detail: expect.stringContaining('do not hash to key') });
  });

  test('key fields of schema 1 (before userKey) still parse and verify; schema 2 requires userKey', () => {
    const cache = openCache({ cacheDir: join(tmp, `c${n++}`), env: {} });
    const s = sample({ seed: 'schema1' });
    const v1 = { ...s.fields.keyFields, schema: 1 };
    const key = keyOf(v1);
    const r = cache.publish(key, s.namespace, s.files, { ...s.fields, keyFields: v1 });
    if (r.status !== 'published') throw new Error(`publish: ${r.status}`);
    editManifest(r.dir, (m) => delete (m.keyFields as { userKey?: string }).userKey);
    const v = verifyBundle(r.dir, { key });
    expect(v).toMatchObject({ ok: true });
    expect(v.ok && v.manifest.keyFields.userKey).toBe('');

    const { dir } = published();
    editManifest(dir, (m) => delete (m.keyFields as { userKey?: string }).userKey);
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'manifest-invalid', detail: expect.stringContaining('keyFields.userKey is missing') });
  });

  test('a bundle under another key directory', () => {
    const { dir, s } = published();
    expect(verifyBundle(dir, { key: s.key.replace(/^./, s.key[0] === 'a' ? 'b' : 'a') })).toMatchObject({ ok: false, reason: 'key-mismatch' });
    expect(verifyBundle(dir, { namespace: 'other' })).toMatchObject({ ok: false, reason: 'key-mismatch' });
  });

  test('another kiln version', () => {
    const { dir } = published();
    expect(verifyBundle(dir, { kilnVersion: '9.9.9' })).toMatchObject({ ok: false, reason: 'kiln-version', detail: expect.stringContaining('9.9.9') });
  });

  test('a CPU that lacks an ISA feature the bundle was built for', () => {
    const { dir } = published({ target: cpuTarget('x64', ['avx512f', 'avx2', 'fma']) });
    expect(verifyBundle(dir, { host: CPU_HOST })).toMatchObject({ ok: false, reason: 'isa-missing', detail: expect.stringContaining('lacks avx512f') });
    expect(verifyBundle(dir, { host: { kind: 'cpu', arch: 'x64', features: ['avx2', 'avx512f', 'fma'] } }).ok).toBe(true);
    expect(verifyBundle(dir, { host: { kind: 'cpu', arch: 'arm64', features: ['asimd'] } })).toMatchObject({ ok: false, reason: 'target-mismatch' });
    expect(verifyBundle(dir, { host: { kind: 'cuda', computeCapability: 90 } })).toMatchObject({ ok: false, reason: 'target-mismatch' });
  });

  test('a cubin for another compute capability', () => {
    const { dir } = published({ target: 'sm_90' });
    expect(verifyBundle(dir, { host: { kind: 'cuda', computeCapability: [9, 0] } }).ok).toBe(true);
    expect(verifyBundle(dir, { host: { kind: 'cuda', computeCapability: [8, 6] } })).toMatchObject({
      ok: false,
      reason: 'compute-capability',
      detail: 'bundle sm_90 expects compute 9.0, this device is compute 8.6; rebuild for sm_86',
    });
    expect(verifyBundle(dir, { host: { kind: 'cuda', computeCapability: 100 } })).toMatchObject({ ok: false, reason: 'compute-capability' });
    expect(verifyBundle(dir, { host: CPU_HOST })).toMatchObject({ ok: false, reason: 'target-mismatch' });
  });

  test('PTX runs on its capability and newer; arch-specific targets only on their own', () => {
    expect(checkTarget('compute_80', { kind: 'cuda', computeCapability: 90 }).ok).toBe(true);
    expect(checkTarget('compute_90', { kind: 'cuda', computeCapability: 86 })).toMatchObject({ ok: false, reason: 'compute-capability' });
    expect(checkTarget('compute_90a', { kind: 'cuda', computeCapability: 100 }).ok).toBe(false);
    expect(checkTarget('sm_90a', { kind: 'cuda', computeCapability: 90 }).ok).toBe(true);
    expect(checkTarget('sm_120', { kind: 'cuda', computeCapability: [12, 0] }).ok).toBe(true);
  });

  test('a traced source file that changed or disappeared', () => {
    const src = join(tmp, 'model.js');
    writeFileSync(src, 'export const f = (x) => x.relu();\n');
    const { dir } = published({ sources: [{ path: src, sha256: sha256Hex(readFileSync(src)) }] });
    expect(verifyBundle(dir).ok).toBe(true);
    writeFileSync(src, 'export const f = (x) => x.gelu();\n');
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'source-changed', detail: `${src} changed since the bundle was built` });
    expect(verifyBundle(dir, { checkSources: false }).ok).toBe(true);
    rmSync(src);
    expect(verifyBundle(dir)).toMatchObject({ ok: false, reason: 'source-missing' });
  });

  test('relative source guards resolve against the source root', () => {
    const root = mkdtempSync(join(tmp, 'app-'));
    writeFileSync(join(root, 'model.js'), 'x');
    const { dir } = published({ sources: [{ path: 'model.js', sha256: sha256Hex('x') }] });
    expect(verifyBundle(dir, { sourceRoot: root }).ok).toBe(true);
    expect(verifyBundle(dir, { sourceRoot: tmp })).toMatchObject({ ok: false, reason: 'source-missing' });
  });

  test('a toolchain other than the one recorded', () => {
    const { dir } = published();
    expect(verifyBundle(dir, { toolchain: 'ver:test-toolchain' }).ok).toBe(true);
    expect(verifyBundle(dir, { toolchain: 'ver:other' })).toMatchObject({ ok: false, reason: 'toolchain-changed' });
  });
});
