/**
 * The engine's cache policy (lib/engine/store.ts) when loading a verified bundle fails, with
 * faults injected where this machine (no GPU needed) cannot produce them: which failures are
 * the bundle's (discarded and rebuilt) and which are the machine's (passed to the caller, the
 * bundle kept for everyone sharing the cache). Loading is replaced by `mockFaults.load` when
 * set; everything else (keys, lookup, verification, discard, the key lock) is kiln's own.
 */
import { existsSync, mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { bundleKey, publishBundle, type PublishFile } from '../lib/cache';
import { cudaCodegen, keyInput } from '../lib/engine/bundle-target';
import { compileCount, getProgram, loadFailureIsBundles, type ProgramRequest } from '../lib/engine/store';
import type { Graph } from '../lib/ir/graph';
import type { CudaCompiledProgram } from '../lib/engine/cuda-load';
import type { CompiledProgram } from '../lib/engine/program';
import { ArgumentError, CacheError, CudaError, FormatError, KilnError } from '../lib/util/errors';

// Fault injection: what loading a bundle throws instead of loading it; what writing a CUDA
// program's bundle files does; and, as this machine has no GPU, the program a CUDA compile
// returns (a stand-in whose dispose() is watched).
const mockFaults: { load?: (dir: string) => unknown; files?: () => PublishFile[]; compiled?: () => CompiledProgram } = {};
jest.mock('../lib/engine/bundle', () => {
  const actual = jest.requireActual<typeof import('../lib/engine/bundle')>('../lib/engine/bundle');
  return {
    ...actual,
    loadBundle: (b: Parameters<typeof actual.loadBundle>[0]) => (mockFaults.load ? Promise.reject(mockFaults.load(b.dir)) : actual.loadBundle(b)),
    cudaProgramFiles: (parts: Parameters<typeof actual.cudaProgramFiles>[0]) => (mockFaults.files ? mockFaults.files() : actual.cudaProgramFiles(parts)),
  };
});
jest.mock('../lib/engine/compile', () => {
  const actual = jest.requireActual<typeof import('../lib/engine/compile')>('../lib/engine/compile');
  return { ...actual, compileGraph: (...a: Parameters<typeof actual.compileGraph>) => (mockFaults.compiled ? Promise.resolve(mockFaults.compiled()) : actual.compileGraph(...a)) };
});

const driverError = (cudaError: string) => new CudaError('KILN_CUDA_ERROR', `cuModuleLoadData failed: ${cudaError}`, cudaError);

describe('loadFailureIsBundles: whose fault a failed load is', () => {
  it.each([
    ['a FormatError (graph.json, the image)', new FormatError('KILN_BAD_PROGRAM', 'graph.json: bad')],
    ['a checksum that changed after verification', new FormatError('KILN_BUNDLE_CHECKSUM', 'kernels.cubin changed')],
    ['a kernel off the parameter ABI', new CudaError('KILN_CUDA_ABI', 'kernel k takes 3')],
    ['CUDA_ERROR_INVALID_IMAGE', driverError('CUDA_ERROR_INVALID_IMAGE')],
    ['CUDA_ERROR_INVALID_PTX', driverError('CUDA_ERROR_INVALID_PTX')],
    ['CUDA_ERROR_NO_BINARY_FOR_GPU', driverError('CUDA_ERROR_NO_BINARY_FOR_GPU')],
    ['CUDA_ERROR_NOT_FOUND', driverError('CUDA_ERROR_NOT_FOUND')],
    ['CUDA_ERROR_200 (no cuGetErrorName)', driverError('CUDA_ERROR_200')],
  ])('CUDA, the bundle: %s', (_, e) => {
    expect(loadFailureIsBundles(e, 'cuda')).toBe(true);
  });

  it.each([
    ['no GPU', new CudaError('KILN_NO_CUDA_DEVICE', "device: 'cuda' needs a GPU")],
    ['no driver', new CudaError('KILN_CUDA_UNAVAILABLE', 'CUDA is unavailable')],
    ['out of memory (allocator)', new CudaError('KILN_CUDA_OOM', 'out of memory', 'CUDA_ERROR_OUT_OF_MEMORY')],
    ['out of memory (cuModuleLoadData)', driverError('CUDA_ERROR_OUT_OF_MEMORY')],
    ['a context dead after a kernel fault', driverError('CUDA_ERROR_ILLEGAL_ADDRESS')],
    ['a launch failure', driverError('CUDA_ERROR_LAUNCH_FAILED')],
    ['a driver older than the PTX', driverError('CUDA_ERROR_UNSUPPORTED_PTX_VERSION')],
    ['a busy or exclusive GPU', driverError('CUDA_ERROR_DEVICE_UNAVAILABLE')],
    ['a driver error without a result name', new CudaError('KILN_CUDA_ERROR', 'failed')],
    ['another GPU than the target was read from', new CudaError('KILN_CUDA_ARCH_MISMATCH', 'built for sm_90, but the GPU is sm_80')],
    ['a KilnError of another kind', new KilnError('KILN_NATIVE', 'addon trouble')],
    ['a plain Error', new Error('EMFILE: too many open files')],
    ['not an Error', 'thrown string'],
  ])('CUDA, the machine: %s', (_, e) => {
    expect(loadFailureIsBundles(e, 'cuda')).toBe(false);
  });

  it('CUDA, a shipped bundle: PTX this driver cannot JIT is the bundle (passed over); in the cache it is not', () => {
    for (const name of ['CUDA_ERROR_UNSUPPORTED_PTX_VERSION', 'CUDA_ERROR_222', 'CUDA_ERROR_JIT_COMPILER_NOT_FOUND', 'CUDA_ERROR_JIT_COMPILATION_DISABLED']) {
      expect(loadFailureIsBundles(driverError(name), 'cuda', 'shipped')).toBe(true);
      expect(loadFailureIsBundles(driverError(name), 'cuda', 'cache')).toBe(false); // built here: a rebuild would be refused alike
    }
    expect(loadFailureIsBundles(driverError('CUDA_ERROR_OUT_OF_MEMORY'), 'cuda', 'shipped')).toBe(false);
  });

  it('CPU: any failure is the bundle (dlopen refused kernels.so)', () => {
    expect(loadFailureIsBundles(new KilnError('KILN_DLOPEN', 'not an ELF file'), 'cpu')).toBe(true);
    expect(loadFailureIsBundles(new FormatError('KILN_BAD_PROGRAM', 'bad'), 'cpu')).toBe(true);
  });

  it("never the caller's own error: a bad option or KILN_* variable (KILN_BAD_ENV) leaves the bundle alone", () => {
    const bad = new ArgumentError('KILN_BAD_ENV', 'KILN_CPU_THREADS=abc must be a positive integer');
    expect(loadFailureIsBundles(bad, 'cpu')).toBe(false);
    expect(loadFailureIsBundles(bad, 'cuda', 'shipped')).toBe(false);
  });
});

describe('getProgram when a verified CUDA bundle fails to load', () => {
  let tmp: string;
  let n = 0;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'kiln-store-faults-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  afterEach(() => {
    delete mockFaults.load;
  });

  /** A verified sm_90 bundle for a request of its own (its contents are never loaded: `mockFaults.load` fails first); `also`: the same bundle in these dirs too. */
  function cudaBundle(also: string[] = []): { req: ProgramRequest; cacheDir: string; dir: string; copies: string[] } {
    const req: ProgramRequest = { name: `faulty-${n}`, fnSource: `(x) => x.add(${n++})`, inputs: [], device: 'cuda', target: 'sm_90' };
    const codegen = cudaCodegen();
    const { key, keyFields } = bundleKey(keyInput(req, 'sm_90', codegen));
    const files = [{ name: 'graph.json', data: '{}' }, { name: 'kernels.cubin', data: Buffer.from('cubin') }];
    const [cacheDir, ...copies] = [join(tmp, `cache-${n}`), ...also].map((root) => {
      const r = publishBundle({ cacheDir: root, bundlePath: [], readOnly: false, maxBytes: 0 }, key, req.name, files, { keyFields, guards: { sources: [], target: 'sm_90', toolchain: { id: codegen } } });
      if (r.status !== 'published') throw new Error(`publish: ${r.status}`);
      return r.dir;
    });
    return { req, cacheDir: join(tmp, `cache-${n}`), dir: cacheDir, copies };
  }

  const traced = new Error('traced');
  const noTrace = () => {
    throw traced;
  };

  it.each([
    ['out of GPU memory in cuModuleLoadData', () => driverError('CUDA_ERROR_OUT_OF_MEMORY')],
    ['a dead context (illegal address)', () => driverError('CUDA_ERROR_ILLEGAL_ADDRESS')],
    ['an older driver (unsupported PTX version)', () => driverError('CUDA_ERROR_UNSUPPORTED_PTX_VERSION')],
    ['no GPU', () => new CudaError('KILN_NO_CUDA_DEVICE', "device: 'cuda' needs a GPU")],
  ])('the machine (%s): the error reaches the caller unchanged, in auto and force-load; the bundle stays; nothing traced or compiled', async (_, fault) => {
    const { req, cacheDir, dir } = cudaBundle();
    const compiles = compileCount();
    for (const mode of ['auto', 'force-load'] as const) {
      const e = fault();
      mockFaults.load = () => e;
      await expect(getProgram(req, { mode, cacheDir, bundlePath: [] }, noTrace)).rejects.toBe(e);
    }
    expect(existsSync(join(dir, 'manifest.json'))).toBe(true);
    expect(compileCount()).toBe(compiles);
  });

  it.each([
    ['CUDA_ERROR_INVALID_IMAGE', () => driverError('CUDA_ERROR_INVALID_IMAGE')],
    ['CUDA_ERROR_NO_BINARY_FOR_GPU', () => driverError('CUDA_ERROR_NO_BINARY_FOR_GPU')],
    ['KILN_CUDA_ABI', () => new CudaError('KILN_CUDA_ABI', 'kernel k takes 3 8-byte parameters')],
    ['KILN_BAD_PROGRAM', () => new FormatError('KILN_BAD_PROGRAM', 'graph.json: bad plan')],
  ])('the bundle (%s): force-load refuses it; auto discards it and compiles (traces) instead', async (_, fault) => {
    const { req, cacheDir, dir } = cudaBundle();
    mockFaults.load = fault;
    const forced = getProgram(req, { mode: 'force-load', cacheDir, bundlePath: [] }, noTrace);
    await expect(forced).rejects.toBeInstanceOf(CacheError);
    await expect(forced).rejects.toMatchObject({ code: 'KILN_BUNDLE_INVALID', message: expect.stringMatching(/verified but could not be loaded/) });
    expect(existsSync(dir)).toBe(true);
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      await expect(getProgram(req, { mode: 'auto', cacheDir, bundlePath: [] }, noTrace)).rejects.toBe(traced);
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/verified but could not be loaded .*it was removed/), { code: 'KILN_BUNDLE_LOAD' });
    } finally {
      warn.mockRestore();
    }
    expect(existsSync(dir)).toBe(false);
  });

  it('a shipped bundle that fails by its own fault is kept (read-only) and passed over for the rest of the process: the cache copy is loaded instead', async () => {
    const shippedRoot = join(tmp, `shipped-${n}`);
    const { req, cacheDir, dir, copies } = cudaBundle([shippedRoot]);
    const [shippedDir] = copies;
    const tried: string[] = [];
    const inCache = new CudaError('KILN_NO_CUDA_DEVICE', "device: 'cuda' needs a GPU");
    mockFaults.load = (at) => (tried.push(at), at === shippedDir ? driverError('CUDA_ERROR_INVALID_IMAGE') : inCache);
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const store = { mode: 'auto', cacheDir, bundlePath: [shippedRoot] } as const;
      // The machine's error from loading the cache copy shows that it was the one tried next, not a compile.
      await expect(getProgram(req, store, noTrace)).rejects.toBe(inCache);
      expect(tried).toEqual([shippedDir, dir]);
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/passes over it to the next bundle path or the cache/), { code: 'KILN_BUNDLE_LOAD' });
      await expect(getProgram(req, store, noTrace)).rejects.toBe(inCache);
      expect(tried).toEqual([shippedDir, dir, dir]);
    } finally {
      warn.mockRestore();
    }
    expect(existsSync(join(shippedDir, 'manifest.json'))).toBe(true);
    expect(existsSync(join(dir, 'manifest.json'))).toBe(true);
  });
});

describe('a CUDA compile whose program is not handed out frees it on the GPU', () => {
  let tmp: string;
  let n = 0;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'kiln-store-dispose-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  afterEach(() => {
    delete mockFaults.files;
    delete mockFaults.compiled;
    delete process.env.KILN_TEST_FAULT;
  });

  // What compileAndPublish reads of a traced graph: its source files and captured tensors.
  const graph = { files: [], captured: [] } as unknown as Graph;
  const request = (): ProgramRequest => ({ name: `dispose-${n}`, fnSource: `(x) => x.mul(${n++})`, inputs: [], device: 'cuda', target: 'sm_90' });

  /** A compiled CUDA program for `target` as compileGraph returns it, holding nothing but a watched dispose(). */
  function compiled(target: 'sm_90' | 'sm_80'): { program: CudaCompiledProgram; dispose: jest.Mock } {
    const dispose = jest.fn();
    const arch = Number(target.slice(3));
    const program = {
      device: 'cuda',
      graph,
      plan: { version: 1, symbols: [], buffers: [], steps: [], outputs: [] },
      kernels: 1,
      source: '',
      times: { lowerMs: 0, renderMs: 0, compileMs: 1, loadMs: 0 },
      execute: () => Promise.resolve([]),
      cuda: { program: { dispose }, target: { target, kind: 'cubin', arch }, tuning: {}, resources: {}, image: Buffer.from('cubin'), run: () => Promise.resolve([]) },
    } as unknown as CudaCompiledProgram;
    return { program, dispose };
  }

  it("compiled for another target than the key's (KILN_INTERNAL): disposed", async () => {
    const { program, dispose } = compiled('sm_80');
    mockFaults.compiled = () => program;
    await expect(getProgram(request(), { mode: 'auto', cacheDir: join(tmp, 'a'), bundlePath: [] }, () => graph)).rejects.toMatchObject({ code: 'KILN_INTERNAL' });
    expect(dispose).toHaveBeenCalledTimes(1);
  });

  it('its bundle files cannot be made: disposed, and the error is the one thrown', async () => {
    const { program, dispose } = compiled('sm_90');
    mockFaults.compiled = () => program;
    const fault = new FormatError('KILN_BAD_PROGRAM', 'injected: the CUDA section cannot be written');
    mockFaults.files = () => {
      throw fault;
    };
    await expect(getProgram(request(), { mode: 'auto', cacheDir: join(tmp, 'b'), bundlePath: [] }, () => graph)).rejects.toBe(fault);
    expect(dispose).toHaveBeenCalledTimes(1);
  });

  it('publishing fails for cache trouble (ENOSPC): as on the CPU, a warning, and the program is returned without a bundle, not disposed', async () => {
    const { program, dispose } = compiled('sm_90');
    mockFaults.compiled = () => program;
    mockFaults.files = () => [{ name: 'graph.json', data: '{}' }];
    process.env.KILN_TEST_FAULT = 'write:enospc';
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const got = await getProgram(request(), { mode: 'auto', cacheDir: join(tmp, 'c'), bundlePath: [] }, () => graph);
      expect(got).toMatchObject({ origin: 'compiled', program });
      expect(got.bundleDir).toBeUndefined();
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/could not publish bundle/), { code: 'KILN_CACHE_WRITE' });
    } finally {
      warn.mockRestore();
    }
    expect(dispose).not.toHaveBeenCalled();
  });
});
