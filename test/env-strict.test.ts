/**
 * Environment values are parsed strictly, one parser per kind (lib/util/env.ts): an on/off
 * flag or a bounded integer that is not understood is ArgumentError KILN_BAD_ENV naming the
 * variable, the value and what is accepted, said before any bundle lookup and never when
 * kiln is imported. Also: shipped bundle roots that other users may write are passed over
 * (lib/cache/trust.ts, `untrustedShippedDir`).
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as kiln from '../lib';
import { bundleKey } from '../lib/cache';
import { openCache, resolveFailOnRecompile } from '../lib/cache/mode';
import { untrustedShippedDir } from '../lib/cache/trust';
import { bundleBackend, cudaTuneByDefault, cudaWgmmaAllowed, keyInput, type ProgramSignature } from '../lib/engine/bundle-target';
import { cudaFacts } from '../lib/engine/cuda';
import { checkCpuEnv } from '../lib/runtime/cpu';
import { checkNativeEnv, cudaPollUs, nvrtcJobs } from '../lib/runtime/native';
import { ENV_VARS, envFlag, envInt } from '../lib/util/env';
import { repoRoot, runInChild } from './fixtures/native/run';

const badEnv = (name: string, value: string, accepted: RegExp) =>
  expect.objectContaining({ name: 'ArgumentError', code: 'KILN_BAD_ENV', message: expect.stringMatching(new RegExp(`^${name}=${value} .*${accepted.source}`)) });

/** Runs `fn` (synchronous) with process.env's `vars` set (undefined: unset), restoring them after. */
function withEnv<R>(vars: Record<string, string | undefined>, fn: () => R): R {
  const old = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (v: Record<string, string | undefined>) => {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
    }
  };
  set(vars);
  try {
    return fn();
  } finally {
    set(old);
  }
}

describe('envFlag: on/off variables', () => {
  it('takes 1/true/yes/on and 0/false/no/off in any case; unset or empty is the default', () => {
    for (const v of ['1', 'true', 'YES', 'On', ' on ']) expect(envFlag('KILN_FAIL_ON_RECOMPILE', { KILN_FAIL_ON_RECOMPILE: v })).toBe(true);
    for (const v of ['0', 'False', 'no', 'OFF']) expect(envFlag('KILN_FAIL_ON_RECOMPILE', { KILN_FAIL_ON_RECOMPILE: v }, true)).toBe(false);
    expect(envFlag('KILN_FAIL_ON_RECOMPILE', {})).toBe(false);
    expect(envFlag('KILN_CUDA_TUNE', { KILN_CUDA_TUNE: '' }, true)).toBe(true);
  });

  it('refuses anything else with KILN_BAD_ENV naming the variable, the value and the accepted values', () => {
    for (const v of ['maybe', '2', 'enabled', 'y']) {
      expect(() => envFlag('KILN_FAIL_ON_RECOMPILE', { KILN_FAIL_ON_RECOMPILE: v })).toThrow(badEnv('KILN_FAIL_ON_RECOMPILE', v, /1, true, yes or on, or 0, false, no or off/));
    }
  });
});

describe('envInt: bounded integer variables', () => {
  const range = { min: 1, max: 64, fallback: 2 };
  it('takes decimal digits within the bounds; unset or empty is the default', () => {
    expect(envInt('KILN_NVRTC_JOBS', range, {})).toBe(2);
    expect(envInt('KILN_NVRTC_JOBS', range, { KILN_NVRTC_JOBS: '' })).toBe(2);
    expect(envInt('KILN_NVRTC_JOBS', range, { KILN_NVRTC_JOBS: '1' })).toBe(1);
    expect(envInt('KILN_NVRTC_JOBS', range, { KILN_NVRTC_JOBS: '64' })).toBe(64);
  });

  it('refuses what is not one, or out of bounds, naming the range', () => {
    for (const v of ['abc', '0', '65', '-1', '1.5', '1e1', '8 jobs']) {
      expect(() => envInt('KILN_NVRTC_JOBS', range, { KILN_NVRTC_JOBS: v })).toThrow(badEnv('KILN_NVRTC_JOBS', v, /an integer from 1 to 64/));
    }
  });
});

describe('every variable of the findings', () => {
  it('KILN_FAIL_ON_RECOMPILE: a value that is not on/off is refused, not taken as off', () => {
    expect(resolveFailOnRecompile(undefined, { KILN_FAIL_ON_RECOMPILE: 'on' })).toBe(true);
    expect(resolveFailOnRecompile(undefined, { KILN_FAIL_ON_RECOMPILE: 'off' })).toBe(false);
    expect(() => resolveFailOnRecompile(undefined, { KILN_FAIL_ON_RECOMPILE: 'maybe' })).toThrow(badEnv('KILN_FAIL_ON_RECOMPILE', 'maybe', /on/));
    const dir = mkdtempSync(path.join(tmpdir(), 'kiln-env-'));
    try {
      expect(() => openCache({ cacheDir: dir, env: { KILN_FAIL_ON_RECOMPILE: 'maybe' } })).toThrow(badEnv('KILN_FAIL_ON_RECOMPILE', 'maybe', /on/));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('KILN_CUDA_WGMMA and KILN_CUDA_TUNE: 0 still turns them off, and so do false/no/off; a typo is refused', () => {
    for (const v of ['0', 'false', 'no', 'OFF']) expect([cudaWgmmaAllowed({ KILN_CUDA_WGMMA: v }), cudaTuneByDefault({ KILN_CUDA_TUNE: v })]).toEqual([false, false]);
    expect([cudaWgmmaAllowed({}), cudaTuneByDefault({}), cudaWgmmaAllowed({ KILN_CUDA_WGMMA: '1' })]).toEqual([true, true, true]);
    expect(() => cudaWgmmaAllowed({ KILN_CUDA_WGMMA: 'disable' })).toThrow(badEnv('KILN_CUDA_WGMMA', 'disable', /0, false, no or off/));
    expect(() => cudaTuneByDefault({ KILN_CUDA_TUNE: 'never' })).toThrow(badEnv('KILN_CUDA_TUNE', 'never', /0, false, no or off/));
  });

  it('KILN_CUDA_WGMMA=false changes sm_90a keys as 0 does; a bad value fails the key of every CUDA target', () => {
    const sig: ProgramSignature = { name: 'mm', fnSource: '(x, w) => x.matmul(w)', inputs: [{ dtype: 'float16', shape: [64, 64] }, { dtype: 'float16', shape: [64, 64] }] };
    const key = (target: string) => bundleKey(keyInput(sig, target, 'cuda:kiln-test')).key;
    const zero = withEnv({ KILN_CUDA_WGMMA: '0' }, () => key('sm_90a'));
    expect(withEnv({ KILN_CUDA_WGMMA: 'false' }, () => key('sm_90a'))).toBe(zero);
    expect(withEnv({ KILN_CUDA_WGMMA: 'off' }, () => key('sm_90a'))).toBe(zero);
    expect(withEnv({ KILN_CUDA_WGMMA: undefined }, () => key('sm_90a'))).not.toBe(zero);
    const t = { target: 'sm_90a', kind: 'cubin' as const, arch: 90 };
    expect(withEnv({ KILN_CUDA_WGMMA: 'no' }, () => cudaFacts(t))).toEqual({ arch: 90, archSpecific: true, wgmma: false });
    expect(() => withEnv({ KILN_CUDA_WGMMA: 'maybe' }, () => key('sm_80'))).toThrow(badEnv('KILN_CUDA_WGMMA', 'maybe', /off/));
    expect(withEnv({ KILN_CUDA_WGMMA: 'maybe' }, () => key('cpu-x64+avx2'))).toMatch(/^[0-9a-f]+$/); // not read for CPU bundles
  });

  it('KILN_NVRTC_JOBS (1..64, default 2) and KILN_CUDA_POLL_US (0..10000, default 50), which the addon reads', () => {
    expect([nvrtcJobs({}), nvrtcJobs({ KILN_NVRTC_JOBS: '16' }), cudaPollUs({}), cudaPollUs({ KILN_CUDA_POLL_US: '0' }), cudaPollUs({ KILN_CUDA_POLL_US: '10000' })]).toEqual([2, 16, 50, 0, 10000]);
    for (const v of ['abc', '0', '65']) expect(() => nvrtcJobs({ KILN_NVRTC_JOBS: v })).toThrow(badEnv('KILN_NVRTC_JOBS', v, /from 1 to 64/));
    for (const v of ['x', '-1', '10001', '12us']) expect(() => cudaPollUs({ KILN_CUDA_POLL_US: v })).toThrow(badEnv('KILN_CUDA_POLL_US', v, /from 0 to 10000/));
    expect(() => checkNativeEnv({ KILN_CUDA_POLL_US: 'x' })).toThrow(badEnv('KILN_CUDA_POLL_US', 'x', /10000/));
    expect(() => checkCpuEnv({ KILN_NVRTC_JOBS: 'abc' })).toThrow(badEnv('KILN_NVRTC_JOBS', 'abc', /64/)); // a CPU program loads the addon too
  });

  it('the registry says what each of them accepts', () => {
    const doc = (name: string) => ENV_VARS.find((v) => v.name === name)?.doc ?? '';
    expect(doc('KILN_NVRTC_JOBS')).toMatch(/1 to 64/);
    expect(doc('KILN_CUDA_POLL_US')).toMatch(/0 to 10000/);
    for (const name of ['KILN_FAIL_ON_RECOMPILE', 'KILN_CUDA_TUNE', 'KILN_CUDA_WGMMA']) expect(doc(name)).toMatch(/0\/false\/no\/off/);
  });
});

describe('when a bad value is reported', () => {
  it('for CUDA: when the backend is asked for, before any lookup (an offline target needs no GPU), not as a missing GPU', () => {
    expect(() => withEnv({ KILN_NVRTC_JOBS: 'abc' }, () => bundleBackend('sm_90'))).toThrow(badEnv('KILN_NVRTC_JOBS', 'abc', /64/));
    expect(() => withEnv({ KILN_CUDA_TUNE: 'maybe' }, () => bundleBackend('compute_80'))).toThrow(badEnv('KILN_CUDA_TUNE', 'maybe', /off/));
    expect(() => withEnv({ KILN_CUDA_POLL_US: 'x' }, () => bundleBackend('cuda'))).toThrow(badEnv('KILN_CUDA_POLL_US', 'x', /10000/));
    expect(withEnv({ KILN_CUDA_TUNE: 'off', KILN_NVRTC_JOBS: '4' }, () => bundleBackend('sm_90').target())).toBe('sm_90');
  });

  it('for CPU: on the first call, before any lookup, whichever variable it is', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kiln-env-'));
    try {
      const x = kiln.tensor([1, 2, 3], [3]);
      for (const [name, value] of [['KILN_NVRTC_JOBS', 'abc'], ['KILN_CUDA_POLL_US', 'x']]) {
        const f = kiln.compile((t: kiln.Tensor) => t.mul(3), { device: 'cpu', cacheDir: dir });
        const old = process.env[name];
        process.env[name] = value;
        try {
          const got = await f(x).then(
            () => 'resolved',
            (e: unknown) => e,
          );
          expect([name, got]).toEqual([name, expect.objectContaining({ code: 'KILN_BAD_ENV', message: expect.stringMatching(new RegExp(`^${name}=${value} `)) })]);
        } finally {
          if (old === undefined) delete process.env[name];
          else process.env[name] = old;
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('KILN_FAIL_ON_RECOMPILE: when kiln.compile reads its options, as KILN_CACHE', () => {
    const fn = (t: kiln.Tensor) => t.mul(5);
    expect(() => withEnv({ KILN_FAIL_ON_RECOMPILE: 'maybe' }, () => kiln.compile(fn, { device: 'cpu' }))).toThrow(badEnv('KILN_FAIL_ON_RECOMPILE', 'maybe', /on/));
    expect(withEnv({ KILN_FAIL_ON_RECOMPILE: 'maybe' }, () => typeof kiln.compile(fn, { device: 'cpu', failOnRecompile: false }))).toBe('function'); // the option wins
  });

  it('never when kiln is imported, nor when the addon loads (doctor and device placement probe it)', () => {
    const env = { ...process.env, KILN_NVRTC_JOBS: 'abc', KILN_CUDA_POLL_US: 'x', KILN_FAIL_ON_RECOMPILE: 'maybe', KILN_CUDA_TUNE: 'bogus', KILN_CUDA_WGMMA: 'bogus' };
    expect(runInChild(`return typeof native.compile;`, env, path.join(repoRoot, 'lib', 'index.ts'))).toBe('function');
    expect(runInChild(`native.addon(); return 'loaded';`, env)).toBe('loaded');
    expect(() => checkNativeEnv({ KILN_CUDA_POLL_US: '20 ' })).toThrow(badEnv('KILN_CUDA_POLL_US', '20 ', /10000/)); // the addon would read its default
  });
});

describe('shipped bundle roots that other users may write', () => {
  const posix = typeof process.getuid === 'function';
  const maybe = posix ? it : it.skip;
  let root: string;
  let bundle: string;
  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'kiln-ship-'));
    bundle = path.join(root, 'v1', 'double', 'abcdef');
    mkdirSync(bundle, { recursive: true });
    for (const d of [root, path.join(root, 'v1'), path.join(root, 'v1', 'double'), bundle]) chmodSync(d, 0o755);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  maybe('0755 and 0775 are trusted; a root or bundle dir writable by any user is not, unless sticky', () => {
    expect(untrustedShippedDir(root, bundle)).toBeUndefined();
    chmodSync(root, 0o777);
    expect(untrustedShippedDir(root, bundle)).toMatch(new RegExp(`^${root} is writable by any user without the sticky bit \\(mode 0777\\).*chmod o-w ${root}`));
    chmodSync(root, 0o1777);
    expect(untrustedShippedDir(root, bundle)).toBeUndefined();
    chmodSync(path.join(root, 'v1'), 0o757);
    expect(untrustedShippedDir(root, bundle)).toMatch(/\/v1 is writable .*mode 0757/);
    chmodSync(path.join(root, 'v1'), 0o755);
    chmodSync(bundle, 0o775); // group-writable: umask 002 with a group per user
    expect(untrustedShippedDir(root, bundle)).toBeUndefined();
    chmodSync(bundle, 0o777);
    expect(untrustedShippedDir(root, bundle)).toMatch(/abcdef is writable .*mode 0777/);
    expect(untrustedShippedDir(root, path.join(root, 'v1', 'double', 'missing'))).toBeUndefined(); // a miss, not a trust problem
  });
});
