/**
 * Kernels the GPU check compiles, written against kiln's kernel parameter ABI
 * (lib/runtime/cuda.ts): buffer pointers in step order, then one int64 per plan symbol.
 * Plus the plans and host references that go with them.
 */
'use strict';

const ELEMENTWISE = `
#define KILN_INDEX long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x
extern "C" __global__ void E_mul2(float* out, const float* x, long long s0) {
  KILN_INDEX; if (i < s0) out[i] = x[i] * 2.0f;
}
extern "C" __global__ void E_addx(float* out, const float* a, const float* x, long long s0) {
  KILN_INDEX; if (i < s0) out[i] = a[i] + x[i];
}
extern "C" __global__ void E_sq(float* out, const float* a, long long s0) {
  KILN_INDEX; if (i < s0) out[i] = a[i] * a[i];
}
extern "C" __global__ void E_addc(float* out, const float* a, const float* c, long long s0) {
  KILN_INDEX; if (i < s0) out[i] = a[i] + c[0];
}
`;

const BLOCK = 256;
const f = Math.fround;

/** y = (2x + x)^2 in float32, in the kernels' order of operations. */
function reference(x) {
  return Float32Array.from(x, (v) => {
    const t = f(f(v * 2) + v);
    return f(t * t);
  });
}

/** The 3-step, 2-buffer executor spec: y = 2x; y = y + x; y = y * y. */
function threeStepSpec() {
  return {
    numBuffers: 2,
    numSymbols: 1,
    steps: [
      { kernel: 'E_mul2', buffers: [1, 0], block: [BLOCK] },
      { kernel: 'E_addx', buffers: [1, 1, 0], block: [BLOCK] },
      { kernel: 'E_sq', buffers: [1, 1], block: [BLOCK] },
    ],
  };
}

const grids = (n, steps = 3) => new Uint32Array(Array.from({ length: steps }, () => [Math.ceil(n / BLOCK), 1, 1]).flat());

/**
 * A LaunchPlan with every buffer role: input x[s0], a temp, a const c[1], output y and
 * output z = y + c. Outputs: y, y again (shared: copied), x (an input: copied), z.
 */
function programPlan() {
  const grid = [`cdiv(s0,${BLOCK})`];
  return {
    version: 1,
    symbols: ['s0'],
    buffers: [
      { id: 0, dtype: 'float32', elems: 's0', role: 'input', source: 0, first: 0, last: 1 },
      { id: 1, dtype: 'float32', elems: 's0', role: 'temp', first: 0, last: 2 },
      { id: 2, dtype: 'float32', elems: 1, role: 'const', source: 'c', first: 3, last: 3 },
      { id: 3, dtype: 'float32', elems: 's0', role: 'output', first: 2, last: 3 },
      { id: 4, dtype: 'float32', elems: 's0', role: 'output', first: 3, last: 3 },
    ],
    steps: [
      { kernel: 'E_mul2', kind: 'elementwise', buffers: [1, 0], grid, block: [BLOCK] },
      { kernel: 'E_addx', kind: 'elementwise', buffers: [1, 1, 0], grid, block: [BLOCK] },
      { kernel: 'E_sq', kind: 'elementwise', buffers: [3, 1], grid, block: [BLOCK] },
      { kernel: 'E_addc', kind: 'elementwise', buffers: [4, 3, 2], grid, block: [BLOCK] },
    ],
    outputs: [
      { buffer: 3, dtype: 'float32', shape: ['s0'] },
      { buffer: 3, dtype: 'float32', shape: ['s0'] },
      { buffer: 0, dtype: 'float32', shape: ['s0'] },
      { buffer: 4, dtype: 'float32', shape: ['s0'] },
    ],
  };
}

/** The parts CudaProgram.load needs besides the plan (a one-temp arena layout). */
function programParts(c) {
  return {
    symbols: [{ name: 's0', sources: [{ input: 0, dim: 0 }] }],
    constants: new Map([['c', { dtype: 'float32', shape: [1], data: new Float32Array([c]) }]]),
    layout: (_plan, syms) => ({ offsets: { 1: 0 }, bytes: Math.ceil((syms.s0 * 4) / 64) * 64 }),
  };
}

/** Compares float arrays exactly; throws naming the first difference. */
function expectEqual(got, want, what) {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} elements, expected ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i] && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) {
      throw new Error(`${what}[${i}] = ${got[i]}, expected ${want[i]}`);
    }
  }
}

const ramp = (n, scale = 0.001, offset = 0) => Float32Array.from({ length: n }, (_, i) => (i % 1000) * scale + offset);

module.exports = { ELEMENTWISE, BLOCK, reference, threeStepSpec, grids, programPlan, programParts, expectEqual, ramp };
