/**
 * Index arithmetic: tiny integer expressions over loop variables and symbolic dims, built
 * by views (lib/passes/view.ts) and printed by the renderers. Smart constructors fold
 * constants and drop identities so that the common strided case prints as `i0*768+i1`.
 * All values are non-negative, so C's truncating `/` and `%` equal floor division.
 */
import { dimAdd, dimMul, evalDim, isStatic, type Dim } from '../ir';

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

/** Σ coef·var + constant, when `e` is affine in its variables with static integer coefficients. */
function affine(e: IExpr): { terms: Map<string, number>; c: number } | undefined {
  switch (e.k) {
    case 'dim':
      return isStatic(e.d) ? { terms: new Map(), c: e.d } : undefined;
    case 'var':
      return { terms: new Map([[e.name, 1]]), c: 0 };
    case 'add': {
      const [a, b] = [affine(e.a), affine(e.b)];
      if (!a || !b) return undefined;
      for (const [v, k] of b.terms) a.terms.set(v, (a.terms.get(v) ?? 0) + k);
      return { terms: a.terms, c: a.c + b.c };
    }
    case 'mul': {
      const [a, b] = [affine(e.a), affine(e.b)];
      if (!a || !b) return undefined;
      const [f, k] = a.terms.size === 0 ? [b, a.c] : b.terms.size === 0 ? [a, b.c] : [undefined, 0];
      if (!f) return undefined;
      return { terms: new Map([...f.terms].map(([v, x]) => [v, x * k])), c: f.c * k };
    }
    default:
      return undefined;
  }
}

/**
 * Simplifies bounds `lo <= (a % m) < hi` where `a` is affine in loop variables of known
 * ranges (`ranges[v]` = the variable's extent; it runs over 0..extent-1) and m is static.
 * Such masks come from reshapes of padded tensors: torch.tril/triu as kiln builds them is
 * a padded row of ones reshaped, which a causal-attention kernel then tests per element as
 * `((i1*255 + i2) % 256) >= 1 && ... < 128`. Since a ≡ a' (mod m) with a' = a's
 * coefficients reduced into (-m/2, m/2], and a' ranges over less than one period, a % m is
 * a' or a' + m, and the bound becomes one comparison of a' — here `i2 - i1 >= 1`. The
 * result may compare negative values; it is only ever compared, never divided. Bounds that
 * do not have this form, or need two cases, are kept as they are.
 */
export function simplifyValid(valid: Valid, ranges: ReadonlyMap<string, number>): Bound[] {
  return valid.flatMap((b): Bound[] => {
    if (b.e.k !== 'mod' || !isStatic(b.lo) || !isStatic(b.hi)) return [b];
    const m = num(b.e.b);
    const a = affine(b.e.a);
    if (m === undefined || m <= 0 || !a) return [b];
    const red = (x: number): number => {
      const r = ((x % m) + m) % m;
      return r > m / 2 ? r - m : r;
    };
    let min = ((a.c % m) + m) % m;
    let max = min;
    const terms: IExpr[] = [];
    for (const [v, k0] of a.terms) {
      const k = red(k0);
      const n = ranges.get(v);
      if (n === undefined || n <= 0) return [b];
      if (k === 0) continue;
      min += Math.min(0, k * (n - 1));
      max += Math.max(0, k * (n - 1));
      terms.push(imul(ivar(v), idim(k)));
    }
    if (min < -m || max >= m) return [b];
    // Case a' >= 0: a % m = a'; case a' < 0: a % m = a' + m. Each an interval of a'.
    const pos: [number, number] = [Math.max(b.lo, 0, min), Math.min(b.hi, m, max + 1)];
    const neg: [number, number] = [Math.max(b.lo - m, min), Math.min(b.hi - m, 0, max + 1)];
    const live = [pos, neg].filter(([lo, hi]) => lo < hi);
    if (live.length !== 1) return [b];
    const [lo, hi] = live[0];
    if (lo <= min && hi > max) return []; // always true
    // Renderers drop a lower bound <= 0 (view coordinates are never negative); this one may
    // be negative, so it is shifted to start at 1 unless every value satisfies it anyway.
    const shift = lo <= min ? 0 : Math.max(0, 1 - lo);
    return [{ e: iadd(isum(terms), idim((((a.c % m) + m) % m) + shift)), lo: lo + shift, hi: hi + shift }];
  });
}
