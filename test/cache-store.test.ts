/**
 * The store in one process: round trip, shipped bundles, modes, replacement of invalid
 * bundles, I/O faults that only warn, LRU eviction, stale staging cleanup, and refusal of
 * cache dirs other users could write.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'fs';
import { createHash } from 'crypto';
import { hostname, tmpdir } from 'os';
import { dirname, join } from 'path';
import {
  DEFAULT_MAX_BYTES,
  evictBundles,
  listBundles,
  lockFile,
  openCache,
  parseBytes,
  resolveCacheMode,
  resolveFailOnRecompile,
  type Cache,
} from '../lib/cache';
import { ArgumentError, CacheError } from '../lib/util/errors';
import { sha256Hex } from '../lib/util/hash';
import { CPU_HOST, sample } from './fixtures/cache/sample';

let tmp: string;
let n = 0;
const fresh = (name = 'c') => join(tmp, `${name}${n++}`);
// Warnings are observed at process.emitWarning (jest's sandboxed process does not relay 'warning' events).
const warnings: { code?: string; message: string }[] = [];
const nextTick = () => new Promise((r) => setImmediate(r));

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-store-'));
  jest.spyOn(process, 'emitWarning').mockImplementation(((message: string, opts?: { code?: string }) => {
    warnings.push({ code: opts?.code, message });
  }) as typeof process.emitWarning);
});
afterAll(() => {
  jest.restoreAllMocks();
  rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  warnings.length = 0;
});

/** Every file under `dir`, relative, sorted (to prove "writes nothing"). */
function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

const staging = (cache: Cache) => (existsSync(join(cache.cacheDir, 'tmp')) ? readdirSync(join(cache.cacheDir, 'tmp')) : []);

describe('publish and lookup', () => {
  test('round trip: publish, then a lookup verifies and hits', () => {
    const cache = openCache({ cacheDir: fresh(), env: {} });
    const s = sample();
    expect(cache.lookup(s.key, s.namespace, { host: CPU_HOST }).status).toBe('miss');
    const r = cache.publish(s.key, s.namespace, s.files, s.fields);
    expect(r.status).toBe('published');
    const hit = cache.lookup(s.key, s.namespace, { host: CPU_HOST });
    expect(hit).toMatchObject({ status: 'hit', source: 'cache' });
    expect(staging(cache)).toEqual([]);
  });

  test('a second publish of the same bundle keeps the first (the first rename wins)', () => {
    const cache = openCache({ cacheDir: fresh(), env: {} });
    const s = sample();
    const first = cache.publish(s.key, s.namespace, s.files, s.fields);
    const second = cache.publish(s.key, s.namespace, s.files, s.fields);
    expect(second).toMatchObject({ status: 'exists', dir: (first as { dir: string }).dir });
    expect((second as { manifest: { created: string } }).manifest.created).toBe((first as { manifest: { created: string } }).manifest.created);
    expect(staging(cache)).toEqual([]);
  });

  test('a hit touches the bundle (the LRU clock); read-only mode does not', () => {
    const dir = fresh();
    const cache = openCache({ cacheDir: dir, env: {} });
    const s = sample();
    const { dir: b } = cache.publish(s.key, s.namespace, s.files, s.fields) as { dir: string };
    utimesSync(b, new Date(1e12), new Date(1e12));
    openCache({ cacheDir: dir, mode: 'read-only', env: {} }).lookup(s.key, s.namespace);
    expect(statSync(b).mtimeMs).toBe(1e12);
    cache.lookup(s.key, s.namespace);
    expect(Date.now() - statSync(b).mtimeMs).toBeLessThan(60_000);
  });

  test('shipped bundles are searched first, verified, and never touched or written', () => {
    const shipped = fresh('shipped');
    const s = sample();
    openCache({ cacheDir: shipped, env: {} }).publish(s.key, s.namespace, s.files, s.fields);
    const b = join(shipped, 'v1', s.namespace, s.key.slice(0, 2), s.key);
    utimesSync(b, new Date(1e12), new Date(1e12));
    const before = tree(shipped);
    const cache = openCache({ cacheDir: fresh(), env: { KILN_BUNDLE_PATH: `/nonexistent:${shipped}` } });
    expect(cache.bundlePath).toEqual(['/nonexistent', shipped]);
    expect(cache.lookup(s.key, s.namespace, { host: CPU_HOST })).toMatchObject({ status: 'hit', source: 'shipped' });
    expect(statSync(b).mtimeMs).toBe(1e12);
    expect(tree(shipped)).toEqual(before);
  });

  test('a shipped root any user may write to: its bundles are passed over, warned once; a key it lacks is a plain miss', async () => {
    const shipped = fresh('shipped');
    const s = sample();
    openCache({ cacheDir: shipped, env: {} }).publish(s.key, s.namespace, s.files, s.fields);
    chmodSync(shipped, 0o777);
    try {
      const cache = openCache({ cacheDir: fresh(), bundlePath: [shipped], env: {} });
      expect(cache.lookup('ab'.repeat(32), s.namespace)).toEqual({ status: 'miss' }); // nothing there: no warning
      await nextTick();
      expect(warnings).toEqual([]);
      expect(cache.lookup(s.key, s.namespace).status).toBe('miss'); // there, but another user could swap it
      await nextTick();
      expect(warnings).toEqual([expect.objectContaining({ code: 'KILN_BUNDLE_INVALID', message: expect.stringMatching(/writable by any user/) })]);
    } finally {
      chmodSync(shipped, 0o755);
    }
    // The directories safe again: an artifact any user may write to is untrusted too;
    // group-writable (umask 002) passes.
    const lib = join(shipped, 'v1', s.namespace, s.key.slice(0, 2), s.key, 'kernels.so');
    chmodSync(lib, 0o664);
    expect(openCache({ cacheDir: fresh(), bundlePath: [shipped], env: {} }).lookup(s.key, s.namespace)).toMatchObject({ status: 'hit', source: 'shipped' });
    chmodSync(lib, 0o666);
    expect(openCache({ cacheDir: fresh(), bundlePath: [shipped], env: {} }).lookup(s.key, s.namespace).status).toBe('miss'); // (warned once above for this dir)
  });

  test('an invalid shipped bundle falls through to a valid cached one', async () => {
    const shipped = fresh('shipped');
    const s = sample();
    openCache({ cacheDir: shipped, env: {} }).publish(s.key, s.namespace, s.files, s.fields);
    writeFileSync(join(shipped, 'v1', s.namespace, s.key.slice(0, 2), s.key, 'kernels.so'), 'corrupt');
    const cache = openCache({ cacheDir: fresh(), bundlePath: [shipped], env: {} });
    expect(cache.lookup(s.key, s.namespace).status).toBe('miss');
    await nextTick();
    // The warning says what happens: a compile into the cache, the shipped bundle untouched.
    expect(warnings).toEqual([expect.objectContaining({ code: 'KILN_BUNDLE_INVALID', message: expect.stringMatching(/compiling instead; the shipped bundle is left as it is$/) })]);
    cache.publish(s.key, s.namespace, s.files, s.fields);
    expect(cache.lookup(s.key, s.namespace)).toMatchObject({ status: 'hit', source: 'cache' });
  });

  test("another target's invalid bundle (a CUDA fallback) is passed over, not promised a rebuild", async () => {
    const cache = openCache({ cacheDir: fresh(), env: {} });
    const s = sample();
    const { dir } = cache.publish(s.key, s.namespace, s.files, s.fields) as { dir: string };
    writeFileSync(join(dir, 'kernels.so'), 'corrupt');
    expect(cache.lookup(s.key, s.namespace, undefined, undefined, true).status).toBe('miss');
    await nextTick();
    expect(warnings).toEqual([expect.objectContaining({ message: expect.stringMatching(/passing over it \(another target's bundle\)$/) })]);
  });
});

describe('invalid bundles', () => {
  test('auto: an invalid bundle is a miss with one warning, and the next publish replaces it', async () => {
    const cache = openCache({ cacheDir: fresh(), env: {} });
    const s = sample();
    const { dir } = cache.publish(s.key, s.namespace, s.files, s.fields) as { dir: string };
    const so = readFileSync(join(dir, 'kernels.so'));
    so[7] ^= 1;
    writeFileSync(join(dir, 'kernels.so'), so);
    const r1 = cache.lookup(s.key, s.namespace);
    expect(r1).toMatchObject({ status: 'miss', invalid: { reason: 'artifact-checksum' } });
    cache.lookup(s.key, s.namespace);
    await nextTick();
    expect(warnings.filter((w) => w.code === 'KILN_BUNDLE_INVALID')).toHaveLength(1);
    expect(cache.publish(s.key, s.namespace, s.files, s.fields).status).toBe('published');
    expect(cache.lookup(s.key, s.namespace).status).toBe('hit');
    expect(staging(cache)).toEqual([]);
  });

  test('a bundle built from other source files is replaced, not kept as the race winner', () => {
    const src = join(tmp, `model${n++}.js`);
    writeFileSync(src, 'v1');
    const cache = openCache({ cacheDir: fresh(), env: {} });
    const old = sample({ sources: [{ path: src, sha256: sha256Hex('v1') }] });
    cache.publish(old.key, old.namespace, old.files, old.fields);
    writeFileSync(src, 'v2');
    expect(cache.lookup(old.key, old.namespace)).toMatchObject({ status: 'miss', invalid: { reason: 'source-changed' } });
    const rebuilt = sample({ sources: [{ path: src, sha256: sha256Hex('v2') }] });
    expect(rebuilt.key).toBe(old.key); // helper files are guards, not key fields
    expect(cache.publish(rebuilt.key, rebuilt.namespace, rebuilt.files, rebuilt.fields).status).toBe('published');
    expect(cache.lookup(old.key, old.namespace).status).toBe('hit');
  });

  test('discard removes a bundle that failed to load, but never a newer one or a shipped one', () => {
    const dir = fresh();
    const cache = openCache({ cacheDir: dir, env: {} });
    const s = sample();
    cache.publish(s.key, s.namespace, s.files, s.fields);
    const hit = cache.lookup(s.key, s.namespace);
    if (hit.status !== 'hit') throw new Error('expected a hit');
    expect(cache.discard(hit.bundle)).toBe(true);
    expect(cache.lookup(s.key, s.namespace).status).toBe('miss');
    expect(cache.discard(hit.bundle)).toBe(false); // already gone
    // Another process replaced it between our verify and our discard: the new one stays.
    cache.publish(s.key, s.namespace, s.files, s.fields);
    const stale = cache.lookup(s.key, s.namespace);
    if (stale.status !== 'hit') throw new Error('expected a hit');
    const { dir: b } = stale.bundle;
    rmSync(b, { recursive: true });
    cache.publish(s.key, s.namespace, s.files, s.fields);
    expect(cache.discard(stale.bundle)).toBe(false);
    expect(cache.lookup(s.key, s.namespace).status).toBe('hit');
    expect(staging(cache)).toEqual([]);
    const shippedHit = openCache({ cacheDir: fresh(), bundlePath: [dir], env: {} }).lookup(s.key, s.namespace);
    if (shippedHit.status !== 'hit') throw new Error('expected a hit');
    expect(openCache({ cacheDir: fresh(), bundlePath: [dir], env: {} }).discard(shippedHit.bundle)).toBe(false);
    expect(existsSync(b)).toBe(true);
  });

  test('force-load: a missing or invalid bundle is a CacheError naming the reason', () => {
    const dir = fresh();
    const s = sample();
    const force = openCache({ cacheDir: dir, mode: 'force-load', env: {} });
    expect(() => force.lookup(s.key, s.namespace)).toThrow(expect.objectContaining({ code: 'KILN_BUNDLE_MISSING' }));
    const { dir: b } = openCache({ cacheDir: dir, env: {} }).publish(s.key, s.namespace, s.files, s.fields) as { dir: string };
    expect(force.lookup(s.key, s.namespace, { host: CPU_HOST }).status).toBe('hit');
    expect(() => force.lookup(s.key, s.namespace, { host: { kind: 'cuda', computeCapability: 90 } })).toThrow(
      expect.objectContaining({ code: 'KILN_BUNDLE_INVALID', message: expect.stringContaining('target-mismatch') }),
    );
    writeFileSync(join(b, 'graph.json'), '{}');
    let err: unknown;
    try {
      force.lookup(s.key, s.namespace);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CacheError);
    expect((err as CacheError).cause).toMatchObject({ reason: 'artifact-size' });
  });

  test('off: never reads, never writes', () => {
    const dir = fresh();
    const s = sample();
    openCache({ cacheDir: dir, env: {} }).publish(s.key, s.namespace, s.files, s.fields);
    const off = openCache({ cacheDir: dir, env: { KILN_CACHE: 'off' } });
    expect(off.mode).toBe('off');
    expect(off.lookup(s.key, s.namespace).status).toBe('miss');
    const before = tree(dir);
    const other = sample({ seed: 'other' });
    expect(off.publish(other.key, other.namespace, other.files, other.fields)).toEqual({ status: 'skipped', reason: 'off' });
    expect(tree(dir)).toEqual(before);
  });

  test('read-only mode: lookup works, publish and locking write nothing', async () => {
    const dir = fresh();
    const s = sample();
    openCache({ cacheDir: dir, env: {} }).publish(s.key, s.namespace, s.files, s.fields);
    const ro = openCache({ cacheDir: dir, mode: 'read-only', env: {} });
    expect(ro.readOnly).toBe(true);
    const before = tree(dir);
    expect(ro.lookup(s.key, s.namespace).status).toBe('hit');
    const other = sample({ seed: 'other' });
    expect(ro.publish(other.key, other.namespace, other.files, other.fields)).toEqual({ status: 'skipped', reason: 'read-only' });
    expect(await ro.withKeyLock(other.key, async (o) => o)).toBe('unavailable');
    expect(tree(dir)).toEqual(before);
    await nextTick();
    expect(warnings).toEqual([]); // chosen read-only mode is not worth a warning
  });
});

describe('I/O faults only warn and leave the cache consistent', () => {
  afterEach(() => {
    delete process.env.KILN_TEST_FAULT;
  });

  test.each([
    ['write', 'enospc', 'ENOSPC'],
    ['manifest', 'enospc', 'ENOSPC'],
    ['stage', 'eacces', 'EACCES'],
    ['rename', 'erofs', 'EROFS'],
  ])('%s:%s → warning, no bundle, no staging leftovers; the next publish succeeds', async (stage, action, errno) => {
    const cache = openCache({ cacheDir: fresh(), env: {} });
    const s = sample();
    process.env.KILN_TEST_FAULT = `${stage}:${action}`;
    const r = cache.publish(s.key, s.namespace, s.files, s.fields);
    delete process.env.KILN_TEST_FAULT;
    expect(r).toMatchObject({ status: 'skipped', reason: 'io-error' });
    await nextTick();
    expect(warnings).toEqual([expect.objectContaining({ code: 'KILN_CACHE_WRITE', message: expect.stringContaining(errno) })]);
    expect(cache.lookup(s.key, s.namespace).status).toBe('miss');
    expect(listBundles(cache)).toEqual([]);
    expect(staging(cache)).toEqual([]);
    expect(cache.publish(s.key, s.namespace, s.files, s.fields).status).toBe('published');
    expect(cache.lookup(s.key, s.namespace).status).toBe('hit');
  });

  test('trouble after the rename (fsync of the parent, eviction) warns but the bundle stays published', async () => {
    const cache = openCache({ cacheDir: fresh(), env: {} });
    const s = sample();
    process.env.KILN_TEST_FAULT = 'renamed:eacces';
    const r = cache.publish(s.key, s.namespace, s.files, s.fields);
    delete process.env.KILN_TEST_FAULT;
    expect(r.status).toBe('published');
    await nextTick();
    expect(warnings).toEqual([expect.objectContaining({ code: 'KILN_CACHE_WRITE' })]);
    expect(cache.lookup(s.key, s.namespace).status).toBe('hit');
  });

  test('a real EACCES (a cache subdirectory we may not write) warns and the caller goes on', async () => {
    if (process.getuid?.() === 0) return; // root writes anyway; the uid-switching process test covers it
    const dir = fresh();
    const cache = openCache({ cacheDir: dir, env: {} });
    const s = sample();
    mkdirSync(join(dir, 'v1'), { recursive: true });
    chmodSync(join(dir, 'v1'), 0o555);
    expect(cache.publish(s.key, s.namespace, s.files, s.fields)).toMatchObject({ status: 'skipped', reason: 'io-error' });
    chmodSync(join(dir, 'v1'), 0o755);
  });
});

describe('eviction', () => {
  /** Publishes bundles a, b, c with last-used times 1, 2, 3 (seconds since epoch 1e9). */
  function threeBundles(cache: Cache) {
    const bundles = ['a', 'b', 'c'].map((seed, i) => {
      const s = sample({ seed, soBytes: 10_000 });
      const { dir } = cache.publish(s.key, s.namespace, s.files, s.fields) as { dir: string };
      utimesSync(dir, new Date(1e12 + i * 1000), new Date(1e12 + i * 1000));
      return { s, dir };
    });
    return bundles;
  }

  test('past the cap the least recently used go first, in touch order; the new bundle stays', () => {
    const dir = fresh();
    const cache = openCache({ cacheDir: dir, env: {}, maxBytes: 0 });
    const [a, b, c] = threeBundles(cache);
    const size = listBundles(cache)[0].bytes;
    cache.lookup(a.s.key, a.s.namespace); // a is now the most recently used
    const capped = openCache({ cacheDir: dir, env: { KILN_CACHE_MAX_BYTES: String(3 * size + 100) } });
    const d = sample({ seed: 'd', soBytes: 10_000 });
    expect(capped.publish(d.key, d.namespace, d.files, d.fields).status).toBe('published');
    const left = listBundles(capped).map((e) => e.key);
    expect(left.sort()).toEqual([a.s.key, c.s.key, d.key].sort());
    expect(existsSync(b.dir)).toBe(false);
    expect(readdirSync(join(dir, 'tmp'))).toEqual([]);
  });

  test('a locked bundle (being rebuilt) is never evicted', () => {
    const dir = fresh();
    const cache = openCache({ cacheDir: dir, env: {}, maxBytes: 0 });
    const [a, b, c] = threeBundles(cache);
    writeFileSync(lockFile(dir, a.s.key), JSON.stringify({ pid: process.pid, hostname: hostname(), time: '', token: 't' }));
    const size = listBundles(cache)[0].bytes;
    const r = evictBundles({ ...cache, readOnly: false }, { maxBytes: 2 * size + 100 });
    expect(r.removed.map((e) => e.key).sort()).toEqual([b.s.key].sort());
    expect(existsSync(a.dir) && existsSync(c.dir)).toBe(true);
  });

  test('older-than and dry run', () => {
    const dir = fresh();
    const cache = openCache({ cacheDir: dir, env: {}, maxBytes: 0 });
    threeBundles(cache);
    const dry = evictBundles({ ...cache, readOnly: false }, { olderThanMs: 1000, dryRun: true });
    expect(dry.removed).toHaveLength(3);
    expect(listBundles(cache)).toHaveLength(3);
  });

  test('the cap defaults to 2 GiB and accepts units', () => {
    expect(openCache({ cacheDir: fresh(), env: {} }).maxBytes).toBe(DEFAULT_MAX_BYTES);
    expect(parseBytes('512K')).toBe(524288);
    expect(parseBytes('1.5G')).toBe(1.5 * 2 ** 30);
    expect(parseBytes('100MiB')).toBe(100 * 2 ** 20);
    expect(() => parseBytes('lots')).toThrow(ArgumentError);
  });

  test('a bad KILN_CACHE_MAX_BYTES is KILN_BAD_ENV, as for every other variable', () => {
    expect(() => openCache({ cacheDir: fresh(), env: { KILN_CACHE_MAX_BYTES: 'abc' } })).toThrow(
      expect.objectContaining({ name: 'ArgumentError', code: 'KILN_BAD_ENV', message: expect.stringMatching(/^KILN_CACHE_MAX_BYTES=abc is not a byte count; give bytes, e\.g\. 2G/) }),
    );
  });
});

describe('leftovers of crashed processes', () => {
  test('staging dirs of dead processes are swept by the next publish; a live one is kept', () => {
    const dir = fresh();
    const cache = openCache({ cacheDir: dir, env: {} });
    const first = sample({ seed: 'first' });
    cache.publish(first.key, first.namespace, first.files, first.fields);
    const hostTag = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
    const dead = join(dir, 'tmp', `stage-${hostTag}-999999999-abcdef`);
    const live = join(dir, 'tmp', `stage-${hostTag}-${process.pid}-abcdef`);
    const old = join(dir, 'tmp', `stage-00000000-1-abcdef`);
    // Another host's fresh trash with this process's pid: its owner may still read it back.
    const otherHost = `trash-${hostTag === 'ffffffff' ? 'fffffffe' : 'ffffffff'}-${process.pid}-abcdef`;
    for (const d of [dead, live, old, join(dir, 'tmp', otherHost)]) mkdirSync(d);
    writeFileSync(join(dead, 'kernels.so'), 'partial');
    utimesSync(old, new Date(1e12), new Date(1e12));
    const s = sample();
    cache.publish(s.key, s.namespace, s.files, s.fields);
    expect(readdirSync(join(dir, 'tmp'))).toEqual([`stage-${hostTag}-${process.pid}-abcdef`, otherHost]);
    rmSync(live, { recursive: true });
  });
});

describe('modes and options', () => {
  test('option first, then KILN_CACHE, then auto; a bad value is an ArgumentError', () => {
    expect(resolveCacheMode(undefined, {})).toBe('auto');
    expect(resolveCacheMode(undefined, { KILN_CACHE: 'read-only' })).toBe('read-only');
    expect(resolveCacheMode('force-load', { KILN_CACHE: 'off' })).toBe('force-load');
    expect(() => resolveCacheMode(undefined, { KILN_CACHE: 'sometimes' })).toThrow(expect.objectContaining({ code: 'KILN_BAD_CACHE_MODE' }));
    expect(resolveFailOnRecompile(undefined, { KILN_FAIL_ON_RECOMPILE: '1' })).toBe(true);
    expect(resolveFailOnRecompile(false, { KILN_FAIL_ON_RECOMPILE: '1' })).toBe(false);
    expect(resolveFailOnRecompile(undefined, {})).toBe(false);
    expect(openCache({ cacheDir: fresh(), env: { KILN_FAIL_ON_RECOMPILE: 'yes' } }).failOnRecompile).toBe(true);
  });

  test('failOnRecompile: assertMayCompile throws KILN_RECOMPILE naming why the lookup missed', () => {
    const dir = fresh();
    const s = sample();
    const strict = openCache({ cacheDir: dir, env: { KILN_FAIL_ON_RECOMPILE: '1' } });
    const miss = strict.lookup(s.key, s.namespace);
    expect(() => strict.assertMayCompile(s.key, s.namespace, miss)).toThrow(expect.objectContaining({ code: 'KILN_RECOMPILE', message: expect.stringContaining('no bundle was found') }));
    expect(() => openCache({ cacheDir: dir, env: {} }).assertMayCompile(s.key, s.namespace, miss)).not.toThrow();
    const { dir: b } = strict.publish(s.key, s.namespace, s.files, s.fields) as { dir: string };
    writeFileSync(join(b, 'graph.json'), 'x');
    const invalid = strict.lookup(s.key, s.namespace);
    expect(() => strict.assertMayCompile(s.key, s.namespace, invalid)).toThrow(/artifact-size/);
  });

  test('the cache dir comes from the option, KILN_CACHE_DIR, then XDG_CACHE_HOME', () => {
    const d = fresh();
    expect(openCache({ cacheDir: d, env: { KILN_CACHE_DIR: '/x' } }).cacheDir).toBe(d);
    expect(openCache({ env: { KILN_CACHE_DIR: d } }).cacheDir).toBe(d);
    expect(openCache({ env: { XDG_CACHE_HOME: d } }).cacheDir).toBe(join(d, 'kiln'));
  });
});

describe('security: bundles are executable code', () => {
  test('a cache dir writable by others is refused', () => {
    const dir = fresh();
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o777);
    expect(() => openCache({ cacheDir: dir, env: {} })).toThrow(expect.objectContaining({ code: 'KILN_CACHE_INSECURE', message: expect.stringContaining('writable by group or others') }));
    chmodSync(dir, 0o775);
    expect(() => openCache({ cacheDir: dir, env: {} })).toThrow(CacheError);
    expect(() => openCache({ cacheDir: dir, mode: 'off', env: {} })).not.toThrow();
  });

  test('a sticky group/other-writable cache dir owned by us is accepted', () => {
    const dir = fresh();
    mkdirSync(dir);
    chmodSync(dir, 0o1777);
    const cache = openCache({ cacheDir: dir, env: {} });
    const s = sample();
    expect(cache.publish(s.key, s.namespace, s.files, s.fields).status).toBe('published');
  });

  test('a cache under a world-writable, non-sticky parent is refused', () => {
    const parent = fresh('open');
    mkdirSync(parent);
    chmodSync(parent, 0o777);
    expect(() => openCache({ cacheDir: join(parent, 'kiln'), env: {} })).toThrow(expect.objectContaining({ code: 'KILN_CACHE_INSECURE', message: expect.stringContaining('parent') }));
  });

  test('a bundle dir (or a dir above it) others could write is not loaded', () => {
    const cache = openCache({ cacheDir: fresh(), env: {} });
    const s = sample();
    const { dir } = cache.publish(s.key, s.namespace, s.files, s.fields) as { dir: string };
    chmodSync(dir, 0o777);
    expect(cache.lookup(s.key, s.namespace)).toMatchObject({ status: 'miss', invalid: { reason: 'untrusted' } });
    chmodSync(dir, 0o755);
    chmodSync(dirname(dir), 0o757);
    expect(cache.lookup(s.key, s.namespace)).toMatchObject({ status: 'miss', invalid: { reason: 'untrusted' } });
    chmodSync(dirname(dir), 0o755);
    expect(cache.lookup(s.key, s.namespace).status).toBe('hit');
  });

  test('files are created 0644 and directories 0755 (readable by others, writable only by us)', () => {
    const cache = openCache({ cacheDir: fresh(), env: {} });
    const s = sample();
    const { dir } = cache.publish(s.key, s.namespace, s.files, s.fields) as { dir: string };
    const umask = process.umask();
    expect(statSync(dir).mode & 0o777).toBe(0o755 & ~umask);
    expect(statSync(join(dir, 'kernels.so')).mode & 0o777).toBe(0o644 & ~umask);
  });
});
