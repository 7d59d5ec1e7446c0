/** `kiln cache ls|show|verify|prune|clear` against a real cache directory. */
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { listBundles, openCache } from '../lib/cache';
import { cacheCommand, cacheUsage } from '../lib/cli/cache';
import { sample, type Sample } from './fixtures/cache/sample';
import { compile } from '../lib/api/compile';
import { tensor, type Tensor } from '../lib';

let tmp: string;
let n = 0;
let out: string[];
let err: string[];

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-cli-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
beforeEach(() => {
  out = [];
  err = [];
  jest.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
  jest.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' ')));
});
afterEach(() => jest.restoreAllMocks());

/** A cache with bundles a (oldest), b, c (newest); the shipped root holds d. */
function setup(): { dir: string; shipped: string; s: Sample[] } {
  const dir = join(tmp, `c${n++}`);
  const shipped = join(tmp, `s${n++}`);
  const cache = openCache({ cacheDir: dir, env: {}, maxBytes: 0 });
  const s = ['a', 'b', 'c'].map((seed, i) => {
    const x = sample({ seed, soBytes: 20_000 });
    const r = cache.publish(x.key, x.namespace, x.files, x.fields) as { dir: string };
    utimesSync(r.dir, new Date(Date.now() - (3 - i) * 86_400_000), new Date(Date.now() - (3 - i) * 86_400_000));
    return x;
  });
  const d = sample({ seed: 'd', namespace: 'shipped-app', target: 'sm_90' });
  openCache({ cacheDir: shipped, env: {} }).publish(d.key, d.namespace, d.files, d.fields);
  process.env.KILN_BUNDLE_PATH = shipped;
  return { dir, shipped, s: [...s, d] };
}
afterEach(() => {
  delete process.env.KILN_BUNDLE_PATH;
});

test('--help explains every subcommand', async () => {
  expect(await cacheCommand(['--help'])).toBe(0);
  for (const sub of ['ls', 'show', 'verify', 'prune', 'clear', '--json', '--max-bytes', '--older-than', '--yes']) expect(out.join('\n')).toContain(sub);
  out = [];
  expect(await cacheCommand(['prune', '--help'])).toBe(0);
  expect(out.join('\n')).toMatch(/^kiln cache prune/);
  expect(await cacheCommand(['frobnicate'])).toBe(2);
  expect(await cacheCommand(['ls', '--bogus'])).toBe(2);
  expect(cacheUsage).toContain('kiln cache');
});

test('ls lists cached and shipped bundles with target, size, last use and source', async () => {
  const { dir, s } = setup();
  expect(await cacheCommand(['ls', '--cache-dir', dir])).toBe(0);
  const text = out.join('\n');
  expect(text).toMatch(/NAMESPACE\s+KEY\s+TARGET\s+SIZE\s+LAST USED\s+SOURCE/);
  expect(text).toContain(s[0].key.slice(0, 12));
  expect(text).toMatch(new RegExp(`shipped-app\\s+${s[3].key.slice(0, 12)}\\s+sm_90.*shipped`));
  expect(text).toMatch(/3d ago\s+cache/);
  out = [];
  expect(await cacheCommand(['ls', '--cache-dir', dir, '--json'])).toBe(0);
  const rows = JSON.parse(out.join('\n'));
  expect(rows).toHaveLength(4);
  expect(rows.map((r: { source: string }) => r.source).sort()).toEqual(['cache', 'cache', 'cache', 'shipped']);
});

test('show lists the dynamic sizes a compiled program checks (its slices of a dynamic dim)', async () => {
  const dir = join(tmp, `c${n++}`);
  const f = compile((x: Tensor) => [x.slice(0, 0, 2), x.slice(0, -3, 2)], { name: 'sizes', device: 'cpu', cache: 'auto', cacheDir: dir, dynamic: { 0: [0] } });
  await f(tensor([1, 2, 3, 4], [4]));
  const key = f.stats!.bundleDir!.split('/').pop()!;
  expect(await cacheCommand(['show', key.slice(0, 10), '--cache-dir', dir])).toBe(0);
  expect(out.join('\n')).toMatch(/dynamic sizes \(checked at every call.*\n  s0 >= 2 {3}\(slice\(0, 0, 2\)\)\n  3 <= s0 <= 5 {3}\(slice\(0, -3, 2\)\)\n/);
  out = [];
  expect(await cacheCommand(['show', key.slice(0, 10), '--cache-dir', dir, '--json'])).toBe(0);
  expect(JSON.parse(out.join('\n')).sizeRules).toEqual(['s0 >= 2   (slice(0, 0, 2))', '3 <= s0 <= 5   (slice(0, -3, 2))']);
  f.dispose();
});

test('show explains every key field, the guards and the artifacts', async () => {
  const { dir, s } = setup();
  expect(await cacheCommand(['show', s[1].key.slice(0, 10), '--cache-dir', dir])).toBe(0);
  const text = out.join('\n');
  for (const f of ['schema', 'kilnVersion', 'namespace', 'sourceSha256', 'inputs', 'options', 'userKey', 'target', 'toolchain', 'env']) expect(text).toMatch(new RegExp(`^  ${f}\\s`, 'm'));
  expect(text).toContain('float32[?,8]');
  expect(text).toContain('CPU x64 with avx2, fma');
  expect(text).toMatch(/kernels\.so\s+19\.5 KiB\s+[0-9a-f]{64}/);
  out = [];
  expect(await cacheCommand(['show', s[3].key.slice(0, 8), '--cache-dir', dir, '--json'])).toBe(0);
  expect(JSON.parse(out.join('\n')).manifest.guards.target).toBe('sm_90');
  expect(await cacheCommand(['show', 'zz', '--cache-dir', dir])).toBe(2);
  expect(await cacheCommand(['show', '', '--cache-dir', dir])).toBe(2);
});

test('verify passes a sound cache and fails, with the reason, on a corrupted bundle', async () => {
  const { dir, s } = setup();
  const cpuOnly = s.slice(0, 3);
  for (const x of cpuOnly) expect(await cacheCommand(['verify', x.key.slice(0, 12), '--cache-dir', dir])).toBe(process.arch === 'x64' && /avx2/.test(readFileSync('/proc/cpuinfo', 'utf8')) ? 0 : 1);
  const bad = listBundles({ cacheDir: dir, bundlePath: [] }).find((b) => b.key === s[2].key)!;
  const so = readFileSync(join(bad.dir, 'kernels.so'));
  so[100] ^= 4;
  writeFileSync(join(bad.dir, 'kernels.so'), so);
  out = [];
  expect(await cacheCommand(['verify', '--cache-dir', dir, '--json'])).toBe(1);
  const rows = JSON.parse(out.join('\n')) as { key: string; ok: boolean; reason?: string }[];
  expect(rows).toHaveLength(4);
  expect(rows.find((r) => r.key === s[2].key)).toMatchObject({ ok: false, reason: 'artifact-checksum' });
});

test('prune evicts least-recently-used past --max-bytes and by --older-than; shipped bundles stay', async () => {
  const { dir, shipped, s } = setup();
  const size = listBundles({ cacheDir: dir, bundlePath: [] })[0].bytes;
  expect(await cacheCommand(['prune', '--max-bytes', String(2 * size + 10), '--dry-run', '--cache-dir', dir])).toBe(0);
  expect(out.join('\n')).toContain(`would remove  test/${s[0].key.slice(0, 12)}`);
  expect(listBundles({ cacheDir: dir, bundlePath: [] })).toHaveLength(3);
  out = [];
  expect(await cacheCommand(['prune', '--max-bytes', String(2 * size + 10), '--cache-dir', dir, '--json'])).toBe(0);
  expect(JSON.parse(out.join('\n')).removed.map((r: { key: string }) => r.key)).toEqual([s[0].key]);
  expect(await cacheCommand(['prune', '--older-than', '1.5', '--cache-dir', dir])).toBe(0);
  expect(listBundles({ cacheDir: dir, bundlePath: [] }).map((b) => b.key)).toEqual([s[2].key]);
  expect(listBundles({ cacheDir: shipped, bundlePath: [] })).toHaveLength(1);
  expect(await cacheCommand(['prune', '--older-than', 'soon', '--cache-dir', dir])).toBe(2);
  err = [];
  expect(await cacheCommand(['prune', '--max-bytes', 'abc', '--cache-dir', dir])).toBe(2); // a usage error, as the one above
  expect(err.join('\n')).toMatch(/^kiln cache: --max-bytes needs a byte count \(e\.g\. 2G, 500M, 1048576; 0: every unlocked bundle\), not 'abc'\n\nkiln cache <ls\|show/);
  const env = process.env.KILN_CACHE_MAX_BYTES;
  process.env.KILN_CACHE_MAX_BYTES = 'abc'; // an explicit cap stands in for it: not read
  try {
    expect(await cacheCommand(['prune', '--max-bytes', '1G', '--dry-run', '--cache-dir', dir])).toBe(0);
    await expect(cacheCommand(['ls', '--cache-dir', dir])).rejects.toMatchObject({ code: 'KILN_BAD_ENV' }); // elsewhere it is the error it is
  } finally {
    if (env === undefined) delete process.env.KILN_CACHE_MAX_BYTES;
    else process.env.KILN_CACHE_MAX_BYTES = env;
  }
  expect(await cacheCommand(['prune', '--max-bytes', '0', '--cache-dir', dir])).toBe(0); // a cap of 0 empties it
  expect(listBundles({ cacheDir: dir, bundlePath: [] })).toHaveLength(0);
  expect(listBundles({ cacheDir: shipped, bundlePath: [] })).toHaveLength(1);
});

test('clear asks for --yes, then empties the cache (never shipped bundles)', async () => {
  const { dir, shipped } = setup();
  expect(await cacheCommand(['clear', '--cache-dir', dir])).toBe(1);
  expect(out.join('\n')).toContain('would remove 3 bundles');
  expect(listBundles({ cacheDir: dir, bundlePath: [] })).toHaveLength(3);
  expect(await cacheCommand(['clear', '--yes', '--cache-dir', dir])).toBe(0);
  expect(listBundles({ cacheDir: dir, bundlePath: [] })).toHaveLength(0);
  expect(listBundles({ cacheDir: shipped, bundlePath: [] })).toHaveLength(1);
  const x = sample();
  expect(openCache({ cacheDir: dir, env: {} }).publish(x.key, x.namespace, x.files, x.fields).status).toBe('published');
});
