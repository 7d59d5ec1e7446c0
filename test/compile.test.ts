/**
 * `kiln.compile` end to end on the CPU: trace, passes, C++ renderer, the real system
 * compiler, the real addon. Each model is compiled once and checked against eager
 * execution (kiln's reference interpreter) at several sizes of its dynamic dim; compiles
 * are slow, so one compile serves many checks.
 */
import * as kiln from '../lib';
import { compile, counters } from '../lib/api/compile';
import { relErr, seededTensors, values } from './helpers/eager-check';

const rand = seededTensors(1);

// ─── an MLP: weights and biases as inputs, the last layer's weight captured as a constant ──

const [IN, H1, H2, OUT] = [37, 50, 29, 11];
const w1 = rand([IN, H1], 0.3);
const b1 = rand([H1], 0.1);
const w2 = rand([H1, H2], 0.3);
const b2 = rand([H2], 0.1);
const b3 = rand([OUT], 0.1);
const w3 = rand([H2, OUT], 0.3);
function mlp(x: kiln.Tensor, l1: kiln.Tensor, c1: kiln.Tensor, l2: kiln.Tensor, c2: kiln.Tensor, c3: kiln.Tensor) {
  const h1 = x.matmul(l1).add(c1).gelu();
  const h2 = h1.matmul(l2).add(c2).gelu();
  return { logits: h2.matmul(w3).add(c3), hidden: [h2] };
}
const weights = [w1, b1, w2, b2, b3] as const;

// ─── a GPT-style block: pre-norm, causal multi-head attention, GELU MLP, residuals ─────────

const [B, D, HEADS] = [2, 48, 3];
const HD = D / HEADS;
const blockWeights = [
  rand([D], 0.2).add(1), // ln1 weight
  rand([D], 0.1), // ln1 bias
  rand([D, 3 * D], 0.25), // qkv
  rand([3 * D], 0.05),
  rand([D, D], 0.25), // attention output projection
  rand([D], 0.05),
  rand([D], 0.2).add(1), // ln2 weight
  rand([D], 0.1), // ln2 bias
  rand([D, 4 * D], 0.2), // MLP up
  rand([4 * D], 0.05),
  rand([4 * D, D], 0.1), // MLP down
  rand([D], 0.05),
];
function block(x: kiln.Tensor, ...w: kiln.Tensor[]) {
  const [ln1w, ln1b, wqkv, bqkv, wo, bo, ln2w, ln2b, wfc, bfc, wproj, bproj] = w;
  const heads = (t: kiln.Tensor) => t.reshape([B, -1, HEADS, HD]).transpose(1, 2); // [B, H, T, hd]
  const qkv = kiln.layerNorm(x, ln1w, ln1b).matmul(wqkv).add(bqkv);
  const q = heads(qkv.slice(-1, 0, D));
  const k = heads(qkv.slice(-1, D, 2 * D));
  const v = heads(qkv.slice(-1, 2 * D, 3 * D));
  const att = kiln.scaledDotProductAttention(q, k, v, { causal: true }).transpose(1, 2).reshape([B, -1, D]);
  const h = x.add(att.matmul(wo).add(bo));
  const m = kiln.layerNorm(h, ln2w, ln2b).matmul(wfc).add(bfc).gelu().matmul(wproj).add(bproj);
  return h.add(m);
}

// ─── tests ───────────────────────────────────────────────────────────────────────────────

describe('kiln.compile on the CPU', () => {
  const f = compile(mlp, { device: 'cpu', dynamic: { 0: [0] } });

  it('runs an MLP at three batch sizes with one trace and one compile, even for concurrent first calls', async () => {
    const before = counters();
    const xs = [3, 1, 50].map((n) => rand([n, IN]));
    // Two first calls at once share one trace and compile.
    const [r3, r1] = await Promise.all([f(xs[0], ...weights), f(xs[1], ...weights)]);
    const r50 = await f(xs[2], ...weights);
    expect(counters()).toEqual({ traces: before.traces + 1, compiles: before.compiles + 1 });
    for (const [x, got] of [[xs[0], r3], [xs[1], r1], [xs[2], r50]] as const) {
      const want = mlp(x, ...weights);
      expect(Object.keys(got)).toEqual(['logits', 'hidden']);
      expect(got.hidden).toHaveLength(1);
      expect(got.logits.device).toBe('cpu');
      expect(got.logits.shape).toEqual([x.shape[0], OUT]);
      expect(await relErr(got.logits, want.logits)).toBeLessThan(1e-5);
      expect(await relErr(got.hidden[0], want.hidden[0])).toBeLessThan(1e-5);
    }
    expect(f.stats).toEqual({ source: 'memory', traceMs: 0, compileMs: 0, loadMs: 0, kernels: expect.any(Number) });
    expect(f.stats!.kernels).toBeGreaterThanOrEqual(1);
  });

  it('runs a GPT-style block at three sequence lengths with one compile, and reports stats', async () => {
    const g = compile(block, { name: 'gpt-block', dynamic: { 0: [1] } });
    expect(g.stats).toBeUndefined();
    const before = counters();
    const [first, ...rest] = [7, 5, 13].map((t) => rand([B, t, D]));
    const y = await g(first, ...blockWeights);
    const stats = g.stats!;
    expect(stats.source).toBe('compiled');
    expect(stats.traceMs).toBeGreaterThan(0);
    expect(stats.compileMs).toBeGreaterThan(0);
    expect(stats.loadMs).toBeGreaterThanOrEqual(0);
    expect(stats.kernels).toBeGreaterThanOrEqual(2);
    expect(stats.bundleDir).toBeUndefined();
    expect(await relErr(y, block(first, ...blockWeights))).toBeLessThan(1e-5);
    for (const x of rest) {
      expect(await relErr(await g(x, ...blockWeights), block(x, ...blockWeights))).toBeLessThan(1e-5);
      expect(g.stats).toMatchObject({ source: 'memory', traceMs: 0, compileMs: 0, kernels: stats.kernels });
    }
    expect(counters()).toEqual({ traces: before.traces + 1, compiles: before.compiles + 1 });
  });

  it('moves every storage dtype through (f16/bf16 bits, int32, bool), bit-exact with eager, down to size 0', async () => {
    const fn = (x: kiln.Tensor, ids: kiln.Tensor, m: kiln.Tensor) => ({
      half: x.mul(2).add(1),
      brain: x.to('bfloat16').mul(3),
      ints: ids.mul(3).add(ids),
      masked: kiln.where(m, x, 0),
      big: ids.gt(2),
    });
    const h = compile(fn, { dynamic: { 0: [0], 1: [0], 2: [0] } });
    const before = counters();
    for (const n of [4, 0, 7]) {
      const x = kiln.tensor(values(n * 3, 7, 4), [n, 3], 'float16');
      const ids = kiln.tensor(Array.from({ length: n * 3 }, (_, i) => i - 4), [n, 3], 'int32');
      const m = kiln.tensor(Array.from({ length: n * 3 }, (_, i) => i % 2), [n, 3], 'bool');
      const [got, want] = [await h(x, ids, m), fn(x, ids, m)];
      for (const k of Object.keys(want) as (keyof typeof want)[]) {
        expect([got[k].dtype, got[k].shape]).toEqual([want[k].dtype, [n, 3]]);
        expect(await got[k].toArray()).toEqual(await want[k].toArray());
      }
    }
    expect(counters().compiles).toBe(before.compiles + 1);
  });

  it('slices a dynamic dim exactly where its bounds fit inside it, and refuses other sizes with a typed error', async () => {
    const fn = (x: kiln.Tensor) => [x.slice(0, 1, -1), x.slice(0, -3), x.slice(0, 5, 2), x.slice(0, 0, 4).mul(2)];
    const h = compile(fn, { dynamic: { 0: [0] } });
    const at = (n: number) => kiln.tensor(values(n * 2, 5, 3), [n, 2]);
    for (const n of [6, 4, 9]) {
      const [got, want] = [await h(at(n)), fn(at(n))];
      for (let i = 0; i < want.length; i++) {
        expect(got[i].shape).toEqual(want[i].shape);
        expect(await got[i].toArray()).toEqual(await want[i].toArray());
      }
    }
    // Example sizes outside a guard are refused by the trace, before anything is compiled.
    const before = counters();
    const narrow = compile((x: kiln.Tensor) => x.slice(0, -3, 2), { dynamic: { 0: [0] } });
    await expect(narrow(at(6))).rejects.toMatchObject({ code: 'KILN_SHAPE_GUARD', message: expect.stringMatching(/slice\(0, -3, 2\) at .*between 3 and 5, but these inputs make it 6/) });
    expect(counters().compiles).toBe(before.compiles);
    // Below 4 rows, slice(0, 0, 4) would be clamped: no out-of-bounds read, a ShapeError naming it.
    for (const n of [3, 0]) {
      const err = await h(at(n)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(kiln.KilnError);
      expect(err).toMatchObject({ code: 'KILN_SHAPE_GUARD', message: expect.stringMatching(new RegExp(`compile\\.test\\.ts:\\d+:\\d+ needs the dynamic size s0 to be at least \\d, but these inputs make it ${n}`)) });
    }
  });

  it('refuses out-of-range embedding ids as eager execution does, instead of clamping them', async () => {
    const fn = (ids: kiln.Tensor, table: kiln.Tensor) => kiln.embedding(ids.reshape([-1]), table).mul(2);
    const h = compile(fn, { dynamic: { 0: [0] } });
    const table = rand([5, 3]);
    const ids = (v: number[]) => kiln.tensor(v, [v.length], 'int32');
    expect(await (await h(ids([4, 0, 2]), table)).toArray()).toEqual(await fn(ids([4, 0, 2]), table).toArray());
    for (const bad of [[1, 5], [-1, 2]]) {
      expect(() => fn(ids(bad), table)).toThrow(expect.objectContaining({ code: 'KILN_INDEX_OUT_OF_RANGE' }));
      const err = await h(ids(bad), table).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'KILN_INDEX_OUT_OF_RANGE', message: expect.stringMatching(new RegExp(`index ${bad.find((v) => v < 0 || v > 4)} \\(input 0\\) is out of range for a table of 5 rows`)) });
    }
    // Through a view, exactly the ids the gather reads are checked: a dropped one may be anything.
    const tail = (i: kiln.Tensor, t: kiln.Tensor) => kiln.embedding(i.slice(0, 1), t);
    const ht = compile(tail, { dynamic: { 0: [0] } });
    expect(await (await ht(ids([9, 1, 2]), table)).toArray()).toEqual(await tail(ids([9, 1, 2]), table).toArray());
    await expect(ht(ids([0, 9, 1]), table)).rejects.toMatchObject({ code: 'KILN_INDEX_OUT_OF_RANGE' });
  });

  describe('checks every call against the compiled signature, naming the input', () => {
    const x = rand([4, IN]);
    const loose = f as unknown as (...args: unknown[]) => Promise<unknown>;
    it.each([
      ['too few inputs', () => loose(x, w1, b1), 'KILN_INPUT_COUNT', /expected 6 inputs \(float32\[\?,37\], float32\[37,50\], .*got 3/],
      ['a non-tensor', () => loose(x, w1, 2, w2, b2, b3), 'KILN_INPUT_TYPE', /input 2 must be a kiln Tensor.*got number/],
      ['a wrong static dim', () => f(rand([4, IN + 1]), ...weights), 'KILN_INPUT_SHAPE', /input 0 dim 1 must be 37 \(compiled for float32\[\?,37\]\), got float32\[4,38\]/],
      ['a wrong rank', () => f(x, w1, b1, w2, b2, rand([OUT, 1])), 'KILN_INPUT_SHAPE', /input 5 must have rank 1 .*got float32\[11,1\]/],
      ['a wrong dtype', () => f(x.to('float16'), ...weights), 'KILN_INPUT_DTYPE', /input 0 must be float32 .*got float16\[4,37\]/],
    ])('%s', async (_, call, code, message) => {
      const before = counters();
      const err = await call().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(kiln.KilnError);
      expect(err).toMatchObject({ code, message: expect.stringMatching(message) });
      expect(counters()).toEqual(before);
    });
  });
});
