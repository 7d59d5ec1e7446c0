/**
 * Front-end semantics through `kiln.compile` on the CPU: what the tensor API decides
 * (dtype rules, lowering, captured tensors) must hold the same in the compiled program
 * (trace, passes, C++ renderer, the real compiler) as in eager execution, bit for bit.
 */
import * as kiln from '../lib';
import { compile, counters } from '../lib/api/compile';
import { toposort } from '../lib/ir';
import { trace } from '../lib/tensor/trace';

type T = kiln.Tensor;

/** Deterministic values in [-scale, scale) (a small LCG). */
function values(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 2 * scale;
  });
}
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
