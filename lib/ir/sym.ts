/**
 * Symbolic dimensions. A dim is a number when static and a `Sym` when it depends on a
 * dynamic input size: an immutable integer polynomial over named variables (`s0`,
 * `s0*s1`, `2*s0-1`) kept in one canonical form, so equal dims print, hash and compare
 * alike. A polynomial without variables is always normalized back to a plain number.
 */
import { ShapeError, TraceError } from '../util/errors';

/** A dimension: a static size or a symbolic expression. */
export type Dim = number | Sym;

/** One term: integer coefficient times a monomial (sorted variable names, with repeats). */
interface Term {
  readonly vars: readonly string[];
  readonly coef: number;
}

const monoKey = (vars: readonly string[]): string => vars.join('*');

/** `n` when it is a safe integer; a non-integer dim is KILN_BAD_DIM, one past 2**53 KILN_SYM_OVERFLOW. */
function checkSafe(n: number): number {
  if (Number.isSafeInteger(n)) return n;
  if (!(Math.abs(n) > Number.MAX_SAFE_INTEGER)) throw new ShapeError('KILN_BAD_DIM', `dim arithmetic gives ${n}, which is not an integer: dims must be integers`);
  throw new ShapeError('KILN_SYM_OVERFLOW', `dim arithmetic gives ${n}, past the safe integer range (2**53 - 1); use smaller dims`);
}

/** Canonical order: higher degree first, then by monomial text; the constant comes last. */
function compareTerms(a: Term, b: Term): number {
  if (a.vars.length !== b.vars.length) return b.vars.length - a.vars.length;
  const ka = monoKey(a.vars);
  const kb = monoKey(b.vars);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** An integer polynomial over named size variables, in canonical form. Build with `sym()`. */
export class Sym {
  readonly #terms: readonly Term[];
  readonly #text: string;

  private constructor(terms: readonly Term[]) {
    this.#terms = terms;
    this.#text = render(terms);
  }

  /** @internal Normalize a term map into a Dim (a number if no variables remain). */
  static fromTerms(map: ReadonlyMap<string, Term>): Dim {
    const terms = [...map.values()].filter((t) => t.coef !== 0).sort(compareTerms);
    if (terms.every((t) => t.vars.length === 0)) return terms.length ? terms[0].coef : 0;
    return new Sym(terms);
  }

  /** The terms, canonical order. */
  get terms(): readonly Term[] {
    return this.#terms;
  }

  /** Variable names occurring in this expression, sorted. */
  get vars(): string[] {
    return [...new Set(this.#terms.flatMap((t) => t.vars))].sort();
  }

  /** Canonical text, e.g. `2*s0*s1+s0-1`; `parseDim` reads it back. */
  toString(): string {
    return this.#text;
  }

  toJSON(): string {
    return this.#text;
  }

  /**
   * Symbolic dims cannot silently become numbers: arithmetic such as `x.shape[0] * 2` on a
   * traced tensor would bake one example size into the compiled program.
   */
  valueOf(): never {
    throw symbolicDimError(this);
  }
}

/**
 * The TraceError KILN_SYMBOLIC_DIM for a dynamic dim used where a number is needed (as an
 * arithmetic value, or as a scalar operand of a tensor op).
 */
export function symbolicDimError(d: Sym): TraceError {
  return new TraceError(
    'KILN_SYMBOLIC_DIM',
    `dimension ${d.toString()} is dynamic inside kiln.compile and has no numeric value; pass it to reshape/expand as is (or use -1), or use kiln's dim helpers`,
  );
}

function render(terms: readonly Term[]): string {
  let s = '';
  for (const t of terms) {
    const mono = monoKey(t.vars);
    const mag = Math.abs(t.coef);
    const body = mono === '' ? String(mag) : mag === 1 ? mono : `${mag}*${mono}`;
    if (s === '') s = t.coef < 0 ? `-${body}` : body;
    else s += (t.coef < 0 ? '-' : '+') + body;
  }
  return s;
}

function termsOf(d: Dim): Map<string, Term> {
  const m = new Map<string, Term>();
  if (typeof d === 'number') {
    if (!Number.isInteger(d)) throw new ShapeError('KILN_BAD_DIM', `dim ${d} is not an integer`);
    if (d !== 0) m.set('', { vars: [], coef: d });
  } else if (d instanceof Sym) for (const t of d.terms) m.set(monoKey(t.vars), t);
  else throw new ShapeError('KILN_BAD_DIM', `dim ${typeof d === 'string' ? JSON.stringify(d) : String(d)} is neither an integer nor a symbolic dim`);
  return m;
}

function addInto(m: Map<string, Term>, t: Term): void {
  const k = monoKey(t.vars);
  const prev = m.get(k);
  m.set(k, { vars: t.vars, coef: checkSafe((prev?.coef ?? 0) + t.coef) });
}

/** A symbolic dim that is one variable. */
export function sym(name: string): Sym {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new ShapeError('KILN_BAD_DIM', `bad symbol name ${JSON.stringify(name)}`);
  return Sym.fromTerms(new Map([[name, { vars: [name], coef: 1 }]])) as Sym;
}

/** True when `d` is a static size. */
export function isStatic(d: Dim): d is number {
  return typeof d === 'number';
}

/** a + b */
export function dimAdd(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return checkSafe(a + b);
  const m = termsOf(a);
  for (const t of termsOf(b).values()) addInto(m, t);
  return Sym.fromTerms(m);
}

/** a - b */
export function dimSub(a: Dim, b: Dim): Dim {
  return dimAdd(a, dimMul(b, -1));
}

/** a * b */
export function dimMul(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return checkSafe(a * b);
  const m = new Map<string, Term>();
  for (const x of termsOf(a).values()) {
    for (const y of termsOf(b).values()) {
      addInto(m, { vars: [...x.vars, ...y.vars].sort(), coef: checkSafe(x.coef * y.coef) });
    }
  }
  return Sym.fromTerms(m);
}

/** Product of dims (1 for none). */
export function dimProd(dims: readonly Dim[]): Dim {
  return dims.reduce<Dim>((p, d) => dimMul(p, d), 1);
}

/**
 * Exact division a / b, where b is a nonzero constant or a single term (`768*s0`) that
 * divides every term of a. Anything else throws ShapeError: shapes never need inexact
 * symbolic division, and guessing would bake in a wrong size.
 */
export function dimDivExact(a: Dim, b: Dim): Dim {
  const fail = (): never => {
    throw new ShapeError('KILN_SYM_DIV', `cannot divide ${dimStr(a)} exactly by ${dimStr(b)}`);
  };
  const divisor = [...termsOf(b).values()];
  if (divisor.length !== 1) return fail();
  const [d] = divisor;
  const m = new Map<string, Term>();
  for (const t of termsOf(a).values()) {
    if (t.coef % d.coef !== 0) return fail();
    const rest = [...t.vars];
    for (const v of d.vars) {
      const i = rest.indexOf(v);
      if (i < 0) return fail();
      rest.splice(i, 1);
    }
    addInto(m, { vars: rest, coef: t.coef / d.coef });
  }
  return Sym.fromTerms(m);
}

/** Structural equality of dims (canonical forms are unique). */
export function dimEq(a: Dim, b: Dim): boolean {
  if (typeof a === 'number' || typeof b === 'number') return a === b;
  return a.toString() === b.toString();
}

/** True when every pair of dims is equal. */
export function shapeEq(a: readonly Dim[], b: readonly Dim[]): boolean {
  return a.length === b.length && a.every((d, i) => dimEq(d, b[i]));
}

/** Canonical text of a dim. */
export function dimStr(d: Dim): string {
  return typeof d === 'number' ? String(d) : d.toString();
}

/** `[2,s0,768]` */
export function shapeStr(shape: readonly Dim[]): string {
  return `[${shape.map(dimStr).join(',')}]`;
}

/** A dim as JSON: a number, or the canonical text of a Sym. */
export function dimToJSON(d: Dim): number | string {
  return typeof d === 'number' ? d : d.toString();
}

/** Value of a dim given values of its variables; a missing variable throws ShapeError. */
export function evalDim(d: Dim, bindings: Readonly<Record<string, number>>): number {
  if (typeof d === 'number') return d;
  let total = 0;
  for (const t of d.terms) {
    let p = t.coef;
    for (const v of t.vars) {
      const x = bindings[v];
      if (x === undefined) throw new ShapeError('KILN_UNBOUND_SYMBOL', `symbol ${v} has no value (dim ${d})`);
      p *= x;
    }
    total += p;
  }
  return total;
}

/** Evaluate a whole shape. */
export function evalShape(shape: readonly Dim[], bindings: Readonly<Record<string, number>>): number[] {
  return shape.map((d) => evalDim(d, bindings));
}

/**
 * Parse a dim from a number or text such as `2*s0*s1+s0-1` (sums of products of integers
 * and names; no parentheses). Malformed text throws ShapeError.
 */
export function parseDim(x: number | string): Dim {
  if (typeof x === 'number') return termsOf(x).size ? x : 0; // validates; -0 becomes 0
  const tokens = (x.match(/[A-Za-z_][A-Za-z0-9_]*|\d+|\S/g) ?? []).filter((t) => t.trim() !== '');
  const bad = (why: string): never => {
    throw new ShapeError('KILN_BAD_DIM', `cannot parse dim ${JSON.stringify(x)}: ${why}`);
  };
  if (tokens.length === 0) bad('empty');
  let i = 0;
  let total: Dim = 0;
  while (i < tokens.length) {
    let sign = 1;
    if (tokens[i] === '+' || tokens[i] === '-') sign = tokens[i++] === '-' ? -1 : 1;
    else if (i > 0) bad(`expected + or - at ${JSON.stringify(tokens[i])}`);
    let term: Dim = sign;
    for (;;) {
      const tok = tokens[i++];
      if (tok === undefined) return bad('unexpected end');
      if (/^\d+$/.test(tok)) term = dimMul(term, checkSafe(Number(tok)));
      else if (/^[A-Za-z_]/.test(tok)) term = dimMul(term, sym(tok));
      else bad(`unexpected ${JSON.stringify(tok)}`);
      if (tokens[i] !== '*') break;
      i++;
    }
    total = dimAdd(total, term);
  }
  return total;
}
