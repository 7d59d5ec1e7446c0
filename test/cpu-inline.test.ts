/**
 * Where a CPU call runs (lib/runtime/cpu.ts `run`, native/cpu.cc CpuTryCall): on the calling
 * JS thread when the program's previous run was short and kiln's compute thread is idle,
 * else on the compute thread; calls stay one at a time and in order, an awaited loop of
 * inline calls still lets the event loop turn, and OpenMP-era libraries never run inline.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { LaunchPlan } from '../lib/ir/plan';
import { compileSharedObject, cpuInlineUs, CpuProgram, type ArenaLayoutFn } from '../lib/runtime/cpu';
import { cpuLoad, type CpuLibrary } from '../lib/runtime/native';
import { KilnError } from '../lib/util/errors';

// y = 2x. A first value of -1 makes the call sleep 30 ms; kiln_set_runtime marks the library
// as one on kiln's own pool (the kind that may run inline).
const source = `
#include <chrono>
#include <cstdint>
#include <thread>
extern "C" void kiln_set_runtime(const void*) {}
extern "C" void kiln_run(void** bufs, const int64_t* syms) {
  const float* x = static_cast<const float*>(bufs[0]);
  float* y = static_cast<float*>(bufs[1]);
  if (x[0] == -1.0f) std::this_thread::sleep_for(std::chrono::milliseconds(30));
  for (int64_t i = 0; i < syms[0]; i++) y[i] = 2 * x[i];
}
`;

const plan: LaunchPlan = {
  version: 1,
  symbols: ['s0'],
  buffers: [
    { id: 0, dtype: 'float32', elems: 's0', role: 'input', source: 0, first: 0, last: 0 },
    { id: 1, dtype: 'float32', elems: 's0', role: 'output', first: 0, last: 0 },
  ],
  steps: [{ kernel: 'k', kind: 'elementwise', buffers: [0, 1] }],
  outputs: [{ buffer: 1, dtype: 'float32', shape: ['s0'] }],
};
const symbols = [{ name: 's0', sources: [{ input: 0, dim: 0 }] }];
const layout: ArenaLayoutFn = () => ({ offsets: new Map(), bytes: 0 });

/** The library, counting where its calls went (tryCall: ran inline or refused). */
function counted(lib: CpuLibrary) {
  const n = { inline: 0, refused: 0, async: 0 };
  const wrapped: CpuLibrary = {
    path: lib.path,
    call: (s, b, i) => lib.call(s, b, i),
    tryCall: (s, b, i) => {
      const us = lib.tryCall(s, b, i);
      if (us >= 0) n.inline++;
      else n.refused++;
      return us;
    },
    callAsync: (s, b, i) => {
      n.async++;
      return lib.callAsync(s, b, i);
    },
  };
  return { lib: wrapped, n };
}

const input = (values: number[]) => [{ dtype: 'float32' as const, shape: [values.length], data: Float32Array.from(values) }];
const SLOW = [-1, 3];

let dir: string;
let so: string;
let plainSo: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kiln-cpu-inline-'));
  so = (await compileSharedObject(source, ['-O2', '-std=c++17'], dir)).soPath;
  plainSo = path.join(dir, 'plain.so'); // kiln_run without kiln_set_runtime, as an OpenMP-era library
  execFileSync(process.env.CXX || 'g++', ['-O2', '-shared', '-fPIC', '-o', plainSo, path.join(__dirname, 'fixtures', 'native', 'kernels.cc')]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('CPU calls on the JS thread', () => {
  it('runs a short program inline from its second call, with the same results', async () => {
    const { lib, n } = counted(cpuLoad(so));
    const program = new CpuProgram(lib, { plan, symbols, constants: new Map(), layout, inlineUs: 10_000 });
    for (let i = 0; i < 4; i++) {
      const [y] = await program.run(input([1, 2, 3 + i]));
      expect(Array.from(y.data)).toEqual([2, 4, 6 + 2 * i]);
      expect(y.shape).toEqual([3]);
    }
    expect(n).toEqual({ inline: 3, refused: 0, async: 1 }); // the first call has no time to go by
  });

  it('sends the call after a slow run to the compute thread, and keeps the event loop free there', async () => {
    const { lib, n } = counted(cpuLoad(so));
    const program = new CpuProgram(lib, { plan, symbols, constants: new Map(), layout, inlineUs: 10_000 });
    await program.run(input([1, 2])); // SLOW's size
    await program.run(input(SLOW)); // inline: blocks 30 ms, measured
    expect(n).toEqual({ inline: 1, refused: 0, async: 1 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const [y] = await program.run(input(SLOW)); // the last run took 30 ms: not inline
    clearInterval(timer);
    expect(n).toEqual({ inline: 1, refused: 0, async: 2 });
    expect(ticks).toBeGreaterThan(0);
    expect(Array.from(y.data)).toEqual([-2, 6]);
  });

  it('never runs inline at inlineUs 0', async () => {
    const { lib, n } = counted(cpuLoad(so));
    const program = new CpuProgram(lib, { plan, symbols, constants: new Map(), layout, inlineUs: 0 });
    for (let i = 0; i < 3; i++) await program.run(input([1, 2]));
    expect(n).toEqual({ inline: 0, refused: 0, async: 3 });
  });

  it('queues behind a call in flight instead of running beside it, and settles in order', async () => {
    const raw = cpuLoad(so);
    const { lib, n } = counted(raw);
    const program = new CpuProgram(lib, { plan, symbols, constants: new Map(), layout, inlineUs: 10_000 });
    await program.run(input([1]));
    const order: string[] = [];
    const slowOut = new Float32Array(2);
    const slow = raw.callAsync('kiln_run', [Float32Array.from(SLOW), slowOut], [2]).then((us) => {
      order.push('slow');
      return us;
    });
    const fast = program.run(input([5])).then((r) => {
      order.push('fast');
      return r;
    });
    const [us, [y]] = await Promise.all([slow, fast]);
    expect(n).toEqual({ inline: 0, refused: 1, async: 2 });
    expect(order).toEqual(['slow', 'fast']);
    expect(us).toBeGreaterThanOrEqual(25_000); // callAsync resolves with the kernel's µs
    expect(Array.from(slowOut)).toEqual([-2, 6]);
    expect(Array.from(y.data)).toEqual([10]);
  });

  it('judges each size by its own last run: a new size runs on the compute thread first', async () => {
    const { lib, n } = counted(cpuLoad(so));
    const program = new CpuProgram(lib, { plan, symbols, constants: new Map(), layout, inlineUs: 10_000 });
    const where: string[] = [];
    for (const values of [[1], [2], [1, 2, 3], [4, 5, 6], [7]]) {
      const before = { ...n };
      expect(Array.from((await program.run(input(values)))[0].data)).toEqual(values.map((v) => 2 * v));
      where.push(n.async > before.async ? 'async' : 'inline');
    }
    expect(where).toEqual(['async', 'inline', 'async', 'inline', 'inline']);
  });

  it('does not run inline while an earlier call is in flight, so Promises settle in call order', async () => {
    const { lib, n } = counted(cpuLoad(so));
    const program = new CpuProgram(lib, { plan, symbols, constants: new Map(), layout, inlineUs: 10_000 });
    await program.run(input([1])); // size 1 now runs inline when nothing is in flight
    const order: string[] = [];
    const a = program.run(input([1, 2])).then(() => order.push('a')); // a new size: the compute thread
    const b = program.run(input([3])).then(() => order.push('b'));
    await Promise.all([a, b]);
    expect(order).toEqual(['a', 'b']);
    expect(n).toEqual({ inline: 0, refused: 0, async: 3 });
  });

  it('after 16 inline calls in a row, runs calls on the compute thread until the event loop has turned', async () => {
    const { lib, n } = counted(cpuLoad(so));
    const program = new CpuProgram(lib, { plan, symbols, constants: new Map(), layout, inlineUs: 10_000 });
    await program.run(input([1])); // the first run is never inline
    await new Promise((r) => setImmediate(r)); // a fresh streak
    let turned = 0;
    setImmediate(() => turned++);
    const where: string[] = [];
    const call = async (i: number): Promise<void> => {
      const before = n.async;
      expect(Array.from((await program.run(input([i])))[0].data)).toEqual([2 * i]);
      where.push(n.async > before ? 'async' : 'inline');
    };
    // How many async calls pass before the loop turns depends on how Node batches their
    // completions; the rule does not.
    for (let i = 0; turned === 0 && i < 10_000; i++) await call(i);
    expect(turned).toBe(1);
    expect(where.slice(0, 17)).toEqual([...Array(16).fill('inline'), 'async']);
    expect(where.slice(16).every((w) => w === 'async')).toBe(true);
    for (let i = 0; i < 4; i++) await call(i);
    expect(where.slice(-4)).toEqual(['inline', 'inline', 'inline', 'inline']); // a fresh streak
  });

  it('never waits on a timer: with setImmediate faked, an awaited loop goes on', async () => {
    const { lib, n } = counted(cpuLoad(so));
    const program = new CpuProgram(lib, { plan, symbols, constants: new Map(), layout, inlineUs: 10_000 });
    const real = global.setImmediate;
    global.setImmediate = (() => ({ unref() {} })) as unknown as typeof setImmediate; // never fires
    try {
      for (let i = 0; i < 40; i++) expect(Array.from((await program.run(input([i])))[0].data)).toEqual([2 * i]);
    } finally {
      global.setImmediate = real;
    }
    expect(n.inline + n.async).toBe(40);
    expect(n.inline).toBeGreaterThan(0); // how many depends on the machine: refused or turned calls go async
  });
});

describe('CpuLibrary.tryCall', () => {
  it('runs a kiln-pool library synchronously and returns its µs', () => {
    const lib = cpuLoad(so);
    const out = new Float32Array(3);
    const us = lib.tryCall('kiln_run', [new Float32Array([1, 2, 3]), out], [3]);
    expect(us).toBeGreaterThanOrEqual(0);
    expect(Array.from(out)).toEqual([2, 4, 6]);
  });

  it('refuses a library without kiln_set_runtime (OpenMP era), leaving its outputs alone', () => {
    const lib = cpuLoad(plainSo);
    const out = new Float32Array(4);
    expect(lib.tryCall('kiln_run', [new Float32Array([1, 2, 3, 4]), new Float32Array([1, 1, 1, 1]), out], [4, 1])).toBe(-1);
    expect(Array.from(out)).toEqual([0, 0, 0, 0]);
  });

  it('refuses while the compute thread runs a call', async () => {
    const lib = cpuLoad(so);
    const pending = lib.callAsync('kiln_run', [Float32Array.from(SLOW), new Float32Array(2)], [2]);
    const out = new Float32Array(1);
    expect(lib.tryCall('kiln_run', [new Float32Array([4]), out], [1])).toBe(-1);
    expect(out[0]).toBe(0);
    await pending;
    expect(lib.tryCall('kiln_run', [new Float32Array([4]), out], [1])).toBeGreaterThanOrEqual(0);
    expect(out[0]).toBe(8);
  });
});

describe('KILN_CPU_INLINE_US', () => {
  it('defaults to 1000 µs, takes a non-negative integer, refuses anything else', () => {
    expect(cpuInlineUs({})).toBe(1000);
    expect(cpuInlineUs({ KILN_CPU_INLINE_US: '0' })).toBe(0);
    expect(cpuInlineUs({ KILN_CPU_INLINE_US: '250' })).toBe(250);
    for (const bad of ['-1', '1.5', 'fast']) {
      expect(() => cpuInlineUs({ KILN_CPU_INLINE_US: bad })).toThrow(expect.objectContaining({ code: 'KILN_BAD_ENV' }));
    }
    expect(() => cpuInlineUs({ KILN_CPU_INLINE_US: 'fast' })).toThrow(KilnError);
  });
});
