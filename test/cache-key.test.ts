/**
 * The bundle key: every field that changes code changes the key, and nothing else does —
 * not HOME, the cwd, the cache dir, an unrelated variable or a cache-behaviour variable
 * (checked in fresh processes, where such leaks would come from).
 */
import { chmodSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { bundleKey, canonicalJson, keyOf, openCache, signatureText, toolchainFingerprint, type KeyInput } from '../lib/cache';
import { ENV_VARS } from '../lib/util/env';
import { ArgumentError } from '../lib/util/errors';
import { runChild } from './fixtures/cache/spawn';

const base: KeyInput = {
  namespace: 'mlp',
  source: '(x, w) => x.matmul(w).relu()',
  inputs: [
    { dtype: 'float32', shape: [8, 768], dynamic: [0] },
    { dtype: 'float16', shape: [768, 3072] },
  ],
  options: { fastMath: false, tile: [16, 16] },
  target: 'sm_90',
  toolchain: 'ver:abc',
  env: {},
};
const keyOfInput = (k: KeyInput) => bundleKey(k).key;
const CPU = 'cpu-x64+avx2+fma';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-key-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('bundle key', () => {
  const k0 = keyOfInput(base);

  test('is a sha256 hex digest, stable, and recomputable from the recorded fields', () => {
    const { key, keyFields } = bundleKey(base);
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(keyOfInput({ ...base })).toBe(key);
    expect(keyOf(keyFields)).toBe(key);
    expect(Object.keys(keyFields)).toEqual(['schema', 'kilnVersion', 'namespace', 'sourceSha256', 'inputs', 'options', 'userKey', 'target', 'toolchain', 'env']);
    expect(keyFields.schema).toBe(2);
    expect(keyFields.userKey).toBe('');
    expect(keyFields.inputs).toEqual(['float32[?,768]', 'float16[768,3072]']);
    expect(keyFields.env).toEqual({}); // a CUDA target: no CPU-only variable
    expect(bundleKey({ ...base, target: CPU }).keyFields.env).toEqual({ KILN_CXXFLAGS: '' });
  });

  const variants: [string, Partial<KeyInput>][] = [
    ['namespace', { namespace: 'mlp2' }],
    ['source text', { source: '(x, w) => x.matmul(w).gelu()' }],
    ['an input dtype', { inputs: [{ dtype: 'bfloat16', shape: [8, 768], dynamic: [0] }, base.inputs[1]] }],
    ['a static dim', { inputs: [base.inputs[0], { dtype: 'float16', shape: [768, 3073] }] }],
    ['which dims are dynamic', { inputs: [{ dtype: 'float32', shape: [8, 768], dynamic: [0, 1] }, base.inputs[1]] }],
    ['the rank', { inputs: [{ dtype: 'float32', shape: [1, 8, 768], dynamic: [1] }, base.inputs[1]] }],
    ['the number of inputs', { inputs: [base.inputs[0]] }],
    ['an option value', { options: { fastMath: true, tile: [16, 16] } }],
    ['a nested option', { options: { fastMath: false, tile: [16, 32] } }],
    ['an added option', { options: { fastMath: false, tile: [16, 16], unroll: 4 } }],
    ['a user key', { userKey: '{"heads":12}' }],
    ['a user key value', { userKey: '{"heads":16}' }],
    ['a null user key (unlike none)', { userKey: 'null' }],
    ['the target arch', { target: 'sm_80' }],
    ['cubin vs PTX', { target: 'compute_90' }],
    ['the toolchain', { toolchain: 'ver:abd' }],
  ];
  test.each(variants)('changes with %s', (_, change) => {
    expect(keyOfInput({ ...base, ...change })).not.toBe(k0);
  });

  test('every code-relevant registry variable is a key field of the bundles of its target kind', () => {
    for (const v of ENV_VARS.filter((v) => v.affectsCode)) {
      for (const target of v.targetKind === 'cpu' ? [CPU] : v.targetKind === 'cuda' ? ['sm_90'] : [CPU, 'sm_90']) {
        expect([v.name, target, keyOfInput({ ...base, target, env: { [v.name]: 'x' } })]).not.toEqual([v.name, target, keyOfInput({ ...base, target })]);
      }
    }
  });

  test('KILN_CXXFLAGS changes CPU keys only: NVRTC never sees it, so a GPU host with it set still hits shipped CUDA bundles', () => {
    const cpu = { ...base, target: CPU };
    expect(keyOfInput({ ...cpu, env: { KILN_CXXFLAGS: '-O3' } })).not.toBe(keyOfInput(cpu));
    for (const target of ['sm_80', 'sm_90', 'sm_90a', 'compute_90']) {
      expect(keyOfInput({ ...base, target, env: { KILN_CXXFLAGS: '-O3' } })).toBe(keyOfInput({ ...base, target }));
    }
  });

  test('the compiler (CXX) is not a key field: any compiler builds an equivalent library', () => {
    expect(keyOfInput({ ...base, env: { CXX: 'clang++' } })).toBe(k0);
    expect(keyOfInput({ ...base, env: { CXX: '/opt/gcc-14/bin/g++' } })).toBe(k0);
  });

  test('no cache-behaviour or unrelated variable is a key field', () => {
    const env: NodeJS.ProcessEnv = { HOME: '/elsewhere', PWD: '/x', FOO: 'bar', USER: 'someone' };
    for (const v of ENV_VARS.filter((v) => !v.affectsCode)) env[v.name] = 'something-else';
    expect(keyOfInput({ ...base, env })).toBe(k0);
    expect(keyOfInput({ ...base, target: CPU, env })).toBe(keyOfInput({ ...base, target: CPU }));
  });

  test('ignores the size of a dynamic dim and the order of option keys', () => {
    expect(keyOfInput({ ...base, inputs: [{ dtype: 'float32', shape: [1, 768], dynamic: [0] }, base.inputs[1]] })).toBe(k0);
    expect(keyOfInput({ ...base, options: { tile: [16, 16], fastMath: false, unused: undefined } })).toBe(k0);
  });

  test('rejects fields that cannot be keyed faithfully', () => {
    expect(() => keyOfInput({ ...base, options: { f: () => 1 } })).toThrow(ArgumentError);
    expect(() => keyOfInput({ ...base, options: { eps: NaN } })).toThrow(/finite/);
    expect(() => keyOfInput({ ...base, options: { at: new Date(0) } })).toThrow(/plain/);
    expect(() => keyOfInput({ ...base, namespace: '../up' })).toThrow(/namespace/);
    expect(() => keyOfInput({ ...base, target: 'sm90' })).toThrow(/target/);
    expect(() => signatureText({ dtype: 'float32', shape: [2], dynamic: [1] })).toThrow(/out of range/);
    expect(() => signatureText({ dtype: 'float64' as never, shape: [2] })).toThrow(/dtype/);
  });

  test('canonical JSON sorts keys at every level', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}');
  });

  test('canonical JSON refuses cycles, but not a value repeated in two places', () => {
    const shared = { n: 1 };
    expect(canonicalJson({ a: shared, b: [shared] })).toBe('{"a":{"n":1},"b":[{"n":1}]}');
    const loop: unknown[] = [1];
    loop.push({ back: loop });
    expect(() => canonicalJson(loop)).toThrow(/\$\[1\]\.back refers back to an enclosing value/);
  });

  test('schema 1 key fields (before userKey) still hash to their keys', () => {
    const { keyFields } = bundleKey(base);
    const v1 = { ...keyFields, schema: 1 };
    expect(keyOf({ ...v1, userKey: 'ignored in schema 1' })).toBe(keyOf(v1));
    expect(keyOf(v1)).not.toBe(keyOf(keyFields));
  });

  test('is the same in processes with another HOME, cwd, cache dir and unrelated or cache-behaviour variables', async () => {
    const input = { ...base, env: undefined };
    const clean: NodeJS.ProcessEnv = { PATH: process.env.PATH };
    const runs = await Promise.all([
      runChild('key', { key: input }, { env: clean }),
      runChild('key', { key: input }, { env: { ...clean, HOME: tmp, XDG_CACHE_HOME: join(tmp, 'xdg') }, cwd: tmp }),
      runChild('key', { key: input }, {
        env: { ...clean, KILN_CACHE_DIR: join(tmp, 'c'), KILN_CACHE: 'force-load', KILN_FAIL_ON_RECOMPILE: '1', KILN_CACHE_MAX_BYTES: '1G', KILN_BUNDLE_PATH: tmp, KILN_CPU_THREADS: '3', UNRELATED: 'x' },
      }),
      runChild('key', { key: input }, { env: { ...clean, CXX: 'clang++' } }),
      runChild('key', { key: { ...input, target: CPU } }, { env: clean }),
      runChild('key', { key: { ...input, target: CPU } }, { env: { ...clean, KILN_CXXFLAGS: '-O2' } }),
      runChild('key', { key: input }, { env: { ...clean, KILN_CXXFLAGS: '-O2' } }),
    ]);
    const keys = runs.map((r) => r.out?.result?.key);
    expect(keys[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(keys[1]).toBe(keys[0]);
    expect(keys[2]).toBe(keys[0]);
    expect(keys[3]).toBe(keys[0]); // the compiler is information, not identity
    expect(keys[5]).not.toBe(keys[4]); // user flags change the CPU code
    expect(keys[6]).toBe(keys[0]); // ... and never a CUDA bundle's
  });
});

describe('toolchain fingerprint', () => {
  test('comes from a stat, never from running the binary', () => {
    const bin = join(tmp, 'fake-cxx');
    writeFileSync(bin, 'not an executable');
    chmodSync(bin, 0o644);
    const fp = toolchainFingerprint({ path: bin });
    expect(fp.id).toMatch(/^file:[0-9a-f]{64}$/);
    expect(fp.file.size).toBe(17);
    utimesSync(bin, new Date(2_000_000_000_000), new Date(2_000_000_000_000));
    expect(toolchainFingerprint({ path: bin }).id).not.toBe(fp.id);
  });

  test('with a version, is equal across install paths (portable for shipped bundles) and changes with flags', () => {
    const a = join(tmp, 'cxx-a');
    const b = join(tmp, 'cxx-b');
    writeFileSync(a, 'aaaa');
    writeFileSync(b, 'bbbbbbbb');
    const fa = toolchainFingerprint({ path: a, version: 'g++ 12.2.0', flags: ['-O3'] });
    expect(toolchainFingerprint({ path: b, version: 'g++ 12.2.0', flags: ['-O3'] }).id).toBe(fa.id);
    expect(toolchainFingerprint({ path: a, version: 'g++ 12.3.0', flags: ['-O3'] }).id).not.toBe(fa.id);
    expect(toolchainFingerprint({ path: a, version: 'g++ 12.2.0', flags: ['-O2'] }).id).not.toBe(fa.id);
  });

  test('the cache remembers the probed version per binary, so the next process does not probe', () => {
    const bin = join(tmp, 'cxx-memo');
    writeFileSync(bin, 'binary v1');
    const dir = join(tmp, 'memo-cache');
    let probes = 0;
    const probe = () => {
      probes++;
      return 'g++ 13.1.0';
    };
    const fp = openCache({ cacheDir: dir, env: {} }).toolchain(bin, probe);
    expect(fp.version).toBe('g++ 13.1.0');
    expect(probes).toBe(1);
    openCache({ cacheDir: dir, env: {} }).toolchain(bin, probe);
    expect(probes).toBe(1);
    writeFileSync(bin, 'binary v2, upgraded');
    openCache({ cacheDir: dir, env: {} }).toolchain(bin, () => 'g++ 13.2.0');
    expect(openCache({ cacheDir: dir, env: {} }).toolchain(bin, probe).version).toBe('g++ 13.2.0');
    expect(probes).toBe(1);
  });
});
