/**
 * Real NVRTC (the `nvidia-cuda-nvrtc` pip wheel in CI): cubins and PTX, compile errors, and
 * the search order's KILN_NVRTC_PATH handling. Skipped when NVRTC is absent, unless
 * KILN_REQUIRE_NVRTC=1 makes that a failure.
 */
import * as path from 'node:path';
import { readCubinArch } from '../lib/runtime/cuda-driver';
import { addonInfo, nvrtcCompile } from '../lib/runtime/native';
import { NvrtcError } from '../lib/util/errors';
import { runInChild } from './fixtures/native/run';

const info = addonInfo();
const required = process.env.KILN_REQUIRE_NVRTC === '1';
const nvrtcIt = info.nvrtc.available || required ? it : it.skip;
if (!info.nvrtc.available && !required) {
  console.warn(`NVRTC tests skipped: ${info.nvrtc.reason} (set KILN_REQUIRE_NVRTC=1 to fail instead)`);
}
const nvrtcDir = info.nvrtc.available ? path.dirname(info.nvrtc.path) : '';

const saxpy = `
extern "C" __global__ void saxpy(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
`;

/** The ELF header fields that identify a cubin, read here independently of readCubinArch. */
function elfHeader(bin: Buffer): { magic: string; machine: number; abiVersion: number; flags: number } {
  return {
    magic: bin.subarray(0, 4).toString('latin1'),
    machine: bin.readUInt16LE(18),
    abiVersion: bin[8]!,
    flags: bin.readUInt32LE(48),
  };
}

describe('NVRTC', () => {
  nvrtcIt('is found, with its version, path and supported archs', () => {
    expect(info.nvrtc.available).toBe(true);
    if (!info.nvrtc.available) return;
    expect(info.nvrtc.version[0]).toBeGreaterThanOrEqual(12);
    expect(info.nvrtc.archs).toEqual(expect.arrayContaining(['sm_80', 'sm_90']));
    expect(info.nvrtc.tried.at(-1)).toMatch(/: ok$/);
  });

  // The SM sits in e_flags bits 8-15 from ELF ABI version 8 (CUDA 13), bits 0-7 before;
  // observed: sm_80 -> 0x06005004, sm_90 -> 0x06005a04 from NVRTC 13.0.
  for (const sm of [90, 80]) {
    nvrtcIt(`compiles to an sm_${sm} cubin`, async () => {
      const r = await nvrtcCompile({ source: saxpy, name: 'saxpy.cu', target: `sm_${sm}`, options: ['--std=c++17'] });
      expect(r.kind).toBe('cubin');
      const h = elfHeader(r.binary);
      expect(h.magic).toBe('\x7fELF');
      expect(h.machine).toBe(190); // EM_CUDA
      const smInFlags = h.abiVersion >= 8 ? (h.flags >> 8) & 0xff : h.flags & 0xff;
      expect(smInFlags).toBe(sm);
      expect(readCubinArch(r.binary)).toEqual({ sm, abiVersion: h.abiVersion });
    });
  }

  nvrtcIt('compiles compute_90 to PTX text', async () => {
    const r = await nvrtcCompile({ source: saxpy, name: 'saxpy.cu', target: 'compute_90' });
    expect(r.kind).toBe('ptx');
    const text = r.binary.toString('utf8');
    expect(text).toContain('.target sm_90');
    expect(text).toContain('.visible .entry saxpy');
    expect(text.includes('\0')).toBe(false);
  });

  nvrtcIt('puts ptxas output in the log when asked', async () => {
    const r = await nvrtcCompile({ source: saxpy, name: 'saxpy.cu', target: 'sm_90', options: ['--ptxas-options=-v'] });
    expect(r.log).toMatch(/registers/);
  });

  nvrtcIt('rejects a syntax error with NvrtcError whose log names the line', async () => {
    const bad = 'extern "C" __global__ void k(float* x) {\n  x[0] = 1.0f;\n  x[1] = 2.0f\n}\n';
    const err = await nvrtcCompile({ source: bad, name: 'bad.cu', target: 'sm_90' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NvrtcError);
    const e = err as NvrtcError;
    expect(e.code).toBe('KILN_NVRTC_COMPILE');
    expect(e.log).toMatch(/bad\.cu\(4\): error/);
    expect(e.message).toMatch(/bad\.cu: NVRTC compile for sm_90 failed/);
  });

  nvrtcIt('rejects a bad target or an architecture option as an argument error', async () => {
    await expect(nvrtcCompile({ source: saxpy, name: 'a.cu', target: 'sm90' })).rejects.toMatchObject({
      code: 'KILN_ARGUMENT',
    });
    await expect(
      nvrtcCompile({ source: saxpy, name: 'a.cu', target: 'sm_90', options: ['-arch=sm_80'] }),
    ).rejects.toMatchObject({ code: 'KILN_ARGUMENT' });
  });

  nvrtcIt('runs more compiles than its concurrency cap, all to completion', async () => {
    const jobs = Array.from({ length: 5 }, (_, i) =>
      nvrtcCompile({ source: saxpy.replace('saxpy', `saxpy${i}`), name: `k${i}.cu`, target: 'sm_90' }),
    );
    const results = await Promise.all(jobs);
    expect(results.map((r) => r.kind)).toEqual(Array(5).fill('cubin'));
  });

  nvrtcIt('KILN_NVRTC_PATH to the wheel dir (or the file) is used, and compiles', () => {
    for (const target of [nvrtcDir, path.join(nvrtcDir, path.basename(info.nvrtc.available ? info.nvrtc.path : ''))]) {
      const out = runInChild(
        `const i = native.addonInfo();
         const r = await native.nvrtcCompile({ source: 'extern "C" __global__ void k(int* p) { *p = 1; }', name: 'k.cu', target: 'sm_90' });
         return { nvrtc: i.nvrtc, kind: r.kind, bytes: r.binary.length };`,
        { ...process.env, KILN_NVRTC_PATH: target },
      ) as { nvrtc: { available: boolean; foundBy: string; path: string }; kind: string; bytes: number };
      expect(out.nvrtc).toMatchObject({ available: true, foundBy: 'env KILN_NVRTC_PATH' });
      expect(out.nvrtc.path.startsWith(nvrtcDir)).toBe(true);
      expect(out.kind).toBe('cubin');
      expect(out.bytes).toBeGreaterThan(0);
    }
  });

  it('a bogus KILN_NVRTC_PATH is a clear error naming it, with no fallback', () => {
    const bogus = path.join(nvrtcDir || '/nonexistent', 'no-such-libnvrtc.so');
    const out = runInChild(
      `const i = native.addonInfo();
       const e = await native.nvrtcCompile({ source: '', name: 'k.cu', target: 'sm_90' }).catch((e) => e);
       return { nvrtc: i.nvrtc, error: { name: e.name, code: e.code, message: e.message } };`,
      { ...process.env, KILN_NVRTC_PATH: bogus },
    ) as { nvrtc: { available: boolean; reason: string; tried: string[] }; error: Record<string, string> };
    expect(out.nvrtc.available).toBe(false);
    expect(out.nvrtc.reason).toContain(`KILN_NVRTC_PATH=${bogus}`);
    expect(out.nvrtc.reason).toContain('no such file or directory');
    expect(out.nvrtc.tried).toHaveLength(1); // nothing else was tried
    expect(out.error).toMatchObject({ name: 'NvrtcError', code: 'KILN_NVRTC_BAD_PATH' });
    expect(out.error.message).toContain(bogus);
  });
});
