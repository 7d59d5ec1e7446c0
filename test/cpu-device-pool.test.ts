/**
 * Kernels on kiln's CPU thread pool (native/cpu.cc KernelPool, lib/codegen/cpp.ts
 * parallelLoops / parallelReduce): sizes above the parallel threshold, more threads than
 * cores, against eager execution. Whole-tensor reductions run in chunks whose partial
 * results combine in a fixed order, so they also agree across thread counts.
 */
import * as kiln from '../lib';
import { compile } from '../lib/api/compile';
import { relErr, values } from './helpers/eager-check';

function model(x: kiln.Tensor, y: kiln.Tensor, ids: kiln.Tensor) {
  return {
    sum: x.sum(), // whole-tensor reduction, 120K elements: chunked partial sums
    max: y.max(), // with a NaN in it
    mean: x.abs().mean(),
    isum: ids.sum(),
    softmax: x.reshape([3000, 40]).softmax(-1), // row kernel over 3000 rows
    norm: kiln.layerNorm(x.reshape([400, 300])),
    ew: x.mul(y).add(1).tanh(), // flat elementwise
    cols: x.reshape([300, 400]).sum(0), // a reduction over the leading dim
    mm: x.reshape([300, 400]).matmul(y.reshape([400, 300])).gelu(),
  };
}

describe('CPU kernels on the thread pool', () => {
  const saved = process.env.KILN_CPU_THREADS;
  afterAll(() => {
    if (saved === undefined) delete process.env.KILN_CPU_THREADS;
    else process.env.KILN_CPU_THREADS = saved;
  });

  const x = kiln.tensor(values(120_000, 3), [120_000]);
  const yv = values(120_000, 4);
  yv[77_777] = NaN;
  const y = kiln.tensor(yv, [120_000]);
  const ids = kiln.tensor(Int32Array.from(values(120_000, 5), (v) => Math.round(v * 1e6)), [120_000], 'int32');

  // A program takes its thread count when it is built; functions with different source text
  // are different programs (one compiled function per thread count).
  const variants: Record<number, typeof model> = {
    1: (a, b, c) => model(a, b, c),
    3: (x3, y3, i3) => model(x3, y3, i3),
  };

  it.each([1, 3])('agrees with eager at %i threads', async (threads) => {
    process.env.KILN_CPU_THREADS = String(threads);
    const f = compile(variants[threads], { device: 'cpu', cache: 'off' });
    const want = model(x, y, ids) as Record<string, kiln.Tensor>;
    for (let rep = 0; rep < 2; rep++) {
      const got = (await f(x, y, ids)) as Record<string, kiln.Tensor>;
      if (rep === 0) expect(f.stats?.source).toBe('compiled');
      for (const name of Object.keys(want)) {
        const e = await relErr(got[name], want[name]);
        if (!(e < (name === 'isum' ? 1e-30 : 2e-5))) throw new Error(`${name} at ${threads} threads: relative error ${e}`);
      }
    }
  }, 120_000);

  it('gives the same whole-tensor sum at 1 and 3 threads', async () => {
    const sums: number[] = [];
    const fns = [(a: kiln.Tensor) => a.mul(1.5).sum(), (b: kiln.Tensor) => b.mul(1.5).sum()];
    for (const [i, threads] of [1, 3].entries()) {
      process.env.KILN_CPU_THREADS = String(threads);
      const f = compile(fns[i], { device: 'cpu', cache: 'off' });
      sums.push((await (await f(x)).toArray())[0]);
      expect(f.stats?.source).toBe('compiled');
    }
    expect(sums[1]).toBe(sums[0]);
  }, 120_000);
});
