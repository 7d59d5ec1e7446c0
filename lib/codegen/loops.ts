/**
 * Loop nests for CPU kernels. Elementwise kernels loop over their domain with every value
 * placed at the outermost loop where all of its indices are bound (loop-invariant code
 * motion: a broadcast row scale is computed once per row, not per element). Row kernels
 * loop over the outer index, run each reduction stage as an inner loop, then write the
 * outputs in a final inner loop (see docs/FUSION.md, "Row kernels"). The innermost loop of
 * each nest is marked SIMD; the outermost is split across threads (the dialect's
 * parallelLoops) when the kernel is large enough.
 */
import { dimMul, dimProd, isStatic, type Dim, type DType } from '../ir';
import { dependsOn, iadd, idim, iexprVars, indexOf, irange, isContiguous, ivar, linearIn, simplifyValid, type Bound, type IExpr, type Kernel, type KNode } from '../passes';
import type { CStyleRenderer } from './cstyle';

/** A loop: its variable and extent. */
export interface LoopVar {
  readonly name: string;
  readonly extent: Dim;
}

/** Loop constructs a C-like CPU backend provides. */
export interface LoopDialect {
  /**
   * The loops `vars` (outermost first) around `body`, split across threads when the work
   * (their iterations times `inner` element-steps each) is large enough to pay; the last
   * loop gets the SIMD pragma when `simd`.
   */
  parallelLoops(vars: readonly LoopVar[], inner: Dim, body: string[], simd: boolean): string[];
  /**
   * A reduction over `v`'s range split into chunks that run in parallel when the work is
   * large enough: `body(lo, hi)` is the loop over [lo, hi) that updates the accumulators
   * of `red` named `acc`; the chunks' partial results are combined in chunk order (the
   * same order for any thread count). Undefined: too small, loop as usual.
   */
  parallelReduce(v: LoopVar, inner: Dim, acc: string, red: Reduction, body: (lo: string, hi: string) => string[]): string[] | undefined;
  /** Pragma for a vectorizable innermost loop, with optional reduction clauses. */
  simd(extra?: string): string;
}

/** Work (domain elements) below which a kernel stays on one thread. */
export const PARALLEL_MIN_WORK = 1 << 15;

/** Longest row (elements) a row kernel keeps in stack arrays between its loops (longer or dynamic rows: per-thread heap rows). */
const ROW_CACHE_MAX = 4096;

const domVar = (d: number): string => `i${d}`;
/** A mask bound's identity, for KernelExprs.known. */
const boundKey = (b: Bound): string => JSON.stringify(b);
const lastDep = (deps: readonly boolean[]): number => deps.lastIndexOf(true);

/** Expression context of one kernel: names of values and how each node reads. */
export class KernelExprs {
  constructor(
    readonly r: CStyleRenderer,
    readonly k: Kernel,
    /** C expression of the matmul accumulator, when the kernel has one. */
    readonly mmAcc = 'c[jj]',
    /**
     * Mask bounds whose truth is known in the loop segment being rendered (key: boundKey):
     * a load or guard with a false bound is 0, true bounds are not tested, and a WHERE on a
     * known condition is its branch (see splitRow).
     */
    readonly known: ReadonlyMap<string, boolean> = new Map(),
  ) {}

  /** The same context with `known` bounds (a loop segment of a row kernel). */
  withKnown(known: ReadonlyMap<string, boolean>): KernelExprs {
    return new KernelExprs(this.r, this.k, this.mmAcc, known);
  }

  /** The simplified mask bounds of a load or guard left to test, or false when one is known false. */
  bounds(i: number): Bound[] | false {
    const n = this.k.nodes[i];
    if (n.k !== 'load' && n.k !== 'guard') return [];
    const valid = simplifyValid(indexOf(n.k === 'load' ? n.view : n.valid, this.idx()).valid, this.ranges());
    if (valid.some((b) => this.known.get(boundKey(b)) === false)) return false;
    return valid.filter((b) => this.known.get(boundKey(b)) !== true);
  }

  /** The value of node i when the known bounds make it a constant. */
  constant(i: number): number | undefined {
    const n = this.k.nodes[i];
    if (n.k === 'const') return n.value;
    if (n.k !== 'load' && n.k !== 'guard') return undefined;
    const b = this.known.size ? this.bounds(i) : [];
    if (b === false) return 0;
    return n.k === 'guard' && b.length === 0 && this.known.size ? this.constant(n.src) : undefined;
  }

  /** Node i, or the branch a WHERE on a known condition takes (transitively). */
  resolve(i: number): number {
    const n = this.k.nodes[i];
    if (n.k !== 'alu' || n.op !== 'WHERE' || !this.known.size) return i;
    const c = this.constant(n.src[0]);
    return c === undefined ? i : this.resolve(c ? n.src[1] : n.src[2]);
  }

  /** The values node i is computed from (a resolved WHERE: its branch only). */
  sources(i: number): readonly number[] {
    const j = this.resolve(i);
    if (j !== i) return [j];
    const n = this.k.nodes[i];
    return n.k === 'alu' ? n.src : n.k === 'guard' ? [n.src] : n.k === 'gather' ? [n.row] : [];
  }

  readonly #varies = new Map<number, boolean>();
  /** True when node i varies along domain dim `d`, given the known bounds (one dim per context). */
  varies(i: number, d: number): boolean {
    let v = this.#varies.get(i);
    if (v === undefined) {
      const n = this.k.nodes[i];
      const b = this.bounds(i);
      const open = n.k === 'alu' || (n.k === 'guard' && b !== false && b.length === 0); // as varying as its sources
      v = this.k.deps[i][d] && this.constant(i) === undefined && (!open || this.sources(i).some((s) => this.varies(s, d)));
      this.#varies.set(i, v);
    }
    return v;
  }

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

  /** Extents of the domain's loop variables (for simplifying masks). */
  ranges(): Map<string, Dim> {
    return new Map(this.k.domain.map((n, d) => [domVar(d), n]));
  }

  /** The defining expression of value `i`. */
  expr(i: number): string {
    const n: KNode = this.k.nodes[i];
    const r = this.r;
    switch (n.k) {
      case 'load': {
        const valid = this.bounds(i);
        if (valid === false) return r.zero(n.dtype);
        const v = r.load(n.dtype, `p${n.param}`, r.index(indexOf(n.view, this.idx()).index));
        return valid.length ? `(${r.valid(valid)} ? ${v} : ${r.zero(n.dtype)})` : v;
      }
      case 'guard': {
        const valid = this.bounds(i);
        if (valid === false) return r.zero(n.dtype);
        return valid.length ? `(${r.valid(valid)} ? ${this.ref(n.src)} : ${r.zero(n.dtype)})` : this.ref(n.src);
      }
      case 'alu':
        if (this.resolve(i) !== i) return this.ref(this.resolve(i));
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
      this.sources(i).forEach(walk);
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
  if (rank === 0) return body[0]; // no loop: body[0] is both the prelude and the innermost body
  // Collapse the two outer loops into the parallel one when nothing sits between them and
  // the second is not the SIMD loop.
  const collapse = rank >= 3 && body[1].length === 0 ? 2 : 1;
  let lines = body[rank];
  for (let d = rank - 1; d >= collapse; d--) {
    const pragma = d === rank - 1 ? [dialect.simd()] : [];
    const head = `for (int64_t ${domVar(d)} = 0; ${domVar(d)} < ${r.dim(k.domain[d])}; ${domVar(d)}++) {`;
    lines = [...body[d], ...pragma, head, ...indent(lines), '}'];
  }
  const vars = k.domain.slice(0, collapse).map((extent, d) => ({ name: domVar(d), extent }));
  return [...body[0], ...dialect.parallelLoops(vars, dimProd(k.domain.slice(collapse)), lines, rank === collapse)];
}

/** How one reduction stage accumulates (its accumulator is named `acc`). */
export interface Reduction {
  init: string;
  accType: string;
  /** Every accumulator variable (type, name): the value, and a NaN flag for float max. */
  vars: (acc: string) => [string, string][];
  /** Merge partial accumulators, named by `part(name)`, into the accumulators. */
  combine: (acc: string, part: (name: string) => string) => string[];
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
      vars: (acc) => [[accType, acc]],
      combine: (acc, part) => [`${acc} += ${part(acc)};`],
      update: (acc, v) => [`${acc} += ${float ? v : `(uint32_t)${v}`};`],
      clause: (acc) => `reduction(+:${acc})`,
      result: (acc) => (float ? r.round(dtype, acc) : `(int32_t)${acc}`),
      extraDecl: () => [],
    };
  }
  if (dtype === 'bool') {
    return {
      init: '0',
      accType: 'int',
      vars: (acc) => [['int', acc]],
      combine: (acc, part) => [`${acc} |= ${part(acc)};`],
      update: (acc, v) => [`${acc} |= (int)${v};`],
      clause: (acc) => `reduction(|:${acc})`,
      result: (acc) => `(${acc} != 0)`,
      extraDecl: () => [],
    };
  }
  if (!float) {
    return {
      init: '(-2147483647 - 1)',
      accType: 'int32_t',
      vars: (acc) => [['int32_t', acc]],
      combine: (acc, part) => [`${acc} = ${part(acc)} > ${acc} ? ${part(acc)} : ${acc};`],
      update: (acc, v) => [`${acc} = ${v} > ${acc} ? ${v} : ${acc};`],
      clause: (acc) => `reduction(max:${acc})`,
      result: (acc) => acc,
      extraDecl: () => [],
    };
  }
  // NaN is tracked apart so that the max itself stays an order-independent (vectorizable) reduction.
  return {
    init: '(-INFINITY)',
    accType: 'float',
    vars: (acc) => [
      ['float', acc],
      ['int', `${acc}_nan`],
    ],
    combine: (acc, part) => [`${acc} = ${part(acc)} > ${acc} ? ${part(acc)} : ${acc};`, `${acc}_nan |= ${part(`${acc}_nan`)};`],
    update: (acc, v) => [`${acc} = ${v} > ${acc} ? ${v} : ${acc};`, `${acc}_nan |= (${v} != ${v});`],
    clause: (acc) => `reduction(max:${acc}) reduction(|:${acc}_nan)`,
    result: (acc) => `(${acc}_nan ? NAN : ${acc})`,
    extraDecl: (acc) => [`int ${acc}_nan = 0;`],
  };
}

/** A row's reduced loop cut into segments, each with a mask bound's truth known (splitRow). */
interface RowSplit {
  /** Where the bound starts to hold (absent: at 0 in every row); the first segment is [0, from). */
  readonly from?: IExpr;
  /** Per row: the segment boundaries. */
  readonly decls: string[];
  readonly segs: readonly { readonly lo: string; readonly hi: string; readonly x: KernelExprs }[];
}

/**
 * Index-set splitting of a row kernel's reduced loop `d`: a mask bound `lo <= i + rest < hi`
 * (rest free of the reduced index i), such as a causal mask's `j - i >= 1`, holds on one
 * interval of i per row. Each inner loop then runs as three segments with the
 * bound's truth known in each: a load it masks is 0, a WHERE on it takes its branch, and
 * values that stop varying along i (the masked part of a causal softmax: -inf, then
 * exp(-inf - max)) are computed once before the segment instead of per element. Only when
 * that saves work: some value other than the mask stops varying in a segment.
 */
function splitRow(x: KernelExprs, d: number): RowSplit | undefined {
  const { k, r } = x;
  const v = domVar(d);
  for (let i = 0; i < k.nodes.length; i++) {
    const bounds = k.deps[i][d] ? x.bounds(i) : false;
    for (const b of bounds || []) {
      const lin = linearIn(b.e, v);
      if (!lin || lin.coef !== 1) continue; // (no view of kiln's reverses a dim: -1 does not occur)
      const [no, yes] = [false, true].map((t) => x.withKnown(new Map([[boundKey(b), t]])));
      const saves = k.nodes.some((n, j) => n.k !== 'guard' && n.k !== 'const' && k.deps[j][d] && (!no.varies(j, d) || !yes.varies(j, d)));
      if (!saves) continue;
      // The bound holds for i in [from, to) = [lo - rest, hi - rest).
      const [from, to] = [iadd(idim(b.lo), lin.rest(-1)), iadd(idim(b.hi), lin.rest(-1))];
      const n = k.domain[d];
      // A segment provably empty in every row is left out (a causal mask's third, past the row).
      const [fr, tr] = [irange(from, x.ranges()), irange(iadd(to, idim(dimMul(n, -1))), x.ranges())];
      const head = fr !== undefined && fr.max <= 0;
      const tail = tr !== undefined && tr.min >= 0;
      const [sa, sb] = [head ? '0' : `${v}_from`, tail ? r.dim(n) : `${v}_to`];
      return {
        from: head ? undefined : from,
        decls: [
          ...(head ? [] : [`const int64_t ${sa} = kiln_min64(${r.dim(n)}, kiln_max64(0, ${r.index(from)}));`]),
          ...(tail ? [] : [`const int64_t ${sb} = kiln_min64(${r.dim(n)}, kiln_max64(${sa}, ${r.index(to)}));`]),
        ],
        segs: [...(head ? [] : [{ lo: '0', hi: sa, x: no }]), { lo: sa, hi: sb, x: yes }, ...(tail ? [] : [{ lo: sb, hi: r.dim(n), x: no }])],
      };
    }
  }
  return undefined;
}

/**
 * Which columns of buffer parameter `param` a row kernel reads: when its rows are split
 * (splitRow) on the last dim and only the first segment, `[0, from)`, loads the parameter —
 * through its plain contiguous view — the columns below `from`, an expression of the row
 * index `i<rank-2>` alone (a causal softmax reads its scores at j < i + 1 only). The matmul
 * that writes those scores may then skip the others (gemm.ts, `jend`).
 */
export function columnDemand(x: KernelExprs, param: number): { row: string; end: IExpr } | undefined {
  const { k } = x;
  const rank = k.domain.length;
  if (k.kind !== 'reduce' || rank < 2 || !k.reduced[rank - 1] || k.reduced.slice(0, -1).some(Boolean)) return undefined;
  const reads = k.nodes.flatMap((n, i) => ((n.k === 'load' || n.k === 'gather') && n.param === param ? [i] : []));
  if (!reads.every((i) => k.nodes[i].k === 'load' && isContiguous((k.nodes[i] as Extract<KNode, { k: 'load' }>).view))) return undefined;
  const split = splitRow(x, rank - 1);
  if (!split?.from || ![...iexprVars(split.from)].every((v) => v === domVar(rank - 2))) return undefined;
  const roots = [...k.stages.map((s) => s.src), ...k.stores.map((s) => s.value)];
  const later = split.segs.slice(1).some((seg) => seg.x.closure(roots).some((i) => reads.includes(i)));
  return later ? undefined : { row: domVar(rank - 2), end: split.from };
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
  // The reduced loops around `body`; the innermost is SIMD (with the stage's reduction
  // clause). A whole-tensor reduction has no outer loop to parallelize: its first reduced
  // loop is split into chunks with partial accumulators instead.
  const redLoops = (body: string[], red0?: Reduction, acc?: string): string[] => {
    const clause = red0 && acc ? red0.clause(acc) : '';
    const loops = (from: number, lines: string[]): string[] => {
      for (let j = red.length - 1; j >= from; j--) {
        const d = red[j];
        const pragma = j === red.length - 1 ? [dialect.simd(clause)] : [];
        lines = [...pragma, `for (int64_t ${domVar(d)} = 0; ${domVar(d)} < ${r.dim(k.domain[d])}; ${domVar(d)}++) {`, ...indent(lines), '}'];
      }
      return lines;
    };
    if (noOuter && red0 && acc) {
      const d = red[0];
      const rest = loops(1, body);
      const par = dialect.parallelReduce({ name: domVar(d), extent: k.domain[d] }, dimProd(red.slice(1).map((e) => k.domain[e])), acc, red0, (lo, hi) => [
        ...(red.length === 1 ? [dialect.simd(clause)] : []),
        `for (int64_t ${domVar(d)} = ${lo}; ${domVar(d)} < ${hi}; ${domVar(d)}++) {`,
        ...indent(rest),
        '}',
      ]);
      if (par) return par;
    }
    return loops(0, body);
  };
  const isInnerStore = (s: Kernel['stores'][number]): boolean => inner(s.value) || red.some((d) => dependsOn(s.view)[d]);
  const innerStores = k.stores.filter(isInnerStore);
  // The row's inner loops: one per stage, then the output loop. An inner value that one
  // loop computes and a later loop needs again is kept in a per-row array (stack, when the
  // row is short and static) instead of being recomputed: softmax evaluates exp once per
  // element, layerNorm reads and adds its inputs once.
  const loopRoots = [...k.stages.map((s) => [s.src]), ...(innerStores.length ? [innerStores.map((s) => s.value)] : [])];
  const rowLen = isStatic(innerWork) && innerWork <= ROW_CACHE_MAX ? innerWork : 0; // else per-thread heap rows
  const plan = (cacheRows: boolean) => {
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
        if (cacheRows && (first.get(i) ?? l) < l && n.k !== 'load' && n.k !== 'const') {
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
    return { first, computes, reads, cached };
  };
  let rows = plan(!noOuter);
  if (!rowLen && rows.cached.size > 8) rows = plan(false); // kiln_rowbuf has 8 arrays per thread
  const { first, computes, reads, cached } = rows;
  const ridx = red.reduce((acc, d, j) => (j === 0 ? domVar(d) : `(${acc})*${r.dim(k.domain[d])} + ${domVar(d)}`), '');
  const loopBody = (l: number): string[] => [
    ...[...reads[l]].sort((a, b) => a - b).map((i) => `const ${r.compute[k.nodes[i].dtype]} v${i} = rb${i}[${ridx}];`),
    ...[...computes[l]].sort((a, b) => a - b).flatMap((i) => [...x.statement(i), ...(cached.has(i) && first.get(i) === l ? [`rb${i}[${ridx}] = v${i};`] : [])]),
  ];
  const split = !noOuter && red.length === 1 ? splitRow(x, red[0]) : undefined;
  // Loop l in a segment of a split row: values that vary there as in loopBody, the others
  // (`pre`) once before the segment's loop; those are neither kept in nor read from rows.
  const segmentBody = (l: number, xs: KernelExprs): { pre: string[]; body: string[] } => {
    const d = red[0];
    const [pre, rd, comp] = [new Set<number>(), new Set<number>(), new Set<number>()];
    const visit = (i: number): void => {
      if (!inner(i) || pre.has(i) || rd.has(i) || comp.has(i)) return;
      if (!xs.varies(i, d)) pre.add(i);
      else if (reads[l].has(i)) return void rd.add(i);
      else comp.add(i);
      xs.sources(i).forEach(visit);
    };
    [...loopRoots[l], ...[...cached].filter((i) => first.get(i) === l)].forEach(visit);
    const sorted = (set: Set<number>): number[] => [...set].sort((a, b) => a - b);
    return {
      pre: sorted(pre).flatMap((i) => xs.statement(i)),
      body: [
        ...sorted(rd).map((i) => `const ${r.compute[k.nodes[i].dtype]} v${i} = rb${i}[${ridx}];`),
        ...sorted(comp).flatMap((i) => [...xs.statement(i), ...(cached.has(i) && first.get(i) === l ? [`rb${i}[${ridx}] = v${i};`] : [])]),
      ],
    };
  };
  /** Inner loop l with `tail` (the stage's update or the stores) after its values. */
  const innerLoop = (l: number, tail: string[], red0?: Reduction, acc?: string): string[] => {
    if (!split) return redLoops([...loopBody(l), ...tail], red0, acc);
    const v = domVar(red[0]);
    return split.segs.flatMap(({ lo, hi, x: xs }) => {
      const { pre, body } = segmentBody(l, xs);
      const loop = [dialect.simd(red0 && acc ? red0.clause(acc) : ''), `for (int64_t ${v} = ${lo}; ${v} < ${hi}; ${v}++) {`, ...indent([...body, ...tail]), '}'];
      return ['{', ...indent([...pre, ...loop]), '}'];
    });
  };
  const row: string[] = [...cached]
    .sort((a, b) => a - b)
    .map((i, slot) => {
      const t = r.compute[k.nodes[i].dtype];
      return rowLen ? `alignas(64) ${t} rb${i}[${rowLen}];` : `${t}* ${r.restrict} rb${i} = (${t}*)kiln_rowbuf(${slot}, ${r.dim(innerWork)} * sizeof(${t}));`;
    });
  if (split) row.push(...split.decls);
  k.stages.forEach((s, j) => {
    const red0 = reduction(s.op, s.dtype, r);
    const acc = `acc${j}`;
    row.push(...outerValues([s.src]), `${red0.accType} ${acc} = ${red0.init};`, ...red0.extraDecl(acc));
    row.push(...innerLoop(j, red0.update(acc, x.ref(s.src)), red0, acc));
    row.push(`const ${r.compute[s.dtype]} a${j} = ${red0.result(acc)};`);
  });
  row.push(...outerValues(k.stores.map((s) => s.value)));
  row.push(...k.stores.filter((s) => !isInnerStore(s)).map((s) => x.storeLine(s)));
  if (innerStores.length) row.push(...innerLoop(k.stages.length, innerStores.map((s) => x.storeLine(s))));
  if (noOuter) return [...top, ...row];
  return [...top, ...dialect.parallelLoops(outer.map((d) => ({ name: domVar(d), extent: k.domain[d] })), innerWork, row, false)];
}
