/**
 * The CPU device on its own: the real system compiler and the real addon, driven by a
 * hand-written kernel library and a hand-built LaunchPlan (no tracer, passes or renderer).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Constant } from '../lib/ir/graph';
import type { LaunchPlan } from '../lib/ir/plan';
import { compileSharedObject, cpuThreads, CpuProgram, firstCompilerError, type ArenaLayoutFn } from '../lib/runtime/cpu';
import { CompilerError, KilnError } from '../lib/util/errors';

// y = x * c + 1 (c a constant row), rowsum = sum over each row of x * c, threads = the
// count kiln_set_threads stored. A row whose first value is -1 makes the call sleep 300 ms
// (to show that the event loop stays free while kernels run).
const source = `
#include <chrono>
#include <cstdint>
#include <thread>
static int64_t threads = 0;
extern "C" void kiln_set_threads(void**, const int64_t* ints) { threads = ints[0]; }
extern "C" void kiln_run(void** bufs, const int64_t* syms) {
  const int64_t n = syms[0];
  const float* x = static_cast<const float*>(bufs[0]);
  const float* c = static_cast<const float*>(bufs[1]);
  float* t = static_cast<float*>(bufs[2]);
  float* y = static_cast<float*>(bufs[3]);
  float* rowsum = static_cast<float*>(bufs[4]);
  int32_t* nthreads = static_cast<int32_t*>(bufs[5]);
  if (n > 0 && x[0] == -1.0f) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (int64_t i = 0; i < n * 3; i++) t[i] = x[i] * c[i % 3];
  for (int64_t i = 0; i < n * 3; i++) y[i] = t[i] + 1.0f;
  for (int64_t r = 0; r < n; r++) rowsum[r] = t[3 * r] + t[3 * r + 1] + t[3 * r + 2];
  nthreads[0] = static_cast<int32_t>(threads);
}
`;

const constKey = 'c0';
const constants = new Map<string, Constant>([[constKey, { dtype: 'float32', shape: [3], data: new Float32Array([1, 2, 3]) }]]);
const plan: LaunchPlan = {
  version: 1,
  symbols: ['s0'],
  buffers: [
    { id: 0, dtype: 'float32', elems: '3*s0', role: 'input', source: 0, first: 0, last: 0 },
    { id: 1, dtype: 'float32', elems: 3, role: 'const', source: constKey, first: 0, last: 0 },
    { id: 2, dtype: 'float32', elems: '3*s0', role: 'temp', first: 0, last: 0 },
    { id: 3, dtype: 'float32', elems: '3*s0', role: 'output', first: 0, last: 0 },
    { id: 4, dtype: 'float32', elems: 's0', role: 'output', first: 0, last: 0 },
    { id: 5, dtype: 'int32', elems: 1, role: 'output', first: 0, last: 0 },
  ],
  steps: [{ kernel: 'k', kind: 'elementwise', buffers: [0, 1, 2, 3, 4, 5] }],
  outputs: [
    { buffer: 3, dtype: 'float32', shape: ['s0', 3] },
    { buffer: 4, dtype: 'float32', shape: ['s0'] },
    { buffer: 5, dtype: 'int32', shape: [] },
    { buffer: 0, dtype: 'float32', shape: ['s0', 3] }, // an output that is an input: copied
  ],
};
// Input 1 ("mask", never read) shares s0 with input 0: duck sizing.
const symbols = [{ name: 's0', sources: [{ input: 0, dim: 0 }, { input: 1, dim: 0 }] }];
// Temps one after another, each at a 64-byte boundary.
const layout: ArenaLayoutFn = (p, syms) => {
  const offsets = new Map<number, number>();
  let at = 0;
  for (const b of p.buffers.filter((x) => x.role === 'temp')) {
    offsets.set(b.id, at);
    const n = typeof b.elems === 'number' ? b.elems : 3 * syms.s0;
    at += Math.ceil((n * 4) / 64) * 64;
  }
  return { offsets, bytes: at };
};

let dir: string;
let program: CpuProgram;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kiln-cpu-device-'));
  const so = await compileSharedObject(source, ['-O2', '-std=c++17'], dir);
  expect(path.basename(so.soPath)).toBe('kernels.so');
  expect(readFileSync(so.sourcePath, 'utf8')).toBe(source);
  program = CpuProgram.load(so.soPath, { plan, symbols, constants, layout, threads: 3 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const rows = (n: number, first = 0) => new Float32Array(Array.from({ length: n * 3 }, (_, i) => (i === 0 && first ? first : i - 4)));
const mask = (n: number) => ({ dtype: 'bool' as const, shape: [n], data: new Uint8Array(n) });

describe('CPU device', () => {
  it('runs a plan: inputs, constants, arena temps, outputs, symbols, threads', async () => {
    for (const n of [1, 5, 17]) {
      const x = rows(n);
      const [y, rowsum, threads, xOut] = await program.run([{ dtype: 'float32', shape: [n, 3], data: x }, mask(n)]);
      expect(y.shape).toEqual([n, 3]);
      expect(y.data).toBeInstanceOf(Float32Array);
      expect(Array.from(y.data)).toEqual(Array.from(x, (v, i) => v * [1, 2, 3][i % 3] + 1));
      expect(rowsum.shape).toEqual([n]);
      expect(Array.from(rowsum.data)).toEqual(Array.from({ length: n }, (_, r) => x[3 * r] + 2 * x[3 * r + 1] + 3 * x[3 * r + 2]));
      expect(threads).toEqual({ dtype: 'int32', shape: [], data: new Int32Array([3]) });
      expect(Array.from(xOut.data)).toEqual(Array.from(x));
      expect(xOut.data).not.toBe(x);
    }
    expect(program.threads).toBe(3);
  });

  it('keeps the event loop free while kernels run, and runs calls concurrently', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const slow = program.run([{ dtype: 'float32', shape: [2, 3], data: rows(2, -1) }, mask(2)]);
    const fast = program.run([{ dtype: 'float32', shape: [4, 3], data: rows(4) }, mask(4)]);
    const [[ySlow], [yFast]] = await Promise.all([slow, fast]);
    clearInterval(timer);
    expect(ticks).toBeGreaterThanOrEqual(10);
    expect(ySlow.data[0]).toBe(0); // -1 * 1 + 1
    expect(yFast.shape).toEqual([4, 3]);
    expect(yFast.data[0]).toBe(-3); // -4 * 1 + 1
  });

  it('rejects inputs whose duck-sized dims disagree, naming the input and dim', async () => {
    const run = program.run([{ dtype: 'float32', shape: [4, 3], data: rows(4) }, mask(5)]);
    await expect(run).rejects.toMatchObject({ code: 'KILN_DYNAMIC_DIM_MISMATCH', message: expect.stringMatching(/input 1 dim 0 is 5 but input 0 dim 0 is 4/) });
  });

  it('rejects an input whose data does not match its buffer', async () => {
    const run = program.run([{ dtype: 'float32', shape: [4, 3], data: new Float32Array(11) }, mask(4)]);
    await expect(run).rejects.toMatchObject({ code: 'KILN_INPUT_SHAPE', message: expect.stringMatching(/input 0 must be float32 with 12 elements/) });
  });

  it('reports a C++ error as CompilerError naming file:line:col, with the whole log', async () => {
    const bad = 'extern "C" void kiln_run(void** bufs, const int64_t* syms) {\n  int x = 1\n}\n';
    const err = await compileSharedObject(bad, ['-O0'], path.join(dir, 'bad')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CompilerError);
    const e = err as CompilerError;
    expect(e.code).toBe('KILN_CXX_COMPILE');
    expect(e.message).toMatch(/kernels\.cpp:1:\d+: error: .*int64_t/);
    expect(e.log).toMatch(/kernels\.cpp:3:1: error: expected/); // the missing ';' is in the log too
  });

  it('reports a missing compiler as CompilerError KILN_NO_CXX with what to do', async () => {
    const env = { ...process.env, CXX: '/nonexistent/c++' };
    const err = await compileSharedObject(source, [], path.join(dir, 'none'), { env }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CompilerError);
    expect(err).toMatchObject({ code: 'KILN_NO_CXX', message: expect.stringMatching(/CXX=\/nonexistent\/c\+\+.*install g\+\+.*kiln doctor/s) });
  });

  it('finds the first located error in GCC and Clang logs', () => {
    const gcc = "/t/kernels.cpp: In function 'void f()':\n/t/kernels.cpp:7:3: error: 'y' was not declared in this scope\n";
    expect(firstCompilerError(gcc)).toBe("/t/kernels.cpp:7:3: error: 'y' was not declared in this scope");
    expect(firstCompilerError('/usr/bin/ld: cannot find -lfoo\ncollect2: error: ld returned 1 exit status')).toBe(
      'collect2: error: ld returned 1 exit status',
    );
  });

  it('reads KILN_CPU_THREADS', () => {
    expect(cpuThreads({ KILN_CPU_THREADS: '2' })).toBe(2);
    expect(() => cpuThreads({ KILN_CPU_THREADS: 'many' })).toThrow(KilnError);
  });
});
