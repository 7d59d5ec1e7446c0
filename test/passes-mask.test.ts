/**
 * simplifyValid (lib/passes/index_expr.ts): masks `lo <= (affine % m) < hi` over loop
 * variables of known extent become one comparison of an affine expression where that is
 * exact. Checked point by point against the original predicate, on the causal mask that
 * kiln's tril produces and on random affine forms.
 */
import { dimAdd, dimMul, sym } from '../lib/ir';
import { evalIExpr, evalValid, iadd, idim, imod, imul, isum, ivar, simplifyValid, type Bound } from '../lib/passes';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Every point of the ranges (at most a few thousand). */
function* points(ranges: Map<string, number>): Generator<Record<string, number>> {
  const names = [...ranges.keys()];
  const idx = names.map(() => 0);
  for (;;) {
    yield Object.fromEntries(names.map((n, i) => [n, idx[i]]));
    let d = names.length - 1;
    while (d >= 0 && ++idx[d] === ranges.get(names[d])!) idx[d--] = 0;
    if (d < 0) return;
  }
}

function same(valid: Bound[], ranges: Map<string, number>): Bound[] {
  const out = simplifyValid(valid, ranges);
  for (const p of points(ranges)) {
    expect([p, evalValid(out, p)]).toEqual([p, evalValid(valid, p)]);
    // Renderers drop lower bounds <= 0 (view coordinates are never negative): such a bound
    // must hold everywhere, even where the new expression is negative.
    for (const b of out) if (typeof b.lo === 'number' && b.lo <= 0) expect(evalIExpr(b.e, p)).toBeGreaterThanOrEqual(b.lo);
  }
  return out;
}

describe('simplifyValid', () => {
  it("turns tril's ((i*255 + j) % 256) in [1, 128) into one comparison j - i >= 1", () => {
    const ranges = new Map([
      ['i1', 128],
      ['i2', 128],
    ]);
    const e = imod(iadd(imul(ivar('i1'), idim(255)), ivar('i2')), idim(256));
    const out = same([{ e, lo: 1, hi: 128 }], ranges);
    expect(out).toHaveLength(1);
    expect(JSON.stringify(out[0].e)).not.toContain('mod');
  });

  it('does the same for a dynamic sequence length T: ((i1*(2T-1) + i2) % 2T) in [1, T)', () => {
    const T = sym('s0');
    const e = imod(iadd(imul(ivar('i1'), idim(dimAdd(dimMul(T, 2), -1))), ivar('i2')), idim(dimMul(T, 2)));
    const valid: Bound[] = [{ e, lo: 1, hi: T }];
    const out = simplifyValid(valid, new Map([['i1', T], ['i2', T]]));
    expect(out).toHaveLength(1);
    expect(JSON.stringify(out[0].e)).not.toContain('mod');
    for (const n of [1, 2, 3, 7, 16, 33]) {
      for (let i1 = 0; i1 < n; i1++)
        for (let i2 = 0; i2 < n; i2++) {
          const p = { i1, i2 };
          expect([n, p, evalValid(out, p, { s0: n })]).toEqual([n, p, evalValid(valid, p, { s0: n })]);
        }
    }
  });

  it('keeps every point of random affine masks', () => {
    const r = rng(12345);
    const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
    let simplified = 0;
    for (let t = 0; t < 300; t++) {
      const nv = int(1, 3);
      const ranges = new Map(Array.from({ length: nv }, (_, v) => [`i${v}`, int(1, 12)] as [string, number]));
      const m = int(2, 40);
      const terms = [...ranges.keys()].map((v) => imul(ivar(v), idim(int(0, 3 * m))));
      const e = imod(iadd(isum(terms), idim(int(0, 2 * m))), idim(m));
      const lo = int(0, m);
      const hi = int(lo, m + 1);
      const out = same([{ e, lo, hi }], ranges);
      if (out.length !== 1 || out[0].e.k !== 'mod') simplified++;
    }
    expect(simplified).toBeGreaterThan(30);
  });
});
