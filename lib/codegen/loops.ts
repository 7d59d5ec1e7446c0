/**
 * Loop nests for CPU kernels. Elementwise kernels loop over their domain with every value
 * placed at the outermost loop where all of its indices are bound (loop-invariant code
 * motion: a broadcast row scale is computed once per row, not per element). Row kernels
 * loop over the outer index, run each reduction stage as an inner loop, then write the
 * outputs in a final inner loop (see docs/FUSION.md, "Row kernels"). The innermost loop of
 * each nest is marked SIMD; the outermost runs in parallel when the kernel is large enough.
 */
import { dimProd, isStatic, type Dim, type DType } from '../ir';
import { dependsOn, indexOf, ivar, simplifyValid, type IExpr, type Kernel, type KNode } from '../passes';
import type { CStyleRenderer } from './cstyle';

/** Loop constructs a C-like CPU backend provides. */
export interface LoopDialect {
  /** Pragma for a parallel loop over `collapse` loops doing `work` element-steps ('' when too small to pay). */
  parallelFor(work: Dim, collapse: number, extra?: string): string;
  /** Pragma for a vectorizable innermost loop, with optional reduction clauses. */
  simd(extra?: string): string;
}

/** Work (domain elements) below which a kernel stays on one thread. */
export const PARALLEL_MIN_WORK = 1 << 15;

/** Longest row (elements) a row kernel keeps in stack arrays between its loops. */
const ROW_CACHE_MAX = 4096;

const domVar = (d: number): string => `i${d}`;
const lastDep = (deps: readonly boolean[]): number => deps.lastIndexOf(true);

/** Expression context of one kernel: names of values and how each node reads. */
export class KernelExprs {
  constructor(
    readonly r: CStyleRenderer,
    readonly k: Kernel,
    /** C expression of the matmul accumulator, when the kernel has one. */
    readonly mmAcc = 'c[jj]',
  ) {}

  /** The C operand for value `i`: constants inline, stage results by name, others as `v<i>`. */
  ref(i: number): string {
    const n = this.k.nodes[i];
    if (n.k === 'const') return this.r.literal(n.value, n.dtype);
    if (n.k === 'acc') return n.stage < 0 ? this.r.round(n.dtype, this.mmAcc) : `a${n.stage}`;
    return `v${i}`;
  }

  idx(): IExpr[] {
    return this.k.domain.map((_, d) => ivar(domVar(d)));
  }

  /** Extents of the domain's loop variables that are static (for simplifying masks). */
  ranges(): Map<string, number> {
    return new Map(this.k.domain.flatMap((n, d) => (typeof n === 'number' ? [[domVar(d), n] as [string, number]] : [])));
  }

  /** The defining expression of value `i`. */
  expr(i: number): string {
    const n: KNode = this.k.nodes[i];
    const r = this.r;
    switch (n.k) {
      case 'load': {
        const { index, valid: v0 } = indexOf(n.view, this.idx());
        const valid = simplifyValid(v0, this.ranges());
        const v = r.load(n.dtype, `p${n.param}`, r.index(index));
        return valid.length ? `(${r.valid(valid)} ? ${v} : ${r.zero(n.dtype)})` : v;
      }
      case 'guard': {
        const valid = simplifyValid(indexOf(n.valid, this.idx()).valid, this.ranges());
        return valid.length ? `(${r.valid(valid)} ? ${this.ref(n.src)} : ${r.zero(n.dtype)})` : this.ref(n.src);
      }
      case 'alu':
        return r.alu(this.k, n, (s) => this.ref(s));
      case 'gather': {
        const rows = n.view[n.view.length - 1].shape[0];
        const row = `kiln_clamp_row((int64_t)${this.ref(n.row)}, ${r.dim(rows)})`;
        const { index } = indexOf(n.view, [ivar('__row'), ivar(domVar(this.k.domain.length - 1))]);
        return r.load(n.dtype, `p${n.param}`, r.index(index, (name) => (name === '__row' ? row : name)));
      }
      case 'const':
      case 'acc':
        return this.ref(i);
      default:
        return n satisfies never;
    }
  }

  /** `const T v<i> = …;` for value i, or nothing for inline values. */
  statement(i: number): string[] {
    const n = this.k.nodes[i];
    if (n.k === 'const' || n.k === 'acc') return [];
    return [`const ${this.r.compute[n.dtype]} v${i} = ${this.expr(i)};`];
  }

  /** All values `roots` need, sources first (stage results stop the walk). */
  closure(roots: readonly number[]): number[] {
    const seen = new Set<number>();
    const walk = (i: number): void => {
      if (seen.has(i)) return;
      seen.add(i);
      const n = this.k.nodes[i];
      if (n.k === 'alu') n.src.forEach(walk);
      else if (n.k === 'guard') walk(n.src);
      else if (n.k === 'gather') walk(n.row);
    };
    roots.forEach(walk);
    return [...seen].sort((a, b) => a - b);
  }

  /** The store of kernel output `s`. */
  storeLine(s: Kernel['stores'][number]): string {
    const p = this.k.params[s.param];
    const { index } = indexOf(s.view, this.idx());
    return `p${s.param}[${this.r.index(index)}] = ${this.r.store(p.dtype, this.ref(s.value))};`;
  }
}

const indent = (lines: string[], by = '  '): string[] => lines.map((l) => by + l);

/** Body of an elementwise kernel: a loop nest over the domain with hoisted values. */
export function elementwiseBody(x: KernelExprs, dialect: LoopDialect): string[] {
  const { k, r } = x;
  const rank = k.domain.length;
  const values = x.closure(k.stores.map((s) => s.value));
  const level = (i: number): number => lastDep(k.deps[i]);
  // body[d] holds the statements placed just before loop d (those of level d-1).
  const body: string[][] = Array.from({ length: rank + 1 }, (_, d) => values.filter((i) => level(i) === d - 1).flatMap((i) => x.statement(i)));
  body[rank].push(...k.stores.map((s) => x.storeLine(s)));
  // Collapse the two outer loops into the parallel one when nothing sits between them and
  // the second is not the SIMD loop.
  const collapse = rank >= 3 && body[1].length === 0 ? 2 : 1;
  let lines = body[rank];
  for (let d = rank - 1; d >= 0; d--) {
    let pragma = '';
    if (d === 0) pragma = dialect.parallelFor(dimProd(k.domain), collapse, rank === 1 ? 'simd' : '') || (rank === 1 ? dialect.simd() : '');
    else if (d === rank - 1) pragma = dialect.simd();
    const head = `for (int64_t ${domVar(d)} = 0; ${domVar(d)} < ${r.dim(k.domain[d])}; ${domVar(d)}++) {`;
    lines = [...body[d], ...(pragma ? [pragma] : []), head, ...indent(lines), '}'];
  }
  return lines;
}

interface Reduction {
  init: string;
  accType: string;
  update: (acc: string, v: string) => string[];
  clause: (acc: string) => string;
  result: (acc: string) => string;
  extraDecl: (acc: string) => string[];
}

function reduction(op: 'sum' | 'max', dtype: DType, r: CStyleRenderer): Reduction {
  const float = dtype !== 'int32' && dtype !== 'bool';
  if (op === 'sum') {
    const accType = float ? 'float' : 'uint32_t'; // int32 sums wrap like the interpreter's
    return {
      init: float ? '0.0f' : '0u',
      accType,
      update: (acc, v) => [`${acc} += ${float ? v : `(uint32_t)${v}`};`],
      clause: (acc) => `reduction(+:${acc})`,
      result: (acc) => (float ? r.round(dtype, acc) : `(int32_t)${acc}`),
      extraDecl: () => [],
    };
  }
  if (dtype === 'bool') {
    return { init: '0', accType: 'int', update: (acc, v) => [`${acc} |= (int)${v};`], clause: (acc) => `reduction(|:${acc})`, result: (acc) => `(${acc} != 0)`, extraDecl: () => [] };
  }
  if (!float) {
    return { init: '(-2147483647 - 1)', accType: 'int32_t', update: (acc, v) => [`${acc} = ${v} > ${acc} ? ${v} : ${acc};`], clause: (acc) => `reduction(max:${acc})`, result: (acc) => acc, extraDecl: () => [] };
  }
  // NaN is tracked apart so that the max itself stays an order-independent (vectorizable) reduction.
  return {
    init: '(-INFINITY)',
    accType: 'float',
    update: (acc, v) => [`${acc} = ${v} > ${acc} ? ${v} : ${acc};`, `${acc}_nan |= (${v} != ${v});`],
    clause: (acc) => `reduction(max:${acc}) reduction(|:${acc}_nan)`,
    result: (acc) => `(${acc}_nan ? NAN : ${acc})`,
    extraDecl: (acc) => [`int ${acc}_nan = 0;`],
  };
}

/** Body of a row kernel: outer loops, reduction stages, then the output loop. */
export function rowBody(x: KernelExprs, dialect: LoopDialect): string[] {
  const { k, r } = x;
  const dims = k.domain.map((_, d) => d);
  const outer = dims.filter((d) => !k.reduced[d]);
  const red = dims.filter((d) => k.reduced[d]);
  const inner = (i: number): boolean => red.some((d) => k.deps[i][d]);
  const emitted = new Set<number>();
  const take = (i: number): boolean => !emitted.has(i) && emitted.add(i) !== undefined;
  // Values that vary along no dim and need no stage are computed once, before all loops.
  const top = x
    .closure([...k.stages.map((s) => s.src), ...k.stores.map((s) => s.value)])
    .filter((i) => !k.deps[i].some(Boolean) && k.after[i] < 0 && take(i))
    .flatMap((i) => x.statement(i));
  const outerValues = (roots: number[]): string[] => x.closure(roots).filter((i) => !inner(i) && take(i)).flatMap((i) => x.statement(i));
  const noOuter = outer.length === 0;
  const innerWork = dimProd(red.map((d) => k.domain[d]));
  const redLoops = (body: string[], clause = ''): string[] => {
    let lines = body;
    for (let j = red.length - 1; j >= 0; j--) {
      const innermost = j === red.length - 1;
      // A whole-tensor reduction has no outer loop to parallelize: split the reduction itself.
      const par = noOuter && j === 0 && clause ? dialect.parallelFor(innerWork, 1, `${innermost ? 'simd ' : ''}${clause}`) : '';
      const pragma = par || (innermost ? dialect.simd(clause) : '');
      const d = red[j];
      lines = [...(pragma ? [pragma] : []), `for (int64_t ${domVar(d)} = 0; ${domVar(d)} < ${r.dim(k.domain[d])}; ${domVar(d)}++) {`, ...indent(lines), '}'];
    }
    return lines;
  };
  const isInnerStore = (s: Kernel['stores'][number]): boolean => inner(s.value) || red.some((d) => dependsOn(s.view)[d]);
  const innerStores = k.stores.filter(isInnerStore);
  // The row's inner loops: one per stage, then the output loop. An inner value that one
  // loop computes and a later loop needs again is kept in a per-row array (stack, when the
  // row is short and static) instead of being recomputed: softmax evaluates exp once per
  // element, layerNorm reads and adds its inputs once.
  const loopRoots = [...k.stages.map((s) => [s.src]), ...(innerStores.length ? [innerStores.map((s) => s.value)] : [])];
  const rowLen = !noOuter && isStatic(innerWork) && innerWork <= ROW_CACHE_MAX ? innerWork : 0;
  const first = new Map<number, number>(); // value -> the loop that computes it first
  const computes: Set<number>[] = [];
  const reads: Set<number>[] = [];
  const cached = new Set<number>();
  loopRoots.forEach((roots, l) => {
    const comp = new Set<number>();
    const rd = new Set<number>();
    const visit = (i: number): void => {
      if (!inner(i) || comp.has(i) || rd.has(i)) return;
      const n = k.nodes[i];
      if (rowLen > 0 && (first.get(i) ?? l) < l && n.k !== 'load' && n.k !== 'const') {
        cached.add(i);
        rd.add(i);
        return;
      }
      comp.add(i);
      if (n.k === 'alu') n.src.forEach(visit);
      else if (n.k === 'guard') visit(n.src);
      else if (n.k === 'gather') visit(n.row);
    };
    roots.forEach(visit);
    for (const i of comp) if (!first.has(i)) first.set(i, l);
    computes.push(comp);
    reads.push(rd);
  });
  const ridx = red.reduce((acc, d, j) => (j === 0 ? domVar(d) : `(${acc})*${r.dim(k.domain[d])} + ${domVar(d)}`), '');
  const loopBody = (l: number): string[] => [
    ...[...reads[l]].sort((a, b) => a - b).map((i) => `const ${r.compute[k.nodes[i].dtype]} v${i} = rb${i}[${ridx}];`),
    ...[...computes[l]].sort((a, b) => a - b).flatMap((i) => [...x.statement(i), ...(cached.has(i) && first.get(i) === l ? [`rb${i}[${ridx}] = v${i};`] : [])]),
  ];
  const row: string[] = [...[...cached].sort((a, b) => a - b).map((i) => `alignas(64) ${r.compute[k.nodes[i].dtype]} rb${i}[${rowLen}];`)];
  k.stages.forEach((s, j) => {
    const red0 = reduction(s.op, s.dtype, r);
    const acc = `acc${j}`;
    row.push(...outerValues([s.src]), `${red0.accType} ${acc} = ${red0.init};`, ...red0.extraDecl(acc));
    row.push(...redLoops([...loopBody(j), ...red0.update(acc, x.ref(s.src))], red0.clause(acc)));
    row.push(`const ${r.compute[s.dtype]} a${j} = ${red0.result(acc)};`);
  });
  row.push(...outerValues(k.stores.map((s) => s.value)));
  row.push(...k.stores.filter((s) => !isInnerStore(s)).map((s) => x.storeLine(s)));
  if (innerStores.length) row.push(...redLoops([...loopBody(k.stages.length), ...innerStores.map((s) => x.storeLine(s))]));
  if (noOuter) return [...top, ...row];
  let lines = row;
  for (let j = outer.length - 1; j >= 0; j--) {
    const d = outer[j];
    const pragma = j === 0 ? [dialect.parallelFor(dimProd(k.domain), outer.length)].filter(Boolean) : [];
    lines = [...pragma, `for (int64_t ${domVar(d)} = 0; ${domVar(d)} < ${r.dim(k.domain[d])}; ${domVar(d)}++) {`, ...indent(lines), '}'];
  }
  return [...top, ...lines];
}
