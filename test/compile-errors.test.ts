/**
 * `kiln.compile`'s options and the errors that need no compile: option validation, the
 * CUDA device on a machine without a GPU, failOnRecompile, force-load without a bundle, and a
 * missing C++ compiler (in a child process, which gets its own compiler lookup).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as kiln from '../lib';
import { compile, counters } from '../lib/api/compile';
import { addonInfo } from '../lib/runtime/native';

const root = path.join(__dirname, '..');
const double = (x: kiln.Tensor) => x.mul(2);
const x = kiln.tensor([1, 2, 3], [3]);
const driver = addonInfo().driver;
const gpu = driver.available && driver.devices.length > 0;

async function failure(p: Promise<unknown>): Promise<kiln.KilnError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(kiln.KilnError);
  return e as kiln.KilnError;
}

describe('kiln.compile options', () => {
  it.each([
    ['fn is not a function', () => compile(5 as never), 'KILN_BAD_ARGUMENT', /fn must be a function, got number/],
    ['options of the wrong type', () => compile(double, 'cpu' as never), 'KILN_BAD_OPTION', /options must be an object, got string/],
    ['an unknown option', () => compile(double, { devices: 'cpu' } as never), 'KILN_BAD_OPTION', /unknown option 'devices'; valid options are 'name', 'device', 'dynamic', 'cache', 'cacheDir', 'failOnRecompile'/],
    ['a bad device', () => compile(double, { device: 'gpu' as never }), 'KILN_BAD_OPTION', /device must be one of 'auto', 'cpu', 'cuda'; got "gpu"/],
    ['a bad cache mode', () => compile(double, { cache: 'sometimes' as never }), 'KILN_BAD_CACHE_MODE', /auto, off, force-load, read-only/],
    ['a bad name', () => compile(double, { name: '../x' }), 'KILN_BAD_OPTION', /name must be 1-64 characters/],
    ['dynamic as an array', () => compile(double, { dynamic: [[0]] as never }), 'KILN_BAD_OPTION', /dynamic must map input indices to arrays of dims/],
    ['a dynamic dim that is not an integer', () => compile(double, { dynamic: { 0: ['x'] } as never }), 'KILN_BAD_OPTION', /input 0 has \["x"\]/],
    ['failOnRecompile not a boolean', () => compile(double, { failOnRecompile: 1 as never }), 'KILN_BAD_OPTION', /failOnRecompile must be true or false/],
  ])('rejects %s with a typed error listing what is valid', (_, make, code, message) => {
    let err: unknown;
    try {
      make();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(kiln.ArgumentError);
    expect(err).toMatchObject({ code, message: expect.stringMatching(message) });
  });

  it('rejects dynamic dims that the first call does not have', async () => {
    const e1 = await failure(compile(double, { dynamic: { 1: [0] } })(x));
    expect(e1).toMatchObject({ code: 'KILN_BAD_OPTION', message: expect.stringMatching(/dynamic names input 1, but the function was called with 1 input/) });
    const e2 = await failure(compile(double, { dynamic: { 0: [1] } })(x));
    expect(e2).toMatchObject({ code: 'KILN_BAD_OPTION', message: expect.stringMatching(/input 0 has rank 1, so it has no dim 1/) });
  });

  (gpu ? it.skip : it)("device: 'cuda' without a GPU says what is missing (KILN_NO_CUDA_DEVICE), pointing at kiln doctor", async () => {
    const before = counters();
    const e = await failure(compile(double, { device: 'cuda', cache: 'off' })(x));
    expect(e).toBeInstanceOf(kiln.CudaError);
    expect(e).toMatchObject({ code: 'KILN_NO_CUDA_DEVICE', message: expect.stringMatching(/^device: 'cuda' needs (the NVIDIA driver|a GPU|kiln's native addon).*Use device: 'cpu' \(or 'auto'\).*kiln doctor/) });
    expect(counters()).toEqual(before); // nothing traced or compiled
  });

  (gpu ? it.skip : it)("KILN_DEVICE=cuda without a GPU is the same CudaError KILN_NO_CUDA_DEVICE as device: 'cuda'", async () => {
    process.env.KILN_DEVICE = 'cuda';
    try {
      const before = counters();
      const e = await failure(compile(double, { cache: 'off' })(x));
      expect(e).toBeInstanceOf(kiln.CudaError);
      expect(e).toMatchObject({ code: 'KILN_NO_CUDA_DEVICE', message: expect.stringMatching(/^KILN_DEVICE=cuda but (no CUDA driver|the CUDA driver reports no GPU).*Unset KILN_DEVICE.*kiln doctor/) });
      expect(counters()).toEqual(before);
    } finally {
      delete process.env.KILN_DEVICE;
    }
  });
});

describe('a compiled function called inside a function being traced', () => {
  it('throws KILN_NESTED_COMPILE into the trace, so the outer call rejects with it and nothing is left unhandled', async () => {
    const inner = compile(double, { cache: 'off' });
    const outer = compile(
      (t: kiln.Tensor) => {
        void inner(t); // not awaited, as a traced function never awaits: the error must not hide in this Promise
        return t.mul(3);
      },
      { name: 'outer', cache: 'off' },
    );
    const unhandled: unknown[] = [];
    const onUnhandled = (r: unknown): void => void unhandled.push(r);
    process.on('unhandledRejection', onUnhandled);
    try {
      const before = counters();
      const e = await failure(outer(x));
      expect(e).toBeInstanceOf(kiln.TraceError);
      expect(e).toMatchObject({ code: 'KILN_NESTED_COMPILE', message: expect.stringMatching(/^double: a compiled function cannot be called inside another function being traced/) });
      expect(counters().compiles).toBe(before.compiles);
      await new Promise((r) => setTimeout(r, 20));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('a tensor kept from a finished trace makes the call reject (KILN_TRACE_CLOSED), not throw', async () => {
    let leaked: kiln.Tensor | undefined;
    const keep = compile(
      (t: kiln.Tensor) => {
        leaked = t;
        return t.add(1);
      },
      { name: 'keep', cache: 'off' },
    );
    await keep(x);
    const inner = compile(double, { cache: 'off' });
    let call: Promise<unknown> | undefined;
    expect(() => (call = inner(leaked!))).not.toThrow();
    await expect(call).rejects.toMatchObject({ code: 'KILN_TRACE_CLOSED' });
  });
});

describe('compiling is refused when it must not happen', () => {
  it('failOnRecompile: the first call throws KILN_RECOMPILE and nothing is traced or compiled', async () => {
    const before = counters();
    const e = await failure(compile(double, { failOnRecompile: true, dynamic: { 0: [0] } })(x));
    expect(e).toBeInstanceOf(kiln.CacheError);
    expect(e).toMatchObject({ code: 'KILN_RECOMPILE', message: expect.stringMatching(/double: failOnRecompile is set, but inputs float32\[\?\] need a trace and a compile/) });
    expect(counters()).toEqual(before);
  });

  it('KILN_FAIL_ON_RECOMPILE=1 does the same', async () => {
    process.env.KILN_FAIL_ON_RECOMPILE = '1';
    try {
      const f = compile(double);
      expect((await failure(f(x))).code).toBe('KILN_RECOMPILE');
    } finally {
      delete process.env.KILN_FAIL_ON_RECOMPILE;
    }
  });

  it("cache: 'force-load' without a bundle is KILN_BUNDLE_MISSING", async () => {
    const e = await failure(compile(double, { cache: 'force-load' })(x));
    expect(e).toMatchObject({ code: 'KILN_BUNDLE_MISSING' });
  });
});

describe('without a C++ compiler', () => {
  const env = { ...process.env, CXX: '/nonexistent/c++' };
  const script = (device: string) => `
    const kiln = require(${JSON.stringify(path.join(root, 'lib', 'tensor', 'tensor.ts'))});
    const { compile } = require(${JSON.stringify(path.join(root, 'lib', 'api', 'compile.ts'))});
    compile((x) => x.mul(2), { device: '${device}' })(kiln.tensor([1], [1])).then(
      () => console.log(JSON.stringify({ ok: true })),
      (e) => console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })));`;
  const run = (device: string) => {
    const r = spawnSync(process.execPath, ['-r', path.join(root, 'test', 'fixtures', 'native', 'ts-register.cjs'), '-e', script(device)], {
      env,
      encoding: 'utf8',
      timeout: 30000,
    });
    if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { name: string; code: string; message: string };
  };

  it("device 'cpu' rejects with CompilerError KILN_NO_CXX saying what to install", () => {
    const e = run('cpu');
    expect(e).toMatchObject({ name: 'CompilerError', code: 'KILN_NO_CXX' });
    expect(e.message).toMatch(/CXX=\/nonexistent\/c\+\+ was not found.*Install g\+\+ or clang\+\+.*kiln doctor/);
  });

  it("device 'auto' picks the CPU (bundles load without a compiler) and fails only to compile, saying why; kiln doctor says so", () => {
    const e = run('auto');
    expect(e).toMatchObject({ name: 'CompilerError', code: 'KILN_NO_CXX' });
    expect(e.message).toMatch(/no bundle matched inputs float32\[1\], and compiling one needs a C\+\+ compiler — .*CXX=\/nonexistent\/c\+\+ was not found.*Install g\+\+ or clang\+\+.*kiln doctor/);
    if (!existsSync(path.join(root, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build:ts` (npm test does)');
    const r = spawnSync(process.execPath, [path.join(root, 'bin', 'kiln.js'), 'doctor'], { env, encoding: 'utf8', timeout: 30000 });
    expect(r.stdout).toMatch(/^c\+\+ compiler\s+not available: CXX=\/nonexistent\/c\+\+ was not found/m);
    if (/^cuda driver\s+not available/m.test(r.stdout)) {
      // The CPU backend still runs bundles built earlier or elsewhere: doctor says that compiling does not work, and exits 0.
      expect(r.stdout).toMatch(/^backend \(auto\)\s+cpu: /m);
      expect(r.stdout).toMatch(/^\s+compile\s+NO: CXX=\/nonexistent\/c\+\+ was not found/m);
      expect(r.status).toBe(0);
    }
  });
});
