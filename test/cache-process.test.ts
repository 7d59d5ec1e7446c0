/**
 * Guarantees about processes: another process finds a published bundle; concurrent cold
 * processes compile once (with the key lock) or race safely (without it); a process killed
 * at any publish stage leaves no bundle that verifies wrong; a dead lock holder is
 * recovered quickly; a cache dir we cannot write is used read-only with one warning.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'fs';
import { hostname, tmpdir } from 'os';
import { join } from 'path';
import { FAULT_STAGES } from '../lib/cache/io';
import { listBundles, lockFile, openCache, verifyBundle } from '../lib/cache';
import { CPU_HOST, sample } from './fixtures/cache/sample';
import { runChild } from './fixtures/cache/spawn';

let tmp: string;
let n = 0;
const fresh = () => join(tmp, `c${n++}`);
const childEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => {
  const env = { ...process.env, ...extra };
  for (const k of ['KILN_CACHE', 'KILN_CACHE_DIR', 'KILN_BUNDLE_PATH', 'KILN_CACHE_MAX_BYTES']) delete env[k];
  return env;
};

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-proc-'));
  chmodSync(tmp, 0o755); // readable by the unprivileged user of the read-only test
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const tmpEntries = (dir: string) => (existsSync(join(dir, 'tmp')) ? readdirSync(join(dir, 'tmp')) : []);

test('a second process finds and verifies the bundle the first published', async () => {
  const cacheDir = fresh();
  const pub = await runChild('publish', { cacheDir }, { env: childEnv() });
  expect(pub.out?.result).toEqual({ status: 'published' });
  const look = await runChild('lookup', { cacheDir }, { env: childEnv() });
  expect(look.out?.result).toEqual({ status: 'hit' });
});

test('8 cold processes with the key lock: one compiles, all succeed, one valid bundle, no leftovers', async () => {
  const cacheDir = fresh();
  const counter = join(tmp, `compiles-${n++}`);
  writeFileSync(counter, '');
  const runs = await Promise.all(Array.from({ length: 8 }, () => runChild('race', { cacheDir, counter, lock: true, holdMs: 300 }, { env: childEnv() })));
  for (const r of runs) expect(r.out?.error ?? r.stderr).toBeFalsy();
  expect(runs.map((r) => r.code)).toEqual(Array(8).fill(0));
  expect(readFileSync(counter, 'utf8').trim().split('\n')).toHaveLength(1);
  const outcomes = runs.map((r) => r.out?.result?.outcome).sort();
  expect(outcomes).toEqual(['loaded', 'loaded', 'loaded', 'loaded', 'loaded', 'loaded', 'loaded', 'published']);
  expect(runs.every((r) => r.out?.result?.after === 'hit')).toBe(true);
  const bundles = listBundles({ cacheDir, bundlePath: [] });
  expect(bundles).toHaveLength(1);
  expect(verifyBundle(bundles[0].dir, { host: CPU_HOST }).ok).toBe(true);
  expect(tmpEntries(cacheDir)).toEqual([]);
  expect(readdirSync(join(cacheDir, 'locks'))).toEqual([]);
}, 60_000);

test('8 processes publishing the same key without a lock race safely: first rename wins', async () => {
  const cacheDir = fresh();
  const counter = join(tmp, `compiles-${n++}`);
  writeFileSync(counter, '');
  const runs = await Promise.all(Array.from({ length: 8 }, () => runChild('race', { cacheDir, counter, lock: false, holdMs: 0 }, { env: childEnv() })));
  expect(runs.map((r) => r.code)).toEqual(Array(8).fill(0));
  const outcomes = runs.map((r) => r.out?.result?.outcome);
  expect(outcomes.filter((o) => o === 'published')).toHaveLength(1);
  expect(outcomes.every((o) => ['published', 'exists', 'loaded'].includes(o as string))).toBe(true);
  expect(runs.every((r) => r.out?.result?.after === 'hit')).toBe(true);
  const bundles = listBundles({ cacheDir, bundlePath: [] });
  expect(bundles).toHaveLength(1);
  expect(verifyBundle(bundles[0].dir).ok).toBe(true);
  expect(tmpEntries(cacheDir)).toEqual([]);
}, 60_000);

describe('SIGKILL at each publish stage', () => {
  const stages = FAULT_STAGES.filter((s) => s !== 'locked');
  test.each(stages)('killed at %s: no bundle that verifies wrong; the next publish recovers', async (stage) => {
    const cacheDir = fresh();
    const r = await runChild('publish', { cacheDir }, { env: childEnv({ KILN_TEST_FAULT: `${stage}:kill` }) });
    expect(r.signal).toBe('SIGKILL');
    // Whatever is there is either absent or whole.
    for (const b of listBundles({ cacheDir, bundlePath: [] })) expect(verifyBundle(b.dir).ok).toBe(true);
    const cache = openCache({ cacheDir, env: {} });
    const s = sample();
    const before = cache.lookup(s.key, s.namespace, { host: CPU_HOST });
    expect(before.status).toBe(stage === 'renamed' ? 'hit' : 'miss');
    if (before.status === 'miss') expect(before.invalid).toBeUndefined();
    const again = cache.publish(s.key, s.namespace, s.files, s.fields);
    expect(again.status).toBe(stage === 'renamed' ? 'exists' : 'published');
    expect(cache.lookup(s.key, s.namespace, { host: CPU_HOST }).status).toBe('hit');
    expect(tmpEntries(cacheDir)).toEqual([]); // the dead process's staging dir was swept
  });
});

describe('key lock', () => {
  test('a lock left by a killed process is recovered at once', async () => {
    const cacheDir = fresh();
    const r = await runChild('hold-lock', { cacheDir }, { env: childEnv({ KILN_TEST_FAULT: 'locked:kill' }) });
    expect(r.signal).toBe('SIGKILL');
    const s = sample();
    expect(existsSync(lockFile(cacheDir, s.key))).toBe(true);
    const cache = openCache({ cacheDir, env: {} });
    const t0 = Date.now();
    const outcome = await cache.withKeyLock(s.key, async (o) => o);
    expect(outcome).toBe('acquired');
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(existsSync(lockFile(cacheDir, s.key))).toBe(false);
  });

  const foreignLock = (cacheDir: string, key: string, who: { pid: number; hostname: string }, ageMs = 0) => {
    mkdirSync(join(cacheDir, 'locks'), { recursive: true });
    const f = lockFile(cacheDir, key);
    writeFileSync(f, JSON.stringify({ ...who, time: new Date().toISOString(), token: 'foreign' }));
    const t = new Date(Date.now() - ageMs);
    utimesSync(f, t, t);
    return f;
  };

  test('a lock whose heartbeat stopped (another host) is stale after staleMs', async () => {
    const cacheDir = fresh();
    const s = sample();
    foreignLock(cacheDir, s.key, { pid: 1, hostname: 'elsewhere' }, 120_000);
    const t0 = Date.now();
    expect(await openCache({ cacheDir, env: {} }).withKeyLock(s.key, async (o) => o)).toBe('acquired');
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  test('a live holder is waited for, but only up to maxWaitMs; then we proceed without the lock', async () => {
    const cacheDir = fresh();
    const s = sample();
    const f = foreignLock(cacheDir, s.key, { pid: process.pid, hostname: hostname() });
    const t0 = Date.now();
    expect(await openCache({ cacheDir, env: {} }).withKeyLock(s.key, async (o) => o, { maxWaitMs: 300 })).toBe('timeout');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(JSON.parse(readFileSync(f, 'utf8')).token).toBe('foreign'); // not ours to remove
  });

  test('a waiter stops waiting as soon as the bundle is published', async () => {
    const cacheDir = fresh();
    const s = sample();
    foreignLock(cacheDir, s.key, { pid: process.pid, hostname: hostname() });
    const cache = openCache({ cacheDir, env: {} });
    setTimeout(() => cache.publish(s.key, s.namespace, s.files, s.fields), 100);
    const t0 = Date.now();
    expect(await cache.withKeyLock(s.key, async (o) => o, { namespace: s.namespace, maxWaitMs: 10_000 })).toBe('ready');
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  test('an invalid bundle being replaced does not end the wait; its replacement does', async () => {
    const cacheDir = fresh();
    const s = sample();
    const cache = openCache({ cacheDir, env: {} });
    const { dir } = cache.publish(s.key, s.namespace, s.files, s.fields) as { dir: string };
    writeFileSync(join(dir, 'kernels.so'), 'corrupt');
    foreignLock(cacheDir, s.key, { pid: process.pid, hostname: hostname() });
    expect(await cache.withKeyLock(s.key, async (o) => o, { namespace: s.namespace, maxWaitMs: 300 })).toBe('timeout');
    setTimeout(() => cache.publish(s.key, s.namespace, s.files, s.fields), 100);
    expect(await cache.withKeyLock(s.key, async (o) => o, { namespace: s.namespace, maxWaitMs: 10_000 })).toBe('ready');
    expect(cache.lookup(s.key, s.namespace).status).toBe('hit');
  });

  test('the holder keeps its lock fresh while it works, and callers in one process take turns', async () => {
    const cacheDir = fresh();
    const s = sample();
    const cache = openCache({ cacheDir, env: {} });
    const f = lockFile(cacheDir, s.key);
    const order: string[] = [];
    const first = cache.withKeyLock(
      s.key,
      async (o) => {
        order.push(`first:${o}`);
        const t = new Date(Date.now() - 10_000);
        utimesSync(f, t, t);
        await new Promise((r) => setTimeout(r, 150));
        expect(Date.now() - statSync(f).mtimeMs).toBeLessThan(1000); // heartbeat refreshed it
        order.push('first:done');
      },
      { staleMs: 200 },
    );
    const second = cache.withKeyLock(s.key, async (o) => void order.push(`second:${o}`), { staleMs: 200 });
    await Promise.all([first, second]);
    expect(order).toEqual(['first:acquired', 'first:done', 'second:acquired']);
  });
});

/**
 * The 'read-only' child on `cacheDir`, run as an unprivileged user when this is root (root may
 * write anywhere); undefined, with a note, where root may not switch users.
 */
async function unprivilegedChild(cacheDir: string, what: string): Promise<Awaited<ReturnType<typeof runChild>> | undefined> {
  const root = process.getuid?.() === 0;
  try {
    return await runChild('read-only', { cacheDir }, { env: childEnv(), ...(root ? { uid: 65534, gid: 65534 } : {}) });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
    console.warn(`skipped: root without the right to switch users cannot test ${what}`);
    return undefined;
  }
}

test('a cache dir this user cannot reach (a parent it may not search): no error, nothing written, one warning', async () => {
  const parent = fresh();
  mkdirSync(parent, { recursive: true });
  const cacheDir = join(parent, 'kiln');
  chmodSync(parent, process.getuid?.() === 0 ? 0o700 : 0o000); // root's 0700 dir is closed to the unprivileged child
  try {
    const r = await unprivilegedChild(cacheDir, 'an unreachable cache dir');
    if (!r) return;
    expect(r.out?.error).toBeUndefined();
    expect(r.out?.result).toEqual({ readOnly: true, first: 'miss', published: 'skipped', published2: 'skipped', locked: 'unavailable' });
    expect(r.out?.warnings).toEqual([expect.stringMatching(/^KILN_CACHE_UNAVAILABLE.*cannot use the cache dir .*kiln \(EACCES/)]);
  } finally {
    chmodSync(parent, 0o755);
  }
  expect(readdirSync(parent)).toEqual([]);
});

test('a cache dir this user cannot write: lookups work, nothing is written, one warning', async () => {
  const cacheDir = fresh();
  const s = sample();
  openCache({ cacheDir, env: {} }).publish(s.key, s.namespace, s.files, s.fields);
  const snapshot = () => readdirSync(cacheDir, { recursive: true, encoding: 'utf8' }).sort();
  const before = snapshot();
  const root = process.getuid?.() === 0;
  if (!root) chmodSync(cacheDir, 0o555);
  try {
    const r = await unprivilegedChild(cacheDir, 'a non-writable cache dir');
    if (!r) return;
    expect(r.out?.error).toBeUndefined();
    expect(r.out?.result).toEqual({ readOnly: true, first: 'hit', published: 'skipped', published2: 'skipped', locked: 'unavailable' });
    expect(r.out?.warnings.filter((w) => w.startsWith('KILN_CACHE_READ_ONLY'))).toHaveLength(1);
    expect(r.out?.warnings).toHaveLength(1);
  } finally {
    if (!root) chmodSync(cacheDir, 0o755);
  }
  expect(snapshot()).toEqual(before);
});
