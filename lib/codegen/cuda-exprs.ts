/**
 * The expression context of a CUDA kernel: lib/codegen/loops.ts's KernelExprs (values,
 * loads through views, stores) with loads that the templates can redirect to registers,
 * the index type, and index helpers shared by cuda.ts and cuda-matmul.ts.
 */
import { dimProd, isStatic, type Dim, type DType } from '../ir';
import { indexOf, ivar, type Kernel } from '../passes';
import { fitsInt32 } from '../passes/gpu';
import type { CStyleRenderer } from './cstyle';
import { KernelExprs } from './loops';

export const unroll = '#pragma unroll';
export const indent = (lines: readonly string[], by = '  '): string[] => lines.map((l) => by + l);

/** KernelExprs whose loads can be redirected to registers (vector lanes, cached rows). */
export class CudaExprs extends KernelExprs {
  /** Value index → the C expression that replaces its load (set per lane by the templates). */
  readonly over = new Map<number, string>();
  /** The C index type: int when every size is static and small, else long long. */
  readonly it: string;
  constructor(
    r: CStyleRenderer,
    k: Kernel,
    mmAcc = 'acc',
  ) {
    super(r, k, mmAcc);
    this.it = fitsInt32(k) ? 'int' : 'long long';
  }
  override expr(i: number): string {
    const n = this.k.nodes[i];
    if (n.k === 'alu' && (n.op as string) === 'ERFC' /* gelu's op, missing from ElementwiseOp */ && !this.over.has(i) && (n.dtype === 'float16' || this.#halfOnly(i))) {
      return this.r.round(n.dtype, `kiln_erfc_half(${this.ref(n.src[0])})`);
    }
    return this.over.get(i) ?? super.expr(i);
  }
  #users?: number[][];
  readonly #halfMemo = new Map<number, boolean>();
  /**
   * True when value `i` reaches the results only through products and then a rounding to
   * float16 (a cast, or a store to such a buffer): a relative error of 1e-5 in it moves no
   * result by more than that rounding's ulp (gelu of float16 tensors). Not bfloat16: its range
   * reaches float32's subnormals, which the fast exp flushes to zero.
   */
  #halfOnly(i: number): boolean {
    const known = this.#halfMemo.get(i);
    if (known !== undefined) return known;
    const r = this.#halfOnlyOf(i);
    this.#halfMemo.set(i, r);
    return r;
  }
  #halfOnlyOf(i: number): boolean {
    if (!this.#users) {
      const users: number[][] = this.k.nodes.map(() => []);
      this.k.nodes.forEach((n, j) => {
        const src = n.k === 'alu' ? n.src : n.k === 'guard' ? [n.src] : n.k === 'gather' ? [n.row] : [];
        for (const s of src) users[s].push(j);
      });
      this.#users = users;
    }
    if (this.k.stages.some((s) => s.src === i)) return false;
    if (this.k.stores.some((s) => s.value === i && this.k.params[s.param].dtype !== 'float16')) return false;
    return this.#users[i].every((j) => {
      const u = this.k.nodes[j];
      if (u.k !== 'alu') return false;
      if (u.op === 'CAST') return u.dtype === 'float16';
      return u.op === 'MUL' && this.#halfOnly(j);
    });
  }
  /**
   * Value `i` as a storage element of `dtype`. A value already rounded to float16 or
   * bfloat16 is converted once: f2h(rh(x)) = f2h(x) bit for bit (NaN and overflow included),
   * so the round trip before the store is dropped.
   */
  stored(i: number, dtype: DType): string {
    const e = this.expr(i);
    const round = dtype === 'float16' ? 'kiln_rh(' : dtype === 'bfloat16' ? 'kiln_rb(' : undefined;
    if (this.k.nodes[i].k === 'alu' && round && e.startsWith(round) && closingParen(e, round.length - 1) === e.length - 1) return this.r.store(dtype, e.slice(round.length, -1));
    return this.r.store(dtype, this.ref(i));
  }
  override storeLine(s: Kernel['stores'][number]): string {
    const { index } = indexOf(s.view, this.idx());
    return `p${s.param}[${this.r.index(index)}] = ${this.stored(s.value, this.k.params[s.param].dtype)};`;
  }
  /** The memory index of load/store view `view` at the domain index with the last dim's variable renamed. */
  indexWith(view: Parameters<typeof indexOf>[0], lastVar: string): string {
    const last = this.k.domain.length - 1;
    const { index } = indexOf(view, this.idx().map((e, d) => (d === last ? ivar(lastVar) : e)));
    return this.r.index(index);
  }
}


/** The index of the parenthesis closing the one at `open`. */
function closingParen(e: string, open: number): number {
  let depth = 0;
  for (let i = open; i < e.length; i++) {
    if (e[i] === '(') depth++;
    else if (e[i] === ')' && --depth === 0) return i;
  }
  return -1;
}

/** The C name of domain dim d's index. */
export const domVar = (d: number): string => `i${d}`;

/** `const it i<d> = …` for each of `dims` (domain order) from linear index `lin`. */
export function delinearize(x: CudaExprs, lin: string, dims: readonly number[], name: (d: number) => string = domVar): string[] {
  const out: string[] = [];
  let inner: Dim = 1;
  for (let j = dims.length - 1; j >= 0; j--) {
    const d = dims[j];
    const size = x.k.domain[d];
    const q = inner === 1 ? lin : `(${lin} / ${x.r.dim(inner)})`;
    if (size === 1) out.unshift(`const ${x.it} ${name(d)} = 0;`);
    else out.unshift(`const ${x.it} ${name(d)} = ${j === 0 ? q : `${q} % ${x.r.dim(size)}`};`);
    inner = isStatic(inner) && isStatic(size) ? inner * size : dimProd([inner, size]);
  }
  return out;
}

