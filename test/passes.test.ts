/**
 * lib/passes without a compiler: the view algebra against direct index math on random
 * shapes (static and symbolic), the rewrite rules, and arena placement.
 */
import { NodeTable, sym, type Dim, type Graph, type Node } from '../lib/ir';
import type { LaunchPlan, PlanBuffer } from '../lib/ir/plan';
import {
  arenaLayout,
  evalIExpr,
  evalValid,
  graphRewrite,
  indexOf,
  ivar,
  lower,
  optimize,
  peakBytes,
  viewOf,
  type Move,
  type Rule,
} from '../lib/passes';
import { trace } from '../lib/tensor/trace';
import type { Tensor } from '../lib/tensor/tensor';
import { Rng } from './helpers/ref';

// ---- views ------------------------------------------------------------------------------

/** A tensor of source positions: data[i] is the base element at position i, or -1 (padding). */
interface Ref {
  shape: number[];
  data: number[];
}

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
function unravel(i: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return out;
}
const ravel = (idx: readonly number[], shape: readonly number[]): number => idx.reduce((a, x, d) => a * shape[d] + x, 0);

/** Direct index math for each movement op. */
function refMove(r: Ref, m: Move): Ref {
  const n = (shape: number[], at: (idx: number[]) => number): Ref => ({ shape, data: Array.from({ length: numel(shape) }, (_, i) => at(unravel(i, shape))) });
  switch (m.op) {
    case 'RESHAPE':
      return { shape: m.arg as number[], data: r.data };
    case 'PERMUTE': {
      const p = m.arg;
      return n(p.map((q) => r.shape[q]), (idx) => {
        const src = new Array<number>(p.length);
        p.forEach((q, i) => (src[q] = idx[i]));
        return r.data[ravel(src, r.shape)];
      });
    }
    case 'EXPAND':
      return n(m.arg as number[], (idx) => r.data[ravel(idx.map((x, d) => (r.shape[d] === 1 ? 0 : x)), r.shape)]);
    case 'SHRINK':
      return n(
        m.arg.map(([s, e, st]) => Math.ceil(((e as number) - (s as number)) / st)),
        (idx) => r.data[ravel(idx.map((x, d) => (m.arg[d][0] as number) + x * m.arg[d][2]), r.shape)],
      );
    case 'PAD':
      return n(
        r.shape.map((s, d) => s + (m.arg[d][0] as number) + (m.arg[d][1] as number)),
        (idx) => {
          const src = idx.map((x, d) => x - (m.arg[d][0] as number));
          return src.every((x, d) => x >= 0 && x < r.shape[d]) ? r.data[ravel(src, r.shape)] : -1;
        },
      );
    default:
      return m satisfies never;
  }
}

/** A random movement op valid for `shape`. */
function randomMove(rng: Rng, shape: number[]): Move {
  const rank = shape.length;
  const kind = rng.int(0, 6);
  if (kind === 0 && rank > 1) {
    const p = shape.map((_, i) => i).sort(() => rng.next() - 0.5);
    return { op: 'PERMUTE', arg: p };
  }
  if (kind === 1) {
    const ones = shape.map((s, i) => (s === 1 ? i : -1)).filter((i) => i >= 0);
    if (ones.length) return { op: 'EXPAND', arg: shape.map((s, i) => (ones.includes(i) && rng.next() < 0.7 ? rng.int(2, 4) : s)) };
  }
  if (kind === 2) {
    return {
      op: 'SHRINK',
      arg: shape.map((s) => {
        const a = rng.int(0, s);
        const b = rng.int(a + 1, s + 1);
        return [a, b, rng.int(1, 3)] as const;
      }),
    };
  }
  if (kind === 3) return { op: 'PAD', arg: shape.map(() => [rng.int(0, 2), rng.int(0, 2)] as const) };
  // RESHAPE: split one dim, merge two, or insert / remove a 1.
  const d = rng.int(0, rank);
  const s = shape[d];
  const f = [2, 3, 5].find((q) => s % q === 0 && s > q);
  if (kind === 4 && f) return { op: 'RESHAPE', arg: [...shape.slice(0, d), f, s / f, ...shape.slice(d + 1)] };
  if (kind === 5 && d + 1 < rank) return { op: 'RESHAPE', arg: [...shape.slice(0, d), s * shape[d + 1], ...shape.slice(d + 2)] };
  return { op: 'RESHAPE', arg: shape[d] === 1 && rank > 1 ? [...shape.slice(0, d), ...shape.slice(d + 1)] : [...shape.slice(0, d), 1, ...shape.slice(d)] };
}

describe('views: index arithmetic against direct index math', () => {
  test('random chains of movement ops on random shapes', () => {
    const rng = new Rng(12345);
    let stacked = 0;
    for (let trial = 0; trial < 400; trial++) {
      const base = Array.from({ length: rng.int(1, 4) }, () => rng.int(1, 6));
      let ref: Ref = { shape: base, data: Array.from({ length: numel(base) }, (_, i) => i) };
      const moves: Move[] = [];
      for (let k = rng.int(1, 7); k > 0; k--) {
        const m = randomMove(rng, ref.shape);
        moves.push(m);
        ref = refMove(ref, m);
      }
      const view = viewOf(base, moves);
      if (view.length > 1) stacked++;
      const vars = ref.shape.map((_, d) => ivar(`x${d}`));
      const { index, valid } = indexOf(view, vars);
      for (let i = 0; i < ref.data.length; i++) {
        const env = Object.fromEntries(unravel(i, ref.shape).map((x, d) => [`x${d}`, x]));
        const got = evalValid(valid, env) ? evalIExpr(index, env) : -1;
        if (got !== ref.data[i]) throw new Error(`trial ${trial}: ${JSON.stringify(moves)} at ${i}: got ${got}, want ${ref.data[i]}`);
      }
    }
    expect(stacked).toBeGreaterThan(0); // some chains needed a second view
  });

  test('symbolic dims: one view through splits and merges, correct at several sizes', () => {
    const s0 = sym('s0');
    const moves: Move[] = [
      { op: 'RESHAPE', arg: [s0, 4, 6] },
      { op: 'PERMUTE', arg: [1, 0, 2] },
      { op: 'SHRINK', arg: [[1, 3, 1], [0, s0, 1], [0, 6, 2]] },
    ];
    const view = viewOf([s0, 24] as Dim[], moves);
    expect(view).toHaveLength(1);
    for (const n of [1, 2, 5]) {
      let ref: Ref = { shape: [n, 24], data: Array.from({ length: n * 24 }, (_, i) => i) };
      const concrete: Move[] = [
        { op: 'RESHAPE', arg: [n, 4, 6] },
        { op: 'PERMUTE', arg: [1, 0, 2] },
        { op: 'SHRINK', arg: [[1, 3, 1], [0, n, 1], [0, 6, 2]] },
      ];
      for (const m of concrete) ref = refMove(ref, m);
      const { index } = indexOf(view, ref.shape.map((_, d) => ivar(`x${d}`)));
      ref.data.forEach((want, i) => {
        const env = Object.fromEntries(unravel(i, ref.shape).map((x, d) => [`x${d}`, x]));
        expect(evalIExpr(index, env, { s0: n })).toBe(want);
      });
    }
  });

  test('reshape merges compatible dims and stacks otherwise', () => {
    expect(viewOf([4, 6], [{ op: 'RESHAPE', arg: [24] }, { op: 'RESHAPE', arg: [2, 12] }])).toHaveLength(1);
    expect(viewOf([4, 6], [{ op: 'PERMUTE', arg: [1, 0] }, { op: 'RESHAPE', arg: [24] }])).toHaveLength(2);
    expect(viewOf([4, 6], [{ op: 'PERMUTE', arg: [1, 0] }, { op: 'RESHAPE', arg: [3, 2, 4] }])).toHaveLength(1); // split only
    const s = sym('s0');
    expect(viewOf([s, 768], [{ op: 'RESHAPE', arg: [s, 12, 64] }, { op: 'RESHAPE', arg: [s, 768] }])).toHaveLength(1);
  });
});

// ---- rewrite rules ----------------------------------------------------------------------

function graphOf(t: NodeTable, inputs: Node[], out: Node): Graph {
  return { inputs, outputs: [out], outputStructure: { kind: 'tensor', index: 0 }, constants: new Map(), symbols: [], sites: new Map(), files: [], table: t };
}

describe('rewrite rules', () => {
  const t = new NodeTable();
  const x = t.make('INPUT', [], 0, { dtype: 'float32', shape: [4, 6] });
  const c = (v: number, shape: Dim[] = [4, 6]): Node => t.make('EXPAND', [t.make('RESHAPE', [t.make('CONST', [], v, { dtype: 'float32' })], [1, 1])], shape);
  const opt = (out: Node): Node => optimize(graphOf(t, [x], out)).outputs[0];

  test('identities disappear', () => {
    expect(opt(t.make('ADD', [x, c(-0)], null))).toBe(x); // x + 0 stays for floats: -0 + 0 is +0
    expect(opt(t.make('MUL', [c(1), x], null))).toBe(x);
    expect(opt(t.make('DIV', [x, c(1)], null))).toBe(x);
    expect(opt(t.make('NEG', [t.make('NEG', [x], null)], null))).toBe(x);
    expect(opt(t.make('CAST', [t.make('CAST', [t.make('CAST', [x], null, { dtype: 'float16' })], null, { dtype: 'float32' })], null, { dtype: 'float16' }))).toBe(
      t.make('CAST', [x], null, { dtype: 'float16' }),
    );
  });
  test('movement ops compose', () => {
    const rr = t.make('RESHAPE', [t.make('RESHAPE', [x], [24])], [6, 4]);
    expect(opt(rr)).toBe(t.make('RESHAPE', [x], [6, 4]));
    expect(opt(t.make('RESHAPE', [t.make('RESHAPE', [x], [24])], [4, 6]))).toBe(x);
    expect(opt(t.make('PERMUTE', [t.make('PERMUTE', [x], [1, 0])], [1, 0]))).toBe(x);
    const e = t.make('EXPAND', [t.make('RESHAPE', [x], [1, 4, 6])], [3, 4, 6]);
    expect(opt(t.make('EXPAND', [e], [3, 4, 6]))).toBe(e);
  });
  test('constants fold exactly, x*0 stays', () => {
    expect(opt(t.make('MUL', [c(2), c(3)], null))).toBe(c(6));
    expect(opt(t.make('ADD', [c(0.1), c(0.2)], null))).toBe(c(Math.fround(Math.fround(0.1) + Math.fround(0.2))));
    const times0 = t.make('MUL', [x, c(0)], null);
    expect(opt(times0)).toBe(times0);
    expect(opt(t.make('WHERE', [t.make('CMPLT', [c(1), c(2)], null), x, c(5)], null))).toBe(x);
  });
  test('graphRewrite runs custom rules to a fixed point', () => {
    const rule: Rule = { name: 'exp-log', pattern: { op: 'EXP', src: [{ op: 'LOG', src: [{ name: 'y' }] }] }, rewrite: (m) => m.y };
    const deep = t.make('EXP', [t.make('LOG', [t.make('EXP', [t.make('LOG', [x], null)], null)], null)], null);
    expect(graphRewrite(graphOf(t, [x], deep), [rule]).outputs[0]).toBe(x);
  });
  test('dead constants leave the graph', () => {
    const g = trace((a: Tensor) => a.mul(1), [{ shape: [3] }]);
    expect(optimize(g).outputs[0]).toBe(g.inputs[0]);
  });
});

// ---- memory -----------------------------------------------------------------------------

function plan(temps: [number, number, number][]): LaunchPlan {
  const buffers: PlanBuffer[] = temps.map(([elems, first, last], id) => ({ id, dtype: 'float32', elems, role: 'temp', first, last }));
  return { version: 1, symbols: [], buffers, steps: [], outputs: [] };
}

describe('arena', () => {
  test('temps with disjoint lifetimes share bytes; overlapping ones never do', () => {
    const p = plan([
      [100, 0, 1],
      [50, 1, 2],
      [100, 2, 3],
      [10, 0, 3],
    ]);
    const { offsets, bytes } = arenaLayout(p, {});
    expect(offsets.get(0)).toBe(offsets.get(2));
    expect(bytes).toBeLessThan(4 * (100 + 50 + 100 + 10));
    for (const a of p.buffers)
      for (const b of p.buffers) {
        if (a.id >= b.id || a.last < b.first || b.last < a.first) continue;
        const [oa, ob] = [offsets.get(a.id)!, offsets.get(b.id)!];
        expect(oa + 4 * (a.elems as number) <= ob || ob + 4 * (b.elems as number) <= oa).toBe(true);
      }
    expect([...offsets.values()].every((o) => o % 64 === 0)).toBe(true);
  });

  test('a chain of matmuls reuses arena space at every size of a dynamic dim', () => {
    const g = trace((x: Tensor, w: Tensor) => x.matmul(w).exp().matmul(w).exp().matmul(w).exp().matmul(w), [{ shape: [4, 16] }, { shape: [16, 16] }], { dynamic: { 0: [0] } });
    const p = lower(g);
    const temps = p.plan.buffers.filter((b) => b.role === 'temp');
    expect(temps.length).toBeGreaterThanOrEqual(3);
    for (const s0 of [1, 10, 1000]) {
      const { bytes } = arenaLayout(p.plan, { s0 });
      expect(bytes).toBeLessThan(temps.length * s0 * 16 * 4);
      expect(bytes).toBeGreaterThanOrEqual(2 * s0 * 16 * 4);
      expect(peakBytes(p.plan, { s0 })).toBeGreaterThanOrEqual(bytes);
    }
  });
});
