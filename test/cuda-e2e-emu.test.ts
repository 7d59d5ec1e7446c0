/**
 * End-to-end checks of the generated CUDA kernels without a GPU: every case of the shared
 * list (scripts/gpu-check/cases.cjs) is lowered, planned for the CUDA target (grids,
 * blocks, shared memory), rendered, compiled by the host C++ compiler against the kernel
 * emulator (test/helpers/cuda-emu.h: a thread per CUDA thread, real barriers, warp
 * shuffles, ldmatrix and mma.sync re-implemented from the PTX fragment layouts) and run
 * step by step on poisoned (all-ones-bytes) outputs and temps, against the reference
 * interpreter: float32 within 1e-5 relative, float16/bfloat16 within one ulp unless the
 * case says otherwise, int32 and bool exact.
 */
import { buildEmu, cudaCases, lowerCase, runAllEmu, type EmuBuilt } from './cuda-harness';

describe('CUDA kernels in the emulator against the interpreter', () => {
  const groups = Object.entries(cudaCases());
  const built = new Map<string, Promise<EmuBuilt>>();
  beforeAll(() => {
    // One host compile per group, all at once (they are the slow part).
    for (const [group, cs] of groups) built.set(group, buildEmu(cs.map(lowerCase), { arch: 90 }));
    for (const b of built.values()) b.catch(() => undefined); // reported by the group's test
  });
  for (const [group, cs] of groups) {
    test(`${group}: ${cs.length} programs`, async () => {
      expect(runAllEmu(await built.get(group)!)).toEqual([]);
    }, 300_000);
  }
});
