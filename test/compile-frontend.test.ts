/**
 * Front-end semantics through `kiln.compile` on the CPU: what the tensor API decides
 * (dtype rules, lowering, captured tensors) must hold the same in the compiled program
 * (trace, passes, C++ renderer, the real compiler) as in eager execution, bit for bit.
 */
import * as kiln from '../lib';
import { compile, counters } from '../lib/api/compile';
import { toposort } from '../lib/ir';
import { trace } from '../lib/tensor/trace';
import { values } from './helpers/eager-check';

type T = kiln.Tensor;

const bits = (n: number, seed: number) => Uint8Array.from(values(n, seed), (v) => (v > 0 ? 1 : 0));

describe('bool arithmetic, compiled', () => {
  // PyTorch: bool + bool is a logical or, bool · bool a logical and, both bool.
  const fn = (a: T, b: T) => ({ or: a.add(b), and: a.mul(b), orTrue: a.add(true), andNot: a.mul(b.eq(false)), count: a.add(b).to('int32').add(b) });

  it('traces add/mul of bools as MAX/MIN in bool', () => {
    const g = trace(fn, [{ shape: [4], dtype: 'bool' }, { shape: [4], dtype: 'bool' }]);
    const boolOps = new Set(toposort(g).flatMap((n) => (n.dtype === 'bool' ? [n.op] : [])));
    expect(boolOps.has('MAX') && boolOps.has('MIN')).toBe(true);
    expect(boolOps.has('ADD') || boolOps.has('MUL')).toBe(false);
    expect(g.outputs.slice(0, 4).map((o) => o.dtype)).toEqual(['bool', 'bool', 'bool', 'bool']);
  });

  it('computes or/and like eager at two sizes of a dynamic dim', async () => {
    const f = compile(fn, { device: 'cpu', dynamic: { 0: [0], 1: [0] } });
    const before = counters();
    for (const n of [5, 33]) {
      const a = kiln.tensor(bits(n * 3, n), [n, 3], 'bool');
      const b = kiln.tensor(bits(n * 3, n + 100), [n, 3], 'bool');
      const [got, want] = [await f(a, b), fn(a, b)];
      for (const k of Object.keys(want) as (keyof typeof want)[]) {
        expect([k, got[k].dtype, got[k].shape]).toEqual([k, want[k].dtype, [n, 3]]);
        expect(await got[k].toArray()).toEqual(await want[k].toArray());
      }
    }
    expect(counters().compiles).toBeLessThanOrEqual(before.compiles + 1);
  });
});

describe('concrete tensors captured from the closure, with a dynamic batch dim', () => {
  const [IN, H] = [12, 8];
  const w = kiln.tensor(values(IN * H, 11, 0.4), [IN, H]);
  const bias = kiln.tensor(values(H, 12, 0.2), [H]);
  const lnWeight = kiln.tensor(values(H, 13, 0.3), [H]).add(1);
  const lnBias = kiln.tensor(values(H, 14, 0.1), [H]);
  // Each captured tensor meets a traced one whose batch dim is symbolic: the captured
  // operand must be lifted into the trace (TENSOR_CONST) before it is broadcast.
  const fn = (x: T) => {
    const h = x.matmul(w).add(bias); // captured on the right
    return {
      h,
      left: bias.sub(h), // captured on the left
      ln: kiln.layerNorm(h, lnWeight, lnBias),
      lnWeightOnly: kiln.layerNorm(h, lnWeight),
      rms: kiln.rmsNorm(h, lnWeight),
      where: kiln.where(h.gt(0), bias, h),
      half: h.to('float16').mul(bias), // a cast of the traced side, promotion to float32
    };
  };

  it('traces with the batch dim symbolic', () => {
    const g = trace(fn, [{ shape: [3, IN] }], { dynamic: { 0: [0] } });
    expect(g.outputs.map((o) => o.shape.map(String))).toEqual(g.outputs.map(() => ['s0', String(H)]));
    expect(g.constants.size).toBeGreaterThanOrEqual(4);
  });

  it('matches eager at two batch sizes from one compile', async () => {
    const f = compile(fn, { device: 'cpu', dynamic: { 0: [0] } });
    const before = counters();
    for (const n of [3, 17]) {
      const x = kiln.tensor(values(n * IN, n), [n, IN]);
      const [got, want] = [await f(x), fn(x)];
      for (const k of Object.keys(want) as (keyof typeof want)[]) {
        expect([k, got[k].dtype, got[k].shape]).toEqual([k, want[k].dtype, [n, H]]);
        const [a, b] = [await got[k].toArray(), await want[k].toArray()];
        for (let i = 0; i < b.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(b[i])));
      }
    }
    expect(counters().compiles).toBeLessThanOrEqual(before.compiles + 1);
  });

  it('a captured tensor expanded to a dynamic shape on its own is a clear TraceError', () => {
    const err = (() => {
      try {
        trace((x: T) => bias.expand(x.dims as number[]).add(x), [{ shape: [3, H] }], { dynamic: { 0: [0] } });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(kiln.KilnError);
    expect(err).toMatchObject({ code: 'KILN_SYMBOLIC_DIM', message: expect.stringMatching(/^expand: .*concrete tensor of shape \[1,8\] cannot take the dynamic shape \[s0,8\]/) });
  });
});
