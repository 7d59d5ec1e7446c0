/**
 * The public API keeps its contract: shipped bundle directories given as the `bundlePath`
 * option are searched before the cache (a fresh process loads a `kiln.build` bundle from
 * one with zero traces and compiles); a call with more inputs than a fixed parameter list
 * is refused rather than fixing a wrong signature, while rest parameters take any number;
 * `kiln.build` refuses a CUDA target this machine's NVRTC does not support, naming those it
 * does (skipped without NVRTC unless KILN_REQUIRE_NVRTC=1). Real compiler, real addon.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import * as kiln from '../lib';
import { compile, counters, parameterLimit } from '../lib/api/compile';
import { addonInfo } from '../lib/runtime/native';
import { ArgumentError } from '../lib/util/errors';
import { envWithoutKiln, runNode } from './helpers/node-child';

const KILN = resolve(__dirname, '..', 'lib');

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kiln-api-contract-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('bundlePath: shipped bundle directories from the option', () => {
  const fn = (x: kiln.Tensor) => x.mul(2);

  test.each([
    ['an empty string', ''],
    ['a number', 3],
    ['an array with an empty string', ['/tmp', '']],
    ['an array with a non-string', ['/tmp', 1]],
    ['an object', { dir: '/tmp' }],
  ])('%s is ArgumentError KILN_BAD_OPTION', (_, bundlePath) => {
    const attempt = () => compile(fn, { device: 'cpu', bundlePath } as never);
    expect(attempt).toThrow(ArgumentError);
    expect(attempt).toThrow(expect.objectContaining({ code: 'KILN_BAD_OPTION', message: expect.stringMatching(/^kiln\.compile: bundlePath must be a directory/) }));
  });

  test('a string and an array of strings are accepted', () => {
    expect(() => compile(fn, { device: 'cpu', bundlePath: '/tmp' })).not.toThrow();
    expect(() => compile(fn, { device: 'cpu', bundlePath: ['/tmp', 'relative/dir'] })).not.toThrow();
    expect(() => compile(fn, { device: 'cpu', bundlePath: [] })).not.toThrow();
  });

  // An app package: model.js holds the function; main.js builds its bundle or runs it.
  const MODEL = `'use strict';\nconst triple = (x, y) => x.mul(3).add(y);\nexports.triple = triple;\n`;
  const MAIN = `'use strict';
const [kilnPath, mode, opts] = process.argv.slice(2);
const kiln = require(kilnPath);
const { triple } = require('./model.js');
(async () => {
  const options = JSON.parse(opts);
  if (mode === 'build') {
    const b = await kiln.build(triple, [{ shape: [5] }, { shape: [5] }], { target: 'cpu', ...options });
    console.log(JSON.stringify({ source: b.source, bundleDir: b.bundleDir }));
    return;
  }
  const f = kiln.compile(triple, { device: 'cpu', ...options });
  try {
    const y = await f(kiln.tensor([1, 2, 3, 4, 5], [5]), kiln.tensor([0.5, 0.5, 0.5, 0.5, -1], [5]));
    console.log(JSON.stringify({ values: Array.from(await y.toArray()), stats: f.stats, counters: kiln.counters() }));
  } catch (e) {
    console.log(JSON.stringify({ error: { name: e.name, code: e.code, message: e.message }, counters: kiln.counters() }));
  }
})();
`;

  /** What main.js prints: a build's result, or a run's output, stats and counters (or its error). */
  interface ChildResult {
    source?: string;
    bundleDir?: string;
    values?: number[];
    stats?: kiln.CompileStats;
    counters?: { traces: number; compiles: number };
    error?: { name: string; code: string; message: string };
  }

  /** Runs main.js of `app` in a fresh process and returns its JSON line. */
  async function child(app: string, mode: 'build' | 'run', options: object, env: NodeJS.ProcessEnv = {}): Promise<ChildResult> {
    const r = await runNode([join(app, 'main.js'), KILN, mode, JSON.stringify(options)], { cwd: app, env: envWithoutKiln({ KILN_CPU_THREADS: '1', ...env }) });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as ChildResult;
    } catch {
      throw new Error(`main.js ${mode} exited ${r.code} without a result:\n${r.stdout}\n${r.stderr}`);
    }
  }

  test('a fresh process loads a kiln.build bundle from bundlePath with zero traces and compiles; the option replaces KILN_BUNDLE_PATH', async () => {
    const app = join(tmp, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'kiln-api-contract-app', private: true }));
    writeFileSync(join(app, 'model.js'), MODEL);
    writeFileSync(join(app, 'main.js'), MAIN);
    const shipped = join(tmp, 'shipped');
    const built = await child(app, 'build', { cacheDir: shipped });
    expect(built).toMatchObject({ source: 'compiled', bundleDir: expect.stringContaining(join(shipped, 'v1', 'triple')) });

    const want = [3.5, 6.5, 9.5, 12.5, 14];
    const own = join(tmp, 'own-cache');
    const loaded = await child(app, 'run', { bundlePath: shipped, cacheDir: own, failOnRecompile: true });
    expect(loaded.error).toBeUndefined();
    expect(loaded.counters).toEqual({ traces: 0, compiles: 0 });
    expect(loaded.stats).toMatchObject({ source: 'bundle', bundleDir: built.bundleDir });
    expect(loaded.values).toEqual(want);
    // A single directory and a list (searched in order, a missing one passed over) are the same.
    const listed = await child(app, 'run', { bundlePath: [join(tmp, 'missing'), shipped], cacheDir: own, failOnRecompile: true });
    expect(listed).toMatchObject({ counters: { traces: 0, compiles: 0 }, stats: { source: 'bundle', bundleDir: built.bundleDir }, values: want });

    // The option replaces the environment variable, as every option does: [] searches nothing.
    const viaEnv = await child(app, 'run', { cacheDir: own, failOnRecompile: true }, { KILN_BUNDLE_PATH: shipped });
    expect(viaEnv).toMatchObject({ counters: { traces: 0, compiles: 0 }, stats: { source: 'bundle' }, values: want });
    const replaced = await child(app, 'run', { bundlePath: [], cacheDir: own, failOnRecompile: true }, { KILN_BUNDLE_PATH: shipped });
    expect(replaced.error).toMatchObject({ name: 'CacheError', code: 'KILN_RECOMPILE' });
    expect(replaced.counters).toEqual({ traces: 0, compiles: 0 });

    // A shipped directory any user may write to is passed over (another user could swap the
    // library between its check and its load): the app compiles instead, and says why.
    if (process.platform !== 'win32') {
      chmodSync(shipped, 0o777);
      const open = await child(app, 'run', { bundlePath: shipped, cacheDir: own, failOnRecompile: true });
      expect(open.error).toMatchObject({ name: 'CacheError', code: 'KILN_RECOMPILE' });
      const warned = await runNode([join(app, 'main.js'), KILN, 'run', JSON.stringify({ bundlePath: shipped, cacheDir: join(tmp, 'fresh-cache') })], { cwd: app, env: envWithoutKiln({ KILN_CPU_THREADS: '1' }) });
      expect(warned.stderr).toMatch(/KILN_BUNDLE_INVALID[\s\S]*writable by any user/);
      expect(JSON.parse(warned.stdout.trim().split('\n').pop() ?? '{}')).toMatchObject({ values: want, stats: { source: 'compiled' } });
      chmodSync(shipped, 0o755);
    }
  }, 180_000);
});

describe('input count: a fixed parameter list takes no extra inputs', () => {
  const t = kiln.tensor([1, 2, 3], [3]);
  /** A compiled function called with any number of inputs, as from plain JavaScript. */
  const loose = (f: unknown) => f as (...xs: kiln.Tensor[]) => Promise<kiln.Tensor>;

  test('more inputs than parameters on the first call is ArgumentError KILN_INPUT_COUNT; the right count then compiles', async () => {
    const f = compile((a: kiln.Tensor, b: kiln.Tensor) => a.add(b), { device: 'cpu', name: 'add2' });
    const before = counters().traces;
    const call = loose(f)(t, t, t);
    await expect(call).rejects.toBeInstanceOf(ArgumentError);
    await expect(call).rejects.toMatchObject({ code: 'KILN_INPUT_COUNT', message: "add2: expected 2 inputs (the function's parameters), got 3" });
    expect(counters().traces).toBe(before); // refused before any trace
    const y = await f(t, t);
    expect(Array.from(await y.toArray())).toEqual([2, 4, 6]);
    await expect(loose(f)(t, t, t)).rejects.toMatchObject({ code: 'KILN_INPUT_COUNT' });
  });

  test('fewer inputs than parameters is refused as before', async () => {
    const f = compile((a: kiln.Tensor, b: kiln.Tensor) => a.add(b), { device: 'cpu', name: 'add2' });
    await expect(loose(f)(t)).rejects.toMatchObject({ code: 'KILN_INPUT_COUNT', message: "add2: expected 2 inputs (the function's parameters), got 1" });
  });

  test('a rest parameter takes the inputs it is given', async () => {
    const f = compile((...xs: kiln.Tensor[]) => xs[0].add(xs[1]), { device: 'cpu', name: 'addRest' });
    const y = await f(t, kiln.tensor([10, 20, 30], [3]));
    expect(Array.from(await y.toArray())).toEqual([11, 22, 33]);
  });

  test('kiln.build refuses more example inputs than a fixed parameter list, before compiling', async () => {
    await expect(kiln.build((x: kiln.Tensor) => x.mul(2), [{ shape: [4] }, { shape: [4] }], { target: 'cpu' })).rejects.toMatchObject({
      name: 'ArgumentError',
      code: 'KILN_INPUT_COUNT',
      message: expect.stringMatching(/takes 1 input, 2 example inputs were given/),
    });
  });

  test('parameterLimit reads a fixed list and is undefined whenever it is unsure', () => {
    type T = kiln.Tensor;
    expect(parameterLimit((a: T, b: T) => a.add(b))).toBe(2);
    expect(parameterLimit((a: T) => a)).toBe(1);
    expect(parameterLimit(function named(a: T, b: T, c: T) { return a.add(b).add(c); })).toBe(3);
    expect(parameterLimit(async function* gen(a: T) { yield a; })).toBe(1);
    expect(parameterLimit({ method(a: T, b: T) { return a.add(b); } }.method)).toBe(2);
    expect(parameterLimit(({ a, b }: { a: T; b: T }, [c]: T[]) => a.add(b).add(c))).toBe(2);
    // Unsure or unbounded: rest, defaults, `arguments`, bound functions, comments, nothing declared.
    expect(parameterLimit((a: T, ...rest: T[]) => a.add(rest[0]))).toBeUndefined();
    expect(parameterLimit((...xs: T[]) => xs[0])).toBeUndefined();
    expect(parameterLimit((a: T, b: T = a) => b)).toBeUndefined();
    // eslint-disable-next-line prefer-rest-params -- the case under test
    expect(parameterLimit(function (a: T) { return a.add(arguments[1] as T); })).toBeUndefined();
    expect(parameterLimit(((a: T, b: T) => a.add(b)).bind(null))).toBeUndefined();
    expect(parameterLimit(new Function('a /* , b */', 'return a') as (a: T) => T)).toBeUndefined();
    expect(parameterLimit(() => 1)).toBeUndefined();
  });
});

const nvrtc = addonInfo().nvrtc;
const nvrtcIt = nvrtc.available || process.env.KILN_REQUIRE_NVRTC === '1' ? it : it.skip;

describe('kiln.build: CUDA targets NVRTC does not support', () => {
  const fn = (x: kiln.Tensor) => x.mul(2);

  nvrtcIt('are ArgumentError KILN_BAD_TARGET naming the architectures it does support', async () => {
    if (!nvrtc.available) throw new Error(`KILN_REQUIRE_NVRTC=1 but NVRTC is unavailable: ${nvrtc.reason}`);
    expect(nvrtc.archs).not.toContain('sm_50'); // every NVRTC kiln loads (12 and 13) has dropped Maxwell
    const supported = nvrtc.archs.join(' ');
    for (const target of ['sm_50', 'compute_50']) {
      const built = kiln.build(fn, [{ shape: [4] }], { target, cacheDir: join(tmp, 'unsupported') });
      await expect(built).rejects.toBeInstanceOf(ArgumentError);
      await expect(built).rejects.toMatchObject({ code: 'KILN_BAD_TARGET', message: expect.stringContaining(`cannot build for ${target}; it supports ${supported}`) });
    }
  });
});
