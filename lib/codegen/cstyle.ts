/**
 * The C-style base renderer (tinygrad's CStyleLanguage): an exhaustive per-op table and a
 * set of attributes — type names, math function names, kernel prefix, loop constructs —
 * that a backend subclass overrides. It turns a kernel's SSA values into C expressions;
 * the loop structure lives in loops.ts. Every value is computed in a "compute type"
 * (float for all float dtypes, int32_t, bool) and rounded to its node's dtype exactly as
 * the reference interpreter rounds (an f16 ADD is rounded to f16 before any use).
 */
import { dimStr, isStatic, type Dim, type DType, type Op } from '../ir';
import type { Bound, IExpr, Kernel, KNode } from '../passes';

/** How one op becomes C: a function of its rendered operands, or how else it is handled. */
export type OpCode =
  | ((r: CStyleRenderer, a: readonly string[], dtype: DType, src: readonly DType[]) => string)
  | 'load' // a buffer read (INPUT, TENSOR_CONST)
  | 'literal' // a scalar constant
  | 'view' // index arithmetic on loads, never code
  | 'stage' // a reduction stage of a row kernel
  | 'gemm' // a matmul kernel's accumulator
  | 'gather'; // an indirect load

const isInt = (d: DType): boolean => d === 'int32';
const isBool = (d: DType): boolean => d === 'bool';

const unaryMath = (name: keyof CStyleRenderer['math']): OpCode => (r, [a], dt) => r.round(dt, `${r.math[name]}(${a})`);
const arith =
  (sym: string, intFn: string): OpCode =>
  (r, [a, b], dt) =>
    isInt(dt) ? `${intFn}(${a}, ${b})` : r.round(dt, `(${a} ${sym} ${b})`);
const compare = (sym: string): OpCode => (_r, [a, b]) => `(${a} ${sym} ${b})`;

/** The per-op table. Every op appears; TypeScript rejects a missing one. */
export const CODE_FOR_OP: { readonly [O in Op]: OpCode } = {
  INPUT: 'load',
  TENSOR_CONST: 'load',
  CONST: 'literal',
  NEG: (_r, [a], dt) => (isInt(dt) ? `kiln_ineg(${a})` : `(-${a})`),
  EXP: unaryMath('EXP'),
  LOG: unaryMath('LOG'),
  SQRT: unaryMath('SQRT'),
  RECIP: (r, [a], dt) => r.round(dt, `(1.0f / ${a})`),
  SIN: unaryMath('SIN'),
  COS: unaryMath('COS'),
  TANH: unaryMath('TANH'),
  ERF: unaryMath('ERF'),
  ERFC: unaryMath('ERFC'),
  ABS: (r, [a], dt) => (isInt(dt) ? `kiln_iabs(${a})` : `${r.math.ABS}(${a})`),
  CAST: (r, [a], dt, [from]) => r.cast(from, dt, a),
  ADD: arith('+', 'kiln_iadd'),
  SUB: arith('-', 'kiln_isub'),
  MUL: arith('*', 'kiln_imul'),
  DIV: (r, [a, b], dt) => r.round(dt, `(${a} / ${b})`), // float only
  POW: (r, [a, b], dt) => (isInt(dt) ? `kiln_ipow(${a}, ${b})` : r.round(dt, `kiln_powf(${a}, ${b})`)),
  MAX: (_r, [a, b], dt) => (isBool(dt) ? `(${a} || ${b})` : isInt(dt) ? `(${a} > ${b} ? ${a} : ${b})` : `kiln_maxf(${a}, ${b})`),
  MIN: (_r, [a, b], dt) => (isBool(dt) ? `(${a} && ${b})` : isInt(dt) ? `(${a} < ${b} ? ${a} : ${b})` : `kiln_minf(${a}, ${b})`),
  CMPEQ: compare('=='),
  CMPNE: compare('!='),
  CMPLT: compare('<'),
  CMPLE: compare('<='),
  WHERE: (_r, [c, a, b]) => `(${c} ? ${a} : ${b})`,
  REDUCE_SUM: 'stage',
  REDUCE_MAX: 'stage',
  RESHAPE: 'view',
  PERMUTE: 'view',
  EXPAND: 'view',
  SHRINK: 'view',
  PAD: 'view',
  MATMUL: 'gemm',
  GATHER: 'gather',
};

/** The attributes and expression rendering shared by C-like backends. */
export abstract class CStyleRenderer {
  /** Storage element type of each dtype in a buffer. */
  readonly storage: { readonly [D in DType]: string } = { float32: 'float', float16: 'uint16_t', bfloat16: 'uint16_t', int32: 'int32_t', bool: 'uint8_t' };
  /** Type values are computed in. */
  readonly compute: { readonly [D in DType]: string } = { float32: 'float', float16: 'float', bfloat16: 'float', int32: 'int32_t', bool: 'bool' };
  /** Math function names for float compute. */
  readonly math = { EXP: 'kiln_expf', LOG: 'logf', SQRT: 'sqrtf', SIN: 'sinf', COS: 'cosf', TANH: 'kiln_tanhf', ERF: 'kiln_erff', ERFC: 'kiln_erfcf', ABS: 'fabsf' };
  /** The op table (a subclass may override entries). */
  readonly code: { readonly [O in Op]: OpCode } = CODE_FOR_OP;
  /** Pointer qualifier for non-aliasing buffers. */
  readonly restrict: string = '__restrict__';
  /** Qualifiers before a kernel function. */
  abstract readonly kernelPrefix: string;
  /** The index type of loops and offsets. */
  readonly indexType: string = 'int64_t';

  /** `expr` (in compute type) rounded to `dtype` the way the interpreter rounds results. */
  round(dtype: DType, expr: string): string {
    if (dtype === 'float16') return `kiln_rh(${expr})`;
    if (dtype === 'bfloat16') return `kiln_rb(${expr})`;
    return expr;
  }

  /** Convert a compute value of dtype `from` to dtype `to`. */
  cast(from: DType, to: DType, a: string): string {
    if (from === to) return a;
    if (to === 'bool') return `(${a} != 0)`;
    if (isBool(from)) return `((${this.compute[to]})${a})`;
    if (to === 'int32') return `kiln_f2i(${a})`;
    if (to === 'float32') return `((float)${a})`;
    if (to === 'float16') return `kiln_rh((float)${a})`; // ints beyond 2^24 overflow f16 anyway
    return isInt(from) ? `kiln_i2b(${a})` : `kiln_rb(${a})`;
  }

  /** A scalar constant in compute type. */
  literal(value: number, dtype: DType): string {
    if (isBool(dtype)) return value ? 'true' : 'false';
    if (isInt(dtype)) return value === -2147483648 ? '(-2147483647 - 1)' : `${value}`;
    if (Number.isNaN(value)) return 'NAN';
    if (!Number.isFinite(value)) return value > 0 ? 'INFINITY' : '(-INFINITY)';
    let s = Object.is(value, -0) ? '-0' : String(value); // shortest text that reads back as this float
    if (!/[.e]/.test(s)) s += '.0';
    return `${s}f`;
  }

  /** Read element `at` of buffer `ptr` into compute type. */
  load(dtype: DType, ptr: string, at: string): string {
    const x = `${ptr}[${at}]`;
    if (dtype === 'float16') return `kiln_h2f(${x})`;
    if (dtype === 'bfloat16') return `kiln_b2f(${x})`;
    if (isBool(dtype)) return `(${x} != 0)`;
    return x;
  }

  /** A compute value as the storage element of `dtype`. */
  store(dtype: DType, v: string): string {
    if (dtype === 'float16') return `kiln_f2h(${v})`;
    if (dtype === 'bfloat16') return `kiln_f2b(${v})`;
    if (isBool(dtype)) return `(uint8_t)(${v})`;
    return v;
  }

  /** Zero of a dtype in compute type (PAD's fill). */
  zero(dtype: DType): string {
    return this.literal(0, dtype);
  }

  /** C name of a symbol's value (symbols are loaded from `syms` at kernel entry). */
  symName(name: string): string {
    return `S_${name}`;
  }

  /** A dim as a C expression. */
  dim(d: Dim): string {
    if (isStatic(d)) return `${d}`;
    const text = d.terms.map((t, i) => {
      const mag = Math.abs(t.coef);
      const factors = [...(mag !== 1 || t.vars.length === 0 ? [`${mag}`] : []), ...t.vars.map((v) => this.symName(v))];
      return `${t.coef < 0 ? '-' : i ? '+' : ''}${factors.join('*')}`;
    });
    return `(${text.join('')})`;
  }

  /** An index expression as C, with loop variables named by `vars`. */
  index(e: IExpr, vars: (name: string) => string = (n) => n): string {
    switch (e.k) {
      case 'dim':
        return this.dim(e.d);
      case 'var':
        return vars(e.name);
      case 'add':
        return `(${this.index(e.a, vars)} + ${this.index(e.b, vars)})`;
      case 'mul':
        return `${this.index(e.a, vars)}*${this.index(e.b, vars)}`;
      case 'div':
        return `(${this.index(e.a, vars)} / ${this.index(e.b, vars)})`;
      case 'mod':
        return `(${this.index(e.a, vars)} % ${this.index(e.b, vars)})`;
      default:
        return e satisfies never;
    }
  }

  /** A validity predicate as C (`true` when empty). */
  valid(bounds: readonly Bound[], vars?: (name: string) => string): string {
    const parts = bounds.flatMap((b) => {
      const e = this.index(b.e, vars);
      const lo = isStatic(b.lo) && b.lo <= 0 ? [] : [`${e} >= ${this.dim(b.lo)}`]; // view coordinates are never negative
      return [...lo, `${e} < ${this.dim(b.hi)}`];
    });
    return parts.length ? `(${parts.join(' && ')})` : 'true';
  }

  /** The C expression of an ALU node from its operands' names. */
  alu(k: Kernel, n: Extract<KNode, { k: 'alu' }>, operand: (i: number) => string): string {
    const code = this.code[n.op];
    if (typeof code !== 'function') throw new Error(`renderer: ${n.op} is not an elementwise op`);
    return code(this, n.src.map(operand), n.dtype, n.src.map((s) => k.nodes[s].dtype));
  }

  /** Kernel text; backends define the loop structure. */
  abstract renderKernel(k: Kernel): string;
}

/** Comment-safe text of a dim list, for kernel headers. */
export function shapeText(shape: readonly Dim[]): string {
  return `[${shape.map(dimStr).join(', ')}]`;
}
