/**
 * The native addon on a machine without a GPU: it loads (also in worker threads and from
 * prebuilds/ alone), says why CUDA is unavailable, reports every GPU primitive as a typed
 * CudaError, and runs CPU kernels from a real g++-built shared object.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  CudaModule,
  DeviceBuffer,
  deviceMemoryStats,
  packKernelArgs,
  readCubinArch,
  synchronize,
  trimDeviceMemory,
} from '../lib/runtime/cuda-driver';
import { CudaProgram } from '../lib/runtime/cuda';
import { addon, addonInfo, cpuLoad, type Handle } from '../lib/runtime/native';
import { ArgumentError, CudaError, FormatError, KilnError } from '../lib/util/errors';
import { repoRoot, runInChild, tsRegister } from './fixtures/native/run';

const info = addonInfo();
const noGpu = !info.driver.available;

describe('addon', () => {
  it('loads and reports where from', () => {
    expect(['build', 'prebuild']).toContain(info.addon.source);
    expect(fs.existsSync(info.addon.path)).toBe(true);
  });

  (noGpu ? it : it.skip)('says why CUDA is unavailable', () => {
    expect(info.driver.available).toBe(false);
    if (info.driver.available) return;
    expect(info.driver.reason).toMatch(/libcuda\.so\.1 not found \(dlopen: .+\): no NVIDIA driver on this machine/);
  });

  (noGpu ? it : it.skip)('reports every GPU primitive as CudaError KILN_CUDA_UNAVAILABLE', async () => {
    const unavailable = { code: 'KILN_CUDA_UNAVAILABLE', message: expect.stringMatching(/libcuda\.so\.1/) };
    expect(() => new DeviceBuffer(1024)).toThrow(CudaError);
    expect(() => new DeviceBuffer(1024)).toThrow(expect.objectContaining(unavailable));
    expect(() => new CudaModule(Buffer.from('.version 8.0'))).toThrow(expect.objectContaining(unavailable));
    await expect(synchronize()).rejects.toBeInstanceOf(CudaError);
    await expect(synchronize()).rejects.toMatchObject(unavailable);
    expect(trimDeviceMemory()).toBe(0); // no GPU: nothing to give back
    expect(trimDeviceMemory(3)).toBe(0);
    const stats = deviceMemoryStats();
    expect(stats).toMatchObject({ liveBytes: 0, liveAllocations: 0, cachedBytes: 0, reservedBytes: 0, jsLiveBuffers: 0 });
    for (const v of Object.values(stats)) expect(v).toBe(0);
  });

  it('trimDeviceMemory refuses an ordinal that is not a non-negative integer (KILN_ARGUMENT), GPU or not', () => {
    for (const bad of [-1, 1.5, Number.NaN]) {
      expect(() => trimDeviceMemory(bad)).toThrow(expect.objectContaining({ name: 'ArgumentError', code: 'KILN_ARGUMENT' }));
    }
    const gpus = addonInfo().driver;
    if (gpus.available && gpus.devices.length > 0) {
      expect(() => trimDeviceMemory(gpus.devices.length)).toThrow(expect.objectContaining({ code: 'KILN_ARGUMENT', message: expect.stringMatching(/does not exist/) }));
    }
  });

  (noGpu ? it : it.skip)('reports the executor and copy entry points as KILN_CUDA_UNAVAILABLE, never crashing', async () => {
    const raw = addon();
    const bogus = {} as Handle; // the driver check comes before any handle is read
    const calls: [string, () => unknown][] = [
      ['memcpyDtoD', () => raw.memcpyDtoD(bogus, 0, bogus, 0, 4)],
      ['memset', () => raw.memset(bogus, 0, 0, 4)],
      ['execCreate', () => raw.execCreate(bogus, { numBuffers: 0, numSymbols: 0, kernels: [], steps: [] })],
      ['execRun', () => raw.execRun(bogus, new BigUint64Array(0), new BigInt64Array(0), new Uint32Array(0), true)],
      ['execStats', () => raw.execStats(bogus)],
      ['execDispose', () => raw.execDispose(bogus)],
    ];
    for (const [name, call] of calls) {
      let thrown: unknown;
      try {
        await call();
      } catch (e) {
        thrown = e;
      }
      expect({ name, code: (thrown as { code?: string } | undefined)?.code }).toEqual({ name, code: 'KILN_CUDA_UNAVAILABLE' });
    }
    const plan = { version: 1 as const, symbols: [], buffers: [], steps: [], outputs: [] };
    const load = CudaProgram.load(Buffer.from('.version 8.0'), { plan, symbols: [], constants: new Map(), layout: () => ({ offsets: [], bytes: 0 }) });
    await expect(load).rejects.toBeInstanceOf(CudaError);
    await expect(load).rejects.toMatchObject({ code: 'KILN_CUDA_UNAVAILABLE' });
  });

  it('packs kernel arguments at their natural alignment', () => {
    const bytes = packKernelArgs([{ f32: 2 }, { i64: 7n }, { i32: -1 }, { f64: 0.5 }]);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    expect(bytes.byteLength).toBe(32);
    expect(view.getFloat32(0, true)).toBe(2);
    expect(view.getBigInt64(8, true)).toBe(7n); // 4 bytes of padding before it
    expect(view.getInt32(16, true)).toBe(-1);
    expect(view.getFloat64(24, true)).toBe(0.5);
  });

  it('readCubinArch refuses what is not a cubin', () => {
    expect(() => readCubinArch(Buffer.alloc(64))).toThrow(FormatError);
  });

  it('loads in worker threads, each with its own addon instance', async () => {
    const code = `
      require(${JSON.stringify(tsRegister)});
      const { parentPort } = require('node:worker_threads');
      const native = require(${JSON.stringify(path.join(repoRoot, 'lib/runtime/native.ts'))});
      const i = native.addonInfo();
      const done = (kind) => parentPort.postMessage({ source: i.addon.source, driver: i.driver.available, nvrtc: i.nvrtc.available, kind });
      if (!i.nvrtc.available) done(null);
      else native.nvrtcCompile({ source: '__global__ void k() {}', name: 'k.cu', target: 'sm_80' }).then((r) => done(r.kind), (e) => done(e.message));`;
    const runWorker = () =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const w = new Worker(code, { eval: true });
        w.once('message', (m: Record<string, unknown>) => {
          resolve(m);
          void w.terminate();
        });
        w.once('error', reject);
      });
    const results = await Promise.all([runWorker(), runWorker()]);
    for (const r of results) {
      expect(r).toEqual({
        source: info.addon.source,
        driver: info.driver.available,
        nvrtc: info.nvrtc.available,
        kind: info.nvrtc.available ? 'cubin' : null,
      });
    }
  });
});

describe('CPU kernel loader', () => {
  let dir: string;
  let so: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-native-'));
    so = path.join(dir, 'kernels.so');
    const src = path.join(__dirname, 'fixtures', 'native', 'kernels.cc');
    execFileSync(process.env.CXX || 'g++', ['-O2', '-shared', '-fPIC', '-o', so, src]);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('calls kiln_run synchronously with typed arrays and BigInt64Array ints', () => {
    const lib = cpuLoad(so);
    const a = new Float32Array([1, 2, 3, 4]);
    const b = new Float32Array([10, 20, 30, 40]);
    const out = new Float32Array(4);
    lib.call('kiln_run', [a, b, out], new BigInt64Array([3n, 2n])); // only 3 of 4 elements
    expect(Array.from(out)).toEqual([12, 24, 36, 0]);
  });

  it('calls asynchronously with ArrayBuffers, subarrays and number[] ints', async () => {
    const lib = cpuLoad(so);
    const a = new Float32Array([0, 1, 2, 3, 4, 5]).subarray(2); // byteOffset must be honoured
    const b = new Float32Array([1, 1, 1, 1]).buffer;
    const out = new Float32Array(4);
    await lib.callAsync('kiln_run', [a, b, out], [4, 3]);
    expect(Array.from(out)).toEqual([7, 10, 13, 16]);
    const sum = new BigInt64Array(1);
    const ints = [5, 2 ** 40, -3, 7, 11, 13];
    await lib.callAsync('kiln_sum_ints', [sum], ints);
    expect(sum[0]).toBe(BigInt(2 ** 40 - 3 + 7 + 11 + 13));
  });

  it('names a missing symbol and a missing library (KILN_DLOPEN)', () => {
    const lib = cpuLoad(so);
    expect(() => lib.call('no_such_kernel', [], [])).toThrow(KilnError);
    expect(() => lib.call('no_such_kernel', [], [])).toThrow(/symbol 'no_such_kernel' not found in .*kernels\.so/);
    const missing = path.join(dir, 'missing.so');
    expect(() => cpuLoad(missing)).toThrow(expect.objectContaining({ code: 'KILN_DLOPEN' }));
    expect(() => cpuLoad(missing)).toThrow(/missing\.so: cannot open shared object file/);
  });

  it('rejects bad arguments with ArgumentError', async () => {
    const lib = cpuLoad(so);
    expect(() => lib.call('kiln_run', [{} as ArrayBuffer], [])).toThrow(ArgumentError);
    expect(() => lib.call('kiln_run', [], [1.5])).toThrow(/ints\[0\] must be an integer/);
    await expect(lib.callAsync('kiln_run', ['x' as unknown as ArrayBuffer], [])).rejects.toBeInstanceOf(ArgumentError);
  });
});

describe('prebuilds', () => {
  const prebuilt = path.join(repoRoot, 'prebuilds', `${process.platform}-${process.arch}`);
  const have = fs.existsSync(prebuilt);
  const required = process.env.KILN_REQUIRE_NVRTC === '1';
  const title = have || required ? 'load from prebuilds/ alone' : 'load from prebuilds/ alone (skipped: no prebuilds/, run `npm run prebuilds`)';

  (have || required ? it : it.skip)(title, () => {
    expect(fs.existsSync(prebuilt)).toBe(true);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-prebuild-'));
    try {
      fs.copyFileSync(path.join(repoRoot, 'package.json'), path.join(tmp, 'package.json'));
      fs.cpSync(path.join(repoRoot, 'prebuilds'), path.join(tmp, 'prebuilds'), { recursive: true });
      fs.cpSync(path.join(repoRoot, 'node_modules', 'node-gyp-build'), path.join(tmp, 'node_modules', 'node-gyp-build'), {
        recursive: true,
      });
      for (const f of ['runtime/native.ts', 'util/errors.ts', 'util/env.ts']) {
        fs.mkdirSync(path.dirname(path.join(tmp, 'lib', f)), { recursive: true });
        fs.copyFileSync(path.join(repoRoot, 'lib', f), path.join(tmp, 'lib', f));
      }
      const out = runInChild('return native.addonInfo().addon;', process.env, path.join(tmp, 'lib', 'runtime', 'native.ts'));
      expect(out).toEqual({ source: 'prebuild', path: expect.stringContaining(path.join(tmp, 'prebuilds') + path.sep) });
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
