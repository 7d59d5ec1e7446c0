/**
 * Packed matmul weights on the CPU (lib/runtime/cpu.ts, PackCache): a matmul whose B operand
 * is a program input or a constant keeps a packed copy while the same tensor is passed.
 * Every call is checked against eager execution, through the first call (nothing packed),
 * the second (packs while it runs), later ones (reuses), new tensors of the same shape (must
 * never see the old panels), eviction, and concurrent calls.
 */
import * as kiln from '../lib';
import { compile } from '../lib/api/compile';
import { relErr, seededTensors } from './helpers/eager-check';

const rand = seededTensors(7);

// K = 300 spans two K blocks of the packed layout; N = 37 leaves a partial 16-column panel.
const [M, K, N] = [13, 300, 37];
const captured = rand([K, 20], 0.1); // a constant of the program (TENSOR_CONST)

function model(x: kiln.Tensor, w: kiln.Tensor, b: kiln.Tensor, wt: kiln.Tensor, w3: kiln.Tensor, w16: kiln.Tensor) {
  return {
    dense: x.matmul(w).add(b).gelu(), // B as given, fused epilogue
    transposed: x.matmul(wt.transpose(0, 1)), // B through a transposed view
    batched: x.reshape([1, M, K]).expand([2, M, K]).matmul(w3), // one B per batch
    broadcast: x.reshape([1, M, K]).expand([3, M, K]).matmul(w), // B shared by every batch
    half: x.matmul(w16), // float16 B, converted while packing
    constant: x.matmul(captured),
  };
}

type Weights = [kiln.Tensor, kiln.Tensor, kiln.Tensor, kiln.Tensor, kiln.Tensor];
const weightSet = (): Weights => [rand([K, N], 0.1), rand([N], 0.1), rand([N, K], 0.1), rand([2, K, N], 0.1), rand([K, N], 0.1, 'float16')];

describe('packed matmul weights on the CPU', () => {
  const f = compile(model, { device: 'cpu', cache: 'off' });
  const x = rand([M, K]);

  async function check(ws: Weights): Promise<void> {
    const got = (await f(x, ...ws)) as Record<string, kiln.Tensor>;
    const want = model(x, ...ws) as Record<string, kiln.Tensor>;
    for (const name of Object.keys(want)) {
      const e = await relErr(got[name], want[name]);
      if (!(e < 1e-5)) throw new Error(`${name}: relative error ${e}`);
    }
  }

  it('reuses packed weights while the same tensors are passed and never for new ones', async () => {
    const a = weightSet();
    for (let i = 0; i < 4; i++) await check(a); // unpacked, packing, packed, packed
    const b = weightSet(); // same shapes, new data
    for (let i = 0; i < 3; i++) await check(b);
    await check(a); // both sets fit in a slot's cache
    const c = weightSet(); // evicts the least recently used set (b)
    for (let i = 0; i < 3; i++) await check(c);
    for (let i = 0; i < 3; i++) await check(b);
  }, 120_000);

  it('gives correct results to concurrent calls with different and equal weights', async () => {
    const sets = [weightSet(), weightSet(), weightSet()];
    for (let round = 0; round < 3; round++) await Promise.all([...sets, ...sets].map((ws) => check(ws)));
  }, 120_000);

  // The first call with a weight packs B per work unit (no pack slot filled yet), later calls
  // read the slot's packed panels: the micro-kernel sums the same products in the same order,
  // so the results must be the same bits. Sizes: two and three K blocks, partial N panels,
  // several units per thread, M tails, one B per batch and a B shared by the batches.
  it.each([
    [13, 300, 37],
    [131, 257, 1000],
  ])('first (B packed per unit) and later (B from the pack slot) calls give the same bits, %i x %i x %i', async (m, k, n) => {
    const g = compile(
      (x: kiln.Tensor, w: kiln.Tensor, w3: kiln.Tensor) => ({
        dense: x.matmul(w).relu(),
        batched: x.reshape([1, m, k]).expand([2, m, k]).matmul(w3),
        broadcast: x.reshape([1, m, k]).expand([3, m, k]).matmul(w),
      }),
      { device: 'cpu', cache: 'off' },
    );
    const [xx, w, w3] = [rand([m, k]), rand([k, n], 0.1), rand([2, k, n], 0.1)];
    const bits = async (): Promise<Uint32Array[]> => {
      const out = (await g(xx, w, w3)) as Record<string, kiln.Tensor>;
      return Promise.all(['dense', 'batched', 'broadcast'].map(async (name) => new Uint32Array(new Float32Array(await out[name].toArray()).buffer)));
    };
    const first = await bits(); // B packed per work unit
    await bits(); // fills the pack slot
    const third = await bits(); // B from the pack slot
    for (let i = 0; i < first.length; i++) expect(Buffer.compare(Buffer.from(first[i].buffer), Buffer.from(third[i].buffer))).toBe(0);
    const want = (await g(xx, w, w3)) as Record<string, kiln.Tensor>;
    const eager = (x: kiln.Tensor) => x.matmul(w).relu();
    expect(await relErr(want.dense, eager(xx))).toBeLessThan(1e-5);
  }, 120_000);
});
