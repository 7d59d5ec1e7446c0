/**
 * CUDA bundles without a GPU, with the real NVRTC: `kiln.build` for sm_80 and sm_90 writes
 * a bundle whose kernels.cubin is for that architecture, whose graph.json holds the CUDA
 * plan, tuning table and ptxas resources, and whose manifest keys the target but records
 * NVRTC only as information; building again compiles nothing; `kiln cache verify` and `show`
 * explain it; a flipped bit, a wrong image or another device's compute capability is caught
 * before anything is loaded; loading or compiling for `device: 'cuda'` here is a typed
 * KILN_NO_CUDA_DEVICE that leaves the bundle alone; `kiln build --target sm_80,sm_90` runs in a
 * child process; the CUDA warm path loads no cold-path module. The NVRTC tests are skipped
 * without NVRTC unless KILN_REQUIRE_NVRTC=1 (GPU runs: scripts/gpu-check/90-bundle.cjs).
 */
import { spawnSync } from 'child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import * as kiln from '../lib';
import { counters } from '../lib/api/compile';
import { bundleKey, checkTarget, listBundles, parseManifest, publishBundle, verifyBundle, type Manifest, type VerifiedBundle } from '../lib/cache';
import { cacheCommand } from '../lib/cli/cache';
import { bundleBackend, cudaCodegen, getProgram, loadBundle, readProgramDocument } from '../lib/engine';
import { CODE_DIRS, CODE_FILES, fallbackTargets, imageFitsTarget } from '../lib/engine/bundle-target';
import { checkCudaDocument, type CudaProgramDocument } from '../lib/engine/cuda-bundle';
import { deviceCubinTarget } from '../lib/runtime/cuda-arch';
import { readCubinArch } from '../lib/runtime/cuda-driver';
import { addonInfo } from '../lib/runtime/native';
import { sha256Hex } from '../lib/util/hash';
import { envWithoutKiln, runNode } from './helpers/node-child';

const REPO = resolve(__dirname, '..');
const REGISTER = join(REPO, 'test', 'fixtures', 'cache', 'register.cjs');
const FIXTURE = join(REPO, 'test', 'fixtures', 'models');

const info = addonInfo();
const required = process.env.KILN_REQUIRE_NVRTC === '1';
const gpu = info.driver.available && info.driver.devices.length > 0;
if (!info.nvrtc.available && !required) console.warn(`CUDA bundle tests skipped: ${info.nvrtc.reason} (set KILN_REQUIRE_NVRTC=1 to fail instead)`);
const describeNvrtc = info.nvrtc.available || required ? describe : describe.skip;
const noGpuIt = gpu ? it.skip : it;

type Spec = { fn: (...xs: kiln.Tensor[]) => kiln.Tensor; inputs: { shape: number[] }[]; options: { name: string; dynamic: Record<number, number[]> } };

let tmp: string;
let proj: string;
let spec: Spec;
let cache: string;
const built: Record<string, kiln.BuildResult> = {};

const manifestOf = (dir: string): Manifest => parseManifest(readFileSync(join(dir, 'manifest.json'), 'utf8'));
const docOf = (dir: string): CudaProgramDocument => JSON.parse(readFileSync(join(dir, 'graph.json'), 'utf8')) as CudaProgramDocument;

function verified(dir: string, host?: { kind: 'cuda'; computeCapability: number }): VerifiedBundle {
  const v = verifyBundle(dir, { checkSources: false, ...(host ? { host } : {}) });
  if (!v.ok) throw new Error(`${dir}: ${v.reason}: ${v.detail}`);
  return v;
}

/** Runs `kiln cache ...` in process; resolves to its exit status and what it printed. */
async function cacheCli(args: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const log = jest.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
  const err = jest.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
  try {
    const code = await cacheCommand(args);
    return { code, out: lines.join('\n') };
  } finally {
    log.mockRestore();
    err.mockRestore();
  }
}

/** A copy of one bundle in a cache of its own, for tests that break it. */
function copyOf(bundleDir: string): { cacheDir: string; dir: string } {
  const cacheDir = mkdtempSync(join(tmp, 'copy-'));
  const rel = bundleDir.slice(cache.length);
  cpSync(bundleDir, join(cacheDir, rel), { recursive: true });
  return { cacheDir, dir: join(cacheDir, rel) };
}

describe('bundleBackend: CUDA targets', () => {
  it('an offline target is its own host (PTX: that capability), with the CUDA code-generation identity', () => {
    const sm80 = bundleBackend('sm_80');
    expect([sm80.device, sm80.target(), sm80.host(), sm80.codegen()]).toEqual(['cuda', 'sm_80', { kind: 'cuda', computeCapability: 80 }, cudaCodegen()]);
    expect(cudaCodegen()).toMatch(/^cuda:kiln-\d+\.\d+\.\d+[^:]*$/);
    expect(bundleBackend('compute_90').host()).toEqual({ kind: 'cuda', computeCapability: 90 });
    expect(bundleBackend('sm_90a').target()).toBe('sm_90a');
    expect(() => bundleBackend('gfx90a')).toThrow(expect.objectContaining({ code: 'KILN_BAD_TARGET' }));
  });

  noGpuIt("device 'cuda' is probed only when asked: then KILN_NO_CUDA_DEVICE", () => {
    const local = bundleBackend('cuda');
    expect(local.device).toBe('cuda');
    expect(() => local.target()).toThrow(expect.objectContaining({ name: 'CudaError', code: 'KILN_NO_CUDA_DEVICE' }));
  });
});

test("fallbackTargets: what else an sm_XY GPU runs, best first (arch-specific cubin, then PTX newest first)", () => {
  expect(fallbackTargets('sm_90')).toEqual(['sm_90a', 'compute_90a', 'compute_90', 'compute_89', 'compute_88', 'compute_87', 'compute_86', 'compute_80', 'compute_75', 'compute_72', 'compute_70', 'compute_62', 'compute_61', 'compute_60', 'compute_53', 'compute_52', 'compute_50']);
  expect(fallbackTargets('sm_80')).toEqual(['compute_80', 'compute_75', 'compute_72', 'compute_70', 'compute_62', 'compute_61', 'compute_60', 'compute_53', 'compute_52', 'compute_50']);
  expect(fallbackTargets('sm_120').slice(0, 6)).toEqual(['sm_120a', 'compute_120a', 'compute_120', 'compute_110', 'compute_103', 'compute_101']);
  // A GPU newer than every architecture kiln knows: its own PTX first, then the known ones.
  expect(fallbackTargets('sm_130').slice(0, 5)).toEqual(['sm_130a', 'compute_130a', 'compute_130', 'compute_121', 'compute_120']);
  // Hopper's own target is sm_90a: an sm_90 bundle (kiln build --target sm_90) comes first after it.
  expect(fallbackTargets('sm_90a').slice(0, 4)).toEqual(['sm_90', 'compute_90a', 'compute_90', 'compute_89']);
  for (const t of ['compute_90', 'compute_90a', 'cpu-x64+avx2', 'gfx90a']) expect(fallbackTargets(t)).toEqual([]);
  // Every fallback passes the target guard for a GPU of that capability, and none is newer than it.
  for (const cc of [75, 80, 86, 89, 90, 100, 120]) {
    for (const t of [deviceCubinTarget(cc), ...fallbackTargets(`sm_${cc}`), ...fallbackTargets(deviceCubinTarget(cc))]) {
      expect(checkTarget(t, { kind: 'cuda', computeCapability: cc })).toEqual({ ok: true });
    }
  }
});

test('imageFitsTarget: PTX of an older architecture fits an sm_XY bundle, arch-specific PTX (compute_XYa) never does', () => {
  expect(imageFitsTarget('sm_100', { target: 'compute_90', kind: 'ptx', arch: 90 })).toBe(true);
  expect(imageFitsTarget('sm_100', { target: 'compute_90a', kind: 'ptx', arch: 90 })).toBe(false);
  expect(imageFitsTarget('sm_90', { target: 'compute_90a', kind: 'ptx', arch: 90 })).toBe(false);
  expect(imageFitsTarget('compute_90a', { target: 'compute_90a', kind: 'ptx', arch: 90 })).toBe(true);
  expect(imageFitsTarget('sm_100', { target: 'compute_120', kind: 'ptx', arch: 120 })).toBe(false);
  // Hopper's own key is sm_90a: an NVRTC without sm_90 would publish older PTX under it.
  expect(imageFitsTarget('sm_90a', { target: 'compute_89', kind: 'ptx', arch: 89 })).toBe(true);
  expect(imageFitsTarget('sm_90a', { target: 'compute_90a', kind: 'ptx', arch: 90 })).toBe(false);
});

test("a development build's code identity hashes the CUDA runtime and bundle loader too (kernel ABI, grids, temp placement)", () => {
  expect(CODE_FILES).toEqual(expect.arrayContaining(['runtime/cuda', 'engine/cuda-load', 'engine/cuda-bundle', 'runtime/cuda-arch']));
  for (const f of CODE_FILES) expect(existsSync(join(REPO, 'lib', `${f}.ts`))).toBe(true);
  for (const d of CODE_DIRS) expect(existsSync(join(REPO, 'lib', d))).toBe(true);
});

test("the CUDA warm path's modules import no pass, renderer, tuner or NVRTC driver", () => {
  const script = `
    const e = require(${JSON.stringify(join(REPO, 'lib', 'engine', 'store.ts'))});
    require(${JSON.stringify(join(REPO, 'lib', 'engine', 'cuda-bundle.ts'))});
    require(${JSON.stringify(join(REPO, 'lib', 'engine', 'run.ts'))});
    console.log(JSON.stringify(Object.keys(require.cache)))`;
  const r = spawnSync(process.execPath, ['-r', REGISTER, '-e', script], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  const loaded = (JSON.parse(r.stdout) as string[]).map((f) => /[\\/]lib[\\/]((?:codegen|passes|engine)[\\/][^\\/]+)\.ts$/.exec(f)?.[1]).filter(Boolean);
  expect(loaded.sort()).toEqual(['engine/bundle', 'engine/bundle-target', 'engine/cuda-bundle', 'engine/cuda-load', 'engine/run', 'engine/store', 'passes/memory']);
});

describeNvrtc('CUDA bundles built without a GPU', () => {
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'kiln-cuda-bundle-'));
    proj = join(tmp, 'app');
    cpSync(FIXTURE, proj, { recursive: true });
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'kiln-cuda-bundle-app', private: true }));
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the app's CommonJS model
    spec = require(join(proj, 'mlp.js')) as Spec;
    cache = join(tmp, 'cache');
    for (const target of ['sm_80', 'sm_90', 'compute_90']) {
      built[target] = await kiln.build(spec.fn, spec.inputs, { target, cacheDir: cache, ...spec.options, sourceRoot: proj });
    }
  }, 180_000);

  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it.each([80, 90])('sm_%i: a cubin for that architecture, the CUDA plan, tuning and resources; NVRTC recorded, not keyed', (sm) => {
    const r = built[`sm_${sm}`];
    expect(r).toMatchObject({ source: 'compiled', target: `sm_${sm}`, namespace: 'fixture-mlp' });
    expect(readCubinArch(readFileSync(join(r.bundleDir, 'kernels.cubin'))).sm).toBe(sm);
    const m = manifestOf(r.bundleDir);
    expect(m.artifacts.map((a) => a.name).sort()).toEqual(['graph.json', 'kernels.cu', 'kernels.cubin']);
    expect(m.keyFields).toMatchObject({ target: `sm_${sm}`, toolchain: expect.stringMatching(/^cuda:kiln-[^:]+$/), inputs: ['float32[?,32]', 'float32[32,64]', 'float32[64]', 'float32[64,16]', 'float32[16]'] });
    expect(JSON.stringify(m.keyFields)).not.toMatch(/nvrtc/i);
    expect(m.guards).toMatchObject({ target: `sm_${sm}`, toolchain: { id: m.keyFields.toolchain, version: expect.stringMatching(/^NVRTC \d+\.\d+$/), path: expect.stringMatching(/libnvrtc/) } });
    expect(m.guards.sources.map((s) => s.path)).toEqual(['mlp.js']);
    expect(m.info).toMatchObject({ function: 'fixture-mlp', device: 'cuda' });

    const doc = docOf(r.bundleDir);
    expect(doc).toMatchObject({ format: 'kiln-program', version: 1, device: 'cuda', cuda: { version: 1, target: `sm_${sm}`, image: 'kernels.cubin' } });
    const kernels = doc.plan.steps.map((s) => s.kernel);
    expect(doc.kernels).toBe(m.info!.kernels);
    expect(Object.keys(doc.cuda.tuning).sort()).toEqual([...new Set(kernels)].sort());
    for (const s of doc.plan.steps) {
      expect(s.grid!.length).toBeGreaterThan(0);
      expect(s.block![0]).toBeGreaterThan(0);
      expect(doc.cuda.resources[s.kernel]).toMatchObject({ entry: true, spillStores: 0, spillLoads: 0, threads: s.block![0], config: doc.cuda.tuning[s.kernel] });
      expect(doc.cuda.resources[s.kernel].registers).toBeGreaterThan(0);
    }
    expect(readFileSync(join(r.bundleDir, 'kernels.cu'), 'utf8')).toContain(`extern "C" __global__ void __launch_bounds__(`);
  });

  it('compute_90 is PTX in kernels.ptx', () => {
    const r = built.compute_90;
    expect(manifestOf(r.bundleDir).artifacts.map((a) => a.name).sort()).toEqual(['graph.json', 'kernels.cu', 'kernels.ptx']);
    expect(readFileSync(join(r.bundleDir, 'kernels.ptx'), 'utf8')).toContain('.target sm_90');
    expect(docOf(r.bundleDir).cuda).toMatchObject({ target: 'compute_90', image: 'kernels.ptx' });
  });

  it('each target has its own key; the fields differ in the target only', () => {
    const [a, b, c] = ['sm_80', 'sm_90', 'compute_90'].map((t) => built[t]);
    expect(new Set([a.key, b.key, c.key]).size).toBe(3);
    const fa = manifestOf(a.bundleDir).keyFields;
    const fb = manifestOf(b.bundleDir).keyFields;
    expect({ ...fa, target: 'x' }).toEqual({ ...fb, target: 'x' });
  });

  it('building again reuses the bundle: nothing traced or compiled', async () => {
    const before = counters();
    const again = await kiln.build(spec.fn, spec.inputs, { target: 'sm_90', cacheDir: cache, ...spec.options, sourceRoot: proj });
    expect(again).toMatchObject({ source: 'bundle', key: built.sm_90.key, bundleDir: built.sm_90.bundleDir, compileMs: 0 });
    expect(counters()).toEqual(before);
    expect(listBundles({ cacheDir: cache, bundlePath: [] })).toHaveLength(3);
  });

  it('kiln cache verify passes and show explains the target, kernels and NVRTC', async () => {
    const v = await cacheCli(['verify', '--cache-dir', cache, '--no-sources']);
    expect(v.code).toBe(0);
    expect(v.out).toMatch(/3 ok, 0 failed/);
    const s = await cacheCli(['show', built.sm_90.key.slice(0, 12), '--cache-dir', cache]);
    expect(s.code).toBe(0);
    expect(s.out).toMatch(/target\s+sm_90: CUDA cubin, runs on compute capability 9\.0 exactly/);
    expect(s.out).toMatch(/toolchain\s+cuda:kiln-/);
    expect(s.out).toMatch(/kernels \(ptxas's report for sm_90/);
    for (const k of Object.keys(docOf(built.sm_90.bundleDir).cuda.resources)) expect(s.out).toMatch(new RegExp(`\\n  ${k}\\s+\\d+\\s+\\d+\\s+[\\d.]+ (B|KiB)\\s+0 B / 0 B`));
    expect(s.out).toMatch(/built with\s+NVRTC \d+\.\d+ at \S*libnvrtc\S*\s+\(information: a sm_90 image runs whatever NVRTC built it\)/);
    const json = JSON.parse((await cacheCli(['show', built.sm_80.key.slice(0, 12), '--cache-dir', cache, '--json'])).out) as { kernels: Record<string, { registers: number }> };
    expect(Object.keys(json.kernels).length).toBe(manifestOf(built.sm_80.bundleDir).info!.kernels);
    const ptx = await cacheCli(['show', built.compute_90.key.slice(0, 12), '--cache-dir', cache]);
    expect(ptx.out).toMatch(/compute_90: CUDA PTX, runs on compute capability 9\.0 or newer/);
  });

  it("the target guard: a cubin needs exactly its compute capability, PTX that one or newer", () => {
    expect(verified(built.sm_90.bundleDir, { kind: 'cuda', computeCapability: 90 }).ok).toBe(true);
    const wrong = verifyBundle(built.sm_80.bundleDir, { checkSources: false, host: { kind: 'cuda', computeCapability: 90 } });
    expect(wrong).toMatchObject({ ok: false, reason: 'compute-capability', detail: 'bundle sm_80 expects compute 8.0, this device is compute 9.0; rebuild for sm_90' });
    const cpu = verifyBundle(built.sm_90.bundleDir, { checkSources: false, host: { kind: 'cpu', arch: 'x64', features: [] } });
    expect(cpu).toMatchObject({ ok: false, reason: 'target-mismatch' });
    expect(verified(built.compute_90.bundleDir, { kind: 'cuda', computeCapability: 100 }).ok).toBe(true);
    expect(verifyBundle(built.compute_90.bundleDir, { checkSources: false, host: { kind: 'cuda', computeCapability: 86 } })).toMatchObject({ ok: false, reason: 'compute-capability' });
  });

  it('a bit flipped in kernels.cubin fails verification before anything is loaded', async () => {
    const { cacheDir, dir } = copyOf(built.sm_90.bundleDir);
    const cubin = readFileSync(join(dir, 'kernels.cubin'));
    cubin[cubin.length >> 1] ^= 0x10;
    writeFileSync(join(dir, 'kernels.cubin'), cubin);
    expect(verifyBundle(dir, { checkSources: false, host: { kind: 'cuda', computeCapability: 90 } })).toMatchObject({ ok: false, reason: 'artifact-checksum' });
    const v = await cacheCli(['verify', '--cache-dir', cacheDir, '--no-sources']);
    expect(v.code).toBe(1);
    expect(v.out).toMatch(/FAIL\s+fixture-mlp\/\w+ \(cache\)\s+artifact-checksum: kernels\.cubin/);
  });

  it("an image that is not the manifest's target is refused before the driver sees it (KILN_BAD_PROGRAM)", () => {
    // Fault injection: sm_80's cubin in the sm_90 bundle, with a manifest rewritten to match it.
    const { dir } = copyOf(built.sm_90.bundleDir);
    const other = readFileSync(join(built.sm_80.bundleDir, 'kernels.cubin'));
    writeFileSync(join(dir, 'kernels.cubin'), other);
    const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    const entry = m.artifacts.find((a) => a.name === 'kernels.cubin')!;
    Object.assign(entry, { size: other.length, sha256: sha256Hex(other) });
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
    const v = verified(dir, { kind: 'cuda', computeCapability: 90 });
    expect(() => checkCudaDocument(v, readProgramDocument(v) as CudaProgramDocument)).toThrow(
      expect.objectContaining({ code: 'KILN_BAD_PROGRAM', message: expect.stringMatching(/kernels\.cubin is built for sm_80, but the bundle's target is sm_90/) }),
    );
  });

  it('a GPU newer than NVRTC: PTX of an older architecture may sit in its sm_XY bundle, never PTX newer than the GPU', () => {
    expect(imageFitsTarget('sm_90', { target: 'sm_90', kind: 'cubin', arch: 90 })).toBe(true);
    expect(imageFitsTarget('sm_100', { target: 'compute_90', kind: 'ptx', arch: 90 })).toBe(true);
    expect(imageFitsTarget('sm_80', { target: 'compute_90', kind: 'ptx', arch: 90 })).toBe(false);
    expect(imageFitsTarget('sm_100', { target: 'sm_90', kind: 'cubin', arch: 90 })).toBe(false);
    // sm_90a is a Hopper GPU's own key: PTX that the GPU JIT-compiles may sit under it too.
    expect(imageFitsTarget('sm_90a', { target: 'compute_90', kind: 'ptx', arch: 90 })).toBe(true);
    // The compute_90 bundle's files published under an sm_100 key (what a compile on a GPU
    // newer than its NVRTC publishes), and under sm_80 (never published: refused on load).
    const files = ['graph.json', 'kernels.ptx', 'kernels.cu'].map((name) => ({ name, data: readFileSync(join(built.compute_90.bundleDir, name)) }));
    const publishAs = (target: string): VerifiedBundle => {
      const { key, keyFields } = bundleKey({ namespace: 'ptx-jit', source: `jit ${target}`, inputs: [], target, toolchain: cudaCodegen() });
      const dir = join(tmp, `ptx-${target}`);
      const r = publishBundle({ cacheDir: dir, bundlePath: [], readOnly: false, maxBytes: 0 }, key, 'ptx-jit', files, { keyFields, guards: { sources: [], target, toolchain: { id: cudaCodegen() } } });
      if (r.status !== 'published') throw new Error(`publish: ${r.status}`);
      return verified(r.dir);
    };
    const jit = publishAs('sm_100');
    expect(checkCudaDocument(jit, readProgramDocument(jit) as CudaProgramDocument).target).toMatchObject({ target: 'compute_90', kind: 'ptx' });
    const older = publishAs('sm_80');
    expect(() => checkCudaDocument(older, readProgramDocument(older) as CudaProgramDocument)).toThrow(/cuda\.target compute_90 does not run as the manifest's target sm_80/);
  });

  noGpuIt('loading a CUDA bundle on this machine is KILN_NO_CUDA_DEVICE, naming what is missing', async () => {
    await expect(loadBundle(verified(built.sm_90.bundleDir))).rejects.toMatchObject({ name: 'CudaError', code: 'KILN_NO_CUDA_DEVICE', message: expect.stringMatching(/^device: 'cuda' needs /) });
  });

  noGpuIt("kiln.compile(fn, { device: 'cuda' }) here: KILN_NO_CUDA_DEVICE in auto and force-load, nothing traced or compiled, the bundles kept", async () => {
    const before = counters();
    const x = kiln.tensor(new Float32Array(4 * 32), [4, 32]);
    const ws = spec.inputs.slice(1).map((s) => kiln.tensor(new Float32Array(s.shape.reduce((a, d) => a * d, 1)), s.shape));
    for (const mode of ['auto', 'force-load'] as const) {
      const f = kiln.compile(spec.fn, { ...spec.options, device: 'cuda', cache: mode, cacheDir: cache });
      await expect(f(x, ...ws)).rejects.toMatchObject({ name: 'CudaError', code: 'KILN_NO_CUDA_DEVICE' });
    }
    // The engine's own entry, as kiln.compile calls it.
    const req = { name: 'fixture-mlp', fnSource: spec.fn.toString(), inputs: [], device: 'cuda' as const };
    await expect(getProgram(req, { mode: 'auto', cacheDir: cache }, () => { throw new Error('traced'); })).rejects.toMatchObject({ code: 'KILN_NO_CUDA_DEVICE' });
    expect(counters()).toEqual(before);
    expect(listBundles({ cacheDir: cache, bundlePath: [] })).toHaveLength(3);
  });

  it('kiln build --target sm_80,sm_90 in a child process builds both (the same bundles as kiln.build), then finds them', async () => {
    const out = join(tmp, 'cli-out');
    const script = `require(${JSON.stringify(join(REPO, 'lib', 'cli', 'build.ts'))}).buildCommand(process.argv.slice(1)).then((c) => { process.exitCode = c; })`;
    const run = (dir = out, extraEnv: NodeJS.ProcessEnv = {}) =>
      runNode(['-e', script, join(proj, 'mlp.js'), '--target', 'sm_80,sm_90', '--out', dir, '--json'], { env: envWithoutKiln(extraEnv), cwd: tmp });
    const first = await run();
    expect(first.code).toBe(0);
    expect(first.stderr).toMatch(/\[1\/2\] fixture-mlp → sm_80: built in [\d.]+ s → /);
    expect(first.stderr).toMatch(/\[2\/2\] fixture-mlp → sm_90: built in [\d.]+ s → /);
    const jobs = JSON.parse(first.stdout) as { target: string; status: string; result: kiln.BuildResult }[];
    expect(jobs.map((j) => [j.target, j.status, j.result.target, j.result.key])).toEqual([
      ['sm_80', 'built', 'sm_80', built.sm_80.key],
      ['sm_90', 'built', 'sm_90', built.sm_90.key],
    ]);
    for (const j of jobs) expect(readCubinArch(readFileSync(join(j.result.bundleDir, 'kernels.cubin'))).sm).toBe(Number(j.target.slice(3)));
    const second = await run();
    expect(second.code).toBe(0);
    expect((JSON.parse(second.stdout) as { status: string }[]).map((j) => j.status)).toEqual(['exists', 'exists']);
    // NVRTC that cannot be loaded (a bad KILN_NVRTC_PATH): each build fails, saying what it needed.
    const broken = await run(join(tmp, 'cli-out-broken'), { KILN_NVRTC_PATH: join(tmp, 'no-such-libnvrtc.so') });
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/\[1\/2\] fixture-mlp → sm_80: failed: fixture-mlp: building its bundle needs NVRTC — .*no-such-libnvrtc\.so.*\[KILN_NVRTC_BAD_PATH\]/);
  }, 120_000);
});
