/**
 * Compile-target selection (cubin for the exact SM, PTX fallback for a too-new device, a
 * typed error for a too-old one), grid dims, and ptxas logs: saved real logs, and real NVRTC
 * compiles of kernels written to kiln's parameter ABI for sm_80 and sm_90 without spills.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parsePtxasLog, selectCudaTarget, spillingFunctions } from '../lib/runtime/cuda-arch';
import { evalGridDim, parseGridDim } from '../lib/runtime/cuda';
import { addonInfo, nvrtcCompile } from '../lib/runtime/native';
import { CudaError } from '../lib/util/errors';

const NVRTC13 = ['sm_75', 'sm_80', 'sm_86', 'sm_87', 'sm_88', 'sm_89', 'sm_90', 'sm_100', 'sm_103', 'sm_110', 'sm_120', 'sm_121'];
const fixture = (name: string): string => fs.readFileSync(path.join(__dirname, 'fixtures', 'ptxas', name), 'utf8');

describe('selectCudaTarget', () => {
  it('picks the exact sm_XY cubin when NVRTC supports the device', () => {
    // Hopper: the arch-specific cubin, for warpgroup MMA (an sm_90a cubin runs on 9.0 only).
    expect(selectCudaTarget({ computeCapability: [9, 0], nvrtcArchs: NVRTC13 })).toEqual({ target: 'sm_90a', kind: 'cubin', arch: 90 });
    expect(selectCudaTarget({ computeCapability: [8, 6], nvrtcArchs: NVRTC13 })).toEqual({ target: 'sm_86', kind: 'cubin', arch: 86 });
    expect(selectCudaTarget({ computeCapability: [12, 1], nvrtcArchs: NVRTC13 }).target).toBe('sm_121');
  });

  it('falls back to PTX for the highest compute_XY below a too-new device, warning once', () => {
    const emit = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const facts = { computeCapability: [9, 5], nvrtcArchs: ['sm_75', 'sm_80', 'sm_90'], deviceName: 'Future GPU', nvrtcVersion: [12, 4] };
      const t = selectCudaTarget(facts);
      expect(t).toMatchObject({ target: 'compute_90', kind: 'ptx', arch: 90 });
      expect(t.warning).toMatch(/Future GPU \(compute capability 9\.5\) is newer than NVRTC 12\.4 supports \(newest: sm_90\)/);
      selectCudaTarget(facts);
      expect(selectCudaTarget(facts, false).kind).toBe('ptx');
      expect(emit).toHaveBeenCalledTimes(1);
      expect(emit).toHaveBeenCalledWith(expect.stringContaining('compute_90'), { code: 'KILN_PTX_JIT' });
    } finally {
      emit.mockRestore();
    }
  });

  it('picks PTX below an unsupported minor version too (sm_88 missing → compute_87)', () => {
    expect(selectCudaTarget({ computeCapability: [8, 8], nvrtcArchs: ['sm_80', 'sm_87', 'sm_90'] }, false)).toMatchObject({ target: 'compute_87', kind: 'ptx' });
  });

  it('refuses a device older than NVRTC supports with KILN_CUDA_UNSUPPORTED_DEVICE', () => {
    const old = { computeCapability: [7, 0], nvrtcArchs: NVRTC13, deviceName: 'Tesla V100', nvrtcVersion: [13, 0] };
    expect(() => selectCudaTarget(old)).toThrow(CudaError);
    expect(() => selectCudaTarget(old)).toThrow(expect.objectContaining({ code: 'KILN_CUDA_UNSUPPORTED_DEVICE' }));
    expect(() => selectCudaTarget(old)).toThrow(/Tesla V100 \(compute capability 7\.0\) is older than NVRTC 13\.0 supports \(sm_75 to sm_121\).*KILN_NVRTC_PATH.*device: 'cpu'/);
  });
});

describe('grid dims', () => {
  it('reads polynomials and cdiv(dim, n)', () => {
    expect(evalGridDim(parseGridDim(128), {})).toBe(128);
    expect(evalGridDim(parseGridDim('s0*12'), { s0: 3 })).toBe(36);
    expect(evalGridDim(parseGridDim('cdiv(s0*768,256)'), { s0: 5 })).toBe(15);
    expect(evalGridDim(parseGridDim('cdiv(s0, 256)'), { s0: 257 })).toBe(2);
    expect(evalGridDim(parseGridDim('cdiv(s0,256)'), { s0: 0 })).toBe(0);
    expect(() => parseGridDim('cdiv(s0,0)')).toThrow(/divides by 0/);
    expect(() => parseGridDim('s0/2')).toThrow(expect.objectContaining({ code: 'KILN_BAD_DIM' }));
  });
});

describe('parsePtxasLog (saved real logs)', () => {
  it('reads registers, shared memory and barriers per kernel (NVRTC 13, sm_80)', () => {
    const info = parsePtxasLog(fixture('sm80-elementwise-reduce.log'));
    expect(Object.keys(info).sort()).toEqual(['E_addc', 'E_addx', 'E_mul2', 'E_sq', 'r_sum']);
    expect(info.r_sum).toEqual({ entry: true, registers: 10, sharedBytes: 1024, spillStores: 0, spillLoads: 0, stackBytes: 0, barriers: 1 });
    expect(info.E_addx).toMatchObject({ registers: 12, sharedBytes: 0, barriers: 0 });
    expect(spillingFunctions(info)).toEqual([]);
  });

  it('reads spills (sm_90, -maxrregcount=16)', () => {
    const info = parsePtxasLog(fixture('sm90-spill.log'));
    expect(info.heavy).toEqual({ entry: true, registers: 24, sharedBytes: 0, spillStores: 24, spillLoads: 24, stackBytes: 24, barriers: 0 });
    expect(spillingFunctions(info)).toEqual(['heavy']);
  });

  it('reads the "spilled to local memory" warning form and non-entry functions', () => {
    const log = [
      "ptxas info    : Function properties for _Z6helperv",
      'ptxas         .     16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads',
      "ptxas info    : Compiling entry function 'k' for 'sm_90'",
      "ptxas warning : Registers are spilled to local memory in function 'k', 12 bytes spill stores, 12 bytes spill loads",
      'ptxas info    : Used 255 registers, 360 bytes cmem[0]',
    ].join('\n');
    const info = parsePtxasLog(log);
    expect(info._Z6helperv).toMatchObject({ entry: false, stackBytes: 16, spillStores: 8, spillLoads: 4 });
    expect(info.k).toMatchObject({ entry: true, registers: 255, spillStores: 12, spillLoads: 12, barriers: 0 });
    expect(spillingFunctions(info).sort()).toEqual(['_Z6helperv', 'k']);
  });
});

const nvrtc = addonInfo().nvrtc;
const nvrtcIt = nvrtc.available || process.env.KILN_REQUIRE_NVRTC === '1' ? it : it.skip;

/** Kernels in kiln's parameter ABI: buffer pointers in step order, then one int64 per symbol. */
const ABI_KERNELS = `
extern "C" __global__ void E_mul_add(float* out, const float* a, const float* b, long long s0, long long s1) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < s0 * s1) out[i] = a[i] * b[i % s1] + 1.0f;
}
extern "C" __global__ void r_rowsum(float* out, const float* a, long long s0, long long s1) {
  __shared__ float part[256];
  const float* row = a + (long long)blockIdx.x * s1;
  float acc = 0.0f;
  for (long long j = threadIdx.x; j < s1; j += blockDim.x) acc += row[j];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = 128; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0 && blockIdx.x < s0) out[blockIdx.x] = part[0];
}
`;

/** Twenty live accumulators in a loop: more than 24 registers can hold. */
const HEAVY = `
extern "C" __global__ void heavy(float* out, const float* a, long long s0) {
  float v[20];
  #pragma unroll
  for (int j = 0; j < 20; j++) v[j] = a[j];
  #pragma unroll 1
  for (long long i = 0; i < s0; i++) {
    #pragma unroll
    for (int j = 0; j < 20; j++) v[j] = v[j] * v[(j + 1) % 20] + v[(j + 19) % 20];
  }
  float acc = 0.0f;
  #pragma unroll
  for (int j = 0; j < 20; j++) acc += v[j];
  out[threadIdx.x] = acc;
}
`;

describe('ptxas figures from real NVRTC compiles', () => {
  for (const target of ['sm_80', 'sm_90']) {
    nvrtcIt(`ABI kernels compile for ${target} without spills`, async () => {
      const r = await nvrtcCompile({ source: ABI_KERNELS, name: 'abi.cu', target, options: ['--std=c++17', '--ptxas-options=-v'] });
      expect(r.kind).toBe('cubin');
      const info = parsePtxasLog(r.log);
      expect(Object.keys(info).sort()).toEqual(['E_mul_add', 'r_rowsum']);
      expect(spillingFunctions(info)).toEqual([]);
      expect(info.r_rowsum).toMatchObject({ entry: true, sharedBytes: 1024, barriers: 1 });
      for (const f of Object.values(info)) {
        expect(f.registers).toBeGreaterThan(0);
        expect(f.registers).toBeLessThanOrEqual(64);
      }
      expect(r.log.includes('\0')).toBe(false);
    });
  }

  nvrtcIt('a register cap makes a kernel spill, and the parse says so', async () => {
    const r = await nvrtcCompile({ source: HEAVY, name: 'heavy.cu', target: 'sm_90', options: ['--ptxas-options=-v', '-maxrregcount=16'] });
    const info = parsePtxasLog(r.log);
    expect(spillingFunctions(info)).toEqual(['heavy']);
    expect(info.heavy.spillStores).toBeGreaterThan(0);
  });
});
