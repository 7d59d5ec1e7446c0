/**
 * Where a tensor's data lives, on a machine without a GPU: 'cuda' tensors keep host data
 * (and say so), the API bridge hands compiled programs what they need (`programInput`,
 * `rawInput`) with typed errors, and dispose semantics. A device-backed tensor's failure
 * paths use a DeviceBuffer whose copies fail (fault injection only). Against the real
 * driver: the GPU block below where jest sees a GPU, and scripts/gpu-check/85-tensors.cjs.
 */
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import * as kiln from '../lib';
import { programInput, rawInput, tensorFromDevice } from '../lib/api/tensors';
import { DeviceTensor } from '../lib/runtime/cuda';
import { DeviceBuffer, deviceMemoryStats, hasSyncCopies } from '../lib/runtime/cuda-driver';
import { addon, addonInfo, guard, type Handle } from '../lib/runtime/native';
import { CudaError, KilnError } from '../lib/util/errors';
import { trace } from '../lib/tensor/trace';

const noGpu = !addonInfo().driver.available;

function thrown(f: () => unknown): KilnError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return e as KilnError;
  }
  throw new Error('expected a throw');
}

describe("'cuda' tensors without a GPU", () => {
  const only = noGpu ? it : it.skip;

  only('keep their data on the host, compute eagerly, and say so', async () => {
    const x = kiln.tensor([1, 2, 3, 4], [2, 2], 'float32', 'cuda');
    expect(x.device).toBe('cuda');
    expect(x.isOnGpu).toBe(false);
    expect(x.toString()).toBe('Tensor(float32[2,2], cuda, host)');
    const y = x.add(1).mul(x);
    expect(y.device).toBe('cuda');
    expect(y.isOnGpu).toBe(false);
    expect(Array.from(await y.toArray())).toEqual([2, 6, 12, 20]);
  });

  only('programInput gives their host data, as for cpu tensors', () => {
    const x = kiln.tensor([1.5, -2], [2], 'float16', 'cuda');
    const got = programInput('f', x, 0);
    expect(got).not.toBeInstanceOf(DeviceTensor);
    expect(got).toEqual({ dtype: 'float16', shape: [2], data: new Uint16Array([0x3e00, 0xc000]) });
  });

  only('the blocking copies report KILN_CUDA_UNAVAILABLE, never crashing', () => {
    expect(hasSyncCopies()).toBe(true); // the addon was built with them
    const raw = addon() as unknown as Record<string, (...a: unknown[]) => unknown>;
    const bogus = {} as Handle; // the driver check comes before any handle is read
    for (const call of [() => raw.memcpyHtoDSync(bogus, 0, new Uint8Array(4)), () => raw.memcpyDtoHSync(new Uint8Array(4), bogus, 0)]) {
      const e = thrown(() => guard(call)); // guard turns the addon's errors into typed ones
      expect(e).toBeInstanceOf(CudaError);
      expect(e.code).toBe('KILN_CUDA_UNAVAILABLE');
    }
  });
});

describe('cpu tensors', () => {
  it('are unchanged: no device copy, toString as before', async () => {
    const x = kiln.tensor([1, 2], [2]);
    expect(x.isOnGpu).toBe(false);
    expect(x.toString()).toBe('Tensor(float32[2], cpu)');
    expect(Array.from(await x.add(1).toArray())).toEqual([2, 3]);
  });

  it('programInput and rawInput give the host data itself (no copy)', () => {
    const x = kiln.tensor([1, 2, 3], [3], 'int32');
    const a = programInput('f', x, 0);
    const b = rawInput('f', x, 0);
    expect(a).not.toBeInstanceOf(DeviceTensor);
    expect(a).toEqual({ dtype: 'int32', shape: [3], data: new Int32Array([1, 2, 3]) });
    expect((a as { data: unknown }).data).toBe((b as { data: unknown }).data);
  });
});

describe('devices in eager ops', () => {
  it("mixing 'cpu' and 'cuda' tensors is KILN_DEVICE_MISMATCH; scalars take the tensor's device", () => {
    const a = kiln.tensor([1, 2], [2], 'float32', 'cuda');
    const b = kiln.tensor([1, 2], [2]);
    const e = thrown(() => a.add(b));
    expect(e.code).toBe('KILN_DEVICE_MISMATCH');
    expect(e.message).toMatch(/^add: .*tensors on cuda and cpu were mixed/);
    expect(a.add(1).device).toBe('cuda');
    expect(kiln.where(a.gt(1), a, 0).device).toBe('cuda');
  });

  it('traced tensors are never on the GPU', () => {
    let seen = '';
    trace(
      (t) => {
        seen = `${t.isOnGpu} ${String(t)}`;
        return t;
      },
      [{ dtype: 'float32', shape: [2], device: 'cuda' }],
    );
    expect(seen).toBe('false Tensor(float32[2], cuda, traced)');
  });
});

describe('programInput errors', () => {
  it.each([
    ['a number', 5, 'KILN_INPUT_TYPE', /f: input 2 must be a kiln Tensor \(kiln.tensor\(data, shape\)\), got number/],
    ['null', null, 'KILN_INPUT_TYPE', /got null/],
    ['an array', [1, 2], 'KILN_INPUT_TYPE', /got an array/],
  ])('refuses %s', (_, x, code, message) => {
    const e = thrown(() => programInput('f', x, 2));
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
  });

  it('refuses a disposed tensor, on either device', () => {
    for (const device of ['cpu', 'cuda'] as const) {
      const x = kiln.tensor([1], [1], 'float32', device);
      x.dispose();
      const e = thrown(() => programInput('f', x, 1));
      expect(e.code).toBe('KILN_DISPOSED');
      expect(e.message).toBe('f: input 1 was disposed');
    }
  });

  it('refuses a traced tensor (a compiled function called inside a trace)', () => {
    let code: string | undefined;
    trace(
      (t) => {
        code = thrown(() => programInput('g', t, 0)).code;
        return t;
      },
      [{ dtype: 'float32', shape: [2] }],
    );
    expect(code).toBe('KILN_NESTED_COMPILE');
  });
});

describe('dispose', () => {
  it('is idempotent; use afterwards throws KILN_DISPOSED; toString says disposed', () => {
    const x = kiln.tensor([1, 2], [2], 'float32', 'cuda');
    x.dispose();
    x.dispose();
    expect(x.isOnGpu).toBe(false);
    expect(x.toString()).toBe('Tensor(float32[2], cuda, disposed)');
    expect(thrown(() => x.add(1)).code).toBe('KILN_DISPOSED');
    expect(thrown(() => x.toArray()).code).toBe('KILN_DISPOSED');
  });

  it('works through `using`', () => {
    let y: kiln.Tensor;
    {
      using x = kiln.tensor([1], [1]);
      y = x;
    }
    expect(thrown(() => y.neg()).code).toBe('KILN_DISPOSED');
  });
});

/**
 * A DeviceBuffer whose copies fail as a lost device would (fault injection: no driver call
 * is made). It counts disposals so that a double free would show.
 */
function failingBuffer(bytes: number): DeviceBuffer & { disposals: number } {
  const fail = () => new CudaError('KILN_CUDA_ERROR', 'cuMemcpyDtoHAsync failed: CUDA_ERROR_ILLEGAL_ADDRESS', 'CUDA_ERROR_ILLEGAL_ADDRESS');
  const fake = {
    bytes,
    device: 0,
    ptr: 0n,
    disposals: 0,
    freedFlag: false,
    get freed() {
      return this.freedFlag;
    },
    dispose() {
      if (!this.freedFlag) this.disposals++;
      this.freedFlag = true;
    },
    read: () => Promise.reject(fail()),
    readSync: () => {
      throw fail();
    },
  };
  Object.setPrototypeOf(fake, DeviceBuffer.prototype);
  return fake as unknown as DeviceBuffer & { disposals: number };
}

describe('a device tensor whose download fails (fault injection)', () => {
  it('rejects toArray and throws from eager ops with the CUDA error, and stays disposable', async () => {
    const buf = failingBuffer(16);
    const x = tensorFromDevice(new DeviceTensor('float32', [2, 2], buf));
    expect(x.device).toBe('cuda');
    expect(x.shape).toEqual([2, 2]);
    expect(x.dtype).toBe('float32');
    expect(x.isOnGpu).toBe(true);
    expect(x.toString()).toBe('Tensor(float32[2,2], cuda)');
    await expect(x.toArray()).rejects.toMatchObject({ code: 'KILN_CUDA_ERROR', cudaError: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
    const e = thrown(() => x.add(1));
    expect(e.code).toBe('KILN_CUDA_ERROR');
    expect(e.message).toMatch(/^add: cuMemcpyDtoHAsync failed/);
    x.dispose();
    x.dispose();
    expect(buf.disposals).toBe(1);
    expect(x.isOnGpu).toBe(false);
    expect(thrown(() => programInput('f', x, 0)).code).toBe('KILN_DISPOSED');
  });

  it('a tensor whose device memory was freed under it is reported as disposed', () => {
    const buf = failingBuffer(4);
    const x = tensorFromDevice(new DeviceTensor('int32', [1], buf));
    buf.dispose(); // e.g. the DeviceTensor was disposed by its former owner
    expect(String(x)).toBe('Tensor(int32[1], cuda, disposed)');
    expect(thrown(() => programInput('f', x, 0)).code).toBe('KILN_DISPOSED');
    expect(thrown(() => rawInput('f', x, 0)).code).toBe('KILN_DISPOSED');
    expect(thrown(() => x.neg()).code).toBe('KILN_DISPOSED');
    x.dispose();
    expect(buf.disposals).toBe(1);
  });
});

describe("'cuda' tensors on a GPU", () => {
  const gpu = noGpu ? it.skip : it;

  gpu('upload once at creation, keep no host copy, round-trip every dtype, free on dispose', async () => {
    for (const dtype of ['float32', 'float16', 'bfloat16', 'int32', 'bool'] as const) {
      const before = deviceMemoryStats().liveAllocations;
      const x = kiln.tensor([1, 0, 3, 0, 5, 6], [2, 3], dtype, 'cuda');
      expect(x.isOnGpu).toBe(true);
      expect(String(x)).toBe(`Tensor(${dtype}[2,3], cuda)`);
      const d = programInput('f', x, 0);
      expect(d).toBeInstanceOf(DeviceTensor);
      expect(programInput('f', x, 0)).toBe(d);
      expect(deviceMemoryStats().liveAllocations).toBe(before + 1);
      const want = dtype === 'bool' ? [1, 0, 1, 0, 1, 1] : [1, 0, 3, 0, 5, 6];
      expect(Array.from(await x.toArray())).toEqual(want);
      expect(Array.from(await x.add(0).to(dtype).toArray())).toEqual(want); // an eager read
      x.dispose();
      expect(deviceMemoryStats().liveAllocations).toBe(before);
    }
  });

  gpu('tensorFromDevice owns the device memory', async () => {
    const d = await DeviceTensor.fromHost({ dtype: 'float32', shape: [3], data: new Float32Array([1, 2, 3]) });
    const x = tensorFromDevice(d);
    expect(programInput('f', x, 0)).toBe(d);
    expect(Array.from(await x.mul(2).toArray())).toEqual([2, 4, 6]);
    x.dispose();
    expect(d.disposed).toBe(true);
  });
});

test('kiln exports the GPU memory counters; without a GPU they are all zero and trimming gives back nothing', () => {
  const stats = kiln.deviceMemoryStats();
  expect(typeof stats.reservedBytes).toBe('number');
  if (addonInfo().driver.available) return;
  for (const v of Object.values(stats)) expect(v).toBe(0);
  expect(kiln.trimDeviceMemory()).toBe(0);
});

/**
 * A fake addon that counts live device blocks, so CudaProgram.run's ownership can be checked
 * without a GPU: copies and launches succeed at once unless `failRun` (a launch that fails as
 * a lost device would). Modules are loaded in an isolated registry with `native` mocked.
 */
function fakeCuda(opts: { failRun?: boolean; slowUploads?: boolean } = {}) {
  const live = new Set<object>();
  const specs: unknown[] = []; // what execCreate was given
  const runs: { ptrs: bigint[]; copyBytes?: bigint[] }[] = [];
  let next = 0x1000;
  const uploads: (() => void)[] = [];
  const raw = {
    memAlloc(bytes: number, _device: number, ptrOut?: BigUint64Array) {
      const h = { bytes };
      live.add(h);
      if (ptrOut) ptrOut[0] = BigInt((next += 256));
      return h;
    },
    memFree(h: object) {
      if (!live.delete(h)) throw new Error('double free');
    },
    memcpyHtoD: () => (opts.slowUploads ? new Promise<void>((r) => uploads.push(r)) : Promise.resolve()),
    memcpyDtoH: () => Promise.resolve(),
    memcpyHtoDSync: () => undefined,
    memcpyDtoHSync: () => undefined,
    memcpyDtoD: () => undefined,
    memStats: () => ({ liveBytes: 0, liveAllocations: live.size, cachedBytes: 0, reservedBytes: 0 }),
    moduleLoad: () => ({}),
    moduleUnload: () => undefined,
    moduleGetFunction: () => ({}),
    execCreate: (_module: unknown, spec: unknown) => (specs.push(spec), {}),
    execRun: (_exec: unknown, ptrs: BigUint64Array, _syms: unknown, _grids: unknown, _graph: unknown, copyBytes?: BigUint64Array) => {
      runs.push({ ptrs: Array.from(ptrs), copyBytes: copyBytes && Array.from(copyBytes) });
      return opts.failRun ? Promise.reject(Object.assign(new Error('cuLaunchKernel failed'), { code: 'KILN_CUDA_ERROR' })) : Promise.resolve();
    },
    execStats: () => ({ copies: 0 }),
    execDispose: () => undefined,
  };
  let cuda!: typeof import('../lib/runtime/cuda');
  jest.isolateModules(() => {
    jest.doMock('../lib/runtime/native', () => ({ ...jest.requireActual('../lib/runtime/native'), addon: () => raw }));
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded in the isolated registry, with native mocked
    cuda = require('../lib/runtime/cuda') as typeof import('../lib/runtime/cuda');
  });
  jest.dontMock('../lib/runtime/native');
  return { cuda, live, specs, runs, releaseUploads: () => uploads.splice(0).forEach((r) => r()) };
}

/**
 * A one-step plan over input 0 (device or host) and input 1 (host): output 0 is a fresh
 * buffer, output 1 the same buffer again and output 2 input 0 itself — both copied for the caller.
 */
async function fakeProgram(cuda: typeof import('../lib/runtime/cuda')) {
  const buf = (id: number, role: 'input' | 'output', source?: number) => ({ id, dtype: 'float32' as const, elems: 4, role, ...(source !== undefined ? { source } : {}), first: 0, last: 0 });
  const plan = {
    version: 1 as const,
    symbols: [],
    buffers: [buf(0, 'input', 0), buf(1, 'input', 1), buf(2, 'output')],
    steps: [{ kernel: 'k', kind: 'elementwise' as const, buffers: [0, 1, 2], grid: [1], block: [32] }],
    outputs: [0, 1].map(() => ({ buffer: 2, dtype: 'float32' as const, shape: [4] })).concat([{ buffer: 0, dtype: 'float32', shape: [4] }]),
  };
  return cuda.CudaProgram.load(new Uint8Array(8), { plan, symbols: [], constants: new Map(), layout: () => ({ offsets: [], bytes: 0 }), graphs: false });
}

const host4 = () => ({ dtype: 'float32' as const, shape: [4], data: new Float32Array(4) });

describe('CudaProgram.run on a fake addon: who frees what', () => {
  it('a launch that fails frees everything the call allocated, the copies made for shared and input outputs too', async () => {
    const { cuda, live } = fakeCuda({ failRun: true });
    const program = await fakeProgram(cuda);
    const x = cuda.DeviceTensor.fromHostSync(host4());
    const before = live.size;
    await expect(program.run([x, host4()])).rejects.toMatchObject({ code: 'KILN_CUDA_ERROR' });
    expect(live.size).toBe(before);
    expect(x.disposed).toBe(false);
    x.dispose();
    program.dispose();
    expect(live.size).toBe(0);
  });

  it('a launch that succeeds gives the caller three buffers of its own and frees the upload', async () => {
    const { cuda, live } = fakeCuda();
    const program = await fakeProgram(cuda);
    const x = cuda.DeviceTensor.fromHostSync(host4());
    const before = live.size;
    const outs = await program.run([x, host4()]);
    expect(new Set(outs.map((t) => t.buffer)).size).toBe(3);
    expect(live.size).toBe(before + 3);
    for (const t of outs) t.dispose();
    x.dispose();
    program.dispose();
    expect(live.size).toBe(0);
  });

  it("the outputs without a fresh buffer of their own are copied by the executor, after the launches, into the caller's blocks", async () => {
    const { cuda, specs, runs } = fakeCuda();
    const program = await fakeProgram(cuda);
    // Output 1 shares output 0's buffer (2), output 2 is input 0: two copies, into pointer
    // slots 3 and 4 after the plan's three buffers.
    expect(specs[0]).toMatchObject({ numBuffers: 5, copies: [{ dst: 3, src: 2 }, { dst: 4, src: 0 }] });
    const x = cuda.DeviceTensor.fromHostSync(host4());
    const outs = await program.run([x, host4()]);
    const { ptrs, copyBytes } = runs[0];
    expect(copyBytes).toEqual([16n, 16n]);
    expect(ptrs[0]).toBe(x.buffer.ptr);
    expect(outs.map((t) => t.buffer.ptr)).toEqual([ptrs[2], ptrs[3], ptrs[4]]);
    for (const t of outs) t.dispose();
    x.dispose();
    program.dispose();
  });
});

describe('disposing an input while a call is under way', () => {
  it('DeviceBuffer.retain defers a dispose to the release (once), and is refused once the block is freed', () => {
    const { cuda, live } = fakeCuda();
    const x = cuda.DeviceTensor.fromHostSync(host4());
    const release = x.buffer.retain();
    x.dispose();
    expect(x.disposed).toBe(true);
    expect(live.size).toBe(1); // still allocated: held
    release();
    expect(live.size).toBe(0);
    release(); // a second release does nothing (no double free)
    expect(() => x.buffer.retain()).toThrow(expect.objectContaining({ code: 'KILN_ARGUMENT' }));
  });

  it('a pin keeps the memory until it is disposed, whatever the tensor does; a disposed tensor cannot be pinned', () => {
    const { cuda, live } = fakeCuda();
    const x = cuda.DeviceTensor.fromHostSync(host4());
    const p = x.pin();
    x.dispose();
    expect([x.disposed, p.disposed, live.size]).toEqual([true, false, 1]);
    p.dispose();
    p.dispose();
    expect([p.disposed, live.size]).toEqual([true, 0]);
    expect(() => x.pin()).toThrow(expect.objectContaining({ code: 'KILN_DISPOSED' }));
    expect(() => cuda.pinInputs([host4(), x])).toThrow(expect.objectContaining({ code: 'KILN_DISPOSED', message: 'input 1 was disposed' }));
  });

  it('CudaProgram.run: a device input disposed while host inputs upload is read, then freed once the launches are queued', async () => {
    const { cuda, live, releaseUploads } = fakeCuda({ slowUploads: true });
    const program = await fakeProgram(cuda);
    const x = cuda.DeviceTensor.fromHostSync(host4());
    const before = live.size;
    const pending = program.run([x, host4()]);
    x.dispose();
    expect(x.disposed).toBe(true);
    expect(live.size).toBe(before + 1); // x held, the upload's block allocated
    releaseUploads();
    const outs = await pending;
    expect(live.size).toBe(before - 1 + 3); // x and the upload freed; three outputs
    for (const t of outs) t.dispose();
    program.dispose();
    expect(live.size).toBe(0);
  });

  it('CudaProgram.run refuses a device input disposed before the call (KILN_DISPOSED), allocating nothing', async () => {
    const { cuda, live } = fakeCuda();
    const program = await fakeProgram(cuda);
    const x = cuda.DeviceTensor.fromHostSync(host4());
    x.dispose();
    const before = live.size;
    await expect(program.run([x, host4()])).rejects.toMatchObject({ code: 'KILN_DISPOSED', message: 'input 0 was disposed' });
    expect(live.size).toBe(before);
    program.dispose();
  });

  it('kiln.compile on the CPU: `const p = f(x); x.dispose(); await p` computes with x (its data was taken at call time)', async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-dispose-'));
    try {
      const f = kiln.compile((a: kiln.Tensor) => a.mul(2), { name: 'dispose_during_call', cacheDir });
      for (let i = 0; i < 2; i++) { // cold (trace and compile), then warm
        const x = kiln.tensor([1, 2, 3], [3]);
        const p = f(x);
        x.dispose();
        expect(Array.from(await (await p).toArray())).toEqual([2, 4, 6]);
      }
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  }, 60000);
});
