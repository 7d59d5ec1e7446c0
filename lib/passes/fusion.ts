/**
 * Fusion decisions, Inductor-style: legality (`canFuse`) apart from priority
 * (`scoreFusion`). A candidate is a realized producer; fusing it means inlining it into
 * every kernel that consumes it (recomputing it where there are several). The scheduler
 * (schedule.ts) tries candidates consumers-first and keeps each fusion that is legal and
 * scores above zero. The rules are written out in docs/FUSION.md.
 */
import { evalDim, ITEMSIZE, type Dim, type Node, type Op } from '../ir';
import { buildKernel, Irregular, type Kernel } from './kernel';

/** What the scheduler knows when it asks about one candidate. */
export interface FusionContext {
  /** True when `n` currently has its own buffer (inputs, constants and realized nodes). */
  readonly isBuffer: (n: Node) => boolean;
  /** Kernel roots that would contain the candidate once it is inlined. */
  readonly owners: ReadonlySet<Node>;
}

/** A candidate judged legal, with the kernels its owners would become. */
export interface Legal {
  readonly kernels: ReadonlyMap<Node, Kernel>;
}

const HEAVY: ReadonlySet<Op> = new Set(['REDUCE_SUM', 'REDUCE_MAX', 'MATMUL']);

/** Nodes inlined along with `p`: p and its producers that have no buffer, through views. */
export function inlineRegion(p: Node, isBuffer: (n: Node) => boolean): Node[] {
  const out: Node[] = [];
  const seen = new Set<Node>();
  const stack = [p];
  while (stack.length) {
    const n = stack.pop() as Node;
    if (seen.has(n) || (n !== p && isBuffer(n)) || n.op === 'CONST') continue;
    seen.add(n);
    out.push(n);
    stack.push(...n.src);
  }
  return out;
}

/**
 * Legality: `p` may lose its buffer when every owner kernel still builds (one matmul, one
 * reduction domain, reductions seen only as their own row), and a reduction or matmul is
 * never computed twice (all of its uses land in one kernel).
 */
export function canFuse(p: Node, ctx: FusionContext): Legal | undefined {
  if (ctx.owners.size === 0) return undefined;
  const isBuffer = (n: Node): boolean => n !== p && ctx.isBuffer(n);
  if (ctx.owners.size > 1 && inlineRegion(p, isBuffer).some((n) => HEAVY.has(n.op))) return undefined;
  const kernels = new Map<Node, Kernel>();
  for (const root of ctx.owners) {
    const k = buildKernel(root, isBuffer);
    if (k instanceof Irregular) return undefined;
    kernels.set(root, k);
  }
  return { kernels };
}

/**
 * Relative cost of one evaluation of an op, in bytes of memory traffic it is worth. A CAST
 * is free: converting a value is about as cheap as loading it (one F16C instruction per 8
 * lanes, a shift for bfloat16, one instruction on a GPU), so a cast recomputed per use costs
 * no more than reading a converted buffer would.
 */
const OP_COST: { readonly [O in Op]: number } = {
  INPUT: 0, CONST: 0, TENSOR_CONST: 0,
  NEG: 1, ABS: 1, CAST: 0,
  EXP: 8, LOG: 8, SIN: 8, COS: 8, TANH: 8, ERF: 8, ERFC: 8, POW: 8,
  SQRT: 4, RECIP: 4, DIV: 4,
  ADD: 1, SUB: 1, MUL: 1, MAX: 1, MIN: 1,
  CMPEQ: 1, CMPNE: 1, CMPLT: 1, CMPLE: 1, WHERE: 1,
  REDUCE_SUM: 1, REDUCE_MAX: 1, MATMUL: 0,
  RESHAPE: 0, PERMUTE: 0, EXPAND: 0, SHRINK: 0, PAD: 1,
  GATHER: 2,
};

// Removing a kernel saves a launch and a pass over its loop nest, worth this many bytes of traffic.
const KERNEL_OVERHEAD = 4096;
// Symbolic sizes are costed as if each symbol were this large.
const SYM_GUESS = 128;

/** A dim's size for costing. */
export function guessDim(d: Dim): number {
  if (typeof d === 'number') return d;
  return evalDim(d, Object.fromEntries(d.vars.map((v) => [v, SYM_GUESS])));
}

const numel = (shape: readonly Dim[]): number => shape.reduce<number>((a, d) => a * guessDim(d), 1);

/**
 * Priority: memory traffic saved (p's write and one read per owner kernel, and a kernel
 * launch) minus the work
 * added by recomputing p's inlined region wherever an owner evaluates it more often than
 * once per element (several owners, or a re-read through a broadcasting EXPAND that loop
 * hoisting cannot absorb). Reductions and matmuls are never recomputed, so they always gain.
 */
export function scoreFusion(p: Node, ctx: FusionContext, legal: Legal): number {
  const elems = Math.max(1, numel(p.shape));
  const saved = elems * ITEMSIZE[p.dtype] * (1 + ctx.owners.size) + KERNEL_OVERHEAD;
  if (HEAVY.has(p.op)) return saved;
  const isBuffer = (n: Node): boolean => n !== p && ctx.isBuffer(n);
  const region = inlineRegion(p, isBuffer);
  // Work below a reduction in the region runs once per row, not per element: count it as such.
  const perElem = region.reduce((c, n) => c + OP_COST[n.op], 0);
  let evals = 0;
  for (const k of legal.kernels.values()) {
    for (const v of k.visits.get(p) ?? []) {
      evals += evaluations(k, v);
    }
  }
  const extra = Math.max(0, evals - elems) * perElem;
  return saved - extra;
}

/**
 * How often kernel `k` evaluates value `v`: once per iteration of every loop up to the
 * innermost one it depends on (loops run in domain order; a row kernel runs its outer dims,
 * then each stage and the output loop over the reduced dims, recomputing inner values).
 */
function evaluations(k: Kernel, v: number): number {
  const dims = k.domain.map((_, d) => d);
  const order = k.kind === 'reduce' ? [...dims.filter((d) => !k.reduced[d]), ...dims.filter((d) => k.reduced[d])] : dims;
  const last = order.reduce((at, d, i) => (k.deps[v][d] ? i : at), -1);
  const inner = k.kind === 'reduce' && k.reduced.some((r, d) => r && k.deps[v][d]);
  // Row kernels place every outer value in the innermost outer loop.
  const upTo = k.kind === 'reduce' && !inner && last >= 0 ? order.filter((d) => !k.reduced[d]).length - 1 : last;
  const loops = order.slice(0, upTo + 1).reduce((a, d) => a * guessDim(k.domain[d]), 1);
  return inner ? loops * Math.max(1, k.stages.length) : loops;
}
