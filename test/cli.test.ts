/**
 * The `kiln` command as a user runs it: `kiln doctor` on this machine (no GPU driver here;
 * NVRTC from the pip wheel when installed), help texts, and a missing C++ compiler.
 * Runs the compiled CLI in dist/ (`npm test` builds it first).
 */
import { spawnSync } from 'child_process';
import { existsSync } from 'fs';
import { join } from 'path';
import { autoBackend } from '../lib/api/compile';
import { doctorAdvice, doctorExitCode, doctorReport, doctorVerdict, type DoctorFacts, type DoctorReport } from '../lib/cli/doctor';
import { chooseBackend } from '../lib/runtime/select';

const root = join(__dirname, '..');
const bin = join(root, 'bin', 'kiln.js');

function kiln(args: string[], env: NodeJS.ProcessEnv = {}) {
  if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build:ts` (npm test does)');
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const report = doctorReport();
const requireNvrtc = process.env.KILN_REQUIRE_NVRTC === '1';

describe('kiln doctor', () => {
  test('reports the addon, the missing driver and the CPU backend choice', () => {
    const r = kiln(['doctor']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^addon\s+(build|prebuild) /m);
    expect(r.out).toMatch(/^c\+\+ compiler\s+\/.*\(x86_64|aarch64/m);
    expect(r.out).toMatch(/^cache dir\s+/m);
    expect(r.out).toMatch(/^ {2}target\s+cpu-(x64|arm64)(\+[a-z0-9_]+)* \(the ISA that CPU bundles compiled here use/m);
    if (!report.driver.available) {
      expect(r.out).toMatch(/^cuda driver\s+not available: libcuda\.so\.1 not found/m);
      expect(r.out).toMatch(/^backend \(auto\)\s+cpu: no CUDA driver .* the CPU backend will be used/m);
    }
  });

  test('refuses unknown options and arguments with its usage (exit 2)', () => {
    for (const extra of ['--bogus', 'extra']) {
      const r = kiln(['doctor', extra]);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(extra === '--bogus' ? /unknown option --bogus/ : /unexpected argument 'extra'/);
      expect(r.err).toContain('kiln doctor [--json]');
    }
  });

  test('names the NVRTC it found', () => {
    if (!report.nvrtc.available) {
      if (requireNvrtc) throw new Error(`NVRTC required but not found: ${report.nvrtc.reason}`);
      return;
    }
    const r = kiln(['doctor']);
    expect(r.out).toContain(`at ${report.nvrtc.path} (found by ${report.nvrtc.foundBy})`);
    expect(r.out).toMatch(/^ {2}archs\s+.*sm_90/m);
    const json = JSON.parse(kiln(['doctor', '--json']).out);
    expect(json.nvrtc.path).toBe(report.nvrtc.path);
    expect(json.backend.backend).toBe(report.backend.backend);
  });

  test('without a C++ compiler it says bundles still run and compiling does not, and exits 0', () => {
    const r = kiln(['doctor'], { CXX: '/nonexistent/c++' });
    expect(r.out).toMatch(/^c\+\+ compiler\s+not available: CXX=\/nonexistent\/c\+\+ was not found/m);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ {2}run bundles\s+yes: /m);
    if (!report.driver.available) {
      expect(r.out).toMatch(/^backend \(auto\)\s+cpu: /m);
      expect(r.out).toMatch(/^ {2}compile\s+NO: CXX=\/nonexistent\/c\+\+ was not found.*only bundles built earlier or elsewhere can run/m);
      expect(r.err).toMatch(/can run bundles here .* cannot compile new programs.*install a C\+\+ compiler/s);
      const json = JSON.parse(kiln(['doctor', '--json'], { CXX: '/nonexistent/c++' }).out);
      expect(json.backend.backend).toBe('cpu');
      expect(json.load.ok).toBe(true);
      expect(json.compile.ok).toBe(false);
    }
  });

  test('with a compiler it can compile too, and says nothing on stderr', () => {
    if (!report.cxx.available) return;
    const r = kiln(['doctor']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ {2}compile\s+yes: with \//m);
    expect(r.err).toBe('');
  });

  test('when nothing can run (KILN_DEVICE=cuda without a GPU) it exits 1 and says what to do', () => {
    if (report.driver.available) return;
    const r = kiln(['doctor'], { KILN_DEVICE: 'cuda', CXX: '/nonexistent/c++' });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^backend \(auto\)\s+NONE: KILN_DEVICE=cuda but no CUDA driver/m);
    expect(r.out).not.toMatch(/run bundles/);
    expect(r.err).toMatch(/cannot run programs here.*install the NVIDIA driver and NVRTC/s);
  });

  test('--help says what the exit status means', () => {
    const r = kiln(['doctor', '--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/run bundles/);
    expect(r.out).toMatch(/Exit status 0 when programs can run here, also when only bundles can/);
  });
});

describe('kiln doctor: the verdict (pure, no GPU needed)', () => {
  const h100 = { index: 0, name: 'NVIDIA H100', computeCapability: [9, 0], totalMemory: 80 * 2 ** 30, smCount: 132 };
  const driver = { available: true, version: 13000, devices: [h100] } as unknown as DoctorFacts['driver'];
  const noNvrtc = { available: false, reason: 'libnvrtc.so not found', tried: [] } as unknown as DoctorFacts['nvrtc'];
  const withNvrtc = { available: true, path: '/x/libnvrtc.so.13', version: [13, 0], archs: ['sm_90'], foundBy: 'ld' } as unknown as DoctorFacts['nvrtc'];
  const cxx = { available: true, path: '/usr/bin/c++' } as unknown as DoctorFacts['cxx'];
  const noCxx = { available: false, reason: 'no c++' } as unknown as DoctorFacts['cxx'];
  const addon = { source: 'build', path: '/x/kiln.node' } as DoctorReport['addon'];

  test('KILN_DEVICE=cuda on a GPU without NVRTC: CUDA bundles run, compile NO (no NVRTC), exit 0, and stderr says to install NVRTC', () => {
    const v = doctorVerdict({ addonError: undefined, driver, nvrtc: noNvrtc, cxx: noCxx }, { KILN_DEVICE: 'cuda' });
    expect(v.backend).toMatchObject({ backend: 'cuda', reason: expect.stringMatching(/^KILN_DEVICE=cuda: NVIDIA H100 runs CUDA bundles, but NVRTC was not found/) });
    expect(v.load).toMatchObject({ ok: true, reason: expect.stringMatching(/^CUDA bundles/) });
    expect(v.compile).toEqual({ ok: false, reason: 'no NVRTC (libnvrtc.so not found)' });
    expect(doctorExitCode(v)).toBe(0);
    expect(doctorAdvice({ addon, ...v })).toMatch(/can run bundles here .*KILN_NVRTC_UNAVAILABLE.*install NVRTC/);
    // kiln.compile resolves device 'auto' the same way: CUDA, not KILN_NO_BACKEND.
    expect(autoBackend({ driver, nvrtc: noNvrtc }, { KILN_DEVICE: 'cuda' }).backend).toBe('cuda');
  });

  test('the other cases are as before', () => {
    const auto = doctorVerdict({ addonError: undefined, driver, nvrtc: noNvrtc, cxx }, {});
    expect([auto.backend.backend, auto.compile.ok, doctorExitCode(auto)]).toEqual(['cpu', true, 0]);
    const gpu = doctorVerdict({ addonError: undefined, driver, nvrtc: withNvrtc, cxx: noCxx }, {});
    expect([gpu.backend.backend, gpu.compile, doctorAdvice({ addon, ...gpu })]).toEqual(['cuda', { ok: true, reason: 'with NVRTC /x/libnvrtc.so.13' }, undefined]);
    const cpuOnly = doctorVerdict({ addonError: undefined, driver, nvrtc: noNvrtc, cxx: noCxx }, {});
    expect([cpuOnly.backend.backend, cpuOnly.compile.ok, doctorExitCode(cpuOnly)]).toEqual(['cpu', false, 0]);
    expect(doctorAdvice({ addon, ...cpuOnly })).toMatch(/KILN_NO_CXX.*install a C\+\+ compiler/);
    const noDriver = { available: false, reason: 'libcuda.so.1 not found' } as DoctorFacts['driver'];
    const nothing = doctorVerdict({ addonError: undefined, driver: noDriver, nvrtc: noNvrtc, cxx }, { KILN_DEVICE: 'cuda' });
    expect([nothing.backend.backend, nothing.load.ok, doctorExitCode(nothing)]).toEqual([null, false, 1]);
    expect(doctorAdvice({ addon, ...nothing })).toMatch(/cannot run programs here/);
    const noAddon = doctorVerdict({ addonError: 'dlopen failed', driver: noDriver, nvrtc: noNvrtc, cxx }, {});
    expect([noAddon.backend, doctorExitCode(noAddon)]).toEqual([{ backend: null, reason: 'the kiln addon did not load: dlopen failed' }, 1]);
  });
});

describe('backend choice', () => {
  const noDriver = { available: false as const, reason: 'libcuda.so.1 not found' };
  const gpu = { available: true as const, devices: [{ name: 'NVIDIA H100' }] };
  const nvrtc = { available: true as const, path: '/x/libnvrtc.so.13' };
  const cxx = { available: true as const, path: '/usr/bin/c++' };
  const none = { available: false as const, reason: 'missing' };

  test.each([
    ['gpu + nvrtc', { driver: gpu, nvrtc, cxx }, {}, 'cuda'],
    ['gpu without nvrtc falls back to cpu', { driver: gpu, nvrtc: none, cxx }, {}, 'cpu'],
    ['no driver', { driver: noDriver, nvrtc, cxx }, {}, 'cpu'],
    ['nothing', { driver: noDriver, nvrtc: none, cxx: none }, {}, null],
    ['KILN_DEVICE=cpu on a gpu machine', { driver: gpu, nvrtc, cxx }, { KILN_DEVICE: 'cpu' }, 'cpu'],
    ['KILN_DEVICE=cuda without a driver', { driver: noDriver, nvrtc, cxx }, { KILN_DEVICE: 'cuda' }, null],
  ])('%s', (_name, facts, env, want) => {
    const choice = chooseBackend(facts, env);
    expect(choice.backend).toBe(want);
    expect(choice.reason.length).toBeGreaterThan(5);
  });

  test('a bad KILN_DEVICE is a typed error', () => {
    expect(() => chooseBackend({ driver: noDriver, nvrtc, cxx }, { KILN_DEVICE: 'tpu' })).toThrow(
      expect.objectContaining({ code: 'KILN_BAD_DEVICE' }),
    );
  });
});

describe('kiln --help', () => {
  test('lists commands and every environment variable', () => {
    const r = kiln(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/Commands:\n {2}doctor/);
    for (const v of ['KILN_CACHE_DIR', 'KILN_NVRTC_PATH', 'KILN_DEVICE', 'CXX']) expect(r.out).toContain(v);
  });

  test('each command has its own help; an unknown command is an error', () => {
    expect(kiln(['doctor', '--help']).out).toMatch(/Usage: kiln doctor/);
    const bad = kiln(['frobnicate']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/unknown command 'frobnicate'/);
  });
});
