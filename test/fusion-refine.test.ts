/**
 * Copy kernels through a permute and a reshape (attention's head merge) iterate the finer
 * domain of the permuted view (lib/passes/kernel.ts refine): one strided load per element
 * instead of a division and a modulo. Checked on the rendered kernel and, compiled, against
 * eager execution for several such patterns (with elementwise ops and broadcasts fused in).
 */
import * as kiln from '../lib';
import { compile } from '../lib/api/compile';
import { renderCpp } from '../lib/codegen';
import { lower } from '../lib/passes';
import { trace } from '../lib/tensor/trace';

function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}
const rand = (shape: number[], seed: number) => kiln.tensor(values(shape.reduce((a, b) => a * b, 1), seed), shape);

const merge = (x: kiln.Tensor) => x.permute([0, 2, 1, 3]).reshape([2, 6, 20]); // [B, H, T, D] -> [B, T, H*D]

describe('copy kernels through permute + reshape', () => {
  it('index the permuted view directly (no division or modulo per element)', () => {
    const g = trace(merge as (...a: kiln.Tensor[]) => kiln.Tensor, [{ shape: [2, 4, 6, 5], dtype: 'float32' }]);
    const src = renderCpp(lower(g));
    const body = src.slice(src.indexOf('/* E_'), src.indexOf('extern "C" void kiln_k_'));
    expect(body).toContain('elementwise over [2, 6, 4, 5]');
    expect(body.split('\n').filter((l) => /p1\[/.test(l)).join('\n')).not.toMatch(/[/%]/);
  });

  it('compute what eager computes', async () => {
    const fns = {
      merge,
      mergeAdd: (x: kiln.Tensor, b: kiln.Tensor) => merge(x).add(b), // b broadcast over [2, 6, 20]
      split: (x: kiln.Tensor) => x.reshape([2, 6, 4, 5]).permute([0, 2, 1, 3]).mul(2), // [B, T, H*D] -> [B, H, T, D]
      flatT: (x: kiln.Tensor) => x.transpose(1, 2).reshape([2, -1]).neg().abs(),
    };
    const x = rand([2, 4, 6, 5], 1);
    const b = rand([20], 2);
    const y = rand([2, 6, 20], 3);
    const cases: [keyof typeof fns, kiln.Tensor[]][] = [
      ['merge', [x]],
      ['mergeAdd', [x, b]],
      ['split', [y]],
      ['flatT', [x]],
    ];
    for (const [name, args] of cases) {
      const fn = fns[name] as (...a: kiln.Tensor[]) => kiln.Tensor;
      const got = await (await compile(fn, { device: 'cpu', cache: 'off' })(...args)).toArray();
      const want = await fn(...args).toArray();
      expect([name, Array.from(got)]).toEqual([name, Array.from(want)]);
    }
  }, 120_000);
});
