/**
 * The expression context of a CUDA kernel: lib/codegen/loops.ts's KernelExprs (values,
 * loads through views, stores) with loads that the templates can redirect to registers,
 * the index type, and index helpers shared by cuda.ts and cuda-matmul.ts.
 */
import { dimProd, isStatic, type Dim } from '../ir';
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
    return this.over.get(i) ?? super.expr(i);
  }
  /** The memory index of load/store view `view` at the domain index with the last dim's variable renamed. */
  indexWith(view: Parameters<typeof indexOf>[0], lastVar: string): string {
    const last = this.k.domain.length - 1;
    const { index } = indexOf(view, this.idx().map((e, d) => (d === last ? ivar(lastVar) : e)));
    return this.r.index(index);
  }
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

