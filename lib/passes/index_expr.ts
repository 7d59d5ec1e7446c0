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
