/**
 * Bundles end to end, in fresh processes as users start programs: an app package (a copy of
 * test/fixtures/models in a temp dir) compiles a small MLP with kiln.compile. A cold process
 * traces, compiles and publishes; a warm one loads the bundle with zero traces and compiles
 * and gets bit-identical results at every dynamic size, as fast in steady state; what must
 * not change the key does not; source edits rebuild or not as they should; `kiln build`
 * bundles ship read-only to another copy of the app; broken bundles are rebuilt (auto) or
 * refused (force-load).
 */
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import * as kiln from '../lib';
import { listBundles, openCache, parseManifest, type Manifest } from '../lib/cache';
import { buildCommand, buildUsage, findSpecs } from '../lib/cli/build';
import { addonInfo } from '../lib/runtime/native';
import { envWithoutKiln, runNode } from './helpers/node-child';

const REPO = resolve(__dirname, '..');
const FIXTURE = join(REPO, 'test', 'fixtures', 'models');
const KILN = join(REPO, 'lib');

interface AppResult {
  stats?: { source: string; traceMs: number; compileMs: number; loadMs: number; kernels: number; bundleDir?: string };
  counters?: { traces: number; compiles: number };
  outputs: { batch: number; shape: number[]; bytes: string }[];
  warnings: { code: string; message: string }[];
  medianMs?: number;
  coldModules: string[];
  memory?: { source: string; counters: { traces: number; compiles: number }; same: boolean; fsCalls: Record<string, number> };
  compilerLookups?: string[];
  error?: { name: string; code: string; message: string };
}

let tmp: string;
let n = 0;

/** A copy of the fixture app as its own package. */
function project(name: string): string {
  const dir = join(tmp, name);
  cpSync(FIXTURE, dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `kiln-e2e-${name}`, private: true }));
  return dir;
}

/** The environment of a child: none of the runner's KILN_* settings, one kernel thread. */
const childEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => envWithoutKiln({ KILN_CPU_THREADS: '1', ...extra });

/** A fresh node process, by default in `tmp` with `childEnv()`. */
const spawnNode = (args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) => runNode(args, { env: opts.env ?? childEnv(), cwd: opts.cwd ?? tmp });

/** Runs the app of `proj` in a fresh process. */
async function app(proj: string, args: object, opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<AppResult> {
  const r = await spawnNode([join(proj, 'app.js'), JSON.stringify({ kiln: KILN, batches: [4, 3, 7], ...args })], opts);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as AppResult;
  } catch {
    throw new Error(`app exited ${r.code} without a result:\n${r.stdout}\n${r.stderr}`);
  }
}

/** Runs `kiln build` (lib/cli/build.ts) in a fresh process. */
function kilnBuild(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  const script = `require(${JSON.stringify(join(KILN, 'cli', 'build.ts'))}).buildCommand(process.argv.slice(1)).then((c) => { process.exitCode = c; })`;
  return spawnNode(['-e', script, ...args], opts);
}

const bytesOf = (r: AppResult) => r.outputs.map((o) => o.bytes);
const manifestOf = (dir: string): Manifest => parseManifest(readFileSync(join(dir, 'manifest.json'), 'utf8'));
const copyCache = (from: string): string => {
  const to = join(tmp, `cache-${n++}`);
  cpSync(from, to, { recursive: true });
  return to;
};
/** Where a bundle dir sits in a copy of its cache. */
const inCopy = (bundleDir: string, from: string, to: string) => join(to, bundleDir.slice(from.length));

let proj: string;
let cache: string;
let cold: AppResult;
let warm: AppResult;
const TIME = { calls: 200, batch: 512 };

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-e2e-'));
  proj = project('app');
  cache = join(tmp, 'cache');
  cold = await app(proj, { options: { cacheDir: cache }, time: TIME });
  warm = await app(proj, { options: { cacheDir: cache, failOnRecompile: true }, time: TIME });
}, 120_000);

afterAll(() => {
  // Make the read-only shipped dir removable again.
  const walk = (p: string) => {
    chmodSync(p, statSync(p).isDirectory() ? 0o755 : 0o644);
    if (statSync(p).isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
  };
  try {
    walk(join(tmp, 'shipped'));
  } catch {
    // not created
  }
  rmSync(tmp, { recursive: true, force: true });
});

test('a cold process traces, compiles and publishes one bundle', () => {
  expect(cold.error).toBeUndefined();
  expect(cold.counters).toEqual({ traces: 1, compiles: 1 });
  expect(cold.stats).toMatchObject({ source: 'compiled', bundleDir: expect.stringContaining(join(cache, 'v1', 'fixture-mlp')) });
  expect(cold.stats!.compileMs).toBeGreaterThan(0);
  expect(listBundles({ cacheDir: cache, bundlePath: [] })).toHaveLength(1);
  const m = manifestOf(cold.stats!.bundleDir!);
  expect(m.keyFields.inputs).toEqual(['float32[?,32]', 'float32[32,64]', 'float32[64]', 'float32[64,16]', 'float32[16]']);
  // The traced file is guarded relative to the app's package root; the app itself is not traced.
  expect(m.guards.sources.map((s) => s.path)).toEqual(['mlp.js']);
  expect(m.artifacts.map((a) => a.name).sort()).toEqual(['graph.json', 'kernels.cpp', 'kernels.so']);
  // The key names what generates the code, not the compiler; the compiler is recorded as information.
  expect(m.keyFields.toolchain).toMatch(/^cpp:kiln-[^:]+:isa-flags$/);
  expect(m.keyFields.env).toEqual({ KILN_CXXFLAGS: '' });
  expect(m.guards.toolchain).toEqual({ id: m.keyFields.toolchain, version: expect.stringMatching(/\d+\.\d+/), path: expect.stringMatching(/^\//) });
});

test('a warm process loads it: zero traces and compiles, bit-identical outputs at every dynamic size', () => {
  expect(warm.error).toBeUndefined();
  expect(warm.counters).toEqual({ traces: 0, compiles: 0 });
  expect(warm.stats).toMatchObject({ source: 'bundle', traceMs: 0, compileMs: 0, bundleDir: cold.stats!.bundleDir, kernels: cold.stats!.kernels });
  expect(warm.outputs.map((o) => o.shape)).toEqual([[4, 16], [3, 16], [7, 16]]);
  expect(bytesOf(warm)).toEqual(bytesOf(cold));
  expect(warm.warnings).toEqual([]);
  // Nor does it load the passes, the renderer or the compile driver.
  expect(cold.coldModules).toEqual(expect.arrayContaining(['codegen/cpp', 'engine/compile', 'passes/pipeline']));
  expect(warm.coldModules).toEqual([]);
});

test("the warm path's steady state is as fast as the cold path's (median of 200 calls, batch 512)", () => {
  console.log(`steady state per call: cold ${cold.medianMs!.toFixed(3)} ms, warm ${warm.medianMs!.toFixed(3)} ms`);
  // A skipped setup step after load (the seed's 2x bug) would show far beyond this noise bound.
  expect(warm.medianMs!).toBeLessThan(cold.medianMs! * 1.5 + 0.05);
});

test('HOME, the cwd, XDG_CACHE_HOME, cache-only and unrelated env vars keep the key', async () => {
  const home = join(tmp, 'other-home');
  mkdirSync(home);
  const env = childEnv({ HOME: home, XDG_CACHE_HOME: join(home, '.cache'), KILN_CACHE_MAX_BYTES: '1G', KILN_CPU_THREADS: '2', KILN_CACHE: 'auto', SOME_UNRELATED_VAR: 'x' });
  const r = await app(proj, { options: { cacheDir: cache, failOnRecompile: true }, batches: [4] }, { env, cwd: home });
  expect(r.error).toBeUndefined();
  expect(r.stats).toMatchObject({ source: 'bundle', bundleDir: cold.stats!.bundleDir });
  expect(r.outputs[0].bytes).toBe(cold.outputs[0].bytes);
});

test('the compiler is not part of the key: CXX naming another compiler, even a missing one, loads the same bundle and runs nothing', async () => {
  for (const CXX of ['clang++', '/nonexistent/bin/g++-99']) {
    const r = await app(proj, { options: { cacheDir: cache, failOnRecompile: true }, batches: [4], watchCompiler: true }, { env: childEnv({ CXX }) });
    expect(r.error).toBeUndefined();
    expect(r.stats).toMatchObject({ source: 'bundle', bundleDir: cold.stats!.bundleDir });
    expect(r.compilerLookups).toEqual([]);
  }
  // KILN_CXXFLAGS does change the code: another key, so failOnRecompile refuses.
  const flags = await app(proj, { options: { cacheDir: cache, failOnRecompile: true }, batches: [4] }, { env: childEnv({ KILN_CXXFLAGS: '-O2' }) });
  expect(flags.error).toMatchObject({ code: 'KILN_RECOMPILE' });
});

test('a bad KILN_CPU_THREADS or KILN_CPU_INLINE_US is the caller\'s KILN_BAD_ENV in every mode: the bundle is neither discarded nor called invalid', async () => {
  const c = copyCache(cache);
  const dir = inCopy(cold.stats!.bundleDir!, cache, c);
  for (const bad of [{ KILN_CPU_THREADS: 'abc' }, { KILN_CPU_THREADS: '0' }, { KILN_CPU_INLINE_US: 'abc' }]) {
    for (const mode of ['auto', 'force-load'] as const) {
      const r = await app(proj, { options: { cacheDir: c, cache: mode }, batches: [4] }, { env: childEnv(bad) });
      const [name] = Object.keys(bad);
      expect(r.error).toMatchObject({ name: 'ArgumentError', code: 'KILN_BAD_ENV', message: expect.stringContaining(name) });
      expect(r.warnings).toEqual([]);
      expect(r.counters).toEqual({ traces: 0, compiles: 0 });
      expect(existsSync(join(dir, 'kernels.so'))).toBe(true);
    }
  }
  const after = await app(proj, { options: { cacheDir: c, failOnRecompile: true }, batches: [4] });
  expect(after.error).toBeUndefined();
  expect(after.stats).toMatchObject({ source: 'bundle', bundleDir: dir });
});

test('in one process, a second call and a second compiled function for the same key touch no file', async () => {
  const r = await app(proj, { options: { cacheDir: cache, failOnRecompile: true }, batches: [4], memoryCheck: true });
  expect(r.error).toBeUndefined();
  expect(r.memory).toEqual({ source: 'memory', counters: { traces: 0, compiles: 0 }, same: true, fsCalls: {} });
});

test('editing an unrelated file keeps the bundle; editing a line the trace went through rebuilds it in place', async () => {
  // Another copy of the app at another path: the relative guard still verifies.
  const p = project('edited');
  const c = copyCache(cache);
  const bundleDir = inCopy(cold.stats!.bundleDir!, cache, c);
  writeFileSync(join(p, 'data.js'), readFileSync(join(p, 'data.js'), 'utf8') + '\n// edited\n');
  const unrelated = await app(p, { options: { cacheDir: c, failOnRecompile: true }, batches: [4] });
  expect(unrelated.error).toBeUndefined();
  expect(unrelated.stats).toMatchObject({ source: 'bundle', bundleDir });

  const model = readFileSync(join(p, 'mlp.js'), 'utf8');
  writeFileSync(join(p, 'mlp.js'), model.replace('return x.matmul(w).add(b);', 'return x.matmul(w).add(b).mul(2);'));
  const refused = await app(p, { options: { cacheDir: c, failOnRecompile: true }, batches: [4] });
  expect(refused.error).toMatchObject({ code: 'KILN_RECOMPILE', message: expect.stringMatching(/source-changed.*mlp\.js changed/) });
  const rebuilt = await app(p, { options: { cacheDir: c }, batches: [4] });
  expect(rebuilt.error).toBeUndefined();
  expect(rebuilt.counters).toEqual({ traces: 1, compiles: 1 });
  expect(rebuilt.stats).toMatchObject({ source: 'compiled', bundleDir }); // same key, replaced in place
  expect(rebuilt.warnings.map((w) => w.code)).toEqual(['KILN_BUNDLE_INVALID']);
  expect(rebuilt.warnings[0].message).toMatch(/mlp\.js changed since the bundle was built.*rebuilt and replaced/);
  expect(rebuilt.outputs[0].bytes).not.toBe(cold.outputs[0].bytes);
  expect(listBundles({ cacheDir: c, bundlePath: [] })).toHaveLength(1);
  const again = await app(p, { options: { cacheDir: c, failOnRecompile: true }, batches: [4] });
  expect(again.stats).toMatchObject({ source: 'bundle', bundleDir });
  expect(again.outputs[0].bytes).toBe(rebuilt.outputs[0].bytes);
});

test('kiln build --target cpu --out DIR; another copy of the app loads it read-only from KILN_BUNDLE_PATH with zero compiles', async () => {
  const shipped = join(tmp, 'shipped');
  const built = await kilnBuild([join(proj, 'mlp.js'), '--target', 'cpu', '--out', shipped]);
  expect(built.code).toBe(0);
  expect(built.stderr).toMatch(/\[1\/1\] fixture-mlp → cpu: built in [\d.]+ s → /);
  expect(built.stdout).toMatch(/fixture-mlp\s+cpu-\S+\s+built/);
  const [entry] = listBundles({ cacheDir: shipped, bundlePath: [] });
  expect(entry.key).toBe(manifestOf(cold.stats!.bundleDir!).key); // the very bundle kiln.compile looks up
  // Ship it read-only.
  const seal = (p: string) => {
    if (statSync(p).isDirectory()) for (const e of readdirSync(p)) seal(join(p, e));
    chmodSync(p, statSync(p).isDirectory() ? 0o555 : 0o444);
  };
  seal(shipped);

  const consumer = project('consumer');
  const ownCache = join(tmp, 'consumer-cache');
  const r = await app(consumer, { options: { cacheDir: ownCache, failOnRecompile: true } }, { env: childEnv({ KILN_BUNDLE_PATH: shipped }) });
  expect(r.error).toBeUndefined();
  expect(r.counters).toEqual({ traces: 0, compiles: 0 });
  expect(r.stats!.source).toBe('bundle');
  expect(r.stats!.bundleDir!.startsWith(join(shipped, 'v1'))).toBe(true);
  expect(bytesOf(r)).toEqual(bytesOf(cold));
  expect(listBundles({ cacheDir: ownCache, bundlePath: [] })).toHaveLength(0);

  // A machine with no C++ compiler (none on PATH, CXX unset) loads it too: kiln does not even
  // look for a compiler unless it must compile.
  const emptyBin = join(tmp, 'empty-bin');
  mkdirSync(emptyBin, { recursive: true });
  const noCompiler = childEnv({ KILN_BUNDLE_PATH: shipped, PATH: emptyBin });
  delete noCompiler.CXX;
  const bare = await app(project('no-compiler'), { options: { cacheDir: join(tmp, 'no-compiler-cache'), failOnRecompile: true }, watchCompiler: true }, { env: noCompiler });
  expect(bare.error).toBeUndefined();
  expect(bare.counters).toEqual({ traces: 0, compiles: 0 });
  expect(bare.stats!.source).toBe('bundle');
  expect(bytesOf(bare)).toEqual(bytesOf(cold));
  expect(bare.compilerLookups).toEqual([]);
  // Where a compile would be needed, it looks for one (which the watch above would have seen) and says so.
  const needs = await app(project('no-compiler-miss'), { options: { cacheDir: join(tmp, 'no-compiler-cache') }, watchCompiler: true }, { env: { ...noCompiler, KILN_BUNDLE_PATH: '' } });
  expect(needs.compilerLookups).toContain(`accessSync ${join(emptyBin, 'c++')}`);
  expect(needs.error).toMatchObject({
    name: 'CompilerError',
    code: 'KILN_NO_CXX',
    message: expect.stringMatching(/^fixture-mlp: no bundle matched inputs float32\[\?,32\], .*, and compiling one needs a C\+\+ compiler — .*no C\+\+ compiler found/),
  });

  // A CUDA target needs NVRTC, not a GPU (test/bundle-cuda.test.ts builds and checks them).
  const cuda = await kilnBuild([join(proj, 'mlp.js'), '--target', 'sm_90', '--out', join(tmp, 'cuda-out')]);
  if (addonInfo().nvrtc.available) {
    expect(cuda.code).toBe(0);
    expect(cuda.stderr).toMatch(/\[1\/1\] fixture-mlp → sm_90: built in [\d.]+ s → /);
  } else {
    expect(cuda.code).toBe(1);
    expect(cuda.stderr).toMatch(/fixture-mlp → sm_90: failed: fixture-mlp: building its bundle needs NVRTC — .*\[KILN_NVRTC_UNAVAILABLE\]/);
  }
});

test('three cold processes started together compile once: the others wait on the key lock and load the bundle', async () => {
  const c = join(tmp, 'race-cache');
  const runs = await Promise.all([0, 1, 2].map(() => app(proj, { options: { cacheDir: c }, batches: [4] })));
  for (const r of runs) expect(r.error).toBeUndefined();
  expect(runs.map((r) => r.stats!.source).sort()).toEqual(['bundle', 'bundle', 'compiled']);
  expect(runs.reduce((a, r) => a + r.counters!.compiles, 0)).toBe(1);
  expect(runs.reduce((a, r) => a + r.counters!.traces, 0)).toBe(1);
  for (const r of runs) expect(r.outputs[0].bytes).toBe(cold.outputs[0].bytes);
  expect(listBundles({ cacheDir: c, bundlePath: [] })).toHaveLength(1);
});

test('force-load with no bundle is KILN_BUNDLE_MISSING, and nothing is compiled', async () => {
  const r = await app(proj, { options: { cacheDir: join(tmp, 'empty-cache'), cache: 'force-load' }, batches: [4] });
  expect(r.error).toMatchObject({ name: 'CacheError', code: 'KILN_BUNDLE_MISSING' });
  // Traced once on this error path, only to tell a missing bundle from one that can never
  // exist (a function that captures tensors; see below). failOnRecompile forbids even that.
  expect(r.counters).toEqual({ traces: 1, compiles: 0 });
  const strict = await app(proj, { options: { cacheDir: join(tmp, 'empty-cache'), cache: 'force-load', failOnRecompile: true }, batches: [4] });
  expect(strict.error).toMatchObject({ name: 'CacheError', code: 'KILN_BUNDLE_MISSING' });
  expect(strict.counters).toEqual({ traces: 0, compiles: 0 });
});

test('a corrupted kernels.so: force-load refuses it naming the cause; auto rebuilds it with a warning', async () => {
  const c = copyCache(cache);
  const dir = inCopy(cold.stats!.bundleDir!, cache, c);
  const so = readFileSync(join(dir, 'kernels.so'));
  so[so.length >> 1] ^= 0xff;
  writeFileSync(join(dir, 'kernels.so'), so);
  const forced = await app(proj, { options: { cacheDir: c, cache: 'force-load' }, batches: [4] });
  expect(forced.error).toMatchObject({ code: 'KILN_BUNDLE_INVALID', message: expect.stringMatching(/artifact-checksum.*kernels\.so does not match its sha256/) });
  expect(forced.counters).toEqual({ traces: 0, compiles: 0 });
  const auto = await app(proj, { options: { cacheDir: c }, batches: [4] });
  expect(auto.stats).toMatchObject({ source: 'compiled', bundleDir: dir });
  expect(auto.warnings.map((w) => w.code)).toEqual(['KILN_BUNDLE_INVALID']);
  expect(auto.outputs[0].bytes).toBe(cold.outputs[0].bytes);
  const after = await app(proj, { options: { cacheDir: c, failOnRecompile: true }, batches: [4] });
  expect(after.stats).toMatchObject({ source: 'bundle', bundleDir: dir });
});

test('a bundle that verifies but fails to load (dlopen): force-load errors; auto discards it and compiles once', async () => {
  const c = copyCache(cache);
  const dir = inCopy(cold.stats!.bundleDir!, cache, c);
  // Re-publish the same key with a kernels.so the loader rejects but whose checksum is right.
  const m = manifestOf(dir);
  const files = ['graph.json', 'kernels.cpp'].map((name) => ({ name, data: readFileSync(join(dir, name)) }));
  rmSync(dir, { recursive: true });
  const bad = openCache({ cacheDir: c, env: {} }).publish(m.key, m.keyFields.namespace, [...files, { name: 'kernels.so', data: Buffer.from('not a shared object') }], {
    keyFields: m.keyFields,
    guards: m.guards,
  });
  expect(bad.status).toBe('published');
  const forced = await app(proj, { options: { cacheDir: c, cache: 'force-load' }, batches: [4] });
  expect(forced.error).toMatchObject({ code: 'KILN_BUNDLE_INVALID', message: expect.stringMatching(/verified but could not be loaded/) });
  const auto = await app(proj, { options: { cacheDir: c }, batches: [4] });
  expect(auto.error).toBeUndefined();
  expect(auto.counters).toEqual({ traces: 1, compiles: 1 });
  expect(auto.stats).toMatchObject({ source: 'compiled', bundleDir: dir });
  expect(auto.warnings.map((w) => w.code)).toEqual(['KILN_BUNDLE_LOAD']);
  expect(auto.outputs[0].bytes).toBe(cold.outputs[0].bytes);
  const after = await app(proj, { options: { cacheDir: c, failOnRecompile: true }, batches: [4] });
  expect(after.error).toBeUndefined();
  expect(after.stats).toMatchObject({ source: 'bundle', bundleDir: dir });
});

test('a shipped bundle that verifies but fails to load (dlopen) hides no cache copy: compiled once, then the cache copy loads with zero compiles', async () => {
  // A shipped root (read-only) whose bundle for the key has a kernels.so the loader rejects but whose checksum is right.
  const from = cold.stats!.bundleDir!;
  const m = manifestOf(from);
  const shipped = join(tmp, 'broken-shipped');
  const files = ['graph.json', 'kernels.cpp'].map((name) => ({ name, data: readFileSync(join(from, name)) }));
  const bad = openCache({ cacheDir: shipped, env: {} }).publish(m.key, m.keyFields.namespace, [...files, { name: 'kernels.so', data: Buffer.from('not a shared object') }], {
    keyFields: m.keyFields,
    guards: m.guards,
  });
  expect(bad.status).toBe('published');
  const env = childEnv({ KILN_BUNDLE_PATH: shipped });
  const own = join(tmp, 'behind-broken-shipped-cache');
  // The first process passes over the shipped bundle, compiles once and publishes to its cache.
  const first = await app(proj, { options: { cacheDir: own }, batches: [4] }, { env });
  expect(first.error).toBeUndefined();
  expect(first.counters).toEqual({ traces: 1, compiles: 1 });
  expect(first.stats).toMatchObject({ source: 'compiled', bundleDir: expect.stringContaining(join(own, 'v1')) });
  expect(first.warnings.map((w) => w.code)).toEqual(['KILN_BUNDLE_LOAD']);
  expect(first.outputs[0].bytes).toBe(cold.outputs[0].bytes);
  // Every later process loads that cache copy: nothing traced or compiled.
  for (const cacheDir of [own, copyCache(cache)]) {
    const later = await app(proj, { options: { cacheDir, failOnRecompile: true }, batches: [4] }, { env });
    expect(later.error).toBeUndefined();
    expect(later.counters).toEqual({ traces: 0, compiles: 0 });
    expect(later.stats).toMatchObject({ source: 'bundle', bundleDir: expect.stringContaining(join(cacheDir, 'v1')) });
    expect(later.warnings).toEqual([expect.objectContaining({ code: 'KILN_BUNDLE_LOAD', message: expect.stringMatching(/passes over it to the next bundle path or the cache/) })]);
    expect(later.outputs[0].bytes).toBe(cold.outputs[0].bytes);
  }
  expect(existsSync(bad.status === 'published' ? bad.dir : '')).toBe(true); // shipped bundles are never changed
});

test('kiln build --target cpu into a dir holding a bundle that verifies but fails to load (dlopen): rebuilt, not reported as already built', async () => {
  const from = cold.stats!.bundleDir!;
  const m = manifestOf(from);
  const out = join(tmp, 'build-over-broken');
  const files = ['graph.json', 'kernels.cpp'].map((name) => ({ name, data: readFileSync(join(from, name)) }));
  const bad = openCache({ cacheDir: out, env: {} }).publish(m.key, m.keyFields.namespace, [...files, { name: 'kernels.so', data: Buffer.from('not a shared object') }], {
    keyFields: m.keyFields,
    guards: m.guards,
  });
  if (bad.status !== 'published') throw new Error(`publish: ${bad.status}`);
  const built = await kilnBuild([join(proj, 'mlp.js'), '--target', 'cpu', '--out', out]);
  expect(built.code).toBe(0);
  expect(built.stderr).toMatch(/\[1\/1\] fixture-mlp → cpu: built in [\d.]+ s → /);
  expect(built.stderr).toMatch(/KILN_BUNDLE_LOAD.*verified but could not be loaded/);
  expect(built.stdout).toMatch(/fixture-mlp\s+cpu-\S+\s+built/);
  // The bundle in place is a new one, whose kernels.so loads: a process using it compiles nothing.
  expect(readFileSync(join(bad.dir, 'kernels.so')).subarray(0, 4)).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  const r = await app(project('after-rebuild'), { options: { cacheDir: join(tmp, 'after-rebuild-cache'), failOnRecompile: true }, batches: [4] }, { env: childEnv({ KILN_BUNDLE_PATH: out }) });
  expect(r.error).toBeUndefined();
  expect(r.stats).toMatchObject({ source: 'bundle', bundleDir: bad.dir });
  expect(r.outputs[0].bytes).toBe(cold.outputs[0].bytes);
  // Building again finds it and proves it loads: already built.
  const again = await kilnBuild([join(proj, 'mlp.js'), '--target', 'cpu', '--out', out]);
  expect(again.code).toBe(0);
  expect(again.stderr).toMatch(/fixture-mlp → cpu: already built in/);
});

describe('values captured from the closure', () => {
  /** Runs scale-app.js (scale.js's model `by`, multiplying by `value`) in a fresh process. */
  async function scaleApp(args: { by: string; value: number; second?: number; options?: object }, opts: { env?: NodeJS.ProcessEnv } = {}) {
    const r = await spawnNode([join(proj, 'scale-app.js'), JSON.stringify({ kiln: KILN, ...args })], opts);
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as Pick<AppResult, 'stats' | 'counters' | 'warnings' | 'error'> & { values?: number[]; second?: { values: number[]; source: string } };
    } catch {
      throw new Error(`scale-app exited ${r.code} without a result:\n${r.stdout}\n${r.stderr}`);
    }
  }

  test('a captured tensor: never published, so a process with another value computes with its own (no stale bundle)', async () => {
    const c = join(tmp, 'captured-cache');
    const one = await scaleApp({ by: 'tensor', value: 1, options: { cacheDir: c } });
    expect(one.error).toBeUndefined();
    expect(one.values).toEqual([2, 3, 4, 5]);
    expect(one.stats).toMatchObject({ source: 'compiled' });
    expect(one.stats!.bundleDir).toBeUndefined();
    expect(one.warnings).toEqual([
      {
        code: 'KILN_CAPTURED_TENSORS',
        message:
          "kiln: scale captures a tensor from its closure (float32[4]); its value can't be part of a bundle key, so kiln keeps the compiled program in memory only. Pass it as an argument to enable warm starts.",
      },
    ]);
    expect(listBundles({ cacheDir: c, bundlePath: [] })).toHaveLength(0);
    const two = await scaleApp({ by: 'tensor', value: 2, options: { cacheDir: c } });
    expect(two.error).toBeUndefined();
    expect(two.values).toEqual([3, 5, 7, 9]);
    expect(two.stats!.source).toBe('compiled');
    expect(two.counters).toEqual({ traces: 1, compiles: 1 });
  });

  test('in one process, two compiled functions of the same source capturing different tensors each get their own program', async () => {
    const r = await scaleApp({ by: 'tensor', value: 1, second: 3, options: { cacheDir: join(tmp, 'captured-memory') } });
    expect(r.error).toBeUndefined();
    expect(r.values).toEqual([2, 3, 4, 5]);
    expect(r.second).toEqual({ values: [4, 7, 10, 13], source: 'compiled' });
    expect(r.warnings.map((w) => w.code)).toEqual(['KILN_CAPTURED_TENSORS']); // once per function and process
  });

  test('a tensor derived inside fn from a captured one is captured too; a tensor fn makes itself is not', async () => {
    const c = join(tmp, 'derived-cache');
    const derived = await scaleApp({ by: 'derived', value: 1, options: { cacheDir: c } });
    expect(derived.values).toEqual([4, 7, 10, 13]);
    expect(derived.warnings.map((w) => w.message)).toEqual([expect.stringMatching(/^kiln: scaleDerived captures a tensor from its closure \(float32\[4\]\)/)]);
    expect(listBundles({ cacheDir: c, bundlePath: [] })).toHaveLength(0);

    const literal = await scaleApp({ by: 'literal', value: 1, options: { cacheDir: c } });
    expect(literal.warnings).toEqual([]);
    expect(literal.stats).toMatchObject({ source: 'compiled', bundleDir: expect.any(String) });
    const warmLiteral = await scaleApp({ by: 'literal', value: 7, options: { cacheDir: c, failOnRecompile: true } });
    expect(warmLiteral.error).toBeUndefined();
    expect(warmLiteral.stats!.source).toBe('bundle');
    expect(warmLiteral.values).toEqual([3, 5, 7, 9]);
  });

  test('force-load is a CacheError that says why no bundle exists; kiln build refuses the function', async () => {
    const forced = await scaleApp({ by: 'tensor', value: 1, options: { cacheDir: join(tmp, 'captured-forced'), cache: 'force-load' } });
    expect(forced.error).toMatchObject({
      name: 'CacheError',
      code: 'KILN_CAPTURED_TENSORS',
      message: expect.stringMatching(/^force-load: scale captures a tensor from its closure \(float32\[4\]\).*never publishes a bundle.*Pass it as an argument/),
    });
    expect(forced.counters).toEqual({ traces: 1, compiles: 0 }); // traced to explain, never compiled
    // With failOnRecompile nothing may be traced: the plain KILN_BUNDLE_MISSING.
    const strict = await scaleApp({ by: 'tensor', value: 1, options: { cacheDir: join(tmp, 'captured-forced'), cache: 'force-load', failOnRecompile: true } });
    expect(strict.error).toMatchObject({ code: 'KILN_BUNDLE_MISSING' });
    expect(strict.counters).toEqual({ traces: 0, compiles: 0 });

    // kiln.build (in process: it throws after the trace, before any compile).
    const { model } = (await import(join(proj, 'scale.js'))) as { model: (k: typeof kiln, by: string, v: number) => (x: kiln.Tensor) => kiln.Tensor };
    const before = kiln.counters().compiles;
    const out = join(tmp, 'captured-build');
    await expect(kiln.build(model(kiln, 'tensor', 1), [{ shape: [4] }], { target: 'cpu', cacheDir: out })).rejects.toMatchObject({
      name: 'CacheError',
      code: 'KILN_CAPTURED_TENSORS',
      message: expect.stringMatching(/^cannot build a bundle: scale captures a tensor from its closure \(float32\[4\]\).*Pass it as an argument/),
    });
    expect(kiln.counters().compiles).toBe(before);
    expect(listBundles({ cacheDir: out, bundlePath: [] })).toHaveLength(0);
  });

  test("the key option: a captured number's value is keyed when the app says so", async () => {
    const c = join(tmp, 'number-cache');
    const keyed = (value: number, extra: object = {}) => scaleApp({ by: 'number', value, options: { cacheDir: c, key: { value }, ...extra } });
    const one = await keyed(1);
    const two = await keyed(2);
    expect([one.values, two.values]).toEqual([[2, 3, 4, 5], [3, 5, 7, 9]]);
    expect([one.stats!.source, two.stats!.source]).toEqual(['compiled', 'compiled']);
    expect(one.warnings).toEqual([]);
    const bundles = listBundles({ cacheDir: c, bundlePath: [] });
    expect(bundles).toHaveLength(2);
    expect(bundles.map((b) => manifestOf(b.dir).keyFields.userKey).sort()).toEqual(['{"value":1}', '{"value":2}']);
    const warm = await Promise.all([keyed(1, { failOnRecompile: true }), keyed(2, { failOnRecompile: true })]);
    expect(warm.map((r) => [r.stats!.source, r.values])).toEqual([['bundle', [2, 3, 4, 5]], ['bundle', [3, 5, 7, 9]]]);
  });

  test('the key option must be JSON data: refused by kiln.compile and kiln.build, naming what is wrong', async () => {
    const f = (x: kiln.Tensor) => x.mul(2);
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    const cases: [unknown, RegExp][] = [
      [{ at: { n: Infinity } }, /key\.at\.n is Infinity; key fields must be finite numbers/],
      [{ when: new Date(0) }, /key\.when is a Date object/],
      [() => 1, /key is a function/],
      [{ big: 1n }, /key\.big is a bigint/],
      [cyclic, /key\.self refers back to an enclosing value/],
    ];
    for (const [key, why] of cases) {
      let err: unknown;
      try {
        kiln.compile(f, { key });
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ name: 'ArgumentError', code: 'KILN_BAD_OPTION', message: expect.stringMatching(/^kiln\.compile: key must be JSON data/) });
      expect((err as Error).message).toMatch(why);
    }
    await expect(kiln.build(f, [{ shape: [4] }], { target: 'cpu', key: { n: NaN } })).rejects.toMatchObject({ code: 'KILN_BAD_OPTION', message: expect.stringMatching(/key\.n is NaN/) });
    // Equal data in another key order or with undefined members is the same key.
    const a = kiln.compile(f, { key: { b: [1, 'x'], a: null } }) as unknown as Record<symbol, { settings: { key?: string } }>;
    const b = kiln.compile(f, { key: { a: null, b: [1, 'x'], c: undefined } }) as unknown as Record<symbol, { settings: { key?: string } }>;
    const spec = Symbol.for('kiln.compileSpec');
    expect(a[spec].settings.key).toBe('{"a":null,"b":[1,"x"]}');
    expect(b[spec].settings.key).toBe(a[spec].settings.key);
  });
});

describe('kiln.build and kiln build arguments (in process, nothing compiled)', () => {
  const fn = (x: kiln.Tensor) => x.mul(2);

  test('unknown targets and options are refused (CUDA targets build: test/bundle-cuda.test.ts)', async () => {
    await expect(kiln.build(fn, [{ shape: [4] }], { target: 'tpu' })).rejects.toMatchObject({ code: 'KILN_BAD_TARGET' });
    await expect(kiln.build(fn, [{ shape: [4] }], { target: 'sm_9' })).rejects.toMatchObject({ code: 'KILN_BAD_TARGET', message: expect.stringMatching(/not a valid CUDA architecture/) });
    await expect(kiln.build(fn, [{ shape: [4] }], { target: 'cpu', cache: 'off' } as never)).rejects.toMatchObject({ code: 'KILN_BAD_OPTION', message: expect.stringMatching(/unknown option 'cache'/) });
    await expect(kiln.build(fn, [{ shape: [4], dtype: 'float64' as never }], { target: 'cpu' })).rejects.toMatchObject({ code: 'KILN_BAD_ARGUMENT' });
    await expect(kiln.build(fn, [], { target: 'cpu' })).rejects.toMatchObject({ code: 'KILN_INPUT_COUNT' });
  });

  test('the module convention: one spec, an array, named exports, or --export NAME', () => {
    const spec = { fn, inputs: [{ shape: [4] }] };
    expect(findSpecs(spec, []).map(([k]) => k)).toEqual(['default']);
    expect(findSpecs([spec, spec], []).map(([k]) => k)).toEqual(['default[0]', 'default[1]']);
    expect(findSpecs({ a: spec, b: [spec], other: 3 }, []).map(([k]) => k)).toEqual(['a', 'b[0]']);
    expect(findSpecs({ default: spec, __esModule: true }, []).map(([k]) => k)).toEqual(['default']);
    expect(findSpecs({ a: spec, b: spec }, ['b']).map(([k]) => k)).toEqual(['b']);
    expect(() => findSpecs({ a: spec }, ['c'])).toThrow(/no export 'c'/);
    expect(() => findSpecs({ fn }, [])).toThrow(/exports no spec/);
  });

  test('usage errors exit 2 with the usage; --help documents the convention', async () => {
    const err = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      expect(await buildCommand([])).toBe(2);
      expect(err.mock.calls[0][0]).toMatch(/which module\?/);
      expect(await buildCommand(['x.js', '--frobnicate'])).toBe(2);
      expect(await buildCommand([join(tmp, 'missing.js')])).toBe(2);
      expect(await buildCommand(['--help'])).toBe(0);
      expect(log.mock.calls[0][0]).toMatch(/module\.exports = \{\s+fn: mlp/);
      expect(buildUsage).toMatch(/--target LIST/);
    } finally {
      err.mockRestore();
      log.mockRestore();
    }
  });
});
