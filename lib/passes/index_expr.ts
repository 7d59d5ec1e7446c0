/**
 * Index arithmetic: tiny integer expressions over loop variables and symbolic dims, built
 * by views (lib/passes/view.ts) and printed by the renderers. Smart constructors fold
 * constants and drop identities so that the common strided case prints as `i0*768+i1`.
 * All values are non-negative, so C's truncating `/` and `%` equal floor division.
 */
import { dimAdd, dimMul, dimSub, evalDim, isStatic, type Dim } from '../ir';

/** An integer index expression. `dim` leaves are static numbers or symbolic dims. */
export type IExpr =
  | { readonly k: 'dim'; readonly d: Dim }
  | { readonly k: 'var'; readonly name: string }
  | { readonly k: 'add'; readonly a: IExpr; readonly b: IExpr }
  | { readonly k: 'mul'; readonly a: IExpr; readonly b: IExpr }
  | { readonly k: 'div'; readonly a: IExpr; readonly b: IExpr }
  | { readonly k: 'mod'; readonly a: IExpr; readonly b: IExpr };

/** A validity predicate: a conjunction of `lo <= e < hi` bounds (empty = always true). */
export type Bound = { readonly e: IExpr; readonly lo: Dim; readonly hi: Dim };
export type Valid = readonly Bound[];

/** The expression of a dim (number or symbol polynomial). */
export function idim(d: Dim): IExpr {
  return { k: 'dim', d };
}

/** A loop variable. */
export function ivar(name: string): IExpr {
  return { k: 'var', name };
}

const num = (e: IExpr): number | undefined => (e.k === 'dim' && isStatic(e.d) ? e.d : undefined);

/** a + b, folding dims together. */
export function iadd(a: IExpr, b: IExpr): IExpr {
  if (num(a) === 0) return b;
  if (num(b) === 0) return a;
  if (a.k === 'dim' && b.k === 'dim') return idim(dimAdd(a.d, b.d));
  // Keep the constant part on the right so that `x*s + c` prints naturally.
  if (a.k === 'dim') return { k: 'add', a: b, b: a };
  return { k: 'add', a, b };
}

/** a * b, folding dims and dropping ×1 / ×0. */
export function imul(a: IExpr, b: IExpr): IExpr {
  if (num(a) === 0 || num(b) === 0) return idim(0);
  if (num(a) === 1) return b;
  if (num(b) === 1) return a;
  if (a.k === 'dim' && b.k === 'dim') return idim(dimMul(a.d, b.d));
  if (a.k === 'dim') return { k: 'mul', a: b, b: a };
  return { k: 'mul', a, b };
}

/** floor(a / b) for non-negative a and positive b. */
export function idiv(a: IExpr, b: IExpr): IExpr {
  if (num(b) === 1) return a;
  if (num(a) === 0) return idim(0);
  const na = num(a);
  const nb = num(b);
  if (na !== undefined && nb !== undefined) return idim(Math.floor(na / nb));
  return { k: 'div', a, b };
}

/** a mod b for non-negative a and positive b. */
export function imod(a: IExpr, b: IExpr): IExpr {
  if (num(b) === 1 || num(a) === 0) return idim(0);
  const na = num(a);
  const nb = num(b);
  if (na !== undefined && nb !== undefined) return idim(na % nb);
  return { k: 'mod', a, b };
}

/** Σ terms. */
export function isum(terms: readonly IExpr[]): IExpr {
  return terms.reduce<IExpr>((s, t) => iadd(s, t), idim(0));
}

/** Value of an expression given loop variables and symbol values (tests, planning). */
export function evalIExpr(e: IExpr, vars: Readonly<Record<string, number>>, syms: Readonly<Record<string, number>> = {}): number {
  switch (e.k) {
    case 'dim':
      return evalDim(e.d, syms);
    case 'var': {
      const v = vars[e.name];
      if (v === undefined) throw new Error(`index variable ${e.name} is unbound`);
      return v;
    }
    case 'add':
      return evalIExpr(e.a, vars, syms) + evalIExpr(e.b, vars, syms);
    case 'mul':
      return evalIExpr(e.a, vars, syms) * evalIExpr(e.b, vars, syms);
    case 'div':
      return Math.floor(evalIExpr(e.a, vars, syms) / evalIExpr(e.b, vars, syms));
    case 'mod':
      return evalIExpr(e.a, vars, syms) % evalIExpr(e.b, vars, syms);
    default:
      return e satisfies never;
  }
}

/** True when every bound of `v` holds. */
export function evalValid(v: Valid, vars: Readonly<Record<string, number>>, syms: Readonly<Record<string, number>> = {}): boolean {
  return v.every((b) => {
    const x = evalIExpr(b.e, vars, syms);
    return x >= evalDim(b.lo, syms) && x < evalDim(b.hi, syms);
  });
}

/** The loop variables an expression reads. */
export function iexprVars(e: IExpr, out: Set<string> = new Set()): Set<string> {
  if (e.k === 'var') out.add(e.name);
  else if (e.k !== 'dim') {
    iexprVars(e.a, out);
    iexprVars(e.b, out);
  }
  return out;
}

/** Replace variables by expressions (used to index a gathered row). */
export function substitute(e: IExpr, map: Readonly<Record<string, IExpr>>): IExpr {
  switch (e.k) {
    case 'dim':
      return e;
    case 'var':
      return map[e.name] ?? e;
    case 'add':
      return iadd(substitute(e.a, map), substitute(e.b, map));
    case 'mul':
      return imul(substitute(e.a, map), substitute(e.b, map));
    case 'div':
      return idiv(substitute(e.a, map), substitute(e.b, map));
    case 'mod':
      return imod(substitute(e.a, map), substitute(e.b, map));
    default:
      return e satisfies never;
  }
}

/** Σ coef·var + constant, when `e` is affine in its variables (coefficients may be symbolic dims). */
function affine(e: IExpr): { terms: Map<string, Dim>; c: Dim } | undefined {
  switch (e.k) {
    case 'dim':
      return { terms: new Map(), c: e.d };
    case 'var':
      return { terms: new Map([[e.name, 1]]), c: 0 };
    case 'add': {
      const [a, b] = [affine(e.a), affine(e.b)];
      if (!a || !b) return undefined;
      for (const [v, k] of b.terms) a.terms.set(v, dimAdd(a.terms.get(v) ?? 0, k));
      return { terms: a.terms, c: dimAdd(a.c, b.c) };
    }
    case 'mul': {
      const [a, b] = [affine(e.a), affine(e.b)];
      if (!a || !b) return undefined;
      const [f, k] = a.terms.size === 0 ? [b, a.c] : b.terms.size === 0 ? [a, b.c] : [undefined, 0];
      if (!f) return undefined;
      return { terms: new Map([...f.terms].map(([v, x]) => [v, dimMul(x, k)])), c: dimMul(f.c, k) };
    }
    default:
      return undefined;
  }
}

/**
 * `e` as `coef·v + rest` with `rest` free of `v` (`rest(-1)`: −rest), when `e` is affine
 * (undefined otherwise; coef 0 when `e` does not read `v`). Used to split a loop where a mask bound changes value.
 */
export function linearIn(e: IExpr, v: string): { coef: Dim; rest: (sign: 1 | -1) => IExpr } | undefined {
  const a = affine(e);
  if (!a) return undefined;
  const terms = [...a.terms].filter(([name]) => name !== v);
  const rest = (sign: 1 | -1): IExpr => iadd(isum(terms.map(([name, k]) => imul(ivar(name), idim(dimMul(k, sign))))), idim(dimMul(a.c, sign)));
  return { coef: a.terms.get(v) ?? 0, rest };
}

/**
 * The least and greatest value of `e` over loop variables in [0, extent), when `e` is affine
 * with a static constant and static coefficients: each bound is NaN where it depends on a
 * symbolic extent (a variable with a positive coefficient still adds at least 0).
 */
export function irange(e: IExpr, ranges: ReadonlyMap<string, Dim>): { min: number; max: number } | undefined {
  const a = affine(e);
  if (!a || !isStatic(a.c)) return undefined;
  let [min, max] = [a.c, a.c];
  for (const [v, k] of a.terms) {
    const n = ranges.get(v);
    if (!isStatic(k) || n === undefined) return undefined;
    const span = isStatic(n) ? k * (n - 1) : NaN; // NaN: unknown, but of k's sign
    min += k >= 0 ? 0 : span;
    max += k <= 0 ? 0 : span;
  }
  return { min, max };
}

/**
 * True when `d` >= 0 for every value of its size variables, taken >= 1 (a symbol of 0 would
 * make the tensors around it empty: no index is ever evaluated): after substituting each
 * variable by 1 + t, every coefficient is non-negative. Sufficient, not necessary.
 */
function nonneg(d: Dim): boolean {
  if (isStatic(d)) return d >= 0;
  const shifted = new Map<string, number>();
  for (const t of d.terms) {
    // coef * Π (1 + t_v): every sub-multiset of the term's variables is one monomial.
    let monos: string[][] = [[]];
    for (const v of t.vars) monos = monos.flatMap((mono) => [mono, [...mono, v]]);
    for (const mono of monos) {
      const key = mono.sort().join('*');
      shifted.set(key, (shifted.get(key) ?? 0) + t.coef);
    }
  }
  return [...shifted.values()].every((c) => c >= 0);
}
const le = (a: Dim, b: Dim): boolean => nonneg(dimSub(b, a));
/** The candidate provably >= (or, `least`, <=) all others, if one is. */
function extreme(cands: readonly Dim[], least: boolean): Dim | undefined {
  return cands.find((c) => cands.every((o) => (least ? le(c, o) : le(o, c))));
}

/**
 * Simplifies bounds `lo <= (a % m) < hi` where `a` is affine in loop variables of known
 * extents (`ranges[v]`; the variable runs over 0..extent-1; extents, m, lo and hi may be
 * symbolic sizes). Such masks come from reshapes of padded tensors: torch.tril/triu as
 * kiln builds them is a padded row of ones reshaped, which a causal-attention kernel then
 * tests per element as `((i1*255 + i2) % 256) >= 1 && ... < 128` (with a dynamic length
 * T: `% (2*T)`, the coefficient 2*T-1). Since a ≡ a' (mod m) with a' = a's coefficients
 * reduced to small constants, and a' ranges over less than one period on either side of
 * 0, a % m is a' or a' + m, and when one of the two cases is provably empty the bound is
 * one comparison of a' — here `i2 - i1 >= 1`. The result may compare negative values; it
 * is only ever compared, never divided. Anything not provably of this form is kept.
 */
export function simplifyValid(valid: Valid, ranges: ReadonlyMap<string, Dim>): Bound[] {
  return valid.flatMap((b): Bound[] => {
    if (b.e.k !== 'mod' || b.e.b.k !== 'dim') return [b];
    const m = b.e.b.d;
    const a = affine(b.e.a);
    if (!a || !le(1, m)) return [b];
    /** x - j*m for the j that makes it a small constant (static m: into (-m/2, m/2]). */
    const reduce = (x: Dim): number | undefined => {
      if (isStatic(x) && isStatic(m)) {
        const r = ((x % m) + m) % m;
        return r > m / 2 ? r - m : r;
      }
      for (const j of [0, 1, -1, 2, -2]) {
        const y = dimSub(x, dimMul(m, j));
        if (isStatic(y)) return y;
      }
      return undefined;
    };
    let c = a.c;
    if (isStatic(c) && isStatic(m)) c = ((c % m) + m) % m;
    else if (!(le(0, c) && le(c, dimSub(m, 1)))) {
      const r = reduce(c);
      if (r === undefined) return [b];
      c = r < 0 ? dimAdd(r, m) : r;
      if (!(le(0, c) && le(c, dimSub(m, 1)))) return [b];
    }
    let min: Dim = c;
    let max: Dim = c;
    const terms: IExpr[] = [];
    for (const [v, k0] of a.terms) {
      const k = reduce(k0);
      const n = ranges.get(v);
      if (k === undefined || n === undefined || !le(1, n)) return [b];
      if (k === 0) continue;
      const span = dimMul(dimSub(n, 1), k);
      if (k < 0) min = dimAdd(min, span);
      else max = dimAdd(max, span);
      terms.push(imul(ivar(v), idim(k)));
    }
    // a' must stay within one period either side of 0: -m <= min and max < m.
    if (!le(dimMul(m, -1), min) || !le(max, dimSub(m, 1))) return [b];
    // Case a' >= 0: a % m = a'; case a' < 0: a % m = a' + m. Each is an interval of a'.
    const cases = [
      [extreme([b.lo, 0, min], false), extreme([b.hi, m, dimAdd(max, 1)], true)],
      [extreme([dimSub(b.lo, m), min], false), extreme([dimSub(b.hi, m), 0, dimAdd(max, 1)], true)],
    ];
    if (cases.some(([lo, hi]) => lo === undefined || hi === undefined)) return [b];
    const live = (cases as [Dim, Dim][]).filter(([lo, hi]) => !le(hi, lo));
    if (live.length !== 1) return [b];
    const [lo, hi] = live[0];
    if (le(lo, min) && le(dimAdd(max, 1), hi)) return []; // always true
    // Renderers drop a static lower bound <= 0 (view coordinates are never negative); this
    // one may be negative, so it is shifted to start at 1 unless every value satisfies it.
    const shift = isStatic(lo) && lo <= 0 && !le(lo, min) ? 1 - lo : 0;
    return [{ e: iadd(isum(terms), idim(dimAdd(c, shift))), lo: dimAdd(lo, shift), hi: dimAdd(hi, shift) }];
  });
}
